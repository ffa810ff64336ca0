//! Privileged control test of issue 13: healthy traffic that looks like the 502 class must not
//! open any finding over 5 minutes. Three workloads run concurrently in one namespace the test
//! creates:
//! - a keep-alive pool whose server idle timeout (10 s) is longer than the client's (2 s): the
//!   client closes idle connections first, so it never writes into one the server closed;
//! - short-connection churn (connect, request, response, close), ~20 per second;
//! - a bulk transfer.
//!
//! The daemon's findings are polled every second (a finding stays open at least
//! `resolve_after`, 3 s): none may be about this namespace.
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

use support::{Daemon, Netns, privileged};

const RUN: Duration = Duration::from_mins(5);

/// Accepts until `stop`, serving each connection on its own thread with `serve`.
fn server(
    ns: &Netns,
    stop: Arc<AtomicBool>,
    serve: fn(TcpStream, Arc<AtomicBool>),
) -> (SocketAddr, JoinHandle<()>) {
    let l: TcpListener = ns.enter(|| TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = l.local_addr().unwrap();
    l.set_nonblocking(true).unwrap();
    let h = std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    let stop = stop.clone();
                    std::thread::spawn(move || serve(s, stop));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    });
    (addr, h)
}

/// Request/response: 8-byte requests answered with 8 bytes; closes after `idle` without a
/// request, or when the client closes.
fn echo_with_idle(mut s: TcpStream, idle: Duration) {
    s.set_read_timeout(Some(idle)).unwrap();
    let mut buf = [0_u8; 8];
    while s.read_exact(&mut buf).is_ok() {
        if s.write_all(&buf).is_err() {
            return;
        }
    }
}

fn keepalive_server(s: TcpStream, _: Arc<AtomicBool>) {
    echo_with_idle(s, Duration::from_secs(10));
}

fn churn_server(s: TcpStream, _: Arc<AtomicBool>) {
    // Answers one request, then waits for the client's close (the client closes first).
    echo_with_idle(s, Duration::from_secs(30));
}

/// Reads until the client closes (it closes first, after the test's stop).
fn sink_server(mut s: TcpStream, _: Arc<AtomicBool>) {
    let mut buf = vec![0_u8; 1 << 16];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => panic!("bulk read: {e}"),
        }
    }
}

fn in_ns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let path = format!("/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap();
        // SAFETY: valid fd; affects only this thread.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&fd), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0);
        f()
    })
}

fn roundtrip(c: &mut TcpStream) {
    c.write_all(b"request!").unwrap();
    let mut buf = [0_u8; 8];
    c.read_exact(&mut buf).unwrap();
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario: three workloads side by side and the watch over them"
)]
fn healthy_keepalive_churn_and_bulk_open_no_finding_in_five_minutes() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("healthy");
    let d = Daemon::start(&["daemon.sweep_interval_ms=500"]);
    let stop = Arc::new(AtomicBool::new(false));
    let (ka_addr, ka) = server(&ns, stop.clone(), keepalive_server);
    let (churn_addr, churn) = server(&ns, stop.clone(), churn_server);
    let (bulk_addr, bulk) = server(&ns, stop.clone(), sink_server);
    let reused = Arc::new(AtomicU64::new(0));
    let idle_closed = Arc::new(AtomicU64::new(0));
    let churned = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));

    // Keep-alive pool: 2 connections used in turn, client idle timeout 2 s < server's 10 s.
    let (s1, r1, i1) = (stop.clone(), reused.clone(), idle_closed.clone());
    let pool = in_ns(&ns, move || {
        let mut conns: Vec<Option<(TcpStream, Instant)>> = (0..2).map(|_| None).collect();
        let mut n = 0_u64;
        while !s1.load(Ordering::Relaxed) {
            n += 1;
            let slot = &mut conns[usize::try_from(n % 2).unwrap()];
            if slot
                .as_ref()
                .is_some_and(|(_, used)| used.elapsed() > Duration::from_secs(2))
            {
                *slot = None; // the client's idle timeout: it closes first
                i1.fetch_add(1, Ordering::Relaxed);
            }
            if let Some((c, used)) = slot {
                roundtrip(c);
                *used = Instant::now();
                r1.fetch_add(1, Ordering::Relaxed);
            } else {
                let mut c = TcpStream::connect(ka_addr).unwrap();
                roundtrip(&mut c);
                *slot = Some((c, Instant::now()));
            }
            // Mostly short pauses (reuse), every fifth 2.6 s: connections idle past the
            // client's timeout are closed by the client.
            let pause = if n.is_multiple_of(5) {
                2600
            } else {
                100 + (n * 7919) % 700
            };
            std::thread::sleep(Duration::from_millis(pause));
        }
    });
    // Short-connection churn.
    let (s2, c2) = (stop.clone(), churned.clone());
    let churn_client = in_ns(&ns, move || {
        while !s2.load(Ordering::Relaxed) {
            let mut c = TcpStream::connect(churn_addr).unwrap();
            roundtrip(&mut c);
            drop(c);
            c2.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    // Bulk transfer.
    let (s3, b3) = (stop.clone(), bytes.clone());
    let bulker = in_ns(&ns, move || {
        let mut c = TcpStream::connect(bulk_addr).unwrap();
        let chunk = vec![0x5a_u8; 1 << 16];
        while !s3.load(Ordering::Relaxed) {
            c.write_all(&chunk).unwrap();
            b3.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
    });

    // Watch: every second, no finding (open or resolved) about this namespace.
    let t0 = Instant::now();
    let mut seen = Vec::new();
    while t0.elapsed() < RUN {
        let v = d.get_json("/api/v1/findings");
        for list in ["open", "recently_resolved"] {
            for f in v[list].as_array().unwrap() {
                if f["subject"]["netns"]["inode"].as_u64() == Some(ns.inode) {
                    seen.push(f.clone());
                }
            }
        }
        if !seen.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    stop.store(true, Ordering::Relaxed);
    pool.join().unwrap();
    churn_client.join().unwrap();
    bulker.join().unwrap();
    for h in [ka, churn, bulk] {
        h.join().unwrap();
    }
    assert!(
        seen.is_empty(),
        "findings about the healthy namespace: {seen:#?}"
    );
    // The workloads really ran: the pool reused connections and closed idle ones, connections
    // churned, bytes flowed.
    let pool_reuses = reused.load(Ordering::Relaxed);
    let idle = idle_closed.load(Ordering::Relaxed);
    let short = churned.load(Ordering::Relaxed);
    let sent = bytes.load(Ordering::Relaxed);
    eprintln!(
        "reused {pool_reuses}, idle-closed {idle}, churned {short}, bulk {} MiB",
        sent >> 20
    );
    assert!(
        pool_reuses > 50 && idle > 10,
        "pool: reused {pool_reuses}, idle-closed {idle}"
    );
    assert!(short > 1000, "churn: {short}");
    assert!(sent > 100 << 20, "bulk: {sent} bytes");
}
