use crossterm::event::KeyCode;
use tcpwatch_core::model::{ConnKey, FindingKind, NS_PER_SEC, Sample, Severity, TcpState};

use crate::render_text;
use crate::state::incidents_tests::listener_story;
use crate::state::tests::{conn, finding_on, key, owned, snap, type_str};
use crate::state::{App, View};

fn sample() -> App {
    let mut a = conn(1, TcpState::Established, "10.0.0.1:5000", "10.0.0.2:443");
    a.queues.send_q = 100;
    a.history = (0..8_u32)
        .map(|i| Sample {
            at: u64::from(i),
            send_q: i * 100,
            retrans_total: i / 2,
            ..Sample::default()
        })
        .collect();
    let b = owned(
        conn(2, TcpState::CloseWait, "127.0.0.1:8080", "127.0.0.1:40000"),
        "leaky",
        7,
    );
    let mut l = owned(
        conn(3, TcpState::Listen, "0.0.0.0:8080", "0.0.0.0:0"),
        "leaky",
        7,
    );
    l.queues.accept_queue = 3;
    l.queues.accept_limit = 2;
    let mut u = conn(4, TcpState::CloseWait, "127.0.0.1:8080", "127.0.0.1:40001");
    u.inode = 0;
    let f1 = finding_on(
        &b,
        FindingKind::CloseWaitStuck,
        Severity::Warning,
        10 * NS_PER_SEC,
    );
    let f2 = finding_on(
        &a,
        FindingKind::RetransmitChain,
        Severity::Critical,
        50 * NS_PER_SEC,
    );
    let mut app = App::new("127.0.0.1:9977");
    app.apply_snapshot(snap(vec![a, b, l, u], vec![f1, f2]));
    // These tests are about the per-socket views; the Incidents view has its own below.
    app.set_view(View::Findings);
    app
}

const NOW: u64 = 100 * NS_PER_SEC;

fn screen(app: &mut App, w: u16, h: u16) -> String {
    render_text(app, w, h, NOW).join("\n")
}

#[test]
fn findings_view_shows_header_counts_and_diagnosis() {
    let mut app = sample();
    let s = screen(&mut app, 120, 40);
    assert!(s.contains("127.0.0.1:9977"), "{s}");
    assert!(s.contains("conns 4"), "{s}");
    assert!(s.contains("1 crit 1 warn 0 info"), "{s}");
    assert!(s.contains("close_wait_stuck"), "{s}");
    assert!(s.contains("stuck: the app"), "{s}");
    let lines: Vec<&str> = s.lines().collect();
    let crit = lines
        .iter()
        .position(|l| l.contains("retransmit_chain"))
        .unwrap();
    let warn = lines
        .iter()
        .position(|l| l.contains("close_wait_stuck"))
        .unwrap();
    assert!(crit < warn, "critical first:\n{s}");
    assert!(lines[crit].contains("50s"), "age of the condition:\n{s}");
}

#[test]
fn every_view_renders_at_80x24() {
    let mut app = sample();
    let mut seen = Vec::new();
    for _ in View::ALL {
        let s = screen(&mut app, 80, 24);
        assert_eq!(s.lines().count(), 24);
        assert!(s.lines().all(|l| l.chars().count() <= 80));
        seen.push(s);
        app.handle_key(key(KeyCode::Tab));
    }
    assert!(
        seen[1].contains("CLOSE-WAIT") && seen[1].contains("leaky[7]"),
        "{}",
        seen[1]
    );
    assert!(
        seen[1].contains("127.0.0.1:8080") && seen[1].contains("127.0.0.1:40000"),
        "{}",
        seen[1]
    );
    assert!(
        seen[0].contains("127.0.0.1:8080") && seen[0].contains("close_wait_stuck"),
        "{}",
        seen[0]
    );
    assert!(
        seen[2].contains("0.0.0.0:8080") && seen[2].contains("3/2"),
        "{}",
        seen[2]
    );
    assert!(seen[2].contains("[####"), "accept queue bar: {}", seen[2]);
    assert!(seen[3].contains("leaky[7]"), "{}", seen[3]);
}

#[test]
fn tiny_terminals_do_not_panic() {
    for (w, h) in [
        (0, 0),
        (1, 1),
        (20, 5),
        (29, 6),
        (30, 6),
        (31, 7),
        (40, 8),
        (80, 9),
        (200, 3),
    ] {
        let mut app = sample();
        for v in 0..5 {
            let _ = render_text(&mut app, w, h, NOW);
            app.handle_key(key(KeyCode::Enter));
            let _ = render_text(&mut app, w, h, NOW);
            app.handle_key(key(KeyCode::Char('?')));
            let _ = render_text(&mut app, w, h, NOW);
            app.handle_key(key(KeyCode::Esc));
            app.handle_key(key(KeyCode::Char('/')));
            type_str(&mut app, "80");
            let _ = render_text(&mut app, w, h, NOW);
            app.handle_key(key(KeyCode::Esc));
            if v < 4 {
                app.handle_key(key(KeyCode::Tab));
            }
        }
    }
    let mut app = sample();
    assert!(screen(&mut app, 20, 5).contains("too small"));
}

