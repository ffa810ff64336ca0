//! Change-only sweeps lose nothing (issue 17): after random changes to about 1 000 sockets in
//! three namespaces (queues filled and drained, half and full closes, new connections,
//! connections left in accept queues or taken out, listeners closed with connections still
//! queued), the daemon's table equals `ss -tan` after the next sweep, namespace by namespace
//! (state, addresses, Recv-Q and Send-Q; accept queue and backlog for listeners).
//!
//! The daemon never sweeps in full on its own here (`daemon.full_sweep_every` is huge), so
//! every socket not changed by a round reaches the table only as a "still here" record: a
//! record dropped, kept stale, or not written in full after a change shows up as a
//! difference. The seed is printed; set `TCPWATCH_TEST_SEED` to replay a run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]
mod support;

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socket2::Socket;
use support::{Daemon, Netns, fill_send_buffer, privileged, raise_fd_limit, ss, wait_for};
use tcpwatch_core::model::TcpState;

/// A small seeded generator (xorshift64*): the same seed replays the same changes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap()).unwrap()
    }
}

/// A listener whose connections the test leaves in the accept queue (taking one out now and
/// then), with the number it left there.
struct Pending {
    sock: Socket,
    addr: SocketAddr,
    queued: usize,
}

const PENDING_BACKLOG: i32 = 64;

/// One namespace and the sockets the test holds there.
struct Load {
    ns: Netns,
    /// Listeners whose connections are accepted at once.
    serving: Vec<(Socket, SocketAddr)>,
    pending: Vec<Pending>,
    /// Both ends of accepted connections, and the clients of queued ones (any end may be
    /// written, drained, shut down or closed).
    streams: Vec<TcpStream>,
}

fn listen(ns: &Netns, backlog: i32) -> (Socket, SocketAddr) {
    support::listener(ns, backlog)
}

impl Load {
    fn new(tag: &str, pairs: usize) -> Self {
        let ns = Netns::new(tag);
        // Orphaned FIN_WAIT2 sockets stay full sockets for longer than the test runs (after
        // tcp_fin_timeout - 60 s they become timewait minisockets, which ss shows as
        // FIN-WAIT-2 and the kernel's iterator as TIME_WAIT).
        ns.sysctl("net.ipv4.tcp_fin_timeout", "1800");
        let serving: Vec<_> = (0..3).map(|_| listen(&ns, 1024)).collect();
        let pending = (0..2)
            .map(|_| {
                let (sock, addr) = listen(&ns, PENDING_BACKLOG);
                Pending {
                    sock,
                    addr,
                    queued: 0,
                }
            })
            .collect();
        let mut l = Self {
            ns,
            serving,
            pending,
            streams: Vec::new(),
        };
        l.connect_served(pairs, &mut Rng(1));
        l
    }

    /// `n` new connections to the serving listeners, accepted: both ends kept.
    fn connect_served(&mut self, n: usize, rng: &mut Rng) {
        let targets: Vec<usize> = (0..n).map(|_| rng.below(self.serving.len())).collect();
        let addrs: Vec<SocketAddr> = targets.iter().map(|&i| self.serving[i].1).collect();
        let clients: Vec<TcpStream> = self.ns.enter(move || {
            addrs
                .iter()
                .map(|a| TcpStream::connect_timeout(a, Duration::from_secs(2)).unwrap())
                .collect()
        });
        for (c, &i) in clients.into_iter().zip(&targets) {
            let (s, _) = self.serving[i].0.accept().unwrap();
            let s: TcpStream = s.into();
            c.set_nonblocking(true).unwrap();
            s.set_nonblocking(true).unwrap();
            self.streams.push(c);
            self.streams.push(s);
        }
    }

