//! The bench's results (written as JSON) and its goals.

use serde::Serialize;

#[derive(Serialize, Default, Debug)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub mem_gib: f64,
    /// 1-minute load average when the bench started (other work on the machine).
    pub loadavg_at_start: String,
}

/// Kernel run time of one program under one load (`bpf_stats`).
#[derive(Serialize, Debug, Clone)]
pub struct ProgCost {
    pub program: String,
    pub load: String,
    pub events: u64,
    pub run_time_ns: u64,
    pub ns_per_event: f64,
    /// Runs the kernel skipped over the load (recursion on one CPU): events never seen.
    pub recursion_misses: u64,
}

/// A tool's effect on one load: alternating rounds without and with it.
#[derive(Serialize, Debug, Clone, Default)]
pub struct Overhead {
    pub tool: String,
    pub load: String,
    pub unit: String,
    /// Why the tool was not measured (e.g. it does not run on this kernel).
    pub not_run: Option<String>,
    pub without: Vec<f64>,
    pub with: Vec<f64>,
    /// with / without, per round.
    pub ratios: Vec<f64>,
    /// Unit of work of the CPU cost (`1000 connections`, `GiB`).
    pub cpu_unit: String,
    /// Host-wide busy CPU seconds per unit of work, per round, without and with the tool.
    pub cpu_without: Vec<f64>,
    pub cpu_with: Vec<f64>,
    /// `cpu_with / cpu_without`, per round.
    pub cpu_ratios: Vec<f64>,
    /// CPU seconds per unit of work of the tool's own processes (when attributable).
    pub tool_cpu: Vec<f64>,
    /// Per round, with/without of the scoped CPU per unit: the load's threads, the tool's
    /// processes, the bench's reaped children and host-wide irq + softirq (other work on a
    /// shared machine mostly left out; shown next to the host-wide figure, not a goal).
    pub scoped_ratios: Vec<f64>,
}

impl Overhead {
    pub fn median_ratio(&self) -> Option<f64> {
        median(&self.ratios)
    }

    /// (max - min) / median of the rounds without the tool: the noise floor.
    pub fn baseline_spread(&self) -> Option<f64> {
        let m = median(&self.without)?;
        let max = self.without.iter().copied().fold(f64::MIN, f64::max);
        let min = self.without.iter().copied().fold(f64::MAX, f64::min);
        Some((max - min) / m)
    }
}

#[derive(Serialize, Debug, Clone, Default)]
pub struct SweepScale {
    /// Sockets made in the bench namespace.
    pub sockets: usize,
    /// Sockets tcpwatch swept in all namespaces (the host's too).
    pub swept: u64,
    /// In-process: tcpwatch's own timer around the sweep of every namespace
    /// (`sweep.duration_ms` of `tcpwatch snapshot --json`).
    pub tcpwatch_ms: f64,
    /// Wall clock of the whole `tcpwatch snapshot` process (start, program load, sweep of
    /// every namespace, owners, output).
    pub snapshot_wall_ms: f64,
    /// CPU of the whole `tcpwatch snapshot` process (load, sweep, owners, output).
    pub snapshot_cpu_ms: f64,
    /// Wall clock of `ss -N NS -tani` (process start included).
    pub ss_ms: f64,
    /// Wall clock of `ss -N EMPTY -tani` on an empty namespace: ss's fixed cost (exec,
    /// libraries, netlink set-up).
    pub ss_start_ms: f64,
    /// ss's in-process estimate: median of `ss` minus `ss` on the empty namespace run just
    /// before it (the dump of the sockets).
    pub ss_walk_ms: f64,
    pub ss_cpu_ms: f64,
    /// The same namespaces walked by a reference `iter/tcp` program that only counts
    /// (`tcpwatch snapshot --walk-reference`, same process, right after the sweep): the
    /// kernel's walk alone, the floor of any sweep.
    pub reference_walk_ms: f64,
    /// Sockets the reference walk was handed (all namespaces).
    pub reference_walk_sockets: u64,
}

