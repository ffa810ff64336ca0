//! What the kernel programs and the loader must agree on besides the types: the hooks (each
//! tracepoint and the programs attached to it) and the sizes of the kernel maps. Kept here
//! once; `tcpwatch-ebpf` sizes its maps with these constants, the loader attaches and sizes
//! with them and the feature probe checks the same tracepoints.
//!
//! The program attributes in `tcpwatch-ebpf` (`#[btf_tracepoint(function = "...")]`) take
//! string literals only: the daemon's test `kernel::tests::object_has_every_hook` checks the
//! built object against [`HOOKS`].

/// The tracepoints tcpwatch attaches to.
pub mod tracepoint {
    pub const INET_SOCK_SET_STATE: &str = "inet_sock_set_state";
    pub const TCP_RETRANSMIT_SKB: &str = "tcp_retransmit_skb";
    pub const TCP_SEND_RESET: &str = "tcp_send_reset";
    pub const TCP_RECEIVE_RESET: &str = "tcp_receive_reset";
}

/// Every tracepoint of [`HOOKS`], once (what the feature probe looks for in kernel BTF).
pub const TRACEPOINTS: [&str; 4] = [
    tracepoint::INET_SOCK_SET_STATE,
    tracepoint::TCP_RETRANSMIT_SKB,
    tracepoint::TCP_SEND_RESET,
    tracepoint::TCP_RECEIVE_RESET,
];

/// One required hook: a tracepoint and the two programs that can serve it. The loader tries
/// the `tp_btf` program first and falls back to the `raw_tp` one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hook {
    pub tracepoint: &'static str,
    pub tp_btf: &'static str,
    pub raw_tp: &'static str,
}

/// The required hooks, in attach order.
pub const HOOKS: [Hook; 4] = [
    Hook {
        tracepoint: tracepoint::INET_SOCK_SET_STATE,
        tp_btf: "tp_inet_sock_set_state",
        raw_tp: "raw_inet_sock_set_state",
    },
    Hook {
        tracepoint: tracepoint::TCP_RETRANSMIT_SKB,
        tp_btf: "tp_tcp_retransmit_skb",
        raw_tp: "raw_tcp_retransmit_skb",
    },
    Hook {
        tracepoint: tracepoint::TCP_SEND_RESET,
        tp_btf: "tp_tcp_send_reset",
        raw_tp: "raw_tcp_send_reset",
    },
    Hook {
        tracepoint: tracepoint::TCP_RECEIVE_RESET,
        tp_btf: "tp_tcp_receive_reset",
        raw_tp: "raw_tcp_receive_reset",
    },
];

/// The optional hook: reasons of sent resets, a classic tracepoint program on
/// `tcp:tcp_send_reset` (attached only when the record has a `reason`, Linux 6.10+).
pub const RESET_REASON_PROGRAM: &str = "tp_tcp_send_reset_reason";
/// Category of the classic tracepoint of [`RESET_REASON_PROGRAM`].
pub const RESET_REASON_CATEGORY: &str = "tcp";

/// The `iter/tcp` sweep program.
pub const SWEEP_PROGRAM: &str = "tcpwatch_sweep";
/// Its variant without socket cookies, for kernels whose iterator programs may not call
/// `bpf_get_socket_cookie` (before Linux 5.12); chosen by the start-up probe.
pub const SWEEP_PROGRAM_NOCOOKIE: &str = "tcpwatch_sweep_nocookie";
/// The sweep's reference: an `iter/tcp` program that only counts the sockets walked (loaded
/// only by `tcpwatch snapshot --walk-reference`, for `cargo xtask bench`).
pub const WALK_REFERENCE_PROGRAM: &str = "tcpwatch_walk_reference";

/// Where the kernel programs keep a socket's `SockState` (the global `STORE_MODE`, patched by
/// the loader from the start-up probe's `sk_storage` feature).
pub mod store_mode {
    /// The `SOCKS` hash keyed by the socket's address (Linux 5.10, `raw_tp` fallbacks).
    pub const HASH: u32 = 1;
    /// Socket-local storage (`SOCK_STORE`, `BPF_MAP_TYPE_SK_STORAGE`): found from the socket,
    /// freed with it. Needs `tp_btf` programs and an iterator with socket cookies (5.12+).
    pub const SK_STORAGE: u32 = 2;
}

/// Sizes of the kernel maps (entries; bytes for the ring buffer).
pub mod map_size {
    /// `SOCKS` as built into the object. The loader always resizes it to
    /// `daemon.max_connections` (at least 1024).
    pub const SOCKS_IN_OBJECT: u32 = 131_072;
    /// `EVENTS` ring buffer bytes unless `--ringbuf-bytes` says otherwise.
    pub const EVENTS_BYTES: u32 = 4 << 20;
    /// `PORT_RESETS` (LRU, pinned: its size is part of the pinned shape).
    pub const PORT_RESETS: u32 = 16_384;
    /// `STALE_TUPLES` (LRU): RSTs this host just sent from a closed socket.
    pub const STALE_TUPLES: u32 = 4_096;
    pub use crate::endpoints::SERVER_RESETS_MAX as SERVER_RESETS;
    /// `ENDPOINTS`, `SERVER_RESETS`, `LISTENS` (LRU).
    pub use crate::endpoints::{ENDPOINTS_MAX as ENDPOINTS, LISTENS_MAX as LISTENS};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hook_tracepoint_is_listed_once() {
        for h in HOOKS {
            assert!(TRACEPOINTS.contains(&h.tracepoint), "{h:?}");
        }
        for (i, t) in TRACEPOINTS.iter().enumerate() {
            assert!(HOOKS.iter().any(|h| h.tracepoint == *t), "{t} has no hook");
            assert!(!TRACEPOINTS[..i].contains(t), "{t} listed twice");
        }
    }
}
