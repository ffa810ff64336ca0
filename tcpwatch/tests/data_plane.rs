//! Privileged integration tests of the data plane: the real programs, real sockets in
//! namespaces the tests create, and `ss` as ground truth.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]
mod support;

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd as _;
use std::time::{Duration, Instant};

use serde_json::Value;
use socket2::{Domain, Socket, Type};
use support::{
    Daemon, Netns, connect, conns_in, fill_send_buffer, find, listener, privileged, snapshot, ss,
    wait_for,
};

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn full_accept_queue_and_unaccepted_close_wait() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("backlog");
    let (_l, addr) = listener(&ns, 2);
    // A listener that never accepts holds limit+1 connections.
    let mut clients: Vec<TcpStream> = (0..3).map(|_| connect(&ns, addr)).collect();
    // One client gives up: its never-accepted server side goes to CLOSE_WAIT with no owner.
    let gone = clients.pop().unwrap();
    let gone_addr = gone.local_addr().unwrap();
    drop(gone);
    std::thread::sleep(Duration::from_millis(200));

    let truth = ss(&ns);
    let l_ss = truth
        .iter()
        .find(|r| r.state == "LISTEN" && r.local == addr)
        .unwrap();
    let cw_ss = truth
        .iter()
        .find(|r| r.state == "CLOSE-WAIT" && r.local == addr)
        .unwrap();
    assert_eq!((l_ss.recv_q, l_ss.send_q), (3, 2), "ground truth: {l_ss:?}");

    let snap = snapshot(&[]);
    let conns = conns_in(&snap, ns.inode);
    let l = find(&conns, "LISTEN", &addr, None).expect("listener reported");
    assert_eq!(u(&l["queues"]["accept_queue"]), u64::from(l_ss.recv_q));
    assert_eq!(u(&l["queues"]["accept_limit"]), u64::from(l_ss.send_q));
    let cw = find(&conns, "CLOSE_WAIT", &addr, Some(&gone_addr)).expect("CLOSE_WAIT reported");
    assert_eq!(u(&cw["inode"]), 0, "never accepted: no struct socket");
    assert!(cw.get("owner").is_none_or(Value::is_null), "no owner: {cw}");
    assert_eq!(u(&cw["queues"]["recv_q"]), u64::from(cw_ss.recv_q));
    drop(clients);
}

#[test]
fn close_wait_owned_by_this_process() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("cwown");
    let (l, addr) = listener(&ns, 16);
    let client = connect(&ns, addr);
    let (server, peer) = l.accept().unwrap();
    let server_fd = server.as_raw_fd();
    drop(client);
    std::thread::sleep(Duration::from_millis(100));
    let truth = ss(&ns);
    let cw_ss = truth
        .iter()
        .find(|r| r.state == "CLOSE-WAIT")
        .expect("ss shows CLOSE-WAIT");

    let snap = snapshot(&[]);
    let conns = conns_in(&snap, ns.inode);
    let peer = peer.as_socket().unwrap();
    let cw = find(&conns, "CLOSE_WAIT", &addr, Some(&peer)).expect("CLOSE_WAIT reported");
    assert_eq!(u(&cw["owner"]["pid"]), u64::from(std::process::id()));
    assert_eq!(cw["owner"]["fd"].as_i64(), Some(i64::from(server_fd)));
    assert_ne!(u(&cw["inode"]), 0);
    assert_eq!(
        u(&cw["queues"]["recv_q"]),
        u64::from(cw_ss.recv_q),
        "unread FIN counts 1"
    );
    drop(server);
}

