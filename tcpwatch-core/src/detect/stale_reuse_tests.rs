#![allow(clippy::unwrap_used, reason = "tests")]
use crate::config::DetectorConfig;
use crate::detect::testutil::{Harness, NETNS, assert_ev, changes, conn, owner, s};
use crate::endpoints::{EndpointFacts, EndpointKey, EndpointStats, ListenerHistory};
use crate::model::Lifecycle::{Opened, Resolved};
use crate::model::{ConnRecord, FindingKind, Severity, Subject, TcpState};

const K: FindingKind = FindingKind::StaleConnectionReuse;

fn key(remote: &str, pid: u32) -> EndpointKey {
    EndpointKey {
        netns_cookie: NETNS.cookie,
        remote: remote.parse().unwrap(),
        pid,
    }
}

fn facts(stale: u64) -> EndpointFacts {
    let mut f = EndpointFacts::default();
    set(&mut f, "10.0.0.2:8080", 1234, stale);
    f
}

fn set(f: &mut EndpointFacts, remote: &str, pid: u32, stale: u64) {
    f.endpoints.insert(
        key(remote, pid),
        EndpointStats {
            comm: "nginx".to_owned(),
            stale_resets: stale,
            resets_received: 100,
            ..EndpointStats::default()
        },
    );
}

fn backend() -> ConnRecord {
    let mut l = conn(TcpState::Listen, "10.0.0.2:8080", "0.0.0.0:0");
    l.owner = Some(owner(88, "backend", 3).into());
    l
}

fn step(h: &mut Harness, t: f64, f: &EndpointFacts) -> Vec<crate::model::FindingChange> {
    h.det.set_endpoint_facts(f.clone());
    h.step_kind(t, &[backend()], K)
}

#[test]
fn opens_at_min_events_and_names_client_server_and_count() {
    let mut h = Harness::new(DetectorConfig::default());
    assert!(step(&mut h, 0.0, &EndpointFacts::default()).is_empty());
    assert!(
        step(&mut h, 1.0, &facts(1)).is_empty(),
        "one is below min_events 2"
    );
    let ch = step(&mut h, 2.0, &facts(2));
    assert_eq!(changes(&ch), vec![Opened]);
    let f = &ch[0].finding;
    assert_eq!(f.id, "stale_connection_reuse:1:1234:10.0.0.2:8080");
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.cause, "idle_timeout");
    assert_ev(f, "stale_requests", 2.0);
    assert_eq!(f.since, s(0.0), "the window's first sample");
    match &f.subject {
        Subject::Peer {
            remote,
            owner: Some(o),
            ..
        } => {
            assert_eq!(remote.to_string(), "10.0.0.2:8080");
            assert_eq!((o.pid, o.comm.as_str()), (1234, "nginx"));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        f.diagnosis.starts_with(
            "nginx[1234] wrote 2 request(s) in the last 2s into connections to 10.0.0.2:8080 \
             (server backend[88] on 10.0.0.2:8080, netns 4026531833)"
        ),
        "{}",
        f.diagnosis
    );
    assert!(
        f.diagnosis
            .contains("idle timeout is shorter than the client's keep-alive")
    );
    assert!(f.diagnosis.contains("IdleConnTimeout"));
}

#[test]
fn history_before_the_first_look_is_a_baseline_and_plain_resets_do_not_count() {
    let mut h = Harness::new(DetectorConfig::default());
    let mut f = facts(50);
    for t in 0..30 {
        // Other resets keep coming; stale ones do not.
        f.endpoints
            .get_mut(&key("10.0.0.2:8080", 1234))
            .unwrap()
            .resets_received += 10;
        assert!(step(&mut h, f64::from(t), &f).is_empty(), "t={t}");
    }
}

#[test]
fn stays_open_while_in_window_then_resolves_with_hysteresis_and_reopens_late() {
    let mut h = Harness::new(DetectorConfig::default());
    step(&mut h, 0.0, &EndpointFacts::default());
    let mut log = Vec::new();
    let mut t = 1;
    while t <= 80 && !log.iter().any(|(_, c)| *c == Resolved) {
        let n = if t < 3 { u64::try_from(t).unwrap() } else { 2 };
        log.extend(
            step(&mut h, f64::from(t), &facts(n))
                .into_iter()
                .map(|c| (t, c.change)),
        );
        t += 1;
    }
    // The two events leave the 60 s window at t=62, resolve_after (3 s) later it resolves.
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0], (2, Opened));
    assert_eq!(log[1].1, Resolved);
    assert!((62..=66).contains(&log[1].0), "{log:?}");
    // New events 2 s after: the condition must hold reopen_after (10 s) before re-opening.
    let resolved_at = log[1].0;
    let mut again = Vec::new();
    for t in resolved_at + 1..=resolved_at + 30 {
        let n = if t < resolved_at + 2 { 2 } else { 4 };
        again.extend(
            step(&mut h, f64::from(t), &facts(n))
                .into_iter()
                .map(|c| (t, c.change)),
        );
    }
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].1, Opened);
    assert!(
        again[0].0 >= resolved_at + 12,
        "{again:?} resolved at {resolved_at}"
    );
}

