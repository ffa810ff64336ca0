//! The binary contract between tcpwatch's kernel programs (`tcpwatch-ebpf`) and its userspace
//! daemon. Every type is `#[repr(C)]`, has no padding holes the kernel could leave uninitialised
//! (explicit `pad` fields) and is plain old data.
//!
//! Layout changes are versioned by [`ABI_VERSION`]: pinned maps written by another version are
//! detected and replaced by the loader.
#![no_std]

pub mod delta;
pub mod endpoints;
pub mod hooks;

/// Bumped whenever a type in this crate changes layout or meaning.
pub const ABI_VERSION: u32 = 7;

/// TCP states as the kernel numbers them (`include/net/tcp_states.h`).
pub mod tcp_state {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT1: u8 = 4;
    pub const FIN_WAIT2: u8 = 5;
    pub const TIME_WAIT: u8 = 6;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const LISTEN: u8 = 10;
    pub const CLOSING: u8 = 11;
    pub const NEW_SYN_RECV: u8 = 12;
}

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Byte offsets of kernel struct fields, resolved in userspace from the running kernel's BTF
/// and patched into the programs' `.rodata` before load (Rust eBPF has no CO-RE).
/// A value of [`OFFSET_MISSING`] means "this kernel has no such field"; the program then
/// reports 0 for it and sets the matching bit in [`SockRecord::missing`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    // struct sock_common
    pub skc_daddr: u32,
    pub skc_rcv_saddr: u32,
    pub skc_dport: u32,
    pub skc_num: u32,
    pub skc_family: u32,
    pub skc_state: u32,
    pub skc_net: u32,
    pub skc_v6_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    // struct net
    pub net_ns_inum: u32,
    pub net_cookie: u32,
    // struct sock
    pub sk_ack_backlog: u32,
    pub sk_max_ack_backlog: u32,
    pub sk_socket: u32,
    pub sk_sndbuf: u32,
    pub sk_wmem_queued: u32,
    pub sk_protocol: u32,
    /// `sock.sk_flags` (`__sk_common.skc_flags`): bit [`SOCK_KEEPOPEN`] is `SO_KEEPALIVE`.
    pub sk_flags: u32,
    // struct inet_sock: the bound local port, still set after `inet_put_port()` cleared
    // `skc_num` (a socket closed with SO_LINGER 0 or unread data sends its RST after that)
    pub inet_sport: u32,
    // struct socket_alloc / struct inode: socket inode number
    pub socket_alloc_vfs_inode: u32,
    pub inode_i_ino: u32,
    // struct inet_connection_sock
    pub icsk_rto: u32,
    pub icsk_backoff: u32,
    pub icsk_retransmits: u32,
    pub icsk_probes_out: u32,
    pub icsk_user_timeout: u32,
    pub icsk_ack_lrcvtime: u32,
    // struct tcp_sock
    pub write_seq: u32,
    pub snd_una: u32,
    pub snd_nxt: u32,
    pub rcv_nxt: u32,
    pub copied_seq: u32,
    pub snd_wnd: u32,
    pub srtt_us: u32,
    pub total_retrans: u32,
    pub lsndtime: u32,
    pub rcv_tstamp: u32,
    pub data_segs_in: u32,
    pub data_segs_out: u32,
    /// `tcp_sock.keepalive_time` / `keepalive_intvl` (jiffies) and `keepalive_probes`:
    /// `TCP_KEEPIDLE`, `TCP_KEEPINTVL`, `TCP_KEEPCNT` (0 = the namespace's default).
    pub keepalive_time: u32,
    pub keepalive_intvl: u32,
    pub keepalive_probes: u32,
    /// `inet_timewait_sock.tw_substate`: tells a `TIME_WAIT` minisocket (counted, not
    /// copied) from an orphaned `FIN_WAIT2` one (listed). Missing: every timewait minisocket
    /// is listed in full, as before.
    pub tw_substate: u32,
    /// Bytes from the start of a full socket that cover every field above read from it (the
    /// sweep copies them in one read, then picks the fields out).
    pub full_read_len: u32,
    /// The same for `struct sock_common` alone (`TIME_WAIT` and `NEW_SYN_RECV` minisockets).
    pub common_read_len: u32,
    /// The byte ranges of a full socket that hold the fields above read from it, as
    /// `[start, len]` in offset order (len 0: unused slot). The sweep copies only these, each
    /// to the same offset of its buffer: a quarter of `full_read_len` on Linux 6.18, so a
    /// quarter of the cache lines of each socket (see `tcpwatch_core::offsets::copy_ranges`).
    pub copy_ranges: [[u32; 2]; COPY_RANGES],
    /// Non-zero once userspace has patched real offsets in.
    pub valid: u32,
}

