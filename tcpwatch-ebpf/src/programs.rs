//! Kernel programs: they sample, count and keep per-socket history (state ages, retransmit
//! chains); findings are decided in userspace.
//!
//! - `inet_sock_set_state` (tp_btf, raw_tp fallback): connect and listener classification
//!   (`classify.rs`), then per-socket state and entry time (`store.rs`); a `StateEvent` through
//!   the `EVENTS` ring buffer, read in batches (`wakeup`), only for sockets userspace knows (a
//!   sweep listed them, or listeners). Changes of the others (connections that open and close
//!   between two sweeps) are counted by new state in `COUNTERS`
//!   (`counter::STATE_CHANGES_COUNTED`), not sent. One program per hook: one dispatch, one
//!   protocol check and one clock read per event for both.
//! - `tcp_retransmit_skb` (tp_btf, raw_tp fallback): retransmission totals and chains.
//! - `tcp_send_reset` / `tcp_receive_reset` (tp_btf, raw_tp fallback): resets per socket and per
//!   local port.
//! - `iter/tcp` sweep: every TCP socket of one network namespace with its queues and timers,
//!   merged with its `SOCKS` entry, written to the iterator's seq_file.
//!
//! Struct field offsets come from the running kernel's BTF, patched into `OFFSETS` by userspace.
//! Socket fields are read in `fields.rs` (one address reader for every program); hook names and
//! map sizes are in `tcpwatch_common::hooks`.
#![expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "kernel fields are read at their exact widths and stored in the ABI's integer sizes"
)]

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid,
        generated::{
            bpf_get_socket_cookie, bpf_jiffies64, bpf_ktime_get_ns,
            bpf_probe_read_kernel as probe_read_raw, bpf_seq_write,
        },
    },
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::{Array, HashMap, LruPerCpuHashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use tcpwatch_common::{
    ABI_VERSION, COPY_RANGES, KernelOffsets, OFFSET_MISSING, PortKey, PortResets, SOCK_COPY_LEN,
    SOCK_RECORD_SIZE, SWEEP_MAGIC, SockRecord, SockState, StateEvent, SweepHeader, counter,
    delta::{FP_SEED, SEEN_TAG, SOCK_SEEN_SIZE, SweepCtl, fp_step},
    event_kind,
    hooks::map_size,
    record_flags, sweep_flags, tcp_state,
};

#[path = "classify.rs"]
mod classify;
#[path = "diag.rs"]
mod diag;
#[path = "fields.rs"]
mod fields;
#[path = "store.rs"]
mod store;
#[path = "wakeup.rs"]
mod wakeup;

use fields::{
    Copied, Fields, Live, Tuple, TupleOut, bfn, netns, netns_of, rd, rd_ptr, rd_through,
    read_tuple, tuple, tuple_of,
};

const IPPROTO_TCP: u16 = 6;
/// `BPF_F_NO_PREALLOC`: memory follows the number of sockets instead of the map's maximum.
const NO_PREALLOC: u32 = 1;

/// Patched by userspace (`EbpfLoader::override_global`) with offsets from kernel BTF.
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets::UNSET;

/// Per-socket state keyed by the socket's address, where socket-local storage cannot be used
/// (`store.rs`). Sized by userspace (`set_max_entries`).
#[map]
static SOCKS: HashMap<u64, SockState> =
    HashMap::with_max_entries(map_size::SOCKS_IN_OBJECT, NO_PREALLOC);

/// State changes for userspace. Sized by userspace.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(map_size::EVENTS_BYTES, 0);

/// Resets per (namespace, local port). LRU: once full, a new port evicts the least recently
/// used one, whose counts start again from zero if it comes back. Evictions are not counted
/// (the kernel does not report them); `PORT_RESETS_FULL` counts only inserts that failed.
#[map]
static PORT_RESETS: LruPerCpuHashMap<PortKey, PortResets> =
    LruPerCpuHashMap::with_max_entries(map_size::PORT_RESETS, 0);

/// Self-accounting (see `tcpwatch_common::counter`).
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// The state program's copy of a socket's `sock_common` (one helper call per event; the
/// program does not nest on a CPU, and no other program uses this buffer).
#[map]
static EVENT_COPY: PerCpuArray<[u8; EVENT_COPY_LEN]> = PerCpuArray::with_max_entries(1, 0);
const EVENT_COPY_LEN: usize = 256;

/// The sweep's copy of the socket being read, each range at its own offset (`copy_full`):
/// twice `SOCK_COPY_LEN`, so that the verifier can bound any range below it.
#[map]
static SOCK_COPY: PerCpuArray<[u8; 2 * SOCK_COPY_LEN]> = PerCpuArray::with_max_entries(1, 0);

/// Scratch space for one sweep record (too large for the 512-byte BPF stack with the rest).
#[map]
static SCRATCH: PerCpuArray<SockRecord> = PerCpuArray::with_max_entries(1, 0);

/// The change-only sweep's generation, set by userspace before each namespace's sweep
/// (`tcpwatch_common::delta`).
#[map]
static SWEEP_CTL: Array<SweepCtl> = Array::with_max_entries(1, 0);

/// A new `SOCKS` value is built here, not on the stack: a `SockState` on the 512-byte BPF stack
/// pushed the state program past Linux 6.1's combined stack limit. Slot 0: the state program;
/// slot 1: the others (a softirq's program may run between two steps of the state program).
#[map]
static NEW_SOCK: PerCpuArray<SockState> = PerCpuArray::with_max_entries(2, 0);
#[inline(always)]
fn offsets() -> &'static KernelOffsets {
    // SAFETY: OFFSETS is a plain static; reading through a volatile pointer keeps the compiler
    // from constant-folding the pre-patch values (userspace rewrites .rodata before load).
    unsafe { &*core::ptr::read_volatile(&&raw const OFFSETS) }
}