    /// One random change.
    fn change(&mut self, rng: &mut Rng, fills: &mut usize) {
        let pick = |rng: &mut Rng, v: &Vec<TcpStream>| rng.below(v.len());
        match rng.below(100) {
            // Data the peer does not read: its Recv-Q grows.
            0..=24 if !self.streams.is_empty() => {
                let i = pick(rng, &self.streams);
                let len = 1 + rng.below(30_000);
                let _ = self.streams[i].write(&vec![0x42; len]);
            }
            // Drain what arrived: Recv-Q back to 0 (the peer's Send-Q too, once ACKed).
            25..=44 if !self.streams.is_empty() => {
                let i = pick(rng, &self.streams);
                let mut buf = vec![0_u8; 65_536];
                for _ in 0..256 {
                    match self.streams[i].read(&mut buf) {
                        Ok(n) if n > 0 => {}
                        _ => break,
                    }
                }
            }
            // A full send buffer: Send-Q here, a full Recv-Q at the peer (a few per round).
            45..=47 if !self.streams.is_empty() && *fills < 2 => {
                let i = pick(rng, &self.streams);
                let _ = fill_send_buffer(&mut self.streams[i]);
                *fills += 1;
            }
            // Half close: FIN_WAIT2 here, CLOSE_WAIT at the peer (both still held).
            48..=57 if !self.streams.is_empty() => {
                let i = pick(rng, &self.streams);
                let _ = self.streams[i].shutdown(Shutdown::Write);
            }
            // Close: FIN (or RST with unread data); the peer may go CLOSE_WAIT, this end
            // FIN_WAIT or TIME_WAIT, or both disappear.
            58..=69 if !self.streams.is_empty() => {
                let i = pick(rng, &self.streams);
                drop(self.streams.swap_remove(i));
            }
            // New accepted connections.
            70..=79 => {
                let n = 1 + rng.below(4);
                self.connect_served(n, rng);
            }
            // A connection left in an accept queue (the listener's Recv-Q).
            80..=89 => {
                let p = rng.below(self.pending.len());
                let pend = &mut self.pending[p];
                if pend.queued + 8 < usize::try_from(PENDING_BACKLOG).unwrap() {
                    let a = pend.addr;
                    let c = self.ns.enter(move || {
                        TcpStream::connect_timeout(&a, Duration::from_secs(2)).unwrap()
                    });
                    c.set_nonblocking(true).unwrap();
                    self.streams.push(c);
                    pend.queued += 1;
                }
            }
            // One taken out of an accept queue.
            90..=95 => {
                let p = rng.below(self.pending.len());
                let pend = &mut self.pending[p];
                if pend.queued > 0 {
                    let (s, _) = pend.sock.accept().unwrap();
                    let s: TcpStream = s.into();
                    s.set_nonblocking(true).unwrap();
                    self.streams.push(s);
                    pend.queued -= 1;
                }
            }
            // A listener closed with connections still queued (they are reset), and a new one.
            96..=97 => {
                let p = rng.below(self.pending.len());
                let (sock, addr) = listen(&self.ns, PENDING_BACKLOG);
                self.pending[p] = Pending {
                    sock,
                    addr,
                    queued: 0,
                };
            }
            _ => {}
        }
    }

    fn sockets(&self) -> usize {
        ss(&self.ns).len()
    }
}

/// One socket as both sides are compared: `ss` state name, local, peer ("*" for listeners),
/// Recv-Q, Send-Q (accept queue and backlog for listeners, as `ss` shows them).
type Row = (String, String, String, u32, u32);

/// The row that stands for a namespace's `TIME_WAIT` sockets: counted by the sweep, not listed
/// (docs/api.md). `ss` shows an orphaned `FIN_WAIT2` minisocket as FIN-WAIT-2: not counted.
fn time_wait_row(count: u64) -> Row {
    (
        "TIME-WAIT".to_owned(),
        "count".to_owned(),
        count.to_string(),
        0,
        0,
    )
}

fn truth(ns: &Netns) -> Vec<Row> {
    let all = ss(ns);
    let tw = all.iter().filter(|r| r.state == "TIME-WAIT").count() as u64;
    let mut rows: Vec<Row> = all
        .into_iter()
        .filter(|r| r.state != "TIME-WAIT")
        .map(|r| {
            let peer = if r.state == "LISTEN" {
                "*".to_owned()
            } else {
                r.peer
            };
            (r.state, r.local.to_string(), peer, r.recv_q, r.send_q)
        })
        .collect();
    rows.push(time_wait_row(tw));
    rows.sort();
    rows
}

/// `GET path` on the daemon's API, retried for a while: on this shared machine a debug build
/// sweeping other tests' 100 000-socket namespaces can be slow to answer.
fn get(d: &Daemon, path: &str) -> String {
    wait_for(Duration::from_mins(1), || {
        support::http_get(d.port, path).and_then(|(status, body)| (status == 200).then_some(body))
    })
    .unwrap_or_else(|| panic!("GET {path}: no answer within 60 s"))
}

fn table(d: &Daemon, ns: &Netns) -> Vec<Row> {
    let n = |v: &serde_json::Value| u32::try_from(v.as_u64().unwrap()).unwrap();
    let body: serde_json::Value = serde_json::from_str(&get(
        d,
        &format!("/api/v1/connections?limit=100000&netns={}", ns.inode),
    ))
    .unwrap();
    let mut rows: Vec<Row> = body["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let state = TcpState::parse(c["state"].as_str().unwrap()).unwrap();
            let q = &c["queues"];
            let local = c["local"].as_str().unwrap().to_owned();
            if state == TcpState::Listen {
                let (aq, al) = (n(&q["accept_queue"]), n(&q["accept_limit"]));
                (state.ss_name().to_owned(), local, "*".to_owned(), aq, al)
            } else {
                let remote = c["remote"].as_str().unwrap().to_owned();
                let (rq, sq) = (n(&q["recv_q"]), n(&q["send_q"]));
                (state.ss_name().to_owned(), local, remote, rq, sq)
            }
        })
        .collect();
    let status: serde_json::Value = serde_json::from_str(&get(d, "/api/v1/status")).unwrap();
    let tw = status["time_wait"]["by_netns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["netns"]["inode"] == ns.inode)
        .map_or(0, |e| e["count"].as_u64().unwrap());
    rows.push(time_wait_row(tw));
    rows.sort();
    rows
}

