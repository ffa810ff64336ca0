//! Privileged tests of the detectors on real sockets: each finding's kind, cause, owner and
//! evidence numbers are compared with ground truth (`ss -i` ages and queues, `nstat`
//! counters of the test's namespace), not with synthetic records.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]
mod support;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd as _;
use std::time::Duration;

use serde_json::Value;
use support::proofs::{StreamLog, linger_zero};
use support::{
    Daemon, Netns, SsRow, connect, fill_send_buffer, listener, nstat, privileged, ss, wait_for,
};

const SWEEP_MS: u64 = 300;

fn ev(f: &Value, name: &str) -> f64 {
    f["evidence"][name]
        .as_f64()
        .unwrap_or_else(|| panic!("no evidence {name}: {f}"))
}

fn ss_row(ns: &Netns, local: &SocketAddr) -> SsRow {
    ss(ns)
        .into_iter()
        .find(|r| r.local == *local)
        .unwrap_or_else(|| panic!("ss does not list {local}"))
}

fn ms_field(r: &SsRow, key: &str) -> f64 {
    r.field(key)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("ss shows no {key}: {r:?}"))
}

#[test]
fn awaiting_response_on_a_request_the_server_never_answers() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("await");
    let threshold = 3.0;
    let d = Daemon::start(&[
        &format!("daemon.sweep_interval_ms={SWEEP_MS}"),
        &format!("detectors.awaiting_response.threshold_seconds={threshold}"),
    ]);
    let (l, addr) = listener(&ns, 16);
    let mut client = connect(&ns, addr);
    let (server, _) = l.accept().unwrap();
    let mut server: TcpStream = server.into();
    let request = b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n";
    // Not in the jiffy the connection completed in: the same-jiffy case is its own test below.
    std::thread::sleep(Duration::from_millis(50));
    client.write_all(request).unwrap();
    // The server reads the whole request and never answers.
    let mut got = vec![0_u8; request.len()];
    server.read_exact(&mut got).unwrap();
    let caddr = client.local_addr().unwrap();

    let f = wait_for(Duration::from_secs_f64(threshold + 8.0), || {
        d.open_finding_at("awaiting_response", &caddr)
    })
    .expect("awaiting_response opened within threshold + 8 s");
    // Compare the evidence with `ss -i` taken just before and after reading it. The evidence
    // is from the last evaluation, at most one sweep interval before the read.
    let before = ss_row(&ns, &caddr);
    let f2 = d
        .open_finding_at("awaiting_response", &caddr)
        .expect("still open");
    let after = ss_row(&ns, &caddr);
    eprintln!("finding: {f2}\nss before: {before:?}\nss after: {after:?}");
    assert_eq!(f["cause"], "no_response");
    assert_eq!(f["severity"], "info");
    assert_eq!(f2["subject"]["state"], "ESTABLISHED");
    assert_eq!(f2["subject"]["remote"], addr.to_string());
    assert_eq!(
        f2["subject"]["owner"]["pid"].as_u64(),
        Some(u64::from(std::process::id())),
        "owner: {f2}"
    );
    assert_eq!(
        f2["subject"]["owner"]["fd"].as_i64(),
        Some(i64::from(client.as_raw_fd()))
    );
    assert_eq!(before.send_q, 0, "the request was acknowledged: {before:?}");
    let remote_port = f64::from(addr.port());
    assert!((ev(&f2, "remote_port") - remote_port).abs() < f64::EPSILON);
    // One sweep interval (0.3 s) plus 0.1 s.
    let slack = 0.4;
    for (evidence, key) in [
        ("waiting_seconds", "lastsnd"),
        ("last_recv_age_seconds", "lastrcv"),
    ] {
        let (lo, hi) = (
            ms_field(&before, key) / 1000.0,
            ms_field(&after, key) / 1000.0,
        );
        let got = ev(&f2, evidence);
        assert!(
            got >= lo - slack && got <= hi + 0.05,
            "{evidence} {got} vs ss {key} {lo}..{hi} s (slack {slack} s)"
        );
    }
    assert!(ev(&f2, "waiting_seconds") >= threshold, "{f2}");
    // Ground truth: nothing came back, and the server side is not reported.
    client
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    assert!(
        client.read(&mut [0_u8; 16]).is_err(),
        "no response was sent"
    );
    assert!(d.open_finding_at("awaiting_response", &addr).is_none());
}

