#![allow(clippy::unwrap_used, reason = "tests")]
use super::syn_give_up_ms;
use crate::config::DetectorConfig;
use crate::detect::testutil::{Harness, NETNS, assert_ev, changes, conn, s};
use crate::endpoints::{EndpointFacts, EndpointKey, EndpointStats};
use crate::model::Lifecycle::{Opened, Resolved};
use crate::model::{ConnRecord, FindingKind, Severity, Subject, TcpState};

const K: FindingKind = FindingKind::ConnectFailing;

#[test]
fn give_up_time_follows_the_kernel() {
    // Measured on Linux 6.18 (tcp_syn_linear_timeouts 4): 3.09 s, 7.15 s, 19.6 s; with
    // linear timeouts 0 and 2 retries 7.15 s. 6 retries + 4 linear: ~131-135 s.
    assert_eq!(syn_give_up_ms(1, Some(4)), 3_000);
    assert_eq!(syn_give_up_ms(2, Some(4)), 7_000);
    assert_eq!(syn_give_up_ms(3, Some(4)), 19_000);
    assert_eq!(syn_give_up_ms(2, Some(0)), 7_000);
    assert_eq!(syn_give_up_ms(6, Some(4)), 131_000);
    // Kernels without linear timeouts: the classic 127 s for 6 retries.
    assert_eq!(syn_give_up_ms(6, None), 127_000);
    assert_eq!(syn_give_up_ms(3, None), 15_000);
    assert_eq!(syn_give_up_ms(0, None), 1_000);
    assert!(syn_give_up_ms(255, Some(255)) > 0, "bounded loop");
}

fn key(remote: &str, pid: u32) -> EndpointKey {
    EndpointKey {
        netns_cookie: NETNS.cookie,
        remote: remote.parse().unwrap(),
        pid,
    }
}

fn stats(refused: u64, timed_out: u64, ok: u64) -> EndpointStats {
    EndpointStats {
        comm: "client".to_owned(),
        connects_refused: refused,
        connects_timed_out: timed_out,
        syn_retrans: timed_out * 2,
        connects_ok: ok,
        ..EndpointStats::default()
    }
}

fn facts(remote: &str, st: EndpointStats) -> EndpointFacts {
    let mut f = EndpointFacts::default();
    f.endpoints.insert(key(remote, 4242), st);
    f
}

fn step(
    h: &mut Harness,
    t: f64,
    f: &EndpointFacts,
    conns: &[ConnRecord],
) -> Vec<crate::model::FindingChange> {
    h.det.set_endpoint_facts(f.clone());
    h.step_kind(t, conns, K)
}

#[test]
fn refused_connects_open_critical_naming_process_and_remote() {
    let mut h = Harness::new(DetectorConfig::default());
    step(&mut h, 0.0, &EndpointFacts::default(), &[]);
    assert!(step(&mut h, 1.0, &facts("127.0.0.1:9", stats(2, 0, 0)), &[]).is_empty());
    let ch = step(&mut h, 2.0, &facts("127.0.0.1:9", stats(3, 0, 0)), &[]);
    assert_eq!(changes(&ch), vec![Opened]);
    let f = &ch[0].finding;
    assert_eq!(f.id, "connect_failing:1:4242:127.0.0.1:9");
    assert_eq!(f.cause, "refused");
    assert_eq!(f.severity, Severity::Critical, "no connect succeeded");
    assert_ev(f, "connects_refused", 3.0);
    assert!(matches!(&f.subject, Subject::Peer { owner: Some(o), .. } if o.pid == 4242));
    assert!(
        f.diagnosis.starts_with(
            "connects from client[4242] to 127.0.0.1:9 (netns 4026531833) are failing: 3 \
             failed in the last 2s (3 refused, 0 timed out, 0 other; 0 succeeded)"
        ),
        "{}",
        f.diagnosis
    );
    assert!(f.diagnosis.contains("nothing listens on that port"));
}

