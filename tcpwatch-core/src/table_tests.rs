//! Unit tests of `table`.
use super::*;
use crate::model::NS_PER_MS;
use tcpwatch_common::{AF_INET, SweepHeader, record_flags, tcp_state};

/// A tracked full socket of `netns` in `state` (also the base of `table_ns_tests`' records).
pub(crate) fn rec(skaddr: u64, netns: u64, state: u8) -> SockRecord {
    SockRecord {
        skaddr,
        netns_cookie: netns,
        netns_ino: 4_026_531_833,
        family: AF_INET,
        sport: 8080,
        dport: 40000,
        saddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        daddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        state,
        flags: record_flags::FULL_SOCK | record_flags::TRACKED | record_flags::HAS_SOCKET,
        state_since_ns: 100,
        first_seen_ns: 50,
        inode: 999,
        ..SockRecord::default()
    }
}

fn event(skaddr: u64, netns: u64, newstate: u8, ts: u64) -> StateEvent {
    StateEvent {
        ts_ns: ts,
        skaddr,
        netns_cookie: netns,
        family: AF_INET,
        sport: 1234,
        dport: 80,
        newstate,
        ..StateEvent::default()
    }
}

const CLOCK: KernelClock = KernelClock { hz: 1000 };

#[test]
fn sweep_record_converts_queues_and_ages() {
    let mut r = rec(1, 7, tcp_state::ESTABLISHED);
    r.write_seq = 5000;
    r.snd_nxt = 3000;
    r.snd_una = 1000;
    r.rcv_nxt = 10;
    r.copied_seq = 4;
    r.srtt_us8 = 800;
    r.rto_jiffies = 200;
    r.lrcv_age_jiffies = 1500;
    let c = record_from_sweep(&r, CLOCK, 1_000);
    assert_eq!(c.queues.send_q, 4000);
    assert_eq!(c.queues.unacked, 2000);
    assert_eq!(c.queues.unsent, 2000);
    assert_eq!(c.queues.recv_q, 6);
    assert_eq!(c.tcp.srtt_us, 100);
    assert_eq!(c.tcp.rto_ms, 200);
    assert_eq!(c.tcp.last_recv_age_ms, 1500);
    assert!(c.state_since_exact);
    assert_eq!(c.state_since, 100);
    assert_eq!(c.local.to_string(), "127.0.0.1:8080");
}

#[test]
fn kernel_counters_cover_retransmits_before_tcpwatch() {
    let mut r = rec(1, 7, tcp_state::ESTABLISHED);
    r.retransmits = 4;
    r.total_retrans = 9;
    r.chain = 2;
    r.retrans = 2;
    let c = record_from_sweep(&r, CLOCK, 0);
    assert_eq!((c.retrans.chain, c.retrans.total), (4, 9));
}

#[test]
fn sequence_wraparound_is_handled() {
    let mut r = rec(1, 7, tcp_state::ESTABLISHED);
    r.write_seq = 10;
    r.snd_una = u32::MAX - 9;
    assert_eq!(record_from_sweep(&r, CLOCK, 0).queues.send_q, 20);
}

#[test]
fn listener_reports_accept_queue_not_send_q() {
    let mut r = rec(1, 7, tcp_state::LISTEN);
    r.ack_backlog = 5;
    r.max_ack_backlog = 4;
    r.write_seq = 100;
    let c = record_from_sweep(&r, CLOCK, 0);
    assert_eq!(
        (
            c.queues.accept_queue,
            c.queues.accept_limit,
            c.queues.send_q
        ),
        (5, 4, 0)
    );
}

#[test]
fn untracked_socket_age_is_a_lower_bound() {
    let mut r = rec(1, 7, tcp_state::CLOSE_WAIT);
    r.flags = record_flags::FULL_SOCK;
    r.first_seen_ns = 0;
    r.inode = 0;
    let c = record_from_sweep(&r, CLOCK, 5_000);
    assert!(!c.state_since_exact);
    assert_eq!(c.state_since, 5_000);
    assert!(c.is_unaccepted());
}

