//! What an incident says: cause, root labels, the diagnosis line and the consequence, from its
//! group of findings. Pure; `now` is only used for ages.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;

use super::group::{BaseKey, Group, Part, not_responding};
use super::{IncidentContext, IncidentKind, IncidentRoot, ProcessRef};
use crate::detect::text::dur;
use crate::model::{ConnKey, Finding, FindingKind, MonoNs, PodRef, Severity, Subject};

/// Everything about an incident that is derived from its members at one update.
#[derive(Clone, Debug)]
pub(crate) struct Summary {
    pub cause: String,
    pub severity: Severity,
    pub root: IncidentRoot,
    pub diagnosis: String,
    pub consequence: Option<String>,
    pub counts: BTreeMap<String, u32>,
    pub members: Vec<String>,
    pub members_total: u32,
    pub since: MonoNs,
}

fn count32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// `1 connection`, `3 connections`.
fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn who(process: Option<&ProcessRef>, pod: Option<&PodRef>) -> String {
    let Some(p) = process else {
        return "an unidentified process".to_owned();
    };
    let mut s = format!("{}[{}]", p.comm, p.pid);
    match pod {
        Some(pod) if !pod.name.is_empty() => {
            let _ = write!(s, " in pod {}/{}", pod.namespace, pod.name);
        }
        _ => {}
    }
    s
}

fn of_kind<'a>(members: &[&'a Finding], kind: FindingKind) -> Vec<&'a Finding> {
    members.iter().copied().filter(|f| f.kind == kind).collect()
}

/// Distinct connections among the members.
fn connections(members: &[&Finding]) -> usize {
    members
        .iter()
        .filter_map(|f| match &f.subject {
            Subject::Connection { key, .. } => Some(*key),
            _ => None,
        })
        .collect::<BTreeSet<ConnKey>>()
        .len()
}

fn oldest(members: &[&Finding], now: MonoNs) -> String {
    let since = members.iter().map(|f| f.since).min().unwrap_or(now);
    dur(now.saturating_sub(since))
}

fn ev(f: &Finding, key: &str) -> Option<f64> {
    f.evidence.get(key).copied()
}

/// `accept queue 513/512`, from the table or the backlog finding.
fn accept_queue(p: &Part<'_>, ctx: &IncidentContext) -> Option<String> {
    let BaseKey::Listener { cookie, port } = p.key else {
        return None;
    };
    if let Some(l) = ctx.listeners.get(&(cookie, port)) {
        return Some(format!(
            "accept queue {}/{}",
            l.accept_queue, l.accept_limit
        ));
    }
    let b = p
        .members
        .iter()
        .find(|f| f.kind == FindingKind::AcceptBacklogFilling)?;
    Some(format!(
        "accept queue {}/{}",
        ev(b, "queue")?,
        ev(b, "limit")?
    ))
}

fn port_of(p: &Part<'_>) -> Option<u16> {
    match p.key {
        BaseKey::Listener { port, .. } | BaseKey::Resets { port, .. } => Some(port),
        BaseKey::Leak { port, .. } => (port != 0).then_some(port),
        BaseKey::Upstream { .. } | BaseKey::PeerResets { .. } => None,
    }
}

fn netns(p: &Part<'_>) -> String {
    format!("netns {}", p.netns.inode)
}

fn listener_text(p: &Part<'_>, ctx: &IncidentContext, now: MonoNs) -> String {
    let port = port_of(p).unwrap_or(0);
    let cw = of_kind(&p.members, FindingKind::CloseWaitStuck);
    let mut facts = Vec::new();
    if let Some(q) = accept_queue(p, ctx) {
        facts.push(q);
    }
    let overflowing = p
        .members
        .iter()
        .any(|f| f.kind == FindingKind::AcceptBacklogFilling && f.cause == "overflowing");
    if overflowing {
        facts.push("new connections are dropped (ListenOverflows rising)".to_owned());
    }
    if !cw.is_empty() {
        facts.push(format!(
            "{} queued and already closed by the peer (CLOSE_WAIT, never accepted), oldest {}",
            plural(cw.len(), "connection"),
            oldest(&cw, now)
        ));
    }
    if facts.is_empty() {
        facts.push("accept queue filling".to_owned());
    }
    // Only a filling queue: slow, not (yet) stopped.
    let head = if overflowing || !cw.is_empty() {
        "app is not calling accept() on"
    } else {
        "app is not accepting fast enough on"
    };
    let owner = who(p.process.as_ref(), p.pod.as_ref());
    format!(
        "{head} :{port} ({owner}, {}): {}; look at what keeps {owner} from accepting (a \
         connection limit such as netutil.LimitListener, a blocked accept loop) and dump its \
         threads",
        netns(p),
        facts.join(", ")
    )
}

