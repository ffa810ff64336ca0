//! `stale_connection_reuse`: a client process wrote requests into keep-alive connections the
//! server had already closed (incidents 4 and 5: 502s behind nginx, ECONNRESET/EOF in pooled
//! clients after a server restart).
//!
//! Input: the kernel's per (netns, remote endpoint, connecting process) count of such resets
//! ([`EndpointStats::stale_resets`]: RST received in `CLOSE_WAIT`/`LAST_ACK`, or drawn from a
//! closed socket of this host). Opens when at least `min_events` fall within `window_seconds`;
//! critical at `critical_per_minute` over the window. Cause `server_restarted` when a listener
//! serving that endpoint on this host was re-created within two windows, else `idle_timeout`.
//! State: bounded by the keys handed in (see `window`).
use crate::config::{StaleReuseConfig, seconds_to_ns};
use crate::detect::lifecycle::Candidate;
use crate::detect::window::Windowed;
use crate::detect::{DetectContext, Snapshot, peer, text};
use crate::endpoints::{EndpointFacts, EndpointKey, EndpointStats};
use crate::model::{FindingKind, MonoNs, Severity};

const KIND: FindingKind = FindingKind::StaleConnectionReuse;

#[derive(Debug, Default)]
pub(crate) struct StaleReuseState {
    win: Windowed<EndpointKey, 1>,
}

impl StaleReuseState {
    pub(crate) fn detect(
        &mut self,
        now: MonoNs,
        cfg: &StaleReuseConfig,
        snap: &Snapshot<'_>,
        ctx: &DetectContext<'_>,
        facts: &EndpointFacts,
        out: &mut Vec<Candidate>,
    ) {
        let window = seconds_to_ns(cfg.window_seconds);
        let min = u64::from(cfg.min_events);
        let counters = facts
            .endpoints
            .iter()
            .filter(|(_, s)| s.stale_resets > 0)
            .map(|(k, s)| (*k, [s.stale_resets]));
        let deltas = self.win.update(now, window, counters, |d| d[0] >= min);
        for (key, d) in deltas {
            let Some(since) = d.since else { continue };
            let Some(stats) = facts.endpoints.get(&key) else {
                continue;
            };
            let span = now.saturating_sub(d.from).max(1);
            out.push(candidate(
                now, cfg, snap, ctx, facts, &key, stats, d.delta[0], since, span,
            ));
        }
    }

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
    cfg: &StaleReuseConfig,
    snap: &Snapshot<'_>,
    ctx: &DetectContext<'_>,
    facts: &EndpointFacts,
    key: &EndpointKey,
    stats: &EndpointStats,
    count: u64,
    since: MonoNs,
    span: u64,
) -> Candidate {
    let window = seconds_to_ns(cfg.window_seconds);
    let per_minute = text::num(count) * 60.0 / cfg.window_seconds;
    let severity = if per_minute >= cfg.critical_per_minute {
        Severity::Critical
    } else {
        Severity::Warning
    };
    let server = peer::server_on_host(snap, key.netns_cookie, key.remote);
    let restart = facts
        .restart_of(
            server.map_or(key.netns_cookie, |l| l.key.netns_cookie),
            key.remote,
        )
        .and_then(|l| l.last_restart.map(|at| (l, at)))
        .filter(|(_, at)| *at <= now && now - *at <= 2 * window);
    let client = peer::process(key.pid, &stats.comm);
    let netns = peer::netns_id(ctx, key.netns_cookie);
    let mut evidence = text::evidence([
        ("stale_requests", text::num(count)),
        ("rate_per_minute", per_minute),
        ("window_seconds", cfg.window_seconds),
    ]);
    let (cause, why) = if let Some((l, at)) = restart {
        let age = now - at;
        evidence.insert("server_restart_seconds_ago".to_owned(), text::secs(age));
        (
            "server_restarted",
            format!(
                "the server restarted (its listener {} was re-created by {}[{}] {} ago) and the \
                 client's pool kept the connections of the old instance",
                l.local,
                l.comm,
                l.pid,
                text::dur(age)
            ),
        )
    } else {
        (
            "idle_timeout",
            "the server closes idle keep-alive connections sooner than the client stops reusing \
             them (the server's idle timeout is shorter than the client's keep-alive timeout)"
                .to_owned(),
        )
    };
    Candidate {
        id: peer::id(KIND, key),
        kind: KIND,
        severity,
        subject: peer::subject(ctx, key, &stats.comm),
        cause,
        diagnosis: format!(
            "{client} wrote {count} request(s) in the last {} into connections to {} ({}) that \
             the server had already closed; each one failed with a reset (nginx: 502, \
             clients: ECONNRESET/EOF). Likely cause: {why}. Fix: set the client's idle \
             keep-alive timeout below the server's (nginx: upstream keepalive_timeout; Go: \
             Transport.IdleConnTimeout; fasthttp: MaxIdleConnDuration), retry idempotent \
             requests on a new connection, or check connections before reuse (HTTP/2 PING, \
             ReadIdleTimeout)",
            text::dur(span),
            key.remote,
            server.map_or_else(
                || format!("server not on this host, client in {}", text::netns(netns)),
                |l| peer::server_text(Some(l)),
            ),
        ),
        since,
        evidence,
        socket: None,
    }
}

#[cfg(test)]
#[path = "stale_reuse_tests.rs"]
mod tests;
