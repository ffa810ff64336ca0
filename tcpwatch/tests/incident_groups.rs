//! Privileged end-to-end tests of the incident layer (issue 12): real sockets in namespaces the
//! tests create, a real daemon, `ss` as ground truth and a real Alertmanager.
//!
//! - The incidents of `shared/docs/incidents.md` reproduced in a namespace with scaled-down
//!   timers become findings, next to a healthy control workload that stays silent.
//! - A listener that never accepts, with 200 peers that connect and close: one incident naming
//!   the port, the owner and the 200 sockets; the 200 findings still listed, each pointing at
//!   it; one alert in Alertmanager.
//! - Incident #1's chain: a server (a child process) whose handler writes to an upstream that
//!   is then blackholed, while its callers give up and close: one `blocked_on_upstream`
//!   incident naming the upstream, the process and the listener port with the `CLOSE_WAIT`
//!   count; an unrelated listener problem in another namespace is a second incident.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]
mod support;

use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::alertmanager::Alertmanager;
use support::{Daemon, Netns, connect, finding_at, listener, privileged, ss, wait_for};

/// Bound of every wait on the daemon.
const WAIT: Duration = Duration::from_secs(45);

/// Scaled-down detector timers (the defaults are tens of seconds).
const FAST: [&str; 5] = [
    "daemon.sweep_interval_ms=500",
    "detectors.close_wait.threshold_seconds=2",
    "detectors.accept_backlog.window_seconds=2",
    "detectors.send_queue.window_seconds=3",
    "detectors.min_update_interval_seconds=1",
];

/// The open incidents whose root is in the namespace of inode `netns`.
fn incidents_in(d: &Daemon, netns: u64) -> Vec<Value> {
    d.get_json("/api/v1/incidents")["open"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| i["root"]["netns"]["inode"].as_u64() == Some(netns))
        .collect()
}

/// `CLOSE-WAIT` sockets on local `port` in `ns`, as `ss` sees them.
fn ss_close_wait(ns: &Netns, port: u16) -> usize {
    ss(ns)
        .iter()
        .filter(|r| r.state == "CLOSE-WAIT" && r.local.port() == port)
        .count()
}

fn count(i: &Value, kind: &str) -> u64 {
    i["counts"][kind].as_u64().unwrap_or(0)
}

