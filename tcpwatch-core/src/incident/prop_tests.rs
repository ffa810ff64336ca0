//! Property test of the incident book: random sequences of open finding sets over time.
#![allow(clippy::unwrap_used, reason = "tests")]
use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::testkit::{
    NS1, NS2, backlog, book_with, conn_finding, ctx, cw_owned, cw_unaccepted, resets, s, wall,
};
use super::{IncidentContext, IncidentKind};
use crate::config::IncidentConfig;
use crate::model::{Finding, FindingKind, Lifecycle, Severity, Subject};

/// One finding, drawn from a small universe so that groups collide, merge and split.
#[derive(Clone, Debug)]
struct Spec {
    kind: u8,
    ns: bool,
    pid: u8,
    port: u8,
    remote: u8,
}

const PORTS: [u16; 4] = [8080, 9090, 40000, 40001];
const REMOTES: [&str; 3] = ["10.0.0.5:443", "10.0.0.6:443", "10.0.0.9:5000"];

fn finding(sp: &Spec) -> Finding {
    let ns = if sp.ns { NS2 } else { NS1 };
    let port = PORTS[usize::from(sp.port) % PORTS.len()];
    let remote = REMOTES[usize::from(sp.remote) % REMOTES.len()];
    let owner = (sp.pid > 0).then(|| (u32::from(sp.pid), "p"));
    let local = format!("10.0.0.1:{port}");
    let conn = |kind, sev, cause: &str| conn_finding(kind, sev, cause, ns, &local, remote, owner);
    let mut f = match sp.kind % 9 {
        0 => backlog(ns, port, owner, "filling"),
        1 => cw_unaccepted(ns, port, u16::from(sp.remote)),
        2 => cw_owned(ns, u32::from(sp.pid), "p", port, u16::from(sp.remote)),
        3 => conn(
            FindingKind::RetransmitChain,
            Severity::Critical,
            "peer_unreachable",
        ),
        4 => conn(
            FindingKind::SendQueueGrowing,
            Severity::Critical,
            "peer_unreachable",
        ),
        5 => conn(
            FindingKind::SendQueueGrowing,
            Severity::Warning,
            "peer_not_reading",
        ),
        6 => conn(
            FindingKind::SendQueueGrowing,
            Severity::Warning,
            "no_ack_progress",
        ),
        7 => conn(FindingKind::AwaitingResponse, Severity::Info, "no_response"),
        _ => resets(ns, port, "sent"),
    };
    if sp.kind % 9 == 2
        && sp.pid == 0
        && let Subject::Connection { owner, .. } = &mut f.subject
    {
        *owner = None;
    }
    f
}

fn spec() -> impl Strategy<Value = Spec> {
    (0u8..9, any::<bool>(), 0u8..3, 0u8..4, 0u8..3).prop_map(|(kind, ns, pid, port, remote)| Spec {
        kind,
        ns,
        pid,
        port,
        remote,
    })
}

/// (seconds since the previous step in half seconds, findings, listening ports bitmap).
fn steps() -> impl Strategy<Value = Vec<(u8, Vec<Spec>, u8)>> {
    prop::collection::vec(
        (0u8..8, prop::collection::vec(spec(), 0..14), 0u8..16),
        1..40,
    )
}

fn context(bits: u8) -> IncidentContext {
    let mut ls = Vec::new();
    for (i, ns) in [NS1, NS2].into_iter().enumerate() {
        for (j, port) in [8080u16, 9090].into_iter().enumerate() {
            if bits & (1 << (i * 2 + j)) != 0 {
                ls.push((ns, port, Some((1, "p")), 10, 128));
            }
        }
    }
    ctx(&ls)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_open_finding_is_in_exactly_one_open_incident(
        seq in steps(),
        max_open in 1u32..6,
        listed in 1u32..4,
        resolve_half_secs in 0u8..8,
        interval in 0u8..10,
    ) {
        let resolve_after = f64::from(resolve_half_secs) / 2.0;
        let cfg = IncidentConfig { max_open, max_members_listed: listed, recently_resolved: 4 };
        let mut b = book_with(cfg, resolve_after, f64::from(interval));
        let mut t = 0.0;
        let mut empty_since: BTreeMap<String, f64> = BTreeMap::new();
        for (dt, specs, bits) in seq {
            t += f64::from(dt) / 2.0;
            let mut fs: Vec<Finding> = specs.iter().map(finding).collect();
            let mut ids = BTreeSet::new();
            fs.retain(|f| ids.insert(f.id.clone()));
            let before: BTreeSet<String> = b.open().map(|i| i.id.clone()).collect();
            let ch = b.update(s(t), wall(), &fs, &context(bits));
            let after: BTreeSet<String> = b.open().map(|i| i.id.clone()).collect();

            // Exactly one open incident per open finding, and it counts it.
            let mut total = 0u64;
            for f in &fs {
                let id = b.incident_of(&f.id);
                prop_assert!(id.is_some(), "{} has no incident", f.id);
                let inc = b.get(id.unwrap());
                prop_assert!(inc.is_some(), "{} -> {:?} not open", f.id, id);
                prop_assert!(inc.unwrap().counts.get(f.kind.name()).copied().unwrap_or(0) > 0);
            }
            for inc in b.open() {
                total += u64::from(inc.members_total);
                let counted: u32 = inc.counts.values().sum();
                prop_assert_eq!(counted, inc.members_total);
                prop_assert!(inc.members.len() <= usize::try_from(listed).unwrap());
                prop_assert!(inc.members.iter().all(|m| b.incident_of(m) == Some(inc.id.as_str())));
                prop_assert!(inc.resolved_at.is_none());
            }
            prop_assert_eq!(total, u64::try_from(fs.len()).unwrap());

            // No incident stays open without members for resolve_after.
            for inc in b.open() {
                if inc.members_total == 0 {
                    let since = *empty_since.entry(inc.id.clone()).or_insert(t);
                    prop_assert!(t - since < resolve_after, "{} empty since {since}, t {t}", inc.id);
                } else {
                    empty_since.remove(&inc.id);
                }
            }
            empty_since.retain(|id, _| after.contains(id));

            // Lifecycle changes agree with the open set.
            for c in &ch {
                match c.change {
                    Lifecycle::Opened => {
                        prop_assert!(!before.contains(&c.incident.id), "reopened {}", c.incident.id);
                        prop_assert!(after.contains(&c.incident.id));
                    }
                    Lifecycle::Updated => prop_assert!(after.contains(&c.incident.id)),
                    Lifecycle::Resolved => {
                        prop_assert!(c.incident.resolved_at == Some(s(t)));
                        prop_assert!(!after.contains(&c.incident.id), "{} resolved and open", c.incident.id);
                    }
                }
            }
            for id in before.difference(&after) {
                prop_assert!(
                    ch.iter().any(|c| c.change == Lifecycle::Resolved && &c.incident.id == id),
                    "{id} vanished without a Resolved change"
                );
            }
            prop_assert!(b.open_count() <= usize::try_from(max_open).unwrap() + IncidentKind::ALL.len());
            prop_assert_eq!(b.open().count(), b.open_count());
        }
    }
}
