//! False-positive run (in CI): healthy loads, all at once, for at least five minutes, in two
//! namespaces joined by a veth link (IPv4 and IPv6), watched by a daemon with the DEFAULT
//! thresholds. The daemon's event stream is read for the whole run: no finding may open for
//! the test's namespaces, not only "none open at the end". A reset burst at the end proves the
//! stream reader sees openings there.
//!
//! `TCPWATCH_FP_SECS` shortens or lengthens the healthy phase (default 300, the CI value).
//! The longer soak (RSS and fds over 30 minutes) is `tests/soak.rs`, see docs/reliability.md.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]
mod support;

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::proofs::{
    LINK_V6_B, Link, StreamLog, daemon_logging_to, finding_log, finding_netns, linger_zero,
};
use support::{Daemon, Netns, http_get, listener_at, privileged, spawn_in, wait_for};

const REQ: usize = 16;

/// Counters of what the loads really did (ground truth that they ran).
#[derive(Default)]
struct Done {
    churned: AtomicU64,
    bulk_bytes: AtomicU64,
    active_requests: AtomicU64,
    long_polls: AtomicU64,
    bursts: AtomicU64,
}

struct Run {
    stop: Arc<AtomicBool>,
    done: Arc<Done>,
    threads: Vec<JoinHandle<()>>,
}

fn timeout_kind(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Serves one connection: 16-byte requests, 16-byte answers. A request starting with `L` is
/// a long-poll: answered after `hold`.
fn serve(mut s: TcpStream, stop: &AtomicBool, hold: Duration) {
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut req = [0_u8; REQ];
    let mut have = 0;
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut req[have..]) {
            Ok(0) => return,
            Ok(n) => have += n,
            Err(e) if timeout_kind(&e) => continue,
            Err(_) => return,
        }
        if have < REQ {
            continue;
        }
        have = 0;
        if req[0] == b'L' {
            let t0 = Instant::now();
            while t0.elapsed() < hold && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if s.write_all(&req).is_err() {
            return;
        }
    }
}

/// One request/response on `c`; false if the server did not answer within 30 s.
fn call(c: &mut TcpStream, tag: u8) -> bool {
    let mut req = [b'x'; REQ];
    req[0] = tag;
    if c.write_all(&req).is_err() {
        return false;
    }
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut resp = [0_u8; REQ];
    c.read_exact(&mut resp).is_ok() && resp == req
}

impl Run {
    fn new() -> Self {
        Self {
            stop: Arc::new(AtomicBool::new(false)),
            done: Arc::new(Done::default()),
            threads: Vec::new(),
        }
    }

