//! Grouping of the findings with a `peer` subject (issue 13): `stale_connection_reuse` and
//! client-side `reset_burst` per client process and server endpoint (`reset_storm`);
//! `connect_failing` joins `upstream_unreachable` for (process, remote).
#![allow(clippy::unwrap_used, reason = "tests")]
use std::collections::BTreeMap;

use super::IncidentKind;
use super::testkit::{NS1, assert_indexed, book, ctx, proc_owner, s, step, upstream};
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
}
