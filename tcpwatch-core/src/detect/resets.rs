//! `reset_burst`: RSTs sent plus received on one local port (per namespace) reach `min_resets`
//! within `window_seconds`. Input: cumulative counters per (netns cookie, port) handed in each
//! evaluation; rates come from their deltas over the window.
//!
//! Causes: `sent` (at least twice as many sent as received: this side refuses or aborts),
//! `received` (the reverse: peers abort, e.g. an upstream closing with a request in flight),
//! `both`. Warning.
//!
//! A port first seen after the first evaluation counts from zero (its counter was created by
//! resets since the previous evaluation); on the first evaluation the counters are only a
//! baseline. A counter that goes backwards (recreated) is re-baselined. State: a few samples per
//! port handed in (those at most one window old, at most [`MAX_SAMPLES`]), dropped when the port
//! is no longer handed in.
//!
//! Cost follows change: under connection churn the kernel hands in thousands of ports (a reset
//! from each ephemeral port). A port below `min_resets` at its last sample whose counters did
//! not move since is skipped: its count in the window can only have fallen (the window's base
//! only moves forward). When it moves again, the samples it skipped (its unchanged counters at
//! each evaluation since, as far as the window and [`MAX_SAMPLES`] keep them) are filled in
//! first, so the window, its start and the finding's `since` are those of sampling every port.
use std::collections::{HashMap, VecDeque};

use crate::config::{ResetBurstConfig, seconds_to_ns};
use crate::detect::lifecycle::Candidate;
use crate::detect::window::push_sample;
use crate::detect::{DetectContext, Snapshot, text};
use crate::model::{FindingKind, MonoNs, NetnsId, ResetCounts, Severity, Subject};

/// Most samples kept per port (one per evaluation within the window).
pub(crate) use crate::detect::window::MAX_SAMPLES;

#[derive(Debug, Default)]
struct PortTrack {
    samples: VecDeque<(MonoNs, ResetCounts)>,
    /// Start of the window in which the current burst was first seen.
    burst_since: Option<MonoNs>,
}

impl PortTrack {
    /// Adds the sample at `now` (after those the port skipped while quiet) and drops those
    /// before the window: the window's first sample (time, counters).
    fn sample(
        &mut self,
        evals: &VecDeque<MonoNs>,
        start: MonoNs,
        now: MonoNs,
        counts: ResetCounts,
    ) -> (MonoNs, ResetCounts) {
        let samples = &mut self.samples;
        if let Some(&(tb, c)) = samples.back() {
            // The evaluations this port skipped, from the last one at or before the window's
            // start: their samples held the same counters.
            let after_back = evals.partition_point(|&e| e <= tb);
            let from_start = evals.partition_point(|&e| e <= start).saturating_sub(1);
            for &e in evals.range(after_back.max(from_start)..) {
                samples.push_back((e, c));
            }
        }
        push_sample(samples, start, now, counts, |last, c| {
            last.sent > c.sent || last.received > c.received
        })
    }
}

#[derive(Debug)]
pub(crate) struct ResetState {
    ports: HashMap<(u64, u16), PortTrack>,
    last_eval: Option<MonoNs>,
    /// The last [`MAX_SAMPLES`] evaluation times: where a skipped port's samples would be.
    evals: VecDeque<MonoNs>,
    /// Skip quiet ports (see the module's comment); off only in the test that proves the skip
    /// changes nothing.
    skip_quiet: bool,
}

impl Default for ResetState {
    fn default() -> Self {
        Self {
            ports: HashMap::new(),
            last_eval: None,
            evals: VecDeque::new(),
            skip_quiet: true,
        }
    }
}

impl ResetState {
    pub(crate) fn detect(
        &mut self,
        now: MonoNs,
        cfg: &ResetBurstConfig,
        snap: &Snapshot<'_>,
        ctx: &DetectContext<'_>,
        out: &mut Vec<Candidate>,
    ) {
        let window = seconds_to_ns(cfg.window_seconds);
        let start = now.saturating_sub(window);
        // Ports no longer handed in (evicted from the kernel's LRU map) are forgotten.
        self.ports.retain(|k, _| ctx.port_resets.contains_key(k));
        let last_eval = self.last_eval;
        for (&(cookie, port), &counts) in ctx.port_resets {
            let track = self.ports.entry((cookie, port)).or_insert_with(|| {
                let mut samples = VecDeque::new();
                if let Some(prev) = last_eval {
                    samples.push_back((prev, ResetCounts::default()));
                }
                PortTrack {
                    samples,
                    burst_since: None,
                }
            });
            if self.skip_quiet
                && track.burst_since.is_none()
                && track
                    .samples
                    .back()
                    .is_some_and(|(_, last)| *last == counts)
            {
                continue;
            }
            let (t0, base) = track.sample(&self.evals, start, now, counts);

            let sent = counts.sent.saturating_sub(base.sent);
            let received = counts.received.saturating_sub(base.received);
            let total = u64::from(sent) + u64::from(received);
            if total < u64::from(cfg.min_resets) {
                track.burst_since = None;
                continue;
            }
            let since = *track.burst_since.get_or_insert(t0);
            let span = now.saturating_sub(t0).max(1);
            let netns = ctx
                .netns
                .get(&cookie)
                .map_or(NetnsId { cookie, inode: 0 }, |n| n.id);
            let (cause, hint) = if u64::from(sent) >= 2 * u64::from(received) {
                (
                    "sent",
                    "this side is refusing or aborting connections (nothing listening, app closing with \
                     unread data or SO_LINGER 0, or a full backlog)",
                )
            } else if u64::from(received) >= 2 * u64::from(sent) {
                (
                    "received",
                    "peers are aborting connections (peer closed with a request in flight, crashed or \
                     restarted, or hit an idle timeout)",
                )
            } else {
                (
                    "both",
                    "connections are torn down abruptly in both directions; check timeouts and restarts on both sides",
                )
            };
            let who = snap
                .listeners
                .get(&(cookie, port))
                .and_then(|ls| ls.first())
                .map_or_else(
                    || "no listener".to_owned(),
                    |l| format!("listener {}", text::owner(l, false)),
                );
            let rate = text::num(total) / text::secs(span);
            out.push(Candidate {
                id: text::port_id(FindingKind::ResetBurst, cookie, port),
                kind: FindingKind::ResetBurst,
                severity: Severity::Warning,
                subject: Subject::Port { netns, port },
                cause,
                diagnosis: format!(
                    "reset burst on :{port} ({who}, {}): {sent} RST sent and {received} received in the last \
                     {}; {hint}",
                    text::netns(netns),
                    text::dur(span)
                ),
                since,
                evidence: text::evidence([
                    ("resets_sent", f64::from(sent)),
                    ("resets_received", f64::from(received)),
                    ("resets_total", text::num(total)),
                    ("rate_per_second", rate),
                    ("window_seconds", text::secs(span)),
                ]),
                socket: None,
            });
        }
        self.last_eval = Some(now);
        self.evals.push_back(now);
        while self.evals.len() > MAX_SAMPLES {
            self.evals.pop_front();
        }
    }
}