/// The rows of `a` not matched one for one by rows of `b`.
fn multiset_minus<'a>(a: &'a [Row], b: &[Row]) -> Vec<&'a Row> {
    let mut left: Vec<&Row> = b.iter().collect();
    let mut out = Vec::new();
    for r in a {
        if let Some(i) = left.iter().position(|x| *x == r) {
            left.swap_remove(i);
        } else {
            out.push(r);
        }
    }
    out
}

fn sweeps(d: &Daemon) -> f64 {
    support::metrics::sum(&get(d, "/metrics"), "tcpwatch_sweeps_total")
}

fn records(d: &Daemon, kind: &str) -> f64 {
    let series = format!("tcpwatch_sweep_records_total{{kind=\"{kind}\"}}");
    support::metrics::sum(&get(d, "/metrics"), &series)
}

/// Waits until a sweep that began after now has been applied: `tcpwatch_sweeps_total` counts
/// applied sweeps, and up to two more can be under way (one waiting to be applied, one
/// running), so three more.
fn next_sweep(d: &Daemon) {
    let s0 = sweeps(d);
    wait_for(Duration::from_mins(2), || {
        (sweeps(d) >= s0 + 3.0).then_some(())
    })
    .expect("the daemon keeps sweeping");
}

/// The table of each namespace equals `ss` after the next sweep. `ss` is read before and
/// after the daemon's table: a socket the kernel changed by itself in between (a timer) makes
/// the attempt void, not passed; a difference with `ss` unchanged around it fails.
fn assert_table_is_ss(d: &Daemon, loads: &[Load], round: usize) {
    for attempt in 0.. {
        let before: Vec<Vec<Row>> = loads.iter().map(|l| truth(&l.ns)).collect();
        next_sweep(d);
        let tables: Vec<Vec<Row>> = loads.iter().map(|l| table(d, &l.ns)).collect();
        let after: Vec<Vec<Row>> = loads.iter().map(|l| truth(&l.ns)).collect();
        if before != after {
            assert!(
                attempt < 5,
                "round {round}: the kernel kept changing by itself"
            );
            continue;
        }
        for ((l, t), s) in loads.iter().zip(&tables).zip(&before) {
            let missing = multiset_minus(s, t);
            let extra = multiset_minus(t, s);
            if missing.is_empty() && extra.is_empty() {
                continue;
            }
            // Diagnosis for the message: does it converge later, were records unknown?
            next_sweep(d);
            let later = table(d, &l.ns) == truth(&l.ns);
            panic!(
                "round {round}, namespace {}: the table differs from ss -tan\n\
                 in ss, not in the table: {missing:#?}\nin the table, not in ss: {extra:#?}\n\
                 (equal after another sweep: {later}; unknown records: {}; ring buffer drops: {})",
                l.ns.name,
                records(d, "unknown"),
                support::metrics::sum(&get(d, "/metrics"), "tcpwatch_ringbuf_dropped_events_total"),
            );
        }
        return;
    }
}

#[test]
fn change_only_sweeps_match_ss_after_random_changes() {
    if !privileged() {
        return;
    }
    raise_fd_limit(8192);
    let seed = std::env::var("TCPWATCH_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1717_u64);
    eprintln!("change_only: seed {seed} (TCPWATCH_TEST_SEED replays it)");
    let mut rng = Rng(seed | 1);
    let t0 = Instant::now();
    // 3 × (165 pairs + 5 listeners) ≈ 1 000 sockets.
    let mut loads: Vec<Load> = (0..3).map(|i| Load::new(&format!("co{i}"), 165)).collect();
    let total: usize = loads.iter().map(Load::sockets).sum();
    assert!(total >= 1000, "{total} sockets made");
    let mut d = support::daemon::Daemon::spawn(
        std::path::Path::new(support::BIN),
        support::daemon::pin_dir("co"),
        support::free_port(),
        vec![
            "daemon.sweep_interval_ms=250".into(),
            "daemon.full_sweep_every=1000000".into(),
        ],
        |_| {},
    );
    // Ready after its first sweep of the host, which other tests' namespaces can make long.
    let port = d.port;
    d.wait_ready(Duration::from_mins(3), || {
        support::http_get(port, "/readyz").is_some_and(|(s, _)| s == 200)
    });
    let d = Daemon::from_kit(d);
    assert_table_is_ss(&d, &loads, 0);
    let unchanged_before = records(&d, "unchanged");
    for round in 1..=5 {
        for l in &mut loads {
            let mut fills = 0;
            for _ in 0..40 {
                l.change(&mut rng, &mut fills);
            }
        }
        // Loopback delivery and ACKs (delayed up to 40 ms) settle first.
        std::thread::sleep(Duration::from_millis(300));
        assert_table_is_ss(&d, &loads, round);
    }
    // The sweeps were change-only (the counter is host-wide: other namespaces add to it, and
    // may add `unknown` records too, e.g. when the host has more sockets than the table).
    let unchanged = records(&d, "unchanged") - unchanged_before;
    assert!(
        unchanged >= 5.0 * 900.0,
        "only {unchanged} unchanged records: the sweeps were not change-only"
    );
    assert!(
        t0.elapsed() < Duration::from_mins(10),
        "took {:?}",
        t0.elapsed()
    );
}
