//! Host-wide CPU cost of a fixed amount of work, with vs without a tool (issue 17, "overhead
//! measured so that it can be seen"): `/proc/stat` busy time of all CPUs around each load,
//! per 1 000 connections (churn) or per GiB (bulk), in alternating rounds; the figure is the
//! median of the per-round with/without ratios and the method's noise floor is the median
//! absolute deviation of those ratios, printed next to it.

use std::fmt::Write as _;

use anyhow::{Context as _, Result};

use super::report::{Goal, Overhead, Results, median, pct};

/// What tcpwatch may add to the host's CPU per unit of work.
pub const MAX_ADDED: f64 = 0.02;
/// The method's noise floor must stay under this.
pub const MAX_NOISE: f64 = 0.03;
/// The peers that must really run here (bcc needs kernel headers this machine kind lacks).
pub const REQUIRED_PEERS: [&str; 2] = ["ss -tani every 1 s", "bpftrace tcpstates+tcpretrans"];

/// The tick counts of `/proc/stat`'s all-CPU `cpu` line: user nice system idle iowait irq
/// softirq steal ...
fn cpu_ticks(stat: &str) -> Option<Vec<u64>> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    line.split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()
}

/// Busy ticks of all CPUs in `/proc/stat`'s `cpu` line: user + nice + system + irq + softirq.
/// Not counted: idle, iowait and steal (time the CPUs did no work of this host); guest time is
/// already inside user and nice.
pub fn parse_busy_ticks(stat: &str) -> Option<u64> {
    let f = cpu_ticks(stat)?;
    Some(f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)?)
}

/// irq + softirq ticks of `/proc/stat`'s `cpu` line (host-wide: loopback's packet processing).
pub fn parse_irq_ticks(stat: &str) -> Option<u64> {
    let f = cpu_ticks(stat)?;
    Some(f.get(5)? + f.get(6)?)
}

/// (host-wide busy, host-wide irq + softirq) CPU seconds so far.
pub fn host_seconds() -> Result<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    let t = super::sys::clock_ticks();
    let busy = parse_busy_ticks(&stat).context("no `cpu` line in /proc/stat")?;
    let irq = parse_irq_ticks(&stat).context("no `cpu` line in /proc/stat")?;
    Ok((busy as f64 / t, irq as f64 / t))
}

/// Median absolute deviation of `v` from its median, relative to the median: the spread of
/// single rounds (None with fewer than two values or a zero median).
pub fn relative_mad(v: &[f64]) -> Option<f64> {
    if v.len() < 2 {
        return None;
    }
    let m = median(v)?;
    if m.abs() < 1e-12 {
        return None;
    }
    let dev: Vec<f64> = v.iter().map(|x| (x - m).abs()).collect();
    Some(median(&dev)? / m.abs())
}

/// One round's figures: host CPU seconds per unit without and with, the tool's own processes'
/// CPU seconds per unit (None: not attributable, e.g. the `ss` processes).
#[derive(Clone, Copy, Debug)]
pub struct CpuRound {
    pub without: f64,
    pub with: f64,
    pub tool: Option<f64>,
    /// The scoped figure (see [`Overhead::scoped_ratios`]) per unit, without and with.
    pub scoped: Option<(f64, f64)>,
}

impl Overhead {
    /// Adds one round of CPU cost.
    pub fn push_cpu(&mut self, r: CpuRound) {
        self.cpu_without.push(r.without);
        self.cpu_with.push(r.with);
        self.cpu_ratios.push(r.with / r.without.max(1e-12));
        if let Some(t) = r.tool {
            self.tool_cpu.push(t);
        }
        if let Some((w0, w1)) = r.scoped {
            self.scoped_ratios.push(w1 / w0.max(1e-12));
        }
    }

    pub fn scoped_median_ratio(&self) -> Option<f64> {
        median(&self.scoped_ratios)
    }

    pub fn cpu_median_ratio(&self) -> Option<f64> {
        median(&self.cpu_ratios)
    }