/// The bit of `sock.sk_flags` set by `SO_KEEPALIVE`: `SOCK_KEEPOPEN` of the kernel's
/// `enum sock_flags` (3 since Linux 2.6; checked against the BTF of 6.1 and 6.18).
pub const SOCK_KEEPOPEN: u32 = 3;

/// Slots of [`KernelOffsets::copy_ranges`].
pub const COPY_RANGES: usize = 12;

/// Size of the sweep's per-CPU copy of one socket; `full_read_len` must not exceed it.
pub const SOCK_COPY_LEN: usize = 4096;

/// Marks a field the running kernel does not have.
pub const OFFSET_MISSING: u32 = u32::MAX;

/// Namespace identity where the kernel has no netns cookie (`SO_NETNS_COOKIE`, Linux 5.14+;
/// userspace then patches `net_cookie` as [`OFFSET_MISSING`]): this bit or'ed with the
/// namespace's inode number, in the kernel programs and in userspace alike. Real cookies are
/// a counter from 1 and never have it.
pub const NETNS_INODE_TAG: u64 = 1 << 63;

impl KernelOffsets {
    /// All offsets missing, `valid == 0`: what the object carries before userspace patches it.
    pub const UNSET: Self = Self {
        skc_daddr: OFFSET_MISSING,
        skc_rcv_saddr: OFFSET_MISSING,
        skc_dport: OFFSET_MISSING,
        skc_num: OFFSET_MISSING,
        skc_family: OFFSET_MISSING,
        skc_state: OFFSET_MISSING,
        skc_net: OFFSET_MISSING,
        skc_v6_daddr: OFFSET_MISSING,
        skc_v6_rcv_saddr: OFFSET_MISSING,
        net_ns_inum: OFFSET_MISSING,
        net_cookie: OFFSET_MISSING,
        sk_ack_backlog: OFFSET_MISSING,
        sk_max_ack_backlog: OFFSET_MISSING,
        sk_socket: OFFSET_MISSING,
        sk_sndbuf: OFFSET_MISSING,
        sk_wmem_queued: OFFSET_MISSING,
        sk_protocol: OFFSET_MISSING,
        sk_flags: OFFSET_MISSING,
        inet_sport: OFFSET_MISSING,
        socket_alloc_vfs_inode: OFFSET_MISSING,
        inode_i_ino: OFFSET_MISSING,
        icsk_rto: OFFSET_MISSING,
        icsk_backoff: OFFSET_MISSING,
        icsk_retransmits: OFFSET_MISSING,
        icsk_probes_out: OFFSET_MISSING,
        icsk_user_timeout: OFFSET_MISSING,
        icsk_ack_lrcvtime: OFFSET_MISSING,
        write_seq: OFFSET_MISSING,
        snd_una: OFFSET_MISSING,
        snd_nxt: OFFSET_MISSING,
        rcv_nxt: OFFSET_MISSING,
        copied_seq: OFFSET_MISSING,
        snd_wnd: OFFSET_MISSING,
        srtt_us: OFFSET_MISSING,
        total_retrans: OFFSET_MISSING,
        lsndtime: OFFSET_MISSING,
        rcv_tstamp: OFFSET_MISSING,
        data_segs_in: OFFSET_MISSING,
        data_segs_out: OFFSET_MISSING,
        keepalive_time: OFFSET_MISSING,
        keepalive_intvl: OFFSET_MISSING,
        keepalive_probes: OFFSET_MISSING,
        tw_substate: OFFSET_MISSING,
        full_read_len: 0,
        common_read_len: 0,
        copy_ranges: [[0; 2]; COPY_RANGES],
        valid: 0,
    };
}

