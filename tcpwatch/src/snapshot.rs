//! `tcpwatch snapshot`: load the programs, sweep every namespace once, attribute owners, run
//! the detectors and the incident grouping once and print the open incidents above the table
//! (like `ss -tanpi` plus tcpwatch's columns), or all of it as JSON.
use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use tcpwatch_core::config::Config;
use tcpwatch_core::incident::Incident;
use tcpwatch_core::model::{ConnRecord, Finding, TcpState};
use tcpwatch_core::render;
use tcpwatch_core::wall::WallClock;

use crate::daemon::{DaemonOptions, calibrate, load_options, new_shared};
use crate::host::netns::Home;
use crate::host::owners::OwnerIndex;
use crate::host::sweeper::sweep_all;
use crate::kernel::Kernel;
use crate::state::{Shared, mono_now};

#[derive(Clone, Debug, Default)]
pub struct SnapshotArgs {
    pub json: bool,
    pub state: Option<TcpState>,
    pub port: Option<u16>,
    /// Print the exposure audit of the selected connections instead.
    pub exposure: bool,
    /// Run the reference walk after the sweep (`sweep.reference_walk`).
    pub walk_reference: bool,
}

#[derive(Serialize)]
struct SweepSummary {
    namespaces: usize,
    sockets: usize,
    duration_ms: f64,
    errors: Vec<String>,
    hz: u32,
    /// Every namespace swept: its inode and the number of sockets its sweep returned.
    swept: Vec<SweptNamespace>,
    /// With `--walk-reference`: the same namespaces walked by a program that only counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    reference_walk: Option<crate::host::sweeper::ReferenceWalk>,
}

#[derive(Serialize)]
struct SweptNamespace {
    inode: u32,
    sockets: usize,
    /// `net.ipv4.tcp_ehash_entries` there (Linux 6.1+): negative when it shares the host's
    /// established hash, so its sweep walks every socket in it (docs/operations.md).
    tcp_ehash_entries: Option<i64>,
}

#[derive(Serialize)]
struct Output<'a> {
    /// `CLOCK_MONOTONIC` ns at which the snapshot was taken (the base of `state_since` etc.).
    now_ns: u64,
    /// `now_ns` as RFC 3339 (every time below has such a `*_time` twin, docs/api.md).
    now_time: String,
    sweep: SweepSummary,
    /// Open incidents, worst first.
    incidents: Vec<&'a Incident>,
    connections: Vec<ConnRecord>,
    findings: Vec<Finding>,
}

/// One line per open incident: severity, kind, diagnosis, member count.
fn incident_lines(incidents: &[&Incident]) -> String {
    let mut out = String::new();
    for i in incidents {
        let sev = match i.severity {
            tcpwatch_core::model::Severity::Critical => "CRIT",
            tcpwatch_core::model::Severity::Warning => "WARN",
            tcpwatch_core::model::Severity::Info => "INFO",
        };
        let n = i.members_total;
        let noun = if n == 1 { "finding" } else { "findings" };
        let _ = writeln!(
            out,
            "{sev:<4}  {:<24} {} ({n} {noun})",
            i.kind.name(),
            i.diagnosis
        );
        if let Some(c) = &i.consequence {
            let _ = writeln!(out, "      {:<24} {c}", "");
        }
    }
    out
}

/// `tcpwatch snapshot --exposure`: the audit of the swept connections, as text or JSON.
fn print_exposure(shared: &Shared, conns: &[&ConnRecord], json: bool) -> anyhow::Result<()> {
    let report = tcpwatch_core::exposure::audit(
        conns.iter().copied(),
        &shared.netns,
        shared.exposure_threshold_s,
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", tcpwatch_core::exposure::render::text(&report));
    }
    Ok(())
}

