//! Classification of resets and failed connects (issue 13), called from the hooks in
//! `programs.rs`. Counting only; every decision is made in userspace.
//!
//! - RST received in `CLOSE_WAIT`/`LAST_ACK`, or drawn by data this host's closed socket
//!   refused (`STALE_TUPLES`): a request written into a connection the peer had closed, counted
//!   per (netns, remote endpoint, connecting process) in `ENDPOINTS`.
//! - RST sent by a timewait minisocket (only `sock_common` fields are read from it) or by an
//!   orphaned socket on data: per (netns, local port) in `SERVER_RESETS`; sent for a segment
//!   that matched no socket: counted in `CLASS_COUNTERS`.
//! - Connects: `SYN_SENT` -> `ESTABLISHED`/`CLOSE`, SYN retransmissions, RST in `SYN_SENT`
//!   (refused), per (netns, remote endpoint, process) in `ENDPOINTS`. The connecting process,
//!   the SYN retransmissions and the refusal are read from the socket's entry (`store.rs`: its
//!   pid and comm are set in `SYN_SENT`, where it starts over, and its retransmission and
//!   received-reset counts are then those of the connect): no map of its own per connect.
//! - Listeners: a `LISTEN` on a (netns, address, port) whose previous listener closed is a
//!   server restart, with its time, in `LISTENS`.
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::{map, tracepoint},
    maps::{LruHashMap, LruPerCpuHashMap, PerCpuArray},
    programs::TracePointContext,
};
use tcpwatch_common::SockState;
use tcpwatch_common::{
    PortKey,
    endpoints::{
        EndpointCounts, EndpointKey, ListenInfo, ListenKey, RESET_REASONS_MAX, ResetTpOffsets,
        ServerResets, class_counter,
    },
    hooks::map_size,
    tcp_state,
};

use super::diag::{self, kind};
use super::{Tuple, ktime, netns_of, offsets, rd_ptr, store, tuple_of};

/// A `STALE_TUPLES` entry older than this is not matched to a received RST.
const STALE_TUPLE_MAX_AGE_NS: u64 = 2_000_000_000;

#[map]
static ENDPOINTS: LruPerCpuHashMap<EndpointKey, EndpointCounts> =
    LruPerCpuHashMap::with_max_entries(map_size::ENDPOINTS, 0);

#[map]
static SERVER_RESETS: LruPerCpuHashMap<PortKey, ServerResets> =
    LruPerCpuHashMap::with_max_entries(map_size::SERVER_RESETS, 0);

#[map]
static LISTENS: LruHashMap<ListenKey, ListenInfo> =
    LruHashMap::with_max_entries(map_size::LISTENS, 0);

/// RSTs this host just sent from a closed socket, keyed by the receiver's view of the tuple
/// (local = the peer that will receive it), valued with the time: a receiver on this host
/// classifies the RST as stale.
#[map]
static STALE_TUPLES: LruHashMap<TupleKey, u64> =
    LruHashMap::with_max_entries(map_size::STALE_TUPLES, 0);

/// ktime of the latest `STALE_TUPLES` insert (0: none yet). A received RST looks the map up
/// only while an entry can still match (younger than [`STALE_TUPLE_MAX_AGE_NS`]): the lookup
/// of a large, cold hash was a third of a received reset's cost, for a map that is empty
/// unless this host sends RSTs from closed sockets. Set before the insert; a global (`.bss`),
/// a plain store (two CPUs racing both store a recent time).
static mut LAST_STALE_NS: u64 = 0;

/// The tuple of an orphaned socket that is aborting on data, saved by `tcp_reset()`'s
/// tracepoint right before the RST goes out: by then the socket is `CLOSE` and its local
/// port (`skc_num`) was released to 0. Same CPU, same softirq, so one per-CPU slot.
#[map]
static ABORT_PENDING: PerCpuArray<PendingAbort> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct PendingAbort {
    sk: u64,
    saddr: [u8; 16],
    daddr: [u8; 16],
    sport: u16,
    dport: u16,
    family: u16,
    pad: u16,
}

