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
fn the_shared_size_is_the_host_s() {
    let infos = [
        ns(1, Some(262_144)),
        ns(2, Some(-262_144)),
        ns(3, Some(4_096)),
        ns(4, None),
    ];
    assert_eq!(shared_buckets(&infos), 262_144);
    assert_eq!(shared_buckets(&infos[..1]), 0, "nobody shares");
    assert_eq!(shared_buckets(&[]), 0);
}

#[test]
fn the_walk_counts_buckets_and_sockets_of_every_sharing_namespace() {
    assert_eq!(walk_ns(0, 262_144, 100_000), 0);
    assert_eq!(
        walk_ns(2, 1_000, 10),
        2 * (1_000 * BUCKET_NS + 10 * SOCKET_NS)
    );
    assert_eq!(
        walk_ns(usize::MAX, u64::MAX, usize::MAX),
        u64::MAX,
        "no overflow"
    );
}

#[test]
fn advises_from_the_estimated_walk_time() {
    // 262 144 buckets: about 2.1 ms per namespace without a socket; 23 such namespaces stay
    // below 50 ms per sweep, 24 reach it.
    assert_eq!(advice(23, 262_144, 0), None);
    let a = advice(24, 262_144, 0).unwrap();
    assert!(a.contains("24 network namespaces"), "{a}");
    assert!(a.contains("262144 buckets"), "{a}");
    assert!(a.contains("about 50 ms"), "{a}");
    assert!(a.contains("net.ipv4.tcp_child_ehash_entries"), "{a}");
    // Sockets count too: 2 namespaces x 100 000 sockets.
    let a = advice(2, 4_096, 100_000).unwrap();
    assert!(a.contains("100000 sockets"), "{a}");
    assert_eq!(advice(0, 262_144, 10_000_000), None, "nobody shares");
    assert!(
        advice(usize::MAX, u64::MAX, usize::MAX).is_some(),
        "no overflow"
    );
}
