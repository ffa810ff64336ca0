//! One sweep of the whole host: the `iter/tcp` program run once inside every network
//! namespace (an iterator only walks the namespace of the task that creates it), plus the
//! kernel-side counters. Runs on a dedicated OS thread because it setns()es that thread.
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tcpwatch_common::counter;
use tcpwatch_core::model::{NetnsId, NetnsInfo, ResetCounts};

use crate::kernel::{Kernel, Sweep};
use crate::netns::{self, Home, NetnsHandle};

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
    pub port_resets: HashMap<(u64, u16), ResetCounts>,
    /// Per-endpoint reset and connect classification (issue 13).
    pub endpoints: tcpwatch_core::endpoints::EndpointFacts,
    pub duration: Duration,
    /// Kernel-side entries of vanished sockets removed by this sweep.
    pub socks_gc_removed: usize,
    /// Namespaces that disappeared between discovery and their sweep (normal churn).
    pub vanished: usize,
}

impl SweepBatch {
    #[must_use]
    pub fn sockets(&self) -> usize {
        self.namespaces.iter().map(|n| n.sweep.records.len()).sum()
    }
}

fn sweep_one(kernel: &mut Kernel, home: &Home, h: &NetnsHandle) -> anyhow::Result<NsSweep> {
    home.visit(h, || {
        let t0 = Instant::now();
        let cookie = netns::current_cookie()?;
        let id = NetnsId {
            cookie,
            inode: h.inode,
        };
        let info = netns::current_info(id);
        let sweep = kernel.sweep_current_netns()?;
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
pub fn sweep_all(kernel: &mut Kernel, home: &Home, gc: bool) -> SweepBatch {
    let t0 = Instant::now();
    let mut namespaces = Vec::new();
    let mut errors = Vec::new();
    let mut vanished = 0;
    for h in netns::discover() {
        match sweep_one(kernel, home, &h) {
            Ok(ns) => namespaces.push(ns),
            Err(e) if e.downcast_ref::<netns::Vanished>().is_some() => vanished += 1,
            Err(e) => errors.push(format!("net:[{}]: {e:#}", h.inode)),
        }
    }
    let counters = kernel.counters().unwrap_or_else(|e| {
        errors.push(format!("reading COUNTERS: {e:#}"));
        [0; counter::COUNT as usize]
    });
    let port_resets = kernel.port_resets().unwrap_or_else(|e| {
        errors.push(format!("reading PORT_RESETS: {e:#}"));
        HashMap::new()
    });
    let endpoints = kernel.endpoint_facts(&mut errors);
    // A complete sweep (every namespace read) tells which sockets exist: garbage-collect the
    // kernel entries of the others. Skipped when a namespace could not be read.
    let mut socks_gc_removed = 0;
    if gc && errors.is_empty() && vanished == 0 {
        let start = namespaces
            .iter()
            .map(|n| n.sweep.header.ktime_ns)
            .min()
            .unwrap_or(0);
        let live: HashSet<u64> = namespaces
            .iter()
            .flat_map(|n| n.sweep.records.iter().map(|r| r.skaddr))
            .collect();
        match kernel.gc_socks(&live, start) {
            Ok(n) => socks_gc_removed = n,
            Err(e) => errors.push(format!("garbage-collecting SOCKS: {e:#}")),
        }
    }
    SweepBatch {
        namespaces,
        errors,
        counters,
        port_resets,
        endpoints,
        duration: t0.elapsed(),
        socks_gc_removed,
        vanished,
    }
}
