//! Unit tests of `table_seen`: change-only sweeps keep unchanged records, age them, and
//! still remove exactly what the sweep no longer lists.
use tcpwatch_common::delta::{SEEN_TAG, SockSeen};
use tcpwatch_common::{AF_INET, SockRecord, StateEvent, record_flags, tcp_state};

use crate::model::{ConnKey, NS_PER_MS, TcpState};
use crate::table::{ConnTable, KernelClock, TableConfig};

const CLOCK: KernelClock = KernelClock { hz: 1000 };
const NS: u64 = 7;

fn full(skaddr: u64, cookie: u64) -> SockRecord {
    SockRecord {
        skaddr,
        cookie,
        netns_cookie: NS,
        family: AF_INET,
        sport: 8080,
        dport: 40000,
        state: tcp_state::ESTABLISHED,
        flags: record_flags::FULL_SOCK | record_flags::TRACKED,
        state_since_ns: 100,
        first_seen_ns: 50,
        write_seq: 500,
        snd_una: 200,
        lsnd_age_jiffies: 10,
        rcv_tstamp_age_jiffies: 20,
        lrcv_age_jiffies: 30,
        ..SockRecord::default()
    }
}

fn seen(skaddr: u64, cookie: u64) -> SockSeen {
    SockSeen {
        tagged_skaddr: skaddr | SEEN_TAG,
        cookie,
    }
}

fn key(skaddr: u64) -> ConnKey {
    ConnKey {
        skaddr,
        netns_cookie: NS,
    }
}

#[test]
fn unchanged_records_are_kept_and_aged_and_unlisted_ones_removed() {
    let mut t = ConnTable::new(TableConfig::default());
    let t0 = 10_000 * NS_PER_MS;
    let out = t.apply_sweep(
        NS,
        &[full(0x100, 1), full(0x200, 2)],
        &[],
        t0,
        CLOCK,
        t0,
        None,
    );
    assert_eq!(out.added, 2);
    // Next sweep: 0x100 unchanged, 0x200 not listed at all (closed, CLOSE event lost).
    let t1 = t0 + 1_500 * NS_PER_MS;
    let mut d = Vec::new();
    let out = t.apply_sweep(NS, &[], &[seen(0x100, 1)], t1, CLOCK, t1, Some(&mut d));
    assert_eq!((out.unchanged, out.unknown, out.removed), (1, 0, 1));
    assert_eq!(t.len(), 1);
    assert!(t.get(&key(0x200)).is_none(), "not listed: gone (no ghost)");
    let r = t.get(&key(0x100)).unwrap();
    assert_eq!(r.queues.send_q, 300, "kept as the last full record said");
    assert_eq!(r.state, TcpState::Established);
    assert_eq!(r.last_seen, t1);
    assert_eq!(r.tcp.last_send_age_ms, 10 + 1500);
    assert_eq!(r.tcp.last_ack_age_ms, 20 + 1500);
    assert_eq!(r.tcp.last_recv_age_ms, 30 + 1500);
    // Only the removal is a visible change.
    assert_eq!(d.len(), 1, "{d:?}");
    // Many refreshes at sub-ms offsets do not drift: ages follow the clock exactly.
    let mut now = t1;
    for _ in 0..1000 {
        now += 999_999;
        t.apply_sweep(NS, &[], &[seen(0x100, 1)], now, CLOCK, now, None);
    }
    let r = t.get(&key(0x100)).unwrap();
    assert_eq!(
        r.tcp.last_send_age_ms,
        10 + (now / NS_PER_MS - t0 / NS_PER_MS)
    );
    let st = t.stats();
    assert_eq!(
        (
            st.sweep_records_full,
            st.sweep_records_unchanged,
            st.sweep_records_unknown
        ),
        (2, 1001, 0)
    );
}

#[test]
fn unchanged_record_of_a_socket_the_table_lacks_is_unknown() {
    let mut t = ConnTable::new(TableConfig::default());
    let out = t.apply_sweep(NS, &[full(0x100, 1)], &[], 10, CLOCK, 10, None);
    assert_eq!(out.added, 1);
    // Unknown address, and a known address with another socket cookie.
    let out = t.apply_sweep(
        NS,
        &[],
        &[seen(0x300, 3), seen(0x100, 9)],
        20,
        CLOCK,
        20,
        None,
    );
    assert_eq!((out.unchanged, out.unknown), (0, 2));
    assert_eq!(out.added, 0, "nothing is made up from a 16-byte record");
    assert!(t.get(&key(0x300)).is_none());
}

#[test]
fn unchanged_record_of_a_socket_closed_since_the_sweep_began_is_not_unknown() {
    let mut t = ConnTable::new(TableConfig::default());
    t.apply_sweep(NS, &[full(0x100, 1)], &[], 10, CLOCK, 10, None);
    let close = StateEvent {
        ts_ns: 25,
        skaddr: 0x100,
        netns_cookie: NS,
        cookie: 1,
        newstate: tcp_state::CLOSE,
        ..StateEvent::default()
    };
    t.apply_event(&close, false);
    let out = t.apply_sweep(NS, &[], &[seen(0x100, 1)], 20, CLOCK, 30, None);
    assert_eq!((out.unchanged, out.unknown, out.added), (0, 0, 0));
    assert!(t.is_empty(), "the tombstone wins");
}

#[test]
fn full_record_of_a_new_socket_at_a_just_closed_address_is_added() {
    // The sweep began at 20; at 25 the socket of cookie 1 closed and a new one (cookie 2)
    // took its address, whose events were lost; the sweep listed the new one. It must be
    // added now: the kernel sends it as "unchanged" from the next sweep on.
    let mut t = ConnTable::new(TableConfig::default());
    t.apply_sweep(NS, &[full(0x100, 1)], &[], 10, CLOCK, 10, None);
    let close = StateEvent {
        ts_ns: 25,
        skaddr: 0x100,
        netns_cookie: NS,
        cookie: 1,
        newstate: tcp_state::CLOSE,
        ..StateEvent::default()
    };
    t.apply_event(&close, false);
    let out = t.apply_sweep(NS, &[full(0x100, 2)], &[], 20, CLOCK, 30, None);
    assert_eq!(out.added, 1);
    assert_eq!(t.get(&key(0x100)).unwrap().cookie, 2);
    let out = t.apply_sweep(NS, &[], &[seen(0x100, 2)], 40, CLOCK, 50, None);
    assert_eq!((out.unchanged, out.unknown), (1, 0));
    // The closed socket itself (same cookie) is not resurrected.
    t.apply_event(
        &StateEvent {
            cookie: 2,
            ts_ns: 55,
            ..close
        },
        false,
    );
    let out = t.apply_sweep(NS, &[full(0x100, 2)], &[], 52, CLOCK, 60, None);
    assert_eq!(out.added, 0);
    assert!(t.is_empty());
}