#[test]
fn peer_that_never_reads_fills_send_q() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("noread");
    let (l, addr) = listener(&ns, 16);
    let mut client = connect(&ns, addr);
    let (_server, _) = l.accept().unwrap();
    let written = fill_send_buffer(&mut client).expect("write");
    assert!(written > 0);
    let caddr = client.local_addr().unwrap();
    // Ground truth must bracket the snapshot: a zero-window probe can still move the queues,
    // so compare only when `ss` shows the same values before and after it (bounded retries).
    let q = |rows: &[support::SsRow]| {
        let c = rows.iter().find(|r| r.local == caddr)?.clone();
        let s = rows
            .iter()
            .find(|r| r.local == addr && r.state == "ESTAB")?
            .clone();
        Some((c, s))
    };
    let mut compared = None;
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(300));
        let before = q(&ss(&ns)).expect("ss lists both ends");
        let snap = snapshot(&[]);
        let after = q(&ss(&ns)).expect("ss lists both ends");
        if (before.0.send_q, before.1.recv_q) == (after.0.send_q, after.1.recv_q) {
            compared = Some((snap, after));
            break;
        }
    }
    let (snap, (c_ss, s_ss)) = compared.expect("queues settled around a snapshot");
    assert!(
        c_ss.send_q > 0 && s_ss.recv_q > 0,
        "ground truth: {c_ss:?} {s_ss:?}"
    );
    let conns = conns_in(&snap, ns.inode);
    let c = find(&conns, "ESTABLISHED", &caddr, Some(&addr)).expect("client reported");
    let s = find(&conns, "ESTABLISHED", &addr, Some(&caddr)).expect("server reported");
    assert_eq!(u(&c["queues"]["send_q"]), u64::from(c_ss.send_q));
    assert_eq!(u(&s["queues"]["recv_q"]), u64::from(s_ss.recv_q));
    let q = &c["queues"];
    assert_eq!(u(&q["send_q"]), u(&q["unacked"]) + u(&q["unsent"]));
    if let Some(w) = c_ss.field("snd_wnd") {
        assert_eq!(
            c["tcp"]["peer_window"].to_string(),
            w,
            "peer window as ss sees it"
        );
    }
    let ino: u64 = c_ss
        .field("ino")
        .and_then(|i| i.parse().ok())
        .expect("ss -e shows ino");
    assert_eq!(u(&c["inode"]), ino, "socket inode as ss sees it");
}

#[test]
fn blackholed_peer_grows_retransmit_chain_and_backoff() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("blackhole");
    let (l, addr) = listener(&ns, 16);
    let mut client = connect(&ns, addr);
    let (_server, _) = l.accept().unwrap();
    // A daemon watching from before the first retransmission sees the chain on its tracepoint.
    let d = Daemon::start(&["daemon.sweep_interval_ms=200"]);
    ns.blackhole_port(addr.port());
    client.write_all(&[1_u8; 1000]).unwrap();
    let caddr = client.local_addr().unwrap();
    let chain_of = |snap: &Value| {
        let conns = conns_in(snap, ns.inode);
        let c = find(&conns, "ESTABLISHED", &caddr, Some(&addr))
            .expect("client")
            .clone();
        (
            u(&c["retrans"]["chain"]),
            u(&c["tcp"]["backoff"]),
            u(&c["queues"]["send_q"]),
            c,
        )
    };
    std::thread::sleep(Duration::from_millis(1500));
    let (chain1, backoff1, sendq1, _) = chain_of(&snapshot(&[]));
    let ss_mid = ss(&ns);
    std::thread::sleep(Duration::from_millis(2500));
    let (chain2, backoff2, _, c2) = chain_of(&snapshot(&[]));
    assert!(chain1 >= 1, "retransmitting after 1.5 s");
    assert_eq!(sendq1, 1000, "nothing acknowledged");
    assert!(chain2 > chain1, "chain grows: {chain1} -> {chain2}");
    assert!(
        backoff2 > backoff1,
        "backoff rises: {backoff1} -> {backoff2}"
    );
    let row = ss_mid.iter().find(|r| r.local == caddr).unwrap();
    let ss_backoff: u64 = row
        .field("backoff")
        .and_then(|b| b.parse().ok())
        .unwrap_or_else(|| panic!("ss -i shows no backoff for a blackholed peer: {row:?}"));
    assert!(
        (backoff1..=backoff2).contains(&ss_backoff),
        "ss backoff {ss_backoff} between ours {backoff1}..{backoff2}"
    );
    assert!(u(&c2["retrans"]["total"]) >= chain2);
    let v = d.get_json(&format!("/api/v1/connections?port={}", caddr.port()));
    let dc = find(
        v["connections"].as_array().unwrap(),
        "ESTABLISHED",
        &caddr,
        Some(&addr),
    )
    .expect("daemon tracks the client")
    .clone();
    assert!(
        u(&dc["retrans"]["chain"]) >= 3,
        "tracepoint chain: {}",
        dc["retrans"]
    );
    assert!(
        dc["retrans"]["chain_start"].is_u64(),
        "chain start known to the daemon"
    );
}

