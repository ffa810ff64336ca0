//! Grouping of the findings with a `peer` subject (issue 13): `stale_connection_reuse` and
//! client-side `reset_burst` per client process and server endpoint (`reset_storm`);
//! `connect_failing` joins `upstream_unreachable` for (process, remote).
#![allow(clippy::unwrap_used, reason = "tests")]
use std::collections::BTreeMap;

use super::IncidentKind;
use super::testkit::{NS1, assert_indexed, book, ctx, cw_owned, proc_owner, s, step, upstream};
use crate::model::{Finding, FindingKind, NetnsId, Severity, Subject};

fn peer_finding(kind: FindingKind, cause: &str, ns: NetnsId, pid: u32, remote: &str) -> Finding {
    Finding {
        id: format!("{}:{}:{pid}:{remote}", kind.name(), ns.cookie),
        kind,
        severity: Severity::Warning,
        subject: Subject::Peer {
            netns: ns,
            remote: remote.parse().unwrap(),
            owner: Some(proc_owner(pid, "nginx")),
        },
        cause: cause.to_owned(),
        diagnosis: format!("{} {remote}", kind.name()),
        since: s(0.0),
        opened_at: s(0.0),
        updated_at: s(0.0),
        resolved_at: None,
        evidence: BTreeMap::new(),
        incident_id: None,
        wall: None,
    }
}

#[test]
fn stale_reuse_and_client_resets_group_per_process_and_server_endpoint() {
    let mut b = book();
    let c = ctx(&[]);
    let findings = vec![
        peer_finding(
            FindingKind::StaleConnectionReuse,
            "idle_timeout",
            NS1,
            12,
            "10.0.0.2:8080",
        ),
        peer_finding(
            FindingKind::ResetBurst,
            "received",
            NS1,
            12,
            "10.0.0.2:8080",
        ),
        // Another server endpoint of the same process: its own incident.
        peer_finding(
            FindingKind::StaleConnectionReuse,
            "server_restarted",
            NS1,
            12,
            "10.0.0.3:8080",
        ),
    ];
    step(&mut b, 1.0, &findings, &c);
    assert_indexed(&b, &findings);
    let a = b.incident_of(&findings[0].id).unwrap().to_owned();
    assert_eq!(b.incident_of(&findings[1].id), Some(a.as_str()));
    let other = b.incident_of(&findings[2].id).unwrap();
    assert_ne!(other, a);
    let inc = b.get(&a).unwrap();
    assert_eq!(inc.kind, IncidentKind::ResetStorm);
    assert_eq!(inc.root.remote, Some("10.0.0.2:8080".parse().unwrap()));
    assert_eq!(inc.root.process.as_ref().map(|p| p.pid), Some(12));
    assert_eq!(inc.counts.get("stale_connection_reuse"), Some(&1));
}

#[test]
fn failing_connects_join_the_upstream_of_process_and_remote() {
    let mut b = book();
    let c = ctx(&[]);
    let findings = vec![
        upstream(
            FindingKind::RetransmitChain,
            "peer_unreachable",
            NS1,
            7,
            "api",
            40000,
            "10.9.9.9:443",
        ),
        peer_finding(
            FindingKind::ConnectFailing,
            "timed_out",
            NS1,
            7,
            "10.9.9.9:443",
        ),
    ];
    step(&mut b, 1.0, &findings, &c);
    assert_indexed(&b, &findings);
    let a = b.incident_of(&findings[0].id).unwrap();
    assert_eq!(b.incident_of(&findings[1].id), Some(a));
    let inc = b.get(a).unwrap();
    assert_eq!(inc.kind, IncidentKind::UpstreamUnreachable);
    assert_eq!(inc.counts.get("connect_failing"), Some(&1));
    assert!(
        inc.diagnosis
            .contains("new connects fail too: connect_failing 10.9.9.9:443"),
        "{}",
        inc.diagnosis
    );
    // Failing connects alone: the incident carries the finding's diagnosis.
    let mut b = book();
    step(&mut b, 1.0, &findings[1..], &c);
    let inc = b.get(b.incident_of(&findings[1].id).unwrap()).unwrap();
    assert!(
        inc.diagnosis.starts_with(
            "10.9.9.9:443 unreachable from nginx[7] for 1s: connect_failing 10.9.9.9:443; netns"
        ),
        "{}",
        inc.diagnosis
    );
}

#[test]
fn failing_connects_alone_do_not_make_the_process_blocked_on_upstream() {
    let mut b = book();
    // comm[7] listens on :8080 (its callers pile up in CLOSE_WAIT there) and its connects to
    // 10.9.9.9:443 fail: two incidents, not one causal merge.
    let c = ctx(&[(NS1, 8080, Some((7, "api")), 0, 128)]);
    let mut findings: Vec<Finding> = (0..3)
        .map(|i| cw_owned(NS1, 7, "api", 8080, 50_000 + i))
        .collect();
    findings.push(peer_finding(
        FindingKind::ConnectFailing,
        "timed_out",
        NS1,
        7,
        "10.9.9.9:443",
    ));
    step(&mut b, 1.0, &findings, &c);
    assert_indexed(&b, &findings);
    let leak = b.incident_of(&findings[0].id).unwrap();
    let up = b.incident_of(&findings[3].id).unwrap();
    assert_ne!(leak, up);
    assert_eq!(b.get(up).unwrap().kind, IncidentKind::UpstreamUnreachable);
    assert_eq!(b.get(leak).unwrap().kind, IncidentKind::CloseWaitLeak);
    // A hanging established connection to the same upstream does merge them.
    findings.push(upstream(
        FindingKind::RetransmitChain,
        "peer_unreachable",
        NS1,
        7,
        "api",
        40000,
        "10.9.9.9:443",
    ));
    step(&mut b, 2.0, &findings, &c);
    let merged = b.incident_of(&findings[0].id).unwrap();
    assert_eq!(b.incident_of(&findings[3].id), Some(merged));
    assert_eq!(b.get(merged).unwrap().kind, IncidentKind::BlockedOnUpstream);
}