    /// An echo server (thread per connection) on a listener made in `ns`.
    fn echo_server(&mut self, ns: &Netns, at: &str, backlog: i32, hold: Duration) -> SocketAddr {
        let (l, addr) = listener_at(ns, at, backlog, false);
        let l: TcpListener = l.into();
        l.set_nonblocking(true).unwrap();
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || {
            let mut handlers = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        let stop = stop.clone();
                        handlers.push(std::thread::spawn(move || serve(s, &stop, hold)));
                    }
                    Err(e) if timeout_kind(&e) => std::thread::sleep(Duration::from_millis(2)),
                    Err(e) => panic!("accept: {e}"),
                }
                handlers.retain(|h| !h.is_finished());
            }
            for h in handlers {
                h.join().unwrap();
            }
        }));
        addr
    }

    /// Short connections, alternately over IPv6 and IPv4 (v4-mapped on the dual-stack
    /// listener): connect, one request, close first (`TIME_WAIT` grows on the client side).
    fn churn(&mut self, client_ns: &Netns, v6: SocketAddr, v4: SocketAddr) {
        let (stop, done) = (self.stop.clone(), self.done.clone());
        self.threads.push(spawn_in(client_ns, move || {
            let mut i = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                let to = if i.is_multiple_of(2) { v6 } else { v4 };
                i += 1;
                let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(2)).unwrap();
                let ok = call(&mut c, b'c');
                assert!(
                    ok || stop.load(Ordering::Relaxed),
                    "churn request unanswered"
                );
                drop(c);
                done.churned.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        }));
    }

    /// One long connection, 64 KiB writes (about 10 MB/s), a reader that drains it.
    fn bulk(&mut self, client_ns: &Netns, server_ns: &Netns) {
        let (l, addr) = listener_at(server_ns, "10.77.0.2:0", 4, false);
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut buf = vec![0_u8; 65_536];
            loop {
                match std::io::Read::read(&mut s, &mut buf) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if timeout_kind(&e) && stop.load(Ordering::Relaxed) => return,
                    Err(e) if timeout_kind(&e) => {}
                    Err(e) => panic!("bulk read: {e}"),
                }
            }
        }));
        let (stop, done) = (self.stop.clone(), self.done.clone());
        self.threads.push(spawn_in(client_ns, move || {
            let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
            let chunk = vec![7_u8; 65_536];
            while !stop.load(Ordering::Relaxed) {
                c.write_all(&chunk).unwrap();
                done.bulk_bytes
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        }));
    }

    /// An active keep-alive pool (8 connections, a request on each every 200 ms) and
    /// `long_polls` connections that each wait 20 s for every answer and ask again.
    fn pools(&mut self, client_ns: &Netns, to: SocketAddr, long_polls: usize) {
        let (stop, done) = (self.stop.clone(), self.done.clone());
        self.threads.push(spawn_in(client_ns, move || {
            let mut pool: Vec<TcpStream> = (0..8)
                .map(|_| TcpStream::connect_timeout(&to, Duration::from_secs(2)).unwrap())
                .collect();
            while !stop.load(Ordering::Relaxed) {
                for c in &mut pool {
                    let ok = call(c, b'a');
                    assert!(
                        ok || stop.load(Ordering::Relaxed),
                        "keep-alive request unanswered"
                    );
                    done.active_requests.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }));
        for _ in 0..long_polls {
            let (stop, done) = (self.stop.clone(), self.done.clone());
            self.threads.push(spawn_in(client_ns, move || {
                let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(2)).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    if call(&mut c, b'L') {
                        done.long_polls.fetch_add(1, Ordering::Relaxed);
                    } else {
                        assert!(stop.load(Ordering::Relaxed), "long-poll unanswered");
                    }
                }
            }));
        }
    }

    /// A listener (backlog 32) whose application accepts in bursts: 27 clients connect at
    /// once (queue 27/32, above the 0.8 fill fraction), the acceptor drains the queue a second
    /// later and answers each; the next burst comes 4 s after the answers.
    fn burst_accepts(&mut self, client_ns: &Netns, server_ns: &Netns) {
        let (l, addr) = listener_at(server_ns, "10.77.0.2:0", 32, false);
        let l: TcpListener = l.into();
        l.set_nonblocking(true).unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || {
            while rx.recv().is_ok() {
                std::thread::sleep(Duration::from_secs(1));
                loop {
                    match l.accept() {
                        Ok((s, _)) => {
                            s.set_nonblocking(false).unwrap();
                            let stop = stop.clone();
                            std::thread::spawn(move || serve(s, &stop, Duration::ZERO));
                        }
                        Err(e) if timeout_kind(&e) => break,
                        Err(e) => panic!("accept: {e}"),
                    }
                }
            }
        }));
        let (stop, done) = (self.stop.clone(), self.done.clone());
        self.threads.push(spawn_in(client_ns, move || {
            while !stop.load(Ordering::Relaxed) {
                let mut burst: Vec<TcpStream> = (0..27)
                    .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap())
                    .collect();
                tx.send(()).unwrap();
                for c in &mut burst {
                    let ok = call(c, b'b');
                    assert!(
                        ok || stop.load(Ordering::Relaxed),
                        "burst request unanswered"
                    );
                }
                drop(burst);
                done.bursts.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_secs(4));
            }
        }));
    }

    fn finish(self) -> Arc<Done> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        self.done
    }
}

fn metric(d: &Daemon, name: &str) -> f64 {
    let (_, body) = http_get(d.port, "/metrics").unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name}"))
}

