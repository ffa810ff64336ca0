//! Which sweep generation each namespace's next sweep uses (change-only sweeps,
//! `tcpwatch_common::delta`): the same generation as its previous sweep (sockets unchanged
//! since then come back as 16-byte "still here" records), or a fresh one (every socket in
//! full): a namespace's first sweep, the one after a failed sweep or a request from the table
//! (it was told about a socket it did not have), and every `full_every`-th sweep of the host.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

/// Namespaces (by cookie) whose next sweep must be full, filled by whoever applies sweeps.
#[derive(Clone, Debug, Default)]
pub struct FullSweepRequests(Arc<Mutex<HashSet<u64>>>);

impl FullSweepRequests {
    pub fn request(&self, netns_cookie: u64) {
        // A set of cookies cannot be left half-written: a panic elsewhere while it was held
        // must not drop requests.
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(netns_cookie);
    }

    fn take(&self) -> HashSet<u64> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[derive(Debug)]
pub struct Generations {
    /// 0: change-only sweeps are off (every sweep full, no marks written).
    full_every: u64,
    next: u64,
    sweeps: u64,
    of: HashMap<u64, u64>,
    requests: FullSweepRequests,
}

impl Generations {
    /// `full_every`: every this many host sweeps every socket is written in full (1: always,
    /// change-only sweeps off). Generations start from the monotonic clock: a restarted
    /// daemon never reuses one that marks in a pinned map could still carry.
    #[must_use]
    pub fn new(full_every: u32, requests: FullSweepRequests) -> Self {
        Self {
            full_every: if full_every <= 1 {
                0
            } else {
                u64::from(full_every)
            },
            next: tcpwatch_core::model::mono_now().max(1),
            sweeps: 0,
            of: HashMap::new(),
            requests,
        }
    }

    /// Starts a host sweep: applies the requests and the periodic full sweep.
    pub fn begin_host_sweep(&mut self) {
        if self.full_every != 0 && self.sweeps.is_multiple_of(self.full_every) {
            self.of.clear();
        }
        self.sweeps += 1;
        for c in self.requests.take() {
            self.of.remove(&c);
        }
    }

    /// The generation for a namespace's sweep about to run. Until [`Self::succeeded`] is
    /// called for it, the namespace's next sweep is full.
    pub fn for_sweep(&mut self, netns_cookie: u64) -> u64 {
        if self.full_every == 0 {
            return 0;
        }
        self.of.remove(&netns_cookie).unwrap_or_else(|| {
            self.next += 1;
            self.next
        })
    }

    /// The namespace's sweep in generation `g` was read completely.
    pub fn succeeded(&mut self, netns_cookie: u64, g: u64) {
        if g != 0 {
            self.of.insert(netns_cookie, g);
        }
    }

    /// Forgets namespaces no longer swept.
    pub fn retain(&mut self, keep: &HashSet<u64>) {
        self.of.retain(|c, _| keep.contains(c));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_generation_until_failure_request_or_period() {
        let req = FullSweepRequests::default();
        let mut g = Generations::new(3, req.clone());
        g.begin_host_sweep();
        let a = g.for_sweep(1);
        assert_ne!(a, 0);
        g.succeeded(1, a);
        g.begin_host_sweep();
        assert_eq!(g.for_sweep(1), a, "steady");
        // Not marked succeeded (the sweep failed): the next one is fresh.
        g.begin_host_sweep();
        let b = g.for_sweep(1);
        assert_ne!(b, a);
        g.succeeded(1, b);
        // Third host sweep since the last period: full again.
        g.begin_host_sweep();
        let c = g.for_sweep(1);
        assert_ne!(c, b);
        g.succeeded(1, c);
        g.begin_host_sweep();
        assert_eq!(g.for_sweep(1), c);
        g.succeeded(1, c);
        req.request(1);
        g.begin_host_sweep();
        assert_ne!(g.for_sweep(1), c, "requested");
    }

    #[test]
    fn off_is_generation_zero() {
        let mut g = Generations::new(1, FullSweepRequests::default());
        g.begin_host_sweep();
        assert_eq!(g.for_sweep(1), 0);
    }
}
