//! Privileged test: nothing the kernel programs cost or miss is silent (issue 17).
//!
//! A daemon with a one-page ring buffer, then a flood of connections (listed by a sweep, then closed at once) in a namespace of the
//! test: the per-program run counters grow in `/metrics` and `/api/v1/status`, ring-buffer
//! drops (and recursion misses, when the kernel skipped a program) appear in the lost-event
//! accounting, and every figure lies between two readings of the kernel's own counters
//! (`bpftool prog show`: `bpf_prog_info`; `bpftool map dump` of the drop counter) taken
//! around the daemon's sweep, and equals them when nothing moved between the two readings.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use support::bpf::{Figures, bpftool, fdinfo_ids, programs};
use support::{Daemon, Netns, connect, listener, privileged, raise_fd_limit, wait_for};

const SWEEP_MS: u64 = 500;
const FLOOD: usize = 3000;

/// The kernel's own counters for the daemon's programs and its ring-buffer drops.
#[derive(Debug, PartialEq, Eq)]
struct Kernel {
    /// Program id -> (15-character kernel name, figures).
    progs: BTreeMap<u64, (String, Figures)>,
    ringbuf_dropped: u64,
}

fn le_u64(bytes: &Value) -> u64 {
    let b: Vec<u8> = bytes
        .as_array()
        .unwrap()
        .iter()
        .map(|x| u8::from_str_radix(x.as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
        .collect();
    u64::from_le_bytes(b[..8].try_into().unwrap())
}

fn read_kernel(d: &Daemon) -> Kernel {
    let pid = d.child.id();
    let progs = programs(pid);
    let counters = fdinfo_ids(pid, "map_id:")
        .into_iter()
        .find(|id| bpftool(&["map", "show", "id", &id.to_string(), "-j"])["name"] == "COUNTERS")
        .expect("the daemon holds its COUNTERS map");
    let dump = bpftool(&["map", "dump", "id", &counters.to_string(), "-j"]);
    let slot = tcpwatch_common::counter::EVENTS_DROPPED;
    let ringbuf_dropped = dump
        .as_array()
        .unwrap()
        .iter()
        .find(|e| le_u64(&pad(&e["key"])) == u64::from(slot))
        .expect("the drop counter's slot")["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| le_u64(&v["value"]))
        .sum();
    Kernel {
        progs,
        ringbuf_dropped,
    }
}

/// A 4-byte key as 8 bytes (zero-extended).
fn pad(key: &Value) -> Value {
    let mut k = key.as_array().unwrap().clone();
    k.resize(8, Value::from("0x00"));
    Value::from(k)
}

/// A series' integer value (`name{labels}` exactly as exposed, or an unlabelled name).
fn series(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn program_figures(status: &Value) -> BTreeMap<String, (u64, Figures)> {
    status["programs"]
        .as_array()
        .expect("status lists the programs")
        .iter()
        .map(|p| {
            let n = |k: &str| p[k].as_u64().unwrap();
            (
                p["program"].as_str().unwrap().to_owned(),
                (
                    n("id"),
                    (n("run_count"), n("run_time_ns"), n("recursion_misses")),
                ),
            )
        })
        .collect()
}

/// `/api/v1/status` and `/metrics` read from the same sweep (a sweep between the two reads
/// is retried).
fn status_and_metrics(d: &Daemon) -> (Value, String) {
    wait_for(Duration::from_secs(10), || {
        let st = d.get_json("/api/v1/status");
        let m = d.metrics();
        let same = program_figures(&st).iter().all(|(name, (_, f))| {
            let label = format!("{{program=\"{name}\"}}");
            series(&m, &format!("tcpwatch_bpf_program_runs_total{label}")) == Some(f.0)
                && series(
                    &m,
                    &format!("tcpwatch_bpf_program_recursion_misses_total{label}"),
                ) == Some(f.2)
        }) && series(&m, "tcpwatch_ringbuf_dropped_events_total")
            == st["lost_events"]["ringbuf_full"].as_u64();
        same.then_some((st, m))
    })
    .expect("/metrics and /api/v1/status agree within one sweep")
}

/// `v` lies between two readings of the kernel, and equals them when nothing moved.
fn between(what: &str, lo: u64, v: u64, hi: u64) {
    assert!(lo <= v && v <= hi, "{what}: {v} not in [{lo}, {hi}]");
    if lo == hi {
        assert_eq!(v, lo, "{what}: nothing moved, so it equals the kernel");
    }
}

/// Lost events: ring-buffer drops (the one-page ring overflowed) and recursion misses, each
/// equal to the kernel's counters and in one accounting. Returns (drops, misses).
fn check_lost_events(
    st: &Value,
    m: &str,
    (k0, k1): (&Kernel, &Kernel),
    after: &BTreeMap<String, (u64, Figures)>,
) -> (u64, u64) {
    let lost = &st["lost_events"];
    let dropped = lost["ringbuf_full"].as_u64().unwrap();
    between(
        "ring-buffer drops",
        k0.ringbuf_dropped,
        dropped,
        k1.ringbuf_dropped,
    );
    assert!(dropped > 0, "the flood overflowed the one-page ring buffer");
    let misses: u64 = after.values().map(|(_, f)| f.2).sum();
    assert_eq!(lost["recursion_misses"].as_u64(), Some(misses));
    assert_eq!(lost["total"].as_u64(), Some(dropped + misses));
    let lost_metric = |cause: &str| {
        series(
            m,
            &format!("tcpwatch_kernel_events_lost_total{{cause=\"{cause}\"}}"),
        )
    };
    assert_eq!(lost_metric("ringbuf_full"), Some(dropped));
    assert_eq!(lost_metric("recursion_miss"), Some(misses));
    (dropped, misses)
}

#[test]
fn program_run_counters_and_lost_events_match_the_kernel() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("progstat");
    let d = Daemon::with_tiny_ring(&[&format!("daemon.sweep_interval_ms={SWEEP_MS}")]);
    let (st0, m0) = status_and_metrics(&d);
    assert_eq!(
        st0["run_stats_enabled"], true,
        "the daemon holds BPF_ENABLE_STATS"
    );
    assert_eq!(
        series(&m0, "tcpwatch_bpf_program_run_stats_enabled"),
        Some(1)
    );
    let before = program_figures(&st0);
    // One program per hook: connect and listener classification runs inside the state
    // program (no `tp_classify_state` any more).
    for p in ["tp_inet_sock_set_state", "tcpwatch_sweep"] {
        assert!(
            before.contains_key(p) || before.contains_key(&p.replace("tp_", "raw_")),
            "{p} in {before:?}"
        );
    }

    // The flood: connections opened in the test's namespace, listed by a sweep (changes of
    // sockets no sweep listed are counted in the kernel, not sent), then closed at once.
    raise_fd_limit(2 * FLOOD as u64 + 256);
    let (l, addr) = listener(&ns, 4096);
    let open: Vec<_> = (0..FLOOD)
        .map(|_| {
            let c = connect(&ns, addr);
            let (s, _) = l.accept().unwrap();
            (c, s)
        })
        .collect();
    let swept = d.get_json("/api/v1/status")["stats"]["sweeps"]
        .as_u64()
        .unwrap();
    wait_for(Duration::from_secs(10), || {
        (d.get_json("/api/v1/status")["stats"]["sweeps"].as_u64() >= Some(swept + 2)).then_some(())
    })
    .expect("a sweep lists the connections");
    drop(open);

    // The kernel before and after the daemon's next sweeps; what the daemon shows lies
    // between (programs run host-wide, so other traffic may move them meanwhile).
    let k0 = read_kernel(&d);
    let sweeps0 = d.get_json("/api/v1/status")["stats"]["sweeps"]
        .as_u64()
        .unwrap();
    wait_for(Duration::from_secs(10), || {
        (d.get_json("/api/v1/status")["stats"]["sweeps"].as_u64() >= Some(sweeps0 + 3))
            .then_some(())
    })
    .expect("three sweeps");
    let (st, m) = status_and_metrics(&d);
    let k1 = read_kernel(&d);
    let after = program_figures(&st);
    for (name, (id, f)) in &after {
        let (kname, lo) = &k0.progs[id];
        let (_, hi) = &k1.progs[id];
        assert!(
            name.starts_with(kname.as_str()),
            "program {id} is {kname} for the kernel, {name} for the daemon"
        );
        between(&format!("{name} runs"), lo.0, f.0, hi.0);
        between(&format!("{name} run time"), lo.1, f.1, hi.1);
        between(&format!("{name} recursion misses"), lo.2, f.2, hi.2);
    }
    assert_eq!(
        after.len(),
        k1.progs.len(),
        "every program the daemon holds is reported: {after:?} vs {k1:?}"
    );

    // The counters grew with the flood: each connection is at least 3 state changes per end.
    let grown = |p: &str| {
        let key = if after.contains_key(p) {
            p.to_owned()
        } else {
            p.replace("tp_", "raw_")
        };
        after[&key].1.0 - before[&key].1.0
    };
    let state_runs = grown("tp_inet_sock_set_state");
    assert!(
        state_runs >= 6 * FLOOD as u64,
        "state program ran {state_runs} times for {FLOOD} connections"
    );
    assert!(
        !after.keys().any(|p| p.contains("classify_state")),
        "classification has no program of its own: {after:?}"
    );
    assert!(grown("tcpwatch_sweep") > 0, "the sweep iterator ran");

    let (dropped, misses) = check_lost_events(&st, &m, (&k0, &k1), &after);
    eprintln!(
        "flood of {FLOOD} connections: state program {state_runs} runs, {dropped} ring-buffer \
         drops, {misses} recursion misses"
    );
}
