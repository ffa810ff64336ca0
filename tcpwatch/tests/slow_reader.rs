//! A slow reader of `/api/v1/connections` does not delay the event path (issue 19): with
//! 20 000 connections in the table, clients that fetch all of them and read the answer at a
//! trickle (small reads with sleeps, each holding its response for seconds) run while known
//! connections (listed by the start-up sweep) change state; each change's event must reach the
//! daemon's table within 100 ms (measured on the event stream, whose delta the daemon builds
//! when it applies the event to the table). New connections no sweep has listed send no
//! events (their changes are counted in the kernel): the probes are made in advance.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::{Daemon, Netns, listener, privileged, ss, wait_for};

/// Client sockets made; with their server ends (left in the accept queue, holding no
/// descriptor) the table has twice as many connections.
const CLIENTS: usize = 10_000;
/// A new connection is made this often while the reader reads.
const PROBE_EVERY: Duration = Duration::from_millis(50);
/// Probe connections made in advance: one per `PROBE_EVERY` over the test's 60 s window, and
/// the warm-up's.
const PROBES: usize = 1300;

fn raise_nofile(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid rlimit out-pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) };
    assert!(
        lim.rlim_max >= want,
        "hard fd limit {} too low (need {want})",
        lim.rlim_max
    );
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: raising the soft limit to the hard limit is always allowed.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) };
}

/// Fetches every connection and reads the answer 512 bytes at a time with a 20 ms pause,
/// for `hold` from its first byte; then drops it. Counts a 200 answer in `answers` as soon as
/// it begins. Returns the bytes read and the answer's first bytes.
fn slow_read(port: u16, hold: Duration, answers: &AtomicU64) -> (u64, String) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    // A small receive buffer: the daemon cannot hand the whole answer to the kernel at once.
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    let mut s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(
        s,
        "GET /api/v1/connections?limit=100000 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = [0_u8; 512];
    let mut t0 = None;
    let mut first = Vec::new();
    let mut total = 0_u64;
    // `hold` counts from the first byte of the answer.
    while t0.is_none_or(|t: Instant| t.elapsed() < hold) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                t0.get_or_insert_with(Instant::now);
                if first.is_empty() && buf[..n].starts_with(b"HTTP/1.1 200") {
                    answers.fetch_add(1, Ordering::Relaxed);
                }
                if first.len() < 64 {
                    first.extend_from_slice(&buf[..n]);
                }
                total += n as u64;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (total, String::from_utf8_lossy(&first).into_owned())
}

/// An API answer (a shared machine can be slow: 30 s to answer a full listing).
fn json(port: u16, path: &str) -> serde_json::Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
    serde_json::from_str(body).unwrap()
}

/// Subscribes to the daemon's event stream: the local port of every connection upserted into
/// the table, with the time its delta arrived (the event reached the table: the daemon builds
/// the delta when it applies the event).
fn stream_ports(port: u16) -> std::sync::mpsc::Receiver<(u16, Instant)> {
    use std::io::BufRead as _;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        // HTTP/1.0: the body is the plain event text (no chunk framing inside lines).
        "GET /api/v1/stream HTTP/1.0\r\nHost: localhost\r\n\r\n"
    )
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(s).lines() {
            let Ok(line) = line else { return };
            let at = Instant::now();
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else {
                continue;
            };
            if v["type"] == "conn"
                && v["op"] == "upsert"
                && let Some(p) = v["conn"]["local"]
                    .as_str()
                    .and_then(|l| l.rsplit(':').next())
                    .and_then(|p| p.parse().ok())
                && tx.send((p, at)).is_err()
            {
                return;
            }
        }
    });
    rx
}

/// `CLIENTS` connections to a listener of `ns` that never accepts (checked with `ss`).
fn crowd(ns: &Netns) -> (Vec<TcpStream>, socket2::Socket, SocketAddr) {
    ns.sysctl("net.core.somaxconn", "65535");
    ns.sysctl("net.ipv4.tcp_max_syn_backlog", "65535");
    let (listening, addr) = listener(ns, 65535);
    let clients: Vec<TcpStream> = ns.enter(move || {
        (0..CLIENTS)
            .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap())
            .collect()
    });
    let established = ss(ns).iter().filter(|r| r.state == "ESTAB").count();
    assert_eq!(
        established,
        2 * CLIENTS,
        "ss: both ends of every connection"
    );
    (clients, listening, addr)
}

/// Probe connections, made before the daemon starts so that its start-up sweep lists them:
/// the daemon knows them, so a change of one goes out as an event (changes of sockets no
/// sweep has listed are counted in the kernel, not sent). Never accepted.
fn probe_pool(ns: &Netns, probe_addr: SocketAddr) -> Vec<TcpStream> {
    ns.enter(move || {
        (0..PROBES)
            .map(|_| TcpStream::connect_timeout(&probe_addr, Duration::from_secs(5)).unwrap())
            .collect()
    })
}

/// A probe: the client of a known connection half-closes it (`FIN_WAIT1`, then
/// `FIN_WAIT2`: state events that upsert its record); its local port.
fn probe(pool: &mut Vec<TcpStream>, keep: &mut Vec<TcpStream>) -> u16 {
    let c = pool.pop().expect("enough probe connections");
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let port = c.local_addr().unwrap().port();
    keep.push(c);
    port
}

