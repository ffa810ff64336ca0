//! Privileged test: the give-up projection of an orphaned socket.
//!
//! A client writes data to a peer that vanished (every packet dropped) and calls `close()`:
//! its socket lives on in `FIN_WAIT1` with no process (`SOCK_DEAD`), and the kernel gives up
//! on it after `net.ipv4.tcp_orphan_retries` retransmissions, not `tcp_retries2`. The
//! `retransmit_chain` finding must project that, and the kernel's abort (the socket leaves
//! `ss`) must land within 10 % of the projection.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]
mod support;

use std::io::Write as _;
use std::time::Duration;

use serde_json::Value;
use support::{Daemon, Netns, connect, listener, privileged, ss, wait_for};
use tcpwatch_core::model::mono_now;

const ORPHAN_RETRIES: u32 = 3;

#[test]
fn orphaned_fin_wait1_gives_up_after_tcp_orphan_retries_as_projected() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("orphan");
    ns.sysctl("net.ipv4.tcp_orphan_retries", &ORPHAN_RETRIES.to_string());
    // tcp_retries2 stays at its default (15: ~15 minutes): a projection from it is far off.
    let d = Daemon::start(&["daemon.sweep_interval_ms=200"]);
    let (l, addr) = listener(&ns, 16);
    let mut client = connect(&ns, addr);
    let (_server, _) = l.accept().unwrap();
    let local = client.local_addr().unwrap();
    ns.blackhole_port(addr.port());
    client.write_all(&[7_u8; 4096]).unwrap();
    let closed_at = mono_now();
    drop(client);

    // Ground truth: an orphan (no inode) in FIN_WAIT1.
    let row = ss(&ns).into_iter().find(|r| r.local == local).unwrap();
    assert_eq!(row.state, "FIN-WAIT-1", "{row:?}");
    assert_eq!(row.field("ino").as_deref(), Some("0"), "{row:?}");

    // The first projection the daemon makes, and its evaluation time (`updated_at` is
    // refreshed at every evaluation; both are CLOCK_MONOTONIC).
    let first: Value = wait_for(Duration::from_secs(15), || {
        d.get_json("/api/v1/findings?kind=retransmit_chain")["open"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|f| f["subject"]["local"] == local.to_string())
                    .cloned()
            })
    })
    .expect("no retransmit_chain finding for the orphaned socket");
    let ev = &first["evidence"];
    let evaluated = first["updated_at"].as_u64().unwrap();
    let gives_up_in = ev["gives_up_in_seconds"].as_f64().unwrap();
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a few seconds in ns"
    )]
    let projected = evaluated + (gives_up_in * 1e9) as u64;
    eprintln!("first projection: {first}");
    assert_eq!(first["subject"]["state"], "FIN_WAIT1", "{first}");
    // The kernel's abort: the socket leaves `ss` (bounded wait).
    let aborted_at = wait_for(Duration::from_mins(1), || {
        (!ss(&ns).iter().any(|r| r.local == local)).then(mono_now)
    })
    .expect("the orphaned socket was not aborted within 60 s");
    #[expect(clippy::cast_precision_loss, reason = "seconds for display and ratios")]
    let secs = |ns: u64| ns as f64 / 1e9;
    let horizon = secs(projected.saturating_sub(closed_at));
    let error = secs(aborted_at.abs_diff(projected));
    eprintln!(
        "close() -> abort {:.3}s, projected {horizon:.3}s, error {error:.3}s",
        secs(aborted_at - closed_at)
    );
    assert!(
        error <= 0.10 * horizon,
        "the kernel gave up {:.3}s after close(), the projection said {horizon:.3}s: off by \
         {error:.3}s (more than 10 %)",
        secs(aborted_at - closed_at)
    );
    assert_eq!(ev["orphan"].as_f64(), Some(1.0), "{first}");
    assert_eq!(
        ev["tcp_orphan_retries"].as_f64(),
        Some(f64::from(ORPHAN_RETRIES)),
        "{first}"
    );
    let diagnosis = first["diagnosis"].as_str().unwrap();
    assert!(
        diagnosis.contains(&format!("tcp_orphan_retries={ORPHAN_RETRIES}")),
        "{diagnosis}"
    );
}
