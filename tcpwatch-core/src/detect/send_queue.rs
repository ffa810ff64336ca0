//! `send_queue_growing`: Send-Q (bytes written and not acknowledged) stays at or above
//! `min_bytes` and does not drain for `window_seconds`: `tcp.snd_una` has not moved and Send-Q
//! has not shrunk (growth or plateau). A bulk sender whose `snd_una` advances is healthy and
//! never reported, however full its queue.
//!
//! Causes:
//! - `peer_not_reading`: the peer advertises a zero window (or zero-window probes are out
//!   without retransmissions): its application stopped reading. Warning.
//! - `peer_unreachable`: no ACK while the retransmission timer fires (`tcp.retransmits` or
//!   `tcp.backoff` > 0): the peer vanished without FIN/RST or the path is broken. Critical.
//! - `no_ack_progress`: neither is visible (data queued but unsent, e.g. corked). Warning.
//!
//! Ordinary loss recovery never fires this rule: `snd_una` moves again within a round trip or
//! an RTO, far below `window_seconds`. Its fast and SACK retransmissions (the tracepoint's
//! `retrans.chain`) do not decide the cause either; only the RTO timer does, as in
//! `retransmit_chain`.
//!
//! State: per connection, where the current stall started and `snd_una` then; a stall that
//! follows ACK progress starts at the last ACK received (the progress came no later), and the
//! record's `history` samples backdate it further. Kept only for `ESTABLISHED` / `CLOSE_WAIT`
//! full sockets whose Send-Q is at or above the floor in the current evaluation.
use std::collections::HashMap;

use crate::aging::Aging;
use crate::config::{SendQueueConfig, seconds_to_ns};
use crate::detect::lifecycle::Candidate;
use crate::detect::{Snapshot, text};
use crate::model::{ConnKey, ConnRecord, FindingKind, MonoNs, Severity, TcpState};

#[derive(Clone, Copy, Debug)]
struct Track {
    /// Start of the stall: since then `snd_una` == `una` and Send-Q never shrank.
    since: MonoNs,
    una: u32,
    send_q_at_since: u32,
    last_send_q: u32,
    /// The evaluation that last saw the connection.
    seen: MonoNs,
}

#[derive(Debug, Default)]
pub(crate) struct SendQueueState {
    tracks: HashMap<ConnKey, Track>,
}

fn eligible(c: &ConnRecord, min_bytes: u32) -> bool {
    c.full_sock
        && matches!(c.state, TcpState::Established | TcpState::CloseWait)
        && c.queues.send_q >= min_bytes
}

/// The earliest sample from which, up to now, `snd_una` equals the current one and Send-Q
/// stayed at or above the floor without shrinking.
fn stall_start_from_history(c: &ConnRecord, now: MonoNs, min_bytes: u32) -> Option<(MonoNs, u32)> {
    let mut start = None;
    let mut next_q = c.queues.send_q;
    for sample in c.history.iter().rev().filter(|s| s.at <= now) {
        if sample.snd_una != c.tcp.snd_una || sample.send_q < min_bytes || sample.send_q > next_q {
            break;
        }
        start = Some((sample.at, sample.send_q));
        next_q = sample.send_q;
    }
    start
}

/// When a new stall starts. `snd_una` moved since the previous evaluation: the ACK that moved
/// it came after that evaluation and at or before the last ACK received
/// (`tcp.last_ack_age_ms` at the sweep), so the stall starts at the latest of the two (never
/// earlier than the truth). Otherwise (first sighting, or Send-Q shrank): now.
fn progress_at(c: &ConnRecord, aging: &Aging, prev: Option<&Track>, now: MonoNs) -> MonoNs {
    let ack_age_ms = aging.tcp(c).last_ack_age_ms;
    match prev {
        Some(t) if t.una != c.tcp.snd_una && ack_age_ms > 0 => aging
            .last_seen(c)
            .min(now)
            .saturating_sub(text::ms_to_ns(ack_age_ms))
            .max(t.seen)
            .min(now),
        _ => now,
    }
}

