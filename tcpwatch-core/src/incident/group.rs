//! The grouping rules: which open findings form one incident (see `docs/incidents.md`).
//!
//! Two steps, both pure:
//! 1. [`parts`]: every open finding gets exactly one base key (listener, leak, upstream or
//!    resets), from its kind, cause and subject. Findings with the same key form a [`Part`].
//! 2. [`assemble`]: parts become groups (one incident each). A part stays alone, except that
//!    for every process in `merged` (see [`merge_holds`]) its client-side upstream parts, its
//!    `CLOSE_WAIT` leaks on listening ports and the listeners it owns form one
//!    `blocked_on_upstream` group.
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};

use super::{IncidentContext, IncidentKind, ProcessRef};
use crate::model::{Finding, FindingKind, MonoNs, NetnsId, Owner, PodRef, Severity, Subject};

/// A process in a namespace: (netns cookie, pid).
pub(crate) type ProcKey = (u64, u32);

/// The grouping key of one finding. Ordered so that groups come out in a stable order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum BaseKey {
    /// A listener (netns, port): its backlog and the never-accepted `CLOSE_WAIT` on it.
    Listener { cookie: u64, port: u16 },
    /// Owned `CLOSE_WAIT` of one process (None: owner unknown) on a listening port (0: on
    /// connections to other hosts, or a port nobody listens on).
    Leak {
        cookie: u64,
        pid: Option<u32>,
        port: u16,
    },
    /// Connections of one process (None: owner unknown) to one remote endpoint. Server side
    /// (the local port is a listening port): the remote port is 0, one key per client host.
    Upstream {
        cookie: u64,
        pid: Option<u32>,
        remote: SocketAddr,
        server_side: bool,
    },
    /// Reset bursts on one port.
    Resets { cookie: u64, port: u16 },
    /// Resets one client process draws from one server endpoint: `stale_connection_reuse`
    /// and client-side `reset_burst` (subject `peer`).
    PeerResets {
        cookie: u64,
        pid: Option<u32>,
        remote: SocketAddr,
    },
}

fn pid_text(pid: Option<u32>) -> String {
    pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string())
}

impl BaseKey {
    /// The incident id of this key when it stands alone.
    pub(crate) fn id(&self) -> String {
        match self {
            Self::Listener { cookie, port } => format!("listener-{cookie}-{port}"),
            Self::Leak { cookie, pid, port } => format!("leak-{cookie}-{}-{port}", pid_text(*pid)),
            Self::Upstream {
                cookie,
                pid,
                remote,
                ..
            } => format!("upstream-{cookie}-{}-{remote}", pid_text(*pid)),
            Self::Resets { cookie, port } => format!("resets-{cookie}-{port}"),
            Self::PeerResets {
                cookie,
                pid,
                remote,
            } => format!("resets-{cookie}-{}-{remote}", pid_text(*pid)),
        }
    }
}

/// The id of the merged incident of a process.
pub(crate) fn blocked_id((cookie, pid): ProcKey) -> String {
    format!("blocked-{cookie}-{pid}")
}

/// The id of the overflow incident of a kind.
pub(crate) fn overflow_id(kind: IncidentKind) -> String {
    format!("overflow-{}", kind.name())
}

/// Whether an upstream finding says the peer does not acknowledge (unreachable) or does not
/// answer / read (not responding). `send_queue_growing` causes: `peer_unreachable` and
/// `no_ack_progress` (no ACK progress without retransmissions seen: the data is not getting
/// through either) are unreachable, `peer_not_reading` (zero window) is not responding.
pub(crate) fn not_responding(f: &Finding) -> bool {
    match f.kind {
        FindingKind::AwaitingResponse => true,
        FindingKind::SendQueueGrowing => f.cause == "peer_not_reading",
        _ => false,
    }
}

/// Findings sharing one base key, with what is known of their namespace and process.
#[derive(Clone, Debug)]
pub(crate) struct Part<'a> {
    pub key: BaseKey,
    pub netns: NetnsId,
    pub process: Option<ProcessRef>,
    pub pod: Option<PodRef>,
    pub members: Vec<&'a Finding>,
}

