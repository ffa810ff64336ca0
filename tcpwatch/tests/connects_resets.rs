//! Privileged end-to-end tests of how connections fail and end, in namespaces the tests
//! create, against a real daemon:
//! - issue 13: failing connects (blackholed address, closed port), a client pool that reuses
//!   keep-alive connections across a server restart, and client resets from one server;
//! - the give-up projection of an orphaned socket: a client writes data to a peer that vanished
//!   (every packet dropped) and calls `close()`; its socket lives on in `FIN_WAIT1` with no
//!   process (`SOCK_DEAD`), and the kernel gives up on it after
//!   `net.ipv4.tcp_orphan_retries` retransmissions, not `tcp_retries2`. The
//!   `retransmit_chain` finding must project that, and the kernel's abort (the socket leaves
//!   `ss`) must land within 10 % of the projection.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]
mod support;

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;
use socket2::{Domain, Socket, Type};
use support::{Daemon, Netns, connect, exchange_once, listener, nstat, privileged, ss, wait_for};
use tcpwatch_core::model::mono_now;

fn ev(f: &Value, key: &str) -> f64 {
    f["evidence"][key]
        .as_f64()
        .unwrap_or_else(|| panic!("no evidence {key}: {f:#}"))
}

#[test]
fn connect_failing_names_blackhole_give_up_and_refused_port() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("connfail");
    ns.sysctl("net.ipv4.tcp_syn_retries", "2");
    ns.exec("ip", &["addr", "add", "10.77.0.1/32", "dev", "lo"]);
    let rules = "add table inet twt\n\
                 add chain inet twt in { type filter hook input priority 0; }\n\
                 add rule inet twt in ip daddr 10.77.0.1 tcp dport 80 drop\n";
    std::fs::write(format!("/tmp/{}.nft", ns.name), rules).unwrap();
    ns.exec("nft", &["-f", &format!("/tmp/{}.nft", ns.name)]);
    let _ = std::fs::remove_file(format!("/tmp/{}.nft", ns.name));
    let linear: Option<u32> = ns
        .exec("cat", &["/proc/sys/net/ipv4/tcp_syn_linear_timeouts"])
        .trim()
        .parse()
        .ok();
    let d = Daemon::start(&["daemon.sweep_interval_ms=500"]);
    let pid = f64::from(std::process::id());

    // Blackholed address: the SYN is retransmitted until the kernel gives up.
    let black: SocketAddr = "10.77.0.1:80".parse().unwrap();
    let ns_name = ns.name.clone();
    let dialer = std::thread::spawn(move || {
        let path = format!("/run/netns/{ns_name}");
        let f = std::fs::File::open(&path).unwrap();
        // SAFETY: valid fd; affects only this thread.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0);
        let comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
        let t0 = Instant::now();
        let err = TcpStream::connect(black).unwrap_err();
        (err.kind(), t0.elapsed(), comm.trim().to_owned())
    });
    let t0 = Instant::now();
    let f = wait_for(Duration::from_secs(6), || {
        d.open_finding_to("connect_failing", &black)
    })
    .expect("connect_failing for the blackholed address while its SYN is retried");
    let opened_after = t0.elapsed();
    assert_eq!(f["cause"], "timed_out", "{f:#}");
    assert_eq!(f["subject"]["owner"]["pid"].as_f64(), Some(pid), "{f:#}");
    assert!(ev(&f, "syn_retransmits_now") >= 2.0, "{f:#}");
    let give_up = ev(&f, "give_up_after_seconds");
    let diag = f["diagnosis"].as_str().unwrap();
    assert!(diag.contains("10.77.0.1:80"), "{diag}");
    assert!(diag.contains("tcp_syn_retries 2"), "{diag}");
    let (kind, took, comm) = dialer.join().unwrap();
    // The kernel reports the connecting thread's name (what `ps -L` shows).
    assert_eq!(f["subject"]["owner"]["comm"], comm.as_str(), "{f:#}");
    assert_eq!(kind, ErrorKind::TimedOut);
    // Ground truth: the kernel gave up when the finding said it would.
    assert!(
        (took.as_secs_f64() - give_up).abs() < 1.5,
        "connect() gave up after {took:?}, finding said {give_up} s (linear timeouts {linear:?})"
    );
    eprintln!("blackhole: opened after {opened_after:?}, gave up after {took:?}: {diag}");
    // After the give-up the timed-out connect is counted.
    let f = wait_for(Duration::from_secs(5), || {
        d.open_finding_to("connect_failing", &black)
            .filter(|f| f["evidence"]["connects_timed_out"].as_f64() >= Some(1.0))
    })
    .expect("the timed-out connect is counted");
    assert_eq!(f["severity"], "critical", "no connect succeeded: {f:#}");

    // Closed port: refused.
    let closed: SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .unwrap();
    let kinds: Vec<ErrorKind> = ns.enter(move || {
        (0..3)
            .map(|_| TcpStream::connect(closed).unwrap_err().kind())
            .collect()
    });
    assert_eq!(kinds, vec![ErrorKind::ConnectionRefused; 3]);
    let f = wait_for(Duration::from_secs(5), || {
        d.open_finding_to("connect_failing", &closed)
    })
    .expect("connect_failing for the closed port");
    assert_eq!(f["cause"], "refused", "{f:#}");
    assert!((ev(&f, "connects_refused") - 3.0).abs() < 1e-9, "{f:#}");
    assert_eq!(f["subject"]["owner"]["pid"].as_f64(), Some(pid), "{f:#}");
}