fn own_comm() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario, checked on every surface: incidents, findings, metrics, Alertmanager"
)]
fn listener_that_never_accepts_is_one_incident_and_one_alert() {
    if !privileged() || !Alertmanager::available() {
        return;
    }
    let am = Alertmanager::start();
    let ns = Netns::new("noaccept");
    // A backlog of 256 needs somaxconn >= 256 (set only in the test's namespace).
    ns.sysctl("net.core.somaxconn", "1024");
    let mut sets: Vec<String> = FAST.iter().map(|s| (*s).to_owned()).collect();
    sets.push(format!("alertmanager.url=\"{}\"", am.url()));
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let d = Daemon::start(&sets);

    // A listener (this process owns it) that never accepts; 200 peers connect and close.
    let (listening, addr) = listener(&ns, 256);
    let port = addr.port();
    ns.enter(move || {
        for _ in 0..200 {
            let c = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
            drop(c);
        }
    });
    let truth = wait_for(Duration::from_secs(5), || {
        let n = ss_close_wait(&ns, port);
        (n == 200).then_some(n)
    });
    assert_eq!(
        truth,
        Some(200),
        "ss shows {} CLOSE-WAIT on :{port}",
        ss_close_wait(&ns, port)
    );

    let t0 = Instant::now();
    let got = wait_for(WAIT, || {
        let list = incidents_in(&d, ns.inode);
        (list.len() == 1 && count(&list[0], "close_wait_stuck") == 200).then_some(list)
    });
    let list = got.unwrap_or_else(|| {
        panic!(
            "not exactly one incident with 200 CLOSE_WAIT members in {WAIT:?}: {:#}",
            d.get_json("/api/v1/incidents")
        )
    });
    eprintln!("one incident after {:?}", t0.elapsed());
    let inc = &list[0];
    let id = inc["id"].as_str().unwrap().to_owned();
    assert_eq!(inc["kind"], "listener_not_accepting", "{inc:#}");
    assert_eq!(inc["root"]["local_port"], port, "{inc:#}");
    assert_eq!(
        inc["root"]["process"]["pid"],
        std::process::id(),
        "the owner of the listener: {inc:#}"
    );
    let comm = own_comm();
    assert_eq!(inc["root"]["process"]["comm"], comm.as_str(), "{inc:#}");
    let diagnosis = inc["diagnosis"].as_str().unwrap();
    assert!(
        diagnosis.contains(&format!(":{port}")) && diagnosis.contains(&comm),
        "{diagnosis}"
    );
    // Every member counted: the 200 sockets (and the backlog finding if the queue was over the
    // fill fraction), equal to ss.
    assert_eq!(
        count(inc, "close_wait_stuck"),
        ss_close_wait(&ns, port) as u64
    );
    assert_eq!(
        inc["members_total"].as_u64(),
        Some(200 + count(inc, "accept_backlog_filling")),
        "{inc:#}"
    );
    assert!(
        inc["opened_time"].as_str().unwrap().ends_with('Z'),
        "{inc:#}"
    );

    // The per-socket detail is still there, each finding pointing at the incident.
    let findings = d.get_json("/api/v1/findings?kind=close_wait_stuck")["open"]
        .as_array()
        .cloned()
        .unwrap();
    let ours: Vec<&Value> = findings
        .iter()
        .filter(|f| f["subject"]["local"] == addr.to_string())
        .collect();
    assert_eq!(ours.len(), 200);
    assert!(
        ours.iter().all(|f| f["incident_id"] == id.as_str()),
        "findings not pointing at {id}: {:?}",
        ours.iter()
            .filter(|f| f["incident_id"] != id.as_str())
            .take(3)
            .collect::<Vec<_>>()
    );
    let (_, metrics) = support::http_get(d.port, "/metrics").unwrap();
    assert!(
        metrics.contains(&format!(
            "tcpwatch_incident{{id=\"{id}\",kind=\"listener_not_accepting\""
        )) && metrics.contains(&format!("port=\"{port}\"")),
        "no tcpwatch_incident series for {id}"
    );

    // `tcpwatch snapshot --json` carries the incidents of its one sweep (the sockets here are
    // younger than its first sweep can prove, so it does not flag them: only the shape).
    let snap = support::snapshot(&[]);
    assert!(
        snap["incidents"].is_array(),
        "no `incidents` in the snapshot"
    );

    // Alertmanager has exactly one tcpwatch alert about this namespace: the incident's.
    let netns = ns.inode.to_string();
    let ours_in_am = |am: &Alertmanager| -> Vec<Value> {
        am.alerts()
            .into_iter()
            .filter(|a| {
                a["labels"]["alertname"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("Tcpwatch"))
                    && a["labels"]["netns"] == netns.as_str()
            })
            .collect()
    };
    let first = wait_for(WAIT, || {
        let v = ours_in_am(&am);
        (!v.is_empty()).then_some(v)
    });
    assert!(first.is_some(), "no alert in Alertmanager within {WAIT:?}");
    // Let a few more sweeps and evaluations go by: still one.
    std::thread::sleep(Duration::from_secs(3));
    let alerts = ours_in_am(&am);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let a = &alerts[0];
    let l = &a["labels"];
    assert_eq!(l["alertname"], "TcpwatchIncident", "{a:#}");
    assert_eq!(l["incident_id"], id.as_str(), "{a:#}");
    assert_eq!(l["kind"], "listener_not_accepting", "{a:#}");
    assert_eq!(l["port"], port.to_string(), "{a:#}");
    assert_eq!(l["process"], comm.as_str(), "{a:#}");
    let members: u64 = a["annotations"]["members"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=201).contains(&members), "{a:#}");
    drop(listening);
}

/// Role of the re-executed test binary: the server of incident #1 (see [`ChainServer`]).
const ROLE_ENV: &str = "TWT_CHAIN_SERVER";
const SERVER_PORT: u16 = 8080;
const UPSTREAM_PORT: u16 = 9090;

/// The server of the incident #1 chain, run in a child process (this test binary, re-executed
/// with [`ROLE_ENV`] = the namespace path): it listens on :8080, keeps one connection to the
/// upstream on :9090, and for every caller it accepts (and never closes) its handler writes a
/// request to the upstream under one lock, so that once the upstream is gone every handler
/// blocks.
fn chain_server(netns_path: &str) {
    let fd = File::open(netns_path).unwrap();
    // SAFETY: a valid namespace fd; affects this thread and the threads it creates.
    let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {netns_path}");
    let l = TcpListener::bind(("127.0.0.1", SERVER_PORT)).unwrap();
    let up = std::sync::Arc::new(std::sync::Mutex::new(
        TcpStream::connect(("127.0.0.1", UPSTREAM_PORT)).unwrap(),
    ));
    println!("TWT_READY");
    std::io::stdout().flush().unwrap();
    let mut callers = Vec::new();
    for caller in l.incoming() {
        callers.push(caller.unwrap());
        let up = up.clone();
        std::thread::spawn(move || {
            let chunk = vec![7_u8; 16_384];
            let _ = up.lock().unwrap().write_all(&chunk);
        });
    }
}

/// The child process running [`chain_server`], killed on drop.
struct ChainServer(Child);

