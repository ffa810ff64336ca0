//! Unit tests of `aging`: unchanged records are neither written nor copied, yet every reader
//! sees the `last_seen` and ages that writing them every sweep gave.
use std::collections::HashMap;
use std::sync::Arc;

use tcpwatch_common::delta::{SEEN_TAG, SockSeen};
use tcpwatch_common::{AF_INET, SockRecord, StateEvent, record_flags, tcp_state};

use crate::config::DetectorConfig;
use crate::detect::{DetectContext, Detectors};
use crate::model::{ConnKey, ConnRecord, FindingKind, MonoNs, NS_PER_MS, NS_PER_SEC};
use crate::table::{ConnTable, KernelClock, TableConfig};

use super::Aging;

const CLOCK: KernelClock = KernelClock { hz: 1000 };
const NS_A: u64 = 7;
const NS_B: u64 = 8;

/// An idle established socket (nothing queued: not "interesting"), owned (inode), whose last
/// event is our send (`send_ms` ago) after the peer's last data (`recv_ms` ago).
fn idle(netns: u64, skaddr: u64, send_ms: u32, recv_ms: u32) -> SockRecord {
    SockRecord {
        skaddr,
        cookie: skaddr + 1,
        netns_cookie: netns,
        inode: skaddr + 1000,
        family: AF_INET,
        sport: 40000,
        dport: 5432,
        state: tcp_state::ESTABLISHED,
        flags: record_flags::FULL_SOCK | record_flags::TRACKED,
        state_since_ns: 1,
        first_seen_ns: 1,
        write_seq: 500,
        snd_una: 500,
        snd_nxt: 500,
        snd_wnd: 65535,
        lsnd_age_jiffies: send_ms,
        rcv_tstamp_age_jiffies: send_ms,
        lrcv_age_jiffies: recv_ms,
        data_segs_in: 3,
        data_segs_out: 4,
        ..SockRecord::default()
    }
}

fn seen(r: &SockRecord) -> SockSeen {
    SockSeen {
        tagged_skaddr: r.skaddr | SEEN_TAG,
        cookie: r.cookie,
    }
}

fn key(netns: u64, skaddr: u64) -> ConnKey {
    ConnKey {
        skaddr,
        netns_cookie: netns,
    }
}

fn ms(v: u64) -> MonoNs {
    v * NS_PER_MS
}

/// What writing the times into every unchanged record each sweep gave (the previous
/// `table_seen::refresh`), for one socket: `(last_seen, send, ack, recv)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Old(MonoNs, u64, u64, u64);

impl Old {
    fn full(r: &SockRecord, now: MonoNs) -> Self {
        Self(
            now,
            u64::from(r.lsnd_age_jiffies),
            u64::from(r.rcv_tstamp_age_jiffies),
            u64::from(r.lrcv_age_jiffies),
        )
    }

    fn refresh(&mut self, now: MonoNs) {
        if now > self.0 {
            let e = now / NS_PER_MS - self.0 / NS_PER_MS;
            *self = Self(now, self.1 + e, self.2 + e, self.3 + e);
        }
    }

    fn of(c: &ConnRecord) -> Self {
        Self(
            c.last_seen,
            c.tcp.last_send_age_ms,
            c.tcp.last_ack_age_ms,
            c.tcp.last_recv_age_ms,
        )
    }
}