/// `TcpOutRsts` of the namespace (`Tcp: OutRsts` of its `/proc/net/snmp`).
fn out_rsts(ns: &Netns) -> u64 {
    nstat(ns, "TcpOutRsts")
}

/// A listener on `addr` in `ns` (`SO_REUSEADDR`, as servers do to restart on their port).
fn server(ns: &Netns, addr: SocketAddr) -> Socket {
    ns.enter(move || {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_reuse_address(true).unwrap();
        s.bind(&addr.into()).unwrap();
        s.listen(64).unwrap();
        s
    })
}

#[test]
fn pool_reusing_connections_across_a_server_restart_is_named() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("restart");
    let d = Daemon::start(&["daemon.sweep_interval_ms=500"]);
    let addr: SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .unwrap();
    let l = server(&ns, addr);
    // The client's pool: 8 keep-alive connections, each used once.
    let mut pool: Vec<TcpStream> = ns.enter(move || {
        (0..8)
            .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap())
            .collect()
    });
    let mut accepted: Vec<TcpStream> = (0..8).map(|_| l.accept().unwrap().0.into()).collect();
    for (c, s) in pool.iter_mut().zip(accepted.iter_mut()) {
        exchange_once(c, s, b"GET / HTTP/1.1\r\n\r\n");
    }
    // Restart: the old instance exits (its sockets close), a new one listens on the port.
    drop(accepted);
    drop(l);
    std::thread::sleep(Duration::from_millis(300));
    let _l2 = server(&ns, addr);
    let restarted = Instant::now();
    // The pool reuses its idle connections: every request draws a reset (ground truth: the
    // namespace's OutRsts, and the next write fails). The first read sees the old FIN (EOF),
    // as fasthttp-style clients do ("server closed connection before returning the first
    // response byte").
    let rsts_before = out_rsts(&ns);
    let mut resets = 0;
    for c in &mut pool {
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut buf = [0_u8; 64];
        let _ = c.read(&mut buf);
        std::thread::sleep(Duration::from_millis(20));
        match c.write_all(b"x") {
            Err(e) if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => {
                resets += 1;
            }
            other => panic!("expected the connection to be reset, got {other:?}"),
        }
    }
    assert_eq!(out_rsts(&ns) - rsts_before, 8, "RSTs sent in the namespace");
    assert_eq!(resets, 8);
    let f = wait_for(Duration::from_secs(10), || {
        d.open_finding_to("stale_connection_reuse", &addr)
            .filter(|f| f["evidence"]["stale_requests"].as_f64() == Some(8.0))
    })
    .expect("stale_connection_reuse for the pool");
    eprintln!("found after {:?}: {}", restarted.elapsed(), f["diagnosis"]);
    assert_eq!(f["cause"], "server_restarted", "{f:#}");
    assert!((ev(&f, "stale_requests") - 8.0).abs() < 1e-9, "{f:#}");
    assert_eq!(
        f["subject"]["owner"]["pid"].as_f64(),
        Some(f64::from(std::process::id()))
    );
    let diag = f["diagnosis"].as_str().unwrap();
    assert!(diag.contains(&format!("connections to {addr}")), "{diag}");
    assert!(
        diag.contains(&format!("its listener {addr} was re-created")),
        "{diag}"
    );
    // The old instance's FIN-WAIT-2 orphans (timewait minisockets) sent the resets, with the
    // kernel's reason where it has one (Linux 6.10+).
    let tw = d.metric("tcpwatch_closed_connection_resets_sent_total{socket=\"timewait\"}");
    assert!(tw >= 8.0, "timewait resets: {tw}");
    if std::fs::read_to_string("/sys/kernel/tracing/events/tcp/tcp_send_reset/format")
        .is_ok_and(|f| f.contains("reason"))
    {
        let n = d.metric("tcpwatch_resets_sent_by_reason_total{reason=\"TCP_TIMEWAIT_SOCKET\"}");
        assert!(n >= 8.0, "TCP_TIMEWAIT_SOCKET resets: {n}");
    }
}