#[test]
fn syn_still_retrying_opens_at_once_with_the_give_up_time() {
    let mut h = Harness::new(DetectorConfig::default());
    {
        let n = h.netns.get_mut(&NETNS.cookie).unwrap();
        n.tcp_syn_retries = 2;
        n.tcp_syn_linear_timeouts = Some(4);
    }
    let mut syn = conn(TcpState::SynSent, "10.0.0.1:40000", "10.9.9.9:80");
    syn.creator_pid = Some(4242);
    syn.creator_comm = Some("client".to_owned());
    syn.state_since = s(0.0);
    syn.tcp.retransmits = 1;
    let none = EndpointFacts::default();
    assert!(
        step(&mut h, 1.0, &none, std::slice::from_ref(&syn)).is_empty(),
        "1 < min_syn_retrans"
    );
    syn.tcp.retransmits = 2;
    let ch = step(&mut h, 2.0, &none, std::slice::from_ref(&syn));
    assert_eq!(changes(&ch), vec![Opened]);
    let f = &ch[0].finding;
    assert_eq!(f.cause, "timed_out");
    assert_eq!(f.since, s(0.0));
    assert_ev(f, "give_up_after_seconds", 7.0);
    assert_ev(f, "give_up_in_seconds", 5.0);
    assert_ev(f, "syn_retransmits_now", 2.0);
    assert!(
        f.diagnosis.contains(
            "1 connect(s) still in SYN-SENT, SYN retransmitted 2 time(s) over 2s: the kernel gives \
             up 7s after the first SYN (tcp_syn_retries 2, tcp_syn_linear_timeouts 4), in 5s"
        ),
        "{}",
        f.diagnosis
    );
    assert!(
        f.diagnosis
            .starts_with("connects from client[4242] to 10.9.9.9:80")
    );
    // The kernel gave up: the socket is gone, the timed-out connect is counted; still open.
    let f1 = facts("10.9.9.9:80", stats(0, 1, 0));
    assert!(step(&mut h, 8.0, &f1, &[]).is_empty());
    // One timed-out connect waited the whole give-up time: enough to keep it open.
    for t in 9..20 {
        assert!(step(&mut h, f64::from(t), &f1, &[]).is_empty(), "t={t}");
    }
    let open = h.open_of(K);
    assert_eq!(open.len(), 1);
    assert_ev(open[0], "connects_timed_out", 1.0);
}

#[test]
fn healthy_churn_and_a_rare_failure_are_silent_and_failures_resolve_after_the_window() {
    let mut h = Harness::new(DetectorConfig::default());
    step(&mut h, 0.0, &EndpointFacts::default(), &[]);
    for t in 1..100u32 {
        let ok = u64::from(t) * 50;
        let refused = u64::from(t / 40); // 2 in 80 s: below 3 per 60 s
        let f = facts("10.0.0.5:5432", stats(refused, 0, ok));
        assert!(step(&mut h, f64::from(t), &f, &[]).is_empty(), "t={t}");
    }
    // Three timeouts among successes: warning; gone from the window -> resolved.
    let mut h = Harness::new(DetectorConfig::default());
    step(&mut h, 0.0, &EndpointFacts::default(), &[]);
    let mut log = Vec::new();
    for t in 1..=80u32 {
        let f = facts("10.0.0.5:5432", stats(0, 3, 10));
        log.extend(
            step(&mut h, f64::from(t), &f, &[])
                .into_iter()
                .map(|c| (t, c.change, c.finding.severity)),
        );
    }
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0], (1, Opened, Severity::Warning));
    assert_eq!((log[1].1, log[1].2), (Resolved, Severity::Warning));
    assert!((62..=66).contains(&log[1].0), "{log:?}");
}

#[test]
fn bounded_by_keys_handed_in() {
    let mut h = Harness::new(DetectorConfig::default());
    let mut f = EndpointFacts::default();
    step(&mut h, 0.0, &f, &[]);
    for i in 0..3000u32 {
        f.endpoints.insert(
            key(&format!("10.2.{}.{}:80", i / 250, i % 250), i),
            stats(1, 0, 0),
        );
    }
    step(&mut h, 1.0, &f, &[]);
    assert_eq!(h.det.connect_failing.tracked(), 3000);
    step(&mut h, 2.0, &EndpointFacts::default(), &[]);
    assert_eq!(h.det.connect_failing.tracked(), 0);
}
