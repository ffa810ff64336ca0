//! `TIME_WAIT` sockets in `/api/v1/status`: the sweep counts them per namespace instead of
//! listing them (docs/api.md).
use crate::view::View;

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