#[derive(Serialize, Debug, Clone, Default)]
pub struct DaemonAt {
    pub sockets: usize,
    pub tracked: f64,
    pub rss_mib: f64,
    /// Percent of one core over the measuring interval.
    pub cpu_pct: f64,
    pub sweep_interval_s: f64,
    /// The daemon's own sweeps at this size once steady (change-only): median of its
    /// `tcpwatch_sweep_duration_seconds` gauge read after the CPU interval.
    pub steady_sweep_ms: f64,
}

#[derive(Serialize, Debug, Clone, Default)]
pub struct DaemonRate {
    pub target_per_s: f64,
    /// State events the daemon applied to its table per second (its own counter).
    pub achieved_per_s: f64,
    /// Runs of its state-change programs per second, as the daemon exports them (None: not
    /// exported).
    pub hook_runs_per_s: Option<f64>,
    pub cpu_pct: f64,
    pub rss_mib: f64,
    pub events_dropped: f64,
}

#[derive(Serialize, Debug, Clone, Default)]
pub struct Scrape {
    pub tracked: f64,
    pub ms: f64,
    pub bytes: usize,
}

#[derive(Serialize, Debug, Clone, Default)]
pub struct Detection {
    pub threshold_s: f64,
    pub sweep_interval_s: f64,
    /// Condition start to finding on /api/v1/findings, minus the threshold.
    pub over_threshold_ms: Vec<f64>,
}

#[derive(Serialize, Debug, Clone)]
pub struct Goal {
    pub name: String,
    pub value: String,
    /// None: not measured.
    pub pass: Option<bool>,
    /// What bounds the figure.
    pub bound: String,
}

#[derive(Serialize, Debug, Default)]
pub struct Results {
    pub mode: String,
    pub machine: Machine,
    pub started_unix: u64,
    pub wall_seconds: f64,
    pub rounds: usize,
    pub round_seconds: f64,
    pub kernel: Vec<ProgCost>,
    /// The counting reference on each hook, in the same windows as `kernel` (program = the
    /// hook's tracepoint).
    pub reference: Vec<ProgCost>,
    /// State-program runs per churn connection (both ends).
    pub events_per_connection: f64,
    /// Ring-buffer records the kernel wrote per state-program run under churn
    /// (`tcpwatch_kernel_events_submitted_total` over the runs).
    pub records_per_state_change: Option<f64>,
    pub overhead: Vec<Overhead>,
    /// Work of one overhead round: churn connections and bulk bytes.
    pub churn_conns: u64,
    pub bulk_bytes: u64,
    /// `TIME_WAIT` sockets in the overhead phase's namespace at its end (`/proc/net/sockstat`).
    pub overhead_time_wait: u64,
    pub sweep: Vec<SweepScale>,
    pub daemon_idle: Vec<DaemonAt>,
    pub daemon_rate: Vec<DaemonRate>,
    pub scrape: Option<Scrape>,
    pub detection: Option<Detection>,
    pub goals: Vec<Goal>,
    /// Phases that failed (the others still ran).
    pub errors: Vec<String>,
}

pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        f64::midpoint(s[n / 2 - 1], s[n / 2])
    })
}

/// Kernel cost of the programs whose name contains `part`, over every load.
fn kernel_combined(r: &Results, part: &str) -> (u64, f64) {
    let (n, t) = r
        .kernel
        .iter()
        .filter(|p| p.program.contains(part))
        .fold((0, 0), |(n, t), p| (n + p.events, t + p.run_time_ns));
    (n, if n == 0 { 0.0 } else { t as f64 / n as f64 })
}

fn tcpwatch_overhead<'a>(r: &'a Results, load: &str) -> Option<&'a Overhead> {
    r.overhead
        .iter()
        .find(|o| o.tool.starts_with("tcpwatch") && o.load == load)
}

pub fn pct(x: f64) -> String {
    format!("{:.1} %", x * 100.0)
}

fn goal(name: String, value: String, pass: Option<bool>, bound: String) -> Goal {
    Goal {
        name,
        value,
        pass,
        bound,
    }
}

/// The goals of the issue, evaluated on `r`.
pub fn goals(r: &Results) -> Vec<Goal> {
    let mut g = Vec::new();
    super::reference::goals(r, &mut g);
    kernel_and_overhead_goals(r, &mut g);
    super::cost::goals(r, &mut g);
    scale_and_daemon_goals(r, &mut g);
    g
}