fn summary(
    batch: &crate::host::sweeper::SweepBatch,
    hz: u32,
    reference_walk: Option<crate::host::sweeper::ReferenceWalk>,
) -> SweepSummary {
    SweepSummary {
        namespaces: batch.namespaces.len(),
        sockets: batch.sockets(),
        duration_ms: batch.duration.as_secs_f64() * 1000.0,
        errors: batch.errors.clone(),
        hz,
        swept: batch
            .namespaces
            .iter()
            .map(|n| SweptNamespace {
                inode: n.id.inode,
                sockets: n.sweep.sockets(),
                tcp_ehash_entries: n.info.tcp_ehash_entries,
            })
            .collect(),
        reference_walk,
    }
}

/// Reference walks of every namespace (`--walk-reference`): the median is reported.
const REFERENCE_WALKS: usize = 5;

pub fn run(cfg: &Config, args: &SnapshotArgs, opts: DaemonOptions) -> anyhow::Result<()> {
    let mut kernel = Kernel::load(&load_options(cfg, opts))?;
    let clock = calibrate(&mut kernel)?;
    let home = Home::current()?;
    // Every socket in full, and no change-only marks left for a running daemon to see.
    let mut generations = crate::host::generations::Generations::new(
        1,
        crate::host::generations::FullSweepRequests::default(),
    );
    let batch = sweep_all(&mut kernel, &home, false, &mut generations);
    let reference_walk = args
        .walk_reference
        .then(|| crate::host::sweeper::walk_reference_all(&mut kernel, &home, REFERENCE_WALKS));
    let now = mono_now();
    let mut shared = new_shared(cfg, &kernel, clock);
    let wanted: HashSet<u64> = shared.apply_sweep(&batch, now);
    let mut owners = OwnerIndex::new(Duration::ZERO);
    owners.refresh(&wanted, true, now);
    shared.table.attach_owners(|ino| owners.get(ino));
    let _ = shared.evaluate(now, WallClock::now());

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
    if args.exposure {
        return print_exposure(&shared, &conns, args.json);
    }
    let findings: Vec<Finding> = shared
        .detectors
        .open()
        .map(|f| {
            let mut f = f.clone();
            f.incident_id = shared.incidents.incident_of(&f.id).map(str::to_owned);
            f
        })
        .collect();
    let open: Vec<&Incident> = shared.incidents.open().collect();
    let incidents = crate::serve::metrics::incidents::worst_first(&open);
    if args.json {
        let wall = WallClock::now();
        let out = Output {
            now_ns: now,
            now_time: wall.rfc3339(now),
            sweep: summary(&batch, clock.hz, reference_walk),
            incidents,
            connections: conns
                .iter()
                .map(|&c| {
                    let mut c = shared.table.aging().effective(c);
                    c.fill_wall_times(&wall);
                    c
                })
                .collect(),
            findings: findings
                .into_iter()
                .map(|mut f| {
                    f.fill_wall_times(&wall);
                    f
                })
                .collect(),
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        if !incidents.is_empty() {
            println!("Incidents:\n{}", incident_lines(&incidents));
        }
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
            let refs: Vec<&Finding> = findings.iter().collect();
            println!("\nFindings:\n{}", render::findings(&refs));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tcpwatch_core::incident::IncidentKind;
    use tcpwatch_core::model::Severity;

    use super::*;
    use crate::alerts::incident_tests::incident;

    #[test]
    fn one_line_per_incident_with_severity_kind_diagnosis_and_members() {
        let a = incident(IncidentKind::ListenerNotAccepting, Severity::Critical);
        let mut b = incident(IncidentKind::BlockedOnUpstream, Severity::Warning);
        b.members_total = 1;
        b.diagnosis = "server[42] is blocked on 10.9.9.9:443 for 35 s".into();
        b.consequence = Some("its callers' connections pile up on :8080: 20 in CLOSE_WAIT".into());
        let text = incident_lines(&[&a, &b]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "CRIT  listener_not_accepting   server[42] is not calling accept() on :8080 (200 findings)",
                "WARN  blocked_on_upstream      server[42] is blocked on 10.9.9.9:443 for 35 s (1 finding)",
                "                               its callers' connections pile up on :8080: 20 in CLOSE_WAIT",
            ]
        );
    }
}
