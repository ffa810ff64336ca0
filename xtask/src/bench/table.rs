//! The result tables (terminal and `docs/performance.md`).

use std::fmt::Write as _;

use super::report::{Goal, Results, median, pct};

fn mark(p: Option<bool>) -> &'static str {
    match p {
        Some(true) => "PASS",
        Some(false) => "FAIL",
        None => "n/a",
    }
}

/// The result tables as Markdown (also printed on the terminal).
pub fn tables(r: &Results) -> String {
    let mut s = String::new();
    kernel_and_overhead_tables(r, &mut s);
    scale_and_daemon_tables(r, &mut s);
    goal_table(r, &mut s);
    s
}

fn kernel_and_overhead_tables(r: &Results, s: &mut String) {
    let _ = writeln!(
        s,
        "### Kernel cost per event (bpf_stats)\n\nThe reference only counts (bpftrace \
         `@c = count()`) on the same tracepoint, loaded by the bench and measured in the same \
         window as tcpwatch's programs.\n\n\
         | program | load | events | ns/event | ratio to the reference | recursion misses |\n\
         |---|---|---:|---:|---:|---:|"
    );
    for p in &r.kernel {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} | {} | {} |",
            p.program,
            p.load,
            p.events,
            p.ns_per_event,
            super::reference::ratio_text(r, p),
            p.recursion_misses
        );
    }
    super::reference::rows(r, s);
    let _ = writeln!(
        s,
        "\nState-program runs per churn connection: {:.1}; ring-buffer records per state-program \
         run: {}\n",
        r.events_per_connection,
        r.records_per_state_change
            .map_or_else(|| "not measured".into(), |x| format!("{x:.2}"))
    );
    let _ = writeln!(
        s,
        "### Fast-path throughput ({} alternating rounds of {} connections of churn and {} \
         of bulk, median)\n\nBaseline spread: (max - min) / median of the rounds without the \
         tool; noise floor: median absolute deviation of the per-round ratios.\n\n\
         | tool | load | without | with | with/without | per-round ratios | baseline spread | \
         noise floor |\n|---|---|---:|---:|---:|---|---:|---:|",
        r.rounds,
        r.churn_conns,
        super::cost::gib(r.bulk_bytes)
    );
    for o in &r.overhead {
        if let Some(why) = &o.not_run {
            let _ = writeln!(
                s,
                "| {} | {} | - | - | does not run: {why} | | | |",
                o.tool, o.load
            );
            continue;
        }
        let rounds: Vec<String> = o.ratios.iter().map(|x| format!("{x:.3}")).collect();
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} {u} | {:.0} {u} | {} | {} | {} | {} |",
            o.tool,
            o.load,
            median(&o.without).unwrap_or(0.0),
            median(&o.with).unwrap_or(0.0),
            o.median_ratio().map_or("-".into(), pct),
            rounds.join(" "),
            o.baseline_spread().map_or("-".into(), pct),
            o.noise_floor().map_or("-".into(), pct),
            u = o.unit
        );
    }
    super::cost::table(r, s);
}

fn scale_and_daemon_tables(r: &Results, s: &mut String) {
    let _ = writeln!(
        s,
        "\n### Sweep scale (median)\n\nIn-process: tcpwatch's own timer around the sweep of every \
         namespace, and `ss`'s wall time minus `ss` on an empty namespace (its fixed start-up \
         cost). Wall clock: the whole processes, `tcpwatch snapshot --json` (program load \
         included) and `ss -N NS -tani`. Reference walk: the same namespaces walked, in the \
         same process right after the sweep, by an `iter/tcp` program that only counts (the \
         kernel's walk alone, the floor of any sweep).\n\n| sockets | swept (all netns) | \
         tcpwatch sweep (in-process) | reference walk (counts only) | sweep/reference | ss dump \
         (in-process est.) | in-process tcpwatch/ss | tcpwatch snapshot (wall) | ss (wall) | \
         wall tcpwatch/ss | snapshot CPU | ss CPU |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for w in &r.sweep {
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} ms | {:.1} ms | {:.2} | {:.1} ms | {:.2} | {:.0} ms | {:.1} ms | {:.2} | {:.0} ms | {:.0} ms |",
            w.sockets,
            w.swept,
            w.tcpwatch_ms,
            w.reference_walk_ms,
            w.tcpwatch_ms / w.reference_walk_ms.max(1e-9),
            w.ss_walk_ms,
            w.tcpwatch_ms / w.ss_walk_ms.max(1e-9),
            w.snapshot_wall_ms,
            w.ss_ms,
            w.snapshot_wall_ms / w.ss_ms.max(1e-9),
            w.snapshot_cpu_ms,
            w.ss_cpu_ms,
        );
    }
    let _ = writeln!(
        s,
        "\n### Daemon cost\n\nSteady sweep: the daemon's own `tcpwatch_sweep_duration_seconds` \
         (change-only sweeps), median of the readings after the CPU interval.\n\n| load | \
         tracked | RSS | CPU (% of one core) | steady sweep |\n|---|---:|---:|---:|---:|"
    );
    for d in &r.daemon_idle {
        let _ = writeln!(
            s,
            "| {} idle connections | {:.0} | {:.1} MiB | {:.2} % | {:.1} ms |",
            d.sockets, d.tracked, d.rss_mib, d.cpu_pct, d.steady_sweep_ms
        );
    }
    for d in &r.daemon_rate {
        let _ = writeln!(
            s,
            "| {:.0} state changes/s (achieved {:.0}/s by the daemon's counters, {:.0} events dropped) | - | {:.1} MiB | {:.2} % | - |",
            d.target_per_s, d.achieved_per_s, d.events_dropped, d.rss_mib, d.cpu_pct
        );
    }
    if let Some(sc) = &r.scrape {
        let _ = writeln!(
            s,
            "\n`/metrics` at {:.0} connections: {:.1} ms, {} bytes.",
            sc.tracked, sc.ms, sc.bytes
        );
    }
    if let Some(d) = &r.detection {
        let v: Vec<String> = d
            .over_threshold_ms
            .iter()
            .map(|x| format!("{x:.0}"))
            .collect();
        let _ = writeln!(
            s,
            "\nStuck-CLOSE_WAIT detection (threshold {:.0} s, sweep interval {:.0} s): \
             threshold + {} ms (trials: {} ms).",
            d.threshold_s,
            d.sweep_interval_s,
            median(&d.over_threshold_ms).map_or("-".into(), |m| format!("{m:.0}")),
            v.join(", ")
        );
    }
}