#[cfg(test)]
#[path = "resets_random_tests.rs"]
mod random_tests;

#[cfg(test)]
mod tests {
    use crate::config::DetectorConfig;
    use crate::detect::testutil::{Harness, NETNS, assert_ev, changes, listener};
    use crate::model::Lifecycle::{Opened, Resolved};
    use crate::model::{FindingKind, ResetCounts, Subject};

    const K: FindingKind = FindingKind::ResetBurst;

    fn set(h: &mut Harness, port: u16, sent: u32, received: u32) {
        h.resets
            .insert((NETNS.cookie, port), ResetCounts { sent, received });
    }

    #[test]
    fn burst_fires_and_resolves_after_it_leaves_the_window() {
        let mut h = Harness::new(DetectorConfig::default());
        let conns = [listener(8080, 0, 128)];
        set(&mut h, 8080, 100, 0); // history before tcpwatch's first look: baseline only
        assert!(h.step_kind(0.0, &conns, K).is_empty());
        set(&mut h, 8080, 105, 0);
        assert!(h.step_kind(1.0, &conns, K).is_empty());
        set(&mut h, 8080, 106, 6);
        let ch = h.step_kind(2.0, &conns, K);
        assert_eq!(changes(&ch), vec![Opened]);
        let f = &ch[0].finding;
        assert_eq!(f.cause, "both");
        assert_eq!(f.id, "reset_burst:1:8080");
        assert_eq!(
            f.subject,
            Subject::Port {
                netns: NETNS,
                port: 8080
            }
        );
        assert_ev(f, "resets_total", 12.0);
        assert_eq!(f.since, crate::detect::testutil::s(0.0));
        assert!(f.diagnosis.starts_with(
            "reset burst on :8080 (listener server[77], netns 4026531833): 6 RST sent and 6 received in the last 2s; "
        ));
        // Quiet afterwards: the burst leaves the 10 s window at t=11, resolves 3 s later.
        let mut log = Vec::new();
        for t in 3..20 {
            log.extend(
                h.step_kind(f64::from(t), &conns, K)
                    .into_iter()
                    .map(|c| (t, c.change)),
            );
        }
        assert_eq!(log, vec![(14, Resolved)]);
    }

    #[test]
    fn steady_trickle_is_silent() {
        let mut h = Harness::new(DetectorConfig::default());
        for t in 0..200u32 {
            set(&mut h, 443, t / 2, 0); // 5 per 10 s
            assert!(h.step(f64::from(t), &[]).is_empty(), "t={t}");
        }
    }

    #[test]
    fn new_port_counts_from_zero_and_counter_reset_rebaselines() {
        let mut h = Harness::new(DetectorConfig::default());
        assert!(h.step_kind(0.0, &[], K).is_empty());
        set(&mut h, 9000, 0, 15);
        let ch = h.step_kind(1.0, &[], K);
        assert_eq!(changes(&ch), vec![Opened]);
        assert_eq!(ch[0].finding.cause, "received");
        assert!(
            ch[0]
                .finding
                .diagnosis
                .contains("(no listener, netns 4026531833)")
        );
        // A port first seen now counts from zero; a counter recreated lower is re-baselined
        // (no negative deltas, no new burst).
        set(&mut h, 9001, 50, 0);
        let ch = h.step_kind(2.0, &[], K);
        assert!(
            ch.iter()
                .any(|c| c.change == Opened && c.finding.id == "reset_burst:1:9001")
        );
        set(&mut h, 9001, 3, 0);
        let mut log = Vec::new();
        for t in 3..30 {
            set(&mut h, 9001, 3, 0);
            let ch = h.step_kind(f64::from(t), &[], K);
            log.extend(
                ch.into_iter()
                    .filter(|c| c.finding.id == "reset_burst:1:9001")
                    .map(|c| (t, c.change)),
            );
        }
        assert_eq!(log, vec![(6, Resolved)]);
    }
}
