//! Soak test (not in CI; one command, as root, documented in docs/reliability.md:
//! `TCPWATCH_SOAK_SECS=1800 cargo test -p tcpwatch --test soak -- --ignored --nocapture`).
//! Runs connection churn plus an induced stuck `CLOSE_WAIT` every minute for
//! `TCPWATCH_SOAK_SECS` (default 1800) and checks that the daemon's RSS and open fds stay flat
//! and that no induced incident is missed. Results go in `docs/reliability.md`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]
mod support;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use support::{Daemon, Netns, privileged, wait_for};

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
#[ignore = "30-minute soak; run by hand"]
fn soak_churn_and_incidents() {
    if !privileged() {
        return;
    }
    let secs: u64 = std::env::var("TCPWATCH_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1800);
    let ns = Netns::new("soak");
    let d = Daemon::start(&["detectors.close_wait.threshold_seconds=5"]);
    let pid = d.child.id();
    let l = ns.enter(|| {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        s.listen(1024).unwrap();
        s
    });
    let addr = l.local_addr().unwrap().as_socket().unwrap();
    let t0 = Instant::now();
    let mut samples = Vec::new();
    let (mut incidents, mut detected, mut churned) = (0_u32, 0_u32, 0_u64);
    let mut next_incident = Instant::now() + Duration::from_secs(10);
    let mut next_sample = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        // Churn: ~200 connections per second, each opened and closed.
        for _ in 0..20 {
            let c = ns.enter(move || TcpStream::connect(addr).unwrap());
            let (s, _) = l.accept().unwrap();
            drop(c);
            drop(s);
            churned += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
        if Instant::now() >= next_incident {
            next_incident += Duration::from_mins(1);
            incidents += 1;
            let c = ns.enter(move || TcpStream::connect(addr).unwrap());
            let (leaked, _) = l.accept().unwrap();
            let local = c.local_addr().unwrap();
            drop(c);
            let found = wait_for(Duration::from_secs(15), || {
                let v = d.get_json("/api/v1/findings?kind=close_wait_stuck");
                v["open"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|f| f["subject"]["remote"] == local.to_string())
                    .then_some(())
            });
            if found.is_some() {
                detected += 1;
            }
            drop(leaked);
        }
        if Instant::now() >= next_sample {
            next_sample += Duration::from_secs(30);
            samples.push((t0.elapsed().as_secs(), rss_kib(pid), fds(pid), churned));
        }
    }
    println!("| t (s) | RSS (KiB) | open fds | connections churned |");
    println!("|---|---|---|---|");
    for (t, rss, fd, n) in &samples {
        println!("| {t} | {rss} | {fd} | {n} |");
    }
    println!("incidents induced {incidents}, detected {detected}");
    assert_eq!(incidents, detected, "every induced CLOSE_WAIT was reported");
    // Flat: after warm-up (first minute), RSS grows < 20 % and fds < 10 over the soak.
    let warm: Vec<_> = samples.iter().filter(|s| s.0 >= 60).collect();
    if let (Some(first), Some(last)) = (warm.first(), warm.last()) {
        assert!(
            last.1 * 100 < first.1 * 120,
            "RSS grew {} -> {} KiB",
            first.1,
            last.1
        );
        assert!(last.2 < first.2 + 10, "fds grew {} -> {}", first.2, last.2);
    }
}