#[map]
static CLASS_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(class_counter::COUNT, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct TupleKey {
    laddr: [u8; 16],
    raddr: [u8; 16],
    lport: u16,
    rport: u16,
    family: u16,
    pad: u16,
}

#[inline(always)]
fn class_count(idx: u32) {
    if let Some(p) = CLASS_COUNTERS.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *p += 1 };
    }
}

/// A failed insert: counted, and noted for the log the first time.
#[inline(always)]
fn class_full(idx: u32, kind: u32) {
    class_count(idx);
    diag::note(kind, 0);
}

/// The `ENDPOINTS` value of a remote endpoint as seen by `pid`, created if missing.
#[inline(always)]
fn endpoint(
    cookie: u64,
    t: &Tuple,
    pid: u32,
    comm: &[u8; 16],
    now: u64,
) -> Option<&'static mut EndpointCounts> {
    let key = EndpointKey {
        netns_cookie: cookie,
        addr: t.daddr,
        pid,
        port: t.dport,
        family: t.family,
    };
    if ENDPOINTS.get_ptr_mut(key).is_none() {
        let v = EndpointCounts {
            comm: *comm,
            ..EndpointCounts::default()
        };
        if ENDPOINTS.insert(key, v, 0).is_err() {
            class_full(class_counter::ENDPOINTS_FULL, kind::ENDPOINTS_FULL);
            return None;
        }
    }
    let p = ENDPOINTS.get_ptr_mut(key)?;
    // SAFETY: per-CPU value, only this CPU writes it while the program runs.
    let v = unsafe { &mut *p };
    v.last_ns = now;
    Some(v)
}

/// Process (tgid, comm) that called `connect()` on `sk`, from its entry (`store.rs`).
#[inline(always)]
fn connector<const BTF: bool>(sk: *const u8) -> (u32, [u8; 16]) {
    match store::peek::<BTF>(sk) {
        // SAFETY: the value is copied out at once; a concurrent update at worst gives a stale
        // pid.
        Some(st) => unsafe { ((*st).pid, (*st).comm) },
        None => (0, [0; 16]),
    }
}

/// `on_reset`'s flag (above the state's 8 bits): the reset is sent, not received.
pub(super) const SENT: u32 = 0x100;

/// Hook of `tcp_send_reset` / `tcp_receive_reset` for the socket `sk` (not NULL) in the
/// namespace `cookie`; `state_sent`: its state, with [`SENT`] for a sent reset (state and
/// namespace are read once, by the caller). `skb` is the segment answered (sent resets; NULL
/// for active resets and for received ones).
// A separate BPF function: its own stack frame (the callers' frames are large).
#[inline(never)]
pub(super) fn on_reset<const BTF: bool>(
    sk: *const u8,
    skb: *const u8,
    state_sent: u32,
    cookie: u64,
) {
    let state = state_sent as u8;
    if state_sent & SENT != 0 {
        on_sent(sk, skb, state, cookie);
    } else {
        on_received::<BTF>(sk, state, cookie);
    }
}

/// `tcp_send_reset` for a segment that matched no socket.
#[inline(always)]
pub(super) fn on_reset_no_socket() {
    class_count(class_counter::NO_SOCKET_RST_SENT);
}