#[inline(always)]
fn count(idx: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *p += 1 };
    }
}

/// A failed insert or reserve: counted, and noted for the log the first time.
#[inline(always)]
fn full(idx: u32, kind: u32) {
    count(idx);
    diag::note(kind, 0);
}

#[inline(always)]
fn ktime() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// The socket's cookie: its generation, told apart from an earlier socket at the same address.
/// Only BTF-typed programs (`tp_btf`, `iter`) may call the helper (Linux 5.12+); the `raw_tp`
/// fallback gets 0 ("not known"), and the sweep fills the entry's cookie in later.
#[inline(always)]
fn cookie_of<const BTF: bool>(sk: *const u8) -> u64 {
    if BTF {
        // SAFETY: `sk` is the BTF-typed socket pointer the kernel passed to this program; the
        // helper accepts it (and NULL) and only reads or generates the socket's cookie.
        unsafe { bpf_get_socket_cookie(sk.cast_mut().cast()) }
    } else {
        0
    }
}

/// Writes the tuple and namespace of `sk` into the event, from one copy of its
/// `sock_common` (a read per field if the copy fails).
///
/// # Safety
/// `ev` points to a reserved, exclusively owned ring buffer slot.
#[inline(always)]
unsafe fn fill_common(ev: *mut StateEvent, sk: *const u8) {
    let o = offsets();
    let len = o.common_read_len.min(EVENT_COPY_LEN as u32);
    if let Some(buf) = EVENT_COPY.get_ptr_mut(0)
        && len > 0
        // SAFETY: `buf` holds EVENT_COPY_LEN >= len bytes; the helper checks the source.
        && unsafe { probe_read_raw(buf.cast(), len, sk.cast()) } == 0
    {
        // SAFETY: as this function's (caller).
        unsafe { write_common(ev, Copied::<EVENT_COPY_LEN>(buf.cast()), o) };
        return;
    }
    diag::note(diag::kind::COPY_FAILED, u64::from(len));
    // SAFETY: as this function's (caller).
    unsafe { write_common(ev, Live(sk), o) };
}

/// Each branch of [`fill_common`] writes the event in place: a tuple merged from both would
/// take its own stack slot in the state program.
///
/// # Safety
/// As [`fill_common`].
#[inline(always)]
unsafe fn write_common<F: Fields>(ev: *mut StateEvent, f: F, o: &KernelOffsets) {
    // SAFETY: `ev` is valid for writes and not aliased (caller).
    let ev = unsafe { &mut *ev };
    read_tuple(f, o, ev);
    (ev.netns_cookie, ev.netns_ino) = netns(f, o);
}

