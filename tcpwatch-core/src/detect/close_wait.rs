//! `close_wait_stuck`: a socket stays in `CLOSE_WAIT` (the peer closed, we did not) longer than
//! `threshold_seconds`. Two causes, told apart by whether the socket has a `struct socket`:
//!
//! - `owned` (inode != 0): the application holds the descriptor and never calls `close()` — a
//!   leak; severity warning.
//! - `unaccepted` ([`ConnRecord::is_unaccepted`]): the socket still sits in its listener's
//!   accept queue, the application never accepted it — the listener is stuck; critical.
//!
//! When tcpwatch started after the socket entered `CLOSE_WAIT` its age is a lower bound; the rule
//! still fires once that lower bound passes the threshold and says "at least".
use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::config::{CloseWaitConfig, seconds_to_ns};
use crate::detect::lifecycle::Candidate;
use crate::detect::{Snapshot, text};
use crate::model::{ConnKey, ConnRecord, FindingKind, MonoNs, NetnsId, Owner, Severity, TcpState};

/// What a group of `CLOSE_WAIT` sockets has in common.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CloseWaitGroup {
    /// Sockets held by this process (it has not called `close()`).
    Process { pid: u32, comm: String },
    /// Sockets with a `struct socket` whose process is not known yet.
    UnknownProcess,
    /// Never-accepted sockets in the accept queue of the listener on this port (`listener`
    /// is None when no listening socket was found).
    Listener {
        port: u16,
        listener: Option<ConnKey>,
    },
}

/// `CLOSE_WAIT` sockets of one group in one namespace (for metrics and summaries).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CloseWaitAggregate {
    pub netns: NetnsId,
    pub group: CloseWaitGroup,
    /// For [`CloseWaitGroup::Listener`]: the process that holds the listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener_owner: Option<Owner>,
    /// All `CLOSE_WAIT` sockets of the group.
    pub total: u32,
    /// Of those, the ones in `CLOSE_WAIT` longer than the threshold.
    pub stuck: u32,
    pub oldest_age_seconds: f64,
    /// The oldest socket predates tcpwatch: its age is a lower bound.
    pub oldest_is_lower_bound: bool,
    /// Bytes received and not read, summed (a received FIN counts 1).
    pub unread_bytes: u64,
}

fn group_of(c: &ConnRecord, snap: &Snapshot<'_>) -> (CloseWaitGroup, Option<Owner>) {
    if c.is_unaccepted() {
        let l = snap.listener_of(c);
        let group = CloseWaitGroup::Listener {
            port: c.local.port(),
            listener: l.map(|l| l.key),
        };
        (group, l.and_then(|l| l.owner.as_deref().cloned()))
    } else if let Some(o) = &c.owner {
        (
            CloseWaitGroup::Process {
                pid: o.pid,
                comm: o.comm.clone(),
            },
            None,
        )
    } else {
        (CloseWaitGroup::UnknownProcess, None)
    }
}

pub(crate) fn aggregate(
    now: MonoNs,
    cfg: &CloseWaitConfig,
    snap: &Snapshot<'_>,
) -> Vec<CloseWaitAggregate> {
    let threshold = seconds_to_ns(cfg.threshold_seconds);
    let mut groups: BTreeMap<(NetnsId, CloseWaitGroup), CloseWaitAggregate> = BTreeMap::new();
    for c in snap.conns.iter().filter(|c| c.state == TcpState::CloseWait) {
        let (group, listener_owner) = group_of(c, snap);
        let a = groups
            .entry((c.netns, group.clone()))
            .or_insert_with(|| CloseWaitAggregate {
                netns: c.netns,
                group,
                listener_owner,
                total: 0,
                stuck: 0,
                oldest_age_seconds: 0.0,
                oldest_is_lower_bound: false,
                unread_bytes: 0,
            });
        let age = c.state_age(now);
        a.total += 1;
        if age >= threshold {
            a.stuck += 1;
        }
        if text::secs(age) > a.oldest_age_seconds {
            a.oldest_age_seconds = text::secs(age);
            a.oldest_is_lower_bound = !c.state_since_exact;
        }
        a.unread_bytes += u64::from(c.queues.recv_q);
    }
    groups.into_values().collect()
}