fn kernel_and_overhead_goals(r: &Results, g: &mut Vec<Goal>) {
    for (part, label) in [
        ("inet_sock_set_state", "state"),
        ("retransmit", "retransmit"),
        ("send_reset", "send reset"),
        ("receive_reset", "receive reset"),
    ] {
        let (n, ns) = kernel_combined(r, part);
        let (bn, bns) = kernel_combined(r, "bpftrace");
        let reference = if bn > 0 && n > 0 {
            format!(
                "; bpftrace's one-printf programs on the same churn cost {bns:.0} ns/event \
                 in this run (ratio {:.2})",
                ns / bns
            )
        } else {
            String::new()
        };
        g.push(goal(
            format!("kernel run time of the {label} program <= 150 ns/event"),
            if n == 0 {
                "no events".into()
            } else {
                format!("{ns:.0} ns ({n} events)")
            },
            (n > 0).then_some(ns <= 150.0),
            format!(
                "the program's own work per event (map lookups and updates, {} under churn); \
                 bpf_stats itself adds two clock reads per run{reference}",
                r.records_per_state_change.map_or_else(
                    || "ring-buffer records per state change not measured".into(),
                    |x| format!("{x:.2} ring-buffer records per state change")
                )
            ),
        ));
    }
    for (load, min) in [("churn", 0.98), ("bulk", 0.99)] {
        let o = tcpwatch_overhead(r, load);
        let m = o.and_then(Overhead::median_ratio);
        let spread = o.and_then(Overhead::baseline_spread).unwrap_or(0.0);
        g.push(goal(
            format!("{load} with tcpwatch >= {} of without", pct(min)),
            m.map_or("not measured".into(), pct),
            m.map(|m| m >= min),
            format!(
                "run-to-run noise: the rounds without tcpwatch spread over {} on this shared \
                 machine (noise floor of the per-round ratios: {}); the daemon's own CPU competes with the load for the cores, and the \
                 churn leaves {} TIME_WAIT sockets in its namespace, which every sweep walks \
                 (see the sweep-scale cost per socket)",
                pct(spread),
                o.and_then(Overhead::noise_floor).map_or("n/a".into(), pct),
                r.overhead_time_wait
            ),
        ));
        let peers: Vec<(&str, f64)> = r
            .overhead
            .iter()
            .filter(|p| p.load == load && !p.tool.starts_with("tcpwatch"))
            .filter_map(|p| Some((p.tool.as_str(), p.median_ratio()?)))
            .collect();
        let worse: Vec<String> = peers
            .iter()
            .filter(|(_, pr)| m.is_some_and(|m| m <= *pr))
            .map(|(t, pr)| format!("{t} {}", pct(*pr)))
            .collect();
        g.push(goal(
            format!("{load}: tcpwatch overhead lower than every peer measured"),
            m.map_or("not measured".into(), |m| {
                let list: Vec<String> = peers
                    .iter()
                    .map(|(t, pr)| format!("{t} {}", pct(*pr)))
                    .collect();
                format!("tcpwatch {} vs {}", pct(m), list.join(", "))
            }),
            m.filter(|_| !peers.is_empty()).map(|_| worse.is_empty()),
            format!(
                "differences below the noise floor ({}) are not significant; not lower than: {}",
                pct(spread),
                if worse.is_empty() {
                    "-".into()
                } else {
                    worse.join(", ")
                }
            ),
        ));
    }
}