#[inline(always)]
fn on_sent(sk: *const u8, skb: *const u8, state: u8, cookie: u64) {
    let o = offsets();
    let timewait = state == tcp_state::TIME_WAIT;
    // Only sock_common fields are read from a timewait minisocket: the rest is not a sock.
    let orphan = !timewait
        && !skb.is_null()
        && matches!(
            state,
            tcp_state::CLOSE
                | tcp_state::FIN_WAIT1
                | tcp_state::FIN_WAIT2
                | tcp_state::CLOSING
                | tcp_state::LAST_ACK
        )
        && rd_ptr(sk, o.sk_socket).is_null();
    if !timewait && !orphan {
        return;
    }
    class_count(if timewait {
        class_counter::TIMEWAIT_RST_SENT
    } else {
        class_counter::ORPHAN_RST_SENT
    });
    let now = ktime();
    let mut t = tuple_of(sk);
    if orphan && let Some(p) = ABORT_PENDING.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, only this CPU uses it while the program runs.
        let p = unsafe { &mut *p };
        if p.sk == sk as u64 {
            t.saddr = p.saddr;
            t.daddr = p.daddr;
            t.sport = p.sport;
            t.dport = p.dport;
            t.family = p.family;
        }
        p.sk = 0;
    }
    if t.sport == 0 {
        // Local port already released and not saved: nothing to attribute.
        return;
    }
    let key = PortKey {
        netns_cookie: cookie,
        port: t.sport,
        pad: [0; 6],
    };
    if SERVER_RESETS.get_ptr_mut(key).is_none()
        && SERVER_RESETS
            .insert(key, ServerResets::default(), 0)
            .is_err()
    {
        class_full(class_counter::SERVER_RESETS_FULL, kind::SERVER_RESETS_FULL);
    }
    if let Some(p) = SERVER_RESETS.get_ptr_mut(key) {
        // SAFETY: per-CPU value, only this CPU writes it.
        let p = unsafe { &mut *p };
        p.last_ns = now;
        if timewait {
            p.timewait_sent += 1;
        } else {
            p.orphan_sent += 1;
        }
    }
    let tk = TupleKey {
        laddr: t.daddr,
        raddr: t.saddr,
        lport: t.dport,
        rport: t.sport,
        family: t.family,
        pad: 0,
    };
    // SAFETY: a plain global u64 (see LAST_STALE_NS).
    unsafe { core::ptr::write_volatile(&raw mut LAST_STALE_NS, now) };
    if STALE_TUPLES.insert(tk, now, 0).is_err() {
        class_full(class_counter::STALE_TUPLES_FULL, kind::STALE_TUPLES_FULL);
    }
}

#[inline(always)]
fn on_received<const BTF: bool>(sk: *const u8, state: u8, cookie: u64) {
    let o = offsets();
    if state == tcp_state::TIME_WAIT || state == tcp_state::NEW_SYN_RECV {
        return;
    }
    let now = ktime();
    if state == tcp_state::SYN_SENT {
        // The refusal itself is the entry's received reset (counted by the caller next): the
        // connect's end (`connect_done`) reads it.
        let (pid, comm) = connector::<BTF>(sk);
        let t = tuple_of(sk);
        if let Some(v) = endpoint(cookie, &t, pid, &comm, now) {
            v.connects_refused += 1;
        }
        class_count(class_counter::CONNECTS_FAILED);
        return;
    }
    // An orphaned socket that aborts on data runs tcp_reset() too (this tracepoint) right
    // before it sends its RST: not a reset from the peer. Its tuple is saved for the RST.
    if matches!(
        state,
        tcp_state::FIN_WAIT1 | tcp_state::FIN_WAIT2 | tcp_state::CLOSING | tcp_state::LISTEN
    ) && rd_ptr(sk, o.sk_socket).is_null()
    {
        if let Some(p) = ABORT_PENDING.get_ptr_mut(0) {
            let t = tuple_of(sk);
            // SAFETY: per-CPU slot, only this CPU uses it while the program runs.
            unsafe {
                *p = PendingAbort {
                    sk: sk as u64,
                    saddr: t.saddr,
                    daddr: t.daddr,
                    sport: t.sport,
                    dport: t.dport,
                    family: t.family,
                    pad: 0,
                };
            }
        }
        return;
    }
    let t = tuple_of(sk);
    let tk = TupleKey {
        laddr: t.saddr,
        raddr: t.daddr,
        lport: t.sport,
        rport: t.dport,
        family: t.family,
        pad: 0,
    };
    // SAFETY: a plain global u64 (see LAST_STALE_NS).
    let last = unsafe { core::ptr::read_volatile(&raw const LAST_STALE_NS) };
    // (An insert on another CPU may carry a time after `now`: the map is read then.)
    let may_match = last != 0 && (last > now || now - last < STALE_TUPLE_MAX_AGE_NS);
    let by_peer = may_match
        // SAFETY: the value is copied out at once.
        && match unsafe { STALE_TUPLES.get(tk) } {
            Some(&at) => now.wrapping_sub(at) < STALE_TUPLE_MAX_AGE_NS,
            None => false,
        };
    if by_peer {
        let _ = STALE_TUPLES.remove(tk);
    }
    let stale = by_peer || state == tcp_state::CLOSE_WAIT || state == tcp_state::LAST_ACK;
    let (pid, comm) = connector::<BTF>(sk);
    // Accepted (server-side) sockets have no connecting process: only their stale resets are
    // kept (keyed by the client endpoint), not every reset from every client port.
    if pid == 0 && !stale {
        return;
    }
    if let Some(v) = endpoint(cookie, &t, pid, &comm, now) {
        if stale {
            v.stale_resets += 1;
        } else {
            v.resets_received += 1;
        }
    }
    if stale {
        class_count(class_counter::STALE_RST_RECEIVED);
    }
}