/// Kernel-side per-socket state, kept in socket-local storage (`SOCK_STORE`) or, where tracing
/// programs cannot use it, in the `SOCKS` hash map keyed by the socket's address
/// (`struct sock *`): see `hooks::store_mode`. Written by the tracepoint programs, read by the
/// sweep.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockState {
    /// `bpf_ktime_get_ns()` when the socket entered `state`; 0 = not known (entered before
    /// tcpwatch saw it, or a change was missed: see `state_after_ns`).
    pub state_since_ns: u64,
    /// Socket cookie (`bpf_get_socket_cookie`) of the socket this entry belongs to: the
    /// generation check against a new socket at a reused address. 0 = not known yet (the
    /// `raw_tp` fallback cannot ask for it; the sweep fills it in).
    pub cookie: u64,
    /// Cookie of the socket's network namespace (garbage collection is limited to the
    /// namespaces a sweep read completely).
    pub netns_cookie: u64,
    /// `bpf_ktime_get_ns()` of the last sweep that listed the socket (in `state`).
    pub last_sweep_ns: u64,
    /// When `state_since_ns` is 0 because a change was missed: the state was entered after
    /// this time (the last sweep that saw the previous state). 0 = no such bound.
    pub state_after_ns: u64,
    /// `bpf_ktime_get_ns()` of the last retransmission, 0 = none.
    pub last_retrans_ns: u64,
    /// `bpf_ktime_get_ns()` when the current retransmission chain started, 0 = no chain.
    pub chain_start_ns: u64,
    /// `bpf_ktime_get_ns()` when tcpwatch first saw this socket.
    pub first_seen_ns: u64,
    /// Retransmissions seen by tcpwatch (the sweep also reports the kernel's `total_retrans`).
    pub retrans: u32,
    /// Consecutive retransmissions with no advance of `snd_una` in between.
    pub chain: u32,
    /// `snd_una` at the last retransmission (the chain resets when it moves).
    pub chain_snd_una: u32,
    pub resets_sent: u32,
    pub resets_received: u32,
    /// tgid of the task that called `connect()`/`listen()` on this socket, 0 = unknown.
    pub pid: u32,
    pub comm: [u8; 16],
    pub state: u8,
    /// Non-zero once a state event put the socket in userspace's table although no sweep had
    /// listed it (a new listener): its later changes are sent as events too.
    pub reported: u8,
    pub pad: [u8; 2],
    /// Fingerprint of the last full sweep record written for this socket ([`delta`]), valid
    /// for sweeps of generation `sweep_gen` only (0 = none written).
    pub sweep_fp: u64,
    pub sweep_gen: u64,
}

/// Event kinds pushed through the `EVENTS` ring buffer.
pub mod event_kind {
    /// A TCP state change (`sock:inet_sock_set_state`).
    pub const STATE: u8 = 1;
}

/// One state change of a socket userspace knows (a sweep listed it, or it is a listener),
/// pushed through the `EVENTS` ring buffer so that the userspace table sees it within
/// milliseconds (queues come from the periodic sweep). Changes of sockets no sweep has listed
/// yet are only counted (`counter::STATE_CHANGES_COUNTED`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateEvent {
    pub ts_ns: u64,
    pub skaddr: u64,
    /// Socket cookie (0 = not known: `raw_tp` fallback).
    pub cookie: u64,
    pub netns_cookie: u64,
    /// Kernel counters of this socket at the time of the event (final values on CLOSE).
    pub state_since_ns: u64,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub netns_ino: u32,
    /// tgid of the current task (meaningful for `SYN_SENT` and `LISTEN`, which run in process
    /// context; other transitions often run in softirq context).
    pub pid: u32,
    pub comm: [u8; 16],
    pub retrans: u32,
    pub resets_sent: u32,
    pub resets_received: u32,
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub kind: u8,
    pub oldstate: u8,
    pub newstate: u8,
    pub pad: [u8; 3],
}