#[test]
fn every_namespace_and_preexisting_sockets_in_one_daemon() {
    if !privileged() {
        return;
    }
    let ns_a = Netns::new("nsa");
    let ns_b = Netns::new("nsb");
    let (_la, addr_a) = listener(&ns_a, 8);
    let (_lb, addr_b) = listener(&ns_b, 8);
    let root = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let root_addr = root.local_addr().unwrap();
    // Connections the start-up sweep lists: userspace knows them, so their changes are sent.
    let known: Vec<TcpStream> = (0..5).map(|_| connect(&ns_a, addr_a)).collect();
    // Sweeps only at start-up: later changes must arrive through the ring buffer.
    let d = Daemon::start(&["daemon.sweep_interval_ms=600000"]);

    let has = |port: u16, inode: Option<u64>| {
        let v = d.get_json(&format!("/api/v1/connections?port={port}&state=LISTEN"));
        v["connections"].as_array().unwrap().iter().any(|c| {
            c["local"]
                .as_str()
                .is_some_and(|l| l.ends_with(&format!(":{port}")))
                && inode.is_none_or(|i| c["netns"]["inode"].as_u64() == Some(i))
        })
    };
    assert!(
        has(addr_a.port(), Some(ns_a.inode)),
        "listener in namespace A"
    );
    assert!(
        has(addr_b.port(), Some(ns_b.inode)),
        "listener in namespace B"
    );
    assert!(
        has(root_addr.port(), None),
        "listener in the root namespace"
    );

    // State changes of sockets a sweep listed reach the table within 100 ms (median of 5;
    // polling every 2 ms): each connection, reset by its client, leaves the table by event.
    // (A connection no sweep has listed yet is counted in the kernel, not sent: it appears at
    // the next sweep, not tested here.)
    let mut lat = Vec::new();
    for c in known {
        let cport = c.local_addr().unwrap().port();
        // Namespace A only: another namespace of the host may use the same port number.
        let query = format!("/api/v1/connections?netns={}&port={cport}", ns_a.inode);
        let listed = |d: &Daemon| {
            let v = d.get_json(&query);
            !v["connections"].as_array().unwrap().is_empty()
        };
        assert!(listed(&d), "the start-up sweep listed {cport}");
        socket2::SockRef::from(&c)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        let t0 = Instant::now();
        drop(c);
        let gone = wait_for(Duration::from_secs(2), || (!listed(&d)).then(Instant::now))
            .unwrap_or_else(|| {
                panic!(
                    "the closed connection left the table: {}",
                    d.get_json(&query)
                )
            });
        lat.push(gone.duration_since(t0));
    }
    lat.sort();
    eprintln!("event-to-table latencies: {lat:?}");
    assert!(lat[2] < Duration::from_millis(100), "median {:?}", lat[2]);
}

