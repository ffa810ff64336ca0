//! Where a socket's `SockState` lives: socket-local storage (`SOCK_STORE`, found from the
//! socket and freed with it: no hash, no delete on CLOSE, no garbage collection) when the
//! loader found that this kernel's tracing programs may use it, else the `SOCKS` hash keyed by
//! the socket's address (Linux 5.10 and the `raw_tp` fallbacks). `STORE_MODE` is read-only
//! data patched by the loader: the verifier sees it as a constant and never visits the other
//! path, so the storage helpers need not exist on kernels that use the hash.
use aya_ebpf::{
    bindings::BPF_SK_STORAGE_GET_F_CREATE,
    btf_maps::SkStorage,
    helpers::generated::{bpf_sk_storage_get, bpf_skc_to_tcp_sock},
    macros::btf_map,
};
use tcpwatch_common::hooks::store_mode;

use super::{
    NEW_SOCK, SOCKS, SockState, cookie_of, count, counter, diag, full, ktime, netns_of, tcp_state,
};

/// Per-socket state in socket-local storage (pinned like `SOCKS`: ages survive a restart).
#[btf_map]
pub(super) static SOCK_STORE: SkStorage<SockState> = SkStorage::new();

/// Patched by userspace (`EbpfLoader::override_global`). Not zero, so that it is placed in
/// `.rodata` (frozen, read by the verifier as a constant), not in `.bss`.
#[unsafe(no_mangle)]
static STORE_MODE: u32 = store_mode::HASH;

/// Whether a program with BTF-typed socket pointers (`BTF`) keeps state in `SOCK_STORE`.
#[inline(always)]
pub(super) fn sk_storage<const BTF: bool>() -> bool {
    // SAFETY: a plain static; the volatile read keeps the compiler from folding the pre-patch
    // value (userspace rewrites .rodata before load).
    BTF && unsafe { core::ptr::read_volatile(&raw const STORE_MODE) } == store_mode::SK_STORAGE
}

/// `sk`'s storage, created (zeroed) if `create` and it has none. NULL for minisockets, a NULL
/// `sk`, a socket being destroyed, or a failed allocation.
#[inline(always)]
fn storage(sk: *const u8, create: bool) -> Option<*mut SockState> {
    let flags = if create {
        u64::from(BPF_SK_STORAGE_GET_F_CREATE)
    } else {
        0
    };
    // SAFETY: `sk` is the BTF-typed `struct sock` pointer the kernel passed to this program
    // (checked by the verifier); the helper only looks up or allocates the socket's storage.
    let p = unsafe {
        bpf_sk_storage_get(
            (&raw const SOCK_STORE).cast_mut().cast(),
            sk.cast_mut().cast(),
            core::ptr::null_mut(),
            flags,
        )
    };
    (!p.is_null()).then_some(p.cast())
}

/// The socket's `SOCKS` entry if it belongs to this socket. An entry left by an earlier
/// socket at the same (reused) address, i.e. with another cookie, is reset: counters,
/// first-seen time, owner and state age start again (the age is then unknown).
#[inline(always)]
fn own_entry(key: u64, cookie: u64, now: u64, state: u8) -> Option<*mut SockState> {
    let p = SOCKS.get_ptr_mut(key)?;
    // SAFETY: the entry is only written under the socket's lock or by the sweep, which holds it.
    let st = unsafe { &mut *p };
    if cookie != 0 && st.cookie != cookie {
        if st.cookie != 0 {
            // SAFETY: `p` is this socket's map value; zeroed in place (no stack copy).
            unsafe { core::ptr::write_bytes(p, 0, 1) };
            st.first_seen_ns = now;
            st.state = state;
        }
        st.cookie = cookie;
    }
    Some(p)
}

/// The socket's entry if it has one (a `SOCKS` entry of an earlier socket at its address is
/// reset first, see [`own_entry`]).
#[inline(always)]
pub(super) fn lookup<const BTF: bool>(
    sk: *const u8,
    cookie: u64,
    now: u64,
    state: u8,
) -> Option<*mut SockState> {
    if sk_storage::<BTF>() {
        storage(sk, false)
    } else {
        own_entry(sk as u64, cookie, now, state)
    }
}

/// [`lookup`] for a hook that needs neither the cookie nor the time otherwise: storage reads
/// neither, the hash path reads both (to tell an earlier socket's entry apart).
#[inline(always)]
pub(super) fn existing<const BTF: bool>(sk: *const u8, state: u8) -> Option<*mut SockState> {
    if sk_storage::<BTF>() {
        storage(sk, false)
    } else {
        own_entry(sk as u64, cookie_of::<BTF>(sk), ktime(), state)
    }
}

/// The socket's entry for reading only (no reset, no creation).
#[inline(always)]
pub(super) fn peek<const BTF: bool>(sk: *const u8) -> Option<*const SockState> {
    if sk_storage::<BTF>() {
        storage(sk, false).map(<*mut SockState>::cast_const)
    } else {
        SOCKS.get_ptr(sk as u64)
    }
}

