//! The detectors: pure rules over the connection table, with time passed in.
//!
//! [`Detectors::evaluate`] runs every enabled rule over all connections at `now` and returns
//! the lifecycle changes of findings (see `lifecycle` for opening, updating, resolving and
//! hysteresis). Rules (one module each, described in `docs/detectors.md`):
//!
//! | kind | module | incident |
//! |------|--------|----------|
//! | `close_wait_stuck` | `close_wait` | 1, 2 |
//! | `send_queue_growing` | `send_queue` | 1, 3 |
//! | `retransmit_chain` | `retransmit` | 1, 3 |
//! | `accept_backlog_filling` | `backlog` | 2 |
//! | `awaiting_response` | `awaiting` | 4 |
//! | `reset_burst` | `resets`, `resets_client` | 4, 5 |
//! | `stale_connection_reuse` | `stale_reuse` | 4, 5 |
//! | `connect_failing` | `connect_failing` | 1 |
//!
//! Memory: per-rule state is kept only for sockets / ports present in the current evaluation
//! (and meeting the rule's precondition) and dropped as soon as they are absent, so every map is
//! bounded by the table's `max_connections` (ports: by the reset counters handed in; namespaces:
//! by the namespaces handed in).
use std::collections::HashMap;

use crate::config::DetectorConfig;
use crate::model::{
    ConnKey, ConnRecord, Finding, FindingChange, MonoNs, NetnsInfo, ResetCounts, TcpState,
};

mod awaiting;
mod backlog;
mod close_wait;
mod connect_failing;
mod give_up;
mod lifecycle;
mod peer;
mod resets;
mod resets_client;
mod retransmit;
mod send_queue;
mod stale_reuse;
pub(crate) mod text;
mod window;

#[cfg(test)]
pub(crate) mod testutil;

pub use close_wait::{CloseWaitAggregate, CloseWaitGroup};
pub use connect_failing::syn_give_up_ms;
pub use give_up::{
    GiveUp, ORPHAN_RETRIES_WHEN_ZERO, RtoTimer, TCP_RTO_MAX_MS, TCP_RTO_MIN_MS, give_up_after_ms,
    orphan_retries, retries_timeout_ms,
};

/// Facts from outside the connection table.
#[derive(Clone, Copy, Debug)]
pub struct DetectContext<'a> {
    /// Per-namespace sysctls and counters, by netns cookie.
    pub netns: &'a HashMap<u64, NetnsInfo>,
    /// Cumulative reset counters per (netns cookie, local port), monotonically increasing.
    pub port_resets: &'a HashMap<(u64, u16), ResetCounts>,
    /// The namespaces' confirmations: the effective `last_seen` and ages of records an
    /// unchanged sweep did not rewrite (`crate::aging`).
    pub aging: &'a crate::aging::Aging,
}

impl DetectContext<'_> {
    /// `tcp_retries2` of a namespace (15, the kernel default, when unknown).
    #[must_use]
    pub fn tcp_retries2(&self, netns_cookie: u64) -> u32 {
        self.netns.get(&netns_cookie).map_or(15, |n| n.tcp_retries2)
    }

    /// `tcp_orphan_retries` of a namespace (0, the kernel default, when unknown).
    #[must_use]
    pub fn tcp_orphan_retries(&self, netns_cookie: u64) -> u32 {
        self.netns
            .get(&netns_cookie)
            .map_or(0, |n| n.tcp_orphan_retries)
    }
}

/// Never-accepted sockets hanging off one listener.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Unaccepted {
    pub close_wait: u32,
    pub established: u32,
}

/// One evaluation's view of all sockets, with the indexes the rules share.
pub(crate) struct Snapshot<'a> {
    pub conns: Vec<&'a ConnRecord>,
    /// Listening sockets by (netns cookie, port).
    pub listeners: HashMap<(u64, u16), Vec<&'a ConnRecord>>,
    /// Never-accepted sockets per listener key.
    pub unaccepted: HashMap<ConnKey, Unaccepted>,
    /// Effective `last_seen` and ages (the records hold those of their last full record).
    pub aging: &'a crate::aging::Aging,
}

