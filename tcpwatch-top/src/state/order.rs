//! Filtering and ordering of rows, and the text of a finding's subject or an incident's root.
use std::cmp::Ordering;
use std::net::SocketAddr;

use tcpwatch_core::incident::Incident;
use tcpwatch_core::model::{ConnKey, ConnRecord, Finding, Owner, Subject, TcpState};
use tcpwatch_core::render::ss_queues;

use super::SortKey;

/// The connection a finding is about, if it names one.
#[must_use]
pub fn subject_key(s: &Subject) -> Option<ConnKey> {
    match s {
        Subject::Connection { key, .. } | Subject::Listener { key, .. } => Some(*key),
        Subject::Port { .. } | Subject::Peer { .. } => None,
    }
}

/// `local` of a finding's subject, as text (`*:PORT` for a port subject).
#[must_use]
pub fn subject_local(s: &Subject) -> String {
    match s {
        Subject::Connection { local, .. } | Subject::Listener { local, .. } => local.to_string(),
        Subject::Port { port, .. } => format!("*:{port}"),
        Subject::Peer { .. } => "-".to_owned(),
    }
}

#[must_use]
pub fn subject_remote(s: &Subject) -> String {
    match s {
        Subject::Connection { remote, .. } | Subject::Peer { remote, .. } => remote.to_string(),
        Subject::Listener { .. } | Subject::Port { .. } => "-".to_owned(),
    }
}

#[must_use]
pub fn subject_owner(s: &Subject) -> Option<&Owner> {
    match s {
        Subject::Connection { owner, .. }
        | Subject::Listener { owner, .. }
        | Subject::Peer { owner, .. } => owner.as_ref(),
        Subject::Port { .. } => None,
    }
}

/// Accept queue fill of a listener, 0.0 to 1.0 (and above when overflowing).
#[must_use]
pub fn accept_fill(c: &ConnRecord) -> f64 {
    if c.queues.accept_limit == 0 {
        return if c.queues.accept_queue > 0 { 1.0 } else { 0.0 };
    }
    f64::from(c.queues.accept_queue) / f64::from(c.queues.accept_limit)
}

/// An incident's root process as `comm[pid]`, or `-`.
#[must_use]
pub fn incident_process(i: &Incident) -> String {
    i.root
        .process
        .as_ref()
        .map_or_else(|| "-".to_owned(), |p| format!("{}[{}]", p.comm, p.pid))
}

/// An incident's root port as `:PORT`, or `-`.
#[must_use]
pub fn incident_port(i: &Incident) -> String {
    i.root
        .local_port
        .map_or_else(|| "-".to_owned(), |p| format!(":{p}"))
}

/// An incident's root remote endpoint, or `-`.
#[must_use]
pub fn incident_remote(i: &Incident) -> String {
    i.root
        .remote
        .map_or_else(|| "-".to_owned(), |r| r.to_string())
}

fn contains_ci(hay: &str, needle: &str) -> bool {
    hay.to_lowercase().contains(needle)
}

fn addr_matches(a: &SocketAddr, needle: &str) -> bool {
    a.to_string().contains(needle)
}

/// Substring match on port, address, comm and state (`needle` already lowercase).
pub(super) fn conn_matches(c: &ConnRecord, needle: &str) -> bool {
    needle.is_empty()
        || addr_matches(&c.local, needle)
        || addr_matches(&c.remote, needle)
        || c.owner
            .as_ref()
            .is_some_and(|o| contains_ci(&o.comm, needle) || o.pid.to_string() == needle)
        || c.creator_comm
            .as_deref()
            .is_some_and(|cc| contains_ci(cc, needle))
        || contains_ci(c.state.name(), needle)
        || contains_ci(c.state.ss_name(), needle)
}

pub(super) fn finding_matches(f: &Finding, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    let state = match &f.subject {
        Subject::Connection { state, .. } => Some(*state),
        Subject::Listener { .. } => Some(TcpState::Listen),
        Subject::Port { .. } | Subject::Peer { .. } => None,
    };
    subject_local(&f.subject).contains(needle)
        || subject_remote(&f.subject).contains(needle)
        || subject_owner(&f.subject).is_some_and(|o| contains_ci(&o.comm, needle))
        || state.is_some_and(|s| contains_ci(s.name(), needle) || contains_ci(s.ss_name(), needle))
        || f.kind.name().contains(needle)
        || f.severity.name().contains(needle)
}

/// Substring match on kind, severity, root process, port, remote and diagnosis.
pub(super) fn incident_matches(i: &Incident, needle: &str) -> bool {
    needle.is_empty()
        || i.kind.name().contains(needle)
        || i.severity.name().contains(needle)
        || contains_ci(&incident_process(i), needle)
        || incident_port(i).contains(needle)
        || incident_remote(i).contains(needle)
        || contains_ci(&i.diagnosis, needle)
}

pub(super) fn cmp_findings(a: &Finding, b: &Finding, sort: SortKey) -> Ordering {
    let sev = b.severity.cmp(&a.severity);
    let age = a.since.cmp(&b.since);
    let o = match sort {
        SortKey::Age => age.then(sev),
        SortKey::Kind => a.kind.cmp(&b.kind).then(sev).then(age),
        _ => sev.then(age),
    };
    o.then_with(|| a.id.cmp(&b.id))
}

/// Most severe first (then oldest, then most members) unless another key is chosen.
pub(super) fn cmp_incidents(a: &Incident, b: &Incident, sort: SortKey) -> Ordering {
    let sev = b.severity.cmp(&a.severity);
    let age = a.since.cmp(&b.since);
    let members = b.members_total.cmp(&a.members_total);
    let o = match sort {
        SortKey::Age => age.then(sev),
        SortKey::Members => members.then(sev).then(age),
        SortKey::Kind => a.kind.cmp(&b.kind).then(sev).then(age),
        _ => sev.then(age).then(members),
    };
    o.then_with(|| a.id.cmp(&b.id))
}

fn owner_name(c: &ConnRecord) -> (&str, u32) {
    c.owner
        .as_ref()
        .map_or(("\u{10ffff}", 0), |o| (o.comm.as_str(), o.pid))
}

pub(super) fn cmp_conns(a: &ConnRecord, b: &ConnRecord, sort: SortKey) -> Ordering {
    let o = match sort {
        SortKey::State => a.state.cmp(&b.state),
        SortKey::Local => a.local.cmp(&b.local),
        SortKey::Remote => a.remote.cmp(&b.remote),
        SortKey::Owner => owner_name(a).cmp(&owner_name(b)),
        SortKey::RecvQ => ss_queues(b).0.cmp(&ss_queues(a).0),
        SortKey::Age => a.state_since.cmp(&b.state_since),
        SortKey::Chain => b.retrans.chain.cmp(&a.retrans.chain),
        SortKey::Backoff => b.tcp.backoff.cmp(&a.tcp.backoff),
        SortKey::Rtt => b.tcp.srtt_us.cmp(&a.tcp.srtt_us),
        // Real Send-Q (a listener's ss "Send-Q" is its backlog limit, not data).
        _ => b.queues.send_q.cmp(&a.queues.send_q),
    };
    o.then_with(|| a.local.cmp(&b.local))
        .then_with(|| a.remote.cmp(&b.remote))
        .then_with(|| a.key.cmp(&b.key))
}