#[test]
fn events_insert_update_and_close() {
    let mut t = ConnTable::new(TableConfig::default());
    t.apply_event(&event(1, 7, tcp_state::SYN_SENT, 10), true);
    t.apply_event(&event(1, 7, tcp_state::ESTABLISHED, 20), true);
    let k = ConnKey {
        skaddr: 1,
        netns_cookie: 7,
    };
    assert_eq!(
        t.get(&k).map(|c| (c.state, c.state_since)),
        Some((TcpState::Established, 20))
    );
    assert_eq!(
        t.apply_event(&event(1, 7, tcp_state::CLOSE, 30), true),
        Some(Delta::Remove { key: k })
    );
    assert!(t.is_empty());
    assert_eq!(t.stats().removed_closed, 1);
}

#[test]
fn sweep_removes_ghosts_and_adds_missing() {
    let mut t = ConnTable::new(TableConfig::default());
    let mut d = Vec::new();
    // Socket 1 was created by an event before the sweep; its CLOSE event was lost.
    t.apply_event(&event(1, 7, tcp_state::ESTABLISHED, 10), true);
    // Socket 3 lives in another namespace: a sweep of ns 7 must not touch it.
    t.apply_event(&event(3, 8, tcp_state::ESTABLISHED, 10), true);
    let out = t.apply_sweep(
        7,
        &[rec(2, 7, tcp_state::LISTEN)],
        &[],
        20,
        CLOCK,
        25,
        Some(&mut d),
    );
    assert_eq!(
        out,
        SweepOutcome {
            added: 1,
            updated: 0,
            removed: 1,
            ..SweepOutcome::default()
        }
    );
    assert!(
        t.get(&ConnKey {
            skaddr: 1,
            netns_cookie: 7
        })
        .is_none()
    );
    assert!(
        t.get(&ConnKey {
            skaddr: 2,
            netns_cookie: 7
        })
        .is_some()
    );
    assert!(
        t.get(&ConnKey {
            skaddr: 3,
            netns_cookie: 8
        })
        .is_some()
    );
    assert_eq!(t.stats().removed_by_sweep, 1);
}

#[test]
fn sweep_keeps_sockets_born_after_it_started() {
    let mut t = ConnTable::new(TableConfig::default());
    let mut d = Vec::new();
    t.apply_event(&event(1, 7, tcp_state::SYN_SENT, 30), true);
    let out = t.apply_sweep(7, &[], &[], 20, CLOCK, 35, Some(&mut d));
    assert_eq!(out.removed, 0);
    assert_eq!(t.len(), 1);
}

#[test]
fn sweep_does_not_resurrect_a_socket_closed_after_it_read_it() {
    let mut t = ConnTable::new(TableConfig::default());
    let mut d = Vec::new();
    t.apply_event(&event(1, 7, tcp_state::ESTABLISHED, 10), true);
    t.apply_event(&event(1, 7, tcp_state::CLOSE, 30), true);
    // The sweep started at 20, before the close at 30, and still lists the socket.
    let out = t.apply_sweep(
        7,
        &[rec(1, 7, tcp_state::ESTABLISHED)],
        &[],
        20,
        CLOCK,
        35,
        Some(&mut d),
    );
    assert!(t.is_empty(), "closed socket resurrected as a ghost");
    assert_eq!(out.added, 0);
    // The tombstone is dropped by the next sweep that started after the close.
    t.apply_sweep(7, &[], &[], 40, CLOCK, 45, Some(&mut d));
    assert!(t.last_event.is_empty());
}

#[test]
fn event_newer_than_sweep_keeps_its_state() {
    let mut t = ConnTable::new(TableConfig::default());
    let mut d = Vec::new();
    t.apply_event(&event(1, 7, tcp_state::CLOSE_WAIT, 30), true);
    t.apply_sweep(
        7,
        &[rec(1, 7, tcp_state::ESTABLISHED)],
        &[],
        20,
        CLOCK,
        35,
        Some(&mut d),
    );
    let c = t
        .get(&ConnKey {
            skaddr: 1,
            netns_cookie: 7,
        })
        .unwrap();
    assert_eq!((c.state, c.state_since), (TcpState::CloseWait, 30));
}

