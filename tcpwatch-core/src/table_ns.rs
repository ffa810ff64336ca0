//! Per-namespace facts the table keeps as it changes, so that nothing per sweep walks the
//! whole table: how many records each namespace has (a complete sweep that listed that many
//! of them listed all of them: nothing to remove), the namespace's inode, and its CLOSE
//! tombstones (the `last_event` entries without a record, cleared once a sweep of the
//! namespace began after them).
use std::collections::HashMap;

use tcpwatch_common::SockRecord;
use tcpwatch_common::delta::SockSeen;

use super::{ConnTable, Delta, SweepOutcome};
use crate::model::{ConnKey, MonoNs};

/// One namespace's records and tombstones.
#[derive(Debug, Default)]
pub(super) struct NsEntry {
    /// Records of the namespace in the table.
    records: usize,
    /// The namespace inode a record told (0: none did).
    inode: u32,
    /// Keys that got a CLOSE tombstone since the namespace's last sweep cleared them (some
    /// may have a record again since; checked when the next sweep is applied).
    tombs: Vec<ConnKey>,
}

/// The per-namespace index, and the scratch set of one sweep's listed addresses.
#[derive(Debug, Default)]
pub(super) struct NsIndex {
    ns: HashMap<u64, NsEntry>,
    listed: foldhash::HashSet<u64>,
    /// Tests: always look for unlisted records (the reference the shortcut is compared with).
    #[cfg(test)]
    pub(super) always_scan: bool,
}

impl NsIndex {
    pub(super) fn added(&mut self, key: &ConnKey, inode: u32) {
        let e = self.ns.entry(key.netns_cookie).or_default();
        e.records += 1;
        if inode != 0 || e.records == 1 {
            e.inode = inode;
        }
    }

    pub(super) fn removed(&mut self, key: &ConnKey) {
        if let Some(e) = self.ns.get_mut(&key.netns_cookie) {
            e.records = e.records.saturating_sub(1);
            if e.records == 0 && e.tombs.is_empty() {
                self.ns.remove(&key.netns_cookie);
            }
        }
    }

    pub(super) fn tombstone(&mut self, key: ConnKey) {
        self.ns.entry(key.netns_cookie).or_default().tombs.push(key);
    }

    /// Records of one namespace in the table.
    pub(super) fn records(&self, netns_cookie: u64) -> usize {
        self.ns.get(&netns_cookie).map_or(0, |e| e.records)
    }

    /// Namespace cookies of every record and tombstone, with the inode when a record tells
    /// it.
    pub(super) fn cookies(&self) -> HashMap<u64, Option<u32>> {
        self.ns
            .iter()
            .filter(|(_, e)| e.records > 0 || !e.tombs.is_empty())
            .map(|(c, e)| (*c, (e.records > 0).then_some(e.inode)))
            .collect()
    }

    pub(super) fn retain(&mut self, alive: &std::collections::HashSet<u64>) {
        self.ns.retain(|c, _| alive.contains(c));
    }
}

impl ConnTable {
    /// Removes the records of `netns_cookie` that its sweep (begun at `started`) did not list
    /// and no event touched since it began, and the namespace's tombstones older than the
    /// sweep. `in_table` is how many of the listed entries have a record in the table now.
    /// When every listed address is distinct and as many records as the namespace has were
    /// listed, all of them were: nothing is looked for.
    pub(super) fn remove_unlisted(
        &mut self,
        netns_cookie: u64,
        listed: (&[SockRecord], &[SockSeen]),
        in_table: usize,
        started: MonoNs,
        out: &mut SweepOutcome,
        mut deltas: Option<&mut Vec<Delta>>,
    ) {
        let has = self.ns_index.records(netns_cookie);
        let set = &mut self.ns_index.listed;
        set.clear();
        let mut distinct = true;
        for skaddr in listed
            .0
            .iter()
            .map(|r| r.skaddr)
            .chain(listed.1.iter().map(SockSeen::skaddr))
        {
            distinct &= set.insert(skaddr);
        }
        #[cfg(test)]
        let distinct = distinct && !self.ns_index.always_scan;
        if !distinct || in_table != has {
            let stale: Vec<ConnKey> = self
                .conns
                .values()
                .filter(|c| c.key.netns_cookie == netns_cookie && !set.contains(&c.key.skaddr))
                .filter(|c| self.last_event.get(&c.key).is_none_or(|t| t.at <= started))
                .map(|c| c.key)
                .collect();
            for key in stale {
                self.conns.remove(&key);
                self.ns_index.removed(&key);
                self.last_event.remove(&key);
                self.unpin(&key);
                self.stats.removed_by_sweep += 1;
                out.removed += 1;
                if let Some(d) = deltas.as_deref_mut() {
                    d.push(Delta::Remove { key });
                }
            }
        }
        if self.ns_index.listed.capacity() > 4 * self.ns_index.listed.len().max(1024) {
            // A namespace that once listed many sockets: give the memory back.
            self.ns_index.listed = foldhash::HashSet::default();
        }
        self.clear_tombstones(netns_cookie, started);
    }

    /// Tombstones older than the namespace's sweep have done their job (the keys that have a
    /// record again are not tombstones any more).
    fn clear_tombstones(&mut self, netns_cookie: u64, started: MonoNs) {
        let Some(e) = self.ns_index.ns.get_mut(&netns_cookie) else {
            return;
        };
        let conns = &self.conns;
        let last_event = &mut self.last_event;
        e.tombs.retain(|k| {
            if conns.contains_key(k) {
                return false;
            }
            match last_event.get(k) {
                Some(t) if t.at > started => true,
                Some(_) => {
                    last_event.remove(k);
                    false
                }
                None => false,
            }
        });
        if e.records == 0 && e.tombs.is_empty() {
            self.ns_index.ns.remove(&netns_cookie);
        }
    }

    /// Whether the index agrees with the records and tombstones counted the slow way (tests).
    #[cfg(test)]
    pub(super) fn ns_index_consistent(&self) -> bool {
        let mut counts: HashMap<u64, usize> = HashMap::new();
        for k in self.conns.keys() {
            *counts.entry(k.netns_cookie).or_default() += 1;
        }
        let tombs_ok = self.last_event.keys().all(|k| {
            self.conns.contains_key(k)
                || self
                    .ns_index
                    .ns
                    .get(&k.netns_cookie)
                    .is_some_and(|e| e.tombs.contains(k))
        });
        tombs_ok
            && counts.iter().all(|(c, n)| self.ns_index.records(*c) == *n)
            && self
                .ns_index
                .ns
                .iter()
                .all(|(c, e)| counts.get(c).copied().unwrap_or(0) == e.records)
    }
}

#[cfg(test)]
#[path = "table_ns_tests.rs"]
mod tests;