fn leak_text(p: &Part<'_>, now: MonoNs) -> String {
    let owner = who(p.process.as_ref(), p.pod.as_ref());
    let on = port_of(p).map_or_else(
        || "on its outgoing connections".to_owned(),
        |port| format!("on :{port}"),
    );
    let look = p.process.as_ref().map_or_else(
        || "find the owner with ss -tanp state close-wait".to_owned(),
        |pr| {
            format!(
                "look at its descriptors (ls -l /proc/{}/fd) and its stacks",
                pr.pid
            )
        },
    );
    format!(
        "{owner} leaks sockets after the peer closed {on}: {} in CLOSE_WAIT, oldest {}; it never \
         calls close() on them (a missing close on an error path, or handlers stuck before they \
         close): {look}; {}",
        p.members.len(),
        oldest(&p.members, now),
        netns(p)
    )
}

/// What an upstream part's members show, e.g. `3 connections retransmitting, no ACK, Send-Q
/// not draining on 1`.
fn upstream_detail(p: &Part<'_>) -> String {
    let conns = connections(&p.members);
    let retrans = of_kind(&p.members, FindingKind::RetransmitChain).len();
    let sendq = of_kind(&p.members, FindingKind::SendQueueGrowing);
    let zero = sendq.iter().filter(|f| not_responding(f)).count();
    let stalled = sendq.len() - zero;
    let waiting = of_kind(&p.members, FindingKind::AwaitingResponse).len();
    // (how many, said of all connections, said of some).
    let facts = [
        (
            retrans,
            "retransmitting, no ACK".to_owned(),
            format!("{retrans} retransmitting, no ACK"),
        ),
        (
            stalled,
            "with a Send-Q not draining".to_owned(),
            format!("Send-Q not draining on {stalled}"),
        ),
        (
            zero,
            "with the peer not reading (zero window)".to_owned(),
            format!("peer not reading (zero window) on {zero}"),
        ),
        (
            waiting,
            "waiting for a response".to_owned(),
            format!("{waiting} waiting for a response"),
        ),
    ];
    let mut said = facts.into_iter().filter(|(n, _, _)| *n > 0).peekable();
    let sep = match said.peek() {
        Some((n, _, _)) if *n == conns => " ",
        _ => ": ",
    };
    let text: Vec<String> = said
        .map(|(n, all, some)| if n == conns { all } else { some })
        .collect();
    format!("{}{sep}{}", plural(conns, "connection"), text.join(", "))
}

/// `10.0.0.5:443`, or `client host 10.0.0.9 of :8080` for a server-side key.
fn peer(p: &Part<'_>) -> String {
    match (&p.key, p.members.first().map(|f| &f.subject)) {
        (
            BaseKey::Upstream {
                remote,
                server_side: true,
                ..
            },
            Some(Subject::Connection { local, .. }),
        ) => format!("client host {} of :{}", remote.ip(), local.port()),
        (BaseKey::Upstream { remote, .. }, _) => remote.to_string(),
        _ => String::new(),
    }
}

fn upstream_text(p: &Part<'_>, now: MonoNs) -> String {
    let owner = who(p.process.as_ref(), p.pod.as_ref());
    let lasted = dur(now.saturating_sub(p.since()));
    if p.kind() == IncidentKind::UpstreamNotResponding {
        format!(
            "{} stopped answering {owner} for {lasted}: {}; the peer may be hung or overloaded: check it, \
             and give {owner} read timeouts; {}",
            peer(p),
            upstream_detail(p),
            netns(p)
        )
    } else if let Some(f) = connects_only(p) {
        // Only failing connects (`connect_failing`): the finding says it all.
        format!(
            "{} unreachable from {owner} for {lasted}: {}; {}",
            peer(p),
            f.diagnosis,
            netns(p)
        )
    } else {
        let connects = p
            .members
            .iter()
            .find(|f| f.kind == FindingKind::ConnectFailing)
            .map_or_else(String::new, |f| {
                format!("; new connects fail too: {}", f.diagnosis)
            });
        format!(
            "{} unreachable from {owner} for {lasted}: {}{connects}; the peer vanished without FIN/RST or the path \
             is broken, and the kernel keeps retrying (up to tcp_retries2): check the peer and the path, \
             and bound the wait (TCP_USER_TIMEOUT, HTTP/2 PING / read-idle timeout); {}",
            peer(p),
            upstream_detail(p),
            netns(p)
        )
    }
}

