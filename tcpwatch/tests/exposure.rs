//! Privileged test: the exposure audit (issue 15, `docs/exposure.md`).
//!
//! Sockets made in a namespace of the test, each set up as the issue lists (`TCP_USER_TIMEOUT`
//! 5 s; keepalive 10/5/3; neither, idle; neither with data in flight; plus `TCP_USER_TIMEOUT`
//! against keepalive). The audit's figures must match the kernel's formulas, `ss -o` (the
//! keepalive and retransmission timers) and the kernel itself: with the peer gone, the
//! keepalive sockets are reset when the audit said. Changing the namespace's `tcp_retries2`
//! changes the in-flight figure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]
mod support;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd as _;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Daemon, Netns, connect, listener, parse_ss, privileged, wait_for};

fn setsockopt(s: &TcpStream, level: libc::c_int, opt: libc::c_int, v: libc::c_int) {
    // SAFETY: valid fd, a c_int value and its size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            opt,
            (&raw const v).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap(),
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt {opt}: {}",
        std::io::Error::last_os_error()
    );
}

fn keepalive(s: &TcpStream, idle: i32, intvl: i32, cnt: i32) {
    setsockopt(s, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    setsockopt(s, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, idle);
    setsockopt(s, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, intvl);
    setsockopt(s, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, cnt);
}

/// The audit's entry for the socket at `local` (`exposure` of one of `groups[].sockets`), the
/// audit narrowed to the test's namespace (the host may hold more groups than are listed).
fn audited(d: &Daemon, ns: &Netns, local: SocketAddr) -> Option<(Value, Value)> {
    let v = d.get_json(&format!("/api/v1/exposure?netns={}", ns.inode));
    for g in v["groups"].as_array()? {
        for s in g["sockets"].as_array().into_iter().flatten() {
            if s["local"] == local.to_string() {
                return Some((s["exposure"].clone(), g.clone()));
            }
        }
    }
    None
}

/// `ss -tanoiH` in the namespace: the row of `local`.
fn ss_o(ns: &Netns, local: SocketAddr) -> support::SsRow {
    parse_ss(&ns.exec("ss", &["-tanoiH"]))
        .into_iter()
        .find(|r| r.local == local)
        .unwrap_or_else(|| panic!("{local} not in ss"))
}

/// `timer:(keepalive,9.532sec,0)` -> ("keepalive", 9.532 s).
fn ss_timer(row: &support::SsRow) -> Option<(String, f64)> {
    let t = row.field("timer")?;
    let inner = t.trim_start_matches('(').trim_end_matches(')');
    let mut parts = inner.split(',');
    let kind = parts.next()?.to_owned();
    let left = parts.next()?;
    let secs = if let Some(ms) = left.strip_suffix("ms") {
        // `ss` prints seconds with an "ms" suffix for values with a fraction (machine notes).
        ms.parse::<f64>().ok()?
    } else if let Some(s) = left.strip_suffix("sec") {
        s.parse::<f64>().ok()?
    } else if let Some(m) = left.strip_suffix("min") {
        m.parse::<f64>().ok()? * 60.0
    } else {
        return None;
    };
    Some((kind, secs))
}

/// Blocks until the kernel resets `s` (read fails with ETIMEDOUT); returns when.
fn wait_reset(mut s: TcpStream, limit: Duration) -> std::thread::JoinHandle<Option<Instant>> {
    std::thread::spawn(move || {
        s.set_read_timeout(Some(limit)).unwrap();
        let mut b = [0_u8; 16];
        match s.read(&mut b) {
            Err(e) if e.raw_os_error() == Some(libc::ETIMEDOUT) => Some(Instant::now()),
            other => {
                eprintln!("read ended with {other:?}");
                None
            }
        }
    })
}

#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, step by step")]
fn audit_matches_the_kernels_formulas_ss_and_the_kernel() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("expo");
    ns.sysctl("net.ipv4.tcp_retries2", "15");
    let d = Daemon::start(&["daemon.sweep_interval_ms=200"]);
    let (idle_l, idle_addr) = listener(&ns, 16);
    let (dead_l, dead_addr) = listener(&ns, 16);

    // The idle sockets; connect() is the last packet each receives (the SYN-ACK).
    let ut = connect(&ns, idle_addr);
    setsockopt(&ut, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 5000);
    let ka = connect(&ns, idle_addr);
    keepalive(&ka, 10, 5, 3);
    let keepalive_started = Instant::now();
    let ka_ut = connect(&ns, idle_addr);
    keepalive(&ka_ut, 10, 5, 3);
    setsockopt(&ka_ut, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 5000);
    let both_started = Instant::now();
    let neither = connect(&ns, idle_addr);
    let _servers: Vec<_> = (0..4).map(|_| idle_l.accept().unwrap().0).collect();
    // Neither, with data in flight: the peer vanished (every packet dropped).
    let mut flight = connect(&ns, dead_addr);
    let _dead_server = dead_l.accept().unwrap();
    ns.blackhole_port(dead_addr.port());
    flight.write_all(&[7_u8; 1000]).unwrap();
    let [ut_l, ka_l, ka_ut_l, neither_l, flight_l] =
        [&ut, &ka, &ka_ut, &neither, &flight].map(|s| s.local_addr().unwrap());

    // Each socket's figures, once a sweep after the last setsockopt() is in (the one that saw
    // the in-flight socket's Send-Q; the first records come from connect() events).
    let all = wait_for(Duration::from_secs(10), || {
        let got: Vec<(Value, Value)> = [ut_l, ka_l, ka_ut_l, neither_l, flight_l]
            .iter()
            .map(|l| audited(&d, &ns, *l))
            .collect::<Option<_>>()?;
        (got[4].0["in_flight_now"] == true && got[0].0["user_timeout_ms"] != 0).then_some(got)
    })
    .unwrap_or_else(|| {
        eprintln!("{}", ns.exec("ss", &["-tanoie"]));
        panic!("the audit did not list the five sockets within 10 s")
    });
    for (l, (e, _)) in [ut_l, ka_l, ka_ut_l, neither_l, flight_l].iter().zip(&all) {
        eprintln!("{l}: {e}");
    }
    let [ut_e, ka_e, ka_ut_e, neither_e, flight_e] = [0, 1, 2, 3, 4].map(|i| all[i].0.clone());
    assert!(
        keepalive_started.elapsed() < Duration::from_secs(8),
        "too slow to test the keepalive before its first probe"
    );

    // TCP_USER_TIMEOUT 5 s, idle, no keepalive: data in flight would give up after 5 s, but
    // idle it never learns (TCP_USER_TIMEOUT does not bound an idle socket).
    assert_eq!(ut_e["user_timeout_ms"], 5000);
    assert_eq!(ut_e["in_flight_ms"], 5000);
    assert_eq!(ut_e["worst_case_ms"], Value::Null);
    assert_eq!(ut_e["bound"], "nothing");
    // Keepalive 10/5/3: 10 + 3 x 5 = 25 s.
    assert_eq!(ka_e["keepalive"]["time_ms"], 10_000);
    assert_eq!(ka_e["keepalive"]["intvl_ms"], 5_000);
    assert_eq!(ka_e["keepalive"]["probes"], 3);
    assert_eq!(ka_e["worst_case_ms"], 25_000);
    assert_eq!(ka_e["bound"], "keepalive");
    // Keepalive 10/5/3 with TCP_USER_TIMEOUT 5 s: reset at the second expiry, 15 s.
    assert_eq!(ka_ut_e["worst_case_ms"], 15_000);
    assert_eq!(ka_ut_e["bound"], "keepalive_user_timeout");
    // Neither, idle: never; in flight it would wait the tcp_retries2=15 figure.
    assert_eq!(neither_e["worst_case_ms"], Value::Null);
    assert_eq!(neither_e["in_flight_ms"], 924_600);
    assert_eq!(neither_e["keepalive"], Value::Null);
    // Neither, data in flight: 924.6 s.
    assert_eq!(flight_e["worst_case_ms"], 924_600);
    assert_eq!(flight_e["bound"], "retries2");
    assert_eq!(flight_e["tcp_retries2"], 15);

    // The group of the idle sockets (this process to the idle listener): four connections,
    // two exposed above 300 s (both never); the diagnosis says what to set.
    let g = &all[0].1;
    assert_eq!(g["remote"], idle_addr.to_string());
    assert_eq!(g["pid"], std::process::id());
    assert_eq!(g["connections"], 4, "{g}");
    assert_eq!(g["never"], 2, "{g}");
    assert_eq!(g["exposed"], 2, "{g}");
    let diag = g["diagnosis"].as_str().unwrap();
    assert!(diag.contains("2 idle with no keepalive"), "{diag}");
    assert!(diag.contains("does not bound an idle connection"), "{diag}");

    // Ground truth from `ss -o`: the keepalive timer runs (first probe <= 10 s away) on the
    // keepalive sockets only; the in-flight socket's retransmission timer is on.
    for l in [ka_l, ka_ut_l] {
        let row = ss_o(&ns, l);
        let (kind, left) = ss_timer(&row).unwrap_or_else(|| panic!("no timer: {row:?}"));
        assert_eq!(kind, "keepalive", "{row:?}");
        assert!(left <= 10.0 && left > 0.0, "{row:?}");
    }
    for l in [ut_l, neither_l] {
        let row = ss_o(&ns, l);
        assert!(ss_timer(&row).is_none(), "{row:?}");
    }
    let row = ss_o(&ns, flight_l);
    assert_eq!(ss_timer(&row).unwrap().0, "on", "{row:?}");
    assert_eq!(row.send_q, 1000, "{row:?}");

    // The kernel itself: the idle listener's peer vanishes; the keepalive sockets are reset
    // when the audit said (from their last packet received: connect()), within timer slack.
    ns.blackhole_port(idle_addr.port());
    let ka_done = wait_reset(ka, Duration::from_secs(40));
    let ka_ut_done = wait_reset(ka_ut, Duration::from_secs(40));

    // Meanwhile: tcp_retries2 of the namespace changes the in-flight figure (model timeout of
    // 8 retries: 511 x 200 ms = 102.2 s; a smaller one would let the kernel abort the socket
    // under the test's feet).
    ns.sysctl("net.ipv4.tcp_retries2", "8");
    let changed = wait_for(Duration::from_secs(10), || {
        let (e, _) = audited(&d, &ns, flight_l)?;
        (e["tcp_retries2"] == 8).then_some(e)
    })
    .expect("the audit did not pick up tcp_retries2=8 within 10 s");
    assert_eq!(changed["worst_case_ms"], 102_200, "{changed}");
    let (n, _) = audited(&d, &ns, neither_l).unwrap();
    assert_eq!(n["in_flight_ms"], 102_200, "{n}");

    for (name, done, at, expected) in [
        ("keepalive 10/5/3", ka_done, keepalive_started, 25.0),
        (
            "keepalive 10/5/3 + TCP_USER_TIMEOUT 5 s",
            ka_ut_done,
            both_started,
            15.0,
        ),
    ] {
        let reset = done
            .join()
            .unwrap()
            .unwrap_or_else(|| panic!("{name}: not reset by the kernel"));
        let after = reset.duration_since(at).as_secs_f64();
        eprintln!("{name}: reset {after:.2}s after connect, audit said {expected}s");
        assert!(
            after >= expected - 0.5 && after <= expected + 2.5,
            "{name}: the kernel reset it {after:.2}s after its last packet, the audit said \
             {expected}s"
        );
    }

    // `tcpwatch snapshot --exposure --json`: the same audit from a one-shot sweep (narrowed
    // to the test's ports: the host may hold more groups than are listed).
    let in_snap = |local: SocketAddr, port: u16| {
        let snap = support::snapshot(&["--exposure", "--port", &port.to_string()]);
        assert_eq!(snap["threshold_seconds"], 300);
        snap["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["sockets"].as_array().unwrap())
            .find(|s| s["local"] == local.to_string())
            .map_or_else(
                || panic!("{local} not in the snapshot's audit"),
                |s| s["exposure"].clone(),
            )
    };
    assert_eq!(
        in_snap(flight_l, dead_addr.port())["worst_case_ms"],
        102_200
    );
    assert_eq!(
        in_snap(neither_l, idle_addr.port())["worst_case_ms"],
        Value::Null
    );
    drop((ut, neither, flight));
}