/// Bits of [`SockRecord::flags`].
pub mod record_flags {
    /// The record carries `tcp_sock` fields (not a `TIME_WAIT` or `NEW_SYN_RECV` minisocket).
    pub const FULL_SOCK: u8 = 1;
    /// `SOCKS` had an entry for this socket (state age and chain are from tracepoints).
    pub const TRACKED: u8 = 2;
    /// The socket has a `struct socket` (0 = no owner: orphaned or still in an accept queue).
    pub const HAS_SOCKET: u8 = 4;
    /// `SO_KEEPALIVE` is on (`SOCK_KEEPOPEN` in `sk_flags`).
    pub const KEEPALIVE: u8 = 8;
}

/// Magic of the header record that starts each sweep's output.
pub const SWEEP_MAGIC: u32 = 0x7463_7077; // "tcpw"

/// The first record of every sweep (clocks to convert jiffies and ages), and its last (the
/// trailer, [`sweep_flags::TRAILER`], written on the iterator's final call): what the sweep
/// counted instead of listing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepHeader {
    pub magic: u32,
    pub abi_version: u32,
    pub ktime_ns: u64,
    pub jiffies: u64,
    /// Trailer only: `TIME_WAIT` minisockets (substate `TIME_WAIT`) the sweep counted instead
    /// of writing a record each (any it could not count are written in full as before).
    pub time_wait: u64,
    /// Bits of [`sweep_flags`].
    pub flags: u64,
    /// Padding to the size of a [`SockRecord`] so the stream is a sequence of equal slots.
    pub pad: [u64; (SOCK_RECORD_SIZE - 40) / 8],
}

/// Bits of [`SweepHeader::flags`].
pub mod sweep_flags {
    /// The header written on the iterator's final call: the sweep is complete and its counts
    /// are final. A sweep output without one is refused (its counts would be short).
    pub const TRAILER: u64 = 1;
}

/// One socket as the `iter/tcp` sweep sees it, merged with its `SOCKS` entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockRecord {
    pub skaddr: u64,
    /// `bpf_ktime_get_ns()` when the record was made: the time its jiffies ages refer to (a
    /// large namespace takes a while to sweep). 0 for minisockets.
    pub seen_ns: u64,
    /// Socket cookie: tells a new socket at a reused address from the old one.
    pub cookie: u64,
    /// See [`SockState::state_after_ns`] (0 = no bound).
    pub state_after_ns: u64,
    pub netns_cookie: u64,
    /// Socket inode (as in `/proc/PID/fd` links `socket:[N]`), 0 = no `struct socket`.
    pub inode: u64,
    pub state_since_ns: u64,
    pub first_seen_ns: u64,
    pub last_retrans_ns: u64,
    pub chain_start_ns: u64,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub comm: [u8; 16],
    pub netns_ino: u32,
    pub uid: u32,
    pub pid: u32,
    // tcp_sock sequence numbers: Send-Q = write_seq - snd_una; Recv-Q = rcv_nxt - copied_seq.
    pub write_seq: u32,
    pub snd_una: u32,
    pub snd_nxt: u32,
    pub rcv_nxt: u32,
    pub copied_seq: u32,
    /// Peer's advertised receive window (bytes, scaled).
    pub snd_wnd: u32,
    /// Smoothed RTT in microseconds, << 3 as the kernel stores it.
    pub srtt_us8: u32,
    /// Retransmission timeout in jiffies.
    pub rto_jiffies: u32,
    pub user_timeout_ms: u32,
    pub total_retrans: u32,
    pub ack_backlog: u32,
    pub max_ack_backlog: u32,
    pub sndbuf: u32,
    pub wmem_queued: u32,
    /// Ages in jiffies, computed in the kernel against `jiffies`: last send, last ACK received,
    /// last data received.
    pub lsnd_age_jiffies: u32,
    pub rcv_tstamp_age_jiffies: u32,
    pub lrcv_age_jiffies: u32,
    pub retrans: u32,
    pub chain: u32,
    pub resets_sent: u32,
    pub resets_received: u32,
    /// `tcp_sock.data_segs_in` / `data_segs_out`: data segments received / sent (0 = the peer
    /// never sent data / we never did).
    pub data_segs_in: u32,
    pub data_segs_out: u32,
    /// `tcp_sock.keepalive_time` / `keepalive_intvl` in jiffies (0 = the namespace's
    /// `tcp_keepalive_time` / `tcp_keepalive_intvl`).
    pub keepalive_time_jiffies: u32,
    pub keepalive_intvl_jiffies: u32,
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub state: u8,
    pub flags: u8,
    pub backoff: u8,
    pub retransmits: u8,
    pub probes_out: u8,
    /// `tcp_sock.keepalive_probes` (0 = the namespace's `tcp_keepalive_probes`).
    pub keepalive_probes: u8,
    pub pad: [u8; 4],
}

