//! Incidents: the open findings grouped by cause, with the story across connections.
//!
//! Findings are per socket (or listener, or port); on-call needs one page per cause. After
//! every detector evaluation [`IncidentBook::update`] takes all open findings and groups them
//! with the rules of `docs/incidents.md`:
//!
//! | kind | members | root |
//! |------|---------|------|
//! | `listener_not_accepting` | `accept_backlog_filling` + the never-accepted `close_wait_stuck` queued on that listener | netns, listener port, owner |
//! | `close_wait_leak` | owned `close_wait_stuck` of one process on one local port | netns, process, port |
//! | `upstream_unreachable` | `retransmit_chain`, `send_queue_growing` (`peer_unreachable`), failing connects from one process to one remote endpoint | netns, process, remote |
//! | `upstream_not_responding` | `awaiting_response`, `send_queue_growing` (`peer_not_reading`) from one process to one remote endpoint | netns, process, remote |
//! | `blocked_on_upstream` | an upstream incident of process P plus P's own listener piling up (`close_wait_leak` on a listening port, or `listener_not_accepting`) | the upstream (root) and the listener (consequence) |
//! | `reset_storm` | `reset_burst` (and reset / keep-alive-race findings) per client process and server endpoint | netns, port or endpoint |
//!
//! Every open finding belongs to exactly one open incident. Pure code: time is passed in.
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::config::{DetectorConfig, IncidentConfig, seconds_to_ns};
use crate::model::{
    ConnRecord, Finding, Lifecycle, MonoNs, NetnsId, Owner, PodRef, Severity, TcpState,
};
use crate::wall::WallClock;

mod book;
mod group;
mod text;

#[cfg(test)]
pub(crate) mod testkit;

/// The namespace of an incident with no member to take it from (never in practice).
pub(crate) const NO_NETNS: NetnsId = NetnsId {
    cookie: 0,
    inode: 0,
};

/// What kind of cause an incident names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    ListenerNotAccepting,
    CloseWaitLeak,
    UpstreamUnreachable,
    UpstreamNotResponding,
    BlockedOnUpstream,
    ResetStorm,
}

impl IncidentKind {
    pub const ALL: [IncidentKind; 6] = [
        IncidentKind::ListenerNotAccepting,
        IncidentKind::CloseWaitLeak,
        IncidentKind::UpstreamUnreachable,
        IncidentKind::UpstreamNotResponding,
        IncidentKind::BlockedOnUpstream,
        IncidentKind::ResetStorm,
    ];

    /// The name used in JSON, metric labels and alert labels.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::ListenerNotAccepting => "listener_not_accepting",
            Self::CloseWaitLeak => "close_wait_leak",
            Self::UpstreamUnreachable => "upstream_unreachable",
            Self::UpstreamNotResponding => "upstream_not_responding",
            Self::BlockedOnUpstream => "blocked_on_upstream",
            Self::ResetStorm => "reset_storm",
        }
    }
}

/// A process, as far as it is known.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProcessRef {
    pub pid: u32,
    pub comm: String,
}

/// What the incident is about: its root labels (bounded: one process, one port, one remote).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentRoot {
    pub netns: NetnsId,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub process: Option<ProcessRef>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pod: Option<PodRef>,
    /// The local (listening / server) port the incident is about.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub local_port: Option<u16>,
    /// The remote endpoint (upstream) the incident is about.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub remote: Option<SocketAddr>,
}

/// One incident: a cause, with its member findings as evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Stable while the incident lives (derived from the grouping key).
    pub id: String,
    pub kind: IncidentKind,
    /// Short machine-readable cause (e.g. `not_accepting`, `peer_unreachable`).
    pub cause: String,
    /// The highest severity of the members.
    pub severity: Severity,
    pub root: IncidentRoot,
    /// One line naming the root cause (process, port, peer) and what to look at.
    pub diagnosis: String,
    /// For causal merges: what the root cause does to others ("its callers' connections pile
    /// up on :8080: 20 in `CLOSE_WAIT`").
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub consequence: Option<String>,
    /// Open member findings per finding kind name.
    pub counts: BTreeMap<String, u32>,
    /// Ids of member findings, capped at `incidents.max_members_listed` (most severe, then
    /// oldest, first).
    pub members: Vec<String>,
    /// All open member findings.
    pub members_total: u32,
    /// When the oldest member's condition started.
    pub since: MonoNs,
    pub opened_at: MonoNs,
    pub updated_at: MonoNs,
    pub resolved_at: Option<MonoNs>,
    /// RFC 3339 twins of the times above.
    pub since_time: String,
    pub opened_time: String,
    pub updated_time: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub resolved_time: Option<String>,
}

/// A lifecycle change of an incident: what the log, the stream and Alertmanager receive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentChange {
    pub change: Lifecycle,
    pub incident: Incident,
}

/// What the grouping rules need to know about a listening socket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenerFacts {
    pub owner: Option<Owner>,
    pub accept_queue: u32,
    pub accept_limit: u32,
}

