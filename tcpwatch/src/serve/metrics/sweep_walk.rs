//! `tcpwatch_namespaces_sharing_tcp_hash`: what the sweep's walk costs grows with
//! (`tcpwatch_core::shared_hash`, docs/operations.md).
use super::{Builder, to_i64};
use crate::view::View;

pub fn sweep_walk(out: &Builder, sh: &View) -> prometheus::Result<()> {
    out.gauge(
        "tcpwatch_namespaces_sharing_tcp_hash",
        "Network namespaces of the last sweep that share the host's TCP established hash \
         (net.ipv4.tcp_ehash_entries < 0; not counted on kernels before 6.1, where all do). \
         Each one's sweep steps over every bucket and socket of that hash, even without \
         sockets of its own: set \
         net.ipv4.tcp_child_ehash_entries (docs/operations.md).",
        to_i64(sh.stats.namespaces_sharing_hash),
    )
}
