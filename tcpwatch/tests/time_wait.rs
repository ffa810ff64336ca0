//! Privileged test of `TIME_WAIT` counted, not copied (issue 17): the sweep counts a
//! namespace's `TIME_WAIT` minisockets instead of writing a record each; the table holds none
//! of them, `/api/v1/status` and the metrics carry the count, and it equals `ss`'s.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]
mod support;

use std::collections::HashSet;
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;
use support::{Daemon, Netns, connect, listener, privileged, wait_for};

/// `TIME_WAIT` sockets made (`TIME_WAIT` lasts 60 s: stable for the whole test).
const K: usize = 300;
/// ESTABLISHED pairs kept open.
const M: usize = 50;

/// `ss -tanH state time-wait` in `ns`: the ground truth count.
fn ss_time_wait(ns: &Netns) -> usize {
    ns.exec("ss", &["-tanH", "state", "time-wait"])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// The namespace's entry of `/api/v1/status`'s `time_wait.by_netns` (its count, 0 if absent).
fn status_count(status: &Value, inode: u64) -> u64 {
    status["time_wait"]["by_netns"]
        .as_array()
        .expect("status has time_wait.by_netns")
        .iter()
        .find(|e| e["netns"]["inode"] == inode)
        .map_or(0, |e| e["count"].as_u64().unwrap())
}

#[test]
fn time_wait_is_counted_per_namespace_not_listed() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("tw");
    let d = Daemon::start(&["daemon.sweep_interval_ms=300"]);
    let (l, addr) = listener(&ns, 1024);
    // K TIME_WAIT sockets on the client side: the client closes first, then the server.
    for _ in 0..K {
        let c = connect(&ns, addr);
        let (s, _) = l.accept().unwrap();
        drop(c);
        std::thread::sleep(Duration::from_millis(1));
        drop(s);
    }
    // M established pairs, held.
    let held: Vec<(TcpStream, socket2::Socket)> = (0..M)
        .map(|_| {
            let c = connect(&ns, addr);
            let (s, _) = l.accept().unwrap();
            (c, s)
        })
        .collect();
    // Both ends of each pair, as (local, remote).
    let established: HashSet<(String, String)> = held
        .iter()
        .flat_map(|(c, _)| {
            let (a, b) = (
                c.local_addr().unwrap().to_string(),
                c.peer_addr().unwrap().to_string(),
            );
            [(a.clone(), b.clone()), (b, a)]
        })
        .collect();
    // The passive sides' FIN handshakes finish within milliseconds on loopback.
    let truth = wait_for(Duration::from_secs(5), || {
        let n = ss_time_wait(&ns);
        (n >= K).then_some(n)
    })
    .expect("ground truth: K TIME_WAIT sockets in the namespace");
    let inode = ns.inode;
    let sweeps_now = d.metric_sum("tcpwatch_sweeps_total");
    // The count of a sweep that started after the sockets were made: `tcpwatch_sweeps_total`
    // counts applied sweeps, and up to two more can be under way (one waiting to be applied,
    // one running), so three more.
    let status = wait_for(Duration::from_secs(15), || {
        (d.metric_sum("tcpwatch_sweeps_total") >= sweeps_now + 3.0)
            .then(|| d.get_json("/api/v1/status"))
    })
    .expect("three sweeps after the sockets were made");
    let counted = status_count(&status, inode);
    // TIME_WAIT lasts 60 s and none was made after `truth`: the two counts must agree.
    assert_eq!(
        counted, truth as u64,
        "count of ns {inode} in {}",
        status["time_wait"]
    );
    assert_eq!(
        ss_time_wait(&ns),
        truth,
        "no TIME_WAIT expired during the test"
    );
    assert!(status["time_wait"]["total"].as_u64().unwrap() >= counted);

    // The table holds no TIME_WAIT record, and every established socket.
    let conns = d.connections(&format!("limit=100000&netns={inode}"));
    let tw: Vec<&Value> = conns.iter().filter(|c| c["state"] == "TIME_WAIT").collect();
    assert!(tw.is_empty(), "TIME_WAIT records in the table: {tw:#?}");
    let listed: HashSet<(String, String)> = conns
        .iter()
        .filter(|c| c["state"] == "ESTABLISHED")
        .map(|c| {
            (
                c["local"].as_str().unwrap().to_owned(),
                c["remote"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let missing: Vec<_> = established.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "established sockets missing: {missing:?}"
    );
    assert_eq!(listed.len(), 2 * M);

    // The metrics keep their TIME_WAIT series from the count.
    let metric = d.metric_sum("tcpwatch_sockets{state=\"TIME_WAIT\"}");
    assert!(
        metric >= f64::from(u32::try_from(counted).unwrap()),
        "tcpwatch_sockets{{state=\"TIME_WAIT\"}} {metric} < {counted}"
    );
    drop(held);
}
