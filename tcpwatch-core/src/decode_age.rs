//! When a socket entered its state, as far as one sweep record can tell.
//!
//! Exact when a tracepoint saw the change (`state_since_ns != 0`). Otherwise the entry time is
//! not known and the table keeps the *latest* time the socket can have entered the state, so
//! that the age it shows is a lower bound (detectors say "at least"):
//! - a socket tcpwatch first saw already in this state was in it since `first_seen` at least;
//! - a change missed while tcpwatch was not watching (restart, recursion miss) happened after
//!   `state_after_ns` (the last sweep that saw the old state) and at the latest now: its age is
//!   only known to be at least 0;
//! - a `CLOSE_WAIT` socket entered it when the peer's FIN arrived, and that FIN carried an ACK:
//!   the last ACK received (`ss`'s `lastack`, `tcp_sock.rcv_tstamp`) is at or after it.
use crate::model::{MonoNs, NS_PER_MS, TcpState};

/// The facts of one record the estimate needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AgeFacts {
    pub state: TcpState,
    pub tracked: bool,
    pub full_sock: bool,
    pub state_since_ns: MonoNs,
    pub state_after_ns: MonoNs,
    pub first_seen: MonoNs,
    pub last_ack_age_ms: u64,
}

/// (entry time, exact). Without `exact` the time is the latest possible entry time.
pub(crate) fn state_since(f: &AgeFacts, now: MonoNs) -> (MonoNs, bool) {
    if f.tracked && f.state_since_ns != 0 {
        return (f.state_since_ns, true);
    }
    let mut latest = if f.state_after_ns != 0 {
        now
    } else {
        f.first_seen.min(now)
    };
    if f.state == TcpState::CloseWait && f.full_sock {
        let last_ack = now.saturating_sub(f.last_ack_age_ms.saturating_mul(NS_PER_MS));
        latest = latest.min(last_ack);
    }
    // The change came after the last sweep that still saw the old state.
    (latest.max(f.state_after_ns), false)
}
