//! `retransmit_chain`: the retransmission timer keeps firing with no ACK progress: the RTO
//! expired `min_chain` times in a row for the same data (`tcp.retransmits`, the kernel's
//! `icsk_retransmits`: incremented only by the RTO timer, reset when `snd_una` advances), or
//! the RTO backed off far (`tcp.backoff >= min_backoff`). Reports how long the connection has
//! been silent and when the kernel will give up on it: until then the application's reads and
//! writes simply hang.
//!
//! Ordinary loss recovery is not a chain: fast retransmits and SACK recovery of several holes
//! in one round trip, and tail-loss probes, retransmit many segments while `snd_una` stays put
//! (the tracepoint's `retrans.chain` counts them all) but never fire the RTO timer. They are
//! reported as `retransmitted_segments` only.
//!
//! The give-up projection (`give_up`) follows the kernel's `tcp_write_timeout()`: the limit is
//! `TCP_USER_TIMEOUT`, or the model timeout of `tcp_retries2`, or for an orphan (no process:
//! `inode == 0` in `FIN_WAIT1`, `CLOSING` or `LAST_ACK`, the states only `close()` leads to
//! without a `struct socket`) of `tcp_orphan_retries`; the kernel checks it at RTO expiries,
//! measured from the first RTO retransmission.
use crate::aging::Aging;
use crate::config::RetransmitConfig;
use crate::detect::give_up::{
    RtoTimer, TCP_RTO_MIN_MS, give_up_after_ms, orphan_retries, retries_timeout_ms,
};
use crate::detect::lifecycle::Candidate;
use crate::detect::{DetectContext, Snapshot, text};
use crate::model::{ConnRecord, FindingKind, MonoNs, Severity, TcpState};

/// An orphan: the application closed the socket (`SOCK_DEAD`) and the kernel finishes the
/// close alone. `FIN_WAIT1`, `CLOSING` and `LAST_ACK` are reached only after our FIN, that is
/// after `close()` or `shutdown(SHUT_WR)`; the latter keeps the `struct socket` (inode
/// non-zero), `close()` orphans it (`sock_orphan()`: no `struct socket`, inode 0). The sweep
/// reads the inode through `sk_socket` (required offsets), so 0 means no `struct socket`.
#[must_use]
pub(crate) fn is_orphan(c: &ConnRecord) -> bool {
    c.inode == 0
        && c.full_sock
        && matches!(
            c.state,
            TcpState::FinWait1 | TcpState::Closing | TcpState::LastAck
        )
}

/// What the kernel gives up after, for the diagnosis and the evidence.
struct Limit {
    /// The retry count in force (`tcp_retries2`, or `tcp_orphan_retries()` for an orphan).
    retries: u32,
    after_ms: u64,
    text: String,
}

fn limit(c: &ConnRecord, ctx: &DetectContext<'_>, orphan: bool) -> Limit {
    let t = &c.tcp;
    let cookie = c.key.netns_cookie;
    let (retries, sysctl_text) = if orphan {
        let sysctl = ctx.tcp_orphan_retries(cookie);
        let retries = orphan_retries(sysctl, u64::from(t.rto_ms));
        let text = if sysctl == retries {
            format!("orphaned, tcp_orphan_retries={sysctl}")
        } else {
            format!("orphaned, tcp_orphan_retries={sysctl}: {retries} retries")
        };
        (retries, text)
    } else {
        let retries2 = ctx.tcp_retries2(cookie);
        (retries2, format!("tcp_retries2={retries2}"))
    };
    let after_ms = give_up_after_ms(retries, t.user_timeout_ms);
    let text = if t.user_timeout_ms > 0 {
        format!("TCP_USER_TIMEOUT {}", text::dur(text::ms_to_ns(after_ms)))
    } else {
        format!(
            "{sysctl_text}: at the first RTO expiry {} or more after the first RTO retransmission",
            text::dur(text::ms_to_ns(after_ms))
        )
    };
    Limit {
        retries,
        after_ms,
        text,
    }
}

/// The RTO timer as the sweep saw it. The last expiry is the tracepoint's last
/// retransmission (precise, and it sees FIN-only segments), else the last transmission by
/// `tcp.last_send_age_ms` at the sweep.
fn rto_timer(c: &ConnRecord, aging: &Aging, now: MonoNs) -> RtoTimer {
    let t = aging.tcp(c);
    let fired = u32::from(t.retransmits);
    let sent_at = aging
        .last_seen(c)
        .min(now)
        .saturating_sub(text::ms_to_ns(t.last_send_age_ms));
    let last_at = match c.retrans.last_retrans {
        Some(at) if fired > 0 && at <= now => at.max(sent_at),
        _ => sent_at,
    };
    RtoTimer {
        fired,
        backoff: u32::from(t.backoff),
        rto_ms: u64::from(t.rto_ms),
        last_at,
    }
}