impl Part<'_> {
    pub(crate) fn kind(&self) -> IncidentKind {
        match self.key {
            BaseKey::Listener { .. } => IncidentKind::ListenerNotAccepting,
            BaseKey::Leak { .. } => IncidentKind::CloseWaitLeak,
            BaseKey::Resets { .. } | BaseKey::PeerResets { .. } => IncidentKind::ResetStorm,
            BaseKey::Upstream { .. } => {
                if self.members.iter().all(|f| not_responding(f)) {
                    IncidentKind::UpstreamNotResponding
                } else {
                    IncidentKind::UpstreamUnreachable
                }
            }
        }
    }

    pub(crate) fn severity(&self) -> Severity {
        self.members
            .iter()
            .map(|f| f.severity)
            .max()
            .unwrap_or(Severity::Info)
    }

    pub(crate) fn since(&self) -> MonoNs {
        self.members
            .iter()
            .map(|f| f.since)
            .min()
            .unwrap_or_default()
    }

    /// The process this part can be merged for, if any: a client-side upstream, a leak on a
    /// listening port, or a listener, each with a known process.
    fn merge_key(&self) -> Option<(ProcKey, bool)> {
        match &self.key {
            // Failing connects alone do not hold the process (each attempt ends with the dial
            // timeout or the kernel's SYN give-up): only established upstream connections that
            // hang make it `blocked_on_upstream`.
            BaseKey::Upstream {
                cookie,
                pid: Some(pid),
                server_side: false,
                ..
            } if self
                .members
                .iter()
                .any(|f| f.kind != FindingKind::ConnectFailing) =>
            {
                Some(((*cookie, *pid), true))
            }
            BaseKey::Leak {
                cookie,
                pid: Some(pid),
                port,
            } if *port != 0 => Some(((*cookie, *pid), false)),
            BaseKey::Listener { cookie, .. } => {
                self.process.as_ref().map(|p| ((*cookie, p.pid), false))
            }
            _ => None,
        }
    }
}

/// The parts of a subject: namespace, local port, remote, owner.
fn subject_parts(s: &Subject) -> (NetnsId, u16, Option<SocketAddr>, Option<&Owner>) {
    match s {
        Subject::Connection {
            netns,
            local,
            remote,
            owner,
            ..
        } => (*netns, local.port(), Some(*remote), owner.as_ref()),
        Subject::Listener {
            netns,
            local,
            owner,
            ..
        } => (*netns, local.port(), None, owner.as_ref()),
        Subject::Port { netns, port } => (*netns, *port, None, None),
        Subject::Peer {
            netns,
            remote,
            owner,
        } => (*netns, 0, Some(*remote), owner.as_ref()),
    }
}

fn process_of(o: &Owner) -> ProcessRef {
    ProcessRef {
        pid: o.pid,
        comm: o.comm.clone(),
    }
}

/// The base key of one finding.
fn key_of(f: &Finding, ctx: &IncidentContext) -> BaseKey {
    let (netns, port, remote, owner) = subject_parts(&f.subject);
    let cookie = netns.cookie;
    let pid = owner.map(|o| o.pid);
    let listening = ctx.is_listening_port(cookie, port);
    match f.kind {
        FindingKind::AcceptBacklogFilling => BaseKey::Listener { cookie, port },
        FindingKind::CloseWaitStuck if f.cause == "unaccepted" => {
            BaseKey::Listener { cookie, port }
        }
        FindingKind::CloseWaitStuck => BaseKey::Leak {
            cookie,
            pid,
            port: if listening { port } else { 0 },
        },
        FindingKind::ResetBurst | FindingKind::StaleConnectionReuse
            if let Some(remote) = remote
                && matches!(f.subject, Subject::Peer { .. }) =>
        {
            BaseKey::PeerResets {
                cookie,
                pid,
                remote,
            }
        }
        FindingKind::ResetBurst | FindingKind::StaleConnectionReuse => {
            BaseKey::Resets { cookie, port }
        }
        // Failing connects join the upstream of (process, remote): always client side.
        FindingKind::ConnectFailing => BaseKey::Upstream {
            cookie,
            pid,
            remote: remote.unwrap_or_else(|| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))),
            server_side: false,
        },
        FindingKind::RetransmitChain
        | FindingKind::SendQueueGrowing
        | FindingKind::AwaitingResponse => {
            // Connection findings always have a remote; the fallback keeps the rule total.
            let r = remote.unwrap_or_else(|| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
            BaseKey::Upstream {
                cookie,
                pid,
                remote: if listening {
                    SocketAddr::new(r.ip(), 0)
                } else {
                    r
                },
                server_side: listening,
            }
        }
    }
}

