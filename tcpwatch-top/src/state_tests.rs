use std::collections::BTreeMap;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use tcpwatch_core::incident::{Incident, IncidentKind, IncidentRoot, ProcessRef};
use tcpwatch_core::model::{
    ConnRecord, FindingChange, FindingKind, Lifecycle, NS_PER_SEC, NetnsId, Owner, Sample,
    Severity, Subject, TcpState,
};

use super::wire::Delta;
use super::*;

/// A snapshot from a daemon that serves incidents (none open).
pub(crate) fn snap(conns: Vec<ConnRecord>, findings: Vec<Finding>) -> Snapshot {
    Snapshot {
        conns,
        findings,
        incidents: Some(Vec::new()),
        exposure: None,
    }
}

/// An open incident of `kind` whose members are `members` (their ids; each finding also
/// names the incident).
pub(crate) fn incident(
    id: &str,
    kind: IncidentKind,
    sev: Severity,
    members: &mut [&mut Finding],
    since: u64,
) -> Incident {
    let mut counts = BTreeMap::new();
    for f in members.iter_mut() {
        f.incident_id = Some(id.to_owned());
        *counts.entry(f.kind.name().to_owned()).or_insert(0) += 1;
    }
    let first = members.first().map(|f| &f.subject);
    let owner = first.and_then(subject_owner);
    Incident {
        id: id.to_owned(),
        kind,
        cause: "test".into(),
        severity: sev,
        root: IncidentRoot {
            netns: NetnsId {
                cookie: 1,
                inode: 4_026_531_840,
            },
            process: owner.map(|o| ProcessRef {
                pid: o.pid,
                comm: o.comm.clone(),
            }),
            pod: None,
            local_port: first.map(|s| match s {
                Subject::Connection { local, .. } | Subject::Listener { local, .. } => local.port(),
                Subject::Port { port, .. } => *port,
                Subject::Peer { remote, .. } => remote.port(),
            }),
            remote: first.and_then(|s| match s {
                Subject::Connection { remote, .. } => Some(*remote),
                _ => None,
            }),
        },
        diagnosis: format!("{} story", kind.name()),
        consequence: None,
        counts,
        members: members.iter().map(|f| f.id.clone()).collect(),
        members_total: u32::try_from(members.len()).unwrap(),
        since,
        opened_at: since,
        updated_at: since,
        resolved_at: None,
        since_time: String::new(),
        opened_time: String::new(),
        updated_time: String::new(),
        resolved_time: None,
    }
}

pub(crate) fn conn(id: u64, state: TcpState, local: &str, remote: &str) -> ConnRecord {
    let mut c = ConnRecord::new(
        ConnKey {
            skaddr: id,
            netns_cookie: 1,
        },
        NetnsId {
            cookie: 1,
            inode: 4_026_531_840,
        },
        local.parse().unwrap(),
        remote.parse().unwrap(),
        state,
        0,
    );
    c.inode = 1000 + id;
    c
}

pub(crate) fn owned(mut c: ConnRecord, comm: &str, pid: u32) -> ConnRecord {
    c.owner = Some(
        Owner {
            pid,
            comm: comm.into(),
            ..Owner::default()
        }
        .into(),
    );
    c
}

pub(crate) fn finding_on(c: &ConnRecord, kind: FindingKind, sev: Severity, since: u64) -> Finding {
    Finding {
        id: format!("{}-{}", kind.name(), c.key.skaddr),
        kind,
        severity: sev,
        subject: Subject::Connection {
            key: c.key,
            netns: c.netns,
            local: c.local,
            remote: c.remote,
            state: c.state,
            owner: c.owner.as_deref().cloned(),
        },
        cause: "owned".into(),
        diagnosis: format!("{} stuck: the app never called close()", c.local),
        since,
        opened_at: since,
        updated_at: since,
        resolved_at: None,
        evidence: BTreeMap::from([("age_seconds".to_owned(), 42.0)]),
        incident_id: None,
        wall: None,
    }
}

pub(crate) fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

pub(crate) fn type_str(app: &mut App, s: &str) {
    for ch in s.chars() {
        app.handle_key(key(KeyCode::Char(ch)));
    }
}