#[test]
fn unchanged_idle_records_are_not_copied_yet_show_the_times_of_a_rewrite() {
    let mut t = ConnTable::new(TableConfig::default());
    let recs: Vec<SockRecord> = (1..=50).map(|i| idle(NS_A, i * 0x100, 10, 30)).collect();
    let t0 = ms(10_000) + 123_456;
    t.apply_sweep(NS_A, &recs, &[], t0 - 5, CLOCK, t0, None);
    // A published view holds the records from here on.
    let view: Vec<Arc<ConnRecord>> = t.shared_records().cloned().collect();
    let mut old: HashMap<ConnKey, Old> = recs
        .iter()
        .map(|r| (key(NS_A, r.skaddr), Old::full(r, t0)))
        .collect();
    let listed: Vec<SockSeen> = recs.iter().map(seen).collect();
    let mut now = t0;
    for i in 0..200u64 {
        // Sub-ms offsets: the floors of each confirmation must add up exactly.
        now += NS_PER_SEC + 999_999 * (i % 3);
        let out = t.apply_sweep(NS_A, &[], &listed, now - 10, CLOCK, now, None);
        assert_eq!((out.unchanged, out.unknown, out.removed), (50, 0, 0));
        for o in old.values_mut() {
            o.refresh(now);
        }
    }
    for held in &view {
        let stored = t.shared_records().find(|c| c.key == held.key).unwrap();
        assert!(Arc::ptr_eq(held, stored), "unchanged record was copied");
        let shown = t.effective(&held.key).unwrap();
        assert_eq!(Old::of(&shown), old[&held.key], "{:?}", held.key);
        assert_eq!(shown.last_seen, now);
        assert_eq!(t.aging().last_seen(stored), now);
    }
    assert_eq!(t.aging().pinned_len(), 0);
}

#[test]
fn effective_times_equal_a_rewrite_every_sweep_through_events_and_full_records() {
    // Two namespaces, sockets written in full or unchanged at random, state events at random
    // times: in the gap between sweeps, during a sweep (after it began), and late ones (their
    // time before the last sweep began). After every step each record's effective times equal
    // what rewriting them every sweep gave.
    let mut t = ConnTable::new(TableConfig::default());
    let mut old: HashMap<ConnKey, Old> = HashMap::new();
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut now = ms(1_000);
    let mut started_of: HashMap<u64, MonoNs> = HashMap::new();
    let mut max_pinned = 0;
    for step in 0..400u64 {
        let ns = if next(2) == 0 { NS_A } else { NS_B };
        let sk = 0x100 * (1 + next(12));
        if next(4) == 0 {
            // A state event: now, or late (before its namespace's last sweep began).
            let late = next(2) == 0 && started_of.contains_key(&ns);
            let ts = if late {
                started_of[&ns] - 1 - next(1000)
            } else {
                now + next(NS_PER_MS)
            };
            let ev = StateEvent {
                ts_ns: ts,
                skaddr: sk,
                netns_cookie: ns,
                cookie: sk + 1,
                newstate: tcp_state::ESTABLISHED,
                family: AF_INET,
                ..StateEvent::default()
            };
            t.apply_event(&ev, false);
            let o = old.entry(key(ns, sk)).or_insert(Old(ts, 0, 0, 0));
            o.0 = ts;
        } else {
            // A sweep of `ns`: every socket the table has there, each in full or unchanged;
            // sometimes an event arrives after it began and before it is applied.
            let started = now + ms(1 + next(500)) + next(NS_PER_MS);
            now = started + ms(next(50)) + next(NS_PER_MS) + 1;
            let mut keys: Vec<u64> = old
                .keys()
                .filter(|k| k.netns_cookie == ns)
                .map(|k| k.skaddr)
                .collect();
            keys.sort_unstable();
            if next(3) == 0 && !keys.is_empty() {
                let sk = keys[usize::try_from(next(keys.len() as u64)).unwrap()];
                let ts = started + (now - started) / 2;
                let ev = StateEvent {
                    ts_ns: ts,
                    skaddr: sk,
                    netns_cookie: ns,
                    cookie: sk + 1,
                    newstate: tcp_state::ESTABLISHED,
                    family: AF_INET,
                    ..StateEvent::default()
                };
                t.apply_event(&ev, false);
                old.get_mut(&key(ns, sk)).unwrap().0 = ts;
            }
            let mut full = Vec::new();
            let mut unchanged = Vec::new();
            for sk in keys {
                let send = u32::try_from(next(5000)).unwrap();
                let r = idle(ns, sk, send, send + 7);
                if next(4) == 0 {
                    old.insert(key(ns, sk), Old::full(&r, now));
                    full.push(r);
                } else {
                    old.get_mut(&key(ns, sk)).unwrap().refresh(now);
                    unchanged.push(seen(&r));
                }
            }
            let out = t.apply_sweep(ns, &full, &unchanged, started, CLOCK, now, None);
            assert_eq!((out.unknown, out.removed), (0, 0), "step {step}");
            started_of.insert(ns, started);
        }
        assert_eq!(t.len(), old.len());
        max_pinned = max_pinned.max(t.aging().pinned_len());
        for (k, o) in &old {
            let shown = t.effective(k).unwrap();
            assert_eq!(Old::of(&shown), *o, "step {step} {k:?}");
            assert_eq!(t.aging().last_seen(t.get(k).unwrap()), o.0);
        }
    }
    assert!(max_pinned > 0, "late events were exercised");
}