fn scale_and_daemon_goals(r: &Results, g: &mut Vec<Goal>) {
    let big = r.sweep.iter().max_by_key(|s| s.sockets);
    g.push(goal(
        format!(
            "sweep of {} sockets <= 100 ms",
            big.map_or(0, |s| s.sockets)
        ),
        big.map_or("not measured".into(), |s| {
            format!("{:.1} ms", s.tcpwatch_ms)
        }),
        big.map(|s| s.tcpwatch_ms <= 100.0),
        big.map_or(String::new(), |s| {
            format!(
                "the iter/tcp walk of every socket plus one record each: {:.2} µs per swept \
                 socket ({} swept in all namespaces), the first sweep of a new process (every \
                 socket in full, its per-socket state created); a reference iter/tcp program \
                 that only counts walks the same namespaces in {:.1} ms ({} sockets): the \
                 kernel's walk alone, which no sweep goes below{}",
                s.tcpwatch_ms * 1000.0 / (s.swept.max(1) as f64),
                s.swept,
                s.reference_walk_ms,
                s.reference_walk_sockets,
                r.daemon_idle
                    .iter()
                    .find(|d| d.sockets == s.sockets && d.steady_sweep_ms > 0.0)
                    .map_or(String::new(), |d| format!(
                        "; the daemon's steady (change-only) sweeps at this size take {:.1} ms",
                        d.steady_sweep_ms
                    ))
            )
        }),
    ));
    g.push(goal(
        "sweep faster than `ss -tani` on the same sockets (in-process)".into(),
        big.map_or("not measured".into(), |s| {
            format!(
                "in-process {:.1} ms vs {:.1} ms; wall clock {:.0} ms vs {:.1} ms",
                s.tcpwatch_ms, s.ss_walk_ms, s.snapshot_wall_ms, s.ss_ms
            )
        }),
        big.map(|s| s.tcpwatch_ms < s.ss_walk_ms),
        "in-process: tcpwatch's sweep timer (every namespace) vs ss's wall time minus ss on an \
         empty namespace (one namespace); wall clock: the whole `tcpwatch snapshot` process \
         (program load included) vs the whole `ss` process"
            .into(),
    ));
    daemon_goals(r, g);
    g.push(goal(
        format!(
            "/metrics scrape <= 100 ms at {:.0} connections",
            r.scrape.as_ref().map_or(0.0, |s| s.tracked)
        ),
        r.scrape.as_ref().map_or("not measured".into(), |s| {
            format!("{:.1} ms, {} KiB", s.ms, s.bytes / 1024)
        }),
        r.scrape.as_ref().map(|s| s.ms <= 100.0),
        "rendering per-connection series under the state lock".into(),
    ));
    let det = r.detection.as_ref();
    let det_m = det.and_then(|d| median(&d.over_threshold_ms));
    g.push(goal(
        "CLOSE_WAIT detection <= threshold + 2 sweep intervals".into(),
        det_m.map_or("not measured".into(), |m| format!("threshold + {m:.0} ms")),
        det.zip(det_m)
            .map(|(d, m)| m <= 2.0 * d.sweep_interval_s * 1000.0),
        "a condition is seen at the first sweep after it crosses the threshold (up to one \
         interval), then the findings are evaluated"
            .into(),
    ));
}

/// At most this percent of one core at 10 000 state changes/s.
pub const MAX_RATE_CPU_PCT: f64 = 1.0;
/// At most this percent of one core at the largest idle count (100 000 in full mode).
pub const MAX_IDLE_CPU_PCT: f64 = 5.0;
/// At most this RSS at the largest idle count.
pub const MAX_RSS_MIB: f64 = 96.0;