/// `n` connections to a listener in a fresh namespace, each aborted with `SO_LINGER 0` by
/// the server (`server_aborts`) or by the client. Returns the namespace, the daemon, the
/// listener's address, the namespace's `TcpOutRsts` delta (ground truth) and the stream.
struct Aborted {
    ns: Netns,
    daemon: Daemon,
    addr: SocketAddr,
    /// `TcpOutRsts` delta of the namespace.
    sent: u64,
    stream: StreamLog,
    /// Kept open: the finding names the listener's owner.
    _listener: socket2::Socket,
}

fn abort_connections(server_aborts: bool, n: u64) -> Aborted {
    let ns = Netns::new("rstburst");
    // Default reset_burst thresholds: 10 resets within 10 s.
    let daemon = Daemon::start(&[&format!("daemon.sweep_interval_ms={SWEEP_MS}")]);
    let stream = StreamLog::subscribe(daemon.port);
    let (lst, addr) = listener(&ns, 64);
    let before = nstat(&ns, "TcpOutRsts");
    let mut keep = Vec::new();
    for _ in 0..n {
        let client = connect(&ns, addr);
        let (server, _) = lst.accept().unwrap();
        if server_aborts {
            linger_zero(&server);
            drop(server);
            keep.push(client);
        } else {
            linger_zero(&client);
            drop(client);
            std::thread::sleep(Duration::from_millis(5));
            drop(server);
        }
    }
    let sent = nstat(&ns, "TcpOutRsts") - before;
    assert_eq!(sent, n, "ground truth: one RST per SO_LINGER 0 close");
    drop(keep);
    Aborted {
        ns,
        daemon,
        addr,
        sent,
        stream,
        _listener: lst,
    }
}

/// Waits for the open `reset_burst` of `addr`'s port in `ns` once it has counted `n` resets
/// (sent + received) and names this process as the listener's owner.
fn reset_finding(d: &Daemon, ns: &Netns, addr: SocketAddr, n: u64) -> Value {
    let pid = format!("[{}]", std::process::id());
    let mut last = Value::Null;
    wait_for(Duration::from_secs(8), || {
        let all = d.get_json("/api/v1/findings?kind=reset_burst");
        let Some(f) = all["open"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| is_port_finding(f, ns, addr))
            .cloned()
        else {
            last = all;
            return None;
        };
        last = f.clone();
        #[expect(clippy::cast_precision_loss, reason = "small counts")]
        let all = ev(&f, "resets_total") >= n as f64;
        (all && f["diagnosis"].as_str().unwrap().contains(&pid)).then_some(f)
    })
    .unwrap_or_else(|| panic!("reset_burst with all {n} RSTs and the owner: last {last}"))
}

fn is_port_finding(f: &Value, ns: &Netns, addr: SocketAddr) -> bool {
    f["kind"] == "reset_burst"
        && f["subject"]["port"].as_u64() == Some(u64::from(addr.port()))
        && f["subject"]["netns"]["inode"].as_u64() == Some(ns.inode)
}

fn opened_once(stream: StreamLog, ns: &Netns, addr: SocketAddr) {
    let ours = |events: Vec<Value>| -> Vec<Value> {
        events
            .into_iter()
            .filter(|e| {
                e["type"] == "finding"
                    && e["change"] == "opened"
                    && is_port_finding(&e["finding"], ns, addr)
            })
            .collect()
    };
    // The API can show the finding before the stream's reader thread has read its event
    // (another connection, another thread): wait for the delivery, bounded, then count.
    let _ = wait_for(Duration::from_secs(5), || {
        (!ours(stream.events()).is_empty()).then_some(())
    });
    let opened = ours(stream.finish());
    assert_eq!(
        opened.len(),
        1,
        "opened exactly once on the stream: {opened:?}"
    );
}

