//! Per-endpoint facts counted by the kernel (issue 13), as the detectors see them: resets and
//! connect outcomes per (netns, remote endpoint, connecting process), resets sent from closed
//! connections per (netns, local port), and listener re-creations (server restarts).
//!
//! All counts are cumulative since the kernel entry was created (its maps are LRU: an entry
//! can vanish and come back from zero; the detectors re-baseline on a counter that goes down).
use std::collections::HashMap;
use std::net::SocketAddr;

use serde::Serialize;

use crate::model::MonoNs;

/// One remote endpoint as one process sees it (`pid` 0: the connecting process is unknown,
/// e.g. an accepted connection or one opened before tcpwatch started).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct EndpointKey {
    pub netns_cookie: u64,
    pub remote: SocketAddr,
    pub pid: u32,
}

/// Cumulative counts of one [`EndpointKey`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EndpointStats {
    pub comm: String,
    /// Requests written into connections the peer had already closed (RST received in
    /// `CLOSE_WAIT`/`LAST_ACK`, or drawn from a closed socket of this host).
    pub stale_resets: u64,
    /// Other RSTs received.
    pub resets_received: u64,
    pub connects_refused: u64,
    pub connects_timed_out: u64,
    /// Failed without SYN retransmission and without RST (ICMP error, closed by the app).
    pub connects_failed: u64,
    pub syn_retrans: u64,
    pub connects_ok: u64,
    /// Last update (monotonic ns), 0 = unknown.
    pub last: MonoNs,
}

/// RSTs sent from connections this host's application had already closed, on one local port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServerPortResets {
    pub timewait_sent: u64,
    pub orphan_sent: u64,
    pub last: MonoNs,
}

/// A listening address whose listener was closed and re-created (a server restart).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ListenerHistory {
    pub netns_cookie: u64,
    pub local: SocketAddr,
    pub listens: u32,
    pub restarts: u32,
    /// When the listener was last re-created after a close.
    pub last_restart: Option<MonoNs>,
    pub pid: u32,
    pub comm: String,
}

/// Kernel classification counters (see `tcpwatch_common::endpoints::class_counter`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClassCounters {
    pub no_socket_rst_sent: u64,
    pub timewait_rst_sent: u64,
    pub orphan_rst_sent: u64,
    pub stale_rst_received: u64,
    pub connects_failed: u64,
    /// Inserts the kernel could not make (maps full): counted, never silent.
    pub endpoints_full: u64,
    pub server_resets_full: u64,
    pub connecting_full: u64,
    pub listens_full: u64,
    pub stale_tuples_full: u64,
}

/// Everything of this module one sweep read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EndpointFacts {
    pub endpoints: HashMap<EndpointKey, EndpointStats>,
    pub server_ports: HashMap<(u64, u16), ServerPortResets>,
    pub listeners: Vec<ListenerHistory>,
    pub counters: ClassCounters,
    /// RSTs sent per kernel reason (`enum sk_rst_reason`, Linux 6.10+), non-zero ones, by name.
    pub reset_reasons: Vec<(String, u64)>,
}

impl EndpointFacts {
    /// The latest restart of a listener that serves `remote` (same port; same address or a
    /// wildcard; in `prefer_netns` first), with the listener's process.
    #[must_use]
    pub fn restart_of(&self, prefer_netns: u64, remote: SocketAddr) -> Option<&ListenerHistory> {
        let serves = |l: &&ListenerHistory| {
            l.local.port() == remote.port()
                && (l.local.ip() == remote.ip() || l.local.ip().is_unspecified())
                && l.last_restart.is_some()
        };
        let mut ls: Vec<&ListenerHistory> = self.listeners.iter().filter(serves).collect();
        ls.sort_by_key(|l| {
            (
                l.netns_cookie != prefer_netns,
                std::cmp::Reverse(l.last_restart),
            )
        });
        ls.first().copied()
    }
}
