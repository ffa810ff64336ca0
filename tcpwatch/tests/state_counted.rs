//! Privileged test (issue 17): state changes of sockets no sweep has listed are counted in the
//! kernel, not sent through the ring buffer; sockets a sweep listed still send their changes.
//!
//! - Short connections opened and closed between two sweeps, in a namespace of the test: the
//!   daemon's events-received counter grows by far less than one per connection (it grew by at
//!   least six per connection when every change was sent), yet the kernel's state-change
//!   counter (`delivery="counted"`) grows by at least what the kernel's own `nstat` counters
//!   of that namespace say: one `SYN_SENT` per active open, one `CLOSE` per active and passive
//!   open. `/api/v1/status` `state_changes` agrees with the metric.
//! - A long-lived connection a sweep listed: its close goes out as events, and both ends leave
//!   the table before the next sweep.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]
mod support;

use std::time::{Duration, Instant};

use support::{Daemon, Netns, connect, listener, nstat, privileged, wait_for};

/// Long enough that the burst below fits between two sweeps.
const SWEEP_MS: u64 = 3000;
const CONNS: u64 = 300;

fn sweeps(d: &Daemon) -> u64 {
    d.get_json("/api/v1/status")["stats"]["sweeps"]
        .as_u64()
        .unwrap()
}

/// Waits for the end of the sweep after the current one (its counters are then read).
fn next_sweep(d: &Daemon) -> u64 {
    let s0 = sweeps(d);
    wait_for(Duration::from_secs(30), || {
        let s = sweeps(d);
        (s > s0).then_some(s)
    })
    .expect("the daemon keeps sweeping")
}

fn counted(d: &Daemon, state: &str) -> f64 {
    d.metric(&format!(
        "tcpwatch_kernel_state_changes_total{{delivery=\"counted\",state=\"{state}\"}}"
    ))
}

#[test]
fn churn_between_sweeps_is_counted_not_sent() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("stcount");
    let d = Daemon::start(&[&format!("daemon.sweep_interval_ms={SWEEP_MS}")]);
    let (l, addr) = listener(&ns, 1024);
    // Start right after a sweep: the whole burst falls between it and the next one.
    next_sweep(&d);
    next_sweep(&d);
    let (syn0, close0) = (counted(&d, "SYN_SENT"), counted(&d, "CLOSE"));
    let all0 = d.metric_sum("tcpwatch_kernel_state_changes_total{");
    let received0 = d.metric("tcpwatch_events_received_total");
    let (active0, passive0) = (nstat(&ns, "TcpActiveOpens"), nstat(&ns, "TcpPassiveOpens"));
    let sweeps0 = sweeps(&d);
    let t0 = Instant::now();
    for _ in 0..CONNS {
        let c = connect(&ns, addr);
        let (s, _) = l.accept().unwrap();
        drop(c);
        drop(s);
    }
    let burst = t0.elapsed();
    let (active, passive) = (
        nstat(&ns, "TcpActiveOpens") - active0,
        nstat(&ns, "TcpPassiveOpens") - passive0,
    );
    assert!(active >= CONNS && passive >= CONNS, "{active} {passive}");
    let received = d.metric("tcpwatch_events_received_total") - received0;
    let swept_meanwhile = sweeps(&d) - sweeps0;
    // Two sweeps later the kernel's counters have been read.
    next_sweep(&d);
    next_sweep(&d);
    let syn = counted(&d, "SYN_SENT") - syn0;
    let close = counted(&d, "CLOSE") - close0;
    let all = d.metric_sum("tcpwatch_kernel_state_changes_total{") - all0;
    eprintln!(
        "{CONNS} connections in {burst:?} ({swept_meanwhile} sweeps meanwhile): {received} \
         events received, {all} state changes counted by the kernel ({syn} SYN_SENT, {close} \
         CLOSE counted only); nstat: {active} active, {passive} passive opens"
    );
    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    let (active_f, passive_f, conns_f) = (active as f64, passive as f64, CONNS as f64);
    // Every change was sent before: at least 6 events per connection. Now a connection that a
    // sweep caught half-way may send a few; the host's other sockets may send some too.
    assert!(
        received < conns_f,
        "{received} events for {CONNS} short connections"
    );
    assert!(
        syn >= active_f,
        "{syn} SYN_SENT counted, {active} active opens"
    );
    // A sweep during the burst lists the (at most two) sockets then open: their CLOSE is sent.
    let caught = 2.0 * f64::from(u32::try_from(swept_meanwhile).unwrap());
    assert!(
        close >= active_f + passive_f - caught,
        "{close} CLOSE counted, {active} + {passive} opens, {swept_meanwhile} sweeps meanwhile"
    );
    // Sent or counted, every change is in the total: at least SYN_SENT, ESTABLISHED and CLOSE
    // per active open, ESTABLISHED and CLOSE per passive one.
    assert!(
        all >= 3.0 * active_f + 2.0 * passive_f,
        "{all} state changes for {active} + {passive} opens"
    );

    // /api/v1/status shows the same accounting as the metric.
    let st = wait_for(Duration::from_secs(10), || {
        let st = d.get_json("/api/v1/status");
        let m = d.metric_sum("tcpwatch_kernel_state_changes_total{");
        (st["state_changes"]["total"].as_f64() == Some(m)).then_some(st)
    })
    .expect("status and metrics agree");
    let sc = &st["state_changes"];
    assert_eq!(
        sc["total"].as_u64(),
        Some(sc["sent"].as_u64().unwrap() + sc["counted"].as_u64().unwrap())
    );
    assert!(sc["by_state"]["SYN_SENT"]["counted"].as_u64().unwrap() >= active);
}

#[test]
fn a_connection_a_sweep_listed_leaves_by_event() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("stknown");
    // Made before the daemon starts: its start-up sweep lists it. No other sweep runs, so
    // only events can take it out of the table.
    let (l, addr) = listener(&ns, 16);
    let c = connect(&ns, addr);
    let (s, _) = l.accept().unwrap();
    let d = Daemon::start(&["daemon.sweep_interval_ms=600000"]);
    let local = c.local_addr().unwrap().to_string();
    let query = format!("netns={}&limit=1000", ns.inode);
    let ours = |d: &Daemon| {
        d.connections(&query)
            .into_iter()
            .filter(|x| x["local"] == local.as_str() || x["remote"] == local.as_str())
            .count()
    };
    assert_eq!(ours(&d), 2, "the start-up sweep listed both ends");
    let received0 = d.metric("tcpwatch_events_received_total");
    let sweeps0 = sweeps(&d);
    socket2::SockRef::from(&c)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(c); // RST: both ends go to CLOSE, no TIME_WAIT
    drop(s);
    let t0 = Instant::now();
    wait_for(Duration::from_secs(10), || (ours(&d) == 0).then_some(()))
        .expect("both ends leave the table");
    let gone_after = t0.elapsed();
    assert_eq!(
        sweeps(&d),
        sweeps0,
        "removed by the CLOSE events ({gone_after:?}), not by a sweep"
    );
    assert!(d.metric("tcpwatch_events_received_total") - received0 >= 2.0);
    drop(l);
}
