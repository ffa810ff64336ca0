//! The bench's phases, each in a network namespace of its own (deleted when it ends).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::load::{self, ChurnOpts};
use super::overhead::{BULK_PORT, overhead};
use super::peers::{self, Daemon, Tool};
use super::reference::{self, Reference};
use super::report::{
    DaemonAt, DaemonRate, Detection, ProgCost, Results, Scrape, SweepScale, median,
};
use super::sys::{self, BpfStats, ProgStat};
use super::{Env, Plan};

/// tcpwatch's program names (the kernel keeps 15 characters), for processes that do not
/// name them (the daemon does, in `/api/v1/status`).
const PROGRAMS: &[&str] = &[
    "tp_inet_sock_set_state",
    "raw_inet_sock_set_state",
    "tp_tcp_retransmit_skb",
    "raw_tcp_retransmit_skb",
    "tp_tcp_send_reset",
    "raw_tcp_send_reset",
    "tp_tcp_receive_reset",
    "raw_tcp_receive_reset",
    "tp_classify_state",
    "raw_classify_state",
    "tcpwatch_sweep",
];
const DETECT_THRESHOLD_S: f64 = 2.0;
/// The idle daemon's sweep interval (the goal is at 1 s sweeps).
const IDLE_SWEEP: &str = "daemon.sweep_interval_ms=1000";
/// Its interval in seconds, as reported.
const IDLE_SWEEP_S: f64 = 1.0;

/// Names `--phase` accepts, in run order.
pub const PHASES: [&str; 4] = ["kernel-cost", "overhead", "scale", "daemon"];

/// Runs every phase, or only the one named `only` (one of [`PHASES`]).
pub fn run_all(plan: &Plan, env: &Env, r: &mut Results, only: Option<&str>) -> Result<()> {
    type Phase = fn(&Plan, &Env, &mut Results) -> Result<()>;
    let list: [(&str, Phase); 4] = [
        ("kernel cost", kernel_cost),
        ("fast-path overhead", overhead),
        ("sweep scale and idle daemon", scale),
        ("daemon under churn and detection", daemon_rates),
    ];
    for (i, (name, phase)) in list.into_iter().enumerate() {
        if only.is_some_and(|o| o != PHASES[i]) {
            continue;
        }
        sys::check_stop()?;
        eprintln!("\n==> bench: {name}");
        let t0 = Instant::now();
        if let Err(e) = phase(plan, env, r) {
            sys::check_stop()?;
            eprintln!("bench: phase `{name}` failed: {e:#}");
            r.errors.push(format!("{name}: {e:#}"));
        }
        eprintln!("bench: {name}: {:.0} s", t0.elapsed().as_secs_f64());
    }
    Ok(())
}

fn churn_opts(plan: &Plan, duration: Duration, rate: Option<f64>) -> ChurnOpts {
    ChurnOpts {
        clients: plan.clients,
        duration,
        rate,
        abort_every: 16,
        max_conns: None,
    }
}

/// The full program name for a (possibly truncated) kernel name.
fn full_name(kernel_name: &str) -> String {
    PROGRAMS
        .iter()
        .find(|p| p.starts_with(kernel_name) && kernel_name.len() == p.len().min(15))
        .map_or_else(|| kernel_name.to_owned(), |p| (*p).to_owned())
}

fn prog_stats(pid: u32) -> Result<BTreeMap<u64, ProgStat>> {
    let ids = sys::prog_ids_of(pid);
    if ids.is_empty() {
        bail!("process {pid} holds no BPF programs");
    }
    Ok(sys::bpftool_progs()?
        .into_iter()
        .filter(|p| ids.contains(&p.id))
        .map(|p| (p.id, p))
        .collect())
}

/// Program id -> full name: the daemon's own (`/api/v1/status` `programs`), else none.
type Names = BTreeMap<u64, String>;

