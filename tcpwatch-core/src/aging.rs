//! What moves with time alone in a record that nothing changed: its `last_seen` and its last
//! send / ACK / receive ages.
//!
//! A change-only sweep confirms every unchanged socket of a namespace each interval. Writing
//! the new `last_seen` and ages into each of those records would touch (and, while a published
//! view still holds the record, copy) the whole table every sweep. Instead the table keeps the
//! record as its last full record or event left it, and [`Aging`] remembers when each
//! namespace was last confirmed by an applied sweep: every record of that namespace the sweep
//! did not remove was listed by it. A record that *follows* its namespace (it was in the table
//! before that sweep began, and no event or unknown listing set it apart since: see
//! [`Aging::follows`]) has as effective `last_seen` the namespace's confirmation, and its ages
//! grow by the whole milliseconds between its own `last_seen` and that confirmation (each time
//! floored to ms), exactly what writing them every sweep gave (the per-sweep increments add
//! up to the same difference).
//!
//! The effective values are derived where they are read: the detectors
//! ([`crate::detect::DetectContext`]), eviction order, and the copies of records that leave
//! the daemon ([`Aging::apply`]). The table itself holds the stored values.
use std::collections::{HashMap, HashSet};

use crate::model::{ConnKey, ConnRecord, MonoNs, NS_PER_MS, TcpInfo};

/// The namespaces' last confirmations, and the records that do not follow theirs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Aging {
    /// Per namespace cookie, its latest applied sweep.
    confirmed: HashMap<u64, Confirmed>,
    /// Records whose own `last_seen` and ages hold although they are not newer than their
    /// namespace's last sweep start: a late event set them (its time is before that sweep
    /// began), or the sweep listed another socket at their address (not applied). Cleared when
    /// a sweep confirms or rewrites them (few: not the idle sockets).
    pinned: HashSet<ConnKey>,
}

/// One applied sweep of a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Confirmed {
    /// When the sweep began (its header's ktime).
    started: MonoNs,
    /// When it was applied (the `now` of `ConnTable::apply_sweep`).
    at: MonoNs,
}

impl Aging {
    /// Whether `c`'s time fields follow its namespace's last confirmation: the record was
    /// there before that sweep began and was not set apart since.
    #[must_use]
    pub fn follows(&self, c: &ConnRecord) -> bool {
        self.confirmed
            .get(&c.key.netns_cookie)
            .is_some_and(|conf| c.last_seen <= conf.started)
            && (self.pinned.is_empty() || !self.pinned.contains(&c.key))
    }

    /// The confirmation later than `c`'s own `last_seen` that it follows, if any.
    fn confirmed_after(&self, c: &ConnRecord) -> Option<MonoNs> {
        let at = self.confirmed.get(&c.key.netns_cookie)?.at;
        (at > c.last_seen && self.follows(c)).then_some(at)
    }

    /// The effective `last_seen` of `c`: the last sweep or event that confirmed it.
    #[must_use]
    pub fn last_seen(&self, c: &ConnRecord) -> MonoNs {
        self.confirmed_after(c).unwrap_or(c.last_seen)
    }

    /// The effective TCP fields of `c`: the stored ones with the ages grown since its own
    /// `last_seen` (minisockets have no ages).
    #[must_use]
    pub fn tcp(&self, c: &ConnRecord) -> TcpInfo {
        let mut tcp = c.tcp;
        if c.full_sock
            && let Some(at) = self.confirmed_after(c)
        {
            grow_ages(&mut tcp, c.last_seen, at);
        }
        tcp
    }

    /// Writes the effective values into `c`: a copy about to leave the daemon, or a record
    /// that an event is about to change.
    pub fn apply(&self, c: &mut ConnRecord) {
        if let Some(at) = self.confirmed_after(c) {
            advance(c, at);
        }
    }

    /// A copy of `c` with its effective values (for callers outside the hot paths: snapshot,
    /// tests).
    #[must_use]
    pub fn effective(&self, c: &ConnRecord) -> ConnRecord {
        let mut c = c.clone();
        self.apply(&mut c);
        c
    }

    /// Records that an applied sweep of `netns` began at `started` and was applied at `at`.
    pub(crate) fn confirm(&mut self, netns: u64, started: MonoNs, at: MonoNs) {
        self.confirmed.insert(netns, Confirmed { started, at });
    }

    pub(crate) fn is_pinned(&self, key: &ConnKey) -> bool {
        !self.pinned.is_empty() && self.pinned.contains(key)
    }

    pub(crate) fn pin(&mut self, key: ConnKey) {
        self.pinned.insert(key);
    }

    pub(crate) fn unpin(&mut self, key: &ConnKey) {
        self.pinned.remove(key);
    }

    /// Forgets the namespaces not in `alive` (gone), and their pinned records.
    pub(crate) fn retain_netns(&mut self, alive: &HashSet<u64>) {
        self.confirmed.retain(|ns, _| alive.contains(ns));
        self.pinned.retain(|k| alive.contains(&k.netns_cookie));
    }

    /// Pinned records, for tests and metrics.
    #[must_use]
    pub fn pinned_len(&self) -> usize {
        self.pinned.len()
    }
}

/// Moves `rec` to `now` (later than its `last_seen`): the ages advance by whole milliseconds
/// between the two times (each floored to ms), so repeated moves do not drift.
pub(crate) fn advance(rec: &mut ConnRecord, now: MonoNs) {
    if now > rec.last_seen {
        if rec.full_sock {
            grow_ages(&mut rec.tcp, rec.last_seen, now);
        }
        rec.last_seen = now;
    }
}

fn grow_ages(tcp: &mut TcpInfo, from: MonoNs, to: MonoNs) {
    let elapsed_ms = (to / NS_PER_MS).saturating_sub(from / NS_PER_MS);
    tcp.last_send_age_ms += elapsed_ms;
    tcp.last_ack_age_ms += elapsed_ms;
    tcp.last_recv_age_ms += elapsed_ms;
}

#[cfg(test)]
#[path = "aging_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "aging_random_tests.rs"]
mod random_tests;
