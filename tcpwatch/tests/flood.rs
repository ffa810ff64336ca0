//! Privileged test (issue 17, acceptance): a flood of state changes overflows a one-page ring
//! buffer (connections a sweep has listed, then reset or half-closed at once: changes of
//! sockets no sweep listed are counted in the kernel, not sent). The loss shows in the metrics (ring-buffer drops in the lost-event accounting,
//! and every program's `recursion_misses` equal to what `bpftool prog show` reports for it,
//! between two readings), and after the next sweep the table of the flooded namespace equals
//! `ss -tani` there, tuple for tuple and state for state: the sweep repairs what the dropped
//! events did not say (connections that stayed open, half-closed, or vanished).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use support::{Daemon, Netns, privileged, raise_fd_limit, ss, wait_for};

const SWEEP_MS: u64 = 500;
/// Flooding threads, each with a listener of its own, and connections per thread.
const THREADS: usize = 4;
const PER_THREAD: usize = 1500;
/// Every `KEEP`-th connection stays established, every `HALF`-th is half-closed by its client
/// (`FIN_WAIT2` / `CLOSE_WAIT`, both ends held); every other one is reset by its client and
/// closed by the server: gone, no `TIME_WAIT`.
const KEEP: usize = 40;
const HALF: usize = 55;

/// What one flooding thread leaves open: its listener and the connections it kept.
type Kept = (TcpListener, Vec<(TcpStream, TcpStream)>);

/// One thread's connections, all open, in the namespace.
fn open_thread() -> Kept {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let mut open = Vec::new();
    for _ in 0..PER_THREAD {
        let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
        let (s, _) = l.accept().unwrap();
        c.write_all(b"x").unwrap();
        open.push((c, s));
    }
    (l, open)
}

/// One thread's flood of changes on connections a sweep has listed (changes of sockets no
/// sweep listed are counted in the kernel, not sent): what it keeps.
fn flood_thread((l, open): Kept) -> Kept {
    let mut kept = Vec::new();
    for (i, (c, s)) in (1..=PER_THREAD).zip(open) {
        if i % KEEP == 0 {
            kept.push((c, s));
        } else if i % HALF == 0 {
            c.shutdown(Shutdown::Write).unwrap();
            kept.push((c, s));
        } else {
            socket2::SockRef::from(&c)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(c); // RST: the server end goes to CLOSE
            drop(s);
        }
    }
    (l, kept)
}

/// The flood: every thread's connections opened, listed by a sweep (from then on their changes
/// go out as events), then changed at once. What is kept, and the flood's seconds.
fn flood(d: &Daemon, ns: &Netns) -> (Vec<Kept>, f64) {
    let threads: Vec<_> = (0..THREADS).map(|_| ns.spawn_in(open_thread)).collect();
    let open: Vec<Kept> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    next_sweeps(d, 1.0);
    let t0 = Instant::now();
    let threads: Vec<_> = open
        .into_iter()
        .map(|k| std::thread::spawn(move || flood_thread(k)))
        .collect();
    let kept: Vec<Kept> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    (kept, t0.elapsed().as_secs_f64())
}

/// (`run_cnt`, `recursion_misses`) of the daemon's programs as `bpftool prog show` reports
/// them, by program id.
fn bpftool_progs(d: &Daemon) -> BTreeMap<u64, (u64, u64)> {
    support::bpf::programs(d.child.id())
        .into_iter()
        .map(|(id, (_, (runs, _, misses)))| (id, (runs, misses)))
        .collect()
}

/// A series' value (`name{labels}` exactly as exposed, or an unlabelled name).
fn series(text: &str, name: &str) -> Option<u64> {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "counters: whole, non-negative, far below 2^53"
    )]
    let n = support::metrics::sample(text, name).map(|v| v as u64);
    n
}

fn sweeps(d: &Daemon) -> f64 {
    d.metric_sum("tcpwatch_sweeps_total")
}

/// Waits until `n` sweeps started after this call have completed (bounded: a sweep walks
/// every namespace of the host, which other work may fill with many sockets).
fn next_sweeps(d: &Daemon, n: f64) {
    let s0 = sweeps(d);
    wait_for(Duration::from_secs(90), || {
        (sweeps(d) >= s0 + n + 1.0).then_some(())
    })
    .expect("the daemon keeps sweeping");
}

/// `ss`'s state name as tcpwatch spells it.
fn api_state(ss_state: &str) -> String {
    match ss_state {
        "ESTAB" => "ESTABLISHED".into(),
        "FIN-WAIT-1" => "FIN_WAIT1".into(),
        "FIN-WAIT-2" => "FIN_WAIT2".into(),
        other => other.replace('-', "_"),
    }
}

/// (state, local, remote) of each socket; a listener's remote is left out (ss prints `*`).
type Tuple = (String, String, String);

fn tuple(state: String, local: String, remote: String) -> Tuple {
    let remote = if state == "LISTEN" {
        String::new()
    } else {
        remote
    };
    (state, local, remote)
}