fn record_costs(
    load: &str,
    names: &Names,
    before: &BTreeMap<u64, ProgStat>,
    after: &BTreeMap<u64, ProgStat>,
    out: &mut Vec<ProgCost>,
) {
    for (id, a) in after {
        let program = names.get(id).cloned().unwrap_or_else(|| full_name(&a.name));
        let c = reference::cost(program, load, before.get(id), a);
        if c.events == 0 && c.recursion_misses == 0 && a.name != "tp_inet_sock_se" {
            continue;
        }
        out.push(c);
    }
}

fn state_runs(before: &BTreeMap<u64, ProgStat>, after: &BTreeMap<u64, ProgStat>) -> u64 {
    after
        .iter()
        .filter(|(_, a)| full_name(&a.name).ends_with("inet_sock_set_state"))
        .map(|(id, a)| a.run_cnt - before.get(id).map_or(0, |b| b.run_cnt))
        .sum()
}

/// tcpwatch's programs and the counting reference, both read before and after one load.
struct Window<'a> {
    daemon: &'a Daemon,
    names: &'a Names,
    reference: Option<&'a Reference>,
}

impl Window<'_> {
    fn measure<T>(
        &self,
        r: &mut Results,
        load: &str,
        run: impl FnOnce() -> Result<T>,
    ) -> Result<(T, u64)> {
        let stats = |reference: Option<&Reference>| -> Result<_> {
            Ok((
                prog_stats(self.daemon.pid())?,
                reference.map(Reference::stats).transpose()?,
            ))
        };
        let (before, ref_before) = stats(self.reference)?;
        let out = run()?;
        let (after, ref_after) = stats(self.reference)?;
        record_costs(load, self.names, &before, &after, &mut r.kernel);
        if let (Some(reference), Some(b), Some(a)) = (self.reference, ref_before, ref_after) {
            reference.record(load, &b, &a, &mut r.reference);
        }
        Ok((out, state_runs(&before, &after)))
    }
}

fn kernel_cost(plan: &Plan, env: &Env, r: &mut Results) -> Result<()> {
    let ns = sys::netns("kcost")?;
    let daemon = Daemon::start(&env.bin, &[], &env.log)?;
    let stats = BpfStats::enable()?;
    let names = daemon.program_names().unwrap_or_else(|e| {
        eprintln!("bench: program names from the daemon's status: {e:#}");
        Names::new()
    });
    // The counting reference on the same hooks, loaded now: both run on every event below.
    let reference = Reference::start()
        .inspect_err(|e| eprintln!("bench: counting reference not loaded: {e:#}"))
        .ok();
    let window = Window {
        daemon: &daemon,
        names: &names,
        reference: reference.as_ref(),
    };
    let submitted = || -> Result<f64> {
        let (m, _) = daemon.metrics()?;
        Ok(sys::metric(&m, "tcpwatch_kernel_events_submitted_total").unwrap_or(0.0))
    };
    let sub0 = submitted()?;
    let (c, runs) = window.measure(r, "churn", || {
        load::churn(&ns.path(), &churn_opts(plan, plan.round, None))
    })?;
    r.events_per_connection = runs as f64 / c.conns.max(1) as f64;
    // The daemon reads the kernel's counters at each sweep.
    sys::sleep(COUNTER_SETTLE);
    r.records_per_state_change = Some((submitted()? - sub0) / runs.max(1) as f64);
    eprintln!(
        "bench: churn {:.0} conn/s ({} failed), {:.1} state changes per connection",
        c.per_second(),
        c.errors,
        r.events_per_connection
    );
    ns.nft(&format!(
        "add table inet twb\n\
         add chain inet twb in {{ type filter hook input priority 0; }}\n\
         add rule inet twb in tcp dport {BULK_PORT} numgen random mod 100 == 0 drop\n"
    ))?;
    let (b, _) = window.measure(r, "bulk, 1 % loss", || {
        load::bulk(&ns.path(), BULK_PORT, plan.round)
    })?;
    eprintln!("bench: lossy bulk {:.0} MiB/s", b.mib_per_second());
    drop(reference);
    drop(daemon);
    // The same churn under bpftrace's one-printf programs: a reference measured in this run.
    let ctx = peers::Ctx {
        bin: env.bin.clone(),
        netns: ns.name.clone(),
        log: env.log.clone(),
    };
    match peers::start(Tool::Bpftrace, &ctx) {
        Ok(bt) => {
            let pid = bt.pids().first().copied().unwrap_or(0);
            let before = prog_stats(pid)?;
            load::churn(&ns.path(), &churn_opts(plan, plan.round, None))?;
            let after = prog_stats(pid)?;
            let mut costs = Vec::new();
            record_costs("churn", &Names::new(), &before, &after, &mut costs);
            for mut c in costs.into_iter().filter(|c| c.events > 0) {
                c.program = format!("bpftrace {}", c.program);
                r.kernel.push(c);
            }
        }
        Err(e) => eprintln!("bench: bpftrace reference not measured: {e:#}"),
    }
    drop(stats);
    Ok(())
}

