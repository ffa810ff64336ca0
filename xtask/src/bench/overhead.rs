//! The fast-path overhead phase: for tcpwatch and each peer, alternating rounds without and
//! with the tool (order swapped every round) of a fixed amount of work (churn connections,
//! bulk bytes): throughput, and host-wide CPU per unit of work (see `cost`).

use std::time::{Duration, Instant};

use anyhow::Result;

use super::cost::{self, CpuRound};
use super::load::{self, ChurnOpts};
use super::peers::{self, Running, Tool};
use super::report::{Overhead, Results};
use super::sys;
use super::{Env, Plan};

/// The port of the bulk load (the lossy phase's nftables rule matches it).
pub const BULK_PORT: u16 = 5201;
/// Upper bound of one fixed-work load (a tool that slows the load down still ends).
const LOAD_LIMIT: Duration = Duration::from_mins(1);
const GIB: f64 = 1_073_741_824.0;

/// One load's figures in one half-round.
#[derive(Clone, Copy, Default)]
struct Half {
    /// conn/s or MiB/s.
    rate: f64,
    /// Host busy CPU seconds per unit of work.
    cpu: f64,
    /// The tool's own processes' CPU seconds per unit (None: not attributable).
    tool: Option<f64>,
    /// Scoped CPU seconds per unit (see `Overhead::scoped_ratios`).
    scoped: f64,
}

/// CPU seconds of `pids` (all threads), summed; None when there is none to read.
fn tool_cpu(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter()
        .map(|p| sys::cpu_seconds(*p).ok())
        .sum::<Option<f64>>()
}

/// CPU seconds over one load.
struct Spent {
    /// Host-wide busy CPU.
    host: f64,
    /// The tool's processes (None: none to read).
    tool: Option<f64>,
    /// This process's threads and reaped children, the tool's processes and host-wide irq +
    /// softirq.
    scoped: f64,
}

/// Runs `work` and returns its result and the CPU spent over it.
fn measured<T>(running: Option<&Running>, work: impl FnOnce() -> Result<T>) -> Result<(T, Spent)> {
    let pids = running.map(Running::pids).unwrap_or_default();
    let own = || sys::self_cpu_seconds() + sys::children_cpu_seconds();
    let ((host0, irq0), tool0, own0) = (cost::host_seconds()?, tool_cpu(&pids), own());
    let out = work()?;
    let ((host1, irq1), tool1, own1) = (cost::host_seconds()?, tool_cpu(&pids), own());
    let tool = tool0.zip(tool1).map(|(a, b)| b - a);
    let spent = Spent {
        host: host1 - host0,
        tool,
        scoped: own1 - own0 + tool.unwrap_or(0.0) + irq1 - irq0,
    };
    Ok((out, spent))
}

fn fixed_churn(plan: &Plan) -> ChurnOpts {
    ChurnOpts {
        clients: plan.clients,
        duration: LOAD_LIMIT,
        rate: None,
        abort_every: 16,
        max_conns: Some(plan.churn_conns),
    }
}

/// One half-round: the churn then the bulk load, each measured.
fn half(plan: &Plan, ns: &str, running: Option<&Running>) -> Result<(Half, Half)> {
    let per_unit = |rate: f64, spent: &Spent, units: f64| Half {
        rate,
        cpu: spent.host / units,
        tool: spent.tool.map(|t| t / units),
        scoped: spent.scoped / units,
    };
    let (c, spent) = measured(running, || load::churn(ns, &fixed_churn(plan)))?;
    let churn = per_unit(c.per_second(), &spent, c.conns.max(1) as f64 / 1000.0);
    let (b, spent) = measured(running, || {
        load::bulk_limited(ns, BULK_PORT, LOAD_LIMIT, plan.bulk_bytes)
    })?;
    let bulk = per_unit(b.mib_per_second(), &spent, b.bytes.max(1) as f64 / GIB);
    Ok((churn, bulk))
}

pub fn overhead(plan: &Plan, env: &Env, r: &mut Results) -> Result<()> {
    let ns = sys::netns("ovh")?;
    let ctx = peers::Ctx {
        bin: env.bin.clone(),
        netns: ns.name.clone(),
        log: env.log.clone(),
    };
    // Warm-up: the first seconds of a fresh namespace are slower.
    load::churn(&ns.path(), &fixed_churn(plan))?;
    load::bulk_limited(&ns.path(), BULK_PORT, LOAD_LIMIT, plan.bulk_bytes)?;
    for tool in Tool::ALL {
        let (churn, bulk) = tool_rounds(plan, &ctx, &ns.path(), tool)?;
        r.overhead.push(churn);
        r.overhead.push(bulk);
    }
    let sockstat = ns.try_exec("cat", &["/proc/net/sockstat"])?;
    r.overhead_time_wait = sockstat_tw(&sockstat).unwrap_or(0);
    eprintln!(
        "bench: {} TIME_WAIT sockets in the load namespace",
        r.overhead_time_wait
    );
    Ok(())
}