/// A request written in the same jiffy as the handshake completed (the kernel set the last send
/// and receive times together) still counts as awaiting a response.
#[test]
fn awaiting_response_for_a_request_sent_right_after_connect() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("await0");
    let d = Daemon::start(&[
        &format!("daemon.sweep_interval_ms={SWEEP_MS}"),
        "detectors.awaiting_response.threshold_seconds=2",
    ]);
    let (l, addr) = listener(&ns, 64);
    // Connect and send at once until one request went out in the connection's jiffy.
    let mut keep = Vec::new();
    let same = (0..50).find_map(|_| {
        let mut c = connect(&ns, addr);
        c.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let (s, _) = l.accept().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let row = ss_row(&ns, &c.local_addr().unwrap());
        let found = (row.field("lastsnd") == row.field("lastrcv")).then(|| c.local_addr().unwrap());
        keep.push((c, s));
        found
    });
    let caddr = same.expect("a request sent in the connection's jiffy within 50 tries");
    let f = wait_for(Duration::from_secs(8), || {
        d.open_finding_at("awaiting_response", &caddr)
    });
    assert!(
        f.is_some(),
        "no awaiting_response for {caddr}: {:?}",
        ss_row(&ns, &caddr)
    );
}

#[test]
fn reset_burst_on_a_server_port_whose_clients_abort() {
    if !privileged() {
        return;
    }
    let n = 30;
    let Aborted {
        ns,
        daemon: d,
        addr,
        sent,
        stream,
        _listener,
    } = abort_connections(false, n);
    let f = reset_finding(&d, &ns, addr, n);
    eprintln!("finding: {f}");
    // On loopback every RST the clients sent (nstat) reached the server's port.
    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    let sent_f = sent as f64;
    assert!(
        (ev(&f, "resets_received") - sent_f).abs() < 0.5,
        "vs nstat: {f}"
    );
    assert!(ev(&f, "resets_sent").abs() < 0.5, "{f}");
    assert!((ev(&f, "resets_total") - sent_f).abs() < 0.5, "{f}");
    assert_eq!(f["cause"], "received");
    assert_eq!(f["severity"], "warning");
    assert!(ev(&f, "window_seconds") <= 10.0 + 1.0, "{f}");
    opened_once(stream, &ns, addr);
}

/// A server that aborts its connections (`SO_LINGER` 0 close): the kernel releases the local
/// port (`skc_num` = 0) before the RST goes out; the burst must still be on the server's port.
#[test]
fn reset_burst_from_a_server_closing_with_so_linger_zero() {
    if !privileged() {
        return;
    }
    let n = 30;
    let Aborted {
        ns,
        daemon: d,
        addr,
        sent,
        stream,
        _listener,
    } = abort_connections(true, n);
    let f = reset_finding(&d, &ns, addr, n);
    eprintln!("finding: {f}");
    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    let sent_f = sent as f64;
    assert!(
        (ev(&f, "resets_sent") - sent_f).abs() < 0.5,
        "vs nstat: {f}"
    );
    assert!(ev(&f, "resets_received").abs() < 0.5, "{f}");
    assert_eq!(f["cause"], "sent");
    let port0: Vec<Value> = d.get_json("/api/v1/findings?kind=reset_burst")["open"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["subject"]["port"] == 0)
        .cloned()
        .collect();
    assert!(port0.is_empty(), "resets counted on port 0: {port0:?}");
    opened_once(stream, &ns, addr);
}