pub(crate) fn sample() -> App {
    let mut a = conn(1, TcpState::Established, "10.0.0.1:5000", "10.0.0.2:443");
    a.queues.send_q = 100;
    let mut b = owned(
        conn(2, TcpState::CloseWait, "127.0.0.1:8080", "127.0.0.1:40000"),
        "app",
        7,
    );
    b.queues.send_q = 5;
    b.state_since = 10;
    let mut l = owned(
        conn(3, TcpState::Listen, "0.0.0.0:8080", "0.0.0.0:0"),
        "app",
        7,
    );
    l.queues.accept_queue = 3;
    l.queues.accept_limit = 2;
    let mut u = conn(4, TcpState::CloseWait, "127.0.0.1:8080", "127.0.0.1:40001");
    u.inode = 0;
    let mut f1 = finding_on(&b, FindingKind::CloseWaitStuck, Severity::Warning, 10);
    let mut f2 = finding_on(&a, FindingKind::RetransmitChain, Severity::Critical, 50);
    let i1 = incident(
        "inc-leak",
        IncidentKind::CloseWaitLeak,
        Severity::Warning,
        &mut [&mut f1],
        10,
    );
    let i2 = incident(
        "inc-upstream",
        IncidentKind::UpstreamUnreachable,
        Severity::Critical,
        &mut [&mut f2],
        50,
    );
    let mut app = App::new("test");
    app.apply_snapshot(Snapshot {
        conns: vec![a, b, l, u],
        findings: vec![f1, f2],
        incidents: Some(vec![i1, i2]),
        exposure: None,
    });
    // Most tests here are about the per-socket views.
    app.set_view(View::Findings);
    app
}

fn ids(app: &mut App) -> Vec<RowId> {
    let n = app.row_count();
    app.visible_ids(0, n).to_vec()
}

