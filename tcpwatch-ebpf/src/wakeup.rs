//! Batched ring-buffer reads: events are submitted without waking the reader
//! (`BPF_RB_NO_WAKEUP`), which drains the ring on a timer (`daemon.event_drain_interval_ms`).
//! Once the unread data reaches a quarter of the ring the submit forces a wakeup
//! (`BPF_RB_FORCE_WAKEUP`), so a burst is read before the ring fills, not after a tick.
//!
//! The fill level is checked at most every [`CHECK_GAP_NS`], and a wakeup is forced at most
//! every [`FORCE_GAP_NS`]: a forced wakeup is an irq_work (a self-IPI, a VM exit on a
//! virtual machine), and while the reader is late (busy applying a large sweep) every event
//! above the quarter forced one, which made each event cost about 2 µs more (measured,
//! docs/performance.md). Between two checks a burst adds at most a few hundred events.
use aya_ebpf::bindings::{
    BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE,
};

use super::EVENTS;

/// How often the fill level is read (two `bpf_ringbuf_query` calls).
const CHECK_GAP_NS: u64 = 100_000;
/// How often a wakeup may be forced while the ring stays above a quarter full.
const FORCE_GAP_NS: u64 = 1_000_000;

/// ktime before which the fill level is not read again. A global (`.bss`): a plain load and
/// store, no map lookup. Two CPUs racing at worst both check or both skip once.
static mut NEXT_CHECK_NS: u64 = 0;

/// The flags of the next `bpf_ringbuf_submit` on `EVENTS`, `now` being the event's ktime.
#[inline(always)]
pub(super) fn submit_flags(now: u64) -> u64 {
    // SAFETY: a plain global u64 (see NEXT_CHECK_NS about concurrent writers).
    let next = unsafe { core::ptr::read_volatile(&raw const NEXT_CHECK_NS) };
    if now < next {
        return u64::from(BPF_RB_NO_WAKEUP);
    }
    let avail = EVENTS.query(u64::from(BPF_RB_AVAIL_DATA));
    let size = EVENTS.query(u64::from(BPF_RB_RING_SIZE));
    let (flags, gap) = if avail >= size / 4 {
        (BPF_RB_FORCE_WAKEUP, FORCE_GAP_NS)
    } else {
        (BPF_RB_NO_WAKEUP, CHECK_GAP_NS)
    };
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(&raw mut NEXT_CHECK_NS, now + gap) };
    u64::from(flags)
}
