//! Test helpers: findings as the detectors emit them, a listener context and a book stepped
//! with a fake clock.
#![allow(clippy::unwrap_used, reason = "test helpers")]
use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;

use super::{IncidentBook, IncidentChange, IncidentContext, ListenerFacts};
use crate::config::{DetectorConfig, IncidentConfig};
pub(crate) use crate::detect::testutil::s;
use crate::model::{
    ConnKey, Finding, FindingKind, Lifecycle, NetnsId, Owner, Severity, Subject, TcpState,
};
use crate::wall::WallClock;

pub(crate) const NS1: NetnsId = NetnsId {
    cookie: 1,
    inode: 4_026_531_833,
};
pub(crate) const NS2: NetnsId = NetnsId {
    cookie: 2,
    inode: 4_026_532_999,
};

pub(crate) fn wall() -> WallClock {
    // s(0) is 2026-12-01T00:00:00Z.
    WallClock::at(s(0.0), 1_796_083_200 * 1_000_000_000)
}

pub(crate) fn proc_owner(pid: u32, comm: &str) -> Owner {
    Owner {
        pid,
        comm: comm.to_owned(),
        fd: Some(3),
        ..Owner::default()
    }
}

fn skaddr(ns: NetnsId, local: SocketAddr, remote: SocketAddr) -> u64 {
    let mut h = DefaultHasher::new();
    (ns.cookie, local, remote).hash(&mut h);
    h.finish()
}

/// A finding about a connection, as the detectors build it (id, subject), open since `s(0)`.
pub(crate) fn conn_finding(
    kind: FindingKind,
    severity: Severity,
    cause: &str,
    ns: NetnsId,
    local: &str,
    remote: &str,
    owner: Option<(u32, &str)>,
) -> Finding {
    let local: SocketAddr = local.parse().unwrap();
    let remote: SocketAddr = remote.parse().unwrap();
    let key = ConnKey {
        skaddr: skaddr(ns, local, remote),
        netns_cookie: ns.cookie,
    };
    let state = if kind == FindingKind::CloseWaitStuck {
        TcpState::CloseWait
    } else {
        TcpState::Established
    };
    Finding {
        id: format!("{}:{}:{:x}", kind.name(), ns.cookie, key.skaddr),
        kind,
        severity,
        subject: Subject::Connection {
            key,
            netns: ns,
            local,
            remote,
            state,
            owner: owner.map(|(pid, comm)| proc_owner(pid, comm)),
        },
        cause: cause.to_owned(),
        diagnosis: format!("{} {local} -> {remote}", kind.name()),
        since: s(0.0),
        opened_at: s(0.0),
        updated_at: s(0.0),
        resolved_at: None,
        evidence: BTreeMap::new(),
        incident_id: None,
        wall: None,
    }
}

/// A never-accepted `CLOSE_WAIT` on `10.0.0.1:port` from `10.0.0.9:peer`.
pub(crate) fn cw_unaccepted(ns: NetnsId, port: u16, peer: u16) -> Finding {
    conn_finding(
        FindingKind::CloseWaitStuck,
        Severity::Critical,
        "unaccepted",
        ns,
        &format!("10.0.0.1:{port}"),
        &format!("10.0.0.9:{peer}"),
        None,
    )
}

/// An owned `CLOSE_WAIT` of `comm[pid]` on `10.0.0.1:port` from `10.0.0.8:peer`.
pub(crate) fn cw_owned(ns: NetnsId, pid: u32, comm: &str, port: u16, peer: u16) -> Finding {
    conn_finding(
        FindingKind::CloseWaitStuck,
        Severity::Warning,
        "owned",
        ns,
        &format!("10.0.0.1:{port}"),
        &format!("10.0.0.8:{peer}"),
        Some((pid, comm)),
    )
}

/// A client connection finding of `comm[pid]` from `10.0.0.1:lport` to `remote`.
pub(crate) fn upstream(
    kind: FindingKind,
    cause: &str,
    ns: NetnsId,
    pid: u32,
    comm: &str,
    lport: u16,
    remote: &str,
) -> Finding {
    let severity = match kind {
        FindingKind::AwaitingResponse => Severity::Info,
        _ if cause == "peer_not_reading" => Severity::Warning,
        _ => Severity::Critical,
    };
    conn_finding(
        kind,
        severity,
        cause,
        ns,
        &format!("10.0.0.1:{lport}"),
        remote,
        Some((pid, comm)),
    )
}