#[test]
fn server_restart_is_the_cause_when_the_listener_was_re_created() {
    let mut h = Harness::new(DetectorConfig::default());
    let mut f = EndpointFacts::default();
    step(&mut h, 0.0, &f);
    f.listeners.push(ListenerHistory {
        netns_cookie: NETNS.cookie,
        local: "0.0.0.0:8080".parse().unwrap(),
        listens: 2,
        restarts: 1,
        last_restart: Some(s(5.0)),
        pid: 99,
        comm: "backend".to_owned(),
    });
    set(&mut f, "10.0.0.2:8080", 4321, 8);
    f.endpoints
        .get_mut(&key("10.0.0.2:8080", 4321))
        .unwrap()
        .comm = "pool".to_owned();
    let ch = step(&mut h, 7.0, &f);
    assert_eq!(changes(&ch), vec![Opened]);
    let d = &ch[0].finding;
    assert_eq!(d.cause, "server_restarted");
    assert_ev(d, "stale_requests", 8.0);
    assert_ev(d, "server_restart_seconds_ago", 2.0);
    assert!(
        d.diagnosis.starts_with("pool[4321] wrote 8 request(s)"),
        "{}",
        d.diagnosis
    );
    assert!(
        d.diagnosis.contains(
            "the server restarted (its listener 0.0.0.0:8080 was re-created by backend[99] 2s ago)"
        ),
        "{}",
        d.diagnosis
    );
}

#[test]
fn critical_above_the_rate_and_a_remote_server_is_named_as_such() {
    let mut h = Harness::new(DetectorConfig::default());
    let mut f = EndpointFacts::default();
    step(&mut h, 0.0, &f);
    set(&mut f, "192.0.2.7:443", 55, 30);
    let ch = step(&mut h, 1.0, &f);
    assert_eq!(changes(&ch), vec![Opened]);
    assert_eq!(
        ch[0].finding.severity,
        Severity::Critical,
        "30 in 60 s = 30/min"
    );
    assert!(
        ch[0]
            .finding
            .diagnosis
            .contains("192.0.2.7:443 (server not on this host, client in netns 4026531833) that"),
        "{}",
        ch[0].finding.diagnosis
    );
    set(&mut f, "192.0.2.7:443", 55, 31);
    let mut cfg = DetectorConfig::default();
    cfg.stale_connection_reuse.critical_per_minute = 100.0;
    let mut h2 = Harness::new(cfg);
    step(&mut h2, 0.0, &EndpointFacts::default());
    let ch = step(&mut h2, 1.0, &f);
    assert_eq!(ch[0].finding.severity, Severity::Warning);
}

#[test]
fn state_is_bounded_by_the_keys_handed_in_and_counters_rebaseline() {
    let mut h = Harness::new(DetectorConfig::default());
    let mut f = EndpointFacts::default();
    step(&mut h, 0.0, &f);
    for i in 0..5000u32 {
        let ip = format!("10.1.{}.{}:80", i / 250, i % 250);
        set(&mut f, &ip, i + 1, 1);
    }
    step(&mut h, 1.0, &f);
    assert_eq!(h.det.stale_reuse.tracked(), 5000);
    let f = facts(7);
    step(&mut h, 2.0, &f);
    assert_eq!(h.det.stale_reuse.tracked(), 1);
    // A counter that goes down (LRU entry re-created) re-baselines: no negative delta, and
    // only what was counted after it opens a finding.
    let mut h = Harness::new(DetectorConfig::default());
    step(&mut h, 0.0, &facts(40));
    assert!(step(&mut h, 1.0, &facts(1)).is_empty());
    assert!(
        step(&mut h, 2.0, &facts(2)).is_empty(),
        "1 -> 2 is one event"
    );
    assert_eq!(changes(&step(&mut h, 3.0, &facts(3))), vec![Opened]);
}

#[test]
fn disabled_rule_is_silent() {
    let mut cfg = DetectorConfig::default();
    cfg.stale_connection_reuse.enabled = false;
    let mut h = Harness::new(cfg);
    step(&mut h, 0.0, &EndpointFacts::default());
    assert!(step(&mut h, 1.0, &facts(9)).is_empty());
}
