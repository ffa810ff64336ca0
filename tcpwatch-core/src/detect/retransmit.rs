//! `retransmit_chain`: the same data retransmitted again and again with no ACK progress
//! (`max(retrans.chain, tcp.retransmits) >= min_chain`) or the RTO backed off far
//! (`tcp.backoff >= min_backoff`). Reports how long the connection has been silent and when the
//! kernel will give up on it: until then the application's reads and writes simply hang.
//!
//! The give-up projection follows the kernel's `retransmits_timed_out()` / `tcp_model_timeout()`:
//! with `TCP_USER_TIMEOUT` set, that timeout; otherwise a timeout computed from the namespace's
//! `tcp_retries2` with `rto_base = TCP_RTO_MIN`, measured from the first retransmission of the
//! chain (`retrans.chain_start`, or an estimate when tcpwatch missed it).
use crate::config::RetransmitConfig;
use crate::detect::lifecycle::Candidate;
use crate::detect::{DetectContext, Snapshot, text};
use crate::model::{FindingKind, MonoNs, Severity, TcpState};

/// The kernel's `TCP_RTO_MIN` (200 ms).
pub const TCP_RTO_MIN_MS: u64 = 200;
/// The kernel's `TCP_RTO_MAX` (120 s).
pub const TCP_RTO_MAX_MS: u64 = 120_000;

/// The kernel's `tcp_model_timeout()`: how long retransmissions with exponential backoff from
/// `rto_base_ms` (capped at `TCP_RTO_MAX`) take to use up `boundary` retries.
///
/// `linear_backoff_thresh = ilog2(TCP_RTO_MAX / rto_base)`; up to it the RTO doubles, after it
/// every retry waits `TCP_RTO_MAX`. `tcp_retries2 = 15` gives 924.6 s, 8 gives 102.2 s.
#[must_use]
pub fn retries_timeout_ms(boundary: u32, rto_base_ms: u64) -> u64 {
    let base = rto_base_ms.clamp(1, TCP_RTO_MAX_MS);
    let thresh = (TCP_RTO_MAX_MS / base).ilog2();
    if boundary <= thresh {
        ((2u64 << boundary) - 1) * base
    } else {
        ((2u64 << thresh) - 1) * base + u64::from(boundary - thresh) * TCP_RTO_MAX_MS
    }
}

/// How long after the first retransmission the kernel gives up on a connection: the socket's
/// `TCP_USER_TIMEOUT` when set (non-zero), else the model timeout of `tcp_retries2`.
#[must_use]
pub fn give_up_after_ms(tcp_retries2: u32, user_timeout_ms: u32) -> u64 {
    if user_timeout_ms > 0 {
        u64::from(user_timeout_ms)
    } else {
        retries_timeout_ms(tcp_retries2, TCP_RTO_MIN_MS)
    }
}

