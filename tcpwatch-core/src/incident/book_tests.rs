//! Tests of the incident lifecycle: hysteresis, merges and splits, pacing, bounds.
#![allow(clippy::unwrap_used, reason = "tests")]
use super::super::testkit::{
    NS1, assert_indexed, book, book_with, changes, ctx, cw_owned, cw_unaccepted, step, upstream,
};
use crate::config::IncidentConfig;
use crate::incident::IncidentKind;
use crate::model::FindingKind;
use crate::model::Lifecycle::{Opened, Resolved, Updated};
use crate::model::Severity;

fn leak(n: u16) -> Vec<crate::model::Finding> {
    (0..n)
        .map(|p| cw_owned(NS1, 77, "server", 8080, p))
        .collect()
}

#[test]
fn resolves_only_after_resolve_after_without_members() {
    let c = ctx(&[(NS1, 8080, Some((77, "server")), 0, 128)]);
    let mut b = book();
    let id = "leak-1-77-8080";
    assert_eq!(
        changes(&step(&mut b, 0.0, &leak(2), &c)),
        vec![(Opened, id.to_owned())]
    );
    // Members gone for less than resolve_after (3 s), then back: same incident, no change.
    assert!(step(&mut b, 1.0, &[], &c).is_empty());
    let inc = b.get(id).unwrap();
    assert_eq!((inc.members_total, inc.members.len()), (0, 0));
    assert!(inc.counts.is_empty());
    assert!(step(&mut b, 3.5, &[], &c).is_empty());
    assert!(step(&mut b, 3.9, &leak(2), &c).is_empty());
    assert_eq!(b.get(id).unwrap().opened_at, super::super::testkit::s(0.0));
    assert_eq!(b.incident_of(&leak(1)[0].id), Some(id));
    // Gone for good: open for 2.9 s more, resolved at 3 s.
    assert!(step(&mut b, 10.0, &[], &c).is_empty());
    assert!(step(&mut b, 12.9, &[], &c).is_empty());
    assert_eq!(b.open_count(), 1);
    assert_eq!(b.incident_of(&leak(1)[0].id), None);
    let ch = step(&mut b, 13.0, &[], &c);
    assert_eq!(changes(&ch), vec![(Resolved, id.to_owned())]);
    let inc = &ch[0].incident;
    assert!(
        inc.diagnosis
            .starts_with("resolved after 13s (all member findings resolved): server[77] leaks"),
        "{}",
        inc.diagnosis
    );
    assert_eq!(
        inc.resolved_time.as_deref(),
        Some("2026-12-01T00:00:13.000Z")
    );
    assert_eq!(inc.opened_time, "2026-12-01T00:00:00.000Z");
    assert_eq!(b.open_count(), 0);
    assert_eq!(b.recently_resolved().next().unwrap().id, id);
    // It may open again later, with the same id.
    assert_eq!(
        changes(&step(&mut b, 20.0, &leak(1), &c)),
        vec![(Opened, id.to_owned())]
    );
}

