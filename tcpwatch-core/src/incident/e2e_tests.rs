//! The real detectors feeding the incident book: the findings' real shapes (subjects, causes,
//! owners) group as documented.
#![allow(clippy::unwrap_used, reason = "tests")]
use super::testkit::{NS2, wall};
use super::{IncidentBook, IncidentContext, IncidentKind};
use crate::config::{DetectorConfig, IncidentConfig};
use crate::detect::testutil::{Harness, conn, listener, owner, s};
use crate::model::{ConnKey, ConnRecord, Lifecycle, TcpState};

struct Rig {
    h: Harness,
    book: IncidentBook,
}

impl Rig {
    fn new() -> Self {
        let cfg = DetectorConfig::default();
        Self {
            book: IncidentBook::new(IncidentConfig::default(), &cfg),
            h: Harness::new(cfg),
        }
    }

    fn step(&mut self, t: f64, conns: &[ConnRecord]) -> Vec<(Lifecycle, String)> {
        self.h.step(t, conns);
        let ctx = IncidentContext::from_conns(conns);
        self.book
            .update(s(t), wall(), self.h.det.open(), &ctx)
            .into_iter()
            .map(|c| (c.change, c.incident.id))
            .collect()
    }

    fn assert_every_finding_indexed(&self) {
        for f in self.h.det.open() {
            let id = self.book.incident_of(&f.id).unwrap();
            assert!(self.book.get(id).is_some(), "{} -> {id}", f.id);
        }
    }
}

#[test]
fn listener_that_never_accepts_with_200_closed_peers_is_one_incident() {
    let mut rig = Rig::new();
    let mut conns = vec![listener(8080, 201, 200)];
    for p in 0..200u16 {
        let mut c = conn(
            TcpState::CloseWait,
            "10.0.0.1:8080",
            &format!("10.0.0.9:{}", 40000 + p),
        );
        c.inode = 0;
        c.queues.recv_q = 1;
        c.key.skaddr += u64::from(p) << 32;
        conns.push(c);
    }
    let mut log = Vec::new();
    for t in 0..=40 {
        if t > 0 {
            rig.h.netns.get_mut(&1).unwrap().listen_overflows += 3;
        }
        log.extend(rig.step(f64::from(t), &conns));
    }
    assert_eq!(rig.h.det.open_count(), 201);
    assert_eq!(rig.book.open_count(), 1);
    let inc = rig.book.open().next().unwrap();
    assert_eq!(inc.id, "listener-1-8080");
    assert_eq!(inc.kind, IncidentKind::ListenerNotAccepting);
    assert_eq!(inc.root.local_port, Some(8080));
    assert_eq!(inc.root.process.as_ref().unwrap().comm, "server");
    assert_eq!(inc.counts["close_wait_stuck"], 200);
    assert_eq!(inc.counts["accept_backlog_filling"], 1);
    assert!(
        inc.diagnosis
            .contains("200 connections queued and already closed by the peer")
    );
    assert!(log.iter().all(|(_, id)| id == "listener-1-8080"), "{log:?}");
    assert_eq!(log.first().unwrap().0, Lifecycle::Opened);
    assert_eq!(
        log.iter().filter(|(c, _)| *c == Lifecycle::Opened).count(),
        1
    );
    rig.assert_every_finding_indexed();

    // The app is fixed: the queue drains, the findings resolve, then the incident.
    let fixed = listener(8080, 0, 200);
    let mut log = Vec::new();
    for t in 41..=60 {
        log.extend(rig.step(f64::from(t), std::slice::from_ref(&fixed)));
    }
    assert_eq!(
        log,
        vec![(Lifecycle::Resolved, "listener-1-8080".to_owned())]
    );
    assert_eq!(rig.book.open_count(), 0);
}

