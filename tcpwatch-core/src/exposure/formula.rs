//! How long after its peer vanished a connection's process learns of it: the kernel's own
//! rules, per connection (`net/ipv4/tcp_timer.c`).
//!
//! - **Data in flight** (`Send-Q > 0`): the retransmission timer gives up after
//!   `TCP_USER_TIMEOUT` when it is set, else after the model timeout of `tcp_retries2`
//!   (`tcp_write_timeout()` / `retransmits_timed_out()`: [`give_up_after_ms`], 924.6 s for the
//!   default 15). Keepalive never runs while data is in flight (`tcp_keepalive_timer()`
//!   re-arms when `packets_out` or the write queue is non-empty).
//! - **Idle** (nothing to send, waiting for the peer): only keepalive notices a dead peer.
//!   Without `SO_KEEPALIVE`: never. With it, `tcp_keepalive_timer()` sends the first probe
//!   `keepalive_time_when()` after the last packet received, then one every
//!   `keepalive_intvl_when()`:
//!   - without `TCP_USER_TIMEOUT` it resets the connection at the expiry where
//!     `icsk_probes_out >= keepalive_probes()`: `time + probes × intvl`;
//!   - with `TCP_USER_TIMEOUT` the probe count is ignored: it resets at the first expiry with
//!     at least one probe out and `elapsed >= user_timeout`: `time + k × intvl` for the
//!     smallest `k >= 1` that reaches the user timeout.
//!
//!   Each of `time`, `intvl`, `probes` is the socket's own (`TCP_KEEPIDLE`, `TCP_KEEPINTVL`,
//!   `TCP_KEEPCNT`) when non-zero, else the namespace's `tcp_keepalive_*`.
//!   `TCP_USER_TIMEOUT` alone does not bound an idle connection.
use serde::{Deserialize, Serialize};

use crate::detect::give_up_after_ms;
use crate::model::{ConnRecord, KeepaliveOpts, NetnsInfo, TcpState};

/// Keepalive as the kernel applies it to one socket (namespace defaults filled in).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keepalive {
    pub time_ms: u64,
    pub intvl_ms: u64,
    pub probes: u32,
}

/// The socket's keepalive in force: `None` when `SO_KEEPALIVE` is off. The kernel's
/// `keepalive_time_when()`, `keepalive_intvl_when()`, `keepalive_probes()`.
#[must_use]
pub fn effective_keepalive(opts: &KeepaliveOpts, ns: &NetnsInfo) -> Option<Keepalive> {
    if !opts.enabled {
        return None;
    }
    let or = |own: u64, default_s: u32| {
        if own > 0 {
            own
        } else {
            u64::from(default_s) * 1000
        }
    };
    Some(Keepalive {
        time_ms: or(opts.time_ms, ns.tcp_keepalive_time_s),
        intvl_ms: or(opts.intvl_ms, ns.tcp_keepalive_intvl_s),
        probes: if opts.probes > 0 {
            u32::from(opts.probes)
        } else {
            ns.tcp_keepalive_probes
        },
    })
}

/// `tcp_keepalive_timer()`: how long after the last packet from a vanished peer the kernel
/// resets an idle connection.
#[must_use]
pub fn keepalive_detect_ms(k: Keepalive, user_timeout_ms: u32) -> u64 {
    let intvl = k.intvl_ms.max(1);
    if user_timeout_ms == 0 {
        return k
            .time_ms
            .saturating_add(u64::from(k.probes).saturating_mul(intvl));
    }
    // Expiries at time + n*intvl (n >= 0); the first one only sends a probe.
    let user = u64::from(user_timeout_ms);
    let n = user.saturating_sub(k.time_ms).div_ceil(intvl).max(1);
    k.time_ms.saturating_add(n.saturating_mul(intvl))
}

/// What bounds a connection's wait for a vanished peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// Data in flight, `TCP_USER_TIMEOUT` set.
    UserTimeout,
    /// Data in flight, the model timeout of `tcp_retries2`.
    Retries2,
    /// Idle, keepalive probes (`TCP_USER_TIMEOUT` not set).
    Keepalive,
    /// Idle, keepalive probes cut off by `TCP_USER_TIMEOUT`.
    KeepaliveUserTimeout,
    /// Idle without keepalive: nothing.
    Nothing,
}

/// One connection's exposure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnExposure {
    /// Whether data is in flight now (`Send-Q > 0`): which of the two figures applies.
    pub in_flight_now: bool,
    /// The wait if data is in flight when the peer vanishes (ms).
    pub in_flight_ms: u64,
    /// The wait if the connection is idle when the peer vanishes (ms); `None`: never.
    pub idle_ms: Option<u64>,
    /// The figure that applies now (ms); `None`: never.
    pub worst_case_ms: Option<u64>,
    pub bound: Bound,
    /// `tcp_retries2` of the connection's namespace.
    pub tcp_retries2: u32,
    pub user_timeout_ms: u32,
    /// Keepalive in force (`None`: `SO_KEEPALIVE` off).
    pub keepalive: Option<Keepalive>,
}

impl ConnExposure {
    /// Whether the figure that applies now exceeds `threshold_ms` (never always does).
    #[must_use]
    pub fn exceeds(&self, threshold_ms: u64) -> bool {
        self.worst_case_ms.is_none_or(|w| w > threshold_ms)
    }
}

/// The exposure of an `ESTABLISHED` full socket (`None` for anything else).
#[must_use]
pub fn assess(c: &ConnRecord, ns: &NetnsInfo) -> Option<ConnExposure> {
    if c.state != TcpState::Established || !c.full_sock {
        return None;
    }
    let ut = c.tcp.user_timeout_ms;
    let in_flight_ms = give_up_after_ms(ns.tcp_retries2, ut);
    let keepalive = effective_keepalive(&c.tcp.keepalive, ns);
    let idle_ms = keepalive.map(|k| keepalive_detect_ms(k, ut));
    let in_flight_now = c.queues.send_q > 0;
    let (worst_case_ms, bound) = if in_flight_now {
        let b = if ut > 0 {
            Bound::UserTimeout
        } else {
            Bound::Retries2
        };
        (Some(in_flight_ms), b)
    } else {
        let b = match (keepalive, ut) {
            (None, _) => Bound::Nothing,
            (Some(_), 0) => Bound::Keepalive,
            (Some(_), _) => Bound::KeepaliveUserTimeout,
        };
        (idle_ms, b)
    };
    Some(ConnExposure {
        in_flight_now,
        in_flight_ms,
        idle_ms,
        worst_case_ms,
        bound,
        tcp_retries2: ns.tcp_retries2,
        user_timeout_ms: ut,
        keepalive,
    })
}

#[cfg(test)]
#[path = "formula_tests.rs"]
mod tests;
