use super::*;
use crate::config::DetectorConfig;
use crate::detect::testutil::{Harness, NETNS, assert_ev, changes, conn, owner, s};
use crate::model::ConnRecord;
use crate::model::Lifecycle::{Opened, Resolved, Updated};

const K: FindingKind = FindingKind::RetransmitChain;

/// RTO before backoff of the fixtures (200 ms plus a small RTT, in 4 ms jiffies).
const RTO_BASE_MS: u64 = 204;

/// A connection whose RTO timer expired `k` times with no ACK progress, the first time at
/// `s(0)` (no earlier retransmission), with RTO backoff `backoff`.
fn wedged(k: u8, backoff: u8) -> ConnRecord {
    let mut c = conn(TcpState::Established, "10.0.0.1:40000", "203.0.113.9:443");
    c.owner = Some(owner(42, "api", 5).into());
    c.queues.send_q = 5809;
    c.queues.unacked = 5809;
    c.retrans.chain = u32::from(k);
    c.retrans.chain_start = Some(s(0.0));
    c.tcp.retransmits = k;
    c.tcp.backoff = backoff;
    c.tcp.rto_ms = u32::try_from(RTO_BASE_MS << backoff).unwrap();
    let extra = backoff.saturating_sub(k);
    let last_ms: u64 = (1..k).map(|i| RTO_BASE_MS << (extra + i)).sum();
    c.retrans.last_retrans = (k > 0).then(|| s(0.0) + last_ms * 1_000_000);
    c
}

fn close_to(f: &crate::model::Finding, key: &str, want: f64) {
    let got = f.evidence[key];
    assert!((got - want).abs() < 1e-6, "{key}: {got} != {want}: {f:?}");
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
    // tcp_retries2 = 15: 924.6 s; expiries 204 ms * (2^n - 2) up to 104.4 s, then 120 s
    // apart: the kernel gives up at the expiry 928.488 s after the first.
    close_to(f, "give_up_after_seconds", 928.488);
    close_to(f, "gives_up_in_seconds", 903.488);
    close_to(f, "seconds_since_ack_progress", 25.0);
    assert_ev(f, "orphan", 0.0);
    assert_ev(f, "retry_limit", 15.0);
    assert!(
        f.diagnosis.contains(
            "the retransmission timer fired 3 time(s) in a row with no ACK for 25s, RTO backoff 3 \
             (RTO 1.6s); the kernel gives up in 15m03s (tcp_retries2=15: at the first RTO expiry \
             15m24s or more after the first RTO retransmission)"
        ),
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
    // 102.2 s: the ninth expiry, 204 ms * 510 = 104.04 s after the first.
    close_to(&ch[0].finding, "gives_up_in_seconds", 79.04);
    let mut h = Harness::new(DetectorConfig::default());
    let mut c = wedged(5, 5);
    c.tcp.user_timeout_ms = 30_000;
    let ch = h.step_kind(25.0, &[c], K);
    close_to(&ch[0].finding, "gives_up_in_seconds", 5.0);
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
        let lossy = wedged(u8::from(t % 3 == 0), 1);
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
        log.extend(h.step_kind(
            f64::from(t),
            &[wedged(2 + u8::try_from(t % 2).unwrap(), 1)],
            K,
        ));
    }
    assert_eq!(changes(&log), vec![Opened]);
    for t in 30..34 {
        log.extend(h.step_kind(f64::from(t), &[wedged(0, 0)], K));
    }
    assert_eq!(changes(&log), vec![Opened, Resolved]);
}

/// Issue 18 item 5: fast retransmits, SACK recovery of several holes in one round trip and
/// tail-loss probes retransmit many segments while `snd_una` is frozen, but the RTO timer does
/// not fire: ordinary loss recovery, not a vanished peer.
/// The persist timer backs off while the peer advertises a zero window: backoff 4+ with no
/// RTO expiry, nothing in flight, and `probes_out` back at 0 after each answered probe.
#[test]
fn zero_window_probing_is_not_a_chain() {
    let mut h = Harness::new(DetectorConfig::default());
    let mut c = wedged(0, 6);
    c.queues.unacked = 0;
    c.queues.unsent = 5809;
    c.tcp.peer_window = 0;
    c.tcp.probes_out = 0;
    c.retrans.chain = 0;
    c.retrans.chain_start = None;
    c.retrans.last_retrans = None;
    for t in 0..30 {
        assert!(
            h.step_kind(f64::from(t), std::slice::from_ref(&c), K)
                .is_empty()
        );
    }
    // The same backoff with data in flight is an RTO chain the kernel did not count (a kernel
    // without `icsk_retransmits`): it fires.
    c.queues.unacked = 5809;
    c.queues.unsent = 0;
    assert_eq!(changes(&h.step_kind(31.0, &[c], K)), vec![Opened]);
}