#[test]
fn eviction_is_bounded_counted_and_spares_protected() {
    let mut t = ConnTable::new(TableConfig {
        max_connections: 2,
        history_len: 4,
    });
    let mut d = Vec::new();
    let mut tw = rec(4, 7, tcp_state::TIME_WAIT);
    tw.flags = 0;
    let recs = [rec(1, 7, 1), rec(2, 7, 1), rec(3, 7, 1), tw];
    t.apply_sweep(7, &recs, &[], 0, CLOCK, 10, Some(&mut d));
    assert_eq!(t.len(), 4);
    let protected = ConnKey {
        skaddr: 1,
        netns_cookie: 7,
    };
    let evicted = t.enforce_bound(|k| *k == protected);
    assert_eq!(evicted.len(), 2);
    assert!(
        evicted.contains(&ConnKey {
            skaddr: 4,
            netns_cookie: 7
        }),
        "minisocket first"
    );
    assert!(t.get(&protected).is_some());
    assert_eq!(t.len(), 2);
    assert_eq!(t.stats().evicted, 2);
}

#[test]
fn history_is_bounded_and_only_for_interesting_connections() {
    let mut t = ConnTable::new(TableConfig {
        max_connections: 10,
        history_len: 3,
    });
    let mut d = Vec::new();
    let quiet = rec(1, 7, 1);
    let mut busy = rec(2, 7, 1);
    for i in 0..10_u32 {
        busy.write_seq = 100 * (i + 1);
        t.apply_sweep(
            7,
            &[quiet, busy],
            &[],
            u64::from(i),
            CLOCK,
            u64::from(i) + 1,
            Some(&mut d),
        );
    }
    assert!(
        t.get(&ConnKey {
            skaddr: 1,
            netns_cookie: 7
        })
        .unwrap()
        .history
        .is_empty()
    );
    let h = &t
        .get(&ConnKey {
            skaddr: 2,
            netns_cookie: 7,
        })
        .unwrap()
        .history;
    assert_eq!(
        h.iter().map(|s| s.send_q).collect::<Vec<_>>(),
        vec![800, 900, 1000]
    );
}

#[test]
fn owners_attach_by_inode() {
    let mut t = ConnTable::new(TableConfig::default());
    let mut d = Vec::new();
    let mut orphan = rec(2, 7, tcp_state::CLOSE_WAIT);
    orphan.inode = 0;
    t.apply_sweep(7, &[rec(1, 7, 1), orphan], &[], 0, CLOCK, 1, Some(&mut d));
    let missing = t.attach_owners(|ino| {
        (ino == 999).then(|| {
            Owner {
                pid: 42,
                comm: "app".into(),
                ..Owner::default()
            }
            .into()
        })
    });
    assert!(missing.is_empty());
    assert_eq!(
        t.get(&ConnKey {
            skaddr: 1,
            netns_cookie: 7
        })
        .unwrap()
        .owner
        .as_ref()
        .unwrap()
        .pid,
        42
    );
    assert!(
        t.get(&ConnKey {
            skaddr: 2,
            netns_cookie: 7
        })
        .unwrap()
        .owner
        .is_none()
    );
}

#[test]
fn hz_calibration_picks_the_kernel_setting() {
    let a = SweepHeader {
        ktime_ns: 0,
        jiffies: 1000,
        ..SweepHeader::default()
    };
    let b = SweepHeader {
        ktime_ns: 200 * NS_PER_MS,
        jiffies: 1051,
        ..SweepHeader::default()
    };
    assert_eq!(
        KernelClock::calibrate(&a, &b),
        Some(KernelClock { hz: 250 })
    );
    let c = SweepHeader {
        ktime_ns: 10 * NS_PER_MS,
        jiffies: 1003,
        ..SweepHeader::default()
    };
    assert_eq!(KernelClock::calibrate(&a, &c), None);
}

