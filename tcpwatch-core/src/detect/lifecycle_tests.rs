//! Tests of the finding lifecycle (hysteresis, updates, bounds).
use super::*;
use crate::detect::testutil::{NETNS, s};
use crate::model::Lifecycle::{Opened, Resolved, Updated};

fn book(resolve_after: f64, reopen_after: f64) -> FindingBook {
    let cfg = DetectorConfig {
        resolve_after_seconds: resolve_after,
        reopen_after_seconds: reopen_after,
        min_update_interval_seconds: 2.0,
        recently_resolved: 2,
        max_open_findings: 2,
        ..DetectorConfig::default()
    };
    FindingBook::new(&cfg)
}

fn cand(id: &str, value: f64) -> Candidate {
    Candidate {
        id: id.to_owned(),
        kind: FindingKind::ResetBurst,
        severity: Severity::Warning,
        subject: Subject::Port {
            netns: NETNS,
            port: 80,
        },
        cause: "x",
        diagnosis: format!("value {value}"),
        since: s(0.0),
        evidence: text::evidence([("value", value), ("age_seconds", value)]),
        socket: None,
    }
}

fn run(b: &mut FindingBook, t: f64, cands: Vec<Candidate>) -> Vec<Lifecycle> {
    b.apply(s(t), cands, &HashMap::new())
        .into_iter()
        .map(|c| c.change)
        .collect()
}

#[test]
fn opens_updates_only_on_material_change_and_resolves_after_delay() {
    let mut b = book(3.0, 10.0);
    assert_eq!(run(&mut b, 0.0, vec![cand("a", 10.0)]), vec![Opened]);
    assert_eq!(
        run(&mut b, 1.0, vec![cand("a", 12.0)]),
        Vec::<Lifecycle>::new()
    );
    assert_eq!(b.get("a").unwrap().diagnosis, "value 12");
    assert_eq!(run(&mut b, 2.0, vec![cand("a", 16.0)]), vec![Updated]);
    assert_eq!(run(&mut b, 3.0, vec![]), Vec::<Lifecycle>::new());
    assert_eq!(run(&mut b, 5.0, vec![]), Vec::<Lifecycle>::new());
    assert_eq!(run(&mut b, 6.0, vec![]), vec![Resolved]);
    let r = b.recently_resolved().next().unwrap();
    assert!(
        r.diagnosis
            .starts_with("resolved after 6s (condition cleared): "),
        "{}",
        r.diagnosis
    );
    assert!((r.evidence["duration_seconds"] - 6.0).abs() < 1e-9);
    assert_eq!(b.open().count(), 0);
}

#[test]
fn hovering_condition_does_not_flap() {
    let mut b = book(3.0, 10.0);
    let mut log = Vec::new();
    for i in 0..60 {
        let t = f64::from(i);
        let c = if i % 2 == 0 {
            vec![cand("a", 1.0)]
        } else {
            vec![]
        };
        log.extend(run(&mut b, t, c));
    }
    assert_eq!(log, vec![Opened]);
}

#[test]
fn reopen_is_held_off_after_resolution() {
    let mut b = book(1.0, 10.0);
    run(&mut b, 0.0, vec![cand("a", 1.0)]);
    assert_eq!(run(&mut b, 1.0, vec![]), Vec::<Lifecycle>::new());
    assert_eq!(run(&mut b, 2.0, vec![]), vec![Resolved]);
    // Back at once: held off until it has held for 10 s.
    for t in 3..13 {
        assert_eq!(
            run(&mut b, f64::from(t), vec![cand("a", 1.0)]),
            Vec::<Lifecycle>::new(),
            "t={t}"
        );
    }
    assert_eq!(run(&mut b, 13.0, vec![cand("a", 1.0)]), vec![Opened]);
}

#[test]
fn comes_back_later_opens_at_once() {
    let mut b = book(0.0, 5.0);
    run(&mut b, 0.0, vec![cand("a", 1.0)]);
    assert_eq!(run(&mut b, 1.0, vec![]), vec![Resolved]);
    run(&mut b, 7.0, vec![]);
    assert_eq!(run(&mut b, 8.0, vec![cand("a", 1.0)]), vec![Opened]);
}