impl SendQueueState {
    pub(crate) fn detect(
        &mut self,
        now: MonoNs,
        cfg: &SendQueueConfig,
        snap: &Snapshot<'_>,
        out: &mut Vec<Candidate>,
    ) {
        let window = seconds_to_ns(cfg.window_seconds);
        let mut next: HashMap<ConnKey, Track> = HashMap::new();
        for c in snap.conns.iter().filter(|c| eligible(c, cfg.min_bytes)) {
            let q = c.queues.send_q;
            let prev = self.tracks.get(&c.key);
            let mut track = match prev {
                Some(t) if t.una == c.tcp.snd_una && q >= t.last_send_q => *t,
                _ => Track {
                    since: progress_at(c, snap.aging, prev, now),
                    una: c.tcp.snd_una,
                    send_q_at_since: q,
                    last_send_q: q,
                    seen: now,
                },
            };
            if let Some((at, q0)) = stall_start_from_history(c, now, cfg.min_bytes)
                && at < track.since
            {
                track.since = at;
                track.send_q_at_since = q0;
            }
            track.last_send_q = q;
            track.seen = now;
            next.insert(c.key, track);
            let stalled = now.saturating_sub(track.since);
            if stalled >= window {
                out.push(candidate(c, &track, stalled));
            }
        }
        self.tracks = next;
    }
}