#[test]
fn only_changes_a_viewer_sees_become_deltas() {
    let mut t = ConnTable::new(TableConfig::default());
    let mut d = Vec::new();
    let mut r = rec(1, 7, tcp_state::ESTABLISHED);
    t.apply_sweep(7, &[r], &[], 0, CLOCK, 1, Some(&mut d));
    assert_eq!(d.len(), 1, "new record");
    d.clear();
    // Same socket, only its ages moved: nothing to send.
    r.lsnd_age_jiffies += 250;
    t.apply_sweep(7, &[r], &[], 2, CLOCK, 3, Some(&mut d));
    assert!(d.is_empty(), "{d:?}");
    // Send-Q moved: one upsert.
    r.write_seq += 100;
    t.apply_sweep(7, &[r], &[], 4, CLOCK, 5, Some(&mut d));
    assert_eq!(d.len(), 1);
    // Without a sink nothing is built, and the table still updates.
    r.write_seq += 100;
    t.apply_sweep(7, &[r], &[], 6, CLOCK, 7, None);
    let key = ConnKey {
        skaddr: 1,
        netns_cookie: 7,
    };
    assert_eq!(t.get(&key).unwrap().queues.send_q, 200);
    assert_eq!(
        t.apply_event(&event(1, 7, tcp_state::CLOSE_WAIT, 8), false),
        None
    );
}

const S: u64 = 1_000_000_000;

/// A `CLOSE_WAIT` record whose change was missed (restart): the entry's state is not known to
/// the kernel, only that it came after `after`.
fn missed_close_wait(after: u64, last_ack_ms: u32) -> SockRecord {
    let mut r = rec(1, 7, tcp_state::CLOSE_WAIT);
    r.state_since_ns = 0;
    r.state_after_ns = after;
    r.first_seen_ns = 10 * S;
    r.rcv_tstamp_age_jiffies = last_ack_ms; // hz 1000: jiffies are ms
    r
}

#[test]
fn missed_close_wait_takes_its_age_from_the_fin_not_the_whole_life() {
    // Tracked since 10 s, last sweep saw ESTABLISHED at 40 s, the FIN came 7 s before 60 s.
    let c = record_from_sweep(&missed_close_wait(40 * S, 7000), CLOCK, 60 * S);
    assert!(!c.state_since_exact, "not seen by a tracepoint");
    assert_eq!(
        c.state_since,
        53 * S,
        "age = lastack, a lower bound (was first_seen)"
    );
    assert_eq!(c.state_age(60 * S), 7 * S);
}

#[test]
fn missed_change_age_never_exceeds_the_last_sweep_that_saw_the_old_state() {
    // lastack older than the last sweep that saw ESTABLISHED (an ACK-less FIN cannot be): the
    // upper bound wins.
    let c = record_from_sweep(&missed_close_wait(50 * S, 30_000), CLOCK, 60 * S);
    assert_eq!(c.state_since, 50 * S);
    // Another state missed: nothing tells its age but the bound; a lower bound is 0.
    let mut r = missed_close_wait(50 * S, 30_000);
    r.state = tcp_state::FIN_WAIT1;
    let c = record_from_sweep(&r, CLOCK, 60 * S);
    assert_eq!((c.state_since, c.state_since_exact), (60 * S, false));
    // The next sweeps keep the earliest lower bound: the age grows from the first sight.
    let mut t = ConnTable::new(TableConfig::default());
    t.apply_sweep(7, &[r], &[], 59 * S, CLOCK, 60 * S, None);
    t.apply_sweep(7, &[r], &[], 64 * S, CLOCK, 65 * S, None);
    let c = t.iter().next().unwrap();
    assert_eq!(c.state_age(65 * S), 5 * S);
}

#[test]
fn close_wait_seen_first_by_the_sweep_uses_the_better_lower_bound() {
    // Predates tcpwatch (no missed change): first_seen and lastack are both lower bounds.
    let mut r = missed_close_wait(0, 45_000);
    r.first_seen_ns = 55 * S;
    let c = record_from_sweep(&r, CLOCK, 60 * S);
    assert_eq!((c.state_since, c.state_since_exact), (15 * S, false));
    r.rcv_tstamp_age_jiffies = 1000;
    assert_eq!(record_from_sweep(&r, CLOCK, 60 * S).state_since, 55 * S);
}

