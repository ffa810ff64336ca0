//! Kernel-side classification of resets and failed connects (issue 13): the keys and values of
//! the `ENDPOINTS`, `SERVER_RESETS` and `LISTENS` maps and the `CLASS_COUNTERS` indexes. Part
//! of the binary contract ([`crate::ABI_VERSION`]); none of these maps is pinned.

/// Key of `ENDPOINTS`: what one process (tgid of the task that called `connect()`, 0 = not
/// seen) sees of one remote endpoint in one namespace. Client-side counts are keyed by the
/// remote endpoint, never by the ephemeral local port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub netns_cookie: u64,
    /// Remote address (IPv4 in the first 4 bytes).
    pub addr: [u8; 16],
    pub pid: u32,
    pub port: u16,
    pub family: u16,
}

/// Value of `ENDPOINTS` (per CPU: userspace sums the counts, takes the latest time).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointCounts {
    /// `bpf_ktime_get_ns()` of the last update.
    pub last_ns: u64,
    /// RSTs received on a connection the peer had already closed: in `CLOSE_WAIT`/`LAST_ACK`
    /// (the FIN was seen, then data was written), or drawn by data sent to a closed peer
    /// socket on this host (timewait minisocket or orphaned socket, see `STALE_TUPLES`).
    pub stale_resets: u64,
    /// Other RSTs received on synchronized connections.
    pub resets_received: u64,
    /// RSTs received in `SYN_SENT`: connection refused.
    pub connects_refused: u64,
    /// `SYN_SENT` -> `CLOSE` after at least one SYN retransmission and no RST: timed out (the
    /// kernel gave up, or the application's dial timeout closed it first).
    pub connects_timed_out: u64,
    /// `SYN_SENT` -> `CLOSE` otherwise (ICMP error, closed by the application at once).
    pub connects_failed: u64,
    /// SYN retransmissions (`tcp_retransmit_skb` in `SYN_SENT`).
    pub syn_retrans: u64,
    /// `SYN_SENT` -> `ESTABLISHED`.
    pub connects_ok: u64,
    /// `comm` of the connecting task.
    pub comm: [u8; 16],
}

/// Value of `SERVER_RESETS`, keyed by [`crate::PortKey`] (namespace, local port): RSTs this
/// host sent from connections its application had already closed, in answer to data.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerResets {
    pub last_ns: u64,
    /// Sent by a timewait minisocket (tracepoint reason `TCP_TIMEWAIT_SOCKET` on 6.10+;
    /// FIN-WAIT-2 orphans are timewait minisockets too).
    pub timewait_sent: u64,
    /// Sent by an orphaned full socket (closed by the application) on data from the peer
    /// (reason `TCP_ABORT_ON_DATA`).
    pub orphan_sent: u64,
}

/// Key of `LISTENS`: one listening address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ListenKey {
    pub netns_cookie: u64,
    pub addr: [u8; 16],
    pub port: u16,
    pub family: u16,
    pub pad: [u8; 4],
}

/// Value of `LISTENS`: a listener closed and re-created on the same key is a server restart.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenInfo {
    pub last_listen_ns: u64,
    /// When the last listener on this key closed (0 = none seen).
    pub last_close_ns: u64,
    /// When a listener was last re-created after a close (0 = never).
    pub last_restart_ns: u64,
    pub listens: u32,
    pub restarts: u32,
    /// tgid and comm of the task that called `listen()` last.
    pub pid: u32,
    pub pad: u32,
    pub comm: [u8; 16],
}

/// Indexes into the per-CPU `CLASS_COUNTERS` array (exported, never silent).
pub mod class_counter {
    /// RSTs sent for a segment that matched no socket (no per-port attribution).
    pub const NO_SOCKET_RST_SENT: u32 = 0;
    /// RSTs sent by a timewait minisocket.
    pub const TIMEWAIT_RST_SENT: u32 = 1;
    /// RSTs sent by an orphaned socket on data.
    pub const ORPHAN_RST_SENT: u32 = 2;
    /// RSTs received classified stale (see [`super::EndpointCounts::stale_resets`]).
    pub const STALE_RST_RECEIVED: u32 = 3;
    /// Failed connects (refused, timed out, other).
    pub const CONNECTS_FAILED: u32 = 4;
    /// Inserts that failed: `ENDPOINTS`, `SERVER_RESETS`, `LISTENS`, `STALE_TUPLES`.
    /// `CONNECTING_FULL` stays 0: connects in progress are read from the socket's own entry
    /// (a failed creation of it counts in `counter::SOCKS_FULL`), there is no `CONNECTING`
    /// map any more; the slot is kept so that the layout does not move.
    pub const ENDPOINTS_FULL: u32 = 5;
    pub const SERVER_RESETS_FULL: u32 = 6;
    pub const CONNECTING_FULL: u32 = 7;
    pub const LISTENS_FULL: u32 = 8;
    pub const STALE_TUPLES_FULL: u32 = 9;
    pub const COUNT: u32 = 10;
}

/// Where the classic `tcp:tcp_send_reset` tracepoint record keeps its `reason` (Linux 6.10+;
/// from `/sys/kernel/tracing/events/tcp/tcp_send_reset/format`), patched into `RESET_TP`.
/// `valid == 0`: the kernel has no reason (the program is then not attached).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResetTpOffsets {
    pub reason: u32,
    pub valid: u32,
}

/// Slots of `RESET_REASONS` (RSTs sent per `enum sk_rst_reason` value; larger values share
/// the last slot).
pub const RESET_REASONS_MAX: u32 = 64;

/// Max entries of the maps above (LRU: evictions are visible as a full map in userspace).
pub const ENDPOINTS_MAX: u32 = 16_384;
pub const SERVER_RESETS_MAX: u32 = 4_096;
pub const LISTENS_MAX: u32 = 4_096;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type below is #[repr(C)], Copy, made only of integers and byte arrays, with
    // explicit padding fields, so any bit pattern is a valid value.
    unsafe impl aya::Pod for super::EndpointKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::EndpointCounts {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ServerResets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ListenKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ListenInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ResetTpOffsets {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<EndpointKey>(), 8 + 16 + 4 + 2 + 2);
        assert_eq!(core::mem::size_of::<EndpointCounts>(), 8 * 8 + 16);
        assert_eq!(core::mem::size_of::<ServerResets>(), 3 * 8);
        assert_eq!(core::mem::size_of::<ListenKey>(), 8 + 16 + 2 + 2 + 4);
        assert_eq!(core::mem::size_of::<ListenInfo>(), 3 * 8 + 4 * 4 + 16);
    }
}
