//! `cargo xtask bench [--smoke] [--phase P]` (root): tcpwatch's reproducible performance suite.
//!
//! Builds the release daemon, then measures, each phase in a network namespace of its own:
//! kernel cost per event (`bpf_stats`, only during that phase), fast-path overhead on
//! loopback churn and bulk with alternating without/with rounds for tcpwatch and its peers,
//! sweep time against `ss` at growing socket counts, and the daemon's RSS, CPU, scrape time
//! and detection latency. Prints a table, writes `target/bench/bench.json` and
//! `docs/performance.md`. `--smoke` is the CI-sized run (small sizes, one round, goals not
//! enforced). Everything it starts (namespaces, processes, `bpf_stats`) is undone by guards,
//! also on SIGINT/SIGTERM.
#![allow(
    clippy::cast_precision_loss,
    reason = "counts and durations shown as f64 figures; far below 2^52"
)]

mod cost;
mod load;
mod overhead;
mod peers;
mod phases;
mod reference;
mod report;
mod sys;
mod table;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, bail};

use crate::cmd::{Cmd, Privileges, cargo, is_root};
use crate::setup;
use crate::tasks::workspace_root;

/// The packages the bench runs (besides the build's).
const PACKAGES: &[&str] = &["iproute2", "nftables", "bpftool", "bpftrace", "bpfcc-tools"];

/// Sizes and durations of one run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub rounds: usize,
    pub round: Duration,
    /// Work of one overhead round: churn connections, bulk bytes.
    pub churn_conns: u64,
    pub bulk_bytes: u64,
    pub clients: usize,
    /// Socket counts of the sweep-scale phase (ascending).
    pub scale: Vec<usize>,
    /// Of those, the counts at which the idle daemon is measured.
    pub idle: Vec<usize>,
    /// State changes per second for the daemon-CPU phase.
    pub rates: Vec<f64>,
    /// How long the daemon's CPU is measured.
    pub measure: Duration,
    pub sweep_reps: usize,
    pub detect_trials: usize,
}

impl Plan {
    pub fn new(smoke: bool) -> Self {
        if smoke {
            Self {
                rounds: 1,
                round: Duration::from_secs(1),
                churn_conns: 3000,
                bulk_bytes: 256 << 20,
                clients: 4,
                scale: vec![200, 1000],
                idle: vec![1000],
                rates: vec![1000.0],
                measure: Duration::from_secs(1),
                sweep_reps: 1,
                detect_trials: 1,
            }
        } else {
            Self {
                rounds: 6,
                round: Duration::from_secs(3),
                churn_conns: 50_000,
                bulk_bytes: 4 << 30,
                clients: 8,
                scale: vec![1000, 10_000, 100_000],
                idle: vec![10_000, 100_000],
                rates: vec![1000.0, 10_000.0, 50_000.0],
                measure: Duration::from_secs(5),
                sweep_reps: 5,
                detect_trials: 3,
            }
        }
    }
}

/// Paths the phases share.
pub struct Env {
    pub bin: PathBuf,
    pub out_dir: PathBuf,
    pub log: PathBuf,
}

/// What `cargo xtask bench` was asked for.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub smoke: bool,
    /// Only this phase (one of `phases::PHASES`).
    pub phase: Option<String>,
    /// A tcpwatch binary to measure instead of a fresh release build.
    pub bin: Option<PathBuf>,
}

