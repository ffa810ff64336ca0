//! When the kernel gives up on a connection that retransmits without ACK progress: the
//! projection of `retransmit_chain`, after the kernel's `net/ipv4/tcp_timer.c`.
//!
//! - **Limit** (`tcp_write_timeout()`): `TCP_USER_TIMEOUT` when set; otherwise a timeout from a
//!   retry count by `tcp_model_timeout()` with `rto_base = TCP_RTO_MIN`. The count is
//!   `tcp_retries2`, except for an orphan (`SOCK_DEAD`: the application closed the socket, which
//!   lives on in `FIN_WAIT1`, `CLOSING` or `LAST_ACK`), which uses `tcp_orphan_retries()`: the
//!   namespace's `tcp_orphan_retries`, and 0 there means 8 while the RTO is below
//!   `TCP_RTO_MAX` (0 once it reached it).
//! - **When it is checked**: only when the RTO timer fires, and only from the second expiry on
//!   (`retransmits_timed_out()` needs `icsk_retransmits > 0`). The elapsed time is measured from
//!   `retrans_stamp`, the first RTO retransmission. So the kernel gives up at the first expiry
//!   at or after the limit, not at the limit: with `tcp_orphan_retries = 3` (limit 3 s) and an
//!   RTO of 204 ms the expiries come 0.41, 1.22, 2.86 and 6.12 s after the first one, and the
//!   socket dies after 6.12 s. With `TCP_USER_TIMEOUT` the timer is clamped to fire at the
//!   limit itself.
//!
//! The timer's schedule comes from the sweep: `icsk_retransmits` (expiries so far),
//! `icsk_backoff` and `icsk_rto` (the current interval, doubled at each expiry up to
//! `TCP_RTO_MAX`), and the time of the last expiry. The kernel's timer wheel may fire each
//! expiry late by up to an eighth of its interval; that slack is not predicted.
use crate::model::MonoNs;

/// The kernel's `TCP_RTO_MIN` (200 ms).
pub const TCP_RTO_MIN_MS: u64 = 200;
/// The kernel's `TCP_RTO_MAX` (120 s).
pub const TCP_RTO_MAX_MS: u64 = 120_000;
/// `tcp_orphan_retries()`: the retries of an orphan whose RTO is below `TCP_RTO_MAX` when the
/// sysctl is 0 (its default).
pub const ORPHAN_RETRIES_WHEN_ZERO: u32 = 8;

const NS_PER_MS: u64 = 1_000_000;

/// The kernel's `tcp_model_timeout()`: how long retransmissions with exponential backoff from
/// `rto_base_ms` (capped at `TCP_RTO_MAX`) take to use up `boundary` retries.
///
/// `linear_backoff_thresh = ilog2(TCP_RTO_MAX / rto_base)`; up to it the RTO doubles, after it
/// every retry waits `TCP_RTO_MAX`. `tcp_retries2 = 15` gives 924.6 s, 8 gives 102.2 s.
#[must_use]
pub fn retries_timeout_ms(boundary: u32, rto_base_ms: u64) -> u64 {
    let base = rto_base_ms.clamp(1, TCP_RTO_MAX_MS);
    let thresh = (TCP_RTO_MAX_MS / base).ilog2();
    if boundary <= thresh {
        ((2u64 << boundary) - 1) * base
    } else {
        ((2u64 << thresh) - 1) * base + u64::from(boundary - thresh) * TCP_RTO_MAX_MS
    }
}

/// The limit `retransmits_timed_out()` compares with: the socket's `TCP_USER_TIMEOUT` when
/// set (non-zero), else the model timeout of `retries`.
#[must_use]
pub fn give_up_after_ms(retries: u32, user_timeout_ms: u32) -> u64 {
    if user_timeout_ms > 0 {
        u64::from(user_timeout_ms)
    } else {
        retries_timeout_ms(retries, TCP_RTO_MIN_MS)
    }
}