#[test]
fn vanished_socket_resolves_at_once_and_cap_suppresses() {
    let mut b = book(3.0, 10.0);
    let key = ConnKey {
        skaddr: 1,
        netns_cookie: 1,
    };
    let mut c = cand("a", 1.0);
    c.socket = Some(key);
    let present: HashMap<ConnKey, u64> = [(key, 0)].into_iter().collect();
    let ch = b.apply(s(0.0), vec![c, cand("b", 1.0), cand("c", 1.0)], &present);
    assert_eq!(ch.len(), 2);
    assert_eq!(b.suppressed(), 1);
    assert!(b.is_flagged(&key));
    let ch = b.apply(
        s(1.0),
        vec![cand("b", 1.0), cand("c", 1.0)],
        &HashMap::new(),
    );
    let got: Vec<_> = ch
        .iter()
        .map(|c| (c.change, c.finding.id.as_str()))
        .collect();
    assert_eq!(got, vec![(Resolved, "a"), (Opened, "c")]);
    assert!(!b.is_flagged(&key));
    assert!(ch[0].finding.diagnosis.contains("connection closed"));
}

#[test]
fn evidence_updates_are_rate_limited_but_severity_changes_are_not() {
    let mut b = book(3.0, 10.0);
    assert_eq!(run(&mut b, 0.0, vec![cand("a", 1.0)]), vec![Opened]);
    // Doubling every evaluation: at most one Updated per 2 s (the test interval).
    let mut log = Vec::new();
    for t in 1..=6u32 {
        let v = f64::from(1u32 << t);
        log.extend(
            run(&mut b, f64::from(t), vec![cand("a", v)])
                .into_iter()
                .map(|c| (t, c)),
        );
    }
    assert_eq!(log, vec![(2, Updated), (4, Updated), (6, Updated)]);
    let mut c = cand("a", 64.0);
    c.severity = Severity::Critical;
    assert_eq!(run(&mut b, 6.5, vec![c]), vec![Updated]);
    assert_eq!(b.get("a").unwrap().severity, Severity::Critical);
    assert!((b.get("a").unwrap().evidence["age_seconds"] - 64.0).abs() < 1e-9);
}

#[test]
fn resolved_ring_is_bounded_newest_first() {
    let mut b = book(0.0, 0.0);
    for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
        let t = f64::from(u32::try_from(i).unwrap()) * 2.0;
        run(&mut b, t, vec![cand(id, 1.0)]);
        run(&mut b, t + 1.0, vec![]);
    }
    let ids: Vec<&str> = b.recently_resolved().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, vec!["c", "b"]);
    run(&mut b, 6.0, vec![]);
    assert_eq!(
        b.entries.len(),
        0,
        "resolved entries past reopen_after are forgotten"
    );
}

#[test]
fn new_socket_at_the_same_key_resolves_the_old_sockets_finding() {
    let mut b = book(0.0, 10.0);
    let key = ConnKey {
        skaddr: 1,
        netns_cookie: 1,
    };
    let mut c = cand("a", 1.0);
    c.socket = Some(key);
    let old: HashMap<ConnKey, u64> = [(key, 11)].into_iter().collect();
    assert_eq!(b.apply(s(0.0), vec![c.clone()], &old).len(), 1);
    // Same cookie, condition still true: stays open.
    assert!(b.apply(s(1.0), vec![c.clone()], &old).is_empty());
    // Another socket (cookie 12) took the address and meets the condition too: the old
    // finding resolves at once ("connection closed"), the new socket's opens on its own.
    let new: HashMap<ConnKey, u64> = [(key, 12)].into_iter().collect();
    let ch = b.apply(s(2.0), vec![c], &new);
    let got: Vec<_> = ch.iter().map(|c| c.change).collect();
    assert_eq!(got, vec![Resolved, Opened]);
    assert!(ch[0].finding.diagnosis.contains("(connection closed)"));
}
