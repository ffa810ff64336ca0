//! `connect_failing`: connects from one process to one remote endpoint that are refused, time
//! out (SYN retransmitted until someone gave up) or fail otherwise (ICMP error), and connects
//! still in `SYN_SENT` whose SYN is being retransmitted. `retransmit_chain` keeps its
//! data-retransmission scope.
//!
//! Inputs: the kernel's per (netns, remote endpoint, connecting process) connect outcomes
//! ([`EndpointStats`], deltas over `window_seconds`) and the table's `SYN_SENT` sockets with
//! `icsk_retransmits` (from the sweep). Opens on `min_failures` failures in the window, on one
//! timed-out connect (it waited the whole SYN give-up time), or at once on a connect with at
//! least `min_syn_retrans` SYN retransmissions. Critical when no
//! connect to that endpoint succeeded in the window. The diagnosis gives, for a SYN still
//! retrying, when the kernel gives up (`tcp_syn_retries`, `tcp_syn_linear_timeouts`).
use std::collections::{BTreeMap, HashMap};

use crate::config::{ConnectFailingConfig, seconds_to_ns};
use crate::detect::lifecycle::Candidate;
use crate::detect::window::Windowed;
use crate::detect::{DetectContext, Snapshot, peer, text};
use crate::endpoints::{EndpointFacts, EndpointKey};
use crate::model::{FindingKind, MonoNs, NS_PER_MS, Severity, TcpState};

const KIND: FindingKind = FindingKind::ConnectFailing;
/// `TCP_TIMEOUT_INIT`: the first SYN's RTO.
const SYN_RTO_INIT_MS: u64 = 1_000;
const RTO_MAX_MS: u64 = 120_000;

/// Counter slots fed to the window.
const REFUSED: usize = 0;
const TIMED_OUT: usize = 1;
const FAILED: usize = 2;
const SYN_RETRANS: usize = 3;
const OK: usize = 4;

/// When the kernel gives up on a connect whose SYN is never answered, in ms after the first
/// SYN (Linux `tcp_write_timeout`: the RTO fires at 1 s, stays 1 s for the first
/// `tcp_syn_linear_timeouts` retransmissions (6.7+) then doubles up to 120 s; the connect
/// fails at the first firing that is past `((2 << retries) - 1)` s (more than 6 retries: 127 s
/// plus 120 s per retry) or after `retries + linear_timeouts` retransmissions).
#[must_use]
pub fn syn_give_up_ms(syn_retries: u32, linear_timeouts: Option<u32>) -> u64 {
    let lin = u64::from(linear_timeouts.unwrap_or(0));
    let retries = u64::from(syn_retries);
    let model_ms = if retries <= 6 {
        ((2_u64 << retries) - 1) * SYN_RTO_INIT_MS
    } else {
        127 * SYN_RTO_INIT_MS + (retries - 6) * RTO_MAX_MS
    };
    let max_retrans = retries + lin;
    let (mut t, mut rto) = (0_u64, SYN_RTO_INIT_MS);
    for n in 1..=max_retrans.saturating_add(1).min(1024) {
        t += rto;
        if n > max_retrans || t >= model_ms {
            return t;
        }
        if n > lin {
            rto = (rto * 2).min(RTO_MAX_MS);
        }
    }
    t
}

/// Connects still in `SYN_SENT` to one endpoint from one process.
#[derive(Clone, Copy, Debug, Default)]
struct Retrying {
    sockets: u32,
    max_retrans: u8,
    /// When the oldest of them entered `SYN_SENT`.
    oldest: MonoNs,
}

#[derive(Debug, Default)]
pub(crate) struct ConnectFailingState {
    win: Windowed<EndpointKey, 5>,
}

impl ConnectFailingState {
    pub(crate) fn detect(
        &mut self,
        now: MonoNs,
        cfg: &ConnectFailingConfig,
        snap: &Snapshot<'_>,
        ctx: &DetectContext<'_>,
        facts: &EndpointFacts,
        out: &mut Vec<Candidate>,
    ) {
        let window = seconds_to_ns(cfg.window_seconds);
        let min = u64::from(cfg.min_failures);
        let counters = facts
            .endpoints
            .iter()
            .filter(|(_, s)| {
                s.connects_refused + s.connects_timed_out + s.connects_failed + s.syn_retrans > 0
            })
            .map(|(k, s)| {
                (
                    *k,
                    [
                        s.connects_refused,
                        s.connects_timed_out,
                        s.connects_failed,
                        s.syn_retrans,
                        s.connects_ok,
                    ],
                )
            });
        let failures = |d: &[u64; 5]| d[REFUSED] + d[TIMED_OUT] + d[FAILED];
        let deltas: HashMap<EndpointKey, _> = self
            .win
            .update(now, window, counters, |d| {
                failures(d) >= min || d[TIMED_OUT] > 0
            })
            .into_iter()
            .collect();
        let mut retrying: BTreeMap<EndpointKey, Retrying> = BTreeMap::new();
        for c in snap.conns.iter().filter(|c| {
            c.state == TcpState::SynSent && u32::from(c.tcp.retransmits) >= cfg.min_syn_retrans
        }) {
            let key = EndpointKey {
                netns_cookie: c.key.netns_cookie,
                remote: c.remote,
                pid: c.creator_pid.unwrap_or(0),
            };
            let r = retrying.entry(key).or_default();
            r.sockets += 1;
            r.max_retrans = r.max_retrans.max(c.tcp.retransmits);
            r.oldest = if r.oldest == 0 {
                c.state_since
            } else {
                r.oldest.min(c.state_since)
            };
        }
        let mut keys: Vec<EndpointKey> = deltas
            .iter()
            .filter(|(_, d)| d.since.is_some())
            .map(|(k, _)| *k)
            .chain(retrying.keys().copied())
            .collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let d = deltas.get(&key);
            let counts = d.map_or([0; 5], |d| d.delta);
            let r = retrying.get(&key).copied();
            let since = match (d.and_then(|d| d.since), r) {
                (Some(s), Some(r)) => s.min(r.oldest),
                (Some(s), None) => s,
                (None, Some(r)) => r.oldest,
                (None, None) => continue,
            };
            let span = d.map_or(window, |d| now.saturating_sub(d.from).max(1));
            let comm = facts.endpoints.get(&key).map_or_else(
                || {
                    snap.conns
                        .iter()
                        .find(|c| {
                            c.state == TcpState::SynSent
                                && c.remote == key.remote
                                && c.creator_pid == Some(key.pid)
                        })
                        .and_then(|c| c.creator_comm.clone())
                        .unwrap_or_default()
                },
                |s| s.comm.clone(),
            );
            out.push(candidate(
                now, ctx, &key, &comm, counts, r, since, span, window,
            ));
        }
    }
}

