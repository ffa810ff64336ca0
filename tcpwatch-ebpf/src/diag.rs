//! Rare diagnostics, carried to the daemon's log by aya-log: the first failed read through a
//! pointer taken from a socket (an offset that turned out invalid), the first failed copy of a socket, the first
//! time each map is full. The per-event paths only note them in `DIAG` (on their failure
//! branches, which already count the failure); the log records are written by the sweep
//! ([`flush`], once per namespace sweep), so no program on a per-event hook formats or
//! submits a log record, and none carries the logger's stack frame.
use aya_log_ebpf::warn;

/// Kinds of diagnostics: indexes into `DIAG`.
pub(super) mod kind {
    /// A read through a pointer taken from a socket (`struct net`, the socket's inode)
    /// failed (value: the offset read in the pointed-to struct): an offset is wrong.
    pub const READ_FAILED: u32 = 0;
    /// The one-read copy of a socket failed (value: its length).
    pub const COPY_FAILED: u32 = 1;
    pub const SOCKS_FULL: u32 = 2;
    /// The `EVENTS` ring buffer was full: a state event was dropped.
    pub const EVENTS_FULL: u32 = 3;
    pub const PORT_RESETS_FULL: u32 = 4;
    pub const ENDPOINTS_FULL: u32 = 5;
    pub const SERVER_RESETS_FULL: u32 = 6;
    pub const CONNECTING_FULL: u32 = 7;
    pub const LISTENS_FULL: u32 = 8;
    pub const STALE_TUPLES_FULL: u32 = 9;
    pub const COUNT: u32 = 10;
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct Diag {
    /// The value noted the first time (an offset, a length).
    value: u64,
    /// Non-zero once noted.
    seen: u32,
    /// Non-zero once logged.
    logged: u32,
}

/// One slot per kind, shared by all CPUs (two CPUs noting at once at worst both write the
/// first value; the sweep that logs runs on one CPU at a time). A global (`.bss`), not a
/// map: a store to it needs no key on the stack and no lookup, so noting adds no stack to
/// the per-event programs (a map lookup's key slot pushed the reset chain to the 512-byte
/// limit of Linux before 6.13).
static mut DIAG: [Diag; kind::COUNT as usize] = [Diag {
    value: 0,
    seen: 0,
    logged: 0,
}; kind::COUNT as usize];

/// Slot `kind` of `DIAG`.
#[inline(always)]
fn slot(kind: u32) -> Option<&'static mut Diag> {
    if kind >= kind::COUNT {
        return None;
    }
    // SAFETY: in bounds (checked above); see DIAG about concurrent writers.
    Some(unsafe { &mut *(&raw mut DIAG).cast::<Diag>().add(kind as usize) })
}

/// Notes a diagnostic: a compare and, the first time, two stores to a global, on a failure
/// branch only.
#[inline(always)]
pub(super) fn note(kind: u32, value: u64) {
    if let Some(d) = slot(kind)
        && d.seen == 0
    {
        d.value = value;
        d.seen = 1;
    }
}

/// Logs every diagnostic noted and not logged yet, once each. Called by the sweep.
// A BPF function of its own: the logger's frame is not added to the sweep's.
#[inline(never)]
pub(super) fn flush() {
    let mut k = 0;
    while k < kind::COUNT {
        if let Some(d) = slot(k)
            && d.seen != 0
            && d.logged == 0
        {
            d.logged = 1;
            report(k, d.value);
        }
        k += 1;
    }
}

#[inline(never)]
fn report(k: u32, value: u64) {
    let ctx = ();
    match k {
        kind::READ_FAILED => warn!(
            &ctx,
            "a read through a pointer taken from a socket failed (at offset {} of struct net or \
             inode): an offset from this kernel's BTF (skc_net, sk_socket) looks wrong, and \
             namespace cookies or inodes read as 0; report it with the kernel release",
            value
        ),
        kind::COPY_FAILED => warn!(
            &ctx,
            "a copy of a socket ({} bytes) failed: events read its fields one by one, the \
             sweep leaves it out (tcpwatch_sweep_write_failed_total)",
            value
        ),
        kind::SOCKS_FULL => warn!(
            &ctx,
            "SOCKS map full: new sockets are not tracked in the kernel \
             (tcpwatch_kernel_map_full_total, map socks); raise daemon.max_connections"
        ),
        kind::EVENTS_FULL => warn!(
            &ctx,
            "EVENTS ring buffer full: state events are dropped \
             (tcpwatch_ringbuf_dropped_events_total); raise --ringbuf-bytes"
        ),
        kind::PORT_RESETS_FULL => warn!(
            &ctx,
            "PORT_RESETS map: an insert failed (tcpwatch_kernel_map_full_total)"
        ),
        kind::ENDPOINTS_FULL => warn!(
            &ctx,
            "ENDPOINTS map: an insert failed (tcpwatch_classify_map_full_total)"
        ),
        kind::SERVER_RESETS_FULL => warn!(
            &ctx,
            "SERVER_RESETS map: an insert failed (tcpwatch_classify_map_full_total)"
        ),
        kind::CONNECTING_FULL => warn!(
            &ctx,
            "CONNECTING: an insert failed (tcpwatch_classify_map_full_total)"
        ),
        kind::LISTENS_FULL => warn!(
            &ctx,
            "LISTENS map: an insert failed (tcpwatch_classify_map_full_total)"
        ),
        kind::STALE_TUPLES_FULL => warn!(
            &ctx,
            "STALE_TUPLES map: an insert failed (tcpwatch_classify_map_full_total)"
        ),
        _ => {}
    }
}
