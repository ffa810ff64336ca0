//! Batched ring-buffer reads: events are submitted without waking the reader
//! (`BPF_RB_NO_WAKEUP`), which drains the ring on a timer (`daemon.event_drain_interval_ms`).
//! Once the unread data reaches a quarter of the ring the submit forces a wakeup
//! (`BPF_RB_FORCE_WAKEUP`), so a burst is read before the ring fills, not after a tick.
use aya_ebpf::bindings::{
    BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE,
};

use super::EVENTS;

/// The flags of the next `bpf_ringbuf_submit` on `EVENTS`.
#[inline(always)]
pub(super) fn submit_flags() -> u64 {
    let avail = EVENTS.query(u64::from(BPF_RB_AVAIL_DATA));
    let size = EVENTS.query(u64::from(BPF_RB_RING_SIZE));
    if avail >= size / 4 {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}
