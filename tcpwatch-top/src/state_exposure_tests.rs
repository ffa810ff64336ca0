//! The Exposure view: the daemon's audit as rows (worst first), sorting, filtering, the
//! detail pane, polling updates, pause, and an older daemon.
use std::collections::HashMap;

use crossterm::event::KeyCode;
use tcpwatch_core::exposure::audit;
use tcpwatch_core::model::{NetnsInfo, TcpState};

use super::tests::{conn, key, owned, snap, type_str};
use super::*;

/// api[42]: two idle connections to 10.0.0.2:80 without keepalive (never); web[7]: one to
/// 10.0.0.3:443 with data in flight (924.6 s); cron[9]: one with keepalive 10/5/3 (25 s).
fn body() -> tcpwatch_core::api::ExposureBody {
    let mut conns = Vec::new();
    for i in 0..2 {
        conns.push(owned(
            conn(
                100 + i,
                TcpState::Established,
                &format!("10.0.0.1:{}", 40000 + i),
                "10.0.0.2:80",
            ),
            "api",
            42,
        ));
    }
    let mut w = owned(
        conn(200, TcpState::Established, "10.0.0.1:41000", "10.0.0.3:443"),
        "web",
        7,
    );
    w.queues.send_q = 100;
    conns.push(w);
    let mut k = owned(
        conn(
            300,
            TcpState::Established,
            "10.0.0.1:42000",
            "10.0.0.4:5432",
        ),
        "cron",
        9,
    );
    k.tcp.keepalive.enabled = true;
    k.tcp.keepalive.time_ms = 10_000;
    k.tcp.keepalive.intvl_ms = 5_000;
    k.tcp.keepalive.probes = 3;
    conns.push(k);
    let ns: HashMap<u64, NetnsInfo> = HashMap::new();
    audit(&conns, &ns, 300)
}

fn app_with_audit() -> App {
    let mut app = App::new("test");
    let mut s = snap(Vec::new(), Vec::new());
    s.exposure = Some(body());
    app.apply_snapshot(s);
    app.set_view(View::Exposure);
    app
}

fn processes(app: &mut App) -> Vec<String> {
    let n = app.row_count();
    (0..n)
        .filter_map(|i| app.exposure_row(i).map(|g| g.process.clone()))
        .collect()
}

#[test]
fn rows_are_the_audit_groups_worst_first_and_sort_cycles() {
    let mut app = app_with_audit();
    assert_eq!(app.row_count(), 3);
    assert_eq!(processes(&mut app), ["api[42]", "web[7]", "cron[9]"]);
    assert_eq!(app.sort_key(), SortKey::Worst);
    let g = app.exposure_row(0).unwrap();
    assert_eq!((g.connections, g.exposed, g.never), (2, 2, 2));
    app.handle_key(key(KeyCode::Char('s')));
    assert_eq!(app.sort_key(), SortKey::Exposed);
    assert_eq!(processes(&mut app)[0], "api[42]");
    app.handle_key(key(KeyCode::Char('s')));
    assert_eq!(app.sort_key(), SortKey::Owner);
    assert_eq!(processes(&mut app), ["api[42]", "cron[9]", "web[7]"]);
}

#[test]
fn filter_matches_process_or_remote() {
    let mut app = app_with_audit();
    app.handle_key(key(KeyCode::Char('/')));
    type_str(&mut app, "443");
    assert_eq!(processes(&mut app), ["web[7]"]);
    app.handle_key(key(KeyCode::Esc));
    app.handle_key(key(KeyCode::Esc));
    app.handle_key(key(KeyCode::Char('/')));
    type_str(&mut app, "CRON");
    assert_eq!(processes(&mut app), ["cron[9]"]);
}

#[test]
fn detail_names_the_fix_and_each_socket() {
    let mut app = app_with_audit();
    app.handle_key(key(KeyCode::Enter));
    let d = app.detail(0).unwrap();
    assert_eq!(d.title, "exposure api[42]");
    let text = d.lines.join("\n");
    assert!(text.contains("2 idle with no keepalive"), "{text}");
    assert!(text.contains("10.0.0.1:40000: never (idle)"), "{text}");
    assert!(text.contains("tcp_retries2=15"), "{text}");
    app.handle_key(key(KeyCode::Down));
    let text = app.detail(0).unwrap().lines.join("\n");
    assert!(text.contains("15m24s (data in flight)"), "{text}");
}

#[test]
fn polls_replace_the_audit_except_while_paused() {
    let mut app = app_with_audit();
    let mut fresh = body();
    fresh.groups.retain(|g| g.process == "cron[9]");
    app.handle_key(key(KeyCode::Char('p')));
    app.apply_exposure(fresh.clone());
    assert_eq!(app.row_count(), 3, "paused: not applied");
    app.handle_key(key(KeyCode::Char('p')));
    app.apply_exposure(fresh);
    assert_eq!(processes(&mut app), ["cron[9]"]);
    // A resync without the audit (an older daemon) keeps the last one.
    app.apply_snapshot(snap(Vec::new(), Vec::new()));
    assert_eq!(app.row_count(), 1);
}

#[test]
fn no_audit_is_an_empty_view() {
    let mut app = App::new("test");
    app.apply_snapshot(snap(Vec::new(), Vec::new()));
    app.set_view(View::Exposure);
    assert_eq!(app.row_count(), 0);
    assert!(app.exposure().is_none());
}

#[test]
fn the_view_renders_worst_first_with_the_diagnosis() {
    let mut app = app_with_audit();
    let lines = crate::render_text(&mut app, 140, 20, 0);
    let text = lines.join("\n");
    let api = lines.iter().position(|l| l.contains("api[42]")).unwrap();
    let web = lines.iter().position(|l| l.contains("web[7]")).unwrap();
    assert!(api < web, "{text}");
    assert!(
        lines[api].contains("never") && lines[api].contains("2/2"),
        "{text}"
    );
    assert!(lines[web].contains("15m24s"), "{text}");
    assert!(lines[api].contains("idle with no keepalive"), "{text}");
}

#[test]
fn counted_time_wait_shows_in_the_no_owner_row() {
    let mut app = super::tests::sample();
    app.set_view(View::Owners);
    assert_eq!(app.time_wait(), None);
    app.apply_time_wait(40);
    assert_eq!(app.time_wait(), Some(40));
    let none = (0..app.row_count())
        .filter_map(|i| app.owner_row(i))
        .find(|r| r.name == "-")
        .unwrap();
    assert_eq!(
        (none.sockets, none.time_wait, none.established),
        (42, 40, 1)
    );
}