fn conn_ids(app: &mut App) -> Vec<u64> {
    ids(app)
        .into_iter()
        .map(|r| match r {
            RowId::Conn(k) => k.skaddr,
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn findings_view_is_sorted_by_severity_then_age() {
    let mut app = sample();
    assert_eq!(
        ids(&mut app),
        vec![
            RowId::Finding("retransmit_chain-1".into()),
            RowId::Finding("close_wait_stuck-2".into())
        ]
    );
    app.handle_key(key(KeyCode::Char('s'))); // age: oldest first
    assert_eq!(app.sort_key(), SortKey::Age);
    assert_eq!(
        ids(&mut app)[0],
        RowId::Finding("close_wait_stuck-2".into())
    );
}

#[test]
fn tab_cycles_views_and_connections_sort() {
    let mut app = sample();
    app.handle_key(key(KeyCode::Tab));
    assert_eq!(app.view(), View::Connections);
    // Default: Send-Q, largest first.
    assert_eq!(conn_ids(&mut app)[..2], [1, 2]);
    app.handle_key(key(KeyCode::Char('s')));
    assert_eq!(app.sort_key(), SortKey::State);
    assert_eq!(conn_ids(&mut app), vec![1, 2, 4, 3]);
    app.handle_key(key(KeyCode::Char('s')));
    assert_eq!(app.sort_key(), SortKey::Local);
    assert_eq!(conn_ids(&mut app)[0], 3, "0.0.0.0 sorts first");
    for _ in 0..app.pane().sorts().len() - 2 {
        app.handle_key(key(KeyCode::Char('s')));
    }
    assert_eq!(app.sort_key(), SortKey::SendQ, "s wraps around");
    app.handle_key(key(KeyCode::Tab));
    assert_eq!(app.view(), View::Listeners);
    app.handle_key(key(KeyCode::Tab));
    assert_eq!(app.view(), View::Owners);
    app.handle_key(key(KeyCode::Tab));
    assert_eq!(app.view(), View::Exposure);
    app.handle_key(key(KeyCode::Tab));
    assert_eq!(app.view(), View::Incidents);
    app.handle_key(key(KeyCode::Tab));
    assert_eq!(app.view(), View::Findings);
    app.handle_key(key(KeyCode::BackTab));
    assert_eq!(app.view(), View::Incidents);
    app.handle_key(key(KeyCode::BackTab));
    assert_eq!(app.view(), View::Exposure);
    app.handle_key(key(KeyCode::BackTab));
    assert_eq!(app.view(), View::Owners);
}

#[test]
fn listeners_count_unaccepted_close_wait_on_their_port() {
    let mut app = sample();
    app.set_view(View::Listeners);
    assert_eq!(conn_ids(&mut app), vec![3]);
    let l = app
        .connection(&ConnKey {
            skaddr: 3,
            netns_cookie: 1,
        })
        .unwrap()
        .clone();
    assert_eq!(app.unaccepted_for(&l), 1);
    assert!((accept_fill(&l) - 1.5).abs() < 1e-9);
}

#[test]
fn owners_aggregate_states_stuck_close_wait_and_send_q() {
    let mut app = sample();
    app.set_view(View::Owners);
    assert_eq!(app.row_count(), 2);
    let app_row = (0..2)
        .filter_map(|i| app.owner_row(i))
        .find(|r| r.name == "app[7]")
        .unwrap();
    assert_eq!(
        (
            app_row.sockets,
            app_row.listen,
            app_row.close_wait,
            app_row.stuck_close_wait
        ),
        (2, 1, 1, 1)
    );
    assert_eq!(app_row.send_q_total, 5);
    let none = (0..2)
        .filter_map(|i| app.owner_row(i))
        .find(|r| r.name == "-")
        .unwrap();
    assert_eq!((none.sockets, none.established, none.close_wait), (2, 1, 1));
}

#[test]
fn filter_matches_port_address_comm_and_state() {
    let mut app = sample();
    app.set_view(View::Connections);
    for (f, want) in [
        ("40001", vec![4]),
        ("10.0.0.2", vec![1]),
        ("APP", vec![2, 3]),
        ("close-wait", vec![2, 4]),
        ("listen", vec![3]),
        ("nothing-like-this", vec![]),
    ] {
        app.handle_key(key(KeyCode::Char('/')));
        assert!(app.editing_filter());
        type_str(&mut app, f);
        app.handle_key(key(KeyCode::Enter));
        assert!(!app.editing_filter());
        let mut got = conn_ids(&mut app);
        got.sort_unstable();
        assert_eq!(got, want, "filter {f}");
        app.handle_key(key(KeyCode::Esc)); // clears the filter
        assert_eq!(app.filter(), "");
    }
    // The filter applies to findings too, and keys typed in it are not commands.
    app.set_view(View::Findings);
    app.handle_key(key(KeyCode::Char('/')));
    type_str(&mut app, "8080q");
    app.handle_key(key(KeyCode::Backspace));
    assert_eq!(app.filter(), "8080");
    assert_eq!(
        ids(&mut app),
        vec![RowId::Finding("close_wait_stuck-2".into())]
    );
}

#[test]
fn selection_follows_its_row_across_resorts_and_updates() {
    let mut app = sample();
    app.set_view(View::Connections);
    app.handle_key(key(KeyCode::Down));
    assert_eq!(
        app.selected_id(),
        Some(RowId::Conn(ConnKey {
            skaddr: 2,
            netns_cookie: 1
        }))
    );
    // A delta that moves connection 2 to the top of the Send-Q order.
    let mut c2 = app
        .connection(&ConnKey {
            skaddr: 2,
            netns_cookie: 1,
        })
        .unwrap()
        .clone();
    c2.queues.send_q = 1_000_000;
    app.apply_stream_event(StreamEvent::Conn(Delta::Upsert { conn: Box::new(c2) }));
    assert_eq!(app.selected(), 0);
    assert_eq!(
        app.selected_id(),
        Some(RowId::Conn(ConnKey {
            skaddr: 2,
            netns_cookie: 1
        }))
    );
    // Re-sorting by local address keeps it selected too.
    app.handle_key(key(KeyCode::Char('s')));
    app.handle_key(key(KeyCode::Char('s')));
    assert_eq!(
        app.selected_id(),
        Some(RowId::Conn(ConnKey {
            skaddr: 2,
            netns_cookie: 1
        }))
    );
    // Removed: the selection stays at a valid index.
    app.apply_stream_event(StreamEvent::Conn(Delta::Remove {
        key: ConnKey {
            skaddr: 2,
            netns_cookie: 1,
        },
    }));
    assert!(app.selected() < app.row_count());
}

#[test]
fn navigation_keys_are_bounded() {
    let mut app = App::new("t");
    let conns = (0..100)
        .map(|i| {
            conn(
                i,
                TcpState::Established,
                &format!("10.0.0.1:{}", 1000 + i),
                "10.0.0.2:80",
            )
        })
        .collect();
    app.apply_snapshot(snap(conns, Vec::new()));
    app.set_view(View::Connections);
    app.set_page(10);
    app.handle_key(key(KeyCode::Up));
    assert_eq!(app.selected(), 0);
    app.handle_key(key(KeyCode::PageDown));
    assert_eq!((app.selected(), app.offset()), (10, 1));
    app.handle_key(key(KeyCode::End));
    assert_eq!((app.selected(), app.offset()), (99, 90));
    app.handle_key(key(KeyCode::Char('j')));
    assert_eq!(app.selected(), 99);
    app.handle_key(key(KeyCode::PageUp));
    assert_eq!(app.selected(), 89);
    app.handle_key(key(KeyCode::Char('k')));
    assert_eq!(app.selected(), 88);
    app.handle_key(key(KeyCode::Home));
    assert_eq!((app.selected(), app.offset()), (0, 0));
}

#[test]
fn empty_data_is_fine() {
    let mut app = App::new("t");
    for v in View::ALL {
        app.set_view(v);
        assert_eq!(app.row_count(), 0);
        app.handle_key(key(KeyCode::Down));
        app.handle_key(key(KeyCode::End));
        app.handle_key(key(KeyCode::Enter));
        assert_eq!(app.selected(), 0);
        assert!(app.detail(0).is_none());
    }
}

#[test]
fn pause_buffers_updates_until_resumed() {
    let mut app = sample();
    app.handle_key(key(KeyCode::Char('p')));
    assert!(app.paused());
    let c = conn(9, TcpState::Established, "10.0.0.9:1", "10.0.0.8:2");
    app.apply_stream_event(StreamEvent::Conn(Delta::Upsert { conn: Box::new(c) }));
    app.apply_stream_event(StreamEvent::Conn(Delta::Remove {
        key: ConnKey {
            skaddr: 1,
            netns_cookie: 1,
        },
    }));
    assert_eq!(app.connection_count(), 4);
    assert_eq!(app.pending_count(), 2);
    app.handle_key(key(KeyCode::Char('p')));
    assert!(!app.paused());
    assert_eq!(app.pending_count(), 0);
    assert_eq!(app.connection_count(), 4);
    assert!(
        app.connection(&ConnKey {
            skaddr: 9,
            netns_cookie: 1
        })
        .is_some()
    );
    assert!(
        app.connection(&ConnKey {
            skaddr: 1,
            netns_cookie: 1
        })
        .is_none()
    );
}

#[test]
fn finding_lifecycle_events_open_and_resolve() {
    let mut app = sample();
    let c = conn(9, TcpState::Established, "10.0.0.9:1", "10.0.0.8:2");
    let f = finding_on(&c, FindingKind::SendQueueGrowing, Severity::Info, 5);
    app.apply_stream_event(StreamEvent::Finding(Box::new(FindingChange {
        change: Lifecycle::Opened,
        finding: f.clone(),
    })));
    assert_eq!(app.severity_counts(), (1, 1, 1));
    app.apply_stream_event(StreamEvent::Finding(Box::new(FindingChange {
        change: Lifecycle::Resolved,
        finding: f,
    })));
    assert_eq!(app.severity_counts(), (1, 1, 0));
}

#[test]
fn quit_keys_and_help() {
    let mut app = sample();
    assert_eq!(app.handle_key(key(KeyCode::Char('?'))), Action::Continue);
    assert!(app.help_open());
    assert_eq!(app.handle_key(key(KeyCode::Down)), Action::Continue);
    assert!(!app.help_open(), "any key closes help");
    let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert_eq!(app.handle_key(ctrl_c), Action::Quit);
    app.handle_key(key(KeyCode::Char('/')));
    assert_eq!(
        app.handle_key(key(KeyCode::Char('q'))),
        Action::Continue,
        "q is text in /"
    );
    assert_eq!(
        app.handle_key(ctrl_c),
        Action::Quit,
        "Ctrl-C quits even in the filter"
    );
    app.handle_key(key(KeyCode::Esc));
    assert_eq!(app.handle_key(key(KeyCode::Char('q'))), Action::Quit);
}

#[test]
fn detail_shows_fields_evidence_and_history() {
    let mut app = sample();
    let mut c = app
        .connection(&ConnKey {
            skaddr: 2,
            netns_cookie: 1,
        })
        .unwrap()
        .clone();
    c.history = (0..5_u32)
        .map(|i| Sample {
            at: u64::from(i),
            send_q: i * 10,
            retrans_total: i,
            ..Sample::default()
        })
        .collect();
    app.apply_stream_event(StreamEvent::Conn(Delta::Upsert { conn: Box::new(c) }));
    app.handle_key(key(KeyCode::Down)); // the CLOSE_WAIT finding
    app.handle_key(key(KeyCode::Enter));
    assert!(app.detail_open());
    let d = app.detail(100 * NS_PER_SEC).unwrap();
    let text = d.lines.join("\n");
    assert!(text.contains("close_wait_stuck"), "{text}");
    assert!(text.contains("evidence: age_seconds=42"), "{text}");
    assert!(
        text.contains("CLOSE_WAIT 127.0.0.1:8080 -> 127.0.0.1:40000"),
        "{text}"
    );
    assert!(text.contains("owner app[7]"), "{text}");
    assert_eq!(d.send_q, vec![0, 10, 20, 30, 40]);
    assert_eq!(d.retrans, vec![0, 1, 2, 3, 4]);
    app.handle_key(key(KeyCode::Esc));
    assert!(!app.detail_open());
}
