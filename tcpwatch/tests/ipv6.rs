//! Privileged IPv6 and dual-stack tests: `::1`, a dual-stack listener with IPv4-mapped peers,
//! and an IPv6 link between two namespaces, compared with `ss` (state, queues, backlog,
//! owner, and addresses as `ss` prints them), plus a blackholed IPv6 peer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]
mod support;

use std::io::Write as _;
use std::net::TcpStream;
use std::os::fd::AsRawFd as _;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::listener_at;
use support::proofs::{LINK_V6_B, Link};
use support::{BIN, Daemon, Netns, conns_in, privileged, snapshot, wait_for};

/// One row of `ss -tanipeH`, with the addresses exactly as `ss` prints them.
#[derive(Debug, Clone)]
struct Row {
    state: String,
    recv_q: u64,
    send_q: u64,
    local: String,
    peer: String,
    info: String,
}

impl Row {
    /// `pid=` and `fd=` of `users:(("comm",pid=1,fd=3))`.
    fn owner(&self) -> Option<(u64, i64)> {
        let users = self.info.split("users:((").nth(1)?;
        let num = |key: &str| -> Option<i64> {
            users
                .split(key)
                .nth(1)?
                .split([',', ')'])
                .next()?
                .parse()
                .ok()
        };
        Some((u64::try_from(num("pid=")?).ok()?, num("fd=")?))
    }

    fn ino(&self) -> u64 {
        self.info
            .split_whitespace()
            .find_map(|w| w.strip_prefix("ino:")?.parse().ok())
            .unwrap_or_else(|| panic!("no ino: {self:?}"))
    }

    fn field(&self, key: &str) -> Option<String> {
        self.info
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix(':').map(str::to_owned))
    }
}

fn ss_rows(ns: &Netns) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    for line in ns.exec("ss", &["-tanipeH"]).lines() {
        if line.starts_with(char::is_whitespace) {
            if let Some(r) = rows.last_mut() {
                r.info.push(' ');
                r.info.push_str(line.trim());
            }
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 {
            continue;
        }
        rows.push(Row {
            state: f[0].to_owned(),
            recv_q: f[1].parse().unwrap(),
            send_q: f[2].parse().unwrap(),
            local: f[3].to_owned(),
            peer: f[4].to_owned(),
            info: f[5..].join(" "),
        });
    }
    rows
}

/// tcpwatch's state name for an `ss` state.
fn state_name(ss: &str) -> &'static str {
    match ss {
        "LISTEN" => "LISTEN",
        "ESTAB" => "ESTABLISHED",
        "CLOSE-WAIT" => "CLOSE_WAIT",
        "FIN-WAIT-2" => "FIN_WAIT2",
        "SYN-RECV" => "SYN_RECV",
        other => panic!("unexpected ss state {other}"),
    }
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Every `ss` row of `ns` has its connection in the snapshot with the same state, queues
/// (for a listener: accept queue and limit), socket inode and owner. Connections print their
/// addresses exactly as `ss` does; a listener on `[::]` without `IPV6_V6ONLY` is `*:port` in
/// `ss` and `[::]:port` in tcpwatch. Returns the rows compared.
fn compare_with_ss(ns: &Netns, snap: &Value) -> Vec<Row> {
    let conns = conns_in(snap, ns.inode);
    let rows = ss_rows(ns);
    assert_eq!(conns.len(), rows.len(), "ss {rows:#?}\ntcpwatch {conns:#?}");
    for r in &rows {
        let local = match r.local.strip_prefix("*:") {
            Some(port) => format!("[::]:{port}"),
            None => r.local.clone(),
        };
        let c = conns
            .iter()
            .find(|c| {
                c["local"] == local.as_str()
                    && (r.state == "LISTEN") == (c["state"] == "LISTEN")
                    && (r.state == "LISTEN" || c["remote"] == r.peer.as_str())
            })
            .unwrap_or_else(|| panic!("{r:?} missing from {conns:#?}"));
        // An orphaned FIN_WAIT2 (no process left) is a timewait minisocket: `ss` prints its
        // substate, FIN-WAIT-2; tcpwatch the socket's state, TIME_WAIT (not a full socket).
        let orphan_fw2 = r.state == "FIN-WAIT-2" && r.info.contains("timer:(timewait");
        if orphan_fw2 {
            assert_eq!(c["state"], "TIME_WAIT", "{r:?}\n{c}");
            assert_eq!(c["full_sock"], false, "{r:?}\n{c}");
        } else {
            assert_eq!(c["state"], state_name(&r.state), "{r:?}\n{c}");
        }
        let q = &c["queues"];
        let (rq, sq) = if r.state == "LISTEN" {
            (u(&q["accept_queue"]), u(&q["accept_limit"]))
        } else {
            (u(&q["recv_q"]), u(&q["send_q"]))
        };
        assert_eq!((rq, sq), (r.recv_q, r.send_q), "queues of {r:?}\n{c}");
        assert_eq!(u(&c["inode"]), r.ino(), "inode of {r:?}");
        match r.owner() {
            Some((pid, fd)) => {
                assert_eq!(u(&c["owner"]["pid"]), pid, "owner of {r:?}");
                assert_eq!(c["owner"]["fd"].as_i64(), Some(fd), "fd of {r:?}");
            }
            None => assert!(c.get("owner").is_none_or(Value::is_null), "{r:?}\n{c}"),
        }
    }
    rows
}