/// Runs a command with stdout discarded: (wall time, CPU of the child).
fn timed_quiet(cmd: &mut Command) -> Result<(Duration, f64, std::process::Output)> {
    let cpu0 = sys::children_cpu_seconds();
    let t0 = Instant::now();
    let out = cmd.stdin(Stdio::null()).output()?;
    let took = t0.elapsed();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((took, sys::children_cpu_seconds() - cpu0, out))
}

fn daemon_sample(d: &Daemon, interval: Duration) -> Result<(f64, f64)> {
    let cpu0 = sys::cpu_seconds(d.pid())?;
    let t0 = Instant::now();
    sys::sleep(interval);
    sys::check_stop()?;
    let cpu = (sys::cpu_seconds(d.pid())? - cpu0) / t0.elapsed().as_secs_f64();
    Ok((cpu * 100.0, sys::rss_mib(d.pid())?))
}

fn scale(plan: &Plan, env: &Env, r: &mut Results) -> Result<()> {
    let ns = sys::netns("scale")?;
    // ss's fixed cost: the same command on a namespace without sockets, run right before
    // each measured `ss` (same cache and load conditions); one warm-up run first.
    let empty = sys::netns("ssbase")?;
    let ss_empty = || -> Result<f64> {
        let (took, _, _) = timed_quiet(
            Command::new("ss")
                .args(["-N", &empty.name, "-tani"])
                .stdout(Stdio::null()),
        )?;
        Ok(took.as_secs_f64() * 1000.0)
    };
    ss_empty()?;
    let mut pool = load::Pool::default();
    for &n in &plan.scale {
        sys::check_stop()?;
        pool.grow(&ns.path(), n)?;
        let mut w = SweepScale {
            sockets: pool.sockets(),
            ..SweepScale::default()
        };
        let (mut tw, mut tcpu, mut sw, mut scpu) = (vec![], vec![], vec![], vec![]);
        let (mut twall, mut base, mut ss_dump) = (vec![], vec![], vec![]);
        let mut ref_walk = vec![];
        for _ in 0..plan.sweep_reps {
            sys::check_stop()?;
            let (wall, cpu, out) = timed_quiet(Command::new(&env.bin).args([
                "snapshot",
                "--json",
                "--port",
                "1",
                "--walk-reference",
            ]))?;
            let v: serde_json::Value =
                serde_json::from_slice(&out.stdout).context("snapshot JSON")?;
            tw.push(v["sweep"]["duration_ms"].as_f64().unwrap_or(f64::NAN));
            let rw = &v["sweep"]["reference_walk"];
            ref_walk.push(rw["duration_ms"].as_f64().unwrap_or(f64::NAN));
            w.reference_walk_sockets = rw["sockets"].as_u64().unwrap_or(0);
            w.swept = v["sweep"]["sockets"].as_u64().unwrap_or(0);
            tcpu.push(cpu * 1000.0);
            twall.push(wall.as_secs_f64() * 1000.0);
            let empty_ms = ss_empty()?;
            let (took, cpu, _) = timed_quiet(
                Command::new("ss")
                    .args(["-N", &ns.name, "-tani"])
                    .stdout(Stdio::null()),
            )?;
            sw.push(took.as_secs_f64() * 1000.0);
            base.push(empty_ms);
            ss_dump.push((took.as_secs_f64() * 1000.0 - empty_ms).max(0.0));
            scpu.push(cpu * 1000.0);
        }
        w.tcpwatch_ms = median(&tw).unwrap_or(0.0);
        w.reference_walk_ms = median(&ref_walk).unwrap_or(0.0);
        w.snapshot_cpu_ms = median(&tcpu).unwrap_or(0.0);
        w.snapshot_wall_ms = median(&twall).unwrap_or(0.0);
        w.ss_ms = median(&sw).unwrap_or(0.0);
        w.ss_start_ms = median(&base).unwrap_or(0.0);
        w.ss_walk_ms = median(&ss_dump).unwrap_or(0.0);
        w.ss_cpu_ms = median(&scpu).unwrap_or(0.0);
        eprintln!(
            "bench: {} sockets: in-process tcpwatch sweep {:.1} ms ({} swept; reference walk \
             {:.1} ms) vs ss {:.1} ms; wall clock snapshot {:.0} ms vs ss {:.1} ms (ss on an \
             empty netns {:.1} ms)",
            w.sockets,
            w.tcpwatch_ms,
            w.swept,
            w.reference_walk_ms,
            w.ss_walk_ms,
            w.snapshot_wall_ms,
            w.ss_ms,
            w.ss_start_ms
        );
        r.sweep.push(w);
        if plan.idle.contains(&n) {
            idle_daemon(plan, env, pool.sockets(), r)?;
        }
    }
    drop(pool);
    Ok(())
}

