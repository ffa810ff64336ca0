//! `TIME_WAIT` sockets in `/api/v1/status`: the sweep counts them per namespace instead of
//! listing them (docs/api.md).
use std::collections::HashMap;

use tcpwatch_core::model::TcpState;

use crate::serve::metrics::to_i64;
use crate::view::View;

/// Adds the sweep's `TIME_WAIT` counts of every namespace to the table's sockets by state
/// (`tcpwatch_sockets{state="TIME_WAIT"}`).
pub fn add_counted(by_state: &mut HashMap<TcpState, i64>, s: &View) {
    let counted: i64 = s.netns.values().map(|i| to_i64(i.time_wait)).sum();
    *by_state.entry(TcpState::TimeWait).or_default() += counted;
}

/// The `TIME_WAIT` sockets the last sweep counted (not listed as connections): the total and
/// each namespace's count, largest first.
pub fn status(s: &View) -> serde_json::Value {
    let mut by: Vec<_> = s.netns.values().filter(|i| i.time_wait > 0).collect();
    by.sort_unstable_by(|a, b| {
        b.time_wait
            .cmp(&a.time_wait)
            .then(a.id.inode.cmp(&b.id.inode))
    });
    let by_netns: Vec<_> = by
        .iter()
        .map(|i| {
            serde_json::json!({
                "netns": i.id,
                "netns_name": s.netns_names.get(&i.id.cookie),
                "count": i.time_wait,
            })
        })
        .collect();
    serde_json::json!({
        "total": s.netns.values().map(|i| i.time_wait).sum::<u64>(),
        "by_netns": by_netns,
    })
}
