//! The Alertmanager alert of an incident: labels that identify it while it is open, and
//! annotations that tell its story (`alerts.rs` sends them).
//!
//! Labels: `alertname="TcpwatchIncident"`, `incident_id`, `kind`, `severity`, `node`, `netns`
//! (inode) and the incident's root, each bounded to one value: `process` (the owner's comm),
//! `port` (the local/listener port) and `remote` (the upstream `ip:port`); root labels are
//! left out when the incident has no such part. Annotations: `summary`, `description` (the
//! diagnosis), `consequence` (for causal merges), `members` (the member count), `counts` (per
//! finding kind) and `runbook_url`.
use serde_json::{Map, Value};
use tcpwatch_core::incident::{Incident, IncidentKind};

use crate::alerts::RUNBOOK_BASE;

/// The `alertname` of the incident alerts.
pub const INCIDENT_ALERT_NAME: &str = "TcpwatchIncident";

/// The labels identifying an incident's alert.
#[must_use]
pub fn incident_labels(i: &Incident, node: &str) -> Map<String, Value> {
    let mut l = Map::new();
    let mut put = |k: &str, v: String| {
        l.insert(k.to_owned(), Value::String(v));
    };
    put("alertname", INCIDENT_ALERT_NAME.to_owned());
    put("incident_id", i.id.clone());
    put("kind", i.kind.name().to_owned());
    put("severity", i.severity.name().to_owned());
    put("node", node.to_owned());
    put("netns", i.root.netns.inode.to_string());
    if let Some(p) = i.root.process.as_ref().filter(|p| !p.comm.is_empty()) {
        put("process", p.comm.clone());
    }
    if let Some(port) = i.root.local_port {
        put("port", port.to_string());
    }
    if let Some(r) = i.root.remote {
        put("remote", r.to_string());
    }
    l
}

/// The root in words: `nginx[12] :8080 -> 10.0.0.9:443 (netns 4026531833)`.
#[must_use]
pub fn root_text(i: &Incident) -> String {
    let mut parts = Vec::new();
    if let Some(p) = &i.root.process {
        parts.push(format!("{}[{}]", p.comm, p.pid));
    }
    if let Some(port) = i.root.local_port {
        parts.push(format!(":{port}"));
    }
    if let Some(r) = i.root.remote {
        parts.push(format!("-> {r}"));
    }
    parts.push(format!("(netns {})", i.root.netns.inode));
    parts.join(" ")
}

/// Summary, diagnosis, consequence, member count and runbook of an incident's alert.
#[must_use]
pub fn incident_annotations(i: &Incident, node: &str) -> Map<String, Value> {
    let mut a = Map::new();
    let mut put = |k: &str, v: String| {
        a.insert(k.to_owned(), Value::String(v));
    };
    put(
        "summary",
        format!("{} on {node}: {}", i.kind.name(), root_text(i)),
    );
    put("description", i.diagnosis.clone());
    if let Some(c) = &i.consequence {
        put("consequence", c.clone());
    }
    put("members", i.members_total.to_string());
    let counts: Vec<String> = i.counts.iter().map(|(k, n)| format!("{k}={n}")).collect();
    put("counts", counts.join(", "));
    put(
        "runbook_url",
        format!("{RUNBOOK_BASE}/{}.md", incident_runbook(i.kind)),
    );
    a
}

/// The runbook of an incident kind (`docs/runbooks/`, one per incident alert rule).
#[must_use]
pub fn incident_runbook(kind: IncidentKind) -> &'static str {
    match kind {
        IncidentKind::ListenerNotAccepting => "TcpwatchListenerNotAccepting",
        IncidentKind::CloseWaitLeak => "TcpwatchCloseWaitLeak",
        IncidentKind::UpstreamUnreachable => "TcpwatchUpstreamUnreachable",
        IncidentKind::BlockedOnUpstream => "TcpwatchBlockedOnUpstream",
        IncidentKind::UpstreamNotResponding => "TcpwatchUpstreamNotResponding",
        IncidentKind::ResetStorm => "TcpwatchResetStorm",
    }
}
