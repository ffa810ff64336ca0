//! `tcpwatch snapshot`: load the programs, sweep every namespace once, attribute owners, run
//! the detectors once and print the table (like `ss -tanpi` plus tcpwatch's columns) or JSON.
use std::collections::HashSet;
use std::time::Duration;

use serde::Serialize;
use tcpwatch_core::config::Config;
use tcpwatch_core::model::{ConnRecord, Finding, TcpState};
use tcpwatch_core::render;

use crate::daemon::{DaemonOptions, calibrate, load_options, new_shared};
use crate::kernel::Kernel;
use crate::netns::Home;
use crate::owners::OwnerIndex;
use crate::state::mono_now;
use crate::sweeper::sweep_all;

#[derive(Clone, Debug, Default)]
pub struct SnapshotArgs {
    pub json: bool,
    pub state: Option<TcpState>,
    pub port: Option<u16>,
}

#[derive(Serialize)]
struct SweepSummary {
    namespaces: usize,
    sockets: usize,
    duration_ms: f64,
    errors: Vec<String>,
    hz: u32,
}

#[derive(Serialize)]
struct Output<'a> {
    /// `CLOCK_MONOTONIC` ns at which the snapshot was taken (the base of `state_since` etc.).
    now_ns: u64,
    sweep: SweepSummary,
    connections: Vec<&'a ConnRecord>,
    findings: Vec<&'a Finding>,
}

pub fn run(cfg: &Config, args: &SnapshotArgs, opts: DaemonOptions) -> anyhow::Result<()> {
    let mut kernel = Kernel::load(&load_options(cfg, opts))?;
    let clock = calibrate(&mut kernel)?;
    let home = Home::current()?;
    let batch = sweep_all(&mut kernel, &home, false);
    let now = mono_now();
    let mut shared = new_shared(cfg, &kernel, clock);
    let wanted: HashSet<u64> = shared.apply_sweep(&batch, now);
    let mut owners = OwnerIndex::new(Duration::ZERO);
    owners.refresh(&wanted, true);
    shared.table.attach_owners(|ino| owners.get(ino));
    let _ = shared.evaluate(now);

    let mut conns: Vec<&ConnRecord> = shared
        .table
        .iter()
        .filter(|c| args.state.is_none_or(|s| c.state == s))
        .filter(|c| {
            args.port
                .is_none_or(|p| c.local.port() == p || c.remote.port() == p)
        })
        .collect();
    conns.sort_by_key(|c| (c.netns.inode, c.state, c.local, c.remote));
    let findings: Vec<&Finding> = shared.detectors.open().collect();
    if args.json {
        let out = Output {
            now_ns: now,
            sweep: SweepSummary {
                namespaces: batch.namespaces.len(),
                sockets: batch.sockets(),
                duration_ms: batch.duration.as_secs_f64() * 1000.0,
                errors: batch.errors.clone(),
                hz: clock.hz,
            },
            connections: conns,
            findings,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", render::table(&conns, now));
        println!(
            "\n{} sockets in {} namespaces, swept in {:.1} ms",
            batch.sockets(),
            batch.namespaces.len(),
            batch.duration.as_secs_f64() * 1000.0
        );
        for e in &batch.errors {
            println!("not swept: {e}");
        }
        if !findings.is_empty() {
            println!("\nFindings:\n{}", render::findings(&findings));
        }
    }
    Ok(())
}
