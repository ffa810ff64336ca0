//! The C allocator's settings for a daemon whose memory follows the number of sockets.
//!
//! After every sweep the published view releases the previous versions of the records the
//! sweep changed (`crate::view`): about one table's worth of small blocks at 100 000
//! connections. glibc keeps freed blocks for reuse; the next sweep reuses them, but the pages
//! stay resident in between. [`release_free`] hands whole free pages back after each sweep's
//! view is published, so the resident size between sweeps is the live table, not its peak.
//! Large buffers (sweep output, table-sized hash maps) are given their own mappings
//! ([`tune`]) so that freeing them returns them at once.

/// Allocations at or above this many bytes get their own mapping, returned to the system on
/// free. Set explicitly, it also stops glibc from raising the threshold after the first large
/// free (which would keep later sweep buffers in the heap).
const MMAP_THRESHOLD: i32 = 1 << 20;

/// Call once at start-up, before other threads start.
pub fn tune() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator parameters; M_MMAP_THRESHOLD with a value below
    // the documented maximum (32 MiB on 64-bit) is valid.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Returns free heap pages to the system (a few ms at 100 000 connections, once per sweep).
pub fn release_free() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}