#[test]
fn eviction_orders_by_effective_last_seen() {
    // Namespace A's sockets were written in full first but confirmed unchanged last; B's
    // were written later and not swept since. The least recently confirmed are B's.
    let mut t = ConnTable::new(TableConfig {
        max_connections: 4,
        ..TableConfig::default()
    });
    let a: Vec<SockRecord> = (1..=3).map(|i| idle(NS_A, i * 0x100, 10, 30)).collect();
    let b: Vec<SockRecord> = (1..=3).map(|i| idle(NS_B, i * 0x100, 10, 30)).collect();
    t.apply_sweep(NS_A, &a, &[], ms(90), CLOCK, ms(100), None);
    t.apply_sweep(NS_B, &b, &[], ms(190), CLOCK, ms(200), None);
    let listed: Vec<SockSeen> = a.iter().map(seen).collect();
    t.apply_sweep(NS_A, &[], &listed, ms(290), CLOCK, ms(300), None);
    assert_eq!(
        t.get(&key(NS_A, 0x100)).unwrap().last_seen,
        ms(100),
        "stored"
    );
    let mut victims = t.enforce_bound(|_| false);
    victims.sort_unstable_by_key(|k| k.skaddr);
    assert_eq!(victims, vec![key(NS_B, 0x100), key(NS_B, 0x200)]);
}

#[test]
fn detectors_judge_aged_sockets_as_with_rewritten_times() {
    // A client whose request has waited longer and longer for an answer, confirmed unchanged
    // every second: the detectors reading the stored records with the table's aging find
    // exactly what they find on records with the times rewritten (the old representation).
    let mut t = ConnTable::new(TableConfig::default());
    let recs = vec![
        idle(NS_A, 0x100, 1_000, 5_000),
        idle(NS_A, 0x200, 9_000, 2_000),
    ];
    let t0 = ms(50_000);
    t.apply_sweep(NS_A, &recs, &[], t0 - 3, CLOCK, t0, None);
    let listed: Vec<SockSeen> = recs.iter().map(seen).collect();
    let netns = HashMap::new();
    let port_resets = HashMap::new();
    let none = Aging::default();
    let mut with_aging = Detectors::new(DetectorConfig::default());
    let mut rewritten = Detectors::new(DetectorConfig::default());
    let mut opened = 0;
    let mut now = t0;
    for _ in 0..90 {
        now += NS_PER_SEC + 7;
        t.apply_sweep(NS_A, &[], &listed, now - 5, CLOCK, now, None);
        let at = now + 2 * NS_PER_MS;
        let ctx = DetectContext {
            netns: &netns,
            port_resets: &port_resets,
            aging: t.aging(),
        };
        let a = with_aging.evaluate(at, t.iter(), &ctx);
        let copies: Vec<ConnRecord> = t.iter().map(|c| t.aging().effective(c)).collect();
        let ctx = DetectContext {
            aging: &none,
            ..ctx
        };
        let b = rewritten.evaluate(at, &copies, &ctx);
        assert_eq!(a, b);
        opened += a
            .iter()
            .filter(|c| c.finding.kind == FindingKind::AwaitingResponse)
            .count();
    }
    assert_eq!(
        opened, 1,
        "the waiting client is found once, the other never"
    );
    assert_eq!(
        with_aging.open().map(|f| f.kind).collect::<Vec<_>>(),
        vec![FindingKind::AwaitingResponse]
    );
}