pub(crate) fn detect(
    now: MonoNs,
    cfg: &CloseWaitConfig,
    snap: &Snapshot<'_>,
    aggregates: &[CloseWaitAggregate],
    out: &mut Vec<Candidate>,
) {
    let threshold = seconds_to_ns(cfg.threshold_seconds);
    let per_process: HashMap<(u64, u32), u32> = aggregates
        .iter()
        .filter_map(|a| match a.group {
            CloseWaitGroup::Process { pid, .. } => Some(((a.netns.cookie, pid), a.stuck)),
            _ => None,
        })
        .collect();
    for c in snap.conns.iter().filter(|c| c.state == TcpState::CloseWait) {
        let age = c.state_age(now);
        if age < threshold {
            continue;
        }
        let at_least = if c.state_since_exact { "" } else { "at least " };
        let lower_bound = if c.state_since_exact { 0.0 } else { 1.0 };
        let unread = c.queues.recv_q;
        let (severity, cause, diagnosis, mut evidence) = if c.is_unaccepted() {
            let l = snap.listener_of(c);
            let pile = l
                .and_then(|l| snap.unaccepted.get(&l.key))
                .map_or(1, |u| u.close_wait);
            let listener = match l {
                Some(l) => format!(
                    "{}, accept queue {}/{}",
                    text::owner(l, false),
                    l.queues.accept_queue,
                    l.queues.accept_limit
                ),
                None => "listener not seen".to_owned(),
            };
            let diagnosis = format!(
                "app is not calling accept() on :{port} ({listener}): {local} <- {remote} was closed by \
                 the peer {at_least}{age} ago and still waits in the accept queue, never accepted; \
                 {pile} such socket(s) on this listener; {netns}",
                port = c.local.port(),
                local = c.local,
                remote = c.remote,
                age = text::dur(age),
                netns = text::netns(c.netns),
            );
            let mut ev = text::evidence([("listener_unaccepted_close_wait", f64::from(pile))]);
            if let Some(l) = l {
                ev.insert("accept_queue".to_owned(), f64::from(l.queues.accept_queue));
                ev.insert("accept_limit".to_owned(), f64::from(l.queues.accept_limit));
            }
            (Severity::Critical, "unaccepted", diagnosis, ev)
        } else {
            let mut ev = BTreeMap::new();
            let mut siblings = String::new();
            if let Some(o) = &c.owner {
                ev.insert("pid".to_owned(), f64::from(o.pid));
                if let Some(fd) = o.fd {
                    ev.insert("fd".to_owned(), f64::from(fd));
                }
                let n = per_process
                    .get(&(c.netns.cookie, o.pid))
                    .copied()
                    .unwrap_or(1);
                ev.insert("process_stuck_close_wait".to_owned(), f64::from(n));
                if n > 1 {
                    siblings = format!("; {n} stuck CLOSE_WAIT sockets in this process");
                }
            }
            let diagnosis = format!(
                "app leaks the socket: {owner} has not called close() on {local} <- {remote} for \
                 {at_least}{age} after the peer closed; {unread} unread byte(s){siblings}; {netns}",
                owner = text::owner(c, true),
                local = c.local,
                remote = c.remote,
                age = text::dur(age),
                netns = text::netns(c.netns),
            );
            (Severity::Warning, "owned", diagnosis, ev)
        };
        evidence.insert("age_seconds".to_owned(), text::secs(age));
        evidence.insert("age_is_lower_bound".to_owned(), lower_bound);
        evidence.insert("unread_bytes".to_owned(), f64::from(unread));
        out.push(Candidate {
            id: text::conn_id(FindingKind::CloseWaitStuck, c.key),
            kind: FindingKind::CloseWaitStuck,
            severity,
            subject: text::conn_subject(c),
            cause,
            diagnosis,
            since: c.state_since,
            evidence,
            socket: Some(c.key),
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::config::DetectorConfig;
    use crate::detect::CloseWaitGroup;
    use crate::detect::testutil::{Harness, assert_ev, changes, conn, listener, owner, s};
    use crate::model::Lifecycle::{Opened, Resolved, Updated};
    use crate::model::{FindingKind, Severity, TcpState};

    const K: FindingKind = FindingKind::CloseWaitStuck;

    fn leaked() -> crate::model::ConnRecord {
        let mut c = conn(TcpState::CloseWait, "10.0.0.1:8080", "10.0.0.2:5555");
        c.owner = Some(owner(1234, "nginx", 7).into());
        c.queues.recv_q = 1;
        c
    }

    #[test]
    fn owned_fires_after_threshold_not_before() {
        let mut h = Harness::new(DetectorConfig::default());
        let c = leaked();
        for t in 0..30 {
            assert!(
                h.step_kind(f64::from(t), std::slice::from_ref(&c), K)
                    .is_empty(),
                "t={t}"
            );
        }
        let ch = h.step_kind(30.0, std::slice::from_ref(&c), K);
        assert_eq!(changes(&ch), vec![Opened]);
        let f = &ch[0].finding;
        assert_eq!(f.cause, "owned");
        assert_eq!(f.severity, Severity::Warning);
        assert_eq!(f.since, s(0.0));
        assert_eq!(f.id, format!("close_wait_stuck:1:{:x}", c.key.skaddr));
        assert_eq!(
            f.diagnosis,
            "app leaks the socket: nginx[1234] fd 7 has not called close() on 10.0.0.1:8080 <- \
             10.0.0.2:5555 for 30s after the peer closed; 1 unread byte(s); netns 4026531833"
        );
        assert_ev(f, "unread_bytes", 1.0);
        assert_ev(f, "fd", 7.0);
        // Ageing does not produce updates.
        for t in 31..200 {
            assert!(
                h.step_kind(f64::from(t), std::slice::from_ref(&c), K)
                    .is_empty(),
                "t={t}"
            );
        }
        assert!((h.open_of(K)[0].evidence["age_seconds"] - 199.0).abs() < 1e-6);
        // Closed: resolved at once.
        let ch = h.step_kind(200.0, &[], K);
        assert_eq!(changes(&ch), vec![Resolved]);
        assert!((ch[0].finding.evidence["duration_seconds"] - 200.0).abs() < 1e-6);
        assert!(!h.det.is_flagged(&c.key));
    }

    #[test]
    fn close_wait_closed_after_two_seconds_is_silent() {
        let mut h = Harness::new(DetectorConfig::default());
        let c = leaked();
        let mut all = Vec::new();
        for t in 0..=2 {
            all.extend(h.step(f64::from(t), std::slice::from_ref(&c)));
        }
        let mut last_ack = c.clone();
        last_ack.state = TcpState::LastAck;
        for t in 3..100 {
            all.extend(h.step(f64::from(t), std::slice::from_ref(&last_ack)));
        }
        all.extend(h.step(100.0, &[]));
        assert!(all.is_empty(), "{all:?}");
    }

    #[test]
    fn leaving_close_wait_resolves_after_hysteresis() {
        let mut h = Harness::new(DetectorConfig::default());
        let c = leaked();
        assert_eq!(
            changes(&h.step_kind(31.0, std::slice::from_ref(&c), K)),
            vec![Opened]
        );
        let mut closed = c.clone();
        closed.state = TcpState::LastAck;
        assert!(
            h.step_kind(32.0, std::slice::from_ref(&closed), K)
                .is_empty()
        );
        assert!(
            h.step_kind(34.0, std::slice::from_ref(&closed), K)
                .is_empty()
        );
        assert_eq!(
            changes(&h.step_kind(35.0, std::slice::from_ref(&closed), K)),
            vec![Resolved]
        );
    }

    #[test]
    fn unaccepted_names_the_listener_and_counts_the_pile() {
        let mut h = Harness::new(DetectorConfig::default());
        let l = listener(8080, 3, 128);
        let mut conns = vec![l.clone()];
        for p in 1..=3u16 {
            let mut c = conn(
                TcpState::CloseWait,
                "10.0.0.1:8080",
                &format!("10.0.0.9:{p}"),
            );
            c.inode = 0;
            c.queues.recv_q = 1;
            conns.push(c);
        }
        let ch = h.step_kind(45.0, &conns, K);
        assert_eq!(changes(&ch), vec![Opened, Opened, Opened]);
        let f = &ch[0].finding;
        assert_eq!(f.cause, "unaccepted");
        assert_eq!(f.severity, Severity::Critical);
        assert_eq!(
            f.diagnosis,
            "app is not calling accept() on :8080 (server[77], accept queue 3/128): 10.0.0.1:8080 <- \
             10.0.0.9:1 was closed by the peer 45s ago and still waits in the accept queue, never \
             accepted; 3 such socket(s) on this listener; netns 4026531833"
        );
        assert_ev(f, "listener_unaccepted_close_wait", 3.0);
        let aggs = h.det.close_wait_aggregates();
        assert_eq!(aggs.len(), 1);
        assert_eq!(
            aggs[0].group,
            CloseWaitGroup::Listener {
                port: 8080,
                listener: Some(l.key)
            }
        );
        assert_eq!(aggs[0].listener_owner.as_ref().unwrap().comm, "server");
        assert_eq!(
            (aggs[0].total, aggs[0].stuck, aggs[0].unread_bytes),
            (3, 3, 3)
        );
        // The pile growing is context, not an update of each finding.
        let mut more = conns.clone();
        for p in 4..=9u16 {
            let mut c = conn(
                TcpState::CloseWait,
                "10.0.0.1:8080",
                &format!("10.0.0.9:{p}"),
            );
            c.inode = 0;
            c.state_since = s(40.0);
            more.push(c);
        }
        assert!(h.step_kind(46.0, &more, K).is_empty());
        assert_ev(h.open_of(K)[0], "listener_unaccepted_close_wait", 9.0);
    }

    #[test]
    fn inexact_age_fires_on_lower_bound() {
        let mut h = Harness::new(DetectorConfig::default());
        let mut c = leaked();
        c.state_since_exact = false;
        c.state_since = s(10.0);
        assert!(h.step_kind(39.0, std::slice::from_ref(&c), K).is_empty());
        let ch = h.step_kind(40.0, std::slice::from_ref(&c), K);
        assert_eq!(changes(&ch), vec![Opened]);
        assert!(
            ch[0].finding.diagnosis.contains("for at least 30s"),
            "{}",
            ch[0].finding.diagnosis
        );
        assert_ev(&ch[0].finding, "age_is_lower_bound", 1.0);
    }

    #[test]
    fn owner_found_later_is_an_update_and_aggregates_per_process() {
        let mut h = Harness::new(DetectorConfig::default());
        let mut c = leaked();
        c.owner = None;
        let ch = h.step_kind(30.0, std::slice::from_ref(&c), K);
        assert!(
            ch[0]
                .finding
                .diagnosis
                .starts_with("app leaks the socket: process not found yet has not")
        );
        assert_eq!(
            h.det.close_wait_aggregates()[0].group,
            CloseWaitGroup::UnknownProcess
        );
        let mut other = conn(TcpState::CloseWait, "10.0.0.1:8080", "10.0.0.3:6000");
        other.owner = Some(owner(1234, "nginx", 9).into());
        other.state_since = s(25.0);
        c.owner = Some(owner(1234, "nginx", 7).into());
        let ch = h.step_kind(31.0, &[c.clone(), other.clone()], K);
        assert_eq!(changes(&ch), vec![Updated]);
        assert!(ch[0].finding.diagnosis.contains("nginx[1234] fd 7"));
        let aggs = h.det.close_wait_aggregates();
        assert_eq!(aggs.len(), 1);
        assert_eq!(
            aggs[0].group,
            CloseWaitGroup::Process {
                pid: 1234,
                comm: "nginx".into()
            }
        );
        assert_eq!((aggs[0].total, aggs[0].stuck), (2, 1));
        assert!((aggs[0].oldest_age_seconds - 31.0).abs() < 1e-6);
        let ch = h.step_kind(56.0, &[c, other], K);
        assert_eq!(changes(&ch), vec![Opened]);
        assert!(
            ch[0]
                .finding
                .diagnosis
                .contains("2 stuck CLOSE_WAIT sockets in this process")
        );
    }
}
