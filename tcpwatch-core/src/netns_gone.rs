//! Records of network namespaces that no longer exist leave the table.
//!
//! A namespace's sweep removes the records it does not list, but a namespace that is deleted
//! is not swept any more, so its records (and CLOSE tombstones) would stay for ever. After a
//! sweep of the host, every namespace the table knows of that the sweep did not read counts
//! one miss; at [`MISSES_TO_GONE`] consecutive misses its records go (counted as
//! `removed_netns_gone`). Two misses, not one, so that a namespace that only looked gone for a
//! moment (its processes exited between discovery and the sweep while another one still uses
//! it) does not lose its records and findings.
//!
//! Not a miss: a namespace that was found but could not be read for another reason (permission,
//! a transient error): its records stay as they are.
//!
//! A deleted namespace can live on in the kernel while sockets hold it (an orphaned
//! `FIN_WAIT1`, or a descriptor passed to a process in another namespace), but no process or
//! bind mount leads into it and tcpwatch cannot sweep it: its records leave too, so their
//! findings resolve instead of freezing with their last evidence.
use std::collections::{HashMap, HashSet};

use crate::table::{ConnTable, Delta};

/// Consecutive sweeps a namespace must be missing from before its records are removed.
pub const MISSES_TO_GONE: u32 = 2;

/// Per-namespace miss counts between sweeps.
#[derive(Debug, Default)]
pub struct NetnsPresence {
    misses: HashMap<u64, u32>,
}

impl NetnsPresence {
    /// Applies one host sweep: `swept` are the namespace cookies read completely,
    /// `unreadable` the inodes of namespaces found but not read (not vanished). A sweep that
    /// read no namespace at all (discovery failed) changes nothing. Returns how many records
    /// were removed.
    pub fn apply(
        &mut self,
        table: &mut ConnTable,
        swept: &HashSet<u64>,
        unreadable: &HashSet<u32>,
        deltas: &mut Vec<Delta>,
    ) -> u64 {
        if swept.is_empty() {
            return 0;
        }
        let known = table.netns_cookies();
        let mut gone = HashSet::new();
        for (cookie, inode) in &known {
            if swept.contains(cookie) || inode.is_some_and(|i| unreadable.contains(&i)) {
                self.misses.remove(cookie);
                continue;
            }
            let n = self.misses.entry(*cookie).or_insert(0);
            *n += 1;
            if *n >= MISSES_TO_GONE {
                gone.insert(*cookie);
            }
        }
        self.misses
            .retain(|c, _| known.contains_key(c) && !gone.contains(c));
        if gone.is_empty() {
            return 0;
        }
        let before = table.stats().removed_netns_gone;
        let alive: HashSet<u64> = known.into_keys().filter(|c| !gone.contains(c)).collect();
        table.retain_netns(&alive, deltas);
        table.stats().removed_netns_gone - before
    }
}

#[cfg(test)]
#[path = "netns_gone_tests.rs"]
mod tests;