fn client(local_port: u16, remote: &str, t: u32) -> ConnRecord {
    let mut c = conn(
        TcpState::Established,
        &format!("10.0.0.1:{local_port}"),
        remote,
    );
    c.owner = Some(owner(42, "api", 5).into());
    c.tcp.snd_una = 1000;
    c.tcp.peer_window = 65535;
    c.queues.send_q = 5809 + t * 600;
    c.queues.unacked = c.queues.send_q;
    c.retrans.chain = 3 + t / 10;
    c.retrans.chain_start = Some(s(0.0));
    c.tcp.backoff = 6;
    c
}

/// Incident #1 with the real detectors: api[42]'s client is wedged on 10.0.0.5:443, its
/// callers' connections pile up in `CLOSE_WAIT` on its listener :8080; elsewhere, in another
/// namespace, an unrelated leak.
#[test]
fn incident_1_chain_is_one_incident_naming_upstream_process_and_port() {
    let mut rig = Rig::new();
    let mut l = listener(8080, 0, 128);
    l.owner = Some(owner(42, "api", 3).into());
    let mut callers = Vec::new();
    for p in 0..20u16 {
        let mut c = conn(
            TcpState::CloseWait,
            "10.0.0.1:8080",
            &format!("10.0.0.20:{}", 30000 + p),
        );
        c.owner = Some(owner(42, "api", 100 + i32::from(p)).into());
        c.state_since = s(5.0);
        callers.push(c);
    }
    let mut other = conn(TcpState::CloseWait, "10.1.0.1:40000", "10.1.0.2:443");
    other.key = ConnKey {
        skaddr: 0xdead_0000,
        netns_cookie: NS2.cookie,
    };
    other.netns = NS2;
    other.owner = Some(owner(310, "cron", 4).into());
    let mut last = Vec::new();
    for t in 0..=40u32 {
        let mut conns = vec![l.clone(), client(40000, "10.0.0.5:443", t), other.clone()];
        conns.extend(callers.iter().cloned());
        last = conns;
        rig.step(f64::from(t), &last);
    }
    rig.assert_every_finding_indexed();
    let ids: Vec<_> = rig.book.open().map(|i| i.id.clone()).collect();
    assert_eq!(ids, vec!["blocked-1-42", "leak-2-310-0"]);
    let inc = rig.book.get("blocked-1-42").unwrap();
    assert_eq!(inc.kind, IncidentKind::BlockedOnUpstream);
    assert_eq!(inc.root.remote, Some("10.0.0.5:443".parse().unwrap()));
    assert_eq!(inc.root.local_port, Some(8080));
    assert_eq!(inc.root.process.as_ref().unwrap().pid, 42);
    assert!(
        inc.diagnosis.starts_with(
            "api[42] is blocked on 10.0.0.5:443 for 40s: 1 connection retransmitting, no ACK"
        ),
        "{}",
        inc.diagnosis
    );
    assert_eq!(
        inc.consequence.as_deref(),
        Some("its callers' connections pile up on :8080: 20 in CLOSE_WAIT")
    );
    assert_eq!(inc.counts["close_wait_stuck"], 20);
    // The upstream comes back: the findings resolve, the merge splits after the hysteresis,
    // and the leak on :8080 remains its own incident.
    let mut healthy = client(40000, "10.0.0.5:443", 0);
    healthy.queues.send_q = 0;
    healthy.queues.unacked = 0;
    healthy.retrans.chain = 0;
    healthy.retrans.chain_start = None;
    healthy.tcp.backoff = 0;
    last[1] = healthy;
    let mut log = Vec::new();
    for t in 41..=60 {
        log.extend(rig.step(f64::from(t), &last));
    }
    assert!(
        log.contains(&(Lifecycle::Resolved, "blocked-1-42".to_owned()))
            && log.contains(&(Lifecycle::Opened, "leak-1-42-8080".to_owned())),
        "{log:?}"
    );
    assert!(rig.book.get("leak-1-42-8080").is_some());
    rig.assert_every_finding_indexed();
}