/// The kernel's `tcp_orphan_retries()`: how many retries an orphaned socket gets, from the
/// namespace's `tcp_orphan_retries` and the socket's current RTO. (The kernel also answers 0
/// when an ICMP error was recorded and the RTO reached `TCP_RTO_MAX`; tcpwatch cannot see
/// that error.)
#[must_use]
pub fn orphan_retries(sysctl: u32, rto_ms: u64) -> u32 {
    let alive = rto_ms < TCP_RTO_MAX_MS;
    if sysctl == 0 && alive {
        ORPHAN_RETRIES_WHEN_ZERO
    } else {
        sysctl
    }
}

/// The RTO timer of a socket as one sweep saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtoTimer {
    /// `icsk_retransmits`: expiries (each with a retransmission) since the last ACK progress.
    pub fired: u32,
    /// `icsk_backoff`: doublings of the RTO since the last valid RTT sample (`>= fired`).
    pub backoff: u32,
    /// `icsk_rto`: the current interval, until the next expiry.
    pub rto_ms: u64,
    /// When the last expiry happened (`fired >= 1`), or the last transmission (`fired == 0`).
    pub last_at: MonoNs,
}

/// When the kernel aborts the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GiveUp {
    /// The first RTO retransmission (`retrans_stamp`), from which the limit is measured.
    pub first_rto_at: MonoNs,
    /// The abort.
    pub at: MonoNs,
}

impl RtoTimer {
    /// The RTO before any backoff: `icsk_rto >> icsk_backoff`, or `TCP_RTO_MIN` when the RTO
    /// is capped at `TCP_RTO_MAX` (the shifted-out value is then unknown).
    fn base_ms(&self) -> u64 {
        if self.rto_ms < TCP_RTO_MAX_MS {
            (self.rto_ms >> self.backoff.min(63)).max(1)
        } else {
            TCP_RTO_MIN_MS
        }
    }

    /// The interval after expiry `i` (`i = 0`: before the first one), in ms.
    fn interval_ms(&self, i: u32) -> u64 {
        let shift = self.backoff.saturating_sub(self.fired).saturating_add(i);
        if shift >= 32 {
            return TCP_RTO_MAX_MS;
        }
        (self.base_ms() << shift).min(TCP_RTO_MAX_MS)
    }

    /// Time of expiry `n` (`n >= 1`) after the first one, in ms.
    fn expiry_ms(&self, n: u32) -> u64 {
        (1..n).fold(0u64, |acc, i| acc.saturating_add(self.interval_ms(i)))
    }

    /// When the kernel gives up, for a limit of `limit_ms` (see [`give_up_after_ms`]);
    /// `user_timeout` says whether the limit is a `TCP_USER_TIMEOUT`.
    #[must_use]
    pub fn give_up(&self, limit_ms: u64, user_timeout: bool) -> GiveUp {
        let first_rto_at = if self.fired >= 1 {
            self.last_at
                .saturating_sub(self.expiry_ms(self.fired).saturating_mul(NS_PER_MS))
        } else {
            self.last_at
                .saturating_add(self.interval_ms(0).saturating_mul(NS_PER_MS))
        };
        let after_ms = if user_timeout {
            limit_ms
        } else {
            self.first_expiry_at_or_after(limit_ms)
        };
        GiveUp {
            first_rto_at,
            at: first_rto_at.saturating_add(after_ms.saturating_mul(NS_PER_MS)),
        }
    }

    /// The first future expiry (not before the second one) at or after `limit_ms`, in ms
    /// after the first expiry.
    fn first_expiry_at_or_after(&self, limit_ms: u64) -> u64 {
        let mut n = self.fired.saturating_add(1).max(2);
        let mut at = self.expiry_ms(n);
        while at < limit_ms {
            let step = self.interval_ms(n);
            if step >= TCP_RTO_MAX_MS {
                // Every further expiry is TCP_RTO_MAX apart: jump there.
                let steps = (limit_ms - at).div_ceil(TCP_RTO_MAX_MS);
                return at.saturating_add(steps.saturating_mul(TCP_RTO_MAX_MS));
            }
            at = at.saturating_add(step);
            n = n.saturating_add(1);
        }
        at
    }
}

#[cfg(test)]
#[path = "give_up_tests.rs"]
mod tests;