#[test]
fn loss_recovery_retransmissions_are_not_a_chain() {
    let mut h = Harness::new(DetectorConfig::default());
    let mut all = Vec::new();
    for t in 0..120u32 {
        // A SACK recovery of 6 holes caught mid-flight by the sweep, every sweep.
        let mut sack = wedged(0, 0);
        sack.retrans.chain = 6;
        sack.retrans.last_retrans = Some(s(f64::from(t)));
        // One RTO in the middle of a recovery, then its retransmissions of the marked holes.
        let mut rto = wedged(1, 1);
        rto.key.skaddr += 1;
        rto.retrans.chain = 9;
        all.extend(h.step_kind(f64::from(t), &[sack, rto], K));
    }
    assert!(all.is_empty(), "{all:?}");
    // The same sockets once the RTO keeps firing: a chain.
    let ch = h.step_kind(121.0, &[wedged(3, 3)], K);
    assert_eq!(changes(&ch), vec![Opened]);
    assert_ev(&ch[0].finding, "chain", 3.0);
    assert_ev(&ch[0].finding, "retransmitted_segments", 3.0);
}

fn orphan(state: TcpState) -> ConnRecord {
    let mut c = wedged(3, 3);
    c.state = state;
    c.inode = 0;
    c.owner = None;
    c
}

/// Issue 18 item 4: an orphan (closed by its process: no inode, `FIN_WAIT1` / `CLOSING` /
/// `LAST_ACK`) gives up after `tcp_orphan_retries`, not `tcp_retries2`.
#[test]
fn orphans_project_from_tcp_orphan_retries() {
    let mut h = Harness::new(DetectorConfig::default());
    h.netns.get_mut(&NETNS.cookie).unwrap().tcp_orphan_retries = 3;
    // Expiries 0, 0.408, 1.224 (the third, just seen), 2.856 (< 3 s) and 6.12 s: the abort.
    let ch = h.step_kind(1.3, &[orphan(TcpState::FinWait1)], K);
    assert_eq!(changes(&ch), vec![Opened]);
    let f = &ch[0].finding;
    close_to(f, "give_up_after_seconds", 6.12);
    close_to(f, "gives_up_in_seconds", 4.82);
    assert_ev(f, "orphan", 1.0);
    assert_ev(f, "tcp_orphan_retries", 3.0);
    assert_ev(f, "retry_limit", 3.0);
    assert!(
        f.diagnosis.contains(
            "the kernel gives up in 4.8s (orphaned, tcp_orphan_retries=3: at the first RTO \
             expiry 3s or more after the first RTO retransmission)"
        ),
        "{}",
        f.diagnosis
    );
    for state in [TcpState::Closing, TcpState::LastAck] {
        let mut h = Harness::new(DetectorConfig::default());
        h.netns.get_mut(&NETNS.cookie).unwrap().tcp_orphan_retries = 3;
        let ch = h.step_kind(1.3, &[orphan(state)], K);
        close_to(&ch[0].finding, "gives_up_in_seconds", 4.82);
    }

    // The default, 0: 8 retries (102.2 s) while the RTO is below TCP_RTO_MAX: 104.04 s.
    let mut h = Harness::new(DetectorConfig::default());
    let ch = h.step_kind(1.3, &[orphan(TcpState::FinWait1)], K);
    let f = &ch[0].finding;
    close_to(f, "give_up_after_seconds", 104.04);
    assert_ev(f, "tcp_orphan_retries", 0.0);
    assert_ev(f, "retry_limit", 8.0);
    assert!(
        f.diagnosis
            .contains("(orphaned, tcp_orphan_retries=0: 8 retries: at the first RTO"),
        "{}",
        f.diagnosis
    );

    // Not orphans: FIN_WAIT1 after shutdown(SHUT_WR) keeps its socket; a never-accepted
    // CLOSE_WAIT has no inode but no FIN of ours. Both use tcp_retries2.
    let mut h = Harness::new(DetectorConfig::default());
    h.netns.get_mut(&NETNS.cookie).unwrap().tcp_orphan_retries = 3;
    let mut shut = orphan(TcpState::FinWait1);
    shut.inode = 777;
    let mut unaccepted = orphan(TcpState::CloseWait);
    unaccepted.key.skaddr += 1;
    let ch = h.step_kind(1.3, &[shut, unaccepted], K);
    assert_eq!(ch.len(), 2);
    for c in &ch {
        assert_ev(&c.finding, "orphan", 0.0);
        close_to(&c.finding, "give_up_after_seconds", 928.488);
        assert!(!c.finding.evidence.contains_key("tcp_orphan_retries"));
    }
}