#[test]
fn empty_views_say_so() {
    let mut app = App::new("127.0.0.1:9977");
    assert!(screen(&mut app, 80, 24).contains("no open incidents"));
    app.handle_key(key(KeyCode::Tab));
    assert!(screen(&mut app, 80, 24).contains("no open findings"));
    app.handle_key(key(KeyCode::Tab));
    assert!(screen(&mut app, 80, 24).contains("no connections"));
    app.handle_key(key(KeyCode::Char('/')));
    type_str(&mut app, "zzz");
    assert!(screen(&mut app, 80, 24).contains("nothing matches the filter"));
}

#[test]
fn huge_numbers_render() {
    let mut c = conn(
        1,
        TcpState::Established,
        "[2001:db8::1]:65535",
        "[2001:db8::2]:65535",
    );
    c.queues.send_q = u32::MAX;
    c.queues.recv_q = u32::MAX;
    c.retrans.chain = u32::MAX;
    c.tcp.backoff = u8::MAX;
    c.tcp.srtt_us = u32::MAX;
    c.state_since = 0;
    c.history = vec![
        Sample {
            send_q: u32::MAX,
            retrans_total: u32::MAX,
            ..Sample::default()
        };
        40
    ];
    let mut l = conn(2, TcpState::Listen, "0.0.0.0:1", "0.0.0.0:0");
    l.queues.accept_queue = u32::MAX;
    l.queues.accept_limit = 0;
    let mut app = App::new("x");
    app.apply_snapshot(snap(vec![c, l], Vec::new()));
    app.set_view(View::Connections);
    app.handle_key(key(KeyCode::Enter));
    let s = render_text(&mut app, 160, 40, u64::MAX).join("\n");
    assert!(s.contains("4294967295"), "{s}");
    assert!(s.contains("Send-Q history: last 4294967295"), "{s}");
    app.set_view(View::Listeners);
    let s = screen(&mut app, 120, 40);
    assert!(s.contains("4294967295/0"), "{s}");
    app.set_view(View::Owners);
    let s = screen(&mut app, 120, 40);
    assert!(s.contains("4294967295"), "{s}");
}

#[test]
fn hundred_thousand_rows_render_only_the_visible_page() {
    let conns: Vec<_> = (0..100_000_u64)
        .map(|i| {
            let mut c = conn(
                i,
                TcpState::Established,
                &format!(
                    "10.{}.{}.1:{}",
                    i / 65_536,
                    (i / 256) % 256,
                    1024 + i % 60_000
                ),
                "10.255.0.1:443",
            );
            c.queues.send_q = u32::try_from(i).unwrap();
            c
        })
        .collect();
    let mut app = App::new("x");
    app.apply_snapshot(snap(conns, Vec::new()));
    app.set_view(View::Connections);
    let s = screen(&mut app, 120, 40);
    assert!(s.contains("1/100000"), "{s}");
    assert!(s.contains("99999"), "largest Send-Q first: {s}");
    app.handle_key(key(KeyCode::End));
    let s = screen(&mut app, 120, 40);
    assert!(s.contains("100000/100000"), "{s}");
    // A delta re-sorts once at the next frame; the selection stays on its connection.
    let sel = app.selected_id();
    let mut c = app
        .connection(&ConnKey {
            skaddr: 5,
            netns_cookie: 1,
        })
        .unwrap()
        .clone();
    c.queues.send_q = u32::MAX;
    app.apply_stream_event(crate::state::StreamEvent::Conn(
        crate::state::wire::Delta::Upsert { conn: Box::new(c) },
    ));
    let s = screen(&mut app, 120, 40);
    assert!(s.contains("4294967295") || app.selected_id() == sel, "{s}");
    assert_eq!(app.selected_id(), sel);
}

#[test]
fn detail_pane_shows_the_selected_connection_and_sparklines() {
    let mut app = sample();
    // Findings view: critical finding (connection 1) first.
    app.handle_key(key(KeyCode::Enter));
    let s = screen(&mut app, 120, 40);
    assert!(s.contains("critical retransmit_chain"), "{s}");
    assert!(s.contains("evidence: age_seconds=42"), "{s}");
    assert!(
        s.contains("ESTABLISHED 10.0.0.1:5000 -> 10.0.0.2:443"),
        "{s}"
    );
    assert!(s.contains("Send-Q history: last 700, max 700"), "{s}");
    assert!(s.contains("retransmits history: last 3, max 3"), "{s}");
    // Connections view, filtered to one port.
    app.handle_key(key(KeyCode::Tab));
    app.handle_key(key(KeyCode::Char('/')));
    type_str(&mut app, "40001");
    app.handle_key(key(KeyCode::Enter));
    let s = screen(&mut app, 120, 40);
    assert!(s.contains("filter: /40001"), "{s}");
    assert!(
        s.contains("CLOSE_WAIT 127.0.0.1:8080 -> 127.0.0.1:40001"),
        "{s}"
    );
    assert!(!s.contains("40000"), "{s}");
    // Listener detail names its unaccepted CLOSE_WAIT count.
    app.handle_key(key(KeyCode::Esc));
    app.handle_key(key(KeyCode::Esc));
    app.handle_key(key(KeyCode::Tab));
    app.handle_key(key(KeyCode::Enter));
    let s = screen(&mut app, 120, 40);
    assert!(s.contains("unaccepted CLOSE_WAIT on port 8080: 1"), "{s}");
}