/// Hook of `inet_sock_set_state` (TCP sockets only), called by the state program before it
/// updates the socket's entry (whose values before the change end a connect, and which the
/// hash path deletes on `CLOSE`). `now`: the event's ktime.
// A separate BPF function: its own stack frame (the callers' frames are large).
#[inline(never)]
pub(super) fn on_state<const BTF: bool>(sk: *const u8, oldstate: u32, newstate: u32, now: u64) {
    let (oldstate, newstate) = (oldstate as u8, newstate as u8);
    if oldstate == tcp_state::SYN_SENT && newstate != tcp_state::SYN_SENT {
        connect_done::<BTF>(sk, newstate, now);
    }
    if newstate == tcp_state::LISTEN {
        listen_started(sk, now);
    } else if oldstate == tcp_state::LISTEN && newstate == tcp_state::CLOSE {
        let t = tuple_of(sk);
        let (cookie, _) = netns_of(sk);
        let lk = listen_key(cookie, &t);
        if let Some(p) = LISTENS.get_ptr_mut(lk) {
            // SAFETY: a racing listen() on the same key at worst loses one timestamp.
            unsafe { (*p).last_close_ns = now };
        }
    }
}

/// The end of a connect (`SYN_SENT` -> `newstate`), from the socket's entry as the connect
/// left it: the process that connected, its SYN retransmissions (every retransmission of a
/// socket in `SYN_SENT` is one) and whether a RST refused it (a reset received in `SYN_SENT`,
/// counted as refused when it came). No entry (it could not be created): not classified.
#[inline(always)]
fn connect_done<const BTF: bool>(sk: *const u8, newstate: u8, now: u64) {
    let Some(st) = store::peek::<BTF>(sk) else {
        return;
    };
    // SAFETY: the entry belongs to this socket and is only read here; the values are copied
    // out at once.
    let st: &SockState = unsafe { &*st };
    let (pid, comm, syn_retrans, refused) = (st.pid, st.comm, st.retrans, st.resets_received);
    if newstate == tcp_state::ESTABLISHED {
        let t = tuple_of(sk);
        let (cookie, _) = netns_of(sk);
        if let Some(v) = endpoint(cookie, &t, pid, &comm, now) {
            v.connects_ok += 1;
        }
    } else if newstate == tcp_state::CLOSE && refused == 0 {
        let t = tuple_of(sk);
        let (cookie, _) = netns_of(sk);
        if let Some(v) = endpoint(cookie, &t, pid, &comm, now) {
            if syn_retrans > 0 {
                v.connects_timed_out += 1;
            } else {
                v.connects_failed += 1;
            }
        }
        class_count(class_counter::CONNECTS_FAILED);
    }
}