/// Slot of [`NEW_SOCK`] a program builds a new `SOCKS` value in.
pub(super) const NEW_SOCK_STATE: u32 = 0;
pub(super) const NEW_SOCK_OTHER: u32 = 1;

/// A zeroed (`SockState::default()`) per-CPU value to fill and insert.
#[inline(always)]
fn new_sock(slot: u32) -> Option<&'static mut SockState> {
    let p = NEW_SOCK.get_ptr_mut(slot)?;
    // SAFETY: a per-CPU slot of this program kind, used only until the insert below it; all
    // zero bytes are `SockState::default()` (plain integers and arrays).
    unsafe {
        core::ptr::write_bytes(p, 0, 1);
        Some(&mut *p)
    }
}

/// The socket's entry, created if it has none: `(entry, new)`. A new entry is zeroed except
/// for `first_seen_ns = now`, `cookie` and `state`. `fresh` (a socket starting over in
/// `SYN_SENT` or `LISTEN`, e.g. a `connect()` again after a failed one) resets an existing
/// entry as new: the hash path deleted it on CLOSE, storage lives as long as the socket.
/// A failed creation is counted (`SOCKS_FULL`) and noted. With storage, `cookie` may be 0
/// (the caller did not need it): a new entry then reads it.
#[inline(always)]
pub(super) fn get_or_create<const BTF: bool>(
    sk: *const u8,
    cookie: u64,
    now: u64,
    state: u8,
    slot: u32,
    fresh: bool,
) -> Option<(*mut SockState, bool)> {
    if sk_storage::<BTF>() {
        let Some(p) = storage(sk, true) else {
            full(counter::SOCKS_FULL, diag::kind::SOCKS_FULL);
            return None;
        };
        // SAFETY: this socket's storage; written under the socket's lock or by the sweep.
        let st = unsafe { &mut *p };
        let new = st.first_seen_ns == 0 || fresh;
        if new {
            if st.first_seen_ns != 0 {
                // SAFETY: as above; zeroed in place (no stack copy).
                unsafe { core::ptr::write_bytes(p, 0, 1) };
            }
            st.first_seen_ns = now;
            st.cookie = if cookie == 0 {
                cookie_of::<BTF>(sk)
            } else {
                cookie
            };
            st.state = state;
        }
        return Some((p, new));
    }
    let key = sk as u64;
    if let Some(p) = own_entry(key, cookie, now, state) {
        return Some((p, false));
    }
    let st = new_sock(slot)?;
    st.first_seen_ns = now;
    st.cookie = cookie;
    st.state = state;
    if SOCKS.insert(key, &*st, 0).is_err() {
        full(counter::SOCKS_FULL, diag::kind::SOCKS_FULL);
        return None;
    }
    SOCKS.get_ptr_mut(key).map(|p| (p, true))
}

/// Drops the socket's entry on CLOSE (hash only: storage is freed with the socket).
#[inline(always)]
pub(super) fn forget<const BTF: bool>(sk: *const u8) {
    if !sk_storage::<BTF>() {
        let _ = SOCKS.remove(sk as u64);
    }
}

/// Returns the socket's entry (reset if an earlier socket at the same address left it),
/// creating it (age unknown) if tcpwatch has not seen the socket.
#[inline(always)]
pub(super) fn sock_entry<const BTF: bool>(
    sk: *const u8,
    cookie: u64,
    now: u64,
    state: u8,
) -> Option<*mut SockState> {
    let (p, new) = get_or_create::<BTF>(sk, cookie, now, state, NEW_SOCK_OTHER, false)?;
    if new {
        // SAFETY: this socket's entry, just created.
        unsafe { (*p).netns_cookie = netns_of(sk).0 };
    }
    Some(p)
}

/// The sweep's way to the entry of the full socket `sk` (a `sock_common` pointer from
/// `iter/tcp`): storage needs it as a `struct sock` (`bpf_skc_to_tcp_sock`).
#[inline(always)]
pub(super) fn sweep_entry<const BTF: bool>(
    sk: *const u8,
    cookie: u64,
    now: u64,
    state: u8,
) -> Option<*mut SockState> {
    if sk_storage::<BTF>() {
        // SAFETY: `sk` is the iterator's BTF-typed `sock_common`; the helper checks its type.
        let tp = unsafe { bpf_skc_to_tcp_sock(sk.cast_mut().cast()) };
        if tp.is_null() {
            count(counter::SOCKS_FULL);
            return None;
        }
        return sock_entry::<true>(tp.cast_const().cast(), cookie, now, state);
    }
    sock_entry::<false>(sk, cookie, now, state)
}

/// Whether a state change starts a socket's life over (see [`get_or_create`]).
#[inline(always)]
pub(super) fn starts_over(newstate: u8) -> bool {
    newstate == tcp_state::SYN_SENT || newstate == tcp_state::LISTEN
}
