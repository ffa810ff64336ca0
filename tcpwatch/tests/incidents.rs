//! Privileged end-to-end test of the detectors: the incidents of `shared/docs/incidents.md`
//! reproduced in a namespace with scaled-down timers, next to a healthy control workload.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]
mod support;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Daemon, Netns, connect, listener, privileged};

/// The open finding of `kind` whose subject's local address is `local`.
fn finding<'a>(open: &'a [Value], kind: &str, local: &SocketAddr) -> Option<&'a Value> {
    open.iter()
        .find(|f| f["kind"] == kind && f["subject"]["local"] == local.to_string())
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario: the incidents and the healthy control run side by side"
)]
fn incidents_become_findings_and_healthy_traffic_stays_silent() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("incidents");
    // Scaled-down timers, set only inside the test's namespace.
    ns.sysctl("net.ipv4.tcp_retries2", "8");
    let threshold = 3.0;
    let d = Daemon::start(&[
        "daemon.sweep_interval_ms=500",
        &format!("detectors.close_wait.threshold_seconds={threshold}"),
        "detectors.send_queue.window_seconds=3",
        "detectors.accept_backlog.window_seconds=2",
    ]);

    // Incident 2 (app leaks the socket): CLOSE_WAIT owned by this process.
    let (l_owned, owned_addr) = listener(&ns, 16);
    let c = connect(&ns, owned_addr);
    let (_leaked, _) = l_owned.accept().unwrap();
    drop(c);

    // Incident 2 (app never calls accept()): full accept queue + unaccepted CLOSE_WAIT.
    let (_l_full, full_addr) = listener(&ns, 2);
    let mut queued: Vec<TcpStream> = (0..3).map(|_| connect(&ns, full_addr)).collect();
    drop(queued.pop());

    // Incidents 1 and 3: a peer that vanished without FIN or RST.
    let (l_dead, dead_addr) = listener(&ns, 16);
    let mut writer = connect(&ns, dead_addr);
    let (_dead_server, _) = l_dead.accept().unwrap();
    ns.blackhole_port(dead_addr.port());
    let writer_addr = writer.local_addr().unwrap();
    writer.set_nonblocking(true).unwrap();
    for _ in 0..20 {
        let _ = writer.write(&[7_u8; 4096]);
    }

    // Healthy control: request/response and a bulk transfer whose ACKs keep progressing.
    let (l_ok, ok_addr) = listener(&ns, 16);
    let stop = Arc::new(AtomicBool::new(false));
    let mut ok_client = connect(&ns, ok_addr);
    let (ok_server, _) = l_ok.accept().unwrap();
    let mut ok_server: TcpStream = ok_server.into();
    let stop2 = stop.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0_u8; 65_536];
        let mut total = 0_usize;
        ok_server
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        while !stop2.load(Ordering::Relaxed) {
            if let Ok(n) = ok_server.read(&mut buf) {
                total += n;
            }
        }
        total
    });
    let stop3 = stop.clone();
    let bulk = std::thread::spawn(move || {
        let chunk = vec![1_u8; 65_536];
        let t0 = Instant::now();
        while !stop3.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(40) {
            ok_client.write_all(&chunk).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
    });

    let t0 = Instant::now();
    let deadline = Duration::from_secs_f64(threshold + 10.0);
    let mut open: Vec<Value> = Vec::new();
    let wanted = |open: &[Value]| {
        [
            finding(open, "close_wait_stuck", &owned_addr).is_some_and(|f| f["cause"] == "owned"),
            finding(open, "close_wait_stuck", &full_addr)
                .is_some_and(|f| f["cause"] == "unaccepted"),
            finding(open, "accept_backlog_filling", &full_addr).is_some(),
            finding(open, "retransmit_chain", &writer_addr).is_some(),
            finding(open, "send_queue_growing", &writer_addr)
                .is_some_and(|f| f["cause"] == "peer_unreachable"),
        ]
    };
    while t0.elapsed() < deadline {
        open = d.get_json("/api/v1/findings")["open"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if wanted(&open).iter().all(|&w| w) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    stop.store(true, Ordering::Relaxed);
    bulk.join().unwrap();
    let read = reader.join().unwrap();
    eprintln!(
        "findings after {:?}: {}",
        t0.elapsed(),
        serde_json::to_string_pretty(&open).unwrap()
    );
    let got = wanted(&open);
    let names = [
        "owned CLOSE_WAIT",
        "unaccepted CLOSE_WAIT",
        "accept backlog",
        "retransmit chain",
        "Send-Q growing",
    ];
    for (ok, name) in got.iter().zip(names) {
        assert!(ok, "{name} not reported within threshold + 10 s");
    }
    let owned = finding(&open, "close_wait_stuck", &owned_addr).unwrap();
    assert!(
        owned["diagnosis"].as_str().unwrap().contains("close()"),
        "{owned}"
    );
    let unacc = finding(&open, "close_wait_stuck", &full_addr).unwrap();
    assert!(
        unacc["diagnosis"].as_str().unwrap().contains("accept()"),
        "{unacc}"
    );
    // The healthy control moved data and raised nothing.
    assert!(read > 1_000_000, "control transferred {read} bytes");
    let noisy: Vec<&Value> = open
        .iter()
        .filter(|f| f.to_string().contains(&format!(":{}\"", ok_addr.port())))
        .collect();
    assert!(noisy.is_empty(), "healthy control flagged: {noisy:?}");
    drop(queued);
}