/// The `tcpwatch snapshot` text table prints each connection's addresses as `ss` does.
fn text_has(rows: &[Row], port: u16) {
    let out = std::process::Command::new(BIN)
        .args(["snapshot", "--port", &port.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let p = format!(":{port}");
    for r in rows
        .iter()
        .filter(|r| r.state != "LISTEN" && (r.local.ends_with(&p) || r.peer.ends_with(&p)))
    {
        assert!(
            text.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 4 && f[3] == r.local && f[4] == r.peer
            }),
            "`{} {}` not in the text snapshot:\n{text}",
            r.local,
            r.peer
        );
    }
}

#[test]
fn loopback_v6_and_dual_stack_listener_match_ss() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("v6lo");
    // `[::1]` with backlog 2 that never accepts: limit + 1 queued, one client leaves.
    let (_full, full_addr) = listener_at(&ns, "[::1]:0", 2, true);
    let mut queued: Vec<TcpStream> = (0..3)
        .map(|_| ns.enter(move || TcpStream::connect(full_addr).unwrap()))
        .collect();
    drop(queued.pop());
    // A dual-stack listener: an IPv4 peer arrives as `::ffff:127.0.0.1`, an IPv6 one as `::1`.
    let (dual, dual_addr) = listener_at(&ns, "[::]:0", 16, false);
    let port = dual_addr.port();
    let mut v4 = ns.enter(move || TcpStream::connect(("127.0.0.1", port)).unwrap());
    let (s4, peer4) = dual.accept().unwrap();
    let mut v6 = ns.enter(move || TcpStream::connect(("::1", port)).unwrap());
    let (s6, _) = dual.accept().unwrap();
    assert_eq!(
        peer4.as_socket().unwrap().to_string(),
        format!("[::ffff:127.0.0.1]:{}", v4.local_addr().unwrap().port())
    );
    // Unread data on both server sides (Recv-Q), and a half-closed v4 client (CLOSE_WAIT on
    // the v4-mapped server side, FIN_WAIT2 on the client).
    v4.write_all(&[1_u8; 3000]).unwrap();
    v6.write_all(&[2_u8; 5000]).unwrap();
    v4.shutdown(std::net::Shutdown::Write).unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let snap = snapshot(&[]);
    let rows = compare_with_ss(&ns, &snap);
    let states: Vec<&str> = rows.iter().map(|r| r.state.as_str()).collect();
    for want in ["LISTEN", "ESTAB", "CLOSE-WAIT", "FIN-WAIT-2"] {
        assert!(states.contains(&want), "{want} in {states:?}");
    }
    let l = rows
        .iter()
        .find(|r| r.state == "LISTEN" && r.local == full_addr.to_string())
        .expect("the [::1] listener");
    assert_eq!((l.recv_q, l.send_q), (3, 2), "ground truth {l:?}");
    let mapped = rows
        .iter()
        .find(|r| r.local == format!("[::ffff:127.0.0.1]:{port}"))
        .expect("ss shows the v4-mapped server side");
    assert_eq!(mapped.state, "CLOSE-WAIT");
    assert_eq!(mapped.recv_q, 3001, "3000 bytes and the FIN unread");
    assert_eq!(
        mapped.owner(),
        Some((u64::from(std::process::id()), i64::from(s4.as_raw_fd())))
    );
    let unaccepted = rows
        .iter()
        .find(|r| r.state == "CLOSE-WAIT" && r.local == full_addr.to_string())
        .expect("never-accepted CLOSE_WAIT on [::1]");
    assert_eq!(unaccepted.ino(), 0);
    text_has(&rows, port);
    text_has(&rows, full_addr.port());
    drop((s4, s6, queued));
}

