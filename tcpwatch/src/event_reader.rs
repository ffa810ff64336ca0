//! The state-event reader: a timed consumer of the `EVENTS` ring buffer.
//!
//! The kernel programs submit events with `BPF_RB_NO_WAKEUP` and force a wakeup only once the
//! unread data reaches a quarter of the ring (`tcpwatch-ebpf/src/wakeup.rs`). The reader drains
//! the ring every `daemon.event_drain_interval_ms` and on each forced wakeup, copies the batch
//! into a buffer it reuses (no allocation per event once warm) and applies the whole batch
//! under one acquisition of the shared-state lock.
use std::sync::Arc;
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tcpwatch_common::StateEvent;
use tokio::io::unix::AsyncFd;
use tokio::sync::Mutex;
use tokio::time::MissedTickBehavior;

use crate::state::Shared;
use crate::view::Pending;

/// Reads and applies state events until the ring buffer's fd fails.
pub async fn read_events(
    ring: RingBuf<MapData>,
    shared: Arc<Mutex<Shared>>,
    pending: Arc<Pending>,
    drain_every: Duration,
) -> anyhow::Result<()> {
    // SAFETY: the ring buffer owns its map fd and keeps it open, unchanged, for as long as it
    // lives; the AsyncFd owns the ring buffer.
    let mut fd = unsafe { AsyncFd::register(ring) }
        .map_err(|e| anyhow::anyhow!("registering the ring buffer with epoll: {e}"))?;
    let mut tick = tokio::time::interval(drain_every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut batch: Vec<StateEvent> = Vec::with_capacity(4096);
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                // Readiness is cleared before the drain: a wakeup during the drain is kept.
                guard?.clear_ready();
            }
            _ = tick.tick() => {}
        }
        let malformed = drain(fd.get_mut(), &mut batch);
        if batch.is_empty() && malformed == 0 {
            continue;
        }
        let mut s = shared.lock().await;
        s.stats.events_malformed += malformed;
        for ev in batch.drain(..) {
            s.apply_event(&ev);
        }
        drop(s);
        pending.events();
    }
}

/// Copies every available event into `batch`; returns the number of malformed items.
fn drain(ring: &mut RingBuf<MapData>, batch: &mut Vec<StateEvent>) -> u64 {
    let mut malformed = 0_u64;
    while let Some(item) = ring.next() {
        if item.len() == size_of::<StateEvent>() {
            // SAFETY: the item is exactly one StateEvent of plain old data.
            batch.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) });
        } else {
            malformed += 1;
        }
    }
    malformed
}