impl<'a> Snapshot<'a> {
    pub(crate) fn build<'c: 'a>(
        conns: impl IntoIterator<Item = &'c ConnRecord>,
        aging: &'a crate::aging::Aging,
    ) -> Self {
        let conns: Vec<&'a ConnRecord> = conns.into_iter().map(|c| c as &'a ConnRecord).collect();
        let mut listeners: HashMap<(u64, u16), Vec<&ConnRecord>> = HashMap::new();
        for c in conns.iter().filter(|c| c.state == TcpState::Listen) {
            listeners
                .entry((c.key.netns_cookie, c.local.port()))
                .or_default()
                .push(c);
        }
        let mut snap = Self {
            conns,
            listeners,
            unaccepted: HashMap::new(),
            aging,
        };
        let mut unaccepted: HashMap<ConnKey, Unaccepted> = HashMap::new();
        for c in snap.conns.iter().filter(|c| c.is_unaccepted()) {
            if let Some(l) = snap.listener_of(c) {
                let u = unaccepted.entry(l.key).or_default();
                if c.state == TcpState::CloseWait {
                    u.close_wait += 1;
                } else {
                    u.established += 1;
                }
            }
        }
        snap.unaccepted = unaccepted;
        snap
    }

    /// The listener a connection was accepted (or waits to be accepted) from: same namespace
    /// and local port, preferring the same address, then a wildcard one.
    pub(crate) fn listener_of(&self, c: &ConnRecord) -> Option<&'a ConnRecord> {
        let ls = self.listeners.get(&(c.key.netns_cookie, c.local.port()))?;
        ls.iter()
            .find(|l| l.local.ip() == c.local.ip())
            .or_else(|| ls.iter().find(|l| l.local.ip().is_unspecified()))
            .or_else(|| ls.first())
            .copied()
    }

    /// Whether a local port is a listening port in that namespace (the socket is server side).
    pub(crate) fn is_listening_port(&self, netns_cookie: u64, port: u16) -> bool {
        self.listeners.contains_key(&(netns_cookie, port))
    }
}

/// The sockets of the evaluation that the finding book asks about (those of its entries and of
/// this evaluation's candidates), with their cookies (their generation: another cookie at the
/// same key is another socket; 0 = not known). A socket the book does not know and no
/// candidate names is not looked up: with no findings, nothing is built.
fn present(
    conns: &[&ConnRecord],
    known: impl Iterator<Item = ConnKey>,
    cands: &[lifecycle::Candidate],
) -> HashMap<ConnKey, u64> {
    let wanted: foldhash::HashSet<ConnKey> =
        known.chain(cands.iter().filter_map(|c| c.socket)).collect();
    if wanted.is_empty() {
        return HashMap::new();
    }
    conns
        .iter()
        .filter(|c| wanted.contains(&c.key))
        .map(|c| (c.key, c.cookie))
        .collect()
}

/// All rules, their per-socket state and the findings they produced.
#[derive(Debug)]
pub struct Detectors {
    cfg: DetectorConfig,
    book: lifecycle::FindingBook,
    send_queue: send_queue::SendQueueState,
    backlog: backlog::BacklogState,
    resets: resets::ResetState,
    close_wait_aggregates: Vec<CloseWaitAggregate>,
    /// Kernel per-endpoint facts of the last sweep ([`Detectors::set_endpoint_facts`]).
    endpoint_facts: crate::endpoints::EndpointFacts,
    stale_reuse: stale_reuse::StaleReuseState,
    connect_failing: connect_failing::ConnectFailingState,
    client_resets: resets_client::ClientResetState,
}

impl Detectors {
    #[must_use]
    pub fn new(cfg: DetectorConfig) -> Self {
        Self {
            book: lifecycle::FindingBook::new(&cfg),
            cfg,
            send_queue: send_queue::SendQueueState::default(),
            backlog: backlog::BacklogState::default(),
            resets: resets::ResetState::default(),
            close_wait_aggregates: Vec::new(),
            endpoint_facts: crate::endpoints::EndpointFacts::default(),
            stale_reuse: stale_reuse::StaleReuseState::default(),
            connect_failing: connect_failing::ConnectFailingState::default(),
            client_resets: resets_client::ClientResetState::default(),
        }
    }