pub(crate) fn detect(
    now: MonoNs,
    cfg: &RetransmitConfig,
    snap: &Snapshot<'_>,
    ctx: &DetectContext<'_>,
    out: &mut Vec<Candidate>,
) {
    for c in snap.conns.iter().filter(|c| {
        c.full_sock
            && matches!(
                c.state,
                TcpState::Established
                    | TcpState::CloseWait
                    | TcpState::FinWait1
                    | TcpState::Closing
                    | TcpState::LastAck
            )
    }) {
        let t = &c.tcp;
        let chain = c.retrans.chain.max(u32::from(t.retransmits));
        let backoff = u32::from(t.backoff);
        if chain < cfg.min_chain && backoff < cfg.min_backoff {
            continue;
        }
        if chain == 0 && t.probes_out > 0 {
            // Zero-window or keepalive probing backs off too; that is not a retransmission.
            continue;
        }
        let estimated = c.retrans.chain_start.is_none();
        let start = c.retrans.chain_start.unwrap_or_else(|| {
            if t.last_ack_age_ms > 0 {
                now.saturating_sub(text::ms_to_ns(t.last_ack_age_ms))
            } else {
                let k = chain.max(backoff).saturating_sub(1);
                now.saturating_sub(text::ms_to_ns(retries_timeout_ms(k, TCP_RTO_MIN_MS)))
            }
        });
        let since_ack = if t.last_ack_age_ms > 0 {
            text::ms_to_ns(t.last_ack_age_ms)
        } else {
            now.saturating_sub(start)
        };
        let retries2 = ctx.tcp_retries2(c.key.netns_cookie);
        let give_up_ms = give_up_after_ms(retries2, t.user_timeout_ms);
        let gives_up_in = start
            .saturating_add(text::ms_to_ns(give_up_ms))
            .saturating_sub(now);
        let limit = if t.user_timeout_ms > 0 {
            format!("TCP_USER_TIMEOUT {}", text::dur(text::ms_to_ns(give_up_ms)))
        } else {
            format!(
                "tcp_retries2={retries2}: {} after the first retransmission",
                text::dur(text::ms_to_ns(give_up_ms))
            )
        };
        let severity = if backoff >= cfg.critical_backoff {
            Severity::Critical
        } else {
            Severity::Warning
        };
        let diagnosis = format!(
            "peer not acknowledging: {} -> {} ({}, {}): {chain} retransmission(s) of the same data with no \
             ACK for {}, RTO backoff {backoff} (RTO {}); the kernel gives up in {} ({limit}), until then \
             reads and writes on this connection hang; peer gone without FIN/RST or path broken",
            c.local,
            c.remote,
            text::owner(c, false),
            text::netns(c.netns),
            text::dur(since_ack),
            text::dur(text::ms_to_ns(u64::from(t.rto_ms))),
            text::dur(gives_up_in),
        );
        let mut evidence = text::evidence([
            ("chain", f64::from(chain)),
            ("backoff", f64::from(backoff)),
            ("rto_seconds", text::ms_secs(u64::from(t.rto_ms))),
            ("seconds_since_ack_progress", text::secs(since_ack)),
            ("gives_up_in_seconds", text::secs(gives_up_in)),
            ("give_up_after_seconds", text::ms_secs(give_up_ms)),
            ("tcp_retries2", f64::from(retries2)),
            ("send_q_bytes", f64::from(c.queues.send_q)),
            ("chain_start_estimated", if estimated { 1.0 } else { 0.0 }),
        ]);
        if t.user_timeout_ms > 0 {
            evidence.insert(
                "user_timeout_seconds".to_owned(),
                text::ms_secs(u64::from(t.user_timeout_ms)),
            );
        }
        out.push(Candidate {
            id: text::conn_id(FindingKind::RetransmitChain, c.key),
            kind: FindingKind::RetransmitChain,
            severity,
            subject: text::conn_subject(c),
            cause: "peer_unreachable",
            diagnosis,
            since: start,
            evidence,
            socket: Some(c.key),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DetectorConfig;
    use crate::detect::testutil::{Harness, NETNS, assert_ev, changes, conn, owner, s};
    use crate::model::ConnRecord;
    use crate::model::Lifecycle::{Opened, Resolved, Updated};

    const K: FindingKind = FindingKind::RetransmitChain;

    #[test]
    fn give_up_projection_matches_the_kernel() {
        assert_eq!(retries_timeout_ms(15, TCP_RTO_MIN_MS), 924_600);
        assert_eq!(retries_timeout_ms(8, TCP_RTO_MIN_MS), 102_200);
        assert_eq!(retries_timeout_ms(9, TCP_RTO_MIN_MS), 204_600);
        assert_eq!(retries_timeout_ms(3, TCP_RTO_MIN_MS), 3_000);
        assert_eq!(retries_timeout_ms(0, TCP_RTO_MIN_MS), 200);
        assert_eq!(give_up_after_ms(15, 0), 924_600);
        assert_eq!(give_up_after_ms(15, 30_000), 30_000);
        // Degenerate inputs do not panic.
        assert_eq!(
            retries_timeout_ms(u32::MAX, 0),
            131_071 + u64::from(u32::MAX - 16) * TCP_RTO_MAX_MS
        );
        assert_eq!(retries_timeout_ms(2, 1_000_000), 3 * TCP_RTO_MAX_MS);
    }

    fn wedged(chain: u32, backoff: u8) -> ConnRecord {
        let mut c = conn(TcpState::Established, "10.0.0.1:40000", "203.0.113.9:443");
        c.owner = Some(owner(42, "api", 5));
        c.queues.send_q = 5809;
        c.retrans.chain = chain;
        c.retrans.chain_start = Some(s(0.0));
        c.tcp.backoff = backoff;
        c.tcp.rto_ms = 200 << backoff;
        c
    }

    #[test]
    fn fires_at_chain_threshold_with_projection() {
        let mut h = Harness::new(DetectorConfig::default());
        assert!(h.step_kind(1.0, &[wedged(2, 2)], K).is_empty());
        let ch = h.step_kind(25.0, &[wedged(3, 3)], K);
        assert_eq!(changes(&ch), vec![Opened]);
        let f = &ch[0].finding;
        assert_eq!(f.severity, Severity::Warning);
        assert_eq!(f.since, s(0.0));
        assert!((f.evidence["gives_up_in_seconds"] - 899.6).abs() < 1e-6);
        assert!((f.evidence["give_up_after_seconds"] - 924.6).abs() < 1e-6);
        assert!((f.evidence["seconds_since_ack_progress"] - 25.0).abs() < 1e-6);
        assert!(
            f.diagnosis.contains("the kernel gives up in 14m59s (tcp_retries2=15: 15m24s after the first retransmission)"),
            "{}",
            f.diagnosis
        );
        // One more retransmission: not material; backoff 6: critical -> Updated.
        assert!(h.step_kind(26.0, &[wedged(4, 4)], K).is_empty());
        let ch = h.step_kind(27.0, &[wedged(4, 6)], K);
        assert_eq!(changes(&ch), vec![Updated]);
        assert_eq!(ch[0].finding.severity, Severity::Critical);
        // The kernel killed it: gone, resolved at once.
        assert_eq!(changes(&h.step_kind(900.0, &[], K)), vec![Resolved]);
    }

    #[test]
    fn namespace_retries2_and_user_timeout_shorten_the_projection() {
        let mut h = Harness::new(DetectorConfig::default());
        h.netns.get_mut(&NETNS.cookie).unwrap().tcp_retries2 = 8;
        let ch = h.step_kind(25.0, &[wedged(5, 5)], K);
        assert!((ch[0].finding.evidence["gives_up_in_seconds"] - 77.2).abs() < 1e-6);
        let mut h = Harness::new(DetectorConfig::default());
        let mut c = wedged(5, 5);
        c.tcp.user_timeout_ms = 30_000;
        let ch = h.step_kind(25.0, &[c], K);
        assert!((ch[0].finding.evidence["gives_up_in_seconds"] - 5.0).abs() < 1e-6);
        assert!(ch[0].finding.diagnosis.contains("(TCP_USER_TIMEOUT 30s)"));
    }

    #[test]
    fn backoff_from_sweep_alone_fires_with_estimated_start() {
        let mut h = Harness::new(DetectorConfig::default());
        let mut c = wedged(0, 4);
        c.retrans.chain_start = None;
        c.tcp.last_ack_age_ms = 7_000;
        let ch = h.step_kind(50.0, &[c], K);
        assert_eq!(changes(&ch), vec![Opened]);
        let f = &ch[0].finding;
        assert_eq!(f.since, s(43.0));
        assert_ev(f, "chain_start_estimated", 1.0);
    }

    #[test]
    fn healthy_look_alikes_are_silent() {
        let mut h = Harness::new(DetectorConfig::default());
        // Occasional recovered loss, zero-window probing, SYN retries.
        let mut probing = wedged(0, 6);
        probing.key.skaddr += 1;
        probing.tcp.probes_out = 6;
        let mut syn = wedged(5, 5);
        syn.key.skaddr += 2;
        syn.state = TcpState::SynSent;
        for t in 0..60 {
            let lossy = wedged(u32::from(t % 3 == 0), 1);
            let ch = h.step_kind(f64::from(t), &[lossy, probing.clone(), syn.clone()], K);
            assert!(ch.is_empty(), "t={t}: {ch:?}");
        }
    }

    #[test]
    fn ack_progress_resolves_after_hysteresis_without_flapping() {
        let mut h = Harness::new(DetectorConfig::default());
        let mut log = Vec::new();
        // Chain hovering at the threshold: 3, 2, 3, 2, ...
        for t in 0..30u32 {
            log.extend(h.step_kind(f64::from(t), &[wedged(2 + t % 2, 1)], K));
        }
        assert_eq!(changes(&log), vec![Opened]);
        for t in 30..34 {
            log.extend(h.step_kind(f64::from(t), &[wedged(0, 0)], K));
        }
        assert_eq!(changes(&log), vec![Opened, Resolved]);
    }
}
