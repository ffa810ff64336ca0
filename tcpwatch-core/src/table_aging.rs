//! The table's side of [`Aging`]: the derived times of records that follow their namespace's
//! confirmations (`crate::aging`).
use std::sync::Arc;

use super::ConnTable;
use crate::aging::Aging;
use crate::model::{ConnKey, ConnRecord};

impl ConnTable {
    /// The namespaces' confirmations that give the records' effective `last_seen` and ages
    /// (the records hold the values of their last full record or event). A published view
    /// shares it with the records.
    #[must_use]
    pub fn aging(&self) -> &Arc<Aging> {
        &self.aging
    }

    /// A copy of the record of `key` with its effective `last_seen` and ages, as the API
    /// shows it.
    #[must_use]
    pub fn effective(&self, key: &ConnKey) -> Option<ConnRecord> {
        self.conns.get(key).map(|c| self.aging.effective(c))
    }

    /// The record's own times hold again (it is gone, or rewritten).
    pub(super) fn unpin(&mut self, key: &ConnKey) {
        if self.aging.is_pinned(key) {
            Arc::make_mut(&mut self.aging).unpin(key);
        }
    }
}
