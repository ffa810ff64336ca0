#![allow(clippy::unwrap_used, reason = "test code")]
use std::collections::HashMap;
use std::sync::Arc;

use super::*;
use crate::detect::testutil::{NETNS, conn, owner};
use crate::model::PodRef;

/// xorshift64: reproducible random changes without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn record(rng: &mut Rng, port: u16) -> ConnRecord {
    let remote = format!("10.0.0.{}:{}", 2 + rng.below(3), 80 + rng.below(3));
    let mut c = conn(TcpState::Established, &format!("10.0.0.1:{port}"), &remote);
    c.key.skaddr ^= u64::from(port) << 32;
    if rng.below(2) == 0 {
        c.owner = Some(Arc::new(owner(
            100 + u32::try_from(rng.below(3)).unwrap(),
            "api",
            3,
        )));
    }
    c
}

fn netns_map() -> HashMap<u64, NetnsInfo> {
    HashMap::from([(NETNS.cookie, NetnsInfo::with_defaults(NETNS))])
}

/// One random change to the table, the namespaces or the threshold. Returns whether it may
/// change what the audit reads (false: a field it does not read).
fn change(
    rng: &mut Rng,
    table: &mut Vec<ConnRecord>,
    ns: &mut HashMap<u64, NetnsInfo>,
    threshold: &mut u64,
    next_port: &mut u16,
) -> bool {
    if table.is_empty() || rng.below(20) == 0 {
        *next_port += 1;
        table.push(record(rng, *next_port));
        return true;
    }
    let i = usize::try_from(rng.below(table.len() as u64)).unwrap();
    let v = rng.next();
    let c = &mut table[i];
    match rng.below(16) {
        0 => c.queues.send_q = u32::try_from(v % 3).unwrap() * 1000,
        1 => c.tcp.keepalive.enabled = !c.tcp.keepalive.enabled,
        2 => c.tcp.keepalive.time_ms = v % 3 * 30_000,
        3 => c.tcp.keepalive.intvl_ms = v % 3 * 5_000,
        4 => c.tcp.keepalive.probes = u8::try_from(v % 4).unwrap(),
        5 => c.tcp.user_timeout_ms = u32::try_from(v % 3).unwrap() * 20_000,
        6 => {
            c.state = [
                TcpState::Established,
                TcpState::Established,
                TcpState::CloseWait,
                TcpState::FinWait1,
            ][usize::try_from(v % 4).unwrap()];
        }
        7 => c.full_sock = !v.is_multiple_of(4),
        8 if c.owner.as_ref().is_some_and(|o| o.pod.is_some()) => {
            // The pod of a known owner comes later (filled from the API server).
            let o = Arc::make_mut(c.owner.as_mut().unwrap());
            o.pod.as_mut().unwrap().name = format!("pod-{}", v % 2);
            o.pod.as_mut().unwrap().namespace = "default".to_owned();
        }
        8 => {
            c.owner = match v % 4 {
                0 => None,
                1 => Some(Arc::new(owner(200, "worker", 4))),
                2 => Some(Arc::new(owner(200, "other", 4))),
                _ => {
                    let mut o = owner(201, "worker", 4);
                    o.pod = Some(PodRef {
                        uid: format!("uid-{}", v % 2),
                        ..PodRef::default()
                    });
                    Some(Arc::new(o))
                }
            };
        }
        9 => {
            c.inode = v % 2 * 4242;
            c.creator_pid = Some(u32::try_from(v % 3).unwrap());
            c.creator_comm = Some(format!("c{}", v % 2));
        }
        10 => {
            table.swap_remove(i);
        }
        11 => {
            let n = ns.get_mut(&NETNS.cookie).unwrap();
            match v % 3 {
                0 => n.tcp_retries2 = 5 + u32::try_from(v % 11).unwrap(),
                1 => n.tcp_keepalive_time_s = 60 + u32::try_from(v % 2).unwrap() * 7140,
                _ => n.tcp_keepalive_probes = 3 + u32::try_from(v % 7).unwrap(),
            }
        }
        12 => *threshold = 60 + v % 3 * 240,
        13 => c.remote.set_port(80 + u16::try_from(v % 4).unwrap()),
        // Fields the audit does not read: no new audit for these.
        14 => {
            c.last_seen += 1_000_000_000;
            c.retrans.total += 1;
            return false;
        }
        _ => {
            c.tcp.srtt_us = u32::try_from(v % 100_000).unwrap();
            c.uid = u32::try_from(v % 3).unwrap();
            return false;
        }
    }
    true
}

#[test]
fn cached_audit_equals_a_fresh_one_after_random_changes() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut next_port = 1000;
    let mut t: Vec<ConnRecord> = (0..60)
        .map(|_| {
            next_port += 1;
            record(&mut rng, next_port)
        })
        .collect();
    let mut ns = netns_map();
    let mut threshold = 300;
    let mut cache = AuditCache::default();
    let mut only_unread = 0;
    let mut audited = 0;
    for round in 0..4000 {
        let mut relevant = false;
        for _ in 0..=rng.below(3) {
            relevant |= change(&mut rng, &mut t, &mut ns, &mut threshold, &mut next_port);
        }
        if rng.below(5) == 0 {
            // The table's iteration order is no input either.
            let j = usize::try_from(rng.below(t.len() as u64)).unwrap();
            t.rotate_left(j);
        }
        let before = cache.stats;
        let cached = cache.audit(t.iter(), &ns, threshold);
        assert_eq!(cached, audit(t.iter(), &ns, threshold), "round {round}");
        audited += cached.connections;
        if !relevant {
            only_unread += 1;
            assert_eq!(
                cache.stats.reused,
                before.reused + 1,
                "round {round}: reused"
            );
        }
    }
    // Both paths were exercised, and with reports of substance.
    assert!(
        only_unread > 100 && cache.stats.computed > 1000,
        "{:?}",
        cache.stats
    );
    assert!(audited > 4000 * 20, "{audited} connections audited in all");
}

#[test]
fn a_change_the_audit_reads_is_seen_and_clear_forgets() {
    let mut rng = Rng(7);
    let mut t: Vec<ConnRecord> = (0..10).map(|i| record(&mut rng, 2000 + i)).collect();
    let ns = netns_map();
    let mut cache = AuditCache::default();
    let a = cache.audit(t.iter(), &ns, 300);
    assert_eq!(cache.audit(t.iter(), &ns, 300), a);
    t[3].queues.send_q = 1;
    let b = cache.audit(t.iter(), &ns, 300);
    assert_ne!(a, b, "data in flight changes the worst case");
    assert_eq!(b, audit(t.iter(), &ns, 300));
    cache.clear();
    assert_eq!(cache.audit(t.iter(), &ns, 300), b);
    assert_eq!(
        cache.stats,
        AuditCacheStats {
            computed: 3,
            reused: 1
        }
    );
}
