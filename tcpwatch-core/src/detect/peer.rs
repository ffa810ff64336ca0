//! Helpers of the rules about a remote endpoint as one process sees it
//! (`stale_connection_reuse`, `connect_failing`).
use std::net::SocketAddr;

use crate::detect::{DetectContext, Snapshot, text};
use crate::endpoints::EndpointKey;
use crate::model::{ConnRecord, FindingKind, NetnsId, Owner, Subject};

pub(crate) fn netns_id(ctx: &DetectContext<'_>, cookie: u64) -> NetnsId {
    ctx.netns
        .get(&cookie)
        .map_or(NetnsId { cookie, inode: 0 }, |n| n.id)
}

pub(crate) fn owner(pid: u32, comm: &str) -> Option<Owner> {
    (pid != 0).then(|| Owner {
        pid,
        comm: comm.to_owned(),
        ..Owner::default()
    })
}

/// `nginx[1234]`, or words for an unknown process.
pub(crate) fn process(pid: u32, comm: &str) -> String {
    if pid == 0 {
        "a process tcpwatch did not see connect (accepted connection, or opened before \
         tcpwatch started)"
            .to_owned()
    } else {
        format!("{comm}[{pid}]")
    }
}

pub(crate) fn subject(ctx: &DetectContext<'_>, key: &EndpointKey, comm: &str) -> Subject {
    Subject::Peer {
        netns: netns_id(ctx, key.netns_cookie),
        remote: key.remote,
        owner: owner(key.pid, comm),
    }
}

pub(crate) fn id(kind: FindingKind, key: &EndpointKey) -> String {
    format!(
        "{}:{}:{}:{}",
        kind.name(),
        key.netns_cookie,
        key.pid,
        key.remote
    )
}

/// The listener on this host that serves `remote`: same port, same address or a wildcard, in
/// the client's namespace first; then in another namespace (the server may run in one) with
/// the same address, or a wildcard one when exactly one other namespace listens on that port.
pub(crate) fn server_on_host<'a>(
    snap: &Snapshot<'a>,
    netns_cookie: u64,
    remote: SocketAddr,
) -> Option<&'a ConnRecord> {
    if let Some(ls) = snap.listeners.get(&(netns_cookie, remote.port())) {
        let exact = ls.iter().find(|l| l.local.ip() == remote.ip());
        if let Some(l) = exact.or_else(|| ls.iter().find(|l| l.local.ip().is_unspecified())) {
            return Some(l);
        }
    }
    if remote.ip().is_loopback() {
        return None;
    }
    let mut others: Vec<&ConnRecord> = snap
        .listeners
        .iter()
        .filter(|((cookie, port), _)| *port == remote.port() && *cookie != netns_cookie)
        .flat_map(|(_, ls)| ls.iter().copied())
        .collect();
    others.sort_by_key(|l| l.key);
    if let Some(l) = others.iter().find(|l| l.local.ip() == remote.ip()) {
        return Some(l);
    }
    let wild: Vec<&&ConnRecord> = others
        .iter()
        .filter(|l| l.local.ip().is_unspecified())
        .collect();
    let first = wild.first()?;
    wild.iter()
        .all(|l| l.key.netns_cookie == first.key.netns_cookie)
        .then_some(**first)
}

/// `server nginx[12] on :8080, netns 4026531833` or `server not on this host`.
pub(crate) fn server_text(server: Option<&ConnRecord>) -> String {
    server.map_or_else(
        || "server not on this host".to_owned(),
        |l| {
            format!(
                "server {} on {}, {}",
                text::owner(l, false),
                l.local,
                text::netns(l.netns)
            )
        },
    )
}
