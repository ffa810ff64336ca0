//! Unit tests of `netns_gone`.
use super::*;
use crate::table::{KernelClock, TableConfig};
use tcpwatch_common::{SockRecord, record_flags, tcp_state};

fn rec(skaddr: u64, netns: u64, ino: u32, state: u8) -> SockRecord {
    SockRecord {
        skaddr,
        netns_cookie: netns,
        netns_ino: ino,
        state,
        flags: record_flags::FULL_SOCK,
        ..SockRecord::default()
    }
}

fn table() -> ConnTable {
    let mut t = ConnTable::new(TableConfig::default());
    let clock = KernelClock::default();
    t.apply_sweep(
        7,
        &[rec(1, 7, 70, tcp_state::LISTEN)],
        &[],
        1,
        clock,
        2,
        None,
    );
    let gone = [
        rec(2, 9, 90, tcp_state::TIME_WAIT),
        rec(3, 9, 90, tcp_state::ESTABLISHED),
        rec(4, 9, 90, tcp_state::FIN_WAIT1),
    ];
    t.apply_sweep(9, &gone, &[], 1, clock, 2, None);
    t
}

fn set(v: &[u64]) -> HashSet<u64> {
    v.iter().copied().collect()
}

#[test]
fn records_of_a_deleted_namespace_leave_at_the_second_missed_sweep() {
    let mut t = table();
    let mut p = NetnsPresence::default();
    let mut d = Vec::new();
    assert_eq!(p.apply(&mut t, &set(&[7, 9]), &HashSet::new(), &mut d), 0);
    assert_eq!(p.apply(&mut t, &set(&[7]), &HashSet::new(), &mut d), 0);
    assert_eq!(t.len(), 4, "one miss is not enough");
    assert_eq!(p.apply(&mut t, &set(&[7]), &HashSet::new(), &mut d), 3);
    assert_eq!(t.len(), 1);
    assert_eq!(t.stats().removed_netns_gone, 3);
    assert_eq!(d.len(), 3);
}

#[test]
fn a_namespace_back_after_one_miss_keeps_its_records() {
    let mut t = table();
    let mut p = NetnsPresence::default();
    let mut d = Vec::new();
    p.apply(&mut t, &set(&[7]), &HashSet::new(), &mut d);
    p.apply(&mut t, &set(&[7, 9]), &HashSet::new(), &mut d);
    p.apply(&mut t, &set(&[7]), &HashSet::new(), &mut d);
    assert_eq!(t.len(), 4, "misses must be consecutive");
}

#[test]
fn unreadable_namespaces_and_empty_sweeps_remove_nothing() {
    let mut t = table();
    let mut p = NetnsPresence::default();
    let mut d = Vec::new();
    let unreadable: HashSet<u32> = [90].into_iter().collect();
    for _ in 0..3 {
        p.apply(&mut t, &set(&[7]), &unreadable, &mut d);
        p.apply(&mut t, &HashSet::new(), &HashSet::new(), &mut d);
    }
    assert_eq!(t.len(), 4);
    assert_eq!(t.stats().removed_netns_gone, 0);
}