fn daemon_goals(r: &Results, g: &mut Vec<Goal>) {
    // The load whose rate, by the daemon's own count, came nearest 10 000/s (host-wide: other
    // work on the machine adds to the bench's load).
    let rate = r.daemon_rate.iter().min_by(|a, b| {
        (a.achieved_per_s - 1e4)
            .abs()
            .total_cmp(&(b.achieved_per_s - 1e4).abs())
    });
    g.push(goal(
        format!(
            "daemon <= {MAX_RATE_CPU_PCT} % of one core at ~10000 state changes/s (load aimed \
             at {:.0}/s)",
            rate.map_or(0.0, |x| x.target_per_s)
        ),
        rate.map_or("not measured".into(), |x| {
            format!(
                "{:.2} % at {:.0} state changes/s counted by the daemon{}",
                x.cpu_pct,
                x.achieved_per_s,
                x.hook_runs_per_s.map_or(String::new(), |h| format!(
                    " ({h:.0} runs/s of its state programs)"
                ))
            )
        }),
        rate.map(|x| x.cpu_pct <= MAX_RATE_CPU_PCT),
        rate.map_or(String::new(), |x| {
            format!(
                "ring-buffer reads, event decoding, table updates and the sweeps: {:.2} µs of \
                 daemon CPU per state change ({:.0} state changes/s by \
                 tcpwatch_kernel_state_changes_total, events and kernel-only counts; {:.0} \
                 dropped by the ring buffer)",
                x.cpu_pct * 1e4 / x.achieved_per_s.max(1.0),
                x.achieved_per_s,
                x.events_dropped
            )
        }),
    ));
    let idle = r.daemon_idle.iter().max_by_key(|d| d.sockets);
    let sweep = idle.and_then(|d| r.sweep.iter().find(|s| s.sockets == d.sockets));
    g.push(goal(
        format!(
            "daemon <= {MAX_IDLE_CPU_PCT} % of one core at {} idle connections with {} s sweeps",
            idle.map_or(0, |d| d.sockets),
            idle.map_or(0.0, |d| d.sweep_interval_s)
        ),
        idle.map_or("not measured".into(), |d| format!("{:.2} %", d.cpu_pct)),
        idle.map(|d| d.cpu_pct <= MAX_IDLE_CPU_PCT),
        idle.map_or(String::new(), |d| {
            let per_sweep_ms = d.cpu_pct / 100.0 * d.sweep_interval_s * 1000.0;
            format!(
                "{per_sweep_ms:.1} ms of daemon CPU per sweep interval, {:.0} ns per tracked \
                 connection per sweep{}",
                per_sweep_ms * 1e6 / d.tracked.max(1.0),
                sweep.map_or(String::new(), |s| format!(
                    "; its steady sweeps take {:.1} ms each; the kernel's walk alone (a \
                     reference iter/tcp program that only counts) takes {:.1} ms per sweep, \
                     {:.1} % of a core at {} s sweeps before any work per socket",
                    d.steady_sweep_ms,
                    s.reference_walk_ms,
                    s.reference_walk_ms / 10.0 / d.sweep_interval_s.max(1e-9),
                    d.sweep_interval_s
                ))
            )
        }),
    ));
    g.push(goal(
        format!(
            "RSS <= {MAX_RSS_MIB} MiB at {} connections",
            idle.map_or(0, |d| d.sockets)
        ),
        idle.map_or("not measured".into(), |d| format!("{:.1} MiB", d.rss_mib)),
        idle.map(|d| d.rss_mib <= MAX_RSS_MIB),
        idle.map_or(String::new(), |d| {
            format!(
                "the connection table and its history: {:.0} bytes per tracked connection",
                d.rss_mib * 1_048_576.0 / d.tracked.max(1.0)
            )
        }),
    ));
}

/// The value of an unlabelled series in a Prometheus text exposition.
pub fn gauge(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        let o = Overhead {
            without: vec![90.0, 100.0, 110.0],
            ratios: vec![0.97, 0.99, 1.01],
            ..Overhead::default()
        };
        assert_eq!(o.median_ratio(), Some(0.99));
        assert!((o.baseline_spread().unwrap() - 0.2).abs() < 1e-9);
    }

    #[test]
    fn goals_judge_results() {
        let mut r = Results::default();
        r.kernel.push(ProgCost {
            program: "tp_inet_sock_set_state".into(),
            load: "churn".into(),
            events: 10,
            run_time_ns: 1000,
            ns_per_event: 100.0,
            recursion_misses: 0,
        });
        r.overhead.push(Overhead {
            tool: "tcpwatch daemon".into(),
            load: "churn".into(),
            ratios: vec![0.99],
            without: vec![1.0],
            ..Overhead::default()
        });
        r.overhead.push(Overhead {
            tool: "bpftrace".into(),
            load: "churn".into(),
            ratios: vec![0.9],
            without: vec![1.0],
            ..Overhead::default()
        });
        let g = goals(&r);
        let find = |p: &str| g.iter().find(|x| x.name.contains(p)).unwrap();
        assert_eq!(find("state program").pass, Some(true));
        assert_eq!(find("retransmit program").pass, None);
        assert_eq!(find("churn with tcpwatch").pass, Some(true));
        assert_eq!(find("churn: tcpwatch overhead").pass, Some(true));
        assert_eq!(find("bulk with").pass, None);
        assert!(
            super::super::table::tables(&r)
                .contains("| tp_inet_sock_set_state | churn | 10 | 100 | - | 0 |")
        );
    }
}