/// The alternating rounds of one tool: (churn, bulk).
fn tool_rounds(
    plan: &Plan,
    ctx: &peers::Ctx,
    ns: &str,
    tool: Tool,
) -> Result<(Overhead, Overhead)> {
    let t0 = Instant::now();
    let mut churn = Overhead {
        tool: tool.name().into(),
        load: "churn".into(),
        unit: "conn/s".into(),
        cpu_unit: "1000 connections".into(),
        ..Overhead::default()
    };
    let mut bulk = Overhead {
        load: "bulk".into(),
        unit: "MiB/s".into(),
        cpu_unit: "GiB".into(),
        ..churn.clone()
    };
    'rounds: for round in 0..plan.rounds {
        let mut pair = [(Half::default(), Half::default()); 2];
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for with in order {
            sys::check_stop()?;
            let running = if with {
                match peers::start(tool, ctx) {
                    Ok(x) => Some(x),
                    Err(e) => {
                        sys::check_stop()?;
                        eprintln!("bench: {} does not run: {e:#}", tool.name());
                        churn.not_run = Some(format!("{e:#}"));
                        bulk.not_run.clone_from(&churn.not_run);
                        break 'rounds;
                    }
                }
            } else {
                None
            };
            sys::sleep(Duration::from_millis(300));
            pair[usize::from(with)] = half(plan, ns, running.as_ref())?;
            drop(running);
        }
        let [(c0, b0), (c1, b1)] = pair;
        eprintln!(
            "bench: {} round {}: churn {:.0} -> {:.0} conn/s, {:.1} -> {:.1} ms CPU/1000 \
             conn; bulk {:.0} -> {:.0} MiB/s, {:.0} -> {:.0} ms CPU/GiB",
            tool.name(),
            round + 1,
            c0.rate,
            c1.rate,
            c0.cpu * 1e3,
            c1.cpu * 1e3,
            b0.rate,
            b1.rate,
            b0.cpu * 1e3,
            b1.cpu * 1e3,
        );
        for (o, w0, w1) in [(&mut churn, c0, c1), (&mut bulk, b0, b1)] {
            o.without.push(w0.rate);
            o.with.push(w1.rate);
            o.ratios.push(w1.rate / w0.rate.max(1e-9));
            o.push_cpu(CpuRound {
                without: w0.cpu,
                with: w1.cpu,
                tool: w1.tool,
                scoped: Some((w0.scoped, w1.scoped)),
            });
        }
    }
    for o in [&churn, &bulk] {
        if let (Some(m), Some(nf)) = (o.cpu_median_ratio(), o.cpu_noise_floor()) {
            eprintln!(
                "bench: {} {}: host CPU with/without {:.1} %, noise floor {:.1} %; scoped \
                 {:.1} %, noise floor {:.1} %",
                o.tool,
                o.load,
                m * 100.0,
                nf * 100.0,
                o.scoped_median_ratio().unwrap_or(0.0) * 100.0,
                cost::relative_mad(&o.scoped_ratios).unwrap_or(0.0) * 100.0
            );
        }
    }
    eprintln!(
        "bench: {}: {:.0} s",
        tool.name(),
        t0.elapsed().as_secs_f64()
    );
    Ok((churn, bulk))
}

/// The `tw` count of the `TCP:` line of `/proc/net/sockstat`.
fn sockstat_tw(text: &str) -> Option<u64> {
    let f: Vec<&str> = text
        .lines()
        .find_map(|l| l.strip_prefix("TCP:"))?
        .split_whitespace()
        .collect();
    let i = f.iter().position(|w| *w == "tw")?;
    f.get(i + 1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_time_wait_count() {
        let sockstat = "sockets: used 5\nTCP: inuse 3 orphan 0 tw 4096 alloc 9 mem 1\n";
        assert_eq!(sockstat_tw(sockstat), Some(4096));
        assert_eq!(sockstat_tw("UDP: inuse 1\n"), None);
        assert_eq!(tool_cpu(&[]), None);
    }
}
