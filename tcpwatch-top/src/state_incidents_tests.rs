//! The Incidents view: what top opens on, its order, Enter into the members and on to the
//! connection, lifecycle events, an older daemon, and unreadable events.
use crossterm::event::KeyCode;
use tcpwatch_core::incident::{IncidentChange, IncidentKind};
use tcpwatch_core::model::{FindingKind, Lifecycle, NS_PER_SEC, Severity, TcpState};

use super::tests::{conn, finding_on, incident, key, owned, snap};
use super::*;

/// A listener that stopped accepting (3 queued `CLOSE_WAIT` + the backlog finding) and an
/// unrelated warning incident.
pub(crate) fn listener_story() -> App {
    let mut l = owned(
        conn(10, TcpState::Listen, "0.0.0.0:8080", "0.0.0.0:0"),
        "server",
        42,
    );
    l.queues.accept_queue = 3;
    l.queues.accept_limit = 2;
    let mut conns = vec![l.clone()];
    let mut backlog = finding_on(
        &l,
        FindingKind::AcceptBacklogFilling,
        Severity::Critical,
        30 * NS_PER_SEC,
    );
    let mut queued: Vec<Finding> = (0..3)
        .map(|i| {
            let mut c = conn(
                11 + i,
                TcpState::CloseWait,
                "127.0.0.1:8080",
                &format!("127.0.0.1:{}", 40_000 + i),
            );
            c.inode = 0;
            let f = finding_on(
                &c,
                FindingKind::CloseWaitStuck,
                Severity::Critical,
                (20 + i) * NS_PER_SEC,
            );
            conns.push(c);
            f
        })
        .collect();
    let mut members: Vec<&mut Finding> = vec![&mut backlog];
    members.extend(queued.iter_mut());
    let mut big = incident(
        "inc-listener",
        IncidentKind::ListenerNotAccepting,
        Severity::Critical,
        &mut members,
        20 * NS_PER_SEC,
    );
    big.diagnosis = "server[42] is not calling accept() on :8080".into();
    let leak_conn = owned(
        conn(20, TcpState::CloseWait, "127.0.0.1:9090", "127.0.0.1:50000"),
        "leaky",
        7,
    );
    let mut leak_f = finding_on(
        &leak_conn,
        FindingKind::CloseWaitStuck,
        Severity::Warning,
        NS_PER_SEC,
    );
    let small = incident(
        "inc-leak",
        IncidentKind::CloseWaitLeak,
        Severity::Warning,
        &mut [&mut leak_f],
        NS_PER_SEC,
    );
    conns.push(leak_conn);
    let mut findings = vec![backlog, leak_f];
    findings.extend(queued);
    let mut app = App::new("t");
    app.apply_snapshot(Snapshot {
        conns,
        findings,
        incidents: Some(vec![small, big]),
        exposure: None,
    });
    app
}

fn ids(app: &mut App) -> Vec<RowId> {
    let n = app.row_count();
    app.visible_ids(0, n).to_vec()
}

#[test]
fn top_opens_on_incidents_most_severe_first() {
    let mut app = listener_story();
    assert_eq!(app.view(), View::Incidents);
    assert_eq!(app.pane(), Pane::View(View::Incidents));
    // The warning is older, the critical one still leads.
    assert_eq!(
        ids(&mut app),
        vec![
            RowId::Incident("inc-listener".into()),
            RowId::Incident("inc-leak".into())
        ]
    );
    assert_eq!(app.incident_counts(), (1, 1, 0));
    app.handle_key(key(KeyCode::Char('s')));
    assert_eq!(app.sort_key(), SortKey::Age);
    assert_eq!(ids(&mut app)[0], RowId::Incident("inc-leak".into()));
    app.handle_key(key(KeyCode::Char('s')));
    assert_eq!(app.sort_key(), SortKey::Members);
    assert_eq!(ids(&mut app)[0], RowId::Incident("inc-listener".into()));
    // The filter matches the root process, port and kind.
    app.handle_key(key(KeyCode::Char('/')));
    for ch in "leaky".chars() {
        app.handle_key(key(KeyCode::Char(ch)));
    }
    assert_eq!(ids(&mut app), vec![RowId::Incident("inc-leak".into())]);
    app.set_filter("listener_not".into());
    assert_eq!(ids(&mut app), vec![RowId::Incident("inc-listener".into())]);
    app.set_filter(":9090".into());
    assert_eq!(ids(&mut app), vec![RowId::Incident("inc-leak".into())]);
}