#[test]
fn peer_not_reading_gives_send_queue_growing_with_a_zero_window() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("zwnd");
    let window = 3.0;
    let d = Daemon::start(&[
        &format!("daemon.sweep_interval_ms={SWEEP_MS}"),
        &format!("detectors.send_queue.window_seconds={window}"),
    ]);
    let stream = StreamLog::subscribe(d.port);
    let (l, addr) = listener(&ns, 16);
    let mut client = connect(&ns, addr);
    let (_server, _) = l.accept().unwrap();
    // The server never reads: its receive buffer fills and it advertises a zero window.
    let written = fill_send_buffer(&mut client).expect("write");
    assert!(written > 0);
    let caddr = client.local_addr().unwrap();
    let f = wait_for(Duration::from_secs_f64(window + 10.0), || {
        d.open_finding_at("send_queue_growing", &caddr)
    })
    .expect("send_queue_growing opened within window + 10 s");
    assert_eq!(f["cause"], "peer_not_reading", "{f}");
    assert_eq!(f["severity"], "warning");
    // Settled ground truth around the evidence (zero-window probes do not move the queues).
    let mut compared = None;
    for _ in 0..10 {
        let before = ss_row(&ns, &caddr);
        std::thread::sleep(Duration::from_millis(2 * SWEEP_MS + 100));
        let f = d
            .open_finding_at("send_queue_growing", &caddr)
            .expect("still open");
        let after = ss_row(&ns, &caddr);
        if before.send_q == after.send_q {
            compared = Some((f, after));
            break;
        }
    }
    let (f, row) = compared.expect("Send-Q settled around a reading of the evidence");
    eprintln!("finding: {f}\nss: {row:?}");
    assert!(
        (ev(&f, "send_q_bytes") - f64::from(row.send_q)).abs() < 0.5,
        "Send-Q vs ss {}: {f}",
        row.send_q
    );
    assert!(
        (ev(&f, "unacked_bytes") + ev(&f, "unsent_bytes") - ev(&f, "send_q_bytes")).abs() < 0.5
    );
    assert!(ev(&f, "peer_window").abs() < 0.5, "zero window: {f}");
    if let Some(w) = row.field("snd_wnd") {
        assert_eq!(w, "0", "ss sees the zero window too");
    }
    assert!(
        row.info.contains("timer:(persist"),
        "the kernel is probing a zero window: {row:?}"
    );
    assert!(ev(&f, "seconds_since_ack_progress") >= window, "{f}");
    assert_eq!(
        f["subject"]["owner"]["pid"].as_u64(),
        Some(u64::from(std::process::id()))
    );
    assert_eq!(
        f["subject"]["owner"]["fd"].as_i64(),
        Some(i64::from(client.as_raw_fd()))
    );
    stream.finish();
}

/// Zero-window probing (persist timer, backoff 4+, `probes_out` reset to 0 by each probe's
/// ACK, nothing in flight) is not a retransmit chain.
#[test]
fn zero_window_probing_is_not_a_retransmit_chain() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("zwchain");
    let d = Daemon::start(&[&format!("daemon.sweep_interval_ms={SWEEP_MS}")]);
    let stream = StreamLog::subscribe(d.port);
    let (l, addr) = listener(&ns, 16);
    let mut client = connect(&ns, addr);
    let (_server, _) = l.accept().unwrap();
    client.set_nonblocking(true).unwrap();
    let chunk = vec![0x5a_u8; 65_536];
    while client.write(&chunk).is_ok() {}
    let caddr = client.local_addr().unwrap();
    // Long enough for the persist timer's backoff to pass min_backoff (4) and beyond.
    std::thread::sleep(Duration::from_secs(8));
    let row = ss_row(&ns, &caddr);
    assert!(
        row.info.contains("timer:(persist"),
        "zero-window probing: {row:?}"
    );
    let chains: Vec<Value> = stream
        .finish()
        .into_iter()
        .filter(|e| {
            e["type"] == "finding"
                && e["finding"]["kind"] == "retransmit_chain"
                && e["finding"]["subject"]["local"] == caddr.to_string()
        })
        .collect();
    assert!(
        chains.is_empty(),
        "zero window flagged as a chain (ss: {row:?}): {chains:?}"
    );
}
