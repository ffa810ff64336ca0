//! Privileged end-to-end test of `tcpwatch top`: a real daemon, a stuck `CLOSE_WAIT` and a
//! full listener in a test namespace, and the UI driven through tmux like a person would: the
//! Incidents view first (one incident per cause), Enter into an incident's members and on to
//! a member's connection, then the per-socket views.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]
mod support;

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::{BIN, Daemon, Netns, connect, listener, privileged, wait_for};

/// A tmux server of its own (`-L`), with one 120x40 session running a plain shell; the whole
/// server is killed on drop, whatever happened.
struct Tmux {
    socket: String,
}

const PROMPT: &str = "TWT-PROMPT$";

impl Tmux {
    fn start() -> Self {
        let t = Self {
            socket: format!("twt-top-{}", std::process::id()),
        };
        let ok = Command::new("tmux")
            .args([
                "-L",
                &t.socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                "top",
            ])
            .args([
                "-x",
                "120",
                "-y",
                "40",
                "env",
                "-u",
                "TMUX",
                "bash",
                "--norc",
                "--noprofile",
            ])
            .status()
            .expect("tmux runs")
            .success();
        assert!(ok, "tmux new-session failed");
        t.keys(&[&format!("PS1='{PROMPT} '"), "Enter"]);
        t.wait_screen("shell prompt", |s| s.contains(PROMPT));
        t
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `tmux send-keys`: each argument is a key name (`Enter`, `Tab`) or literal text.
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    /// Literal text, one character at a time (no key-name interpretation).
    fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "top", "-l", text]);
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "top"])
    }

    fn alternate_on(&self) -> String {
        self.tmux(&["display", "-p", "-t", "top", "#{alternate_on}"])
            .trim()
            .to_owned()
    }

    /// Waits (at most 15 s) for the screen to satisfy `pred`; panics with the screen if not.
    fn wait_screen(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let got = wait_for(Duration::from_secs(15), || {
            last = self.screen();
            pred(&last).then(|| last.clone())
        });
        got.unwrap_or_else(|| panic!("{what}: not on screen within 15 s:\n{last}"))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

fn tmux_available() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The two incidents the set-up makes, as the daemon serves them: the listener that never
/// accepts (`listener_not_accepting` on `full_port`) and the leak (`close_wait_leak` on
/// `owned_port`), both in the test namespace.
fn wait_incidents(d: &Daemon, netns: u64, owned_port: u16, full_port: u16) -> (Value, Value) {
    let find = |open: &[Value], kind: &str, port: u16| {
        open.iter()
            .find(|i| {
                i["kind"] == kind
                    && i["root"]["local_port"].as_u64() == Some(u64::from(port))
                    && i["root"]["netns"]["inode"].as_u64() == Some(netns)
            })
            .cloned()
    };
    let mut last = Value::Null;
    let got = wait_for(Duration::from_secs(20), || {
        last = d.get_json("/api/v1/incidents");
        let open = last["open"].as_array().cloned().unwrap_or_default();
        Some((
            find(&open, "listener_not_accepting", full_port)?,
            find(&open, "close_wait_leak", owned_port)?,
        ))
    });
    got.unwrap_or_else(|| panic!("the daemon did not serve both incidents within 20 s: {last}"))
}

/// Top opens on the Incidents view: one row per incident; Enter lists the members of the
/// listener incident under its diagnosis, Enter on a member shows its `CLOSE_WAIT`
/// connection; Esc goes back. Leaves the Incidents view unfiltered, detail closed.
fn check_incidents_view(t: &Tmux, lna: &Value, owned_port: u16, full_port: u16) {
    let row = |s: &str, kind: &str, port: u16| {
        s.lines()
            .any(|l| l.contains(kind) && l.contains(&format!(":{port} ")))
    };
    let s = t.wait_screen("incidents view", |s| {
        row(s, "listener_not_accepting", full_port) && row(s, "close_wait_leak", owned_port)
    });
    assert!(s.contains(" Incidents | Findings |"), "{s}");
    assert!(s.contains("  incidents: "), "{s}");
    assert!(!s.contains("not served by this daemon"), "{s}");
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
    let lna_row = s
        .lines()
        .find(|l| l.contains("listener_not_accepting") && l.contains(&format!(":{full_port} ")))
        .unwrap();
    assert!(lna_row.starts_with("CRIT"), "{lna_row}");
    assert!(
        lna_row.contains(&comm.trim()[..comm.trim().len().min(12)]),
        "the listener's owner ({}) in the row: {lna_row}",
        comm.trim()
    );
    // Only this incident (the filter matches its port), then its members.
    t.keys(&["/"]);
    t.type_text(&full_port.to_string());
    t.keys(&["Enter"]);
    t.wait_screen("incident filtered", |s| {
        s.contains(&format!("filter: /{full_port}")) && !row(s, "close_wait_leak", owned_port)
    });
    t.keys(&["Enter"]);
    let id = lna["id"].as_str().unwrap();
    let s = t.wait_screen("incident members", |s| {
        s.contains(&format!("members of {id}")) && s.contains("close_wait_stuck")
    });
    assert!(
        s.contains(&format!("not calling accept() on :{full_port}")),
        "the incident's diagnosis above its members:\n{s}"
    );
    assert!(s.contains("members: "), "{s}");
    // A member's detail is its connection: find the never-accepted CLOSE_WAIT.
    let want = format!("CLOSE_WAIT 127.0.0.1:{full_port} -> ");
    let mut s = String::new();
    for _ in 0..6 {
        t.keys(&["Enter"]);
        // `cause=` is only in a finding's detail (the incident above says `cause X`).
        s = t.wait_screen("member detail", |s| s.contains("cause="));
        if s.contains(&want) {
            break;
        }
        t.keys(&["Escape"]);
        t.wait_screen("member detail closed", |s| !s.contains("evidence:"));
        t.keys(&["j"]);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(s.contains(&want), "a member's CLOSE_WAIT connection:\n{s}");
    assert!(s.contains("state age"), "{s}");
    assert!(s.contains(&format!("incident: {id}")), "{s}");
    // Esc: detail, members, filter (one key at a time, see below).
    t.keys(&["Escape"]);
    t.wait_screen("detail closed", |s| !s.contains("state age"));
    t.keys(&["Escape"]);
    t.wait_screen("members left", |s| !s.contains("members of "));
    t.keys(&["Escape"]);
    t.wait_screen("filter cleared", |s| {
        !s.contains("filter: /") && row(s, "close_wait_leak", owned_port)
    });
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one session driven key by key: splitting it would hide the sequence"
)]
fn top_leads_with_incidents_then_findings_filters_details_and_restores_the_terminal() {
    if !privileged() {
        return;
    }
    assert!(
        tmux_available(),
        "tmux is needed for this test (apt-get install tmux)"
    );
    let d = Daemon::start(&[
        "detectors.close_wait.threshold_seconds=2",
        "daemon.sweep_interval_ms=500",
    ]);
    let ns = Netns::new("top");
    // A CLOSE_WAIT owned by this process: the peer closed, we never do.
    let (l_owned, owned_addr) = listener(&ns, 16);
    let client = connect(&ns, owned_addr);
    let client_addr = client.local_addr().unwrap();
    let (leaked, _) = l_owned.accept().unwrap();
    drop(client);
    // A listener that never accepts: full queue and one unaccepted CLOSE_WAIT.
    let (_l_full, full_addr) = listener(&ns, 2);
    let mut queued: Vec<TcpStream> = (0..3).map(|_| connect(&ns, full_addr)).collect();
    drop(queued.pop());

    let open = wait_for(Duration::from_secs(20), || {
        let v = d.get_json("/api/v1/findings");
        let open = v["open"].as_array().cloned().unwrap_or_default();
        open.iter()
            .any(|f| {
                f["kind"] == "close_wait_stuck" && f["subject"]["local"] == owned_addr.to_string()
            })
            .then_some(open)
    });
    let open: Vec<Value> = open.expect("the daemon reports the stuck CLOSE_WAIT");
    eprintln!("open findings: {}", open.len());
    let (lna, leak) = wait_incidents(&d, ns.inode, owned_addr.port(), full_addr.port());
    eprintln!("incidents: {} and {}", lna["id"], leak["id"]);

    let t = Tmux::start();
    t.type_text(&format!("{BIN} top --addr 127.0.0.1:{}", d.port));
    t.keys(&["Enter"]);
    check_incidents_view(&t, &lna, owned_addr.port(), full_addr.port());
    assert_eq!(t.alternate_on(), "1", "the UI runs on the alternate screen");

    // Findings view (next tab): the stuck CLOSE_WAIT, with its diagnosis.
    t.keys(&["Tab"]);
    let s = t.wait_screen("findings view", |s| {
        s.lines()
            .any(|l| l.contains("close_wait_stuck") && l.contains(&owned_addr.to_string()))
    });
    assert!(
        s.contains(&format!("tcpwatch top 127.0.0.1:{}", d.port)),
        "{s}"
    );
    assert!(s.contains(" Incidents | Findings |"), "{s}");

    // Connections view filtered to the owned listener's port, detail of the CLOSE_WAIT.
    t.keys(&["Tab"]);
    t.wait_screen("connections view", |s| {
        s.contains("Recv-Q") && s.contains("Send-Q")
    });
    t.keys(&["/"]);
    t.type_text(&owned_addr.port().to_string());
    t.keys(&["Enter"]);
    let s = t.wait_screen("filter applied", |s| {
        s.contains(&format!("filter: /{}", owned_addr.port())) && s.contains("CLOSE-WAIT")
    });
    assert!(
        !s.contains(&format!(":{} ", full_addr.port())),
        "the filter hides the other listener:\n{s}"
    );
    t.keys(&["Enter"]);
    let want = format!("CLOSE_WAIT {owned_addr} -> {client_addr}");
    let mut s = t.screen();
    for _ in 0..6 {
        s = t.wait_screen("detail pane", |s| s.contains("state age"));
        if s.contains(&want) {
            break;
        }
        t.keys(&["j"]);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        s.contains(&want),
        "detail of the CLOSE_WAIT connection:\n{s}"
    );
    let pid = std::process::id();
    assert!(
        s.contains(&format!("[{pid}]")),
        "owner is this test process ({pid}):\n{s}"
    );
    assert!(
        s.contains("close_wait_stuck"),
        "the finding in the detail pane:\n{s}"
    );
    assert!(s.contains("evidence:"), "{s}");

    // Listeners view: the full listener's accept queue and its unaccepted CLOSE_WAIT.
    // One key at a time, each waited for on screen: an Escape followed at once by another key
    // can be read by the terminal library as Alt+key.
    t.keys(&["Escape"]);
    t.wait_screen("detail pane closed", |s| !s.contains("state age"));
    t.keys(&["Escape"]);
    t.wait_screen("filter cleared", |s| !s.contains("filter: /"));
    t.keys(&["Tab"]);
    t.wait_screen("listeners view", |s| s.contains("Unaccepted CW"));
    t.keys(&["/"]);
    t.type_text(&full_addr.port().to_string());
    t.keys(&["Enter"]);
    let s = t.wait_screen("listeners view", |s| {
        s.contains("Unaccepted CW") && s.contains(&full_addr.to_string())
    });
    let row = s
        .lines()
        .find(|l| l.contains(&full_addr.to_string()))
        .unwrap();
    assert!(row.contains("3/2"), "accept queue 3 of 2: {row}");
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert!(cols.contains(&"1"), "one unaccepted CLOSE_WAIT: {row}");

    // Quit: the shell is back and the terminal restored.
    t.keys(&["q"]);
    let s = t.wait_screen("shell after quit", |s| {
        !s.contains("Unaccepted CW") && s.trim_end().ends_with(PROMPT)
    });
    assert!(!s.contains(" Findings | Connections"), "UI gone:\n{s}");
    assert!(!s.contains("listener_not_accepting"), "UI gone:\n{s}");
    assert_eq!(t.alternate_on(), "0", "alternate screen left");
    // Raw mode is off: typed text is echoed and run by the shell.
    t.type_text("echo restored-$((40+2))");
    t.keys(&["Enter"]);
    t.wait_screen("cooked terminal", |s| s.contains("restored-42"));
    drop(leaked);
    drop(queued);
}

#[test]
fn standalone_loads_the_programs_itself() {
    if !privileged() {
        return;
    }
    // No daemon: `--standalone` runs one in-process and shows what it sees.
    let ns = Netns::new("topsa");
    let (_l, addr) = listener(&ns, 4);
    let out = Command::new(BIN)
        .args(["top", "--standalone", "--once", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let found = v["connections"].as_array().unwrap().iter().any(|c| {
        c["state"] == "LISTEN"
            && c["local"] == addr.to_string()
            && c["netns"]["inode"].as_u64() == Some(ns.inode)
    });
    assert!(found, "the namespace's listener is shown");
}
