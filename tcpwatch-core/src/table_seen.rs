//! The "still here, unchanged" records of a change-only sweep (`tcpwatch_common::delta`):
//! the socket is present and none of its watched fields changed since its last full record.
//! Its record is kept as it is; only what moves with time moves: the time it was last
//! confirmed, and the last send / ACK / receive ages (the kernel's stamps did not change, so
//! each age grows by the time since the record was last confirmed). For most records nothing
//! is written: they follow their namespace's confirmation (`crate::aging`).
use std::sync::Arc;

use tcpwatch_common::delta::SockSeen;

use super::{ConnTable, SweepOutcome, interesting, other_socket, push_sample};
use crate::aging::advance;
use crate::model::{ConnKey, ConnRecord, MonoNs};

impl ConnTable {
    /// Applies the unchanged records of one namespace's sweep (see [`ConnTable::apply_sweep`]).
    /// A record for a socket the table does not have (or has as another socket) cannot be
    /// applied: it is counted in `SweepOutcome::unknown`, and the caller has the next sweep of
    /// the namespace written in full. Tombstones of sockets closed after the sweep began are
    /// not unknown (the socket is gone).
    pub(super) fn apply_unchanged(
        &mut self,
        netns_cookie: u64,
        unchanged: &[SockSeen],
        started: MonoNs,
        now: MonoNs,
        out: &mut SweepOutcome,
    ) -> usize {
        let history_len = self.cfg.history_len;
        let mut in_table = 0;
        for s in unchanged {
            let key = ConnKey {
                skaddr: s.skaddr(),
                netns_cookie,
            };
            match self.conns.get_mut(&key) {
                Some(rec) if !other_socket(rec.cookie, s.cookie) => {
                    in_table += 1;
                    out.unchanged += 1;
                    let pinned = self.aging.is_pinned(&key);
                    if pinned
                        || rec.last_seen > started
                        || interesting(rec)
                        || !rec.history.is_empty()
                    {
                        // Set apart from its namespace (an event since the sweep began, a
                        // late one), or it keeps a sample per sweep: its own times move.
                        refresh(Arc::make_mut(rec), now, history_len);
                        if pinned {
                            Arc::make_mut(&mut self.aging).unpin(&key);
                        }
                    }
                    // Otherwise it follows the namespace's confirmation (set once the whole
                    // sweep is applied): untouched, not copied.
                }
                found => {
                    in_table += usize::from(found.is_some());
                    if let Some(rec) = found
                        && self.aging.follows(rec)
                    {
                        // Another socket listed at its address is not applied: the record
                        // stays as this namespace's previous confirmation left it.
                        let rec = Arc::make_mut(rec);
                        self.aging.apply(rec);
                        Arc::make_mut(&mut self.aging).pin(key);
                    }
                    // Not unknown if it closed after the sweep began (its tombstone).
                    let closed_since = self.last_event.get(&key).is_some_and(|t| {
                        t.at > started && !other_socket(t.closed_cookie, s.cookie)
                    });
                    if !closed_since {
                        out.unknown += 1;
                    }
                }
            }
        }
        in_table
    }
}

/// Moves a record to `now` and takes its sample (the records that do not follow their
/// namespace's confirmation: `crate::aging`). The ages advance by whole milliseconds between
/// the two confirmations (each time floored to ms), so repeated refreshes do not drift.
fn refresh(rec: &mut ConnRecord, now: MonoNs, history_len: usize) {
    advance(rec, now);
    push_sample(rec, history_len);
}

#[cfg(test)]
#[path = "table_seen_tests.rs"]
mod tests;
