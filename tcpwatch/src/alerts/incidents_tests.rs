//! Unit tests of the incident alerts (`alerts/incidents.rs` through the sender task).
use std::collections::BTreeMap;

use tcpwatch_core::incident::{IncidentKind, IncidentRoot, ProcessRef};
use tcpwatch_core::model::{NS_PER_SEC, NetnsId, Severity};

use super::tests::{clocks, task};
use super::*;

/// An open incident of `kind` opened at mono 130 s: `server[42]` on :8080, 200 members.
pub(crate) fn incident(kind: IncidentKind, severity: Severity) -> Incident {
    Incident {
        id: "inc-7-8080".into(),
        kind,
        cause: "not_accepting".into(),
        severity,
        root: IncidentRoot {
            netns: NetnsId {
                cookie: 7,
                inode: 4_026_531_833,
            },
            process: Some(ProcessRef {
                pid: 42,
                comm: "server".into(),
            }),
            pod: None,
            local_port: Some(8080),
            remote: None,
        },
        diagnosis: "server[42] is not calling accept() on :8080".into(),
        consequence: None,
        counts: BTreeMap::from([
            ("accept_backlog_filling".to_owned(), 1),
            ("close_wait_stuck".to_owned(), 199),
        ]),
        members: vec!["accept_backlog_filling:7:1".into()],
        members_total: 200,
        since: 100 * NS_PER_SEC,
        opened_at: 130 * NS_PER_SEC,
        updated_at: 130 * NS_PER_SEC,
        resolved_at: None,
        since_time: String::new(),
        opened_time: String::new(),
        updated_time: String::new(),
        resolved_time: None,
    }
}

fn change(change: Lifecycle, i: &Incident) -> AlertChange {
    AlertChange::Incident(Box::new(IncidentChange {
        change,
        incident: i.clone(),
    }))
}

#[test]
fn opened_incident_is_one_firing_alert_with_its_root() {
    let mut t = task(Severity::Warning);
    t.cfg.per_finding_alerts = false;
    let i = incident(IncidentKind::ListenerNotAccepting, Severity::Critical);
    let alerts = t.apply(&[change(Lifecycle::Opened, &i)], clocks());
    assert_eq!(alerts.len(), 1);
    assert!(!alerts[0].resolved);
    let a = &alerts[0].alert;
    assert_eq!(
        a["labels"],
        json!({
            "alertname": "TcpwatchIncident", "incident_id": "inc-7-8080",
            "kind": "listener_not_accepting", "severity": "critical", "node": "node-1",
            "netns": "4026531833", "process": "server", "port": "8080",
        })
    );
    assert_eq!(a["startsAt"], "2023-11-14T22:12:10.000Z");
    assert_eq!(a["endsAt"], "2023-11-14T22:17:20.000Z");
    let ann = &a["annotations"];
    assert_eq!(
        ann["description"],
        "server[42] is not calling accept() on :8080"
    );
    assert_eq!(ann["members"], "200");
    assert_eq!(
        ann["counts"],
        "accept_backlog_filling=1, close_wait_stuck=199"
    );
    assert_eq!(
        ann["summary"],
        "listener_not_accepting on node-1: server[42] :8080 (netns 4026531833)"
    );
    assert!(ann.get("consequence").is_none(), "{ann}");
    assert_eq!(
        ann["runbook_url"],
        format!("{RUNBOOK_BASE}/TcpwatchListenerNotAccepting.md")
    );
    // An update with the same labels is one firing alert again (a re-send, deduplicated).
    let alerts = t.apply(&[change(Lifecycle::Updated, &i)], clocks());
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].alert["labels"], a["labels"]);
    assert_eq!(t.open.len(), 1);
}

#[test]
fn resolved_incident_sends_ends_at_with_the_same_labels() {
    let mut t = task(Severity::Warning);
    let mut i = incident(IncidentKind::CloseWaitLeak, Severity::Warning);
    let firing = t.apply(&[change(Lifecycle::Opened, &i)], clocks());
    i.resolved_at = Some(195 * NS_PER_SEC);
    let alerts = t.apply(&[change(Lifecycle::Resolved, &i)], clocks());
    assert_eq!(alerts.len(), 1);
    assert!(alerts[0].resolved);
    assert_eq!(alerts[0].alert["labels"], firing[0].alert["labels"]);
    assert_eq!(alerts[0].alert["endsAt"], "2023-11-14T22:13:15.000Z");
    assert!(t.open.is_empty());
}