/// The daemon at `sockets` idle connections: CPU, RSS, its steady sweeps, `/metrics`.
fn idle_daemon(plan: &Plan, env: &Env, sockets: usize, r: &mut Results) -> Result<()> {
    let d = Daemon::start(&env.bin, &[IDLE_SWEEP], &env.log)?;
    let tracked = d.wait_tracking(sockets, Duration::from_mins(1))?;
    sys::sleep(Duration::from_secs(1));
    let (cpu_pct, rss_mib) = daemon_sample(&d, plan.measure)?;
    let mut ms = Vec::new();
    let mut steady = Vec::new();
    let mut bytes = 0;
    for _ in 0..plan.sweep_reps {
        let (body, took) = d.metrics()?;
        bytes = body.len();
        ms.push(took.as_secs_f64() * 1000.0);
        steady.extend(
            crate::bench::report::gauge(&body, "tcpwatch_sweep_duration_seconds")
                .map(|s| s * 1000.0),
        );
    }
    eprintln!("bench: daemon at {tracked} connections: {cpu_pct:.2} % CPU, {rss_mib:.1} MiB");
    r.daemon_idle.push(DaemonAt {
        sockets,
        tracked,
        rss_mib,
        cpu_pct,
        sweep_interval_s: IDLE_SWEEP_S,
        steady_sweep_ms: median(&steady).unwrap_or(0.0),
    });
    r.scrape = Some(Scrape {
        tracked,
        ms: median(&ms).unwrap_or(0.0),
        bytes,
    });
    Ok(())
}