#[test]
fn merge_forms_and_dissolves_with_stable_ids() {
    let c = ctx(&[(NS1, 8080, Some((77, "server")), 0, 128)]);
    let up = upstream(
        FindingKind::RetransmitChain,
        "peer_unreachable",
        NS1,
        77,
        "server",
        40000,
        "10.0.0.5:443",
    );
    let up_id = "upstream-1-77-10.0.0.5:443";
    let mut b = book();
    assert_eq!(
        changes(&step(&mut b, 0.0, std::slice::from_ref(&up), &c)),
        vec![(Opened, up_id.to_owned())]
    );
    // The callers start piling up: the upstream incident resolves into the merge.
    let mut both = leak(5);
    both.push(up.clone());
    let ch = step(&mut b, 1.0, &both, &c);
    assert_eq!(
        changes(&ch),
        vec![
            (Resolved, up_id.to_owned()),
            (Opened, "blocked-1-77".to_owned())
        ]
    );
    assert!(
        ch[0]
            .incident
            .diagnosis
            .contains("(merged into blocked-1-77)"),
        "{}",
        ch[0].incident.diagnosis
    );
    assert_eq!(b.open_count(), 1);
    assert_indexed(&b, &both);
    // The upstream recovers: the merge holds for resolve_after (3 s), then splits.
    let ch = step(&mut b, 2.0, &leak(5), &c);
    assert_eq!(changes(&ch), vec![(Updated, "blocked-1-77".to_owned())]);
    assert_eq!(ch[0].incident.cause, "blocked");
    assert_eq!(ch[0].incident.root.remote, None);
    assert!(step(&mut b, 4.9, &leak(5), &c).is_empty());
    assert_eq!(b.incident_of(&leak(1)[0].id), Some("blocked-1-77"));
    let ch = step(&mut b, 5.0, &leak(5), &c);
    assert_eq!(
        changes(&ch),
        vec![
            (Resolved, "blocked-1-77".to_owned()),
            (Opened, "leak-1-77-8080".to_owned())
        ]
    );
    assert!(
        ch[0]
            .incident
            .diagnosis
            .contains("(split into leak-1-77-8080)"),
        "{}",
        ch[0].incident.diagnosis
    );
    assert_indexed(&b, &leak(5));
}

#[test]
fn a_flapping_half_keeps_the_merged_incident() {
    let c = ctx(&[(NS1, 8080, Some((77, "server")), 0, 128)]);
    let up = upstream(
        FindingKind::RetransmitChain,
        "peer_unreachable",
        NS1,
        77,
        "server",
        40000,
        "10.0.0.5:443",
    );
    let mut both = leak(5);
    both.push(up);
    let mut b = book();
    step(&mut b, 0.0, &both, &c);
    let mut log = Vec::new();
    for t in 1..40u32 {
        let fs = if t % 4 == 0 { leak(5) } else { both.clone() };
        log.extend(changes(&step(&mut b, f64::from(t), &fs, &c)));
    }
    assert!(
        log.iter()
            .all(|(ch, id)| *ch == Updated && id == "blocked-1-77"),
        "{log:?}"
    );
    assert_eq!(b.open_count(), 1);
}

#[test]
fn owner_found_later_moves_the_members() {
    let c = ctx(&[(NS1, 8080, Some((77, "server")), 0, 128)]);
    let mut unknown = leak(3);
    for f in &mut unknown {
        if let crate::model::Subject::Connection { owner, .. } = &mut f.subject {
            *owner = None;
        }
    }
    let mut b = book();
    step(&mut b, 0.0, &unknown, &c);
    assert!(b.get("leak-1-unknown-8080").is_some());
    let ch = step(&mut b, 1.0, &leak(3), &c);
    assert_eq!(
        changes(&ch),
        vec![
            (Resolved, "leak-1-unknown-8080".to_owned()),
            (Opened, "leak-1-77-8080".to_owned())
        ]
    );
    assert!(
        ch[0]
            .incident
            .diagnosis
            .contains("(merged into leak-1-77-8080)")
    );
}