#[test]
fn kind_or_root_change_resolves_the_old_label_set() {
    let mut t = task(Severity::Warning);
    let mut i = incident(IncidentKind::CloseWaitLeak, Severity::Warning);
    t.apply(&[change(Lifecycle::Opened, &i)], clocks());
    // The same incident becomes the consequence of a blocked upstream.
    i.kind = IncidentKind::BlockedOnUpstream;
    i.severity = Severity::Critical;
    i.root.remote = Some("10.9.9.9:443".parse().unwrap());
    i.consequence = Some("its callers' connections pile up on :8080: 20 in CLOSE_WAIT".into());
    let alerts = t.apply(&[change(Lifecycle::Updated, &i)], clocks());
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert!(alerts[0].resolved);
    assert_eq!(alerts[0].alert["labels"]["kind"], "close_wait_leak");
    assert!(alerts[0].alert["labels"].get("remote").is_none());
    assert_eq!(alerts[0].alert["endsAt"], "2023-11-14T22:13:20.000Z");
    assert!(!alerts[1].resolved);
    let l = &alerts[1].alert["labels"];
    assert_eq!(
        (&l["kind"], &l["severity"], &l["remote"]),
        (
            &json!("blocked_on_upstream"),
            &json!("critical"),
            &json!("10.9.9.9:443")
        )
    );
    assert_eq!(
        alerts[1].alert["annotations"]["consequence"],
        "its callers' connections pile up on :8080: 20 in CLOSE_WAIT"
    );
    assert_eq!(t.open.len(), 1);
}

#[test]
fn min_severity_applies_to_incidents() {
    let mut t = task(Severity::Critical);
    let mut i = incident(IncidentKind::UpstreamUnreachable, Severity::Warning);
    i.root.process = None;
    i.root.local_port = None;
    i.root.remote = Some("[::1]:9000".parse().unwrap());
    assert!(
        t.apply(&[change(Lifecycle::Opened, &i)], clocks())
            .is_empty()
    );
    i.severity = Severity::Critical;
    let alerts = t.apply(&[change(Lifecycle::Updated, &i)], clocks());
    assert_eq!(alerts.len(), 1);
    let l = alerts[0].alert["labels"].as_object().unwrap();
    assert_eq!(l["remote"], "[::1]:9000");
    assert!(
        !l.contains_key("process") && !l.contains_key("port"),
        "{l:?}"
    );
    // Back below min_severity: resolved and forgotten.
    i.severity = Severity::Warning;
    let alerts = t.apply(&[change(Lifecycle::Updated, &i)], clocks());
    assert_eq!(alerts.len(), 1);
    assert!(alerts[0].resolved);
    assert!(t.open.is_empty());
}

#[test]
fn findings_and_incidents_with_the_same_id_do_not_collide() {
    let mut t = task(Severity::Warning);
    let i = incident(IncidentKind::CloseWaitLeak, Severity::Warning);
    let mut f = super::tests::finding_for_incident_tests();
    f.id.clone_from(&i.id);
    let alerts = t.apply(
        &[
            change(Lifecycle::Opened, &i),
            AlertChange::Finding(Box::new(FindingChange {
                change: Lifecycle::Opened,
                finding: f,
            })),
        ],
        clocks(),
    );
    assert_eq!(alerts.len(), 2);
    assert_eq!(t.open.len(), 2);
}

/// Every incident kind links to a runbook that exists.
#[test]
fn every_incident_kind_links_to_an_existing_runbook() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/runbooks");
    for kind in IncidentKind::ALL {
        let file = dir.join(format!(
            "{}.md",
            crate::alerts::incidents::incident_runbook(kind)
        ));
        assert!(file.is_file(), "{kind:?}: {} is missing", file.display());
    }
}
