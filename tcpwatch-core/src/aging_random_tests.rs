//! Randomised: the detectors reading the stored records with the table's aging (and the rules'
//! shortcuts that read stored fields before the aged copy) find exactly what they find on
//! copies with the times rewritten, over random sockets (states, queues, RTO chains, backoff,
//! probes, send / receive ages, data counts), random sweep times and events, with the clock
//! injected.
use std::collections::HashMap;

use tcpwatch_common::delta::{SEEN_TAG, SockSeen};
use tcpwatch_common::{AF_INET, SockRecord, StateEvent, record_flags, tcp_state};

use crate::aging::Aging;
use crate::config::DetectorConfig;
use crate::detect::{DetectContext, Detectors};
use crate::model::{ConnRecord, FindingChange, MonoNs, NS_PER_MS, NS_PER_SEC};
use crate::table::{ConnTable, KernelClock, TableConfig};

const CLOCK: KernelClock = KernelClock { hz: 1000 };

use crate::test_rng::Rng;

fn random_record(rng: &mut Rng, netns: u64, skaddr: u64) -> SockRecord {
    let states = [
        tcp_state::ESTABLISHED,
        tcp_state::ESTABLISHED,
        tcp_state::ESTABLISHED,
        tcp_state::CLOSE_WAIT,
        tcp_state::FIN_WAIT1,
        tcp_state::LAST_ACK,
    ];
    let send_ms = rng.below_u32(200_000);
    let recv_ms = match rng.below_u32(3) {
        0 => send_ms,
        1 => send_ms + rng.below_u32(100_000),
        _ => rng.below_u32(200_000),
    };
    let unacked = if rng.below_u32(3) == 0 {
        rng.below_u32(9000)
    } else {
        0
    };
    SockRecord {
        skaddr,
        cookie: skaddr + 1,
        netns_cookie: netns,
        inode: if rng.below_u32(6) == 0 {
            0
        } else {
            skaddr + 1000
        },
        family: AF_INET,
        sport: u16::try_from(40_000 + skaddr).unwrap(),
        dport: [5432, 8080, 443][rng.below_u32(3) as usize],
        state: states[rng.below_u32(states.len() as u64) as usize],
        flags: record_flags::FULL_SOCK | record_flags::TRACKED,
        state_since_ns: 1,
        first_seen_ns: 1,
        write_seq: 500 + unacked,
        snd_una: 500,
        snd_nxt: 500 + unacked,
        snd_wnd: if rng.below_u32(8) == 0 { 0 } else { 65535 },
        rto_jiffies: 200 + rng.below_u32(5000),
        lsnd_age_jiffies: send_ms,
        rcv_tstamp_age_jiffies: send_ms + rng.below_u32(3) * rng.below_u32(30_000),
        lrcv_age_jiffies: recv_ms,
        data_segs_in: rng.below_u32(3),
        data_segs_out: rng.below_u32(3),
        retransmits: u8::try_from(rng.below_u32(4) * rng.below_u32(8)).unwrap(),
        backoff: u8::try_from(rng.below_u32(3) * rng.below_u32(10)).unwrap(),
        probes_out: u8::try_from(rng.below_u32(4) / 3).unwrap(),
        ..SockRecord::default()
    }
}

fn ms(v: u64) -> MonoNs {
    v * NS_PER_MS
}

#[test]
fn detectors_with_aging_equal_rewritten_times_over_random_sockets() {
    let netns_info = HashMap::new();
    let port_resets = HashMap::new();
    let none = Aging::default();
    for seed in 1..=10u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut t = ConnTable::new(TableConfig::default());
        let mut with_aging = Detectors::new(DetectorConfig::default());
        let mut rewritten = Detectors::new(DetectorConfig::default());
        let mut now = ms(50_000);
        let mut recs: Vec<SockRecord> = Vec::new();
        for ns in [7u64, 8] {
            for i in 0..60u64 {
                recs.push(random_record(&mut rng, ns, ns * 1000 + i * 8));
            }
        }
        let mut found = 0;
        for round in 0..60 {
            now += NS_PER_SEC
                + u64::from(rng.below_u32(400)) * NS_PER_MS
                + u64::from(rng.below_u32(999));
            for ns in [7u64, 8] {
                let mine: Vec<&SockRecord> = recs.iter().filter(|r| r.netns_cookie == ns).collect();
                let started = now - u64::from(rng.below_u32(20)) * NS_PER_MS - 3;
                if round == 0 || rng.below_u32(10) == 0 {
                    // A full sweep (some fields may have changed).
                    let full: Vec<SockRecord> = mine.iter().map(|r| **r).collect();
                    t.apply_sweep(ns, &full, &[], started, CLOCK, now, None);
                } else {
                    let seen: Vec<SockSeen> = mine
                        .iter()
                        .map(|r| SockSeen {
                            tagged_skaddr: r.skaddr | SEEN_TAG,
                            cookie: r.cookie,
                        })
                        .collect();
                    t.apply_sweep(ns, &[], &seen, started, CLOCK, now, None);
                }
            }
            if rng.below_u32(4) == 0 {
                // An event sets one record apart from its namespace (its own times hold).
                let r = &recs[rng.below_u32(recs.len() as u64) as usize];
                let ev = StateEvent {
                    ts_ns: now - u64::from(rng.below_u32(50)) * NS_PER_MS,
                    skaddr: r.skaddr,
                    cookie: r.cookie,
                    netns_cookie: r.netns_cookie,
                    family: AF_INET,
                    sport: r.sport,
                    dport: r.dport,
                    newstate: r.state,
                    ..StateEvent::default()
                };
                t.apply_event(&ev, false);
            }
            if rng.below_u32(15) == 0 {
                // Some socket changes (its next full sweep tells).
                let i = rng.below_u32(recs.len() as u64) as usize;
                let (ns, skaddr) = (recs[i].netns_cookie, recs[i].skaddr);
                recs[i] = random_record(&mut rng, ns, skaddr);
            }
            let at = now + u64::from(rng.below_u32(900)) * NS_PER_MS;
            let ctx = DetectContext {
                netns: &netns_info,
                port_resets: &port_resets,
                aging: t.aging(),
            };
            let a: Vec<FindingChange> = with_aging.evaluate(at, t.iter(), &ctx);
            let copies: Vec<ConnRecord> = t.iter().map(|c| t.aging().effective(c)).collect();
            let ctx = DetectContext {
                aging: &none,
                ..ctx
            };
            let b = rewritten.evaluate(at, &copies, &ctx);
            assert_eq!(a, b, "seed {seed} round {round}");
            found += a.len();
        }
        assert_eq!(
            with_aging.open().collect::<Vec<_>>(),
            rewritten.open().collect::<Vec<_>>()
        );
        assert!(found > 0, "seed {seed}: the random sockets open findings");
    }
}