/// Step 1: every finding into exactly one part.
pub(crate) fn parts<'a>(findings: &[&'a Finding], ctx: &IncidentContext) -> Vec<Part<'a>> {
    let mut by_key: BTreeMap<BaseKey, Part<'a>> = BTreeMap::new();
    for &f in findings {
        let key = key_of(f, ctx);
        let (netns, _, _, owner) = subject_parts(&f.subject);
        let part = by_key.entry(key.clone()).or_insert_with(|| Part {
            key,
            netns,
            process: None,
            pod: None,
            members: Vec::new(),
        });
        part.members.push(f);
        // Listeners: the listener's owner (from its own finding, below); others: the socket's.
        let listener_finding = matches!(f.subject, Subject::Listener { .. });
        let use_owner = match part.key {
            BaseKey::Listener { .. } => listener_finding,
            BaseKey::Resets { .. } => false,
            _ => true,
        };
        if use_owner
            && let Some(o) = owner
            && (part.process.is_none() || listener_finding)
        {
            part.process = Some(process_of(o));
            part.pod.clone_from(&o.pod);
        }
    }
    let mut out: Vec<Part<'a>> = by_key.into_values().collect();
    for p in &mut out {
        if p.process.is_none()
            && let BaseKey::Listener { cookie, port } | BaseKey::Resets { cookie, port } = p.key
            && let Some(o) = ctx
                .listeners
                .get(&(cookie, port))
                .and_then(|l| l.owner.as_ref())
        {
            p.process = Some(process_of(o));
            p.pod.clone_from(&o.pod);
        }
    }
    out
}

/// The processes for which the causal merge holds now: at least one client-side upstream part
/// and at least one consequence (a leak on a listening port, or a listener it owns).
pub(crate) fn merge_holds(parts: &[Part<'_>]) -> BTreeSet<ProcKey> {
    let mut upstream = BTreeSet::new();
    let mut consequence = BTreeSet::new();
    for p in parts {
        match p.merge_key() {
            Some((k, true)) => {
                upstream.insert(k);
            }
            Some((k, false)) => {
                consequence.insert(k);
            }
            None => {}
        }
    }
    upstream.intersection(&consequence).copied().collect()
}

/// One future incident: its id, kind and parts.
#[derive(Clone, Debug)]
pub(crate) struct Group<'a> {
    pub id: String,
    pub kind: IncidentKind,
    pub parts: Vec<Part<'a>>,
    /// The process of a `blocked_on_upstream` group.
    pub merged_for: Option<ProcKey>,
    /// Overflow incidents: how many groups were folded in.
    pub folded: usize,
}

impl<'a> Group<'a> {
    pub(crate) fn members(&self) -> impl Iterator<Item = &'a Finding> + '_ {
        self.parts.iter().flat_map(|p| p.members.iter().copied())
    }

    pub(crate) fn severity(&self) -> Severity {
        self.parts
            .iter()
            .map(Part::severity)
            .max()
            .unwrap_or(Severity::Info)
    }

    pub(crate) fn since(&self) -> MonoNs {
        self.parts.iter().map(Part::since).min().unwrap_or_default()
    }

    fn alone(part: Part<'a>) -> Self {
        Self {
            id: part.key.id(),
            kind: part.kind(),
            parts: vec![part],
            merged_for: None,
            folded: 0,
        }
    }
}

/// Step 2: parts into groups; the parts of every process in `merged` form one
/// `blocked_on_upstream` group.
pub(crate) fn assemble<'a>(parts: Vec<Part<'a>>, merged: &BTreeSet<ProcKey>) -> Vec<Group<'a>> {
    let mut out = Vec::new();
    let mut blocked: BTreeMap<ProcKey, Vec<Part<'a>>> = BTreeMap::new();
    for p in parts {
        match p.merge_key() {
            Some((k, _)) if merged.contains(&k) => blocked.entry(k).or_default().push(p),
            _ => out.push(Group::alone(p)),
        }
    }
    for (k, parts) in blocked {
        out.push(Group {
            id: blocked_id(k),
            kind: IncidentKind::BlockedOnUpstream,
            parts,
            merged_for: Some(k),
            folded: 0,
        });
    }
    out
}

/// Groups beyond the bound, folded into one overflow group per kind.
pub(crate) fn fold_overflow(rest: Vec<Group<'_>>) -> Vec<Group<'_>> {
    let mut by_kind: BTreeMap<IncidentKind, Group<'_>> = BTreeMap::new();
    for g in rest {
        let o = by_kind.entry(g.kind).or_insert_with(|| Group {
            id: overflow_id(g.kind),
            kind: g.kind,
            parts: Vec::new(),
            merged_for: None,
            folded: 0,
        });
        o.folded += 1;
        o.parts.extend(g.parts);
    }
    by_kind.into_values().collect()
}

#[cfg(test)]
#[path = "group_tests.rs"]
mod tests;