pub(crate) fn detect(
    now: MonoNs,
    cfg: &RetransmitConfig,
    snap: &Snapshot<'_>,
    ctx: &DetectContext<'_>,
    out: &mut Vec<Candidate>,
) {
    for c in snap.conns.iter().filter(|c| {
        c.full_sock
            && matches!(
                c.state,
                TcpState::Established
                    | TcpState::CloseWait
                    | TcpState::FinWait1
                    | TcpState::Closing
                    | TcpState::LastAck
            )
    }) {
        // RTO expiries only: loss recovery's fast and SACK retransmissions and tail-loss
        // probes do not fire the RTO timer. (Read from the stored fields, before the aged
        // copy: aging moves only the ages, so most sockets cost two comparisons.)
        let chain = u32::from(c.tcp.retransmits);
        let backoff = u32::from(c.tcp.backoff);
        if chain < cfg.min_chain && backoff < cfg.min_backoff {
            continue;
        }
        let t = &snap.aging.tcp(c);
        if chain == 0 && (t.probes_out > 0 || c.queues.unacked == 0) {
            // Zero-window (persist timer) or keepalive probing backs off too; that is not a
            // retransmission. Each answered window probe resets `probes_out` to 0, so the
            // test that does not depend on catching a probe in flight is that nothing is in
            // flight: an RTO always retransmits unacknowledged data.
            continue;
        }
        let estimated = c.retrans.chain_start.is_none();
        let start = c.retrans.chain_start.unwrap_or_else(|| {
            if t.last_ack_age_ms > 0 {
                now.saturating_sub(text::ms_to_ns(t.last_ack_age_ms))
            } else {
                let k = chain.max(backoff).saturating_sub(1);
                now.saturating_sub(text::ms_to_ns(retries_timeout_ms(k, TCP_RTO_MIN_MS)))
            }
        });
        let since_ack = if t.last_ack_age_ms > 0 {
            text::ms_to_ns(t.last_ack_age_ms)
        } else {
            now.saturating_sub(start)
        };
        let orphan = is_orphan(c);
        let lim = limit(c, ctx, orphan);
        let give_up = rto_timer(c, snap.aging, now).give_up(lim.after_ms, t.user_timeout_ms > 0);
        let gives_up_in = give_up.at.saturating_sub(now);
        let give_up_after = give_up.at.saturating_sub(give_up.first_rto_at);
        let severity = if backoff >= cfg.critical_backoff {
            Severity::Critical
        } else {
            Severity::Warning
        };
        let diagnosis = format!(
            "peer not acknowledging: {} -> {} ({}, {}): the retransmission timer fired {chain} time(s) \
             in a row with no ACK for {}, RTO backoff {backoff} (RTO {}); the kernel gives up in {} \
             ({}), until then reads and writes on this connection hang; peer gone without FIN/RST \
             or path broken",
            c.local,
            c.remote,
            text::owner(c, false),
            text::netns(c.netns),
            text::dur(since_ack),
            text::dur(text::ms_to_ns(u64::from(t.rto_ms))),
            text::dur(gives_up_in),
            lim.text,
        );
        let mut evidence = text::evidence([
            ("chain", f64::from(chain)),
            ("retransmitted_segments", f64::from(c.retrans.chain)),
            ("backoff", f64::from(backoff)),
            ("rto_seconds", text::ms_secs(u64::from(t.rto_ms))),
            ("seconds_since_ack_progress", text::secs(since_ack)),
            ("gives_up_in_seconds", text::secs(gives_up_in)),
            ("give_up_after_seconds", text::secs(give_up_after)),
            ("retry_limit", f64::from(lim.retries)),
            (
                "tcp_retries2",
                f64::from(ctx.tcp_retries2(c.key.netns_cookie)),
            ),
            ("orphan", if orphan { 1.0 } else { 0.0 }),
            ("send_q_bytes", f64::from(c.queues.send_q)),
            ("chain_start_estimated", if estimated { 1.0 } else { 0.0 }),
        ]);
        if orphan {
            evidence.insert(
                "tcp_orphan_retries".to_owned(),
                f64::from(ctx.tcp_orphan_retries(c.key.netns_cookie)),
            );
        }
        if t.user_timeout_ms > 0 {
            evidence.insert(
                "user_timeout_seconds".to_owned(),
                text::ms_secs(u64::from(t.user_timeout_ms)),
            );
        }
        out.push(Candidate {
            id: text::conn_id(FindingKind::RetransmitChain, c.key),
            kind: FindingKind::RetransmitChain,
            severity,
            subject: text::conn_subject(c),
            cause: "peer_unreachable",
            diagnosis,
            since: start,
            evidence,
            socket: Some(c.key),
        });
    }
}

#[cfg(test)]
#[path = "retransmit_tests.rs"]
mod tests;
