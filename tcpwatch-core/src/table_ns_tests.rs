//! Unit tests of `table_ns`: the per-namespace index stays exact, and a sweep that skips the
//! search for unlisted records (every record of the namespace was listed) leaves the table
//! exactly as the full search does, over random events, sweeps (full and unchanged records,
//! duplicates, sockets newer than the sweep), evictions and vanished namespaces.
use std::collections::{BTreeMap, HashMap, HashSet};

use tcpwatch_common::delta::{SEEN_TAG, SockSeen};
use tcpwatch_common::{AF_INET, SockRecord, StateEvent, tcp_state};

use crate::model::{ConnKey, MonoNs};
use crate::table::{ConnTable, KernelClock, TableConfig};

const CLOCK: KernelClock = KernelClock { hz: 1000 };

use crate::test_rng::Rng;

/// `table_tests`' record with its own cookie, namespace inode and remote port.
fn record(skaddr: u64, cookie: u64, netns: u64, state: u8) -> SockRecord {
    SockRecord {
        cookie,
        netns_ino: u32::try_from(netns).unwrap() + 4_026_531_000,
        dport: u16::try_from(40_000 + skaddr).unwrap(),
        ..crate::table::tests::rec(skaddr, netns, state)
    }
}

/// The table's observable content: every record's key, cookie, state and stored times, the
/// stats, and the namespaces it knows.
#[allow(clippy::type_complexity, reason = "a test's comparison key")]
fn content(
    t: &ConnTable,
) -> (
    BTreeMap<ConnKey, (u64, String, MonoNs)>,
    String,
    BTreeMap<u64, bool>,
) {
    let recs = t
        .iter()
        .map(|c| (c.key, (c.cookie, format!("{:?}", c.state), c.last_seen)))
        .collect();
    let ns = t
        .netns_cookies()
        .into_iter()
        .map(|(c, i)| (c, i.is_some()))
        .collect();
    (recs, format!("{:?}", t.stats()), ns)
}

/// Namespaces known the slow way: those of every record and tombstone.
fn slow_cookies(t: &ConnTable) -> BTreeMap<u64, bool> {
    let mut out: BTreeMap<u64, bool> = t
        .last_event
        .keys()
        .map(|k| (k.netns_cookie, false))
        .collect();
    for c in t.conns.values() {
        out.insert(c.key.netns_cookie, true);
    }
    out
}

/// A state change of `(ns, skaddr)` at `now`.
fn event(now: MonoNs, ns: u64, skaddr: u64, cookie: u64, newstate: u8) -> StateEvent {
    StateEvent {
        ts_ns: now,
        skaddr,
        cookie,
        netns_cookie: ns,
        family: AF_INET,
        newstate,
        ..StateEvent::default()
    }
}

#[test]
#[allow(clippy::too_many_lines, reason = "one random history, op by op")]
fn shortcut_sweeps_equal_full_search_over_random_histories() {
    for seed in 1..=300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let cfg = TableConfig {
            max_connections: 60,
            history_len: 4,
        };
        let mut fast = ConnTable::new(cfg);
        let mut slow = ConnTable::new(cfg);
        slow.ns_index.always_scan = true;
        // The sockets that exist: (netns, skaddr) -> cookie.
        let mut truth: HashMap<(u64, u64), u64> = HashMap::new();
        let mut next_cookie = 1u64;
        let mut now: MonoNs = 1_000_000;
        for _ in 0..200 {
            now += 1 + rng.below(3_000_000);
            let ns = 1 + rng.below(3);
            let skaddr = 1 + rng.below(24);
            match rng.below(10) {
                0..=2 => {
                    // A socket opens or changes state (maybe a new one at the address).
                    let cookie = match truth.get(&(ns, skaddr)) {
                        Some(c) if rng.below(4) != 0 => *c,
                        _ => {
                            next_cookie += 1;
                            next_cookie
                        }
                    };
                    truth.insert((ns, skaddr), cookie);
                    // One in five events is lost.
                    if rng.below(5) != 0 {
                        let ev = event(now, ns, skaddr, cookie, tcp_state::ESTABLISHED);
                        fast.apply_event(&ev, false);
                        slow.apply_event(&ev, false);
                    }
                }
                3 => {
                    let cookie = truth.remove(&(ns, skaddr)).unwrap_or(0);
                    if rng.below(5) != 0 {
                        let ev = event(now, ns, skaddr, cookie, tcp_state::CLOSE);
                        fast.apply_event(&ev, false);
                        slow.apply_event(&ev, false);
                    }
                }
                4..=7 => {
                    // A sweep of `ns` that began a little earlier (events may be newer).
                    let started = now.saturating_sub(rng.below(4_000_000));
                    let mut full = Vec::new();
                    let mut seen = Vec::new();
                    let mut listed: Vec<(u64, u64)> = truth
                        .iter()
                        .filter(|((n, _), _)| *n == ns)
                        .map(|((_, s), c)| (*s, *c))
                        .collect();
                    listed.sort_unstable();
                    if !listed.is_empty() && rng.below(8) == 0 {
                        // The same address listed twice (freed and reused during the walk).
                        let (s, _) =
                            listed[usize::try_from(rng.below(listed.len() as u64)).unwrap()];
                        next_cookie += 1;
                        listed.push((s, next_cookie));
                    }
                    for (s, c) in listed {
                        if rng.below(2) == 0 {
                            full.push(record(s, c, ns, tcp_state::ESTABLISHED));
                        } else {
                            seen.push(SockSeen {
                                tagged_skaddr: s | SEEN_TAG,
                                cookie: c,
                            });
                        }
                    }
                    let a = fast.apply_sweep(ns, &full, &seen, started, CLOCK, now, None);
                    let b = slow.apply_sweep(ns, &full, &seen, started, CLOCK, now, None);
                    assert_eq!(a, b, "seed {seed}");
                }
                8 => {
                    let flagged = |k: &ConnKey| k.skaddr.is_multiple_of(7);
                    assert_eq!(
                        fast.enforce_bound(flagged),
                        slow.enforce_bound(flagged),
                        "seed {seed}"
                    );
                }
                _ => {
                    if rng.below(6) == 0 {
                        // A namespace vanished.
                        let alive: HashSet<u64> = (1..=3).filter(|n| *n != ns).collect();
                        truth.retain(|(n, _), _| *n != ns);
                        fast.retain_netns(&alive, &mut Vec::new());
                        slow.retain_netns(&alive, &mut Vec::new());
                    }
                }
            }
            assert!(fast.ns_index_consistent(), "seed {seed}");
            assert!(slow.ns_index_consistent(), "seed {seed}");
            assert_eq!(content(&fast), content(&slow), "seed {seed}");
            assert_eq!(content(&fast).2, slow_cookies(&fast), "seed {seed}");
        }
    }
}