fn goal_table(r: &Results, s: &mut String) {
    let _ = writeln!(
        s,
        "\n### Goals\n\n| goal | measured | result |\n|---|---|---|"
    );
    for g in &r.goals {
        let _ = writeln!(s, "| {} | {} | {} |", g.name, g.value, mark(g.pass));
    }
    let missed: Vec<&Goal> = r.goals.iter().filter(|g| g.pass == Some(false)).collect();
    if !missed.is_empty() {
        let _ = writeln!(s, "\nWhat bounds the missed goals:\n");
        for g in missed {
            let _ = writeln!(s, "- **{}** ({}): {}", g.name, g.value, g.bound);
        }
    }
    if !r.errors.is_empty() {
        let _ = writeln!(s, "\nPhases that failed:\n");
        for e in &r.errors {
            let _ = writeln!(s, "- {e}");
        }
    }
}

/// Starts the hand-written part of `docs/performance.md` (measurements of a single change, with
/// their own method); a full bench run keeps it, from this line to the end, below the tables.
pub const NOTES_MARKER: &str = "<!-- Hand-written notes below: kept by `cargo xtask bench`. -->";

/// The hand-written notes of an existing `docs/performance.md` (empty if none).
pub fn kept_notes(old: &str) -> &str {
    old.find(NOTES_MARKER).map_or("", |i| &old[i..])
}

/// `docs/performance.md` of `r`, followed by the hand-written notes of the `old` file.
pub fn with_kept_notes(r: &Results, old: &str) -> String {
    let mut text = markdown(r);
    let notes = kept_notes(old);
    if !notes.is_empty() {
        text.push('\n');
        text.push_str(notes);
    }
    text
}

/// `docs/performance.md`.
pub fn markdown(r: &Results) -> String {
    let m = &r.machine;
    format!(
        "# Performance\n\n\
         Generated by `cargo xtask bench` (root); do not edit by hand, except the notes at \
         the end (kept by the bench). The raw figures are in `target/bench/bench.json`.\n\n\
         Machine: {} CPUs, {}, {:.0} GiB RAM, kernel {}; 1-minute load average at the start: \
         {} (a shared machine: other work ran during the bench). Mode: {}, {:.0} s.\n\n\
         Method: every figure that drifts with the machine is paired with a ratio measured in \
         the same run. Loads run in a network namespace of their own on loopback. Churn: \
         parallel clients connect, send 16 bytes, read 16 bytes back and close (one in 16 \
         closes with a reset); bulk: one connection, 64 KiB writes, the reader drains. \
         Overhead rounds alternate without/with the tool (order swapped every round), each a \
         fixed amount of work ({} churn connections, then {} of bulk); the ratio is \
         with/without of the same round and the tables give the median of the per-round \
         ratios and, as the method's noise floor, their median absolute deviation. Throughput \
         is work over wall time; CPU cost is the host-wide busy CPU time of all CPUs \
         (`/proc/stat`: user + nice + system + irq + softirq; idle, iowait and steal not \
         counted) over the load, per 1 000 connections or per GiB, so the daemon, the kernel \
         programs in the load's threads and every wakeup they cause are all in it (and so is \
         other work on the machine, in either side of a round). Kernel cost \
         is measured with `kernel.bpf_stats_enabled=1` (only during that phase) under churn \
         and under bulk with 1 % of the data segments dropped by an nftables input-hook rule, \
         per program, next to a reference the bench loads for the same window: a bpftrace \
         program that only counts (`@c = count()`) on each tracepoint tcpwatch hooks, so both \
         run for the same events; the goals are at most 2x the reference on the program's hook \
         and at most 150 ns/event. The daemon itself keeps run-time statistics on while it runs \
         (`BPF_ENABLE_STATS`, for `tcpwatch_bpf_program_*`). \
         Sweep time is `sweep.duration_ms` of `tcpwatch snapshot --json` (all namespaces) \
         against `ss -N NS -tani` of the bench namespace, compared in-process and wall clock \
         (labelled in the table). Achieved state-change rates are the daemon's own counters \
         (`tcpwatch_kernel_state_changes_total`: changes sent as events plus changes of \
         sockets no sweep had listed, counted in the kernel only; host-wide) over the load's \
         duration. Daemon CPU is utime+stime of \
         `/proc/PID/stat` over the interval; the kernel programs' own time is in the load's \
         threads and shown in the first table.\n\n{}",
        m.nproc,
        m.cpu_model,
        m.mem_gib,
        m.kernel,
        m.loadavg_at_start,
        r.mode,
        r.wall_seconds,
        r.churn_conns,
        super::cost::gib(r.bulk_bytes),
        tables(r)
    )
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
