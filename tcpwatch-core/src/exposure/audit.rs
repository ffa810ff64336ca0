//! The exposure audit: per process and remote endpoint, how many `ESTABLISHED` connections
//! would wait longer than the threshold for a peer that vanished now, and what to set.
//! An audit, not a page: it opens no finding.
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::formula::{ConnExposure, assess};
use super::group_acc::GroupAcc;
use crate::detect::text::{dur, owner};
use crate::model::{ConnKey, ConnRecord, NS_PER_MS, NetnsId, NetnsInfo};

/// Sockets listed per group (worst first); the rest are counted.
pub const MAX_SOCKETS_LISTED: usize = 32;
/// Groups listed (most exposed first); the rest are counted.
pub const MAX_GROUPS_LISTED: usize = 1000;
/// Upper bounds (seconds) of the worst-case histogram's buckets; "never" is counted apart.
pub const HISTOGRAM_BOUNDS_S: [u64; 12] = [1, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200];

/// One connection in the audit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExposedSocket {
    pub key: ConnKey,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub exposure: ConnExposure,
}

/// The connections of one process to one remote endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExposureGroup {
    /// The owning process (`api[42]`), or the creating task when the owner is not known.
    pub process: String,
    pub pid: Option<u32>,
    pub netns: NetnsId,
    pub remote: SocketAddr,
    pub connections: u32,
    /// Connections whose worst case exceeds the threshold (never included).
    pub exposed: u32,
    /// Idle connections without keepalive: they would wait forever.
    pub never: u32,
    /// Connections with data in flight now.
    pub in_flight: u32,
    /// The largest worst case (ms); `None`: never.
    pub worst_case_ms: Option<u64>,
    /// What to set.
    pub diagnosis: String,
    /// Worst first, at most [`MAX_SOCKETS_LISTED`].
    pub sockets: Vec<ExposedSocket>,
    #[serde(default)]
    pub sockets_omitted: u32,
}

/// Per-node distribution of worst cases (finite ones; "never" apart).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExposureHistogram {
    /// `(upper bound in seconds, connections at or below it)`, cumulative.
    pub buckets: Vec<(u64, u64)>,
    /// Connections with a finite worst case, and the sum of those worst cases (ms).
    pub count: u64,
    pub sum_ms: u64,
    /// Connections that would wait forever.
    pub never: u64,
}

/// All connections of one process (over its remote endpoints).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessExposure {
    pub process: String,
    pub pid: Option<u32>,
    pub connections: u32,
    pub exposed: u32,
    pub never: u32,
    /// ms; `None`: never.
    pub worst_case_ms: Option<u64>,
}

/// The whole audit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExposureReport {
    pub threshold_seconds: u64,
    /// `ESTABLISHED` connections audited.
    pub connections: u64,
    pub exposed: u64,
    pub never: u64,
    /// Most exposed first (never, then the longest worst case, then the most connections).
    pub groups: Vec<ExposureGroup>,
    #[serde(default)]
    pub groups_omitted: u64,
    /// Per process, most exposed connections first, at most [`MAX_GROUPS_LISTED`].
    #[serde(default)]
    pub processes: Vec<ProcessExposure>,
    pub histogram: ExposureHistogram,
}

#[derive(PartialEq, Eq, PartialOrd, Ord, Hash, Clone)]
struct GroupKey {
    netns: u64,
    pid: Option<u32>,
    process: String,
    remote: SocketAddr,
}

/// Longest first, `None` (never) before any finite wait.
pub(super) fn worse(a: Option<u64>, b: Option<u64>) -> std::cmp::Ordering {
    b.map_or(u64::MAX, |v| v)
        .cmp(&a.map_or(u64::MAX, |v| v))
        .then_with(|| a.is_some().cmp(&b.is_some()))
}

pub(super) fn max_wait(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        _ => None,
    }
}

/// The audit of `conns` with the namespaces' sysctls (kernel defaults when unknown).
#[must_use]
pub fn audit<'a, S: std::hash::BuildHasher>(
    conns: impl IntoIterator<Item = &'a ConnRecord>,
    netns: &HashMap<u64, NetnsInfo, S>,
    threshold_seconds: u64,
) -> ExposureReport {
    let threshold_ms = threshold_seconds.saturating_mul(1000);
    let mut groups: BTreeMap<GroupKey, GroupAcc> = BTreeMap::new();
    let mut report = ExposureReport {
        threshold_seconds,
        ..ExposureReport::default()
    };
    let mut hist = vec![0u64; HISTOGRAM_BOUNDS_S.len()];
    for c in conns {
        let ns = netns
            .get(&c.key.netns_cookie)
            .copied()
            .unwrap_or_else(|| NetnsInfo::with_defaults(c.netns));
        let Some(e) = assess(c, &ns) else { continue };
        report.connections += 1;
        if e.exceeds(threshold_ms) {
            report.exposed += 1;
        }
        match e.worst_case_ms {
            None => report.histogram.never += 1,
            Some(ms) => {
                report.histogram.count += 1;
                report.histogram.sum_ms = report.histogram.sum_ms.saturating_add(ms);
                if let Some(i) = HISTOGRAM_BOUNDS_S.iter().position(|&b| ms <= b * 1000) {
                    hist[i] += 1;
                }
            }
        }
        let pid = c.owner.as_ref().map(|o| o.pid).or(c.creator_pid);
        let key = GroupKey {
            netns: c.key.netns_cookie,
            pid,
            process: owner(c, false),
            remote: c.remote,
        };
        groups.entry(key).or_default().add(
            ExposedSocket {
                key: c.key,
                local: c.local,
                remote: c.remote,
                exposure: e,
            },
            threshold_ms,
        );
    }
    report.never = report.histogram.never;
    let mut acc = 0;
    report.histogram.buckets = HISTOGRAM_BOUNDS_S
        .iter()
        .zip(&hist)
        .map(|(&b, &n)| {
            acc += n;
            (b, acc)
        })
        .collect();
    let netns_of: HashMap<u64, NetnsId> = netns.iter().map(|(k, v)| (*k, v.id)).collect();
    // Ordered on the folded groups; only the listed ones are written out (diagnosis, sockets).
    let mut list: Vec<(GroupKey, GroupAcc)> = groups.into_iter().collect();
    list.sort_by(|(ka, a), (kb, b)| {
        worse(a.worst(), b.worst())
            .then(b.exposed.cmp(&a.exposed))
            .then(b.connections.cmp(&a.connections))
            .then(ka.process.cmp(&kb.process))
    });
    report.processes = processes(list.iter().map(|(k, g)| Totals {
        process: &k.process,
        pid: k.pid,
        connections: count(g.connections),
        exposed: count(g.exposed),
        never: count(g.never),
        worst_case_ms: g.worst(),
    }));
    if list.len() > MAX_GROUPS_LISTED {
        report.groups_omitted = (list.len() - MAX_GROUPS_LISTED) as u64;
        list.truncate(MAX_GROUPS_LISTED);
    }
    report.groups = list
        .into_iter()
        .map(|(k, g)| group(k, g, threshold_ms, &netns_of))
        .collect();
    report
}