/// The first member when every member is a `connect_failing` finding.
fn connects_only<'a>(p: &Part<'a>) -> Option<&'a Finding> {
    p.members
        .iter()
        .all(|f| f.kind == FindingKind::ConnectFailing)
        .then(|| p.members.first().copied())
        .flatten()
}

/// Most severe, then oldest, then by key.
fn rank(a: &Part<'_>, b: &Part<'_>) -> std::cmp::Ordering {
    b.severity()
        .cmp(&a.severity())
        .then(a.since().cmp(&b.since()))
        .then(a.key.cmp(&b.key))
}

fn upstream_cause(p: &Part<'_>) -> String {
    if p.kind() == IncidentKind::UpstreamUnreachable {
        "peer_unreachable".to_owned()
    } else if p.members.iter().any(|f| f.cause == "peer_not_reading") {
        "peer_not_reading".to_owned()
    } else {
        "no_response".to_owned()
    }
}

/// The consequence of a blocked process, per listening port.
fn consequence_text(consequences: &[&Part<'_>], ctx: &IncidentContext) -> String {
    let mut per_port: BTreeMap<u16, (usize, Option<String>)> = BTreeMap::new();
    for p in consequences {
        let e = per_port.entry(port_of(p).unwrap_or(0)).or_default();
        e.0 += of_kind(&p.members, FindingKind::CloseWaitStuck).len();
        if let Some(q) = accept_queue(p, ctx) {
            e.1 = Some(q);
        }
    }
    let piles: Vec<String> = per_port
        .iter()
        .map(|(port, (cw, q))| {
            let mut s = format!(":{port}: {cw} in CLOSE_WAIT");
            if let Some(q) = q {
                let _ = write!(s, ", {q}");
            }
            s
        })
        .collect();
    format!("its callers' connections pile up on {}", piles.join("; "))
}

fn blocked(
    g: &Group<'_>,
    ctx: &IncidentContext,
    now: MonoNs,
) -> (String, IncidentRoot, String, Option<String>) {
    let mut ups: Vec<&Part<'_>> = g
        .parts
        .iter()
        .filter(|p| matches!(p.key, BaseKey::Upstream { .. }))
        .collect();
    ups.sort_by(|a, b| rank(a, b));
    let mut cons: Vec<&Part<'_>> = g
        .parts
        .iter()
        .filter(|p| !matches!(p.key, BaseKey::Upstream { .. }))
        .collect();
    // The consequence port: the oldest pile (stable while it lasts).
    cons.sort_by(|a, b| a.since().cmp(&b.since()).then(a.key.cmp(&b.key)));
    let first = g.parts.first();
    let process = g.parts.iter().find_map(|p| p.process.clone());
    let pod = g.parts.iter().find_map(|p| p.pod.clone());
    let owner = who(process.as_ref(), pod.as_ref());
    let root_remote = ups.first().and_then(|p| match p.key {
        BaseKey::Upstream { remote, .. } => Some(remote),
        _ => None,
    });
    let root = IncidentRoot {
        netns: first.map_or(super::NO_NETNS, |p| p.netns),
        process,
        pod,
        local_port: cons.first().and_then(|p| port_of(p)),
        remote: root_remote,
    };
    let (cause, diagnosis) = if let Some(up) = ups.first() {
        let others = if ups.len() > 1 {
            format!(" and {} other upstream(s)", ups.len() - 1)
        } else {
            String::new()
        };
        (
            upstream_cause(up),
            format!(
                "{owner} is blocked on {}{others} for {}: {}; its own callers wait on it: bound the \
                 upstream calls (timeouts, TCP_USER_TIMEOUT, HTTP/2 PING) and check the upstream; {}",
                peer(up),
                dur(now.saturating_sub(up.since())),
                upstream_detail(up),
                netns(up)
            ),
        )
    } else {
        (
            "blocked".to_owned(),
            format!(
                "{owner} was blocked on an upstream that no longer shows problems; waiting for its \
                 callers' connections to drain"
            ),
        )
    };
    let consequence = if cons.is_empty() {
        "its callers' connections no longer pile up".to_owned()
    } else {
        consequence_text(&cons, ctx)
    };
    (cause, root, diagnosis, Some(consequence))
}

fn overflow_text(g: &Group<'_>, ctx: &IncidentContext, now: MonoNs, max_open: u32) -> String {
    let example = g
        .parts
        .first()
        .map(|p| single(p, ctx, now).2)
        .unwrap_or_default();
    format!(
        "{} more {} incident(s) than incidents.max_open ({max_open}) allows, with {} finding(s); \
         raise incidents.max_open or see /api/v1/findings; one of them: {example}",
        g.folded,
        g.kind.name(),
        g.members().count(),
    )
}

/// Cause, root and diagnosis of a part standing alone.
fn single(p: &Part<'_>, ctx: &IncidentContext, now: MonoNs) -> (String, IncidentRoot, String) {
    let mut root = IncidentRoot {
        netns: p.netns,
        process: p.process.clone(),
        pod: p.pod.clone(),
        local_port: port_of(p),
        remote: None,
    };
    match &p.key {
        BaseKey::Listener { .. } => ("not_accepting".to_owned(), root, listener_text(p, ctx, now)),
        BaseKey::Leak { .. } => ("not_closing".to_owned(), root, leak_text(p, now)),
        BaseKey::Upstream {
            remote,
            server_side,
            ..
        } => {
            root.remote = Some(*remote);
            if *server_side
                && let Some(Subject::Connection { local, .. }) =
                    p.members.first().map(|f| &f.subject)
            {
                root.local_port = Some(local.port());
            }
            let mut text = upstream_text(p, now);
            if !*server_side && let (Some(report), Some(proc)) = (&ctx.exposure, &p.process) {
                let members: Vec<SocketAddr> = p
                    .members
                    .iter()
                    .filter_map(|f| match &f.subject {
                        Subject::Connection { local, .. } => Some(*local),
                        _ => None,
                    })
                    .collect();
                if let Some(line) =
                    crate::exposure::process_line(report, proc.pid, *remote, &members)
                {
                    text.push_str("; ");
                    text.push_str(&line);
                }
            }
            (upstream_cause(p), root, text)
        }
        BaseKey::Resets { .. } | BaseKey::PeerResets { .. } => {
            if let BaseKey::PeerResets { remote, .. } = &p.key {
                root.remote = Some(*remote);
            }
            let cause = p
                .members
                .first()
                .map_or_else(|| "resets".to_owned(), |f| f.cause.clone());
            let diagnosis = p
                .members
                .iter()
                .map(|f| f.diagnosis.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            (cause, root, diagnosis)
        }
    }
}

/// Member ids, most severe, then oldest, first.
fn ranked_members<'a>(g: &Group<'a>) -> Vec<&'a Finding> {
    let mut m: Vec<&Finding> = g.members().collect();
    m.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.since.cmp(&b.since))
            .then(a.id.cmp(&b.id))
    });
    m
}