    /// The CPU-cost method's noise floor: median absolute deviation of the per-round ratios.
    pub fn cpu_noise_floor(&self) -> Option<f64> {
        relative_mad(&self.cpu_ratios)
    }

    /// The same for the throughput ratios.
    pub fn noise_floor(&self) -> Option<f64> {
        relative_mad(&self.ratios)
    }

    fn ran(&self) -> bool {
        self.not_run.is_none() && !self.cpu_ratios.is_empty()
    }
}

fn tcpwatch<'a>(r: &'a Results, load: &str) -> Option<&'a Overhead> {
    r.overhead
        .iter()
        .find(|o| o.tool.starts_with("tcpwatch") && o.load == load)
}

fn ms(x: f64) -> String {
    format!("{:.1} ms", x * 1000.0)
}

/// The CPU-cost goals: tcpwatch adds at most 2 %, the noise floor is under 3 %, tcpwatch
/// adds less than every peer that runs, and the required peers ran.
pub fn goals(r: &Results, g: &mut Vec<Goal>) {
    for load in ["churn", "bulk"] {
        let o = tcpwatch(r, load).filter(|o| o.ran());
        let m = o.and_then(Overhead::cpu_median_ratio);
        let nf = o.and_then(Overhead::cpu_noise_floor);
        let unit = o.map_or("unit", |o| o.cpu_unit.as_str());
        g.push(Goal {
            name: format!(
                "{load}: host CPU per {unit} with tcpwatch <= {} of without",
                pct(1.0 + MAX_ADDED)
            ),
            value: m.map_or("not measured".into(), |m| {
                format!("{} (noise floor {})", pct(m), nf.map_or("n/a".into(), pct))
            }),
            pass: m.map(|m| m <= 1.0 + MAX_ADDED),
            bound: o.map_or_else(String::new, added_bound),
        });
        g.push(Goal {
            name: format!("{load}: CPU-cost method noise floor < {}", pct(MAX_NOISE)),
            value: nf.map_or("n/a (fewer than 2 rounds)".into(), pct),
            pass: nf.map(|x| x < MAX_NOISE),
            bound: o.map_or_else(String::new, |o| {
                format!(
                    "median absolute deviation of {} per-round ratios; the rounds without \
                     tcpwatch themselves spread by {} (median absolute deviation of host CPU \
                     per {unit}): other work on the shared machine lands in either side",
                    o.cpu_ratios.len(),
                    relative_mad(&o.cpu_without).map_or("n/a".into(), pct)
                )
            }),
        });
        peers_goal(r, load, m, nf, g);
    }
    let missing: Vec<String> = REQUIRED_PEERS
        .iter()
        .filter_map(|p| {
            let o = r
                .overhead
                .iter()
                .find(|o| o.tool == *p && o.load == "churn");
            match o {
                Some(o) if o.ran() => None,
                Some(o) => Some(format!(
                    "{p}: {}",
                    o.not_run.as_deref().unwrap_or("no rounds")
                )),
                None => Some(format!("{p}: not measured")),
            }
        })
        .collect();
    let measured = r.overhead.iter().any(|o| o.load == "churn");
    g.push(Goal {
        name: format!("the peers {} really ran", REQUIRED_PEERS.join(" and ")),
        value: if missing.is_empty() {
            "both ran".into()
        } else {
            missing.join("; ")
        },
        pass: measured.then_some(missing.is_empty()),
        bound: "a peer that does not start is reported with its own error".into(),
    });
}

/// What tcpwatch added, split into its daemon's own CPU and the rest (kernel programs in the
/// load's threads, wakeups), all from this run.
fn added_bound(o: &Overhead) -> String {
    let (Some(w0), Some(w1)) = (median(&o.cpu_without), median(&o.cpu_with)) else {
        return String::new();
    };
    let daemon = median(&o.tool_cpu);
    format!(
        "host CPU per {u}: {} without, {} with (+{}); the daemon process itself used {} per \
         {u} (utime+stime), the rest is the kernel programs in the load's threads and the \
         wakeups they cause",
        ms(w0),
        ms(w1),
        ms(w1 - w0),
        daemon.map_or("n/a".into(), ms),
        u = o.cpu_unit
    )
}

