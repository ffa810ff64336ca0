//! The incident families of `/metrics` (see `docs/metrics.md`), bounded like the rest:
//!
//! - `tcpwatch_incidents_open{kind,severity}`: every kind x severity, 0 when none;
//! - `tcpwatch_incidents_opened_total{kind}`: every kind;
//! - `tcpwatch_incidents_overflowed`: groupings beyond `incidents.max_open`;
//! - `tcpwatch_incident{id,kind,severity,process,port,remote}`: 1 for each of the `daemon.top_k`
//!   most severe, then oldest, open incidents, so that Prometheus can aggregate the same root
//!   across nodes (`count by (remote) (tcpwatch_incident{kind=~"upstream_.*"})`).
use prometheus::IntGaugeVec;
use tcpwatch_core::incident::{Incident, IncidentKind};

use crate::serve::metrics::{Builder, SEVERITIES, to_i64};
use crate::view::View;

/// Series of the incident families for a given `daemon.top_k`.
#[must_use]
pub fn incident_series(top_k: usize) -> usize {
    IncidentKind::ALL.len() * SEVERITIES.len() + IncidentKind::ALL.len() + 1 + top_k
}

/// What the incident families are built from.
pub(crate) struct IncidentFacts<'a> {
    pub open: Vec<&'a Incident>,
    pub opened: Vec<(IncidentKind, u64)>,
    pub overflowed: usize,
}

impl<'a> IncidentFacts<'a> {
    pub fn of(s: &'a View) -> Self {
        Self {
            open: s.judged.incidents_open.iter().collect(),
            opened: s.judged.incidents_opened().collect(),
            overflowed: s.judged.incidents_overflowed,
        }
    }
}

/// Incidents worst first: highest severity, then oldest condition, then id.
pub fn worst_first<'a>(open: &[&'a Incident]) -> Vec<&'a Incident> {
    let mut v = open.to_vec();
    v.sort_unstable_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.since.cmp(&b.since))
            .then(a.opened_at.cmp(&b.opened_at))
            .then(a.id.cmp(&b.id))
    });
    v
}

pub(crate) fn incidents(b: &Builder, s: &IncidentFacts, top_k: usize) -> prometheus::Result<()> {
    let open = b.gauge_vec(
        "tcpwatch_incidents_open",
        "Open incidents (findings grouped by cause) by kind and severity.",
        &["kind", "severity"],
    )?;
    for k in IncidentKind::ALL {
        for sev in SEVERITIES {
            open.with_label_values(&[k.name(), sev.name()]).set(0);
        }
    }
    for i in &s.open {
        open.with_label_values(&[i.kind.name(), i.severity.name()])
            .inc();
    }
    let opened = b.counter_vec(
        "tcpwatch_incidents_opened_total",
        "Incidents opened since the daemon started, by kind.",
        &["kind"],
    )?;
    for k in IncidentKind::ALL {
        opened.with_label_values(&[k.name()]).inc_by(0);
    }
    for (k, n) in &s.opened {
        opened.with_label_values(&[k.name()]).inc_by(*n);
    }
    b.gauge(
        "tcpwatch_incidents_overflowed",
        "Groupings beyond incidents.max_open at the last update: their findings joined the \
         per-kind overflow incident.",
        to_i64(s.overflowed),
    )?;
    let top = b.gauge_vec(
        "tcpwatch_incident",
        "1 for each of the top-K (daemon.top_k) most severe, then oldest, open incidents, with \
         their root (process comm, local port, remote endpoint; empty when not part of the root).",
        &["id", "kind", "severity", "process", "port", "remote"],
    )?;
    for i in worst_first(&s.open).into_iter().take(top_k) {
        top_series(&top, i);
    }
    Ok(())
}

fn top_series(v: &IntGaugeVec, i: &Incident) {
    let process = i.root.process.as_ref().map_or("", |p| p.comm.as_str());
    let port = i.root.local_port.map(|p| p.to_string()).unwrap_or_default();
    let remote = i.root.remote.map(|r| r.to_string()).unwrap_or_default();
    v.with_label_values(&[
        i.id.as_str(),
        i.kind.name(),
        i.severity.name(),
        process,
        port.as_str(),
        remote.as_str(),
    ])
    .set(1);
}

#[cfg(test)]
#[path = "incidents_tests.rs"]
mod tests;