    /// Hands in the kernel's per-endpoint counters of the latest sweep; the next
    /// [`Detectors::evaluate`] uses them (`stale_connection_reuse`, `connect_failing`).
    pub fn set_endpoint_facts(&mut self, facts: crate::endpoints::EndpointFacts) {
        self.endpoint_facts = facts;
    }

    /// The per-endpoint facts last handed in (metrics, API).
    #[must_use]
    pub fn endpoint_facts(&self) -> &crate::endpoints::EndpointFacts {
        &self.endpoint_facts
    }

    #[must_use]
    pub fn config(&self) -> &DetectorConfig {
        &self.cfg
    }

    /// Evaluates all enabled rules at `now` over every connection (the whole table: a socket
    /// missing from `conns` is considered closed) and returns the lifecycle changes, in this
    /// order: findings of vanished sockets resolved, findings opened / updated, findings
    /// resolved because their condition cleared.
    pub fn evaluate<'a>(
        &mut self,
        now: MonoNs,
        conns: impl IntoIterator<Item = &'a ConnRecord>,
        ctx: &DetectContext<'_>,
    ) -> Vec<FindingChange> {
        let snap = Snapshot::build(conns, ctx.aging);
        let cfg = &self.cfg;
        let mut cands = Vec::new();

        self.close_wait_aggregates = close_wait::aggregate(now, &cfg.close_wait, &snap);
        if cfg.close_wait.enabled {
            close_wait::detect(
                now,
                &cfg.close_wait,
                &snap,
                &self.close_wait_aggregates,
                &mut cands,
            );
        }
        if cfg.send_queue.enabled {
            self.send_queue
                .detect(now, &cfg.send_queue, &snap, &mut cands);
        } else {
            self.send_queue = send_queue::SendQueueState::default();
        }
        if cfg.retransmit.enabled {
            retransmit::detect(now, &cfg.retransmit, &snap, ctx, &mut cands);
        }
        if cfg.accept_backlog.enabled {
            self.backlog
                .detect(now, &cfg.accept_backlog, &snap, ctx, &mut cands);
        } else {
            self.backlog = backlog::BacklogState::default();
        }
        if cfg.awaiting_response.enabled {
            awaiting::detect(&cfg.awaiting_response, &snap, now, &mut cands);
        }
        if cfg.reset_burst.enabled {
            self.resets
                .detect(now, &cfg.reset_burst, &snap, ctx, &mut cands);
        } else {
            self.resets = resets::ResetState::default();
        }
        let facts = &self.endpoint_facts;
        if cfg.reset_burst.enabled {
            self.client_resets
                .detect(now, &cfg.reset_burst, &snap, ctx, facts, &mut cands);
        } else {
            self.client_resets = resets_client::ClientResetState::default();
        }
        if cfg.stale_connection_reuse.enabled {
            self.stale_reuse.detect(
                now,
                &cfg.stale_connection_reuse,
                &snap,
                ctx,
                facts,
                &mut cands,
            );
        } else {
            self.stale_reuse = stale_reuse::StaleReuseState::default();
        }
        if cfg.connect_failing.enabled {
            self.connect_failing
                .detect(now, &cfg.connect_failing, &snap, ctx, facts, &mut cands);
        } else {
            self.connect_failing = connect_failing::ConnectFailingState::default();
        }

        let present = present(&snap.conns, self.book.sockets(), &cands);
        self.book.apply(now, cands, &present)
    }

    /// Findings open now, ordered by id.
    pub fn open(&self) -> impl Iterator<Item = &Finding> {
        self.book.open()
    }

    #[must_use]
    pub fn open_count(&self) -> usize {
        self.book.open_count()
    }

    /// An open finding by id.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<&Finding> {
        self.book.get(id)
    }

    /// Open findings about one socket (connection or listener).
    pub fn findings_for<'s>(&'s self, key: &'s ConnKey) -> impl Iterator<Item = &'s Finding> + 's {
        self.book.open().filter(move |f| match &f.subject {
            crate::model::Subject::Connection { key: k, .. }
            | crate::model::Subject::Listener { key: k, .. } => k == key,
            crate::model::Subject::Port { .. } | crate::model::Subject::Peer { .. } => false,
        })
    }

    /// The last `detectors.recently_resolved` resolved findings, newest first.
    pub fn recently_resolved(&self) -> impl Iterator<Item = &Finding> {
        self.book.recently_resolved()
    }

    /// Whether the socket has an open finding (kept by the table's eviction, shown in top-K).
    #[must_use]
    pub fn is_flagged(&self, key: &ConnKey) -> bool {
        self.book.is_flagged(key)
    }

    /// Conditions that hold but were not opened because `max_open_findings` was reached, at
    /// the last evaluation.
    #[must_use]
    pub fn suppressed(&self) -> usize {
        self.book.suppressed()
    }

    /// `CLOSE_WAIT` sockets at the last evaluation, grouped per owning process, per listener
    /// (never accepted) or "process unknown", sorted by namespace and group.
    #[must_use]
    pub fn close_wait_aggregates(&self) -> &[CloseWaitAggregate] {
        &self.close_wait_aggregates
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::{Harness, assert_ev, conn, listener, owner};
    use crate::config::DetectorConfig;
    use crate::model::{FindingKind, Lifecycle, TcpState};

    /// Incident 2 end to end: a listener that stopped accepting, its queue full of
    /// connections closed by health checks, SYNs overflowing.
    #[test]
    fn incident_2_listener_not_accepting() {
        let mut h = Harness::new(DetectorConfig::default());
        let mut conns = vec![listener(8080, 513, 512)];
        for p in 0..20u16 {
            let mut c = conn(
                TcpState::CloseWait,
                "10.0.0.1:8080",
                &format!("10.0.0.9:{}", 40000 + p),
            );
            c.inode = 0;
            c.queues.recv_q = 1;
            conns.push(c);
        }
        let mut opened = Vec::new();
        for t in 0..=40 {
            if t > 0 {
                h.netns.get_mut(&1).unwrap().listen_overflows += 3;
            }
            opened.extend(
                h.step(f64::from(t), &conns)
                    .into_iter()
                    .filter(|c| c.change == Lifecycle::Opened),
            );
        }
        let backlog: Vec<_> = opened
            .iter()
            .filter(|c| c.finding.kind == FindingKind::AcceptBacklogFilling)
            .collect();
        assert_eq!(backlog.len(), 1);
        assert_eq!(backlog[0].finding.cause, "overflowing");
        assert_ev(&backlog[0].finding, "unaccepted_close_wait", 20.0);
        let cw: Vec<_> = opened
            .iter()
            .filter(|c| c.finding.kind == FindingKind::CloseWaitStuck)
            .collect();
        assert_eq!(cw.len(), 20);
        assert!(cw.iter().all(|c| c.finding.cause == "unaccepted"));
        assert!(
            cw[0]
                .finding
                .diagnosis
                .starts_with("app is not calling accept() on :8080"),
            "{}",
            cw[0].finding.diagnosis
        );
        let l = &conns[0];
        assert!(h.det.is_flagged(&l.key));
        let aggs = h.det.close_wait_aggregates();
        assert_eq!(aggs.len(), 1);
        assert_eq!(aggs[0].stuck, 20);
        assert_eq!(h.det.findings_for(&l.key).count(), 1);

        // The app is fixed: everything drains and closes.
        let mut fixed = listener(8080, 0, 512);
        fixed.owner = Some(owner(77, "server", 3).into());
        let mut resolved = 0;
        for t in 41..=60 {
            resolved += h
                .step(f64::from(t), std::slice::from_ref(&fixed))
                .iter()
                .filter(|c| c.change == Lifecycle::Resolved)
                .count();
        }
        assert_eq!(resolved, 21);
        assert_eq!(h.det.open_count(), 0);
        assert_eq!(h.det.recently_resolved().count(), 21);
        assert!(h.det.close_wait_aggregates().is_empty());
    }
}
