use super::*;
use crate::model::{NetnsId, NetnsInfo};

fn ns(cookie: u64, ehash: Option<i64>) -> NetnsInfo {
    let mut i = NetnsInfo::with_defaults(NetnsId {
        cookie,
        inode: 4_026_531_840 + u32::try_from(cookie).unwrap_or(0),
    });
    i.tcp_ehash_entries = ehash;
    i
}

#[test]
fn counts_only_namespaces_that_say_they_share() {
    let infos = [
        ns(1, Some(262_144)), // the host: owns the hash
        ns(2, Some(-262_144)),
        ns(3, Some(-262_144)),
        ns(4, Some(4_096)), // created after tcp_child_ehash_entries was set
        ns(5, None),        // a kernel before 6.1: not known
    ];
    assert_eq!(sharing(&infos), 2);
    assert_eq!(sharing(&[]), 0);
}

#[test]
fn advises_from_a_million_visits_per_sweep() {
    assert_eq!(advice(0, 10_000_000), None);
    assert_eq!(advice(9, 111_111), None, "999 999 visits");
    let a = advice(10, 100_000).unwrap();
    assert!(a.contains("10 network namespaces"), "{a}");
    assert!(a.contains("100000 sockets"), "{a}");
    assert!(a.contains("net.ipv4.tcp_child_ehash_entries"), "{a}");
    assert!(advice(usize::MAX, usize::MAX).is_some(), "no overflow");
}
