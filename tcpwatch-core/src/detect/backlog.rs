//! `accept_backlog_filling`: a listening socket whose accept queue (`queues.accept_queue`, what
//! `ss` shows as a listener's Recv-Q) stays at or above `fill_fraction` of its limit
//! (`queues.accept_limit`) for `window_seconds` (cause `filling`, warning), or is full while the
//! namespace's `ListenOverflows` counter rises (cause `overflowing`, critical: SYNs are being
//! dropped). The kernel queues up to limit + 1 connections, so the fill ratio can exceed 1.
//!
//! A listener that overflowed stays `overflowing` for `window_seconds` after the last overflow
//! seen, so a queue bouncing at its limit does not flip the cause every evaluation; a listener
//! found filling stays filling until its fill drops [`FILL_MARGIN`] below `fill_fraction`. The accept
//! rate cannot be known from queue lengths alone and is not reported.
//!
//! State: per listener (only while filling or recently overflowing) and the last
//! `ListenOverflows` value per namespace handed in.
use std::collections::HashMap;

use crate::config::{AcceptBacklogConfig, seconds_to_ns};
use crate::detect::lifecycle::Candidate;
use crate::detect::{DetectContext, Snapshot, text};
use crate::model::{ConnKey, ConnRecord, FindingKind, MonoNs, Severity, TcpState};

/// Once filling, a listener stays filling until its fill ratio drops this far below
/// `fill_fraction` (value hysteresis; time hysteresis is the lifecycle's).
pub(crate) const FILL_MARGIN: f64 = 0.1;

#[derive(Clone, Copy, Debug, Default)]
struct Track {
    above_since: Option<MonoNs>,
    /// The listener was found filling: it stays so while the fill is above the lower
    /// threshold (`fill_fraction - FILL_MARGIN`).
    latched: bool,
    first_overflow_at: Option<MonoNs>,
    last_overflow_at: Option<MonoNs>,
    /// `ListenOverflows` increments seen while this listener was full, since `first_overflow_at`.
    overflows: u64,
}

#[derive(Debug, Default)]
pub(crate) struct BacklogState {
    listeners: HashMap<ConnKey, Track>,
    overflows: HashMap<u64, u64>,
}

impl BacklogState {
    pub(crate) fn detect(
        &mut self,
        now: MonoNs,
        cfg: &AcceptBacklogConfig,
        snap: &Snapshot<'_>,
        ctx: &DetectContext<'_>,
        out: &mut Vec<Candidate>,
    ) {
        let window = seconds_to_ns(cfg.window_seconds);
        let deltas: HashMap<u64, u64> = ctx
            .netns
            .iter()
            .map(|(&cookie, info)| {
                let prev = self.overflows.get(&cookie).copied();
                (
                    cookie,
                    prev.map_or(0, |p| info.listen_overflows.saturating_sub(p)),
                )
            })
            .collect();
        self.overflows = ctx
            .netns
            .iter()
            .map(|(&cookie, info)| (cookie, info.listen_overflows))
            .collect();

        let mut next = HashMap::new();
        for l in snap.conns.iter().filter(|c| c.state == TcpState::Listen) {
            let mut tr = self.listeners.get(&l.key).copied().unwrap_or_default();
            let q = l.queues.accept_queue;
            let limit = l.queues.accept_limit;
            let cap = limit.max(1);
            let fill = f64::from(q) / f64::from(cap);
            let delta = deltas.get(&l.key.netns_cookie).copied().unwrap_or(0);
            if q >= cap && delta > 0 {
                tr.last_overflow_at = Some(now);
                tr.first_overflow_at.get_or_insert(now);
                tr.overflows += delta;
            }
            let overflowing = tr
                .last_overflow_at
                .is_some_and(|t| now.saturating_sub(t) < window);
            if !overflowing {
                tr = Track {
                    above_since: tr.above_since,
                    latched: tr.latched,
                    ..Track::default()
                };
            }
            let threshold = if tr.latched {
                (cfg.fill_fraction - FILL_MARGIN).max(0.0)
            } else {
                cfg.fill_fraction
            };
            if q > 0 && fill >= threshold {
                tr.above_since.get_or_insert(now);
            } else {
                tr.above_since = None;
                tr.latched = false;
            }
            let filling = tr
                .above_since
                .is_some_and(|s| now.saturating_sub(s) >= window);
            tr.latched |= filling;
            if tr.above_since.is_some() || tr.last_overflow_at.is_some() {
                next.insert(l.key, tr);
            }
            if !(overflowing || filling) {
                continue;
            }
            out.push(candidate(now, l, &tr, overflowing, snap));
        }
        self.listeners = next;
    }
}

