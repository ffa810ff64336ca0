//! Userspace cost of one steady sweep + evaluation at N idle sockets (thread CPU time):
//! `cargo run --release -p tcpwatch-core --example idle_sweep [N]` (on a base tree too, to
//! compare).
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    clippy::cast_possible_truncation,
    clippy::many_single_char_names,
    reason = "a measurement tool: nanosecond counts shown as milliseconds, synthetic ports"
)]
use std::collections::HashMap;
use tcpwatch_common::delta::{SEEN_TAG, SockSeen};
use tcpwatch_common::{AF_INET, SockRecord, record_flags, tcp_state};
use tcpwatch_core::config::DetectorConfig;
use tcpwatch_core::detect::{DetectContext, Detectors};
use tcpwatch_core::table::{ConnTable, KernelClock, TableConfig};

fn cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let ns = 4242u64;
    let recs: Vec<SockRecord> = (0..n)
        .map(|i| SockRecord {
            skaddr: 0xffff_8880_0000_0000 + i * 2304,
            cookie: 1000 + i,
            netns_cookie: ns,
            netns_ino: 4_026_532_000,
            inode: 50_000 + i,
            family: AF_INET,
            sport: (10000 + i % 50000) as u16,
            dport: 5000,
            state: tcp_state::ESTABLISHED,
            flags: record_flags::FULL_SOCK | record_flags::TRACKED | record_flags::HAS_SOCKET,
            state_since_ns: 1,
            first_seen_ns: 1,
            lsnd_age_jiffies: 100,
            rcv_tstamp_age_jiffies: 100,
            lrcv_age_jiffies: 100,
            snd_wnd: 65535,
            ..SockRecord::default()
        })
        .collect();
    let seen: Vec<SockSeen> = recs
        .iter()
        .map(|r| SockSeen {
            tagged_skaddr: r.skaddr | SEEN_TAG,
            cookie: r.cookie,
        })
        .collect();
    let clock = KernelClock { hz: 1000 };
    let mut t = ConnTable::new(TableConfig::default());
    let mut det = Detectors::new(DetectorConfig::default());
    let netns = HashMap::new();
    let port_resets = HashMap::new();
    let s = 1_000_000_000u64;
    t.apply_sweep(ns, &recs, &[], 10 * s - 5, clock, 10 * s, None);
    let (mut sweep, mut cookies, mut eval) = (0u64, 0u64, 0u64);
    let rounds = 30u64;
    for k in 0..rounds {
        let now = (11 + k) * s;
        let a = cpu_ns();
        t.apply_sweep(ns, &[], &seen, now - 5, clock, now, None);
        let b = cpu_ns();
        let c = t.netns_cookies();
        assert_eq!(c.len(), 1);
        let d = cpu_ns();
        let ctx = DetectContext {
            netns: &netns,
            port_resets: &port_resets,
            aging: t.aging(),
        };
        let ch = det.evaluate(now, t.iter(), &ctx);
        std::hint::black_box(ch);
        let e = cpu_ns();
        sweep += b - a;
        cookies += d - b;
        eval += e - d;
    }
    assert_eq!(t.len() as u64, n);
    println!(
        "{n} idle: per sweep apply_sweep {:.2} ms, netns_cookies {:.2} ms, detectors {:.2} ms",
        sweep as f64 / rounds as f64 / 1e6,
        cookies as f64 / rounds as f64 / 1e6,
        eval as f64 / rounds as f64 / 1e6
    );
}