#[test]
fn enter_lists_members_and_leads_to_the_connection() {
    let mut app = listener_story();
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(app.pane(), Pane::Members);
    assert_eq!(app.focus(), Some("inc-listener"));
    assert!(!app.detail_open());
    let members = ids(&mut app);
    assert_eq!(members.len(), 4, "{members:?}");
    // Same severity: oldest first, so the first queued socket leads, the backlog is last.
    assert_eq!(members[0], RowId::Finding("close_wait_stuck-11".into()));
    assert_eq!(
        members[3],
        RowId::Finding("accept_backlog_filling-10".into())
    );
    let summary = app
        .incident_detail("inc-listener", 100 * NS_PER_SEC)
        .unwrap();
    let text = summary.lines.join("\n");
    assert!(text.contains("not calling accept() on :8080"), "{text}");
    assert!(
        text.contains("root: process server[42]  port :8080"),
        "{text}"
    );
    assert!(
        text.contains("members: 4 open (accept_backlog_filling 1, close_wait_stuck 3)"),
        "{text}"
    );
    // A member's detail: the finding and its connection.
    app.handle_key(key(KeyCode::Down));
    app.handle_key(key(KeyCode::Enter));
    assert!(app.detail_open());
    let d = app.detail(100 * NS_PER_SEC).unwrap();
    let text = d.lines.join("\n");
    assert!(text.contains("finding close_wait_stuck-12"), "{text}");
    assert!(text.contains("incident: inc-listener"), "{text}");
    assert!(
        text.contains("CLOSE_WAIT 127.0.0.1:8080 -> 127.0.0.1:40001"),
        "the member's connection: {text}"
    );
    // Esc closes the detail, then goes back to the incident list, selection kept.
    app.handle_key(key(KeyCode::Esc));
    assert_eq!(app.pane(), Pane::Members);
    app.handle_key(key(KeyCode::Esc));
    assert_eq!(app.pane(), Pane::View(View::Incidents));
    assert_eq!(
        app.selected_id(),
        Some(RowId::Incident("inc-listener".into()))
    );
    // Tab leaves the member list too.
    app.handle_key(key(KeyCode::Enter));
    app.handle_key(key(KeyCode::Tab));
    assert_eq!(app.pane(), Pane::View(View::Findings));
    app.handle_key(key(KeyCode::BackTab));
    assert_eq!(app.pane(), Pane::View(View::Incidents));
}

#[test]
fn members_are_not_filtered_by_the_filter_that_chose_the_incident() {
    let mut app = listener_story();
    app.set_filter("listener_not".into());
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(app.focus(), Some("inc-listener"));
    assert_eq!(app.row_count(), 4);
}

#[test]
fn incident_events_open_update_and_resolve() {
    let mut app = listener_story();
    let mut inc = app.incident("inc-leak").unwrap().clone();
    inc.members_total = 5;
    app.apply_stream_event(StreamEvent::Incident(Box::new(IncidentChange {
        change: Lifecycle::Updated,
        incident: inc.clone(),
    })));
    assert_eq!(app.incident("inc-leak").unwrap().members_total, 5);
    app.handle_key(key(KeyCode::Char('s')));
    app.handle_key(key(KeyCode::Char('s')));
    assert_eq!(app.sort_key(), SortKey::Members);
    assert_eq!(ids(&mut app)[0], RowId::Incident("inc-leak".into()));
    let mut new = inc.clone();
    new.id = "inc-new".into();
    app.apply_stream_event(StreamEvent::Incident(Box::new(IncidentChange {
        change: Lifecycle::Opened,
        incident: new,
    })));
    assert_eq!(app.row_count(), 3);
    app.apply_stream_event(StreamEvent::Incident(Box::new(IncidentChange {
        change: Lifecycle::Resolved,
        incident: inc,
    })));
    assert_eq!(app.row_count(), 2);
    assert!(app.incident("inc-leak").is_none());
}

#[test]
fn a_resolved_focused_incident_leaves_an_empty_member_list() {
    let mut app = listener_story();
    app.handle_key(key(KeyCode::Enter));
    let inc = app.incident("inc-listener").unwrap().clone();
    let members: Vec<String> = inc.members.clone();
    app.apply_stream_event(StreamEvent::Incident(Box::new(IncidentChange {
        change: Lifecycle::Resolved,
        incident: inc,
    })));
    for id in members {
        let f = app.finding(&id).unwrap().clone();
        app.apply_stream_event(StreamEvent::Finding(Box::new(
            tcpwatch_core::model::FindingChange {
                change: Lifecycle::Resolved,
                finding: f,
            },
        )));
    }
    assert_eq!(app.pane(), Pane::Members);
    assert_eq!(app.row_count(), 0);
    assert!(app.incident_detail("inc-listener", 0).is_none());
}

#[test]
fn an_older_daemon_without_incidents_is_said_so() {
    let mut app = App::new("t");
    app.apply_snapshot(Snapshot {
        conns: Vec::new(),
        findings: Vec::new(),
        incidents: None,
        exposure: None,
    });
    assert!(!app.incidents_served());
    assert_eq!(app.row_count(), 0);
    app.apply_snapshot(snap(Vec::new(), Vec::new()));
    assert!(app.incidents_served());
}

#[test]
fn unreadable_events_are_counted_not_applied() {
    let mut app = listener_story();
    let e = parse_event(r#"{"type":"incident","change":"opened"}"#).unwrap_err();
    app.note_bad_event(e);
    app.note_bad_event(parse_event("{").unwrap_err());
    assert_eq!(app.bad_events().count, 2);
    assert!(
        app.bad_events().last_error.starts_with("event type `?`"),
        "{:?}",
        app.bad_events()
    );
    assert_eq!(app.row_count(), 2, "data unchanged");
}

#[test]
fn paused_incident_events_wait() {
    let mut app = listener_story();
    app.handle_key(key(KeyCode::Char('p')));
    let inc = app.incident("inc-leak").unwrap().clone();
    app.apply_stream_event(StreamEvent::Incident(Box::new(IncidentChange {
        change: Lifecycle::Resolved,
        incident: inc,
    })));
    assert_eq!(app.row_count(), 2);
    app.handle_key(key(KeyCode::Char('p')));
    assert_eq!(app.row_count(), 1);
}
