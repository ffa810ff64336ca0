//! One sweep of the whole host: the `iter/tcp` program run once inside every network
//! namespace (an iterator only walks the namespace of the task that creates it), plus the
//! kernel-side counters. Runs on a dedicated OS thread because it setns()es that thread.
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tcpwatch_common::counter;
use tcpwatch_core::model::{NetnsId, NetnsInfo, ResetCounts};

use crate::host::generations::Generations;
use crate::host::netns::{self, Home, NetnsHandle};
use crate::kernel::{GcScope, Kernel, Sweep};

/// One namespace's part of a sweep.
#[derive(Debug)]
pub struct NsSweep {
    pub id: NetnsId,
    pub name: Option<String>,
    pub info: NetnsInfo,
    pub sweep: Sweep,
    pub duration: Duration,
}

/// Everything one sweep of the host produced.
#[derive(Debug)]
pub struct SweepBatch {
    pub namespaces: Vec<NsSweep>,
    /// Namespaces that could not be swept, with why (they vanished, or permission).
    pub errors: Vec<String>,
    pub counters: [u64; counter::COUNT as usize],
    /// The kernel's statistics of each program (run time, runs, recursion misses).
    pub programs: Vec<tcpwatch_core::api::ProgramStats>,
    /// Whether run time and run count are being counted.
    pub run_stats_enabled: bool,
    pub port_resets: HashMap<(u64, u16), ResetCounts>,
    /// Per-endpoint reset and connect classification (issue 13).
    pub endpoints: tcpwatch_core::endpoints::EndpointFacts,
    pub duration: Duration,
    /// Kernel-side entries of vanished sockets removed by this sweep.
    pub socks_gc_removed: usize,
    /// Namespaces that disappeared between discovery and their sweep (normal churn).
    pub vanished: usize,
    /// Inodes of namespaces that were found but could not be read for another reason than
    /// having vanished (their records are kept as they are, not treated as gone).
    pub unreadable: HashSet<u32>,
}

impl SweepBatch {
    #[must_use]
    pub fn sockets(&self) -> usize {
        self.namespaces.iter().map(|n| n.sweep.sockets()).sum()
    }
}

fn sweep_one(
    kernel: &mut Kernel,
    home: &Home,
    h: &NetnsHandle,
    generations: &mut Generations,
) -> anyhow::Result<NsSweep> {
    home.visit(h, || {
        let t0 = Instant::now();
        let cookie = netns::current_cookie()?;
        let id = NetnsId {
            cookie,
            inode: h.inode,
        };
        let mut info = netns::current_info(id);
        let generation = generations.for_sweep(cookie);
        let sweep = kernel.sweep_current_netns(generation)?;
        info.time_wait = sweep.time_wait;
        generations.succeeded(cookie, generation);
        Ok(NsSweep {
            id,
            name: h.name.clone(),
            info,
            sweep,
            duration: t0.elapsed(),
        })
    })
}