/// `accept_backlog_filling` on `0.0.0.0:port`, owned by `comm[pid]`.
pub(crate) fn backlog(ns: NetnsId, port: u16, owner: Option<(u32, &str)>, cause: &str) -> Finding {
    let local: SocketAddr = format!("0.0.0.0:{port}").parse().unwrap();
    let key = ConnKey {
        skaddr: u64::from(port),
        netns_cookie: ns.cookie,
    };
    let severity = if cause == "overflowing" {
        Severity::Critical
    } else {
        Severity::Warning
    };
    Finding {
        id: format!("accept_backlog_filling:{}:{:x}", ns.cookie, key.skaddr),
        kind: FindingKind::AcceptBacklogFilling,
        severity,
        subject: Subject::Listener {
            key,
            netns: ns,
            local,
            owner: owner.map(|(pid, comm)| proc_owner(pid, comm)),
        },
        cause: cause.to_owned(),
        diagnosis: format!("backlog :{port}"),
        since: s(0.0),
        opened_at: s(0.0),
        updated_at: s(0.0),
        resolved_at: None,
        evidence: [("queue", 513.0), ("limit", 512.0)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        incident_id: None,
        wall: None,
    }
}

/// `reset_burst` on a port.
pub(crate) fn resets(ns: NetnsId, port: u16, cause: &str) -> Finding {
    Finding {
        id: format!("reset_burst:{}:{port}", ns.cookie),
        kind: FindingKind::ResetBurst,
        severity: Severity::Warning,
        subject: Subject::Port { netns: ns, port },
        cause: cause.to_owned(),
        diagnosis: format!("reset burst on :{port}"),
        since: s(0.0),
        opened_at: s(0.0),
        updated_at: s(0.0),
        resolved_at: None,
        evidence: BTreeMap::new(),
        incident_id: None,
        wall: None,
    }
}

/// A listener: (netns, port, owner as (pid, comm), accept queue, accept limit).
pub(crate) type ListenerSpec<'a> = (NetnsId, u16, Option<(u32, &'a str)>, u32, u32);

/// A context with these listeners.
pub(crate) fn ctx(listeners: &[ListenerSpec<'_>]) -> IncidentContext {
    IncidentContext {
        listeners: listeners
            .iter()
            .map(|&(ns, port, owner, q, limit)| {
                (
                    (ns.cookie, port),
                    ListenerFacts {
                        owner: owner.map(|(pid, comm)| proc_owner(pid, comm)),
                        accept_queue: q,
                        accept_limit: limit,
                    },
                )
            })
            .collect(),
        exposure: None,
    }
}

/// Resolve after 3 s, updates at most every 30 s (the detectors' defaults).
pub(crate) fn book() -> IncidentBook {
    IncidentBook::new(IncidentConfig::default(), &DetectorConfig::default())
}

pub(crate) fn book_with(cfg: IncidentConfig, resolve_after: f64, interval: f64) -> IncidentBook {
    let det = DetectorConfig {
        resolve_after_seconds: resolve_after,
        min_update_interval_seconds: interval,
        ..DetectorConfig::default()
    };
    IncidentBook::new(cfg, &det)
}

/// One update at `s(t)`.
pub(crate) fn step(
    b: &mut IncidentBook,
    t: f64,
    findings: &[Finding],
    c: &IncidentContext,
) -> Vec<IncidentChange> {
    b.update(s(t), wall(), findings, c)
}

/// (change, incident id) pairs.
pub(crate) fn changes(v: &[IncidentChange]) -> Vec<(Lifecycle, String)> {
    v.iter()
        .map(|c| (c.change, c.incident.id.clone()))
        .collect()
}

/// Asserts that every finding maps to one open incident that counts it.
pub(crate) fn assert_indexed(b: &IncidentBook, findings: &[Finding]) {
    for f in findings {
        let id = b
            .incident_of(&f.id)
            .unwrap_or_else(|| panic!("{} has no incident", f.id));
        let inc = b
            .get(id)
            .unwrap_or_else(|| panic!("{} -> {id}, not open", f.id));
        assert!(
            inc.counts.get(f.kind.name()).copied().unwrap_or(0) > 0,
            "{id} does not count {}",
            f.id
        );
    }
}