fn candidate(
    now: MonoNs,
    l: &ConnRecord,
    tr: &Track,
    overflowing: bool,
    snap: &Snapshot<'_>,
) -> Candidate {
    let q = l.queues.accept_queue;
    let limit = l.queues.accept_limit;
    let fill = f64::from(q) / f64::from(limit.max(1));
    let since = match (tr.above_since, tr.first_overflow_at) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(now),
    };
    let unacc = snap.unaccepted.get(&l.key).copied().unwrap_or_default();
    let head = format!(
        "app is not accepting fast enough on :{} ({}, {})",
        l.local.port(),
        text::owner(l, false),
        text::netns(l.netns)
    );
    let (cause, severity, body) = if overflowing {
        (
            "overflowing",
            Severity::Critical,
            format!(
                "accept queue full ({q}/{limit}) and new connections are dropped (ListenOverflows +{} \
                 in this namespace)",
                tr.overflows
            ),
        )
    } else {
        (
            "filling",
            Severity::Warning,
            format!(
                "accept queue {q}/{limit} ({:.0}% full) for {}",
                fill * 100.0,
                text::dur(now.saturating_sub(since))
            ),
        )
    };
    let pile = if unacc.close_wait > 0 {
        format!(
            "; {} queued connection(s) already closed by the peer (CLOSE_WAIT, never accepted)",
            unacc.close_wait
        )
    } else {
        String::new()
    };
    let evidence = text::evidence([
        ("fill_ratio", fill),
        ("queue", f64::from(q)),
        ("limit", f64::from(limit)),
        ("unaccepted_close_wait", f64::from(unacc.close_wait)),
        ("unaccepted_established", f64::from(unacc.established)),
        ("listen_overflows_delta", text::num(tr.overflows)),
        (
            "above_threshold_seconds",
            text::secs(now.saturating_sub(since)),
        ),
    ]);
    Candidate {
        id: text::conn_id(FindingKind::AcceptBacklogFilling, l.key),
        kind: FindingKind::AcceptBacklogFilling,
        severity,
        subject: text::listener_subject(l),
        cause,
        diagnosis: format!("{head}: {body}{pile}"),
        since,
        evidence,
        socket: Some(l.key),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::DetectorConfig;
    use crate::detect::testutil::{Harness, NETNS, assert_ev, changes, conn, listener};
    use crate::model::Lifecycle::{Opened, Resolved, Updated};
    use crate::model::{FindingKind, Severity, TcpState};

    const K: FindingKind = FindingKind::AcceptBacklogFilling;

    #[test]
    fn filling_fires_after_window_and_resolves_when_drained() {
        let mut h = Harness::new(DetectorConfig::default());
        for t in 0..5 {
            assert!(
                h.step_kind(f64::from(t), &[listener(8080, 110, 128)], K)
                    .is_empty(),
                "t={t}"
            );
        }
        let ch = h.step_kind(5.0, &[listener(8080, 110, 128)], K);
        assert_eq!(changes(&ch), vec![Opened]);
        let f = &ch[0].finding;
        assert_eq!(f.cause, "filling");
        assert_eq!(f.severity, Severity::Warning);
        assert_eq!(
            f.diagnosis,
            "app is not accepting fast enough on :8080 (server[77], netns 4026531833): accept queue \
             110/128 (86% full) for 5s"
        );
        assert!(matches!(f.subject, crate::model::Subject::Listener { .. }));
        assert!(h.step_kind(6.0, &[listener(8080, 0, 128)], K).is_empty());
        assert!(h.step_kind(8.0, &[listener(8080, 0, 128)], K).is_empty());
        assert_eq!(
            changes(&h.step_kind(9.0, &[listener(8080, 0, 128)], K)),
            vec![Resolved]
        );
    }

    #[test]
    fn listener_that_drains_is_silent() {
        let mut h = Harness::new(DetectorConfig::default());
        for t in 0..120u32 {
            // Bursts fill the queue to 100 % for up to 3 s, then the app catches up.
            let q = if t % 6 < 3 { 128 } else { 2 };
            assert!(
                h.step(f64::from(t), &[listener(8080, q, 128)]).is_empty(),
                "t={t}"
            );
        }
    }

    #[test]
    fn overflow_is_critical_at_once_and_counts_the_pile() {
        let mut h = Harness::new(DetectorConfig::default());
        let mut conns = vec![listener(8080, 513, 512)];
        let mut unacc = conn(TcpState::CloseWait, "10.0.0.1:8080", "10.0.0.9:1");
        unacc.inode = 0;
        conns.push(unacc);
        assert!(h.step_kind(0.0, &conns, K).is_empty());
        h.netns.get_mut(&NETNS.cookie).unwrap().listen_overflows += 7;
        let ch = h.step_kind(1.0, &conns, K);
        assert_eq!(changes(&ch), vec![Opened]);
        let f = &ch[0].finding;
        assert_eq!(f.cause, "overflowing");
        assert_eq!(f.severity, Severity::Critical);
        assert_ev(f, "unaccepted_close_wait", 1.0);
        assert!((f.evidence["fill_ratio"] - 513.0 / 512.0).abs() < 1e-9);
        assert!(f.diagnosis.contains(
            "accept queue full (513/512) and new connections are dropped (ListenOverflows +7"
        ));
        assert!(f.diagnosis.ends_with(
            "; 1 queued connection(s) already closed by the peer (CLOSE_WAIT, never accepted)"
        ));
        // Overflow counter bouncing: no cause flapping while full.
        for t in 2..30u32 {
            if t % 3 == 0 {
                h.netns.get_mut(&NETNS.cookie).unwrap().listen_overflows += 1;
            }
            assert!(h.step_kind(f64::from(t), &conns, K).is_empty(), "t={t}");
        }
        // Overflows stop but the queue stays full: downgraded to filling.
        let mut log = Vec::new();
        for t in 30..40 {
            log.extend(h.step_kind(f64::from(t), &conns, K));
        }
        assert_eq!(changes(&log), vec![Updated]);
        assert_eq!(log[0].finding.cause, "filling");
    }

    #[test]
    fn overflows_in_namespace_without_full_queue_do_not_count() {
        let mut h = Harness::new(DetectorConfig::default());
        for t in 0..10 {
            h.netns.get_mut(&NETNS.cookie).unwrap().listen_overflows += 5;
            assert!(
                h.step_kind(f64::from(t), &[listener(8080, 3, 128)], K)
                    .is_empty()
            );
        }
    }

    #[test]
    fn hovering_at_fraction_does_not_flap() {
        let mut h = Harness::new(DetectorConfig::default());
        let mut log = Vec::new();
        for t in 0..100u32 {
            // 0.805 / 0.789 of 128, then 0.75.
            let q = if t < 10 || t % 2 == 0 {
                103
            } else if t < 50 {
                101
            } else {
                96
            };
            log.extend(h.step_kind(f64::from(t), &[listener(8080, q, 128)], K));
        }
        assert_eq!(changes(&log), vec![Opened]);
    }
}