fn daemon_rates(plan: &Plan, env: &Env, r: &mut Results) -> Result<()> {
    let ns = sys::netns("rate")?;
    let threshold = format!("detectors.close_wait.threshold_seconds={DETECT_THRESHOLD_S}");
    let d = Daemon::start(&env.bin, &[&threshold], &env.log)?;
    // Pacing only: state changes per connection, as the kernel cost phase counted them, or
    // else from the daemon's own counters over one calibration second. The achieved rate
    // below is always read from the daemon's counters.
    let per_conn = if r.events_per_connection > 1.0 {
        r.events_per_connection
    } else {
        let s0 = Counters::read(&d)?;
        let c = load::churn(
            &ns.path(),
            &churn_opts(plan, Duration::from_secs(1), Some(200.0)),
        )?;
        sys::sleep(COUNTER_SETTLE);
        let s1 = Counters::read(&d)?;
        let per = s1.state_changes_since(&s0) / c.conns.max(1) as f64;
        if per < 1.0 {
            bail!(
                "the daemon counted {per:.2} state changes per connection during calibration: \
                 are its programs attached? (see {})",
                env.log.display()
            );
        }
        per
    };
    for &rate in &plan.rates {
        sys::check_stop()?;
        let c0 = Counters::read(&d)?;
        let cpu0 = sys::cpu_seconds(d.pid())?;
        let c = load::churn(
            &ns.path(),
            &churn_opts(plan, plan.measure, Some(rate / per_conn)),
        )?;
        let cpu = (sys::cpu_seconds(d.pid())? - cpu0) / c.elapsed.as_secs_f64();
        sys::sleep(COUNTER_SETTLE);
        let c1 = Counters::read(&d)?;
        let secs = c.elapsed.as_secs_f64();
        let x = DaemonRate {
            target_per_s: rate,
            achieved_per_s: c1.state_changes_since(&c0) / secs,
            hook_runs_per_s: c1.hook_runs.zip(c0.hook_runs).map(|(b, a)| (b - a) / secs),
            cpu_pct: cpu * 100.0,
            rss_mib: sys::rss_mib(d.pid())?,
            events_dropped: c1.dropped - c0.dropped,
        };
        eprintln!(
            "bench: {rate:.0} state changes/s: the daemon counted {:.0}/s ({:.0} events/s \
             applied; its state programs ran {}/s), daemon {:.2} % CPU",
            x.achieved_per_s,
            (c1.applied - c0.applied) / secs,
            x.hook_runs_per_s.map_or("?".into(), |h| format!("{h:.0}")),
            x.cpu_pct
        );
        r.daemon_rate.push(x);
        sys::sleep(Duration::from_secs(1));
    }
    let mut det = Detection {
        threshold_s: DETECT_THRESHOLD_S,
        sweep_interval_s: 1.0,
        over_threshold_ms: Vec::new(),
    };
    for _ in 0..plan.detect_trials {
        let (server_end, listener, t0) = load::close_wait(&ns.path())?;
        let local = format!("127.0.0.1:{}", listener.local_addr()?.port());
        let limit = Duration::from_secs_f64(DETECT_THRESHOLD_S + 15.0);
        loop {
            sys::check_stop()?;
            if t0.elapsed() > limit {
                bail!("no close_wait_stuck finding for {local} within {limit:?}");
            }
            let (_, body, _) = sys::http_get(d.port, "/api/v1/findings")?;
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let found = v["open"].as_array().is_some_and(|open| {
                open.iter().any(|f| {
                    f["kind"] == "close_wait_stuck" && f["subject"]["local"] == local.as_str()
                })
            });
            if found {
                let ms = t0.elapsed().as_secs_f64() * 1000.0 - DETECT_THRESHOLD_S * 1000.0;
                eprintln!("bench: CLOSE_WAIT found at threshold + {ms:.0} ms");
                det.over_threshold_ms.push(ms);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(server_end);
    }
    r.detection = Some(det);
    Ok(())
}

/// How long after a load the daemon's counters are read: the ring buffer is drained at once,
/// the kernel's drop counter is read at the next sweep (1 s).
const COUNTER_SETTLE: Duration = Duration::from_millis(1200);

/// The daemon's own counters, from its `/metrics`.
struct Counters {
    /// State events applied to its table (`tcpwatch_table_events_applied_total`).
    applied: f64,
    /// Every state change its kernel program saw, sent as an event or only counted
    /// (`tcpwatch_kernel_state_changes_total`, all series); None when not exported.
    changes: Option<f64>,
    /// Runs of its state-change programs, as the daemon exports the kernel's count
    /// (`tcpwatch_bpf_program_runs_total` of the `inet_sock_set_state` programs); None when
    /// the daemon does not export it.
    hook_runs: Option<f64>,
    /// Ring-buffer drops (`tcpwatch_ringbuf_dropped_events_total`).
    dropped: f64,
}

impl Counters {
    fn read(d: &Daemon) -> Result<Self> {
        let (m, _) = d.metrics()?;
        Ok(Self {
            applied: sys::metric(&m, "tcpwatch_table_events_applied_total")
                .context("the daemon's /metrics has no tcpwatch_table_events_applied_total")?,
            hook_runs: state_program_runs(&m),
            changes: state_changes(&m),
            dropped: sys::metric(&m, "tcpwatch_ringbuf_dropped_events_total").unwrap_or(0.0),
        })
    }

    /// State changes since `before`: the daemon's kernel state-change counter (events sent
    /// plus changes only counted), else the state programs' runs, else the events applied
    /// plus the ones the ring buffer dropped (daemons before the counter).
    fn state_changes_since(&self, before: &Self) -> f64 {
        let counted = self.changes.zip(before.changes);
        match counted.or(self.hook_runs.zip(before.hook_runs)) {
            Some((b, a)) => b - a,
            None => self.applied + self.dropped - before.applied - before.dropped,
        }
    }
}

/// The sum of every `tcpwatch_kernel_state_changes_total` series.
fn state_changes(metrics: &str) -> Option<f64> {
    let v: Vec<f64> = metrics
        .lines()
        .filter(|l| l.starts_with("tcpwatch_kernel_state_changes_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!v.is_empty()).then(|| v.iter().sum())
}

/// The sum of `tcpwatch_bpf_program_runs_total` over the `inet_sock_set_state` programs.
fn state_program_runs(metrics: &str) -> Option<f64> {
    let v: Vec<f64> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("tcpwatch_bpf_program_runs_total{") && l.contains("inet_sock_set_state\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!v.is_empty()).then(|| v.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_truncated_program_names() {
        assert_eq!(full_name("tp_inet_sock_se"), "tp_inet_sock_set_state");
        assert_eq!(full_name("raw_tcp_receive"), "raw_tcp_receive_reset");
        assert_eq!(full_name("tcpwatch_sweep"), "tcpwatch_sweep");
        assert_eq!(full_name("tp_classify_sta"), "tp_classify_state");
        assert_eq!(full_name("other"), "other");
        let m = "tcpwatch_bpf_program_runs_total{program=\"tp_inet_sock_set_state\"} 40\n\
                 tcpwatch_bpf_program_runs_total{program=\"tp_classify_state\"} 7\n\
                 tcpwatch_bpf_program_runs_total{program=\"raw_inet_sock_set_state\"} 2\n";
        assert_eq!(state_program_runs(m), Some(42.0));
        assert_eq!(state_program_runs("tcpwatch_up 1\n"), None);
        let c = |applied, hook_runs, dropped| Counters {
            applied,
            changes: None,
            hook_runs,
            dropped,
        };
        assert!(
            (c(10.0, Some(50.0), 1.0).state_changes_since(&c(0.0, Some(20.0), 0.0)) - 30.0).abs()
                < 1e-9
        );
        assert!((c(10.0, None, 1.0).state_changes_since(&c(2.0, None, 0.0)) - 9.0).abs() < 1e-9);
        let m = "tcpwatch_kernel_state_changes_total{delivery=\"counted\",state=\"CLOSE\"} 90\n\
                 tcpwatch_kernel_state_changes_total{delivery=\"event\",state=\"CLOSE\"} 10\n\
                 tcpwatch_kernel_state_changes_total{delivery=\"event\",state=\"LISTEN\"} 0\n";
        assert_eq!(state_changes(m), Some(100.0));
        assert_eq!(state_changes("tcpwatch_up 1\n"), None);
        let k = |changes| Counters {
            changes,
            ..c(10.0, Some(50.0), 1.0)
        };
        assert!((k(Some(500.0)).state_changes_since(&k(Some(100.0))) - 400.0).abs() < 1e-9);
    }
}