pub fn run(opts: &Options, pool_helper: Option<&str>, privs: &Privileges) -> Result<()> {
    let (smoke, phase) = (opts.smoke, opts.phase.as_deref());
    if let Some(spec) = pool_helper {
        return load::pool_helper(spec);
    }
    if !is_root() {
        bail!(
            "the bench needs root (network namespaces, eBPF, kernel.bpf_stats_enabled, \
             RLIMIT_NOFILE): run `cargo xtask bench` as root"
        );
    }
    if let Some(p) = phase
        && !phases::PHASES.contains(&p)
    {
        bail!("no bench phase `{p}`: one of {}", phases::PHASES.join(", "));
    }
    let started = Instant::now();
    sys::install_signal_handlers();
    sys::remove_stale_netns();
    let plan = Plan::new(smoke);
    let root = workspace_root();
    let env = prepare(&root, opts.bin.as_deref(), privs)?;

    let mut r = report::Results {
        mode: match (smoke, phase) {
            (true, None) => "smoke".into(),
            (false, None) => "full".into(),
            (true, Some(p)) => format!("smoke, phase {p}"),
            (false, Some(p)) => format!("phase {p}"),
        },
        machine: machine(),
        started_unix: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        rounds: plan.rounds,
        round_seconds: plan.round.as_secs_f64(),
        churn_conns: plan.churn_conns,
        bulk_bytes: plan.bulk_bytes,
        ..report::Results::default()
    };
    sys::raise_nofile(65_536)?;

    phases::run_all(&plan, &env, &mut r, phase)?;

    r.wall_seconds = started.elapsed().as_secs_f64();
    r.goals = report::goals(&r);
    let tables = table::tables(&r);
    println!("\n{tables}");
    let json = match phase {
        Some(p) => env.out_dir.join(format!("bench-{p}.json")),
        None => env.out_dir.join("bench.json"),
    };
    std::fs::write(&json, serde_json::to_string_pretty(&r)?)?;
    // Only a full run of every phase replaces the committed table; a smoke run (CI, `cargo
    // xtask test`) or a single phase writes its own next to the JSON.
    let md = match (smoke, phase) {
        (_, Some(p)) => env.out_dir.join(format!("performance-{p}.md")),
        (true, None) => env.out_dir.join("performance-smoke.md"),
        (false, None) => root.join("docs/performance.md"),
    };
    let text = if smoke {
        table::markdown(&r)
    } else {
        table::with_kept_notes(&r, &std::fs::read_to_string(&md).unwrap_or_default())
    };
    std::fs::write(&md, text)?;
    eprintln!(
        "bench: {} mode finished in {:.0} s; wrote {} and {}",
        r.mode,
        r.wall_seconds,
        json.display(),
        md.display()
    );
    if !r.errors.is_empty() {
        bail!(
            "{} bench phase(s) failed: {}",
            r.errors.len(),
            r.errors.join("; ")
        );
    }
    let missed = r.goals.iter().filter(|g| g.pass == Some(false)).count();
    if missed > 0 {
        if smoke || phase.is_some() {
            eprintln!("bench: {missed} goal(s) missed (not enforced in --smoke or --phase mode)");
        } else {
            bail!("{missed} goal(s) missed; see the table above and docs/performance.md");
        }
    }
    Ok(())
}

/// Setup, bench packages, release build; the paths the phases use.
fn prepare(root: &Path, given: Option<&Path>, privs: &Privileges) -> Result<Env> {
    setup::run(setup::Options::default(), privs)?;
    ensure_packages()?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let bin = if let Some(b) = given {
        b.to_path_buf()
    } else {
        Cmd::new(cargo())
            .args(["build", "--release", "-p", "tcpwatch"])
            .dir(root)
            .run()?;
        target.join("release").join("tcpwatch")
    };
    if !bin.is_file() {
        bail!("{} was not built", bin.display());
    }
    let out_dir = target.join("bench");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("create {}", out_dir.display()))?;
    let log = out_dir.join("daemon.log");
    let _ = std::fs::remove_file(&log);
    Ok(Env { bin, out_dir, log })
}

fn ensure_packages() -> Result<()> {
    let out = Cmd::new("dpkg-query")
        .args(["-W", "-f=${Package}\t${db:Status-Abbrev}\n"])
        .args(PACKAGES)
        .output()?;
    let installed = setup::installed_packages(&out.stdout);
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed.contains(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("bench: installing {}", missing.join(" "));
    Cmd::new("apt-get")
        .args(["update", "-q"])
        .no_stdin()
        .run()?;
    Cmd::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .no_stdin()
        .run()
}

fn machine() -> report::Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    report::Machine {
        nproc: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|v| v.split_once(':'))
            .map_or_else(|| "unknown".into(), |(_, v)| v.trim().to_owned()),
        kernel: sys::read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
        mem_gib: mem_kib / 1_048_576.0,
        loadavg_at_start: sys::read_trimmed("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned(),
    }
}