#[test]
fn updates_are_paced_unless_kind_severity_cause_or_root_change() {
    let c = ctx(&[(NS1, 8080, Some((77, "server")), 0, 128)]);
    let id = "leak-1-77-8080".to_owned();
    let mut b = book(); // update interval 30 s
    step(&mut b, 0.0, &leak(2), &c);
    // +50% within the interval: refreshed silently.
    assert!(step(&mut b, 1.0, &leak(3), &c).is_empty());
    assert_eq!(b.get(&id).unwrap().members_total, 3);
    assert_eq!(
        b.get(&id).unwrap().updated_at,
        super::super::testkit::s(1.0)
    );
    // After the interval, a move of less than half of the last emitted count (2): silent.
    assert!(step(&mut b, 31.0, &leak(2), &c).is_empty());
    assert_eq!(
        changes(&step(&mut b, 32.0, &leak(3), &c)),
        vec![(Updated, id.clone())]
    );
    // Next one needs another 30 s.
    assert!(step(&mut b, 33.0, &leak(9), &c).is_empty());
    assert_eq!(
        changes(&step(&mut b, 62.0, &leak(9), &c)),
        vec![(Updated, id.clone())]
    );
    // Severity changes are emitted at once.
    let mut worse = leak(9);
    worse[0].severity = Severity::Critical;
    let ch = step(&mut b, 63.0, &worse, &c);
    assert_eq!(changes(&ch), vec![(Updated, id.clone())]);
    assert_eq!(ch[0].incident.severity, Severity::Critical);
    // Root changes too (the process name seen differently).
    let renamed: Vec<_> = (0..9)
        .map(|p| cw_owned(NS1, 77, "server2", 8080, p))
        .collect();
    let ch = step(&mut b, 64.0, &renamed, &c);
    assert_eq!(changes(&ch), vec![(Updated, id)]);
    assert_eq!(
        ch[0].incident.root.process.as_ref().unwrap().comm,
        "server2"
    );
}

#[test]
fn overflow_bound_folds_groups_beyond_max_open() {
    let cfg = IncidentConfig {
        max_open: 2,
        max_members_listed: 3,
        recently_resolved: 2,
    };
    let c = ctx(&[(NS1, 8080, None, 0, 128)]);
    let mut b = book_with(cfg, 3.0, 30.0);
    // Five leaking processes; the two oldest get real incidents.
    let mut fs = Vec::new();
    for pid in 1..=5u32 {
        for p in 0..4u16 {
            let mut f = cw_owned(NS1, pid, "w", 8080, u16::try_from(pid).unwrap() * 100 + p);
            f.since = super::super::testkit::s(-f64::from(10 - pid));
            fs.push(f);
        }
    }
    let ch = step(&mut b, 0.0, &fs, &c);
    assert_eq!(
        changes(&ch),
        vec![
            (Opened, "leak-1-1-8080".to_owned()),
            (Opened, "leak-1-2-8080".to_owned()),
            (Opened, "overflow-close_wait_leak".to_owned())
        ]
    );
    assert_eq!(b.overflowed(), 3);
    assert_eq!(b.open_count(), 3);
    let o = b.get("overflow-close_wait_leak").unwrap();
    assert_eq!(o.kind, IncidentKind::CloseWaitLeak);
    assert_eq!(o.cause, "overflow");
    assert_eq!(o.members_total, 12);
    assert_eq!(o.members.len(), 3);
    assert!(
        o.diagnosis
            .starts_with("3 more close_wait_leak incident(s) than incidents.max_open (2)")
    );
    assert_indexed(&b, &fs);
    // A more severe newcomer does not evict an open incident; it overflows too.
    let mut more = fs.clone();
    let mut crit = cw_owned(NS1, 9, "x", 8080, 9000);
    crit.severity = Severity::Critical;
    more.push(crit);
    step(&mut b, 1.0, &more, &c);
    assert_eq!(b.overflowed(), 4);
    assert!(b.get("leak-1-1-8080").is_some() && b.get("leak-1-2-8080").is_some());
    assert_eq!(
        b.get("overflow-close_wait_leak").unwrap().severity,
        Severity::Critical
    );
    assert_indexed(&b, &more);
    // pid 1 recovers: its slot is freed once it resolves, then the most severe waiting group
    // gets it.
    let rest: Vec<_> = more.iter().skip(4).cloned().collect();
    step(&mut b, 2.0, &rest, &c);
    step(&mut b, 5.0, &rest, &c);
    assert!(b.get("leak-1-1-8080").is_none());
    let ch = step(&mut b, 6.0, &rest, &c);
    assert_eq!(
        changes(&ch),
        vec![
            (Opened, "leak-1-9-8080".to_owned()),
            (Updated, "overflow-close_wait_leak".to_owned())
        ]
    );
    // The critical member left the overflow incident: its severity drops at once.
    assert_eq!(ch[1].incident.severity, Severity::Warning);
    assert_eq!(b.overflowed(), 3);
    assert_indexed(&b, &rest);
    assert!(b.open_count() <= 2 + IncidentKind::ALL.len());
}