fn owned(mut r: SockRecord, cookie: u64) -> SockRecord {
    r.cookie = cookie;
    r
}

#[test]
fn new_socket_at_a_reused_address_replaces_the_record() {
    let mut t = ConnTable::new(TableConfig::default());
    let mut old = owned(rec(1, 7, tcp_state::ESTABLISHED), 11);
    old.pid = 4242;
    old.comm = *b"oldproc\0\0\0\0\0\0\0\0\0";
    old.retrans = 9;
    old.resets_sent = 3;
    old.write_seq = 5000;
    t.apply_sweep(7, &[old], &[], 90, CLOCK, 1000, None);
    let key = t.iter().next().unwrap().key;
    // The kernel entry was reset for the new socket: its own counters, first_seen, no owner.
    let mut new = owned(rec(1, 7, tcp_state::ESTABLISHED), 12);
    new.state_since_ns = 0;
    new.first_seen_ns = 2000;
    new.inode = 555;
    let mut deltas = Vec::new();
    t.apply_sweep(7, &[new], &[], 1900, CLOCK, 2000, Some(&mut deltas));
    let c = t.get(&key).unwrap();
    assert_eq!(c.cookie, 12);
    assert_eq!(c.first_seen, 2000, "not the old socket's first_seen");
    assert_eq!((c.state_since, c.state_since_exact), (2000, false));
    assert_eq!(c.creator_pid, None, "no inherited owner");
    assert_eq!((c.retrans.total, c.resets.sent), (0, 0));
    assert!(c.history.is_empty(), "no inherited history");
    assert_eq!(t.stats().replaced, 1);
    assert_eq!(deltas.len(), 1);
}

#[test]
fn new_socket_event_at_a_reused_address_replaces_the_record() {
    let mut t = ConnTable::new(TableConfig::default());
    let mut old = owned(rec(1, 7, tcp_state::ESTABLISHED), 11);
    old.retrans = 9;
    old.pid = 4242;
    t.apply_sweep(7, &[old], &[], 90, CLOCK, 1000, None);
    // Its CLOSE was lost; a new socket at the address connects.
    let mut ev = event(1, 7, tcp_state::SYN_SENT, 3000);
    ev.cookie = 12;
    t.apply_event(&ev, false);
    let c = t.iter().next().unwrap();
    assert_eq!((c.cookie, c.first_seen, c.retrans.total), (12, 3000, 0));
    assert_eq!(c.creator_pid, None);
    // A sweep that started before the event and still saw the old socket changes nothing.
    t.apply_sweep(7, &[old], &[], 2500, CLOCK, 3500, None);
    let c = t.iter().next().unwrap();
    assert_eq!((c.cookie, c.state), (12, TcpState::SynSent));
    // Unknown cookies (raw_tp events) are not a different socket.
    let mut ev = event(1, 7, tcp_state::ESTABLISHED, 4000);
    ev.cookie = 0;
    t.apply_event(&ev, false);
    assert_eq!(t.iter().next().unwrap().first_seen, 3000);
    assert_eq!(t.stats().replaced, 1);
}

#[test]
fn gone_namespace_takes_its_tombstones_along() {
    let mut t = ConnTable::new(TableConfig::default());
    t.apply_sweep(
        7,
        &[rec(1, 7, tcp_state::ESTABLISHED)],
        &[],
        90,
        CLOCK,
        100,
        None,
    );
    t.apply_event(&event(2, 9, tcp_state::ESTABLISHED, 100), false);
    t.apply_event(&event(3, 9, tcp_state::CLOSE, 110), false);
    assert!(t.netns_cookies().contains_key(&9));
    let mut deltas = Vec::new();
    t.retain_netns(&[7].into_iter().collect(), &mut deltas);
    assert_eq!(t.len(), 1);
    assert_eq!(t.stats().removed_netns_gone, 1);
    assert!(!t.netns_cookies().contains_key(&9), "tombstone cleared");
}
