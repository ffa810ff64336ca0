//! Which socket inodes a `/proc` owner scan looks for, and when. A scan reads every descriptor
//! on the host, so it runs for inodes that are new since the last scan (at most once per
//! interval, as before), while an inode a scan already missed (inode of a process in another
//! pid namespace, an orphaned socket, a process exiting) is retried with a doubling backoff
//! ([`RETRY_FIRST_NS`] up to [`RETRY_MAX_NS`]) instead of keeping every scan going. Missed
//! inodes are still matched whenever a scan runs for others (it costs one hash lookup per
//! descriptor), so a late owner is found as soon as any scan runs.
use std::collections::{HashMap, HashSet};

use crate::model::{MonoNs, NS_PER_SEC};

/// First retry of an inode a scan missed. A constant: no configuration knob exists for it.
pub const RETRY_FIRST_NS: u64 = 4 * NS_PER_SEC;
/// Longest wait between retries of an inode scans keep missing.
pub const RETRY_MAX_NS: u64 = 60 * NS_PER_SEC;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Retry {
    due: MonoNs,
    backoff: u64,
}

/// The inodes one scan looks for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanRequest {
    /// New inodes and missed ones whose retry is due: the scan runs until all are found.
    pub required: HashSet<u64>,
    /// Missed inodes not yet due: matched if seen, but the scan does not go on for them.
    pub opportunistic: HashSet<u64>,
}

/// The owner scans' schedule: the interval between scans and the backoff of missed inodes.
#[derive(Debug, Clone)]
pub struct OwnerScanPlan {
    interval_ns: u64,
    last_scan: Option<MonoNs>,
    missed: HashMap<u64, Retry>,
}

impl OwnerScanPlan {
    #[must_use]
    pub fn new(interval_ns: u64) -> Self {
        Self {
            interval_ns,
            last_scan: None,
            missed: HashMap::new(),
        }
    }

    /// The scan to run at `now` for `wanted` (inodes with no owner known), or None. `force`
    /// scans for every wanted inode regardless of interval and backoff. Forgets the missed
    /// inodes no longer wanted (found by other means, or their socket is gone).
    pub fn plan(&mut self, wanted: &HashSet<u64>, now: MonoNs, force: bool) -> Option<ScanRequest> {
        self.missed.retain(|i, _| wanted.contains(i));
        if wanted.is_empty() {
            return None;
        }
        if !force
            && self
                .last_scan
                .is_some_and(|t| now.saturating_sub(t) < self.interval_ns)
        {
            return None;
        }
        let mut req = ScanRequest::default();
        for &i in wanted {
            match self.missed.get(&i) {
                Some(r) if !force && r.due > now => req.opportunistic.insert(i),
                _ => req.required.insert(i),
            };
        }
        (!req.required.is_empty()).then_some(req)
    }

    /// Records the scan of `req` done at `now`: `found` tells which inodes it found an owner
    /// for. Required inodes it missed wait for a retry, twice as long as last time.
    pub fn scanned(&mut self, req: &ScanRequest, now: MonoNs, found: impl Fn(u64) -> bool) {
        self.last_scan = Some(now);
        for &i in &req.required {
            if found(i) {
                self.missed.remove(&i);
                continue;
            }
            let backoff = self.missed.get(&i).map_or(RETRY_FIRST_NS, |r| {
                r.backoff.saturating_mul(2).min(RETRY_MAX_NS)
            });
            self.missed.insert(
                i,
                Retry {
                    due: now.saturating_add(backoff),
                    backoff,
                },
            );
        }
        for &i in &req.opportunistic {
            if found(i) {
                self.missed.remove(&i);
            }
        }
    }

    /// Inodes a scan missed, waiting for their retry.
    #[must_use]
    pub fn waiting(&self) -> usize {
        self.missed.len()
    }
}

#[cfg(test)]
#[path = "owner_scan_tests.rs"]
mod tests;
