//! The reference for the sweep's cost: an `iter/tcp` program that only counts the sockets the
//! kernel's walk hands it (no copy, no per-socket state, no output but the count). `cargo xtask
//! bench` runs it through `tcpwatch snapshot --walk-reference` right after the sweep, in the
//! same namespaces: the time the kernel's walk alone takes, which no sweep can go below. Never
//! loaded by the daemon.
use super::sweep::BpfIterTcp;
use super::*;

/// Sockets counted by the walk in progress (slot 0). The final call writes it and resets it:
/// one walk at a time (`tcpwatch snapshot` runs them one after the other from one thread).
#[map]
static WALK_REF_COUNT: Array<u64> = Array::with_max_entries(1, 0);

/// # Safety
/// Called by the kernel with a valid `bpf_iter__tcp` context.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/tcp")]
pub unsafe extern "C" fn tcpwatch_walk_reference(ctx: *mut BpfIterTcp) -> i32 {
    let Some(n) = WALK_REF_COUNT.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: the kernel passes a valid context; meta is never NULL.
    let (meta, sk) = unsafe { ((*ctx).meta, (*ctx).sk_common) };
    if sk.is_null() {
        // SAFETY: as above.
        let seq = unsafe { (*meta).seq };
        // SAFETY: `n` is this map's value; the helper copies the 8 bytes it points to.
        unsafe {
            if bpf_seq_write(seq.cast(), n.cast(), 8) == 0 {
                *n = 0;
            }
        }
        return 0;
    }
    // SAFETY: map value, one walk at a time (see `WALK_REF_COUNT`).
    unsafe { *n += 1 };
    0
}
