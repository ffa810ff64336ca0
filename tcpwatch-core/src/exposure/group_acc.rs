//! One exposure group, accumulated connection by connection: its counts, its worst cases and
//! only its [`MAX_SOCKETS_LISTED`] worst sockets. An audit of 100 000 connections keeps no
//! per-connection list (it runs after every sweep while an upstream finding is open, and on
//! every `/metrics` scrape).
use std::fmt::Write as _;

use super::audit::{ExposedSocket, MAX_SOCKETS_LISTED, max_wait, wait_text, worse};
use super::formula::{Bound, ConnExposure};

/// The worst of some waits, as `reduce(max_wait).flatten()` over them would give it.
#[derive(Clone, Copy, Debug, Default)]
struct Worst {
    n: usize,
    never: bool,
    max: u64,
}

impl Worst {
    fn add(&mut self, w: Option<u64>) {
        self.n += 1;
        match w {
            None => self.never = true,
            Some(ms) => self.max = self.max.max(ms),
        }
    }

    fn get(self) -> Option<u64> {
        (self.n > 0 && !self.never).then_some(self.max)
    }
}

fn slot(b: Bound) -> usize {
    match b {
        Bound::UserTimeout => 0,
        Bound::Retries2 => 1,
        Bound::Keepalive => 2,
        Bound::KeepaliveUserTimeout => 3,
        Bound::Nothing => 4,
    }
}

/// One group's connections, folded.
#[derive(Debug, Default)]
pub(super) struct GroupAcc {
    pub connections: usize,
    pub exposed: usize,
    pub never: usize,
    pub in_flight: usize,
    all: Worst,
    /// Of the exposed connections, per bound ([`slot`]).
    exposed_by: [Worst; 5],
    /// Exposed connections without any bound that set `TCP_USER_TIMEOUT`.
    nothing_with_user_timeout: usize,
    /// `tcp_retries2` of an exposed connection bound by it (one namespace per group).
    retries2: Option<u32>,
    /// The worst sockets so far (unsorted past the first `MAX_SOCKETS_LISTED`).
    top: Vec<ExposedSocket>,
}

fn by_worst_then_local(a: &ExposedSocket, b: &ExposedSocket) -> std::cmp::Ordering {
    worse(a.exposure.worst_case_ms, b.exposure.worst_case_ms).then(a.local.cmp(&b.local))
}

impl GroupAcc {
    pub fn add(&mut self, s: ExposedSocket, threshold_ms: u64) {
        let e: ConnExposure = s.exposure;
        self.connections += 1;
        self.all.add(e.worst_case_ms);
        if e.worst_case_ms.is_none() {
            self.never += 1;
        }
        if e.in_flight_now {
            self.in_flight += 1;
        }
        if e.exceeds(threshold_ms) {
            self.exposed += 1;
            self.exposed_by[slot(e.bound)].add(e.worst_case_ms);
            if e.bound == Bound::Nothing && e.user_timeout_ms > 0 {
                self.nothing_with_user_timeout += 1;
            }
            if e.bound == Bound::Retries2 && self.retries2.is_none() {
                self.retries2 = Some(e.tcp_retries2);
            }
        }
        self.top.push(s);
        if self.top.len() >= 2 * MAX_SOCKETS_LISTED {
            // A stable sort of a stable sort's prefix: the same first ones as one sort of all.
            self.top.sort_by(by_worst_then_local);
            self.top.truncate(MAX_SOCKETS_LISTED);
        }
    }

    /// The worst case of the group (`None`: never).
    pub fn worst(&self) -> Option<u64> {
        self.all.get()
    }

    /// The listed sockets, worst first, and how many were left out.
    pub fn listed(&mut self) -> (Vec<ExposedSocket>, usize) {
        let mut top = std::mem::take(&mut self.top);
        top.sort_by(by_worst_then_local);
        top.truncate(MAX_SOCKETS_LISTED);
        (top, self.connections.saturating_sub(MAX_SOCKETS_LISTED))
    }

    /// What to set, from the exposed connections of the group.
    pub fn diagnose(&self, threshold_ms: u64) -> String {
        if self.exposed == 0 {
            return format!(
                "bounded: a vanished peer is noticed within {} (threshold {})",
                wait_text(self.worst()),
                wait_text(Some(threshold_ms))
            );
        }
        let of = |b: Bound| self.exposed_by[slot(b)].n;
        let worst_of = |b: Bound| self.exposed_by[slot(b)].get();
        let mut parts: Vec<String> = Vec::new();
        let never = of(Bound::Nothing);
        if never > 0 {
            let ut = self.nothing_with_user_timeout;
            let mut s = format!(
                "{never} idle with no keepalive would wait forever: enable SO_KEEPALIVE with \
                 TCP_KEEPIDLE/TCP_KEEPINTVL/TCP_KEEPCNT, or the protocol's own ping or read \
                 timeout (HTTP/2 PING, gRPC keepalive)"
            );
            if ut > 0 {
                let _ = write!(
                    s,
                    " ({ut} set TCP_USER_TIMEOUT, which does not bound an idle connection)"
                );
            }
            parts.push(s);
        }
        let retries = of(Bound::Retries2);
        if retries > 0 {
            let r = self.retries2.unwrap_or(15);
            parts.push(format!(
                "{retries} with data in flight would wait {} (tcp_retries2={r}): set \
                 TCP_USER_TIMEOUT",
                wait_text(worst_of(Bound::Retries2))
            ));
        }
        let ka = of(Bound::Keepalive) + of(Bound::KeepaliveUserTimeout);
        if ka > 0 {
            let w = max_wait(
                worst_of(Bound::Keepalive).or(worst_of(Bound::KeepaliveUserTimeout)),
                worst_of(Bound::KeepaliveUserTimeout).or(worst_of(Bound::Keepalive)),
            );
            parts.push(format!(
                "{ka} idle with keepalive would notice after {}: lower TCP_KEEPIDLE/\
                 TCP_KEEPINTVL/TCP_KEEPCNT (or the namespace's tcp_keepalive_*), or set \
                 TCP_USER_TIMEOUT",
                wait_text(w)
            ));
        }
        let ut = of(Bound::UserTimeout);
        if ut > 0 {
            parts.push(format!(
                "{ut} with data in flight have a TCP_USER_TIMEOUT of {}: lower it",
                wait_text(worst_of(Bound::UserTimeout))
            ));
        }
        parts.join("; ")
    }
}