#[test]
fn v6_link_between_namespaces_and_a_blackholed_peer() {
    if !privileged() {
        return;
    }
    let link = Link::new("v6l");
    link.a.sysctl("net.ipv4.tcp_retries2", "8");
    let d = Daemon::start(&["daemon.sweep_interval_ms=300"]);
    let (l, addr) = listener_at(&link.b, &format!("[{LINK_V6_B}]:0"), 16, true);
    let mut client = link
        .a
        .enter(move || TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap());
    let (server, _) = l.accept().unwrap();
    let caddr = client.local_addr().unwrap();
    client.write_all(b"hello").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let snap = snapshot(&[]);
    let rows_a = compare_with_ss(&link.a, &snap);
    let rows_b = compare_with_ss(&link.b, &snap);
    assert!(
        rows_a
            .iter()
            .any(|r| r.state == "ESTAB" && r.local == caddr.to_string())
    );
    assert!(
        rows_b
            .iter()
            .any(|r| r.state == "ESTAB" && r.peer == caddr.to_string() && r.recv_q == 5)
    );
    text_has(&rows_a, addr.port());

    // The peer vanishes: its namespace drops the connection's packets on input.
    link.b.blackhole_port(addr.port());
    client.write_all(&[9_u8; 1000]).unwrap();
    let wrote = Instant::now();
    // Three RTO expiries: 1.4 s at a 200 ms RTO, but 21 s when the handshake's SYN was
    // retransmitted (the kernel then falls back to a 3 s RTO; seen on a fresh veth link).
    let f = wait_for(Duration::from_secs(45), || {
        d.get_json("/api/v1/findings?kind=retransmit_chain")["open"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["subject"]["local"] == caddr.to_string())
            .cloned()
    })
    .expect("retransmit_chain for the blackholed IPv6 peer");
    let since_write = wrote.elapsed().as_secs_f64();
    let row = ss_rows(&link.a)
        .into_iter()
        .find(|r| r.local == caddr.to_string())
        .unwrap();
    eprintln!("finding: {f}\nss: {row:?}");
    let ev = |k: &str| {
        f["evidence"][k]
            .as_f64()
            .unwrap_or_else(|| panic!("no {k}: {f}"))
    };
    assert_eq!(f["cause"], "peer_unreachable");
    assert_eq!(f["subject"]["remote"], addr.to_string());
    assert_eq!(
        f["subject"]["owner"]["pid"].as_u64(),
        Some(u64::from(std::process::id()))
    );
    assert!((ev("tcp_retries2") - 8.0).abs() < f64::EPSILON);
    let ss_backoff: f64 = row
        .field("backoff")
        .and_then(|b| b.parse().ok())
        .unwrap_or_else(|| panic!("ss shows no backoff: {row:?}"));
    let ss_rto: f64 = row
        .field("rto")
        .and_then(|b| b.parse().ok())
        .unwrap_or_else(|| panic!("ss shows no rto: {row:?}"));
    // The kernel gives up at the first RTO expiry at or after the limit: tcp_retries2 = 8
    // with TCP_RTO_MIN gives ((2 << 8) - 1) * 0.2 s = 102.2 s; the expiries come at
    // base * (2^(k+1) - 2) after the first RTO retransmission (base: ss's RTO before backoff).
    let base = ss_rto / 1000.0 / 2_f64.powf(ss_backoff);
    let limit = 102.2;
    let mut expiry = 0.0;
    let mut k = 1;
    while expiry < limit {
        expiry = base * (2_f64.powi(k + 1) - 2.0);
        k += 1;
    }
    assert!(
        (ev("give_up_after_seconds") - expiry).abs() < 0.05,
        "give-up time {} vs {expiry:.2} s (RTO base {base} s from ss): {f}",
        ev("give_up_after_seconds")
    );
    let left = ev("gives_up_in_seconds");
    assert!(
        left <= expiry && left >= expiry - since_write - 0.5,
        "gives up in {left} s, {since_write:.1} s after the write"
    );
    assert!((ev("send_q_bytes") - 1000.0).abs() < 0.5, "{f}");
    assert_eq!(row.send_q, 1000, "ss: nothing acknowledged");
    assert!(ev("chain") >= 3.0);
    assert!(
        ev("backoff") <= ss_backoff,
        "evidence backoff {} not ahead of ss {ss_backoff}",
        ev("backoff")
    );
    drop(server);
}