fn table_of(d: &Daemon, ns: &Netns) -> BTreeSet<Tuple> {
    d.connections(&format!("netns={}&limit=100000", ns.inode))
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            tuple(s("state"), s("local"), s("remote"))
        })
        .collect()
}

fn ss_of(ns: &Netns) -> BTreeSet<Tuple> {
    ss(ns)
        .into_iter()
        .map(|r| tuple(api_state(&r.state), r.local.to_string(), r.peer))
        .collect()
}

#[test]
fn flood_losses_show_in_the_metrics_and_the_next_sweep_restores_the_table() {
    if !privileged() {
        return;
    }
    raise_fd_limit((2 * THREADS * PER_THREAD + 512) as u64);
    let ns = Netns::new("flood");
    let d = Daemon::with_tiny_ring(&[&format!("daemon.sweep_interval_ms={SWEEP_MS}")]);
    let lost = |m: &str, cause: &str| {
        series(
            m,
            &format!("tcpwatch_kernel_events_lost_total{{cause=\"{cause}\"}}"),
        )
    };
    let m0 = d.metrics();
    let dropped0 = lost(&m0, "ringbuf_full").expect("ring-buffer drops are exported");

    let (kept, flood_s) = flood(&d, &ns);

    // Recursion misses: every program's series lies between two bpftool readings. The
    // daemon reads the kernel's statistics at the end of each sweep; figures read after the
    // first bpftool reading show more runs of the sweep iterator than that reading did.
    let status = d.get_json("/api/v1/status");
    assert_eq!(status["run_stats_enabled"], true, "the daemon counts runs");
    let k0 = bpftool_progs(&d);
    let sweep_id = status["programs"]
        .as_array()
        .expect("status lists programs")
        .iter()
        .find(|p| p["program"] == "tcpwatch_sweep")
        .expect("the sweep iterator is listed")["id"]
        .as_u64()
        .unwrap();
    let m = wait_for(Duration::from_secs(90), || {
        let m = d.metrics();
        let runs = series(
            &m,
            "tcpwatch_bpf_program_runs_total{program=\"tcpwatch_sweep\"}",
        );
        (runs > Some(k0[&sweep_id].0)).then_some(m)
    })
    .expect("figures of a sweep after the first bpftool reading");
    let k1 = bpftool_progs(&d);
    let programs = status["programs"]
        .as_array()
        .expect("status lists programs");
    assert!(!programs.is_empty());
    let mut misses = 0;
    for p in programs {
        let (id, name) = (p["id"].as_u64().unwrap(), p["program"].as_str().unwrap());
        let v = series(
            &m,
            &format!("tcpwatch_bpf_program_recursion_misses_total{{program=\"{name}\"}}"),
        )
        .unwrap_or_else(|| panic!("no recursion-miss series for {name}"));
        let (lo, hi) = (k0[&id].1, k1[&id].1);
        assert!(
            lo <= v && v <= hi,
            "{name}: {v} recursion misses in /metrics, bpftool said {lo} then {hi}"
        );
        misses += v;
    }
    assert_eq!(
        lost(&m, "recursion_miss"),
        Some(misses),
        "the lost-event accounting sums every program's recursion misses"
    );

    // Ring-buffer drops: the flood overflowed the one-page ring, and the accounting says so.
    let dropped = lost(&m, "ringbuf_full").unwrap() - dropped0;
    assert!(dropped > 0, "no ring-buffer drops after the flood");
    assert_eq!(
        lost(&m, "ringbuf_full"),
        series(&m, "tcpwatch_ringbuf_dropped_events_total"),
        "the two exports of ring-buffer drops agree"
    );

    // The table after the next sweep equals ss (the namespace is quiet now).
    next_sweeps(&d, 1.0);
    let want = ss_of(&ns);
    let got = table_of(&d, &ns);
    let listeners = want.iter().filter(|t| t.0 == "LISTEN").count();
    let by_state = |set: &BTreeSet<Tuple>| {
        let mut m = BTreeMap::<String, usize>::new();
        for t in set {
            *m.entry(t.0.clone()).or_default() += 1;
        }
        m
    };
    let held: usize = kept.iter().map(|(_, k)| 2 * k.len()).sum();
    assert_eq!(listeners, THREADS, "ss lists the flood's listeners");
    assert_eq!(want.len(), THREADS + held, "ss: {:?}", by_state(&want));
    let missing: Vec<&Tuple> = want.difference(&got).take(10).collect();
    let ghosts: Vec<&Tuple> = got.difference(&want).take(10).collect();
    assert!(
        missing.is_empty() && ghosts.is_empty(),
        "table vs ss after the next sweep: missing {missing:?}, ghosts {ghosts:?} \
         (table {:?}, ss {:?})",
        by_state(&got),
        by_state(&want)
    );
    eprintln!(
        "flood: {} connections in {flood_s:.1} s, {dropped} ring-buffer drops, {misses} \
         recursion misses; the table equals ss: {:?}",
        THREADS * PER_THREAD,
        by_state(&got)
    );
    drop(kept);
}
