//! Metrics of the reset and connect classification (issue 13). Labels are fixed sets (no
//! endpoint, port or process labels): [`SERIES`] series at most.
use tcpwatch_common::endpoints::{ENDPOINTS_MAX, LISTENS_MAX, RESET_REASONS_MAX};
use tcpwatch_core::model::TcpState;

use super::{Builder, to_i64};
use crate::view::View;

/// Series written by [`endpoints`] (reasons: at most one per `RESET_REASONS` slot).
pub const SERIES: usize = 1 + 3 + 1 + 1 + 1 + 5 + 2 + 2 + RESET_REASONS_MAX as usize;

pub(super) fn endpoints(out: &Builder, sh: &View) -> prometheus::Result<()> {
    let facts = &sh.judged.endpoint_facts;
    let c = &facts.counters;
    out.counter(
        "tcpwatch_stale_connection_resets_total",
        "RSTs received by connections the peer had already closed (requests written into a \
         closed keep-alive connection: 502s, ECONNRESET).",
        c.stale_rst_received,
    )?;
    let v = out.counter_vec(
        "tcpwatch_closed_connection_resets_sent_total",
        "RSTs this host sent for segments that reached no open connection: a timewait \
         minisocket, an orphaned (application-closed) socket, or no socket at all.",
        &["socket"],
    )?;
    v.with_label_values(&["timewait"])
        .inc_by(c.timewait_rst_sent);
    v.with_label_values(&["orphan"]).inc_by(c.orphan_rst_sent);
    v.with_label_values(&["none"]).inc_by(c.no_socket_rst_sent);
    out.counter(
        "tcpwatch_connect_failures_total",
        "Connects that failed: refused, timed out (SYN never answered) or otherwise.",
        c.connects_failed,
    )?;
    let retrying = sh
        .conns
        .iter()
        .filter(|r| r.state == TcpState::SynSent && r.tcp.retransmits > 0)
        .count();
    out.gauge(
        "tcpwatch_syn_sent_retrying",
        "Connects in SYN-SENT whose SYN was retransmitted at least once (last sweep).",
        to_i64(retrying),
    )?;
    let restarts: u64 = facts.listeners.iter().map(|l| u64::from(l.restarts)).sum();
    out.gauge(
        "tcpwatch_listener_restarts",
        "Listeners re-created on the same address since the kernel first saw them (server \
         restarts), over the addresses the kernel still remembers.",
        to_i64(restarts),
    )?;
    let v = out.counter_vec(
        "tcpwatch_classify_map_full_total",
        "Inserts into the reset/connect classification maps that failed (map full).",
        &["map"],
    )?;
    v.with_label_values(&["endpoints"]).inc_by(c.endpoints_full);
    v.with_label_values(&["server_resets"])
        .inc_by(c.server_resets_full);
    v.with_label_values(&["connecting"])
        .inc_by(c.connecting_full);
    v.with_label_values(&["listens"]).inc_by(c.listens_full);
    v.with_label_values(&["stale_tuples"])
        .inc_by(c.stale_tuples_full);
    let v = out.gauge_vec(
        "tcpwatch_classify_map_entries",
        "Entries in the LRU classification maps (at the maximum, old entries are evicted).",
        &["map"],
    )?;
    v.with_label_values(&["endpoints"])
        .set(to_i64(facts.endpoints.len()));
    v.with_label_values(&["listens"])
        .set(to_i64(facts.listeners.len()));
    let v = out.gauge_vec(
        "tcpwatch_classify_map_max_entries",
        "Size of the LRU classification maps.",
        &["map"],
    )?;
    v.with_label_values(&["endpoints"])
        .set(i64::from(ENDPOINTS_MAX));
    v.with_label_values(&["listens"])
        .set(i64::from(LISTENS_MAX));
    let v = out.counter_vec(
        "tcpwatch_resets_sent_by_reason_total",
        "TCP resets sent, by the kernel's reason (enum sk_rst_reason, Linux 6.10+; e.g. \
         TCP_TIMEWAIT_SOCKET, NO_SOCKET, TCP_ABORT_ON_DATA). Only reasons seen are exported.",
        &["reason"],
    )?;
    for (reason, n) in &facts.reset_reasons {
        v.with_label_values(&[reason.as_str()]).inc_by(*n);
    }
    Ok(())
}