#[test]
fn sweeps_ten_thousand_sockets_and_reports_duration_and_reference_walk() {
    if !privileged() {
        return;
    }
    let want = 10_000_u64;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid rlimit out-pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) };
    assert!(
        lim.rlim_max >= want + 1000,
        "hard fd limit {} too low",
        lim.rlim_max
    );
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: raising the soft limit to the hard limit is always allowed.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) };
    let ns = Netns::new("scale");
    let socks: Vec<Socket> = ns.enter(move || {
        (0..want)
            .map(|_| {
                let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
                    .unwrap();
                s.listen(1).unwrap();
                s
            })
            .collect()
    });
    // With the bench's reference walk (an iter/tcp program that only counts), which must be
    // handed at least every socket of this namespace.
    let snap = snapshot(&["--walk-reference"]);
    let n = conns_in(&snap, ns.inode).len() as u64;
    let ms = snap["sweep"]["duration_ms"].as_f64().unwrap();
    let walk = &snap["sweep"]["reference_walk"];
    eprintln!("reference walk: {walk}");
    assert_eq!(walk["errors"].as_array().map(Vec::len), Some(0), "{walk}");
    assert!(walk["sockets"].as_u64().unwrap() >= want, "{walk}");
    assert!(walk["namespaces"].as_u64().unwrap() >= 1, "{walk}");
    assert!(walk["duration_ms"].as_f64().unwrap() > 0.0, "{walk}");
    eprintln!(
        "swept {} sockets in {} namespaces in {ms:.1} ms ({n} in the test namespace)",
        snap["sweep"]["sockets"], snap["sweep"]["namespaces"]
    );
    assert_eq!(n, want);
    let truth = ss(&ns).iter().filter(|r| r.state == "LISTEN").count() as u64;
    assert_eq!(truth, want, "ss lists every listener of the namespace");
    let swept = snap["sweep"]["swept"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["inode"].as_u64() == Some(ns.inode))
        .cloned()
        .expect("the namespace is in the sweep summary");
    assert_eq!(swept["sockets"].as_u64(), Some(truth), "sweep count vs ss");
    assert!(ms > 0.0);
    drop(socks);
}

#[test]
fn namespace_without_sockets_is_swept_cleanly() {
    if !privileged() {
        return;
    }
    // Regression: the iterator makes no first call in an empty namespace; the program writes
    // its header on the final call as well, so the sweep is still well-formed.
    let ns = Netns::new("empty");
    let snap = snapshot(&[]);
    let errors = snap["sweep"]["errors"].as_array().unwrap();
    assert!(
        !errors
            .iter()
            .any(|e| e.as_str().unwrap().contains(&ns.inode.to_string())),
        "empty namespace not swept: {errors:?}"
    );
    assert!(conns_in(&snap, ns.inode).is_empty());
    let swept: Vec<&Value> = snap["sweep"]["swept"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["inode"].as_u64() == Some(ns.inode))
        .collect();
    assert_eq!(
        swept.len(),
        1,
        "the empty namespace was swept once: {swept:?}"
    );
    assert_eq!(
        swept[0]["sockets"].as_u64(),
        Some(0),
        "and returned no socket"
    );
}

/// `net.ipv4.tcp_child_ehash_entries` is host-wide: the tests that set it run one at a time.
static EHASH_KNOB: std::sync::Mutex<()> = std::sync::Mutex::new(());
const EHASH_KNOB_PATH: &str = "/proc/sys/net/ipv4/tcp_child_ehash_entries";

/// The knob, held, and its value before the test; None (said) on a kernel before 6.1, where
/// it does not exist and every namespace shares the host's hash.
fn hold_ehash_knob() -> Option<(std::sync::MutexGuard<'static, ()>, String)> {
    let held = EHASH_KNOB
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match std::fs::read_to_string(EHASH_KNOB_PATH) {
        Ok(before) => Some((held, before.trim().to_owned())),
        Err(e) => {
            eprintln!(
                "SKIPPED: {EHASH_KNOB_PATH}: {e} (a kernel before 6.1): every namespace shares"
            );
            None
        }
    }
}