impl TupleOut for StateEvent {
    #[inline(always)]
    fn set_ports(&mut self, family: u16, sport: u16, dport: u16) {
        (self.family, self.sport, self.dport) = (family, sport, dport);
    }
    #[inline(always)]
    fn addrs(&mut self) -> (&mut [u8; 16], &mut [u8; 16]) {
        (&mut self.saddr, &mut self.daddr)
    }
}

#[inline(always)]
fn is_tcp(sk: *const u8) -> bool {
    let o = offsets();
    o.valid != 0 && rd::<u16>(sk, o.sk_protocol) == IPPROTO_TCP
}

// ------------------------------------------------------------------------------------------
// State changes

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn tp_inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    on_state_change::<true>(ctx.arg(0), ctx.arg(1), ctx.arg(2));
    0
}

#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn raw_inet_sock_set_state(ctx: RawTracePointContext) -> i32 {
    on_state_change::<false>(ctx.arg(0), ctx.arg(1), ctx.arg(2));
    0
}

/// Classification first (it reads the socket's entry as the change found it), then the
/// state. Each is a BPF function of its own, called from this small frame: their stacks
/// together exceed the 512 bytes Linux before 6.13 allows a call chain (tracing programs have
/// no private stack there), one after the other they do not.
#[inline(always)]
fn on_state_change<const BTF: bool>(sk: *const u8, oldstate: i32, newstate: i32) {
    if sk.is_null() || !is_tcp(sk) {
        return;
    }
    let now = ktime();
    classify::on_state::<BTF>(sk, oldstate as u32, newstate as u32, now);
    on_state::<BTF>(sk, oldstate as u32, newstate as u32, now);
}

/// What a state change leaves in `SOCKS` and reports in its event.
struct Tracked {
    pid: u32,
    comm: [u8; 16],
    retrans: u32,
    resets_sent: u32,
    resets_received: u32,
    /// Whether userspace knows the socket, so that the change goes out as an event: a sweep
    /// listed it, or an event put it in the table (listeners), or it has no entry (SOCKS full,
    /// storage not allocated: as before, an event rather than nothing).
    send: bool,
}

/// Updates (or creates; on CLOSE, for the hash, deletes) the socket's entry (`store.rs`).
#[inline(always)]
fn track_state<const BTF: bool>(
    sk: *const u8,
    cookie: u64,
    newstate: u8,
    now: u64,
    pid: u32,
    comm: [u8; 16],
) -> Tracked {
    let process_context = store::starts_over(newstate);
    let mut out = Tracked {
        pid,
        comm,
        retrans: 0,
        resets_sent: 0,
        resets_received: 0,
        send: true,
    };
    let entry = if newstate == tcp_state::CLOSE {
        store::lookup::<BTF>(sk, cookie, now, newstate)
    } else {
        store::get_or_create::<BTF>(
            sk,
            cookie,
            now,
            newstate,
            store::NEW_SOCK_STATE,
            process_context,
        )
        .map(|(p, _)| p)
    };
    if let Some(st) = entry {
        // SAFETY: the entry belongs to this socket; state changes run under the socket lock.
        let st = unsafe { &mut *st };
        st.state = newstate;
        st.state_since_ns = now;
        st.state_after_ns = 0;
        if process_context {
            st.pid = pid;
            st.comm = comm;
        }
        if newstate == tcp_state::LISTEN {
            st.reported = 1;
        }
        out = Tracked {
            pid: st.pid,
            comm: st.comm,
            retrans: st.retrans,
            resets_sent: st.resets_sent,
            resets_received: st.resets_received,
            send: st.last_sweep_ns != 0 || st.reported != 0,
        };
    }
    if newstate == tcp_state::CLOSE {
        store::forget::<BTF>(sk);
    }
    out
}