/// Sweeps every namespace on the host. Never fails as a whole: per-namespace failures are
/// listed in `errors` (and counted by the caller). With `gc`, kernel entries of sockets that
/// no longer exist are removed (costs one syscall per tracked socket: not every sweep).
pub fn sweep_all(
    kernel: &mut Kernel,
    home: &Home,
    gc: bool,
    generations: &mut Generations,
) -> SweepBatch {
    let t0 = Instant::now();
    generations.begin_host_sweep();
    let mut namespaces = Vec::new();
    let mut errors = Vec::new();
    let mut vanished = 0;
    let mut unreadable = HashSet::new();
    // A thread that a failed return left in another namespace must not sweep as if at home:
    // it returns first, and if it cannot, this batch sweeps nothing.
    let mut stranded = match home.enter() {
        Ok(()) => false,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "sweeper thread is not in tcpwatch's own network namespace: sweep skipped");
            errors.push(format!("sweep skipped: {e:#}"));
            true
        }
    };
    for h in netns::discover() {
        if stranded {
            // Not swept: keep its records as they are (not treated as gone).
            unreadable.insert(h.inode);
            continue;
        }
        match sweep_one(kernel, home, &h, generations) {
            Ok(ns) => namespaces.push(ns),
            Err(e) if e.downcast_ref::<netns::Vanished>().is_some() => vanished += 1,
            Err(e) => {
                if e.downcast_ref::<netns::NotHome>().is_some() {
                    tracing::error!(error = %e, "sweep stopped");
                    stranded = true;
                }
                unreadable.insert(h.inode);
                errors.push(format!("net:[{}]: {e:#}", h.inode));
            }
        }
    }
    let counters = kernel.counters().unwrap_or_else(|e| {
        errors.push(format!("reading COUNTERS: {e:#}"));
        [0; counter::COUNT as usize]
    });
    let programs = kernel.program_stats().unwrap_or_else(|e| {
        errors.push(format!("reading program statistics: {e:#}"));
        Vec::new()
    });
    let run_stats_enabled = kernel.run_stats_enabled();
    let port_resets = kernel.port_resets().unwrap_or_else(|e| {
        errors.push(format!("reading PORT_RESETS: {e:#}"));
        HashMap::new()
    });
    let endpoints = kernel.endpoint_facts(&mut errors);
    // A namespace read completely tells which of its sockets exist: garbage-collect the
    // kernel entries of the others there. Entries of namespaces not read (vanished from
    // discovery while their orphans live on, or a transient failure) are left alone, so churn
    // elsewhere neither starves the collection nor deletes live sockets' state.
    //
    // Before Linux 6.16 the TCP iterator can skip a socket when it resumes between two reads
    // (a socket of the same hash bucket went away meanwhile). So an entry is collected only if
    // the previous sweep of its namespace did not list it either: nothing touched it since
    // that sweep started (listing sets `last_sweep_ns`).
    let mut prev_starts = HashMap::new();
    for n in &namespaces {
        if let Some(prev) = kernel.note_sweep_start(n.id.cookie, n.sweep.header.ktime_ns) {
            prev_starts.insert(n.id.cookie, prev);
        }
    }
    let swept_cookies = namespaces.iter().map(|n| n.id.cookie).collect();
    kernel.retain_sweep_starts(&swept_cookies);
    generations.retain(&swept_cookies);
    let mut socks_gc_removed = 0;
    if gc {
        let swept: HashMap<u64, GcScope> = namespaces
            .iter()
            .filter_map(|n| {
                let start = *prev_starts.get(&n.id.cookie)?;
                let live = n.sweep.skaddrs().collect();
                Some((n.id.cookie, GcScope { live, start }))
            })
            .collect();
        let complete = errors.is_empty() && vanished == 0 && swept.len() == namespaces.len();
        match kernel.gc_socks(&swept, complete) {
            Ok(n) => socks_gc_removed = n,
            Err(e) => errors.push(format!("garbage-collecting SOCKS: {e:#}")),
        }
    }
    SweepBatch {
        namespaces,
        errors,
        counters,
        programs,
        run_stats_enabled,
        port_resets,
        endpoints,
        duration: t0.elapsed(),
        socks_gc_removed,
        vanished,
        unreadable,
    }
}

/// The sweep's reference (`tcpwatch snapshot --walk-reference`): every namespace walked by an
/// `iter/tcp` program that only counts, `reps` times; the median walk of the host.
#[derive(Debug, serde::Serialize)]
pub struct ReferenceWalk {
    /// Median over the repetitions of the time to walk every namespace.
    pub duration_ms: f64,
    /// Sockets the reference was handed in the median repetition (all namespaces).
    pub sockets: u64,
    pub namespaces: usize,
    pub repetitions: usize,
    pub errors: Vec<String>,
}

pub fn walk_reference_all(kernel: &mut Kernel, home: &Home, reps: usize) -> ReferenceWalk {
    let mut runs: Vec<(Duration, u64)> = Vec::new();
    let mut errors = Vec::new();
    let mut namespaces = 0;
    let handles = match home.enter() {
        Ok(()) => netns::discover(),
        Err(e) => {
            errors.push(format!("reference walk skipped: {e:#}"));
            Vec::new()
        }
    };
    for _ in 0..reps {
        let (mut took, mut sockets) = (Duration::ZERO, 0);
        namespaces = 0;
        for h in &handles {
            match home.visit(h, || kernel.walk_reference_current_netns()) {
                Ok((n, d)) => {
                    took += d;
                    sockets += n;
                    namespaces += 1;
                }
                Err(e) => errors.push(format!("net:[{}]: {e:#}", h.inode)),
            }
        }
        runs.push((took, sockets));
    }
    runs.sort_by_key(|r| r.0);
    let (took, sockets) = runs.get(runs.len() / 2).copied().unwrap_or_default();
    ReferenceWalk {
        duration_ms: took.as_secs_f64() * 1000.0,
        sockets,
        namespaces,
        repetitions: reps,
        errors,
    }
}