/// `net.ipv4.tcp_ehash_entries` of the calling thread's namespace: its hash's size, negated
/// when it shares the host's.
fn ehash_entries() -> i64 {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_ehash_entries")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn namespaces_sharing_the_host_hash_are_told_apart() {
    if !privileged() {
        return;
    }
    // A namespace made with the default shares the host's established hash (its sweep walks
    // every socket of the host); one made after net.ipv4.tcp_child_ehash_entries was set has
    // its own (docs/operations.md). The sysctl exists since Linux 6.1.
    let Some((_held, before)) = hold_ehash_knob() else {
        return;
    };
    std::fs::write(EHASH_KNOB_PATH, "0").unwrap();
    let shared = Netns::new("ehshared");
    std::fs::write(EHASH_KNOB_PATH, "1024").unwrap();
    let own = Netns::new("ehown");
    std::fs::write(EHASH_KNOB_PATH, &before).unwrap();
    let snap = snapshot(&[]);
    let entries = |inode: u64| {
        snap["sweep"]["swept"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["inode"].as_u64() == Some(inode))
            .map(|s| s["tcp_ehash_entries"].as_i64())
            .expect("the namespace is in the sweep summary")
    };
    let truth = |ns: &Netns| ns.enter(ehash_entries);
    assert!(truth(&shared) < 0, "the default shares the host's hash");
    assert_eq!(truth(&own), 1024);
    assert_eq!(entries(shared.inode), Some(truth(&shared)));
    assert_eq!(entries(own.inode), Some(1024));
}

#[test]
fn empty_namespaces_sharing_the_host_hash_draw_the_advice() {
    if !privileged() {
        return;
    }
    // Each namespace that shares the host's established hash steps over all of its buckets
    // at every sweep, sockets or not (docs/operations.md): enough empty ones make the daemon
    // log the tcp_child_ehash_entries advice, with no socket in them at all.
    let Some((_held, before)) = hold_ehash_knob() else {
        return;
    };
    let buckets = ehash_entries().unsigned_abs();
    let per_ns = buckets * tcpwatch_core::shared_hash::BUCKET_NS;
    let n = tcpwatch_core::shared_hash::ADVISE_FROM_NS.div_ceil(per_ns);
    assert!(
        n <= 64,
        "{n} namespaces for a {buckets}-bucket hash: too many for a test"
    );
    std::fs::write(EHASH_KNOB_PATH, "0").unwrap();
    let made: Vec<Netns> = (0..n).map(|i| Netns::new(&format!("eh{i}_"))).collect();
    std::fs::write(EHASH_KNOB_PATH, &before).unwrap();
    for ns in &made {
        let own = ns.enter(ehash_entries);
        assert_eq!(
            own,
            -i64::try_from(buckets).unwrap(),
            "shares the host's hash"
        );
        assert!(ss(ns).is_empty(), "no socket in {}", ns.name);
    }
    let log = std::env::temp_dir().join(format!("tcpwatch-ehash-{}.log", std::process::id()));
    let file = std::fs::File::create(&log).unwrap();
    let mut d = support::daemon::Daemon::spawn(
        std::path::Path::new(support::BIN),
        support::daemon::pin_dir("eh"),
        support::free_port(),
        vec![],
        |c| {
            c.stderr(file);
        },
    );
    d.wait_api_ready();
    let d = Daemon::from_kit(d);
    let said = wait_for(Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines()
            .find(|l| l.contains("share the host's TCP established hash"))
            .map(str::to_owned)
    });
    let sharing = d.metric("tcpwatch_namespaces_sharing_tcp_hash");
    let _ = std::fs::remove_file(&log);
    let line = said.expect("the advice within 20 s");
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(&format!("({buckets} buckets)")), "{line}");
    assert!(line.contains("net.ipv4.tcp_child_ehash_entries"), "{line}");
    #[allow(clippy::cast_precision_loss, reason = "a few dozen namespaces")]
    let at_least = n as f64;
    assert!(
        sharing >= at_least,
        "{sharing} sharing namespaces counted, {n} made"
    );
}