/// The event stream, once it carries a change of a known connection made after subscribing.
fn live_stream(
    port: u16,
    pool: &mut Vec<TcpStream>,
) -> (std::sync::mpsc::Receiver<(u16, Instant)>, Vec<TcpStream>) {
    let seen = stream_ports(port);
    let warm_up = Instant::now();
    let mut warm = Vec::new();
    let live = loop {
        let cport = probe(pool, &mut warm);
        let got = std::iter::from_fn(|| seen.recv_timeout(Duration::from_millis(500)).ok())
            .any(|(p, _)| p == cport);
        if got || warm_up.elapsed() > Duration::from_secs(20) {
            break got;
        }
    };
    assert!(
        live,
        "the event stream carries changes of known connections"
    );
    while seen.try_recv().is_ok() {}
    (seen, warm)
}

/// A client that fetches every connection and reads the answer slowly, again and again.
struct Reader {
    stop: Arc<AtomicBool>,
    /// 200 answers begun.
    answers: Arc<AtomicU64>,
    read_bytes: Arc<AtomicU64>,
    /// The status line of each answer.
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl Reader {
    fn start(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(AtomicU64::new(0));
        let read_bytes = Arc::new(AtomicU64::new(0));
        let (s, a, r) = (stop.clone(), answers.clone(), read_bytes.clone());
        let thread = std::thread::spawn(move || {
            let mut heads = Vec::new();
            while !s.load(Ordering::Relaxed) {
                let (n, head) = slow_read(port, Duration::from_secs(3), &a);
                r.fetch_add(n, Ordering::Relaxed);
                heads.push(head.lines().next().unwrap_or("").to_owned());
            }
            heads
        });
        Self {
            stop,
            answers,
            read_bytes,
            thread,
        }
    }

    /// Stops; the status lines and the bytes read.
    fn stop(self) -> (Vec<String>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let heads = self.thread.join().unwrap();
        (heads, self.read_bytes.load(Ordering::Relaxed))
    }
}

#[test]
fn slow_reader_of_twenty_thousand_connections_does_not_delay_events() {
    if !privileged() {
        return;
    }
    raise_nofile((CLIENTS + PROBES) as u64 + 1000);
    let ns = Netns::new("slowrd");
    let (clients, _crowd, crowd_addr) = crowd(&ns);
    let (_probe, probe_addr) = listener(&ns, 4096);
    let mut pool = probe_pool(&ns, probe_addr);

    // Sweeps only at start-up: the probes' changes reach the table through events only.
    let d = Daemon::start(&["daemon.sweep_interval_ms=600000"]);
    let in_table = wait_for(Duration::from_mins(1), || {
        let v = json(
            d.port,
            &format!(
                "/api/v1/connections?netns={}&state=ESTABLISHED&port={}&limit=100000",
                ns.inode,
                crowd_addr.port()
            ),
        );
        let n = v["connections"].as_array().unwrap().len();
        (n == 2 * CLIENTS).then_some(n)
    });
    assert_eq!(
        in_table,
        Some(2 * CLIENTS),
        "the daemon's table holds every connection ss lists"
    );
    let (seen, _warm) = live_stream(d.port, &mut pool);

    // The reader fetches everything and reads it slowly, again and again. Meanwhile a known
    // connection changes state every 50 ms, whatever the daemon does (so the share of late events is
    // the share of time the event path is held up), and looked for on the event stream. The
    // window covers whole fetches (the daemon preparing the answer, then the client trickling
    // it in): it lasts until the reader has read for 3 s after its first answer began.
    let reader = Reader::start(d.port);
    let mut probes: Vec<(u16, Instant)> = Vec::new();
    let mut keep = Vec::new();
    let t_all = Instant::now();
    let mut answered_at = None;
    let mut next = t_all;
    while t_all.elapsed() < Duration::from_mins(1) {
        if answered_at.is_none() && reader.answers.load(Ordering::Relaxed) > 0 {
            answered_at = Some(Instant::now());
        }
        if answered_at.is_some_and(|t| t.elapsed() > Duration::from_secs(3)) {
            break;
        }
        let t0 = Instant::now();
        probes.push((probe(&mut pool, &mut keep), t0));
        next += PROBE_EVERY;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let window = t_all.elapsed();
    // Events of the last probes may still be on their way: up to 5 s.
    let mut arrived = std::collections::HashMap::new();
    while let Ok((port, at)) = seen.recv_timeout(Duration::from_secs(5)) {
        arrived.entry(port).or_insert(at);
        if probes.iter().all(|(p, _)| arrived.contains_key(p)) {
            break;
        }
    }
    let (heads, read) = reader.stop();
    let mut lat: Vec<Duration> = probes
        .iter()
        .map(|(p, t0)| {
            arrived
                .get(p)
                .map_or(Duration::MAX, |at| at.duration_since(*t0))
        })
        .collect();
    let late = lat
        .iter()
        .filter(|l| **l >= Duration::from_millis(100))
        .count();
    eprintln!(
        "{} event-to-table latencies in {window:?} while a slow reader fetched every \
         connection ({heads:?}, {read} bytes read), {late} later than 100 ms: {lat:?}",
        lat.len()
    );
    assert!(
        answered_at.is_some() && read > 0 && heads.iter().any(|h| h.starts_with("HTTP/1.1 200")),
        "the slow reader got a full listing within 60 s (else nothing was measured): {heads:?}"
    );
    lat.sort();
    let median = lat[lat.len() / 2];
    let p90 = lat[lat.len() * 9 / 10];
    assert!(
        median < Duration::from_millis(100),
        "median {median:?}: {lat:?}"
    );
    assert!(p90 < Duration::from_millis(100), "p90 {p90:?}: {lat:?}");
    drop(clients);
}