pub const SOCK_RECORD_SIZE: usize = core::mem::size_of::<SockRecord>();

/// Key of the `PORT_RESETS` map: resets counted per local port and namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortKey {
    pub netns_cookie: u64,
    pub port: u16,
    pub pad: [u8; 6],
}

/// Value of the `PORT_RESETS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortResets {
    pub sent: u64,
    pub received: u64,
}

/// Indexes into the per-CPU `COUNTERS` array: everything the kernel side could not do is
/// counted here and exported, never dropped silently.
pub mod counter {
    /// State events submitted to the ring buffer.
    pub const EVENTS_SUBMITTED: u32 = 0;
    /// State events lost because the ring buffer was full.
    pub const EVENTS_DROPPED: u32 = 1;
    /// Per-socket state that could not be created: `SOCKS` inserts that failed (map full) or
    /// socket-local storage that could not be allocated.
    pub const SOCKS_FULL: u32 = 2;
    /// Retransmissions seen.
    pub const RETRANS: u32 = 3;
    pub const RESETS_SENT: u32 = 4;
    pub const RESETS_RECEIVED: u32 = 5;
    /// `PORT_RESETS` updates that failed.
    pub const PORT_RESETS_FULL: u32 = 6;
    /// Sockets the sweep could not report: the socket could not be copied (not expected).
    /// A `bpf_seq_write` into a full seq buffer is not counted: the kernel rolls the record
    /// back and shows the same socket again on the next `read()` (nothing is lost); a record
    /// larger than the whole buffer fails the `read()` with E2BIG, a namespace sweep error.
    pub const SWEEP_WRITE_FAILED: u32 = 7;
    /// State changes by new state: [`STATE_SLOTS`] slots from here, indexed by the kernel's
    /// state number. `STATE_CHANGES_SENT`: changes of sockets userspace knows (a sweep listed
    /// them, or listeners), for which a `StateEvent` was written (`EVENTS_SUBMITTED`) or lost
    /// (`EVENTS_DROPPED`).
    pub const STATE_CHANGES_SENT: u32 = 8;
    /// Changes of sockets no sweep has listed yet (connections that open and close between
    /// two sweeps): counted here only, no event. Their per-socket state is kept as for the
    /// others, so a sweep that lists the socket still shows its exact state age.
    pub const STATE_CHANGES_COUNTED: u32 = STATE_CHANGES_SENT + STATE_SLOTS;
    /// Slots per state-change row: the kernel's TCP states are 1..=12.
    pub const STATE_SLOTS: u32 = 16;
    pub const COUNT: u32 = STATE_CHANGES_COUNTED + STATE_SLOTS;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type below is #[repr(C)], Copy, made only of integers and byte arrays, with
    // explicit padding fields, so any bit pattern is a valid value.
    unsafe impl aya::Pod for super::KernelOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SockState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::StateEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SockRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PortKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PortResets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::delta::SweepCtl {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        // Sum of field sizes equals the struct size: the kernel can't leak or leave garbage.
        assert_eq!(
            core::mem::size_of::<SockState>(),
            8 * 8 + 7 * 4 + 16 + 1 + 1 + 2 + 2 * 8
        );
        assert_eq!(
            core::mem::size_of::<StateEvent>(),
            5 * 8 + 32 + 4 + 4 + 16 + 12 + 6 + 3 + 3
        );
        assert_eq!(
            core::mem::size_of::<SockRecord>(),
            10 * 8 + 3 * 16 + 28 * 4 + 3 * 2 + 6 + 4
        );
        assert_eq!(core::mem::size_of::<SweepHeader>(), SOCK_RECORD_SIZE);
        assert_eq!(core::mem::size_of::<PortKey>(), 16);
        assert_eq!(
            core::mem::size_of::<KernelOffsets>(),
            (46 + 2 * COPY_RANGES) * 4
        );
    }
}