#[test]
fn paused_indicator_and_help() {
    let mut app = sample();
    app.handle_key(key(KeyCode::Char('p')));
    app.apply_snapshot(snap(Vec::new(), Vec::new()));
    let s = screen(&mut app, 120, 40);
    assert!(s.contains("PAUSED (1 pending)"), "{s}");
    assert!(s.contains("conns 4"), "data unchanged while paused: {s}");
    app.handle_key(key(KeyCode::Char('?')));
    let s = screen(&mut app, 120, 40);
    assert!(s.contains("cycle the sort order"), "{s}");
}

#[test]
fn incidents_view_leads_with_one_row_per_incident() {
    let mut app = listener_story();
    for (w, wide) in [(120, true), (80, false)] {
        let s = screen(&mut app, w, 24);
        let lines: Vec<&str> = s.lines().collect();
        assert!(lines[1].starts_with(" Incidents |"), "{s}");
        assert!(s.contains("incidents: 1 crit 1 warn  findings"), "{s}");
        if wide {
            assert!(s.contains("findings: 4 crit 1 warn 0 info"), "{s}");
        }
        let crit = lines
            .iter()
            .position(|l| l.contains("listener_not_accepting"))
            .unwrap();
        let warn = lines
            .iter()
            .position(|l| l.contains("close_wait_leak"))
            .unwrap();
        assert!(crit < warn, "most severe first:\n{s}");
        let row = lines[crit];
        assert!(row.starts_with("CRIT"), "{row}");
        assert!(row.contains("server[42]") && row.contains(":8080"), "{row}");
        assert!(row.contains(" 4 "), "members_total: {row}");
        assert!(row.contains("1m20s"), "age of the oldest member: {row}");
        if wide {
            assert!(row.contains("server[42] is not calling"), "{row}");
            assert!(lines[2].contains("Remote"), "{s}");
        }
        assert_eq!(
            s.matches("close_wait_stuck").count(),
            0,
            "sockets stay behind their incident:\n{s}"
        );
    }
}

#[test]
fn enter_shows_the_incident_story_above_its_members() {
    let mut app = listener_story();
    app.handle_key(key(KeyCode::Enter));
    let s = screen(&mut app, 120, 40);
    assert!(
        s.contains("critical listener_not_accepting inc-listener (Esc: back)"),
        "{s}"
    );
    assert!(
        s.contains("diagnosis: server[42] is not calling accept() on :8080"),
        "{s}"
    );
    assert!(
        s.contains("members: 4 open (accept_backlog_filling 1, close_wait_stuck 3)"),
        "{s}"
    );
    assert!(s.contains("members of inc-listener"), "{s}");
    assert_eq!(s.matches("close_wait_stuck  ").count(), 3, "{s}");
    assert!(
        !s.contains("close_wait_leak"),
        "only this incident's members:\n{s}"
    );
    // A long diagnosis wraps and the summary grows with it: the counts stay visible.
    let mut long = listener_story();
    let mut inc = long.incident("inc-listener").unwrap().clone();
    inc.diagnosis = "word ".repeat(100);
    long.apply_stream_event(crate::state::StreamEvent::Incident(Box::new(
        tcpwatch_core::incident::IncidentChange {
            change: tcpwatch_core::model::Lifecycle::Updated,
            incident: inc,
        },
    )));
    long.handle_key(key(KeyCode::Enter));
    let s = screen(&mut long, 100, 40);
    assert!(s.contains("members: 4 open"), "{s}");
    // A member leads to its connection.
    app.handle_key(key(KeyCode::Enter));
    let s = screen(&mut app, 120, 40);
    assert!(
        s.contains("CLOSE_WAIT 127.0.0.1:8080 -> 127.0.0.1:40000"),
        "{s}"
    );
    assert!(s.contains("state age"), "{s}");
    assert!(
        !s.contains("(Esc: back)") && s.contains("members of inc-listener"),
        "the member's detail takes the summary's room, the tabs still name the incident:\n{s}"
    );
}

#[test]
fn incidents_not_served_and_unreadable_events_show() {
    let mut app = App::new("127.0.0.1:9977");
    app.apply_snapshot(crate::state::Snapshot::default());
    let s = screen(&mut app, 120, 24);
    assert!(s.contains("incidents: not served by this daemon"), "{s}");
    assert!(!s.contains("no open incidents"), "{s}");
    app.note_bad_event("event type `incident`: missing field `id`".into());
    let s = screen(&mut app, 200, 24);
    assert!(
        s.contains("1 unreadable events (last: event type `incident`: missing field `id`)"),
        "{s}"
    );
}