/// A group's totals, for the per-process list.
struct Totals<'a> {
    process: &'a str,
    pid: Option<u32>,
    connections: u32,
    exposed: u32,
    never: u32,
    worst_case_ms: Option<u64>,
}

fn processes<'a>(groups: impl Iterator<Item = Totals<'a>>) -> Vec<ProcessExposure> {
    let mut by: BTreeMap<(&str, Option<u32>), ProcessExposure> = BTreeMap::new();
    for g in groups {
        let p = by
            .entry((g.process, g.pid))
            .or_insert_with(|| ProcessExposure {
                process: g.process.to_owned(),
                pid: g.pid,
                connections: 0,
                exposed: 0,
                never: 0,
                worst_case_ms: Some(0),
            });
        p.connections = p.connections.saturating_add(g.connections);
        p.exposed = p.exposed.saturating_add(g.exposed);
        p.never = p.never.saturating_add(g.never);
        p.worst_case_ms = max_wait(p.worst_case_ms, g.worst_case_ms);
    }
    let mut list: Vec<ProcessExposure> = by.into_values().collect();
    list.sort_by(|a, b| {
        b.exposed
            .cmp(&a.exposed)
            .then(worse(a.worst_case_ms, b.worst_case_ms))
            .then(a.process.cmp(&b.process))
    });
    list.truncate(MAX_GROUPS_LISTED);
    list
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn group(
    k: GroupKey,
    mut g: GroupAcc,
    threshold_ms: u64,
    netns_of: &HashMap<u64, NetnsId>,
) -> ExposureGroup {
    // Every socket of a group is of the group's namespace.
    let netns = netns_of.get(&k.netns).copied().unwrap_or(NetnsId {
        cookie: k.netns,
        inode: 0,
    });
    let diagnosis = g.diagnose(threshold_ms);
    let (sockets, omitted) = g.listed();
    ExposureGroup {
        process: k.process,
        pid: k.pid,
        netns,
        remote: k.remote,
        connections: count(g.connections),
        exposed: count(g.exposed),
        never: count(g.never),
        in_flight: count(g.in_flight),
        worst_case_ms: g.worst(),
        diagnosis,
        sockets,
        sockets_omitted: count(omitted),
    }
}

/// `924.6s`, `2h05m`, `never`.
#[must_use]
pub fn wait_text(ms: Option<u64>) -> String {
    match ms {
        None => "never".to_owned(),
        Some(ms) => dur(ms.saturating_mul(NS_PER_MS)),
    }
}

/// One line for an incident's diagnosis: how the other connections (local addresses not in
/// `exclude`) of the process `pid` to `remote` would fare (`None` when none is above the
/// threshold).
#[must_use]
pub fn process_line(
    report: &ExposureReport,
    pid: u32,
    remote: SocketAddr,
    exclude: &[SocketAddr],
) -> Option<String> {
    let g = report
        .groups
        .iter()
        .find(|g| g.pid == Some(pid) && g.remote == remote)?;
    let threshold_ms = report.threshold_seconds.saturating_mul(1000);
    let others = g
        .sockets
        .iter()
        .filter(|s| !exclude.contains(&s.local) && s.exposure.exceeds(threshold_ms));
    let (mut never, mut long, mut longest) = (0u32, 0u32, 0u64);
    for s in others {
        match s.exposure.worst_case_ms {
            None => never += 1,
            Some(ms) => {
                long += 1;
                longest = longest.max(ms);
            }
        }
    }
    // Sockets beyond the listed ones are counted by the group (they wait less than the
    // listed ones: the list is worst first).
    let listed = count(
        g.sockets
            .iter()
            .filter(|s| s.exposure.exceeds(threshold_ms))
            .count(),
    );
    long += g.exposed.saturating_sub(listed);
    if never + long == 0 {
        return None;
    }
    let mut s = format!(
        "other connections of {} to {remote} would hang too:",
        g.process
    );
    if never > 0 {
        let _ = write!(s, " {never} with no timeout");
    }
    if long > 0 {
        let sep = if never > 0 { "," } else { "" };
        let upto = longest.max(threshold_ms);
        let _ = write!(s, "{sep} {long} waiting up to {}", wait_text(Some(upto)));
    }
    s.push_str(" (GET /api/v1/exposure)");
    Some(s)
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