/// Describes a group at `now`.
pub(crate) fn describe(
    g: &Group<'_>,
    ctx: &IncidentContext,
    now: MonoNs,
    max_listed: u32,
    max_open: u32,
) -> Summary {
    let members = ranked_members(g);
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for f in &members {
        *counts.entry(f.kind.name().to_owned()).or_default() += 1;
    }
    let listed = usize::try_from(max_listed).unwrap_or(usize::MAX);
    let (cause, root, diagnosis, consequence) = if g.folded > 0 {
        let root = IncidentRoot {
            netns: g.parts.first().map_or(super::NO_NETNS, |p| p.netns),
            process: None,
            pod: None,
            local_port: None,
            remote: None,
        };
        (
            "overflow".to_owned(),
            root,
            overflow_text(g, ctx, now, max_open),
            None,
        )
    } else if g.kind == IncidentKind::BlockedOnUpstream {
        blocked(g, ctx, now)
    } else if let Some(p) = g.parts.first() {
        let (c, r, d) = single(p, ctx, now);
        (c, r, d, None)
    } else {
        // Groups always have a part; kept total.
        let root = IncidentRoot {
            netns: super::NO_NETNS,
            process: None,
            pod: None,
            local_port: None,
            remote: None,
        };
        ("unknown".to_owned(), root, String::new(), None)
    };
    Summary {
        cause,
        severity: g.severity(),
        root,
        diagnosis,
        consequence,
        counts,
        members: members.iter().take(listed).map(|f| f.id.clone()).collect(),
        members_total: count32(members.len()),
        since: g.since(),
    }
}
