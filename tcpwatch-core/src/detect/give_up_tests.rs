use super::*;

const MS: u64 = 1_000_000;
/// An arbitrary "now" far from zero.
const T: MonoNs = 5_000_000 * MS;

/// A socket whose RTO before backoff is `base` ms, after `fired` expiries (no extra backoff),
/// the last one at `T`.
fn timer(base: u64, fired: u32) -> RtoTimer {
    RtoTimer {
        fired,
        backoff: fired,
        rto_ms: (base << fired).min(TCP_RTO_MAX_MS),
        last_at: T,
    }
}

#[test]
fn model_timeout_matches_the_kernel() {
    assert_eq!(retries_timeout_ms(15, TCP_RTO_MIN_MS), 924_600);
    assert_eq!(retries_timeout_ms(8, TCP_RTO_MIN_MS), 102_200);
    assert_eq!(retries_timeout_ms(9, TCP_RTO_MIN_MS), 204_600);
    assert_eq!(retries_timeout_ms(3, TCP_RTO_MIN_MS), 3_000);
    assert_eq!(retries_timeout_ms(0, TCP_RTO_MIN_MS), 200);
    assert_eq!(give_up_after_ms(15, 0), 924_600);
    assert_eq!(give_up_after_ms(15, 30_000), 30_000);
    // Degenerate inputs do not panic.
    assert_eq!(
        retries_timeout_ms(u32::MAX, 0),
        131_071 + u64::from(u32::MAX - 16) * TCP_RTO_MAX_MS
    );
    assert_eq!(retries_timeout_ms(2, 1_000_000), 3 * TCP_RTO_MAX_MS);
}

#[test]
fn orphan_retries_follow_tcp_orphan_retries() {
    // 0 (the default) means 8 while the RTO is below TCP_RTO_MAX, and 0 from there on.
    assert_eq!(orphan_retries(0, 204), 8);
    assert_eq!(orphan_retries(0, TCP_RTO_MAX_MS - 1), 8);
    assert_eq!(orphan_retries(0, TCP_RTO_MAX_MS), 0);
    // A set value is used as is.
    assert_eq!(orphan_retries(3, 204), 3);
    assert_eq!(orphan_retries(3, TCP_RTO_MAX_MS), 3);
    assert_eq!(orphan_retries(15, 204), 15);
}

#[test]
fn abort_is_the_first_expiry_at_or_after_the_limit() {
    // tcp_orphan_retries = 3: limit 3 s. RTO 204 ms: expiries 0, 0.408, 1.224, 2.856, 6.120 s
    // after the first; 2.856 < 3 so the kernel gives up at 6.120 s.
    let t = timer(204, 3);
    let g = t.give_up(retries_timeout_ms(3, TCP_RTO_MIN_MS), false);
    assert_eq!(g.first_rto_at, T - 1_224 * MS);
    assert_eq!(g.at, g.first_rto_at + 6_120 * MS);
    // From 214.3 ms on, the fourth expiry (14 RTOs) reaches 3 s: one expiry earlier.
    let g = timer(215, 3).give_up(3_000, false);
    assert_eq!(g.at - g.first_rto_at, 14 * 215 * MS);
    let g = timer(214, 3).give_up(3_000, false);
    assert_eq!(g.at - g.first_rto_at, 30 * 214 * MS);
    // An expiry exactly at the limit gives up (`elapsed - timeout >= 0`).
    let g = timer(204, 3).give_up(2_856, false);
    assert_eq!(g.at - g.first_rto_at, 2_856 * MS);
    // The first expiry never gives up (icsk_retransmits is still 0 there): limit 0 -> second.
    let g = timer(204, 0).give_up(0, false);
    assert_eq!(g.first_rto_at, T + 204 * MS);
    assert_eq!(g.at, g.first_rto_at + 408 * MS);
}

#[test]
fn kernel_defaults_project_past_the_model_by_less_than_an_rto() {
    // tcp_retries2 = 15 (924.6 s): RTO 204 ms doubles to 104.4 s, then 120 s steps.
    let g = timer(204, 5).give_up(retries_timeout_ms(15, TCP_RTO_MIN_MS), false);
    assert_eq!(g.at - g.first_rto_at, (204 * 1022 + 6 * 120_000) * MS);
    // Orphan default (0 -> 8 retries, 102.2 s): the ninth expiry, 104.04 s.
    let limit = retries_timeout_ms(orphan_retries(0, 204 << 4), TCP_RTO_MIN_MS);
    let g = timer(204, 4).give_up(limit, false);
    assert_eq!(g.at - g.first_rto_at, 204 * 510 * MS);
    // An RTO of exactly 200 ms lands one TCP_RTO_MAX step after the model (924.4 < 924.6).
    let g = timer(200, 5).give_up(924_600, false);
    assert_eq!(g.at - g.first_rto_at, (200 * 1022 + 7 * 120_000) * MS);
}

#[test]
fn capped_orphan_with_default_sysctl_dies_at_the_next_expiry() {
    // RTO at TCP_RTO_MAX: not "alive", 0 retries, limit 200 ms: the next expiry aborts.
    let t = RtoTimer {
        fired: 12,
        backoff: 12,
        rto_ms: TCP_RTO_MAX_MS,
        last_at: T,
    };
    let limit = retries_timeout_ms(orphan_retries(0, t.rto_ms), TCP_RTO_MIN_MS);
    assert_eq!(limit, 200);
    assert_eq!(t.give_up(limit, false).at, T + TCP_RTO_MAX_MS * MS);
}

#[test]
fn user_timeout_and_extra_backoff() {
    // TCP_USER_TIMEOUT: the timer is clamped to fire at the limit itself.
    let g = timer(204, 2).give_up(30_000, true);
    assert_eq!(g.first_rto_at, T - 408 * MS);
    assert_eq!(g.at, g.first_rto_at + 30_000 * MS);
    // Backoff left over from earlier timeouts (ACK progress without an RTT sample): the
    // chain's intervals start larger.
    let t = RtoTimer {
        fired: 1,
        backoff: 3,
        rto_ms: 1_600,
        last_at: T,
    };
    assert_eq!(t.give_up(3_000, false).at, T + (1_600 + 3_200) * MS);
}

#[test]
fn degenerate_timers_do_not_panic() {
    for t in [
        RtoTimer {
            fired: 255,
            backoff: 255,
            rto_ms: 0,
            last_at: 0,
        },
        RtoTimer {
            fired: 0,
            backoff: 0,
            rto_ms: u64::MAX,
            last_at: u64::MAX,
        },
        RtoTimer {
            fired: 40,
            backoff: 2,
            rto_ms: 1,
            last_at: 7,
        },
    ] {
        let g = t.give_up(u64::MAX, false);
        assert!(g.at >= g.first_rto_at);
        let _ = t.give_up(0, true);
    }
}