#[inline(always)]
fn listen_key(cookie: u64, t: &Tuple) -> ListenKey {
    ListenKey {
        netns_cookie: cookie,
        addr: t.saddr,
        port: t.sport,
        family: t.family,
        pad: [0; 4],
    }
}

#[inline(always)]
fn listen_started(sk: *const u8, now: u64) {
    let t = tuple_of(sk);
    let (cookie, _) = netns_of(sk);
    let lk = listen_key(cookie, &t);
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let comm = bpf_get_current_comm().unwrap_or_default();
    if let Some(p) = LISTENS.get_ptr_mut(lk) {
        // SAFETY: listen() is rare; a racing update at worst loses one count.
        let p = unsafe { &mut *p };
        if p.last_close_ns != 0 && p.last_close_ns >= p.last_listen_ns {
            p.restarts += 1;
            p.last_restart_ns = now;
        }
        p.listens += 1;
        p.last_listen_ns = now;
        p.pid = pid;
        p.comm = comm;
        return;
    }
    let v = ListenInfo {
        last_listen_ns: now,
        listens: 1,
        pid,
        comm,
        ..ListenInfo::default()
    };
    if LISTENS.insert(lk, v, 0).is_err() {
        class_full(class_counter::LISTENS_FULL, kind::LISTENS_FULL);
    }
}

/// Hook of `tcp_retransmit_skb` for a socket in `SYN_SENT`: SYN retransmissions of connects
/// in progress.
// A separate BPF function: its own stack frame (the callers' frames are large).
#[inline(never)]
pub(super) fn on_retransmit<const BTF: bool>(sk: *const u8, now: u64) {
    // The connect's process, from the socket's entry (its retransmission count is the
    // connect's SYN retransmissions, see `connect_done`). No entry: not classified.
    let Some(st) = store::peek::<BTF>(sk) else {
        return;
    };
    // SAFETY: the values are copied out at once.
    let (pid, comm) = unsafe { ((*st).pid, (*st).comm) };
    let t = tuple_of(sk);
    let (cookie, _) = netns_of(sk);
    if let Some(v) = endpoint(cookie, &t, pid, &comm, now) {
        v.syn_retrans += 1;
    }
}

// ------------------------------------------------------------------------------------------
// Reasons of sent resets (classic tracepoint: its record carries `reason` on Linux 6.10+; the
// BTF-typed hooks above cannot read a third argument on older kernels, so the reason is read
// from here, at the offset userspace found in the tracepoint's format file).

/// Patched by userspace (`EbpfLoader::override_global`).
#[unsafe(no_mangle)]
static RESET_TP: ResetTpOffsets = ResetTpOffsets {
    reason: 0,
    valid: 0,
};

/// RSTs sent per `enum sk_rst_reason` value.
#[map]
static RESET_REASONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(RESET_REASONS_MAX, 0);

#[tracepoint]
pub fn tp_tcp_send_reset_reason(ctx: TracePointContext) -> u32 {
    // SAFETY: RESET_TP is a plain static; the volatile read keeps the compiler from folding
    // the pre-patch values (userspace rewrites .rodata before load).
    let o = unsafe { core::ptr::read_volatile(&raw const RESET_TP) };
    if o.valid == 0 {
        return 0;
    }
    // SAFETY: the offset comes from this tracepoint's format file; the helper checks the read.
    let reason: u32 = unsafe { ctx.read_at::<u32>(o.reason as usize) }.unwrap_or(u32::MAX);
    let idx = reason.min(RESET_REASONS_MAX - 1);
    if let Some(p) = RESET_REASONS.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *p += 1 };
    }
    0
}