/// Facts from outside the findings that the grouping rules need, built from the table.
#[derive(Clone, Debug, Default)]
pub struct IncidentContext {
    /// Listening sockets by (netns cookie, local port).
    pub listeners: HashMap<(u64, u16), ListenerFacts>,
    /// The exposure audit (`docs/exposure.md`), when an upstream incident may need it: the
    /// diagnosis of `upstream_unreachable` / `upstream_not_responding` adds how the process's
    /// other connections to the peer would fare.
    pub exposure: Option<crate::exposure::ExposureReport>,
}

impl IncidentContext {
    /// Indexes the listeners of a connection table.
    pub fn from_conns<'a>(conns: impl IntoIterator<Item = &'a ConnRecord>) -> Self {
        let mut listeners = HashMap::new();
        for c in conns.into_iter().filter(|c| c.state == TcpState::Listen) {
            listeners
                .entry((c.key.netns_cookie, c.local.port()))
                .or_insert_with(|| ListenerFacts {
                    owner: c.owner.as_deref().cloned(),
                    accept_queue: c.queues.accept_queue,
                    accept_limit: c.queues.accept_limit,
                });
        }
        Self {
            listeners,
            exposure: None,
        }
    }

    /// Whether (netns cookie, port) is a listening port (a socket on it is server side).
    #[must_use]
    pub fn is_listening_port(&self, netns_cookie: u64, port: u16) -> bool {
        self.listeners.contains_key(&(netns_cookie, port))
    }
}

/// The open incidents and the finding -> incident index.
#[derive(Debug)]
pub struct IncidentBook {
    cfg: IncidentConfig,
    /// Hysteresis and update pacing, the findings' own (`detectors.*`).
    resolve_after: u64,
    update_interval: u64,
    /// Open incidents by id (overflow incidents included).
    entries: BTreeMap<String, book::Entry>,
    /// Ids of `entries`, most severe, then oldest, first.
    order: Vec<String>,
    of_finding: BTreeMap<String, String>,
    /// Oldest first.
    resolved: VecDeque<Incident>,
    overflowed: usize,
}

impl IncidentBook {
    /// Takes its hysteresis from the detectors' configuration (`resolve_after_seconds`,
    /// `min_update_interval_seconds`).
    #[must_use]
    pub fn new(cfg: IncidentConfig, detectors: &DetectorConfig) -> Self {
        Self {
            cfg,
            resolve_after: seconds_to_ns(detectors.resolve_after_seconds),
            update_interval: seconds_to_ns(detectors.min_update_interval_seconds),
            entries: BTreeMap::new(),
            order: Vec::new(),
            of_finding: BTreeMap::new(),
            resolved: VecDeque::new(),
            overflowed: 0,
        }
    }

    /// Regroups all open findings at `now` and returns the incident lifecycle changes, in this
    /// order: incidents resolved because their members moved to another incident (merge or
    /// split), incidents opened or updated, incidents resolved after `resolve_after` without
    /// members. Findings with `resolved_at` set are ignored; a repeated id counts once.
    pub fn update<'a>(
        &mut self,
        now: MonoNs,
        wall: WallClock,
        findings: impl IntoIterator<Item = &'a Finding>,
        ctx: &IncidentContext,
    ) -> Vec<IncidentChange> {
        let mut seen = HashSet::new();
        let open: Vec<&Finding> = findings
            .into_iter()
            .filter(|f| f.resolved_at.is_none() && seen.insert(f.id.as_str()))
            .collect();
        self.regroup(now, wall, &open, ctx)
    }

    /// Open incidents, most severe first, then oldest.
    pub fn open(&self) -> impl Iterator<Item = &Incident> {
        self.order
            .iter()
            .filter_map(|id| self.entries.get(id).map(|e| &e.inc))
    }

    #[must_use]
    pub fn open_count(&self) -> usize {
        self.entries.len()
    }

    #[must_use]
    pub fn get(&self, id: &str) -> Option<&Incident> {
        self.entries.get(id).map(|e| &e.inc)
    }

    /// The open incident an open finding belongs to.
    #[must_use]
    pub fn incident_of(&self, finding_id: &str) -> Option<&str> {
        self.of_finding.get(finding_id).map(String::as_str)
    }

    /// The last `incidents.recently_resolved` resolved incidents, newest first.
    pub fn recently_resolved(&self) -> impl Iterator<Item = &Incident> {
        self.resolved.iter().rev()
    }

    /// Groupings beyond `incidents.max_open` at the last update: their findings joined the
    /// per-kind overflow incident instead (counted, never dropped).
    #[must_use]
    pub fn overflowed(&self) -> usize {
        self.overflowed
    }
}

#[cfg(test)]
#[path = "prop_tests.rs"]
mod prop_tests;

#[cfg(test)]
#[path = "examples_tests.rs"]
mod examples_tests;

#[cfg(test)]
#[path = "e2e_tests.rs"]
mod e2e_tests;

#[cfg(test)]
#[path = "peer_tests.rs"]
mod peer_tests;