fn candidate(c: &ConnRecord, track: &Track, stalled: u64) -> Candidate {
    let t = &c.tcp;
    // RTO expiries since the last ACK progress (not loss recovery's fast retransmissions).
    let rtos = u32::from(t.retransmits);
    let retransmitting = rtos > 0 || t.backoff > 0;
    let zero_window = t.peer_window == 0 || (t.probes_out > 0 && rtos == 0);
    let q = c.queues.send_q;
    let growth = i64::from(q) - i64::from(track.send_q_at_since);
    let growth_text = if growth > 0 {
        format!(", +{growth} in {}", text::dur(stalled))
    } else {
        String::new()
    };
    let who = format!(
        "{} -> {} ({}, {})",
        c.local,
        c.remote,
        text::owner(c, false),
        text::netns(c.netns)
    );
    let (cause, severity, diagnosis) = if zero_window {
        (
            "peer_not_reading",
            Severity::Warning,
            format!(
                "peer not reading: {who}: the peer advertises a zero window, Send-Q {q} bytes{growth_text} \
                 has not drained for {}, {} zero-window probe(s) out; the remote app stopped reading \
                 and our writes will block",
                text::dur(stalled),
                t.probes_out
            ),
        )
    } else if retransmitting {
        (
            "peer_unreachable",
            Severity::Critical,
            format!(
                "peer unreachable: {who}: Send-Q {q} bytes{growth_text}, no ACK progress for {}, \
                 retransmitting (backoff {}); the peer vanished without FIN/RST or the path is broken, \
                 writes block once the buffer is full",
                text::dur(stalled),
                t.backoff
            ),
        )
    } else {
        (
            "no_ack_progress",
            Severity::Warning,
            format!(
                "Send-Q not draining: {who}: {q} bytes ({} unsent){growth_text}, no ACK progress for {} \
                 and no retransmissions seen",
                c.queues.unsent,
                text::dur(stalled)
            ),
        )
    };
    let mut evidence = text::evidence([
        ("send_q_bytes", f64::from(q)),
        ("unacked_bytes", f64::from(c.queues.unacked)),
        ("unsent_bytes", f64::from(c.queues.unsent)),
        ("growth_bytes", text::signed(growth)),
        ("peer_window", f64::from(t.peer_window)),
        ("backoff", f64::from(t.backoff)),
        ("retransmits", f64::from(rtos)),
        ("probes_out", f64::from(t.probes_out)),
        ("seconds_since_ack_progress", text::secs(stalled)),
    ]);
    if t.sndbuf > 0 {
        evidence.insert("sndbuf_bytes".to_owned(), f64::from(t.sndbuf));
    }
    Candidate {
        id: text::conn_id(FindingKind::SendQueueGrowing, c.key),
        kind: FindingKind::SendQueueGrowing,
        severity,
        subject: text::conn_subject(c),
        cause,
        diagnosis,
        since: track.since,
        evidence,
        socket: Some(c.key),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::DetectorConfig;
    use crate::detect::testutil::{Harness, assert_ev, changes, conn, owner, s};
    use crate::model::Lifecycle::{Opened, Resolved, Updated};
    use crate::model::{ConnRecord, FindingKind, Sample, Severity, TcpState};

    const K: FindingKind = FindingKind::SendQueueGrowing;

    fn client() -> ConnRecord {
        let mut c = conn(TcpState::Established, "10.0.0.1:40000", "10.0.0.2:443");
        c.owner = Some(owner(42, "api", 5).into());
        c.tcp.snd_una = 1000;
        c.tcp.peer_window = 65535;
        c
    }

    #[test]
    fn unreachable_peer_growing_queue_fires_after_window() {
        let mut h = Harness::new(DetectorConfig::default());
        let mut c = client();
        let mut opened = None;
        for t in 0..=10u32 {
            c.queues.send_q = 5809 + t * 6000;
            c.queues.unacked = c.queues.send_q;
            c.retrans.chain = t / 2;
            c.tcp.retransmits = u8::try_from(t / 2).unwrap();
            c.tcp.backoff = u8::try_from(t / 2).unwrap();
            let ch = h.step_kind(f64::from(t), std::slice::from_ref(&c), K);
            if t < 10 {
                assert!(ch.is_empty(), "t={t}");
            } else {
                opened = Some(ch);
            }
        }
        let ch = opened.unwrap();
        assert_eq!(changes(&ch), vec![Opened]);
        let f = &ch[0].finding;
        assert_eq!(f.cause, "peer_unreachable");
        assert_eq!(f.severity, Severity::Critical);
        assert_eq!(f.since, s(0.0));
        assert_ev(f, "growth_bytes", 60000.0);
        assert_ev(f, "seconds_since_ack_progress", 10.0);
        assert!(f.diagnosis.starts_with("peer unreachable: 10.0.0.1:40000 -> 10.0.0.2:443 (api[42], netns 4026531833): Send-Q 65809 bytes, +60000 in 10s"), "{}", f.diagnosis);
        // Pinned at the buffer limit: plateau, still open, no update spam.
        for t in 11..40 {
            assert!(
                h.step_kind(f64::from(t), std::slice::from_ref(&c), K)
                    .is_empty()
            );
        }
        // ACK progress: resolves after the hysteresis.
        c.tcp.snd_una += 5000;
        c.queues.send_q -= 5000;
        assert!(h.step_kind(40.0, std::slice::from_ref(&c), K).is_empty());
        assert!(h.step_kind(42.0, std::slice::from_ref(&c), K).is_empty());
        assert_eq!(
            changes(&h.step_kind(43.0, std::slice::from_ref(&c), K)),
            vec![Resolved]
        );
    }

    #[test]
    fn bulk_transfer_with_ack_progress_is_silent() {
        let mut h = Harness::new(DetectorConfig::default());
        let mut c = client();
        for t in 0..120u32 {
            c.queues.send_q = 4_000_000; // always full
            c.tcp.snd_una = c.tcp.snd_una.wrapping_add(1_000_000);
            c.retrans.chain = u32::from(t % 7 == 0); // occasional loss, recovered
            assert!(
                h.step(f64::from(t), std::slice::from_ref(&c)).is_empty(),
                "t={t}"
            );
        }
    }

    /// Loss recovery under a full queue: `snd_una` freezes for a recovery or a few backed-off
    /// RTOs, then moves again. Never reported; and SACK retransmissions alone (no RTO) are not
    /// taken for an unreachable peer.
    #[test]
    fn loss_recovery_is_silent_and_sack_retransmissions_are_not_unreachable() {
        let mut h = Harness::new(DetectorConfig::default());
        let mut c = client();
        c.queues.send_q = 4_000_000;
        let mut all = Vec::new();
        for t in 0..300u32 {
            // Every 20 s: 4 s without progress (two backed-off RTOs), SACK retransmissions.
            let stalled = t % 20 < 4;
            if !stalled {
                c.tcp.snd_una = c.tcp.snd_una.wrapping_add(2_000_000);
            }
            c.retrans.chain = if stalled { 7 } else { 0 };
            c.tcp.retransmits = if stalled { 2 } else { 0 };
            c.tcp.backoff = c.tcp.retransmits;
            all.extend(h.step(f64::from(t), std::slice::from_ref(&c)));
        }
        assert!(all.is_empty(), "{all:?}");
        // Corked and stalled, tracepoint chain left over but no RTO: not "peer unreachable".
        let mut d = client();
        d.key.skaddr += 1;
        d.queues.send_q = 3000;
        d.queues.unsent = 3000;
        d.retrans.chain = 5;
        assert!(h.step_kind(300.0, std::slice::from_ref(&d), K).is_empty());
        let ch = h.step_kind(310.0, std::slice::from_ref(&d), K);
        assert_eq!(changes(&ch), vec![Opened]);
        assert_eq!(ch[0].finding.cause, "no_ack_progress");
    }

    /// The stall starts at the ACK that last moved `snd_una` (bounded by the last ACK received
    /// and the previous evaluation), not at the first sweep that sees it frozen; a connection
    /// first seen with data queued starts now, however old its last ACK.
    #[test]
    fn stall_starts_at_the_last_ack_progress() {
        let mut h = Harness::new(DetectorConfig::default());
        let mut c = client();
        c.queues.send_q = 100_000;
        for t in 0..=5u32 {
            c.tcp.snd_una = c.tcp.snd_una.wrapping_add(50_000);
            c.last_seen = s(f64::from(t));
            assert!(
                h.step_kind(f64::from(t), std::slice::from_ref(&c), K)
                    .is_empty()
            );
        }
        // The last progress at 5.3 s, then nothing: the sweep at 6 s sees the last ACK 0.7 s old.
        c.tcp.snd_una = c.tcp.snd_una.wrapping_add(7_000);
        c.tcp.last_ack_age_ms = 700;
        c.last_seen = s(6.0);
        c.tcp.backoff = 2;
        assert!(h.step_kind(6.0, std::slice::from_ref(&c), K).is_empty());
        assert!(h.step_kind(15.2, std::slice::from_ref(&c), K).is_empty());
        let ch = h.step_kind(15.3, std::slice::from_ref(&c), K);
        assert_eq!(changes(&ch), vec![Opened]);
        assert_eq!(ch[0].finding.since, s(5.3));

        // Idle for a minute, then a write: the stall starts at this sweep.
        let mut h = Harness::new(DetectorConfig::default());
        let mut idle = client();
        idle.queues.send_q = 500;
        idle.tcp.last_ack_age_ms = 60_000;
        idle.last_seen = s(20.0);
        assert!(h.step_kind(20.0, std::slice::from_ref(&idle), K).is_empty());
        assert!(h.step_kind(29.9, std::slice::from_ref(&idle), K).is_empty());
    }

    #[test]
    fn zero_window_is_peer_not_reading() {
        let mut h = Harness::new(DetectorConfig::default());
        let mut c = client();
        c.queues.send_q = 200_000;
        c.queues.unsent = 200_000;
        c.tcp.peer_window = 0;
        c.tcp.probes_out = 3;
        c.tcp.backoff = 3;
        assert!(h.step_kind(0.0, std::slice::from_ref(&c), K).is_empty());
        let ch = h.step_kind(10.0, std::slice::from_ref(&c), K);
        assert_eq!(changes(&ch), vec![Opened]);
        assert_eq!(ch[0].finding.cause, "peer_not_reading");
        assert_eq!(ch[0].finding.severity, Severity::Warning);
        assert!(ch[0].finding.diagnosis.starts_with("peer not reading:"));
        // Then it starts retransmitting with an open window: cause changes -> Updated.
        c.tcp.peer_window = 1000;
        c.tcp.probes_out = 0;
        c.tcp.retransmits = 4;
        let ch = h.step_kind(11.0, std::slice::from_ref(&c), K);
        assert_eq!(changes(&ch), vec![Updated]);
        assert_eq!(ch[0].finding.cause, "peer_unreachable");
    }

    #[test]
    fn history_backdates_the_stall() {
        let mut h = Harness::new(DetectorConfig::default());
        let mut c = client();
        c.queues.send_q = 3000;
        c.tcp.retransmits = 2;
        c.history = (0..=8u32)
            .map(|i| Sample {
                at: s(f64::from(i)),
                send_q: 1000 + i * 250,
                snd_una: 1000,
                ..Sample::default()
            })
            .collect();
        // The first sample had a different snd_una: the stall starts at the second.
        c.history[0].snd_una = 500;
        assert!(h.step_kind(10.0, std::slice::from_ref(&c), K).is_empty());
        let ch = h.step_kind(11.0, std::slice::from_ref(&c), K);
        assert_eq!(changes(&ch), vec![Opened]);
        assert_eq!(ch[0].finding.since, s(1.0));
    }

    #[test]
    fn short_lived_and_draining_connections_are_silent() {
        let mut h = Harness::new(DetectorConfig::default());
        let mut c = client();
        let mut all = Vec::new();
        // A request/response connection: Send-Q briefly non-zero, then gone.
        c.queues.send_q = 500;
        all.extend(h.step(0.0, std::slice::from_ref(&c)));
        all.extend(h.step(1.0, &[]));
        // snd_una frozen but Send-Q shrinks (bogus snd_una reading): draining, not stalled.
        let mut d = client();
        d.tcp.snd_una = 0;
        for t in 2..40u32 {
            d.queues.send_q = 100_000 - (t % 5) * 1000;
            all.extend(h.step(f64::from(t), std::slice::from_ref(&d)));
        }
        assert!(all.is_empty(), "{all:?}");
    }
}
