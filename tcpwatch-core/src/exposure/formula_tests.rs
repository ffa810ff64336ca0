#![allow(clippy::unwrap_used, reason = "test code")]
use super::*;
use crate::detect::testutil::{NETNS, conn};
use crate::model::{KeepaliveOpts, NetnsInfo, TcpState};

fn ns(retries2: u32) -> NetnsInfo {
    NetnsInfo {
        tcp_retries2: retries2,
        ..NetnsInfo::with_defaults(NETNS)
    }
}

fn established(send_q: u32, ut: u32, ka: KeepaliveOpts) -> ConnRecord {
    let mut c = conn(TcpState::Established, "10.0.0.1:40000", "10.0.0.2:80");
    c.queues.send_q = send_q;
    c.queues.unacked = send_q;
    c.tcp.user_timeout_ms = ut;
    c.tcp.keepalive = ka;
    c
}

const KA_10_5_3: KeepaliveOpts = KeepaliveOpts {
    enabled: true,
    time_ms: 10_000,
    intvl_ms: 5_000,
    probes: 3,
};

#[test]
fn in_flight_uses_tcp_retries2_on_both_sides_of_the_rto_max_threshold() {
    // linear_backoff_thresh = ilog2(120 s / 200 ms) = 9: up to 9 retries the RTO doubles,
    // every further retry waits TCP_RTO_MAX (120 s).
    let c = established(100, 0, KeepaliveOpts::default());
    let fig = |r| assess(&c, &ns(r)).unwrap();
    assert_eq!(fig(8).worst_case_ms, Some(102_200));
    assert_eq!(fig(9).worst_case_ms, Some(204_600));
    assert_eq!(fig(10).worst_case_ms, Some(324_600));
    assert_eq!(fig(15).worst_case_ms, Some(924_600));
    assert_eq!(fig(15).bound, Bound::Retries2);
    assert!(fig(15).in_flight_now);
    // Keepalive does not run while data is in flight.
    let ka = established(100, 0, KA_10_5_3);
    assert_eq!(assess(&ka, &ns(15)).unwrap().worst_case_ms, Some(924_600));
}

#[test]
fn in_flight_with_user_timeout_is_the_user_timeout() {
    let c = established(100, 5_000, KeepaliveOpts::default());
    let e = assess(&c, &ns(15)).unwrap();
    assert_eq!(e.worst_case_ms, Some(5_000));
    assert_eq!(e.bound, Bound::UserTimeout);
    // Even one above the tcp_retries2 figure: the kernel uses it instead.
    let c = established(100, 2_000_000, KeepaliveOpts::default());
    assert_eq!(assess(&c, &ns(15)).unwrap().worst_case_ms, Some(2_000_000));
}

#[test]
fn idle_without_keepalive_is_never_even_with_user_timeout() {
    for ut in [0, 5_000] {
        let c = established(0, ut, KeepaliveOpts::default());
        let e = assess(&c, &ns(15)).unwrap();
        assert_eq!(e.worst_case_ms, None, "ut {ut}");
        assert_eq!(e.bound, Bound::Nothing);
        assert!(e.exceeds(u64::MAX));
        // The in-flight figure is still reported.
        assert_eq!(e.in_flight_ms, if ut > 0 { 5_000 } else { 924_600 });
    }
}

#[test]
fn idle_keepalive_is_time_plus_probes_times_interval() {
    let e = assess(&established(0, 0, KA_10_5_3), &ns(15)).unwrap();
    assert_eq!(e.worst_case_ms, Some(25_000));
    assert_eq!(e.bound, Bound::Keepalive);
    // Namespace defaults fill in zeros: 7200 + 9 x 75 s = 7875 s.
    let on = KeepaliveOpts {
        enabled: true,
        ..KeepaliveOpts::default()
    };
    let e = assess(&established(0, 0, on), &ns(15)).unwrap();
    assert_eq!(e.worst_case_ms, Some(7_875_000));
    let tuned = NetnsInfo {
        tcp_keepalive_time_s: 60,
        tcp_keepalive_intvl_s: 10,
        tcp_keepalive_probes: 5,
        ..ns(15)
    };
    let e = assess(&established(0, 0, on), &tuned).unwrap();
    assert_eq!(e.worst_case_ms, Some(110_000));
    // probes 0 in the namespace: reset at the first expiry.
    let zero = Keepalive {
        time_ms: 60_000,
        intvl_ms: 10_000,
        probes: 0,
    };
    assert_eq!(keepalive_detect_ms(zero, 0), 60_000);
}

#[test]
fn user_timeout_against_keepalive() {
    let k = Keepalive {
        time_ms: 10_000,
        intvl_ms: 5_000,
        probes: 3,
    };
    // Without TCP_USER_TIMEOUT: 3 probes.
    assert_eq!(keepalive_detect_ms(k, 0), 25_000);
    // Below the keepalive time: one probe must be out, so the second expiry.
    assert_eq!(keepalive_detect_ms(k, 1), 15_000);
    assert_eq!(keepalive_detect_ms(k, 10_000), 15_000);
    assert_eq!(keepalive_detect_ms(k, 15_000), 15_000);
    // Between expiries: the next one at or after it.
    assert_eq!(keepalive_detect_ms(k, 15_001), 20_000);
    assert_eq!(keepalive_detect_ms(k, 22_000), 25_000);
    // Above time + probes x intvl: the probe count is ignored, probing goes on.
    assert_eq!(keepalive_detect_ms(k, 60_000), 60_000);
    assert_eq!(keepalive_detect_ms(k, 61_000), 65_000);
    let e = assess(&established(0, 22_000, KA_10_5_3), &ns(15)).unwrap();
    assert_eq!(e.worst_case_ms, Some(25_000));
    assert_eq!(e.bound, Bound::KeepaliveUserTimeout);
}

#[test]
fn only_established_full_sockets_are_assessed() {
    for st in [TcpState::CloseWait, TcpState::Listen, TcpState::SynSent] {
        let c = conn(st, "10.0.0.1:40000", "10.0.0.2:80");
        assert!(assess(&c, &ns(15)).is_none(), "{st:?}");
    }
    let mut c = established(0, 0, KeepaliveOpts::default());
    c.full_sock = false;
    assert!(assess(&c, &ns(15)).is_none());
}