impl ConnectFailingState {
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.win.len()
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one finding from the rule's inputs; grouping them would only rename them"
)]
fn candidate(
    now: MonoNs,
    ctx: &DetectContext<'_>,
    key: &EndpointKey,
    comm: &str,
    d: [u64; 5],
    retrying: Option<Retrying>,
    since: MonoNs,
    span: u64,
    window: u64,
) -> Candidate {
    let failed = d[REFUSED] + d[TIMED_OUT] + d[FAILED];
    let (cause, what) = if retrying.is_some() || (d[TIMED_OUT] > 0 && d[TIMED_OUT] >= d[REFUSED]) {
        (
            "timed_out",
            "SYNs go unanswered (host down, packets dropped by a firewall or a blackholed \
             route): check that the endpoint is up and reachable from this namespace",
        )
    } else if d[REFUSED] > 0 && d[REFUSED] >= d[FAILED] {
        (
            "refused",
            "the host answers with RST: nothing listens on that port (service down, \
             restarting, or the wrong port/address configured)",
        )
    } else {
        (
            "unreachable",
            "connects fail at once without a reset (ICMP unreachable: no route, host or \
             network unreachable, or the application aborts the connect)",
        )
    };
    let severity = if d[OK] == 0 && (failed > 0 || retrying.is_some()) {
        Severity::Critical
    } else {
        Severity::Warning
    };
    let netns = peer::netns_id(ctx, key.netns_cookie);
    let info = ctx.netns.get(&key.netns_cookie);
    let syn_retries = info.map_or(6, |n| n.tcp_syn_retries);
    let linear = info.and_then(|n| n.tcp_syn_linear_timeouts);
    let give_up_ms = syn_give_up_ms(syn_retries, linear);
    let mut evidence = text::evidence([
        ("connects_failed", text::num(failed)),
        ("connects_refused", text::num(d[REFUSED])),
        ("connects_timed_out", text::num(d[TIMED_OUT])),
        ("connects_other_failures", text::num(d[FAILED])),
        ("syn_retransmits", text::num(d[SYN_RETRANS])),
        ("connects_ok", text::num(d[OK])),
        ("window_seconds", text::secs(span)),
        ("give_up_after_seconds", text::ms_secs(give_up_ms)),
    ]);
    let mut retry_text = String::new();
    if let Some(r) = retrying {
        let age = now.saturating_sub(r.oldest);
        let left = (give_up_ms * NS_PER_MS).saturating_sub(age);
        evidence.insert("syn_sent_retrying".to_owned(), f64::from(r.sockets));
        evidence.insert("syn_retransmits_now".to_owned(), f64::from(r.max_retrans));
        evidence.insert("syn_sent_seconds".to_owned(), text::secs(age));
        evidence.insert("give_up_in_seconds".to_owned(), text::secs(left));
        let lin = linear.map_or_else(String::new, |l| format!(", tcp_syn_linear_timeouts {l}"));
        retry_text = format!(
            "; {} connect(s) still in SYN-SENT, SYN retransmitted {} time(s) over {}: the kernel \
             gives up {} after the first SYN (tcp_syn_retries {syn_retries}{lin}), in {}",
            r.sockets,
            r.max_retrans,
            text::dur(age),
            text::dur(give_up_ms * NS_PER_MS),
            text::dur(left),
        );
    }
    let client = peer::process(key.pid, comm);
    Candidate {
        id: peer::id(KIND, key),
        kind: KIND,
        severity,
        subject: peer::subject(ctx, key, comm),
        cause,
        diagnosis: format!(
            "connects from {client} to {} ({}) are failing: {failed} failed in the last {} \
             ({} refused, {} timed out, {} other; {} succeeded){retry_text}. {what}; connects \
             that time out take {} each (tcp_syn_retries {syn_retries}); a shorter dial timeout \
             fails faster",
            key.remote,
            text::netns(netns),
            text::dur(span.min(window)),
            d[REFUSED],
            d[TIMED_OUT],
            d[FAILED],
            d[OK],
            text::dur(give_up_ms * NS_PER_MS),
        ),
        since,
        evidence,
        socket: None,
    }
}

#[cfg(test)]
#[path = "connect_failing_tests.rs"]
mod tests;