/// The state part of a change of the TCP socket `sk` at `now`.
// A separate BPF function: see `on_state_change`.
#[inline(never)]
fn on_state<const BTF: bool>(sk: *const u8, oldstate: u32, newstate: u32, now: u64) {
    let key = sk as u64;
    // Storage needs the cookie only for a new entry (`store::get_or_create` reads it then)
    // and for an event: not read on every change.
    let mut cookie = if store::sk_storage::<BTF>() {
        0
    } else {
        cookie_of::<BTF>(sk)
    };
    let newstate = newstate as u8;
    let (pid, comm) = if newstate == tcp_state::SYN_SENT || newstate == tcp_state::LISTEN {
        (
            (bpf_get_current_pid_tgid() >> 32) as u32,
            bpf_get_current_comm().unwrap_or_default(),
        )
    } else {
        (0, [0; 16])
    };
    let tracked = track_state::<BTF>(sk, cookie, newstate, now, pid, comm);
    let row = u32::from(newstate) % counter::STATE_SLOTS;
    if !tracked.send {
        // No sweep has listed the socket: userspace does not know it, and the next sweep shows
        // it (with its exact state age) if it is still there. Counted, not sent.
        count(counter::STATE_CHANGES_COUNTED + row);
        return;
    }
    count(counter::STATE_CHANGES_SENT + row);
    // The reservation is tested exactly once: older verifiers (Linux 6.1) do not carry a
    // null check over to a second test and would see a path that leaks the reservation.
    // The event is written in place (the BPF stack is only 512 bytes).
    let Some(mut slot) = EVENTS.reserve::<StateEvent>(0) else {
        full(counter::EVENTS_DROPPED, diag::kind::EVENTS_FULL);
        return;
    };
    let ev: *mut StateEvent = slot.as_mut_ptr();
    // SAFETY: `ev` points to the reserved slot.
    unsafe { fill_common(ev, sk) };
    if cookie == 0 {
        cookie = cookie_of::<BTF>(sk);
    }
    // SAFETY: `ev` points to a reserved, exclusively owned ring buffer slot of the right size.
    unsafe {
        (*ev).kind = event_kind::STATE;
        (*ev).ts_ns = now;
        (*ev).skaddr = key;
        (*ev).cookie = cookie;
        (*ev).oldstate = oldstate as u8;
        (*ev).newstate = newstate;
        (*ev).state_since_ns = now;
        (*ev).pid = tracked.pid;
        (*ev).comm = tracked.comm;
        (*ev).retrans = tracked.retrans;
        (*ev).resets_sent = tracked.resets_sent;
        (*ev).resets_received = tracked.resets_received;
        (*ev).pad = [0; 3];
    }
    slot.submit(wakeup::submit_flags(now));
    count(counter::EVENTS_SUBMITTED);
}

// ------------------------------------------------------------------------------------------
// Retransmissions

#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tp_tcp_retransmit_skb(ctx: BtfTracePointContext) -> i32 {
    on_retransmit::<true>(ctx.arg(0));
    0
}

#[raw_tracepoint(tracepoint = "tcp_retransmit_skb")]
pub fn raw_tcp_retransmit_skb(ctx: RawTracePointContext) -> i32 {
    on_retransmit::<false>(ctx.arg(0));
    0
}

#[inline(always)]
fn on_retransmit<const BTF: bool>(sk: *const u8) {
    count(counter::RETRANS);
    if sk.is_null() || offsets().valid == 0 {
        return;
    }
    let now = ktime();
    let state: u8 = rd(sk, offsets().skc_state);
    if state == tcp_state::SYN_SENT {
        classify::on_retransmit::<BTF>(sk, now);
    }
    let snd_una: u32 = rd(sk, offsets().snd_una);
    // Storage reads the cookie only for a new entry (`store::get_or_create`).
    let cookie = if store::sk_storage::<BTF>() {
        0
    } else {
        cookie_of::<BTF>(sk)
    };
    let Some(st) = store::sock_entry::<BTF>(sk, cookie, now, state) else {
        return;
    };
    // SAFETY: the entry belongs to this socket; retransmissions run under the socket lock.
    let st = unsafe { &mut *st };
    st.retrans = st.retrans.wrapping_add(1);
    if st.chain > 0 && st.chain_snd_una == snd_una {
        st.chain += 1;
    } else {
        st.chain = 1;
        st.chain_start_ns = now;
        st.chain_snd_una = snd_una;
    }
    st.last_retrans_ns = now;
}