#[test]
fn recently_resolved_ring_is_bounded_newest_first() {
    let cfg = IncidentConfig {
        recently_resolved: 2,
        ..IncidentConfig::default()
    };
    let c = ctx(&[]);
    let mut b = book_with(cfg, 0.0, 30.0);
    for pid in 1..=3u32 {
        let f = cw_owned(NS1, pid, "w", 40000, 1);
        step(&mut b, f64::from(pid), &[f], &c);
        step(&mut b, f64::from(pid) + 0.5, &[], &c);
    }
    let ids: Vec<_> = b.recently_resolved().map(|i| i.id.clone()).collect();
    assert_eq!(ids, vec!["leak-1-3-0", "leak-1-2-0"]);
    assert_eq!(b.open_count(), 0);
}

#[test]
fn open_incidents_are_ordered_most_severe_then_oldest() {
    let c = ctx(&[]);
    let mut b = book();
    let mut old = cw_owned(NS1, 1, "a", 40000, 1);
    old.since = super::super::testkit::s(-100.0);
    let young = cw_owned(NS1, 2, "b", 40000, 2);
    let crit = upstream(
        FindingKind::RetransmitChain,
        "peer_unreachable",
        NS1,
        3,
        "c",
        40000,
        "10.0.0.5:443",
    );
    step(&mut b, 0.0, &[young, old, crit], &c);
    let ids: Vec<_> = b.open().map(|i| i.id.clone()).collect();
    assert_eq!(
        ids,
        vec!["upstream-1-3-10.0.0.5:443", "leak-1-1-0", "leak-1-2-0"]
    );
}

#[test]
fn a_merge_at_capacity_takes_the_slots_of_its_parts() {
    let cfg = IncidentConfig {
        max_open: 2,
        ..IncidentConfig::default()
    };
    let c = ctx(&[(NS1, 8080, Some((77, "server")), 0, 128)]);
    let up = upstream(
        FindingKind::RetransmitChain,
        "peer_unreachable",
        NS1,
        77,
        "server",
        40000,
        "10.0.0.5:443",
    );
    let mut b = book_with(cfg, 3.0, 30.0);
    // Both halves open on their own first: the listener's owner is not known yet.
    let mut both: Vec<_> = (0..3u16).map(|p| cw_unaccepted(NS1, 8080, p)).collect();
    both.push(up.clone());
    step(&mut b, 0.0, &both, &ctx(&[]));
    assert_eq!(b.open_count(), 2);
    // The owner is found: both incidents make room for the merged one at once.
    let ch = step(&mut b, 1.0, &both, &c);
    assert_eq!(
        changes(&ch),
        vec![
            (Resolved, "listener-1-8080".to_owned()),
            (Resolved, "upstream-1-77-10.0.0.5:443".to_owned()),
            (Opened, "blocked-1-77".to_owned())
        ]
    );
    assert_eq!(b.overflowed(), 0);
    // Full: another process's leak overflows, the merged incident keeps its slot.
    let mut more = both.clone();
    more.push(cw_owned(NS1, 5, "other", 40000, 1));
    more.push(cw_owned(NS1, 6, "third", 40000, 2));
    step(&mut b, 2.0, &more, &c);
    assert_eq!(b.overflowed(), 1);
    assert!(b.get("blocked-1-77").is_some());
    assert_eq!(b.open_count(), 3);
    assert_indexed(&b, &more);
}