/// A few lines per event, for the failure message.
fn describe(events: &[&Value]) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {} {}: {}",
                e["change"], e["finding"]["kind"], e["finding"]["cause"], e["finding"]["diagnosis"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario: every load, the watch over the run, the control and the ground truth"
)]
fn healthy_loads_open_no_finding_with_default_thresholds() {
    if !privileged() {
        return;
    }
    let secs: u64 = std::env::var("TCPWATCH_FP_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let link = Link::new("fp");
    let ours = [link.a.inode, link.b.inode];
    // Default thresholds: no detector setting is overridden. Every finding lifecycle change
    // goes to the daemon's log (complete); the stream is read too, but it drops events when
    // the whole host's table churns faster than a subscriber's buffer (it says so: `lagged`).
    let log = std::env::temp_dir().join(format!("tcpwatch-fp-{}.log", std::process::id()));
    let d = daemon_logging_to(&[], &log);
    let stream = StreamLog::subscribe(d.port);
    let sweeps0 = metric(&d, "tcpwatch_sweeps_total");

    let mut run = Run::new();
    let echo = run.echo_server(&link.b, "[::]:0", 128, Duration::from_secs(20));
    let v6: SocketAddr = format!("[{LINK_V6_B}]:{}", echo.port()).parse().unwrap();
    let v4: SocketAddr = format!("10.77.0.2:{}", echo.port()).parse().unwrap();
    // Idle keep-alive pool: one request each, then silence until the end.
    let mut idle: Vec<TcpStream> = link.a.enter(move || {
        (0_u32..16)
            .map(|i| {
                let to = if i.is_multiple_of(2) { v6 } else { v4 };
                let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(2)).unwrap();
                assert!(call(&mut c, b'i'));
                c
            })
            .collect()
    });
    run.churn(&link.a, v6, v4);
    run.bulk(&link.a, &link.b);
    run.pools(&link.a, v6, 4);
    run.burst_accepts(&link.a, &link.b);

    // The namespaces' cookies (finding ids are `{kind}:{netns_cookie}:...`).
    let cookies: Vec<u64> = ours
        .iter()
        .map(|&inode| {
            wait_for(Duration::from_secs(10), || {
                let v = d.get_json(&format!("/api/v1/connections?port={}", echo.port()));
                v["connections"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|c| c["netns"]["inode"].as_u64() == Some(inode))
                    .and_then(|c| c["netns"]["cookie"].as_u64())
            })
            .expect("the daemon tracks the test's namespaces")
        })
        .collect();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(1));
    }
    let time_wait = link
        .a
        .exec("ss", &["-tanH", "state", "time-wait"])
        .lines()
        .count();
    // The idle pool is still alive after the whole run.
    for c in &mut idle {
        assert!(call(c, b'i'), "idle keep-alive connection still answers");
    }
    let healthy_events = stream.events().len();
    let healthy_lines = finding_log(&log).len();
    let conn_events = stream.conn_events();
    let sweeps = metric(&d, "tcpwatch_sweeps_total") - sweeps0;
    let done = run.finish();
    drop(idle);

    // Positive control: a reset burst in the server namespace must show up on the stream
    // (clients that abort: the server's port receives the RSTs).
    let (l, addr) = listener_at(&link.b, "10.77.0.2:0", 32, false);
    for _ in 0..15 {
        let c = link
            .a
            .enter(move || TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap());
        let (s, _) = l.accept().unwrap();
        linger_zero(&c);
        drop(c);
        std::thread::sleep(Duration::from_millis(5));
        drop(s);
    }
    // The log is written synchronously by the daemon: wait until it shows the control.
    let control_port = format!(":{} ", addr.port());
    let is_control = move |l: &Value| {
        l["kind"] == "reset_burst"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.contains(&control_port))
    };
    let control_logged = wait_for(Duration::from_secs(15), || {
        finding_log(&log)
            .iter()
            .any(|l| is_control(l) && l["change"] == "Opened")
            .then_some(())
    });
    let lines = finding_log(&log);
    let _ = std::fs::remove_file(&log);
    let events = stream.events();
    let lagged: u64 = events
        .iter()
        .filter(|e| e["type"] == "lagged")
        .filter_map(|e| e["missed"].as_u64())
        .sum();

    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    eprintln!(
        "healthy phase {secs} s: {} churned, {} MB bulk, {} keep-alive requests, {} long-polls, \
         {} accept bursts, {time_wait} TIME_WAIT at the end, {sweeps} sweeps, {conn_events} \
         conn events on the stream ({lagged} lost to lag), {} finding lines in the log",
        c(&done.churned),
        c(&done.bulk_bytes) / 1_000_000,
        c(&done.active_requests),
        c(&done.long_polls),
        c(&done.bursts),
        lines.len(),
    );
    // 1. The stream: whatever it carried, no finding change for our namespaces.
    let streamed: Vec<&Value> = events[..healthy_events]
        .iter()
        .filter(|e| {
            e["type"] == "finding"
                && finding_netns(&e["finding"]).is_some_and(|i| ours.contains(&i))
        })
        .collect();
    assert!(
        streamed.is_empty(),
        "healthy loads raised findings (stream):\n{}",
        describe(&streamed)
    );
    // 2. The lifecycle log, complete: nothing opened in our namespaces but the control.
    let in_ours = |l: &Value| {
        ours.iter().any(|i| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("netns {i}")))
        }) || cookies.iter().any(|c| {
            l["id"]
                .as_str()
                .is_some_and(|id| id.contains(&format!(":{c}:")))
        })
    };
    let raised: Vec<&Value> = lines[..healthy_lines]
        .iter()
        .filter(|l| in_ours(l))
        .collect();
    assert!(
        raised.is_empty(),
        "healthy loads raised findings (daemon log): {raised:#?}"
    );
    assert!(
        control_logged.is_some(),
        "the daemon log shows the control reset burst: {lines:#?}"
    );
    // Ground truth that every load ran for the whole phase.
    assert!(c(&done.churned) >= secs * 10, "churn ran");
    assert!(c(&done.bulk_bytes) >= secs * 1_000_000, "bulk ran");
    assert!(c(&done.active_requests) >= secs * 8, "keep-alive pool ran");
    assert!(
        c(&done.long_polls) >= 4 * (secs / 20).saturating_sub(1),
        "long-polls ran"
    );
    assert!(c(&done.bursts) >= secs / 10, "accept bursts ran");
    assert!(time_wait >= 500, "TIME_WAIT grew: {time_wait}");
    #[expect(clippy::cast_precision_loss, reason = "seconds")]
    let want_sweeps = secs as f64 * 0.5;
    assert!(
        sweeps >= want_sweeps,
        "the daemon swept all along: {sweeps}"
    );
    assert!(
        conn_events >= secs,
        "the stream was live: {conn_events} conn events"
    );
    drop(d);
}
