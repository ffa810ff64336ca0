//! Namespaces that share the host's TCP established hash. The kernel's `iter/tcp` walks the
//! established hash of the namespace it runs in, bucket by bucket, skipping other namespaces'
//! sockets; a namespace without a hash of its own (`net.ipv4.tcp_ehash_entries` < 0, the
//! default unless `net.ipv4.tcp_child_ehash_entries` was set before it was created; always
//! before Linux 6.1) uses the host's. So each such namespace's sweep steps over every bucket of
//! the host's hash (262 144 on a 24 GiB machine, more on larger ones) and every socket in it,
//! even when the namespace has no socket at all: the sweep's cost grows with namespaces x
//! (buckets + sockets). This estimates that cost and decides when to tell the operator, and
//! what (docs/operations.md, "Many network namespaces").
use crate::model::NetnsInfo;

/// Kernel time to step over one bucket of the established hash in a walk: 2.0 ms per
/// namespace for 262 144 empty buckets, 7.6 ns each, measured with the bench's reference walk
/// (`tcpwatch snapshot --walk-reference`, 2 vCPUs, Linux 6.18).
pub const BUCKET_NS: u64 = 8;
/// Kernel time to step over one socket of another namespace in the shared hash: 0.2-0.4 µs
/// measured the same way (100 000 sockets).
pub const SOCKET_NS: u64 = 300;
/// Estimated walk time per sweep of the sharing namespaces from which the daemon advises: 5 %
/// of a core at the default 1 s sweeps.
pub const ADVISE_FROM_NS: u64 = 50_000_000;

/// Namespaces whose `tcp_ehash_entries` says they share the host's hash (the host's own
/// namespace owns it and is not counted; kernels without the sysctl are not counted either).
#[must_use]
pub fn sharing<'a>(infos: impl IntoIterator<Item = &'a NetnsInfo>) -> usize {
    infos
        .into_iter()
        .filter(|i| i.tcp_ehash_entries.is_some_and(|e| e < 0))
        .count()
}

/// Buckets of the shared hash: a namespace that shares it reads the host's size, negated; 0
/// when none shares it.
#[must_use]
pub fn shared_buckets<'a>(infos: impl IntoIterator<Item = &'a NetnsInfo>) -> u64 {
    infos
        .into_iter()
        .filter_map(|i| i.tcp_ehash_entries.filter(|e| *e < 0))
        .map(i64::unsigned_abs)
        .max()
        .unwrap_or(0)
}

/// Estimated kernel time (ns) per sweep of the walks of `sharing` namespaces through a shared
/// hash of `buckets` buckets holding at most `sockets` sockets.
#[must_use]
pub fn walk_ns(sharing: usize, buckets: u64, sockets: usize) -> u64 {
    let per_walk = buckets
        .saturating_mul(BUCKET_NS)
        .saturating_add((sockets as u64).saturating_mul(SOCKET_NS));
    (sharing as u64).saturating_mul(per_walk)
}

/// What to tell the operator, or None while the walks stay cheap. `buckets`: the shared
/// hash's ([`shared_buckets`]); `sockets`: every socket the last sweep listed (an upper bound
/// of those in the shared hash).
#[must_use]
pub fn advice(sharing: usize, buckets: u64, sockets: usize) -> Option<String> {
    let ns = walk_ns(sharing, buckets, sockets);
    (ns >= ADVISE_FROM_NS).then(|| {
        format!(
            "{sharing} network namespaces share the host's TCP established hash ({buckets} \
             buckets), so each of their sweeps steps over all of its buckets and all {sockets} \
             sockets, even in a namespace without sockets: about {} ms of kernel time per \
             sweep. Set net.ipv4.tcp_child_ehash_entries (Linux 6.1+, e.g. 4096) on the host \
             so that namespaces created from then on (new pods) get a hash of their own; see \
             docs/operations.md",
            ns / 1_000_000
        )
    })
}

#[cfg(test)]
#[path = "shared_hash_tests.rs"]
mod tests;