fn peers_goal(r: &Results, load: &str, m: Option<f64>, nf: Option<f64>, g: &mut Vec<Goal>) {
    let peers: Vec<(&str, f64)> = r
        .overhead
        .iter()
        .filter(|p| p.load == load && !p.tool.starts_with("tcpwatch") && p.ran())
        .filter_map(|p| Some((p.tool.as_str(), p.cpu_median_ratio()?)))
        .collect();
    let not_lower: Vec<String> = peers
        .iter()
        .filter(|(_, pr)| m.is_some_and(|m| m >= *pr))
        .map(|(t, pr)| format!("{t} {}", pct(*pr)))
        .collect();
    let within: Vec<&str> = peers
        .iter()
        .filter(|(_, pr)| m.zip(nf).is_some_and(|(m, nf)| (m - pr).abs() <= nf))
        .map(|(t, _)| *t)
        .collect();
    let list: Vec<String> = peers
        .iter()
        .map(|(t, pr)| format!("{t} {}", pct(*pr)))
        .collect();
    g.push(Goal {
        name: format!("{load}: host CPU added by tcpwatch lower than by every peer that runs"),
        value: m.map_or("not measured".into(), |m| {
            format!("tcpwatch {} vs {}", pct(m), list.join(", "))
        }),
        pass: m
            .filter(|_| !peers.is_empty())
            .map(|_| not_lower.is_empty()),
        bound: format!(
            "noise floor {}; within it of tcpwatch: {}; not lower than: {}",
            nf.map_or("n/a".into(), pct),
            if within.is_empty() {
                "-".into()
            } else {
                within.join(", ")
            },
            if not_lower.is_empty() {
                "-".into()
            } else {
                not_lower.join(", ")
            }
        ),
    });
}

/// The CPU-cost table.
pub fn table(r: &Results, s: &mut String) {
    let _ = writeln!(
        s,
        "\n### Host CPU cost of a fixed amount of work ({} alternating rounds, median)\n\n\
         Host-wide busy CPU of all CPUs from `/proc/stat` (user + nice + system + irq + \
         softirq) around each load: {} connections of churn, {} of bulk. Ratio: with/without \
         of the same round; noise floor: median absolute deviation of the per-round ratios. \
         Scoped (not a goal, for a shared machine): the CPU of the load's threads, of the \
         tool's processes and of the bench's children (`ss`), plus host-wide irq + softirq, so \
         other work on the machine is mostly left out.\n\n\
         | tool | load | without | with | with/without | per-round ratios | noise floor | \
         tool's own processes | scoped with/without (noise floor) |\n\
         |---|---|---:|---:|---:|---|---:|---:|---:|",
        r.rounds,
        r.churn_conns,
        gib(r.bulk_bytes)
    );
    for o in r.overhead.iter().filter(|o| o.ran()) {
        let rounds: Vec<String> = o.cpu_ratios.iter().map(|x| format!("{x:.3}")).collect();
        let _ = writeln!(
            s,
            "| {} | {} | {}/{u} | {}/{u} | {} | {} | {} | {} | {} |",
            o.tool,
            o.load,
            median(&o.cpu_without).map_or("-".into(), ms),
            median(&o.cpu_with).map_or("-".into(), ms),
            o.cpu_median_ratio().map_or("-".into(), pct),
            rounds.join(" "),
            o.cpu_noise_floor().map_or("-".into(), pct),
            median(&o.tool_cpu).map_or("-".into(), |x| format!("{}/{}", ms(x), o.cpu_unit)),
            o.scoped_median_ratio().map_or("-".into(), |m| format!(
                "{} ({})",
                pct(m),
                relative_mad(&o.scoped_ratios).map_or("-".into(), pct)
            )),
            u = o.cpu_unit
        );
    }
}

pub fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / f64::from(1u32 << 30))
}

#[cfg(test)]
#[path = "cost_tests.rs"]
mod tests;