impl ChainServer {
    fn start(ns: &Netns) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "incident_chain_is_one_incident_and_unrelated_problems_stay_apart",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE_ENV, format!("/run/netns/{}", ns.name))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // libtest prints `test NAME ... ` before the test runs, on the same line.
        let ready = lines.any(|l| l.is_ok_and(|l| l.contains("TWT_READY")));
        assert!(ready, "the chain server did not start");
        Self(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ChainServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn incident_chain_is_one_incident_and_unrelated_problems_stay_apart() {
    if let Ok(path) = std::env::var(ROLE_ENV) {
        chain_server(&path);
        return;
    }
    if !privileged() {
        return;
    }
    let d = Daemon::start(&FAST);
    let a = Netns::new("chain");
    // The upstream: a listener of this process in the same namespace, on its own port.
    let upstream: SocketAddr = ([127, 0, 0, 1], UPSTREAM_PORT).into();
    let up_listener = a.enter(move || TcpListener::bind(upstream).unwrap());
    let server = ChainServer::start(&a);
    let (_up_conn, _) = up_listener.accept().unwrap();
    // The upstream vanishes without FIN or RST.
    a.blackhole_port(UPSTREAM_PORT);

    // Callers send a request, wait a little for an answer that never comes, give up and close.
    let callers = 20;
    let server_addr: SocketAddr = ([127, 0, 0, 1], SERVER_PORT).into();
    let conns: Vec<TcpStream> = (0..callers)
        .map(|_| {
            let mut c = connect(&a, server_addr);
            c.write_all(b"GET / HTTP/1.1\r\nHost: s\r\n\r\n").unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    drop(conns);

    // An unrelated problem in another namespace: a listener (backlog 2) that never accepts.
    let b = Netns::new("other");
    let (_l_full, full_addr) = listener(&b, 2);
    let mut queued: Vec<TcpStream> = (0..3).map(|_| connect(&b, full_addr)).collect();
    drop(queued.pop());

    let t0 = Instant::now();
    let got = wait_for(WAIT, || {
        let in_a = incidents_in(&d, a.inode);
        let in_b = incidents_in(&d, b.inode);
        let chain_done = in_a.len() == 1
            && in_a[0]["kind"] == "blocked_on_upstream"
            && count(&in_a[0], "close_wait_stuck") == callers;
        (chain_done && !in_b.is_empty()).then_some((in_a, in_b))
    });
    let (in_a, in_b) = got.unwrap_or_else(|| {
        panic!(
            "no single blocked_on_upstream incident with {callers} CLOSE_WAIT in {WAIT:?}: {:#}",
            d.get_json("/api/v1/incidents")
        )
    });
    eprintln!("chain incident after {:?}", t0.elapsed());
    let inc = &in_a[0];
    let root = &inc["root"];
    assert_eq!(root["remote"], upstream.to_string(), "{inc:#}");
    assert_eq!(root["local_port"], SERVER_PORT, "{inc:#}");
    assert_eq!(root["process"]["pid"], server.pid(), "{inc:#}");
    let diagnosis = inc["diagnosis"].as_str().unwrap();
    assert!(diagnosis.contains(&upstream.to_string()), "{diagnosis}");
    let consequence = inc["consequence"].as_str().unwrap();
    assert!(
        consequence.contains(&format!(":{SERVER_PORT}")),
        "{consequence}"
    );
    // The CLOSE_WAIT count is the ground truth.
    let truth = ss_close_wait(&a, SERVER_PORT) as u64;
    assert_eq!(truth, callers, "ss CLOSE-WAIT on :{SERVER_PORT}");
    assert_eq!(count(inc, "close_wait_stuck"), truth, "{inc:#}");
    // The upstream's own symptoms are members of the same incident.
    assert!(
        count(inc, "retransmit_chain") + count(inc, "send_queue_growing") >= 1,
        "{inc:#}"
    );
    // The unrelated problem is a second, separate incident.
    assert_eq!(in_b.len(), 1, "{in_b:#?}");
    assert_eq!(in_b[0]["kind"], "listener_not_accepting", "{:#}", in_b[0]);
    assert_eq!(in_b[0]["root"]["local_port"], full_addr.port());
    assert_ne!(in_b[0]["id"], inc["id"]);
    // Every open finding of both namespaces belongs to one of the two.
    let findings = d.get_json("/api/v1/findings")["open"]
        .as_array()
        .cloned()
        .unwrap();
    for f in findings.iter().filter(|f| {
        let n = f["subject"]["netns"]["inode"].as_u64();
        n == Some(a.inode) || n == Some(b.inode)
    }) {
        let n = f["subject"]["netns"]["inode"].as_u64();
        let want = if n == Some(a.inode) {
            &inc["id"]
        } else {
            &in_b[0]["id"]
        };
        assert_eq!(&f["incident_id"], want, "{f:#}");
    }
    drop(queued);
    drop(server);
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
            finding_at(open, "close_wait_stuck", &owned_addr)
                .is_some_and(|f| f["cause"] == "owned"),
            finding_at(open, "close_wait_stuck", &full_addr)
                .is_some_and(|f| f["cause"] == "unaccepted"),
            finding_at(open, "accept_backlog_filling", &full_addr).is_some(),
            finding_at(open, "retransmit_chain", &writer_addr).is_some(),
            finding_at(open, "send_queue_growing", &writer_addr)
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
    let owned = finding_at(&open, "close_wait_stuck", &owned_addr).unwrap();
    assert!(
        owned["diagnosis"].as_str().unwrap().contains("close()"),
        "{owned}"
    );
    let unacc = finding_at(&open, "close_wait_stuck", &full_addr).unwrap();
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
