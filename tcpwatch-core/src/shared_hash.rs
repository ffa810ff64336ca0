//! Namespaces that share the host's TCP established hash. The kernel's `iter/tcp` walks the
//! established hash of the namespace it runs in, skipping other namespaces' sockets; a
//! namespace without a hash of its own (`net.ipv4.tcp_ehash_entries` < 0, the default unless
//! `net.ipv4.tcp_child_ehash_entries` was set before it was created; always before Linux 6.1)
//! uses the host's. So each such namespace's sweep walks every socket of all of them: the
//! sweep's cost grows with namespaces x sockets (docs/performance.md, "The walk of each
//! namespace"). This decides when to tell the operator, and what.
use crate::model::NetnsInfo;

/// Socket visits per sweep (namespaces sharing the hash x sockets in it) from which the
/// daemon advises: about 0.2-0.4 s of kernel time per sweep on the machines measured.
pub const ADVISE_FROM_VISITS: u64 = 1_000_000;

/// Namespaces whose `tcp_ehash_entries` says they share the host's hash (the host's own
/// namespace owns it and is not counted; kernels without the sysctl are not counted either).
#[must_use]
pub fn sharing<'a>(infos: impl IntoIterator<Item = &'a NetnsInfo>) -> usize {
    infos
        .into_iter()
        .filter(|i| i.tcp_ehash_entries.is_some_and(|e| e < 0))
        .count()
}

/// What to tell the operator, or None while the walks stay cheap. `sockets`: every socket
/// the last sweep listed (an upper bound of those in the shared hash).
#[must_use]
pub fn advice(sharing: usize, sockets: usize) -> Option<String> {
    let visits = (sharing as u64).saturating_mul(sockets as u64);
    (visits >= ADVISE_FROM_VISITS).then(|| {
        format!(
            "{sharing} network namespaces share the host's TCP established hash, so each of \
             their sweeps walks all {sockets} sockets (about {visits} socket visits per sweep). \
             Set net.ipv4.tcp_child_ehash_entries (Linux 6.1+, e.g. 4096) on the host so that \
             namespaces created from then on (new pods) get a hash of their own; see \
             docs/operations.md"
        )
    })
}

#[cfg(test)]
#[path = "shared_hash_tests.rs"]
mod tests;