#[test]
fn client_resets_from_one_server_form_a_burst_keyed_by_the_remote_endpoint() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("cliresets");
    let d = Daemon::start(&["daemon.sweep_interval_ms=500"]);
    let addr: SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .unwrap();
    let l = server(&ns, addr);
    // 12 connections from 12 ephemeral ports; the server aborts each one (SO_LINGER 0).
    let clients: Vec<TcpStream> = ns.enter(move || {
        (0..12)
            .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap())
            .collect()
    });
    for _ in 0..12 {
        let (s, _) = l.accept().unwrap();
        s.set_linger(Some(Duration::ZERO)).unwrap();
        drop(s);
    }
    let mut reset = 0;
    for mut c in clients {
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0_u8; 1];
        if let Err(e) = c.read(&mut buf) {
            assert_eq!(e.kind(), ErrorKind::ConnectionReset);
            reset += 1;
        }
    }
    assert_eq!(reset, 12, "ground truth: every client connection was reset");
    let f = wait_for(Duration::from_secs(5), || {
        d.get_json("/api/v1/findings")["open"]
            .as_array()?
            .iter()
            .find(|f| {
                f["kind"] == "reset_burst"
                    && f["subject"]["type"] == "peer"
                    && f["subject"]["remote"] == addr.to_string()
            })
            .cloned()
    })
    .expect("reset_burst keyed by the remote endpoint");
    assert_eq!(f["cause"], "received");
    assert!((ev(&f, "resets_received") - 12.0).abs() < 1e-9, "{f:#}");
    assert_eq!(
        f["subject"]["owner"]["pid"].as_f64(),
        Some(f64::from(std::process::id()))
    );
}

const ORPHAN_RETRIES: u32 = 3;

#[test]
fn orphaned_fin_wait1_gives_up_after_tcp_orphan_retries_as_projected() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("orphan");
    ns.sysctl("net.ipv4.tcp_orphan_retries", &ORPHAN_RETRIES.to_string());
    // tcp_retries2 stays at its default (15: ~15 minutes): a projection from it is far off.
    let d = Daemon::start(&["daemon.sweep_interval_ms=200"]);
    let (l, addr) = listener(&ns, 16);
    let mut client = connect(&ns, addr);
    let (_server, _) = l.accept().unwrap();
    let local = client.local_addr().unwrap();
    ns.blackhole_port(addr.port());
    client.write_all(&[7_u8; 4096]).unwrap();
    let closed_at = mono_now();
    drop(client);

    // Ground truth: an orphan (no inode) in FIN_WAIT1.
    let row = ss(&ns).into_iter().find(|r| r.local == local).unwrap();
    assert_eq!(row.state, "FIN-WAIT-1", "{row:?}");
    assert_eq!(row.field("ino").as_deref(), Some("0"), "{row:?}");

    // The first projection the daemon makes, and its evaluation time (`updated_at` is
    // refreshed at every evaluation; both are CLOCK_MONOTONIC).
    let first: Value = wait_for(Duration::from_secs(15), || {
        d.get_json("/api/v1/findings?kind=retransmit_chain")["open"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|f| f["subject"]["local"] == local.to_string())
                    .cloned()
            })
    })
    .expect("no retransmit_chain finding for the orphaned socket");
    let ev = &first["evidence"];
    let evaluated = first["updated_at"].as_u64().unwrap();
    let gives_up_in = ev["gives_up_in_seconds"].as_f64().unwrap();
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a few seconds in ns"
    )]
    let projected = evaluated + (gives_up_in * 1e9) as u64;
    eprintln!("first projection: {first}");
    assert_eq!(first["subject"]["state"], "FIN_WAIT1", "{first}");
    // The kernel's abort: the socket leaves `ss` (bounded wait).
    let aborted_at = wait_for(Duration::from_mins(1), || {
        (!ss(&ns).iter().any(|r| r.local == local)).then(mono_now)
    })
    .expect("the orphaned socket was not aborted within 60 s");
    #[expect(clippy::cast_precision_loss, reason = "seconds for display and ratios")]
    let secs = |ns: u64| ns as f64 / 1e9;
    let horizon = secs(projected.saturating_sub(closed_at));
    let error = secs(aborted_at.abs_diff(projected));
    eprintln!(
        "close() -> abort {:.3}s, projected {horizon:.3}s, error {error:.3}s",
        secs(aborted_at - closed_at)
    );
    assert!(
        error <= 0.10 * horizon,
        "the kernel gave up {:.3}s after close(), the projection said {horizon:.3}s: off by \
         {error:.3}s (more than 10 %)",
        secs(aborted_at - closed_at)
    );
    assert_eq!(ev["orphan"].as_f64(), Some(1.0), "{first}");
    assert_eq!(
        ev["tcp_orphan_retries"].as_f64(),
        Some(f64::from(ORPHAN_RETRIES)),
        "{first}"
    );
    let diagnosis = first["diagnosis"].as_str().unwrap();
    assert!(
        diagnosis.contains(&format!("tcp_orphan_retries={ORPHAN_RETRIES}")),
        "{diagnosis}"
    );
}
