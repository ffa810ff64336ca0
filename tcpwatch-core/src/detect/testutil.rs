//! Test helpers: a fake clock, a `ConnRecord` builder and a harness that runs the detectors.
#![allow(clippy::unwrap_used, reason = "test helpers")]
use std::collections::HashMap;
use std::net::SocketAddr;

use crate::config::DetectorConfig;
use crate::detect::{DetectContext, Detectors};
use crate::model::{
    ConnKey, ConnRecord, Finding, FindingChange, FindingKind, Lifecycle, MonoNs, NetnsId,
    NetnsInfo, Owner, ResetCounts, TcpState,
};

pub(crate) const NETNS: NetnsId = NetnsId {
    cookie: 1,
    inode: 4_026_531_833,
};

/// Fake clock: `t` seconds after an arbitrary boot offset (1000 s).
pub(crate) fn s(t: f64) -> MonoNs {
    crate::config::seconds_to_ns(1000.0 + t)
}

pub(crate) fn owner(pid: u32, comm: &str, fd: i32) -> Owner {
    Owner {
        pid,
        comm: comm.to_owned(),
        fd: Some(fd),
        ..Owner::default()
    }
}

/// A full socket in `state` since `s(0)` (exact), owned by an unknown process (inode set),
/// quiet queues. The key is derived from the addresses so the same call gives the same key.
pub(crate) fn conn(state: TcpState, local: &str, remote: &str) -> ConnRecord {
    let local: SocketAddr = local.parse().unwrap();
    let remote: SocketAddr = remote.parse().unwrap();
    let skaddr = 0xffff_8880_0000_0000 | (u64::from(local.port()) << 16) | u64::from(remote.port());
    let mut c = ConnRecord::new(
        ConnKey {
            skaddr,
            netns_cookie: NETNS.cookie,
        },
        NETNS,
        local,
        remote,
        state,
        s(0.0),
    );
    c.inode = 10_000 + u64::from(local.port());
    c.uid = 1000;
    c
}

/// A listener on `0.0.0.0:port` with an accept queue.
pub(crate) fn listener(port: u16, queue: u32, limit: u32) -> ConnRecord {
    let mut l = conn(TcpState::Listen, &format!("0.0.0.0:{port}"), "0.0.0.0:0");
    l.owner = Some(owner(77, "server", 3).into());
    l.queues.accept_queue = queue;
    l.queues.accept_limit = limit;
    l
}

/// Detectors plus the context maps, stepped with a fake clock.
pub(crate) struct Harness {
    pub det: Detectors,
    pub netns: HashMap<u64, NetnsInfo>,
    pub resets: HashMap<(u64, u16), ResetCounts>,
    /// No namespace confirmed: the records' own times are their effective ones.
    pub aging: crate::aging::Aging,
}

impl Harness {
    pub(crate) fn new(cfg: DetectorConfig) -> Self {
        let netns = [(NETNS.cookie, NetnsInfo::with_defaults(NETNS))]
            .into_iter()
            .collect();
        Self {
            det: Detectors::new(cfg),
            netns,
            resets: HashMap::new(),
            aging: crate::aging::Aging::default(),
        }
    }

    pub(crate) fn step(&mut self, t: f64, conns: &[ConnRecord]) -> Vec<FindingChange> {
        let ctx = DetectContext {
            netns: &self.netns,
            port_resets: &self.resets,
            aging: &self.aging,
        };
        self.det.evaluate(s(t), conns, &ctx)
    }

    /// Steps and keeps only the changes of one kind.
    pub(crate) fn step_kind(
        &mut self,
        t: f64,
        conns: &[ConnRecord],
        kind: FindingKind,
    ) -> Vec<FindingChange> {
        self.step(t, conns)
            .into_iter()
            .filter(|c| c.finding.kind == kind)
            .collect()
    }

    pub(crate) fn open_of(&self, kind: FindingKind) -> Vec<&Finding> {
        self.det.open().filter(|f| f.kind == kind).collect()
    }
}

/// The lifecycle changes, in order.
pub(crate) fn changes(v: &[FindingChange]) -> Vec<Lifecycle> {
    v.iter().map(|c| c.change).collect()
}

/// Asserts an evidence number (to 1e-6).
pub(crate) fn assert_ev(f: &Finding, key: &str, expected: f64) {
    let got = f.evidence.get(key).copied();
    assert!(
        got.is_some_and(|g| (g - expected).abs() < 1e-6),
        "{}: {key} = {got:?}, expected {expected}",
        f.id
    );
}
