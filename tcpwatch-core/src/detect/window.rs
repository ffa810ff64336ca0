//! Deltas of cumulative kernel counters over a sliding window, per key: shared by the rules
//! fed by per-endpoint counters (`stale_connection_reuse`, `connect_failing`).
//!
//! On the first evaluation the counters are a baseline only; a key first seen later counts
//! from zero (its kernel entry was created since the previous evaluation); a counter that goes
//! down (the LRU entry was evicted and re-created) re-baselines. State per key: at most
//! [`MAX_SAMPLES`] samples at most one window old, dropped when the key is no longer handed in
//! (bounded by the kernel map's size).
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use crate::model::MonoNs;

pub(crate) const MAX_SAMPLES: usize = 512;

/// Adds the sample `(now, counts)` to a key's samples and returns the window's first one (time,
/// counters): the samples restart from this one if a counter went down (`went_down(last,
/// counts)`: re-created), those before the window's `start` are dropped (the last one at or
/// before it stays, as the base) and at most [`MAX_SAMPLES`] are kept.
pub(crate) fn push_sample<C: Copy>(
    samples: &mut VecDeque<(MonoNs, C)>,
    start: MonoNs,
    now: MonoNs,
    counts: C,
    went_down: impl Fn(&C, &C) -> bool,
) -> (MonoNs, C) {
    if samples
        .back()
        .is_some_and(|(_, last)| went_down(last, &counts))
    {
        samples.clear();
    }
    samples.push_back((now, counts));
    while samples.len() >= 2 && samples.get(1).is_some_and(|(at, _)| *at <= start) {
        samples.pop_front();
    }
    while samples.len() > MAX_SAMPLES {
        samples.pop_front();
    }
    samples.front().copied().unwrap_or((now, counts))
}

#[derive(Debug)]
struct Track<const N: usize> {
    samples: VecDeque<(MonoNs, [u64; N])>,
    /// When the condition started to hold (continuously).
    since: Option<MonoNs>,
}

#[derive(Debug)]
pub(crate) struct Windowed<K, const N: usize> {
    tracks: HashMap<K, Track<N>>,
    last_eval: Option<MonoNs>,
}

impl<K, const N: usize> Default for Windowed<K, N> {
    fn default() -> Self {
        Self {
            tracks: HashMap::new(),
            last_eval: None,
        }
    }
}

/// One key's counts over the window.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WindowDelta<const N: usize> {
    /// Increase of each counter since the oldest sample in the window.
    pub delta: [u64; N],
    /// Time of that oldest sample.
    pub from: MonoNs,
    /// Since when `holds` has been true continuously (set only when it holds now).
    pub since: Option<MonoNs>,
}

impl<K: Hash + Eq + Clone, const N: usize> Windowed<K, N> {
    /// Feeds this evaluation's cumulative counters; returns each key's window delta, with
    /// `since` tracked for the keys where `holds(delta)` is true.
    pub(crate) fn update(
        &mut self,
        now: MonoNs,
        window_ns: u64,
        counters: impl IntoIterator<Item = (K, [u64; N])>,
        holds: impl Fn(&[u64; N]) -> bool,
    ) -> Vec<(K, WindowDelta<N>)> {
        let start = now.saturating_sub(window_ns);
        let mut next = HashMap::new();
        let mut out = Vec::new();
        for (key, counts) in counters {
            if next.contains_key(&key) {
                continue;
            }
            let mut track = self.tracks.remove(&key).unwrap_or_else(|| {
                let mut samples = VecDeque::new();
                if let Some(prev) = self.last_eval {
                    samples.push_back((prev, [0; N]));
                }
                Track {
                    samples,
                    since: None,
                }
            });
            let (from, base) = push_sample(&mut track.samples, start, now, counts, |last, c| {
                last.iter().zip(c).any(|(a, b)| a > b)
            });
            let mut delta = [0; N];
            for (d, (c, b)) in delta.iter_mut().zip(counts.iter().zip(&base)) {
                *d = c.saturating_sub(*b);
            }
            let since = if holds(&delta) {
                Some(*track.since.get_or_insert(from))
            } else {
                track.since = None;
                None
            };
            out.push((key.clone(), WindowDelta { delta, from, since }));
            next.insert(key, track);
        }
        self.tracks = next;
        self.last_eval = Some(now);
        out
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.tracks.len()
    }
}