// ------------------------------------------------------------------------------------------
// Resets

#[btf_tracepoint(function = "tcp_send_reset")]
pub fn tp_tcp_send_reset(ctx: BtfTracePointContext) -> i32 {
    on_reset::<true>(ctx.arg(0), ctx.arg(1), true);
    0
}

#[raw_tracepoint(tracepoint = "tcp_send_reset")]
pub fn raw_tcp_send_reset(ctx: RawTracePointContext) -> i32 {
    on_reset::<false>(ctx.arg(0), ctx.arg(1), true);
    0
}

#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn tp_tcp_receive_reset(ctx: BtfTracePointContext) -> i32 {
    on_reset::<true>(ctx.arg(0), core::ptr::null(), false);
    0
}

#[raw_tracepoint(tracepoint = "tcp_receive_reset")]
pub fn raw_tcp_receive_reset(ctx: RawTracePointContext) -> i32 {
    on_reset::<false>(ctx.arg(0), core::ptr::null(), false);
    0
}

/// A reset sent (`skb`: the segment answered, NULL for an active reset) or received on `sk`:
/// classification (`classify.rs`), the count per local port, the socket's count. The socket's
/// state and namespace are read once for all three.
#[inline(always)]
fn on_reset<const BTF: bool>(sk: *const u8, skb: *const u8, sent: bool) {
    count(if sent {
        counter::RESETS_SENT
    } else {
        counter::RESETS_RECEIVED
    });
    if offsets().valid == 0 {
        return;
    }
    // A reset sent for a segment that matched no socket has sk == NULL: counted only.
    if sk.is_null() {
        if sent {
            classify::on_reset_no_socket();
        }
        return;
    }
    let o = offsets();
    let state: u8 = rd(sk, o.skc_state);
    let (cookie, _) = netns_of(sk);
    let state_sent = u32::from(state) | if sent { classify::SENT } else { 0 };
    classify::on_reset::<BTF>(sk, skb, state_sent, cookie);
    // A socket closed with SO_LINGER 0 or with unread data goes to CLOSE, which releases its
    // local port (`skc_num` = 0), and only then sends its RST: the bound port is still in
    // `inet_sport` (network order).
    let mut port: u16 = rd(sk, o.skc_num);
    if port == 0 {
        port = u16::from_be(rd(sk, o.inet_sport));
    }
    let key = PortKey {
        netns_cookie: cookie,
        port,
        pad: [0; 6],
    };
    if let Some(p) = PORT_RESETS.get_ptr_mut(key) {
        // SAFETY: per-CPU value, only this CPU writes it.
        let p = unsafe { &mut *p };
        if sent {
            p.sent += 1;
        } else {
            p.received += 1;
        }
    } else {
        // A new port: inserted with this reset counted (no second lookup). The kernel sets
        // this CPU's value and zeroes the others'.
        let first = PortResets {
            sent: u64::from(sent),
            received: u64::from(!sent),
        };
        if PORT_RESETS.insert(key, first, 0).is_err() {
            full(counter::PORT_RESETS_FULL, diag::kind::PORT_RESETS_FULL);
        }
    }
    // TIME_WAIT and request minisockets have no entry and are not full sockets.
    if state == tcp_state::TIME_WAIT || state == tcp_state::NEW_SYN_RECV {
        return;
    }
    if let Some(st) = store::existing::<BTF>(sk, state) {
        // SAFETY: the entry belongs to this socket.
        let st = unsafe { &mut *st };
        if sent {
            st.resets_sent = st.resets_sent.wrapping_add(1);
        } else {
            st.resets_received = st.resets_received.wrapping_add(1);
        }
    }
}

// ------------------------------------------------------------------------------------------
// Sweep: iter/tcp, in sweep.rs.

#[path = "sweep.rs"]
mod sweep;
#[path = "walk_ref.rs"]
mod walk_ref;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
