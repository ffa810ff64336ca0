//! The `iter/tcp` sweep (aya-ebpf 0.2.1 has no `#[iter]` macro: the section is written by
//! hand): every TCP socket of one network namespace with its queues and timers, merged with its
//! `SOCKS` entry, written to the iterator's `seq_file`. `TIME_WAIT` minisockets are counted
//! into the trailer instead (`SweepHeader::time_wait`).
use super::*;

#[repr(C)]
pub struct BpfIterMeta {
    pub(super) seq: *mut c_void,
    session_id: u64,
    seq_num: u64,
}

#[repr(C)]
pub struct BpfIterTcp {
    pub(super) meta: *mut BpfIterMeta,
    pub(super) sk_common: *const u8,
    uid: u32,
}

/// Writes one record; true if written. A failure (-EOVERFLOW: the 8-page seq buffer is full)
/// loses nothing: the kernel rolls the partial output of this socket back and calls the
/// program for the same socket again on the next `read()`; so it is not counted. (A record
/// that alone exceeds the whole buffer fails the `read()` with E2BIG, reported as a namespace
/// sweep error.)
#[inline(always)]
fn seq_write(seq: *mut c_void, data: *const c_void, len: usize) -> bool {
    // SAFETY: `data` points to `len` readable bytes (a map value or the stack); the helper
    // copies them.
    unsafe { bpf_seq_write(seq.cast(), data, len as u32) == 0 }
}

/// What [`fill_record`] found.
const FILL_FAILED: u8 = 0;
/// Write the full record (then [`mark_written`] if `Mark::st` is set).
const FILL_FULL: u8 = 1;
/// Unchanged since the last full record of this generation: write a `SockSeen`.
const FILL_UNCHANGED: u8 = 2;

/// Where a full record's fingerprint goes once written.
struct Mark {
    st: *mut SockState,
    fp: u64,
    generation: u64,
}

/// The change-only marks of a socket's per-socket state: the one place that knows where they
/// live (fields of its `SockState`, in socket-local storage or the `SOCKS` entry: `store.rs`).
#[inline(always)]
fn marks(st: *mut SockState) -> (*mut u64, *mut u64) {
    // SAFETY: `st` is this socket's live `SockState` (`store::sweep_entry`); only the
    // addresses are taken.
    unsafe { (&raw mut (*st).sweep_fp, &raw mut (*st).sweep_gen) }
}

/// Remembers that the full record with this fingerprint reached the seq buffer.
#[inline(always)]
fn mark_written(m: &Mark) {
    if m.st.is_null() || m.generation == 0 {
        return;
    }
    let (fp, generation) = marks(m.st);
    // SAFETY: see `marks`; a concurrent writer of the entry cannot make this unsafe, at worst
    // the next sweep writes the record in full.
    unsafe {
        *fp = m.fp;
        *generation = m.generation;
    }
}

/// Fingerprint of a record (see `tcpwatch_common::delta`): every 8-byte word of it.
#[inline(always)]
fn fingerprint(r: &SockRecord) -> u64 {
    let words = (r as *const SockRecord).cast::<u64>();
    let mut h = FP_SEED;
    let mut i = 0;
    while i < SOCK_RECORD_SIZE / 8 {
        // SAFETY: `i` words are inside the record (SOCK_RECORD_SIZE is a multiple of 8).
        h = fp_step(h, unsafe { *words.add(i) });
        i += 1;
    }
    h
}

/// # Safety
/// Called by the kernel with a valid `bpf_iter__tcp` context.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/tcp")]
pub unsafe extern "C" fn tcpwatch_sweep(ctx: *mut BpfIterTcp) -> i32 {
    // SAFETY: as this function's contract.
    unsafe { sweep::<true>(ctx) }
}

/// The sweep for kernels whose iterator programs may not call `bpf_get_socket_cookie`
/// (before Linux 5.12): records carry cookie 0 ("not known"). The loader picks it when the
/// verifier refuses [`tcpwatch_sweep`], and reports `socket_cookie` unavailable.
///
/// # Safety
/// Called by the kernel with a valid `bpf_iter__tcp` context.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/tcp")]
pub unsafe extern "C" fn tcpwatch_sweep_nocookie(ctx: *mut BpfIterTcp) -> i32 {
    // SAFETY: as this function's contract.
    unsafe { sweep::<false>(ctx) }
}

/// # Safety
/// `ctx` is a valid `bpf_iter__tcp` context.
#[inline(always)]
unsafe fn sweep<const COOKIE: bool>(ctx: *mut BpfIterTcp) -> i32 {
    // SAFETY: the kernel passes a valid context; meta is never NULL.
    let (meta, sk, uid) = unsafe { ((*ctx).meta, (*ctx).sk_common, (*ctx).uid) };
    // SAFETY: as above.
    let (seq, seq_num) = unsafe { ((*meta).seq, (*meta).seq_num) };
    let Some(rec) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // A header starts the output; the final call (sk == NULL) writes one too, because a
    // namespace without sockets has no first call (userspace keeps the first header).
    if seq_num == 0 {
        // Once per namespace sweep, never on a per-event hook: see diag.rs.
        diag::flush();
    }
    let tw = SWEEP_TW.get_ptr_mut(0);
    if seq_num == 0
        && let Some(tw) = tw
    {
        // SAFETY: map value; one sweep at a time per loaded object (see `SWEEP_TW`).
        unsafe { *tw = 0 };
    }
    if seq_num == 0 || sk.is_null() {
        let hdr = rec.cast::<SweepHeader>();
        // SAFETY: SweepHeader has the size of SockRecord (checked in tcpwatch-common's tests).
        unsafe {
            (*hdr).magic = SWEEP_MAGIC;
            (*hdr).abi_version = ABI_VERSION;
            (*hdr).ktime_ns = ktime();
            (*hdr).jiffies = bpf_jiffies64();
            (*hdr).time_wait = 0;
            (*hdr).flags = 0;
            if sk.is_null() {
                (*hdr).flags = sweep_flags::TRAILER;
                if let Some(tw) = tw {
                    (*hdr).time_wait = *tw;
                }
            }
        }
        // A trailer that does not fit is written again: the kernel calls the final call
        // again on the next read(), and the count is only reset by the next sweep's first call.
        seq_write(seq, rec.cast(), SOCK_RECORD_SIZE);
    }
    if sk.is_null() {
        return 0;
    }
    let state: u8 = rd(sk, offsets().skc_state);
    if let Some(tw) = tw
        && counted_time_wait(sk, state)
    {
        // SAFETY: as above. Nothing was written for this socket, so the kernel never calls
        // the program for it again (only a write that overflows the buffer is rolled back).
        unsafe { *tw += 1 };
        return 0;
    }
    // SAFETY: per-CPU scratch slot, only this program on this CPU uses it.
    let r = unsafe { &mut *rec };
    let mut mark = Mark {
        st: core::ptr::null_mut(),
        fp: 0,
        generation: 0,
    };
    match fill_record::<COOKIE>(r, sk, state, uid, &mut mark) {
        FILL_FULL => {
            if seq_write(seq, rec.cast(), SOCK_RECORD_SIZE) {
                mark_written(&mark);
            }
        }
        FILL_UNCHANGED => {
            let seen = [r.skaddr | SEEN_TAG, r.cookie];
            seq_write(seq, seen.as_ptr().cast(), SOCK_SEEN_SIZE);
        }
        _ => {
            // Not expected (the copy stays inside the socket object); counted, never silent.
            count(counter::SWEEP_WRITE_FAILED);
        }
    }
    0
}

/// `TIME_WAIT` minisockets counted in the current sweep (slot 0), written into its trailer.
/// Reset by the sweep's first call: sweeps of one loaded object never overlap (the daemon
/// runs them one after the other from one thread), so no session key is needed.
#[map]
static SWEEP_TW: Array<u64> = Array::with_max_entries(1, 0);

/// A timewait minisocket in substate `TIME_WAIT` (not an orphaned `FIN_WAIT2`, which `ss`
/// lists as FIN-WAIT-2 and tcpwatch keeps listing): counted, not copied.
#[inline(always)]
fn counted_time_wait(sk: *const u8, state: u8) -> bool {
    let o = offsets();
    state == tcp_state::TIME_WAIT
        && o.tw_substate != OFFSET_MISSING
        && rd::<u8>(sk, o.tw_substate) == tcp_state::TIME_WAIT
}

/// [`bfn`] in the sweep's copy of a socket.
#[inline(always)]
fn bf<T: Default>(buf: *const u8, off: u32) -> T {
    bfn::<SOCK_COPY_LEN, T>(buf, off)
}

/// Copies `len` bytes at `start` of the socket to the same offset of the sweep's buffer.
#[inline(always)]
fn copy_span(buf: *mut u8, sk: *const u8, start: u32, len: u32) -> bool {
    // Both bounds for the verifier: the buffer holds 2 x SOCK_COPY_LEN bytes.
    if start as usize >= SOCK_COPY_LEN || len == 0 || len as usize > SOCK_COPY_LEN {
        return false;
    }
    // SAFETY: start < SOCK_COPY_LEN and len <= SOCK_COPY_LEN, inside the 2 x SOCK_COPY_LEN
    // buffer; the helper checks the source address.
    let rc = unsafe {
        probe_read_raw(
            buf.add(start as usize).cast(),
            len,
            sk.wrapping_add(start as usize).cast(),
        )
    };
    if rc != 0 {
        diag::note(diag::kind::COPY_FAILED, u64::from(len));
        return false;
    }
    true
}

/// Copies what the sweep reads of a full socket: `copy_ranges` (the fields' cache lines),
/// or, should userspace have set none, the whole `full_read_len`.
#[inline(always)]
fn copy_full(buf: *mut u8, sk: *const u8, o: &KernelOffsets) -> bool {
    if o.copy_ranges[0][1] == 0 {
        return copy_span(buf, sk, 0, o.full_read_len);
    }
    let mut i = 0;
    while i < COPY_RANGES {
        let [start, len] = o.copy_ranges[i];
        if len == 0 {
            break;
        }
        if !copy_span(buf, sk, start, len) {
            return false;
        }
        i += 1;
    }
    true
}

/// Fills one sweep record. The socket is copied into a per-CPU buffer, each field at its own
/// offset (only the ranges holding the fields read, `copy_ranges`; `common_read_len` for
/// minisockets) and the fields are picked from the copy: a helper call per range instead of
/// one per field.
#[inline(always)]
fn fill_record<const COOKIE: bool>(
    r: &mut SockRecord,
    sk: *const u8,
    state: u8,
    uid: u32,
    mark: &mut Mark,
) -> u8 {
    let o = offsets();
    let mini = state == tcp_state::TIME_WAIT || state == tcp_state::NEW_SYN_RECV;
    let Some(buf) = SOCK_COPY.get_ptr_mut(0) else {
        return FILL_FAILED;
    };
    let buf = buf.cast::<u8>();
    let copied = if mini {
        copy_span(buf, sk, 0, o.common_read_len)
    } else {
        copy_full(buf, sk, o)
    };
    if !copied {
        return FILL_FAILED;
    }
    let copy = Copied::<SOCK_COPY_LEN>(buf);
    let t = tuple(copy, o);
    let (netns_cookie, netns_ino) = netns(copy, o);
    *r = SockRecord {
        skaddr: sk as u64,
        cookie: cookie_of::<COOKIE>(sk),
        netns_cookie,
        netns_ino,
        uid,
        family: t.family,
        sport: t.sport,
        dport: t.dport,
        saddr: t.saddr,
        daddr: t.daddr,
        state,
        ..SockRecord::default()
    };
    if mini {
        return FILL_FULL;
    }
    r.flags = record_flags::FULL_SOCK;
    let socket = bf::<u64>(buf, o.sk_socket) as *const u8;
    if !socket.is_null() {
        r.flags |= record_flags::HAS_SOCKET;
        if o.socket_alloc_vfs_inode != OFFSET_MISSING {
            let inode = socket.wrapping_add(o.socket_alloc_vfs_inode as usize);
            r.inode = rd_through(inode, o.inode_i_ino);
        }
    }
    r.write_seq = bf(buf, o.write_seq);
    r.snd_una = bf(buf, o.snd_una);
    r.snd_nxt = bf(buf, o.snd_nxt);
    r.rcv_nxt = bf(buf, o.rcv_nxt);
    r.copied_seq = bf(buf, o.copied_seq);
    r.snd_wnd = bf(buf, o.snd_wnd);
    r.srtt_us8 = bf(buf, o.srtt_us);
    r.rto_jiffies = bf(buf, o.icsk_rto);
    r.user_timeout_ms = bf(buf, o.icsk_user_timeout);
    r.total_retrans = bf(buf, o.total_retrans);
    r.ack_backlog = bf(buf, o.sk_ack_backlog);
    r.max_ack_backlog = bf(buf, o.sk_max_ack_backlog);
    r.sndbuf = bf::<i32>(buf, o.sk_sndbuf) as u32;
    r.wmem_queued = bf::<i32>(buf, o.sk_wmem_queued) as u32;
    r.backoff = bf(buf, o.icsk_backoff);
    r.retransmits = bf(buf, o.icsk_retransmits);
    r.probes_out = bf(buf, o.icsk_probes_out);
    r.data_segs_in = bf(buf, o.data_segs_in);
    r.data_segs_out = bf(buf, o.data_segs_out);
    r.keepalive_time_jiffies = bf(buf, o.keepalive_time);
    r.keepalive_intvl_jiffies = bf(buf, o.keepalive_intvl);
    r.keepalive_probes = bf(buf, o.keepalive_probes);
    if bf::<u64>(buf, o.sk_flags) & (1 << tcpwatch_common::SOCK_KEEPOPEN) != 0 {
        r.flags |= record_flags::KEEPALIVE;
    }
    // The absolute jiffies stamps first (the fingerprint takes them), ages at the end.
    r.lsnd_age_jiffies = bf(buf, o.lsndtime);
    r.rcv_tstamp_age_jiffies = bf(buf, o.rcv_tstamp);
    r.lrcv_age_jiffies = bf(buf, o.icsk_ack_lrcvtime);

    // Steady state is a lookup; a socket tcpwatch never saw gets an entry (age unknown) once.
    // An entry of an earlier socket at this address (another cookie) is reset, never adopted.
    let now = ktime();
    let mut entry: *mut SockState = core::ptr::null_mut();
    if let Some(st) = store::sweep_entry::<COOKIE>(sk, r.cookie, now, state) {
        entry = st;
        // SAFETY: the entry belongs to this socket; a concurrent update can at worst make this
        // record one event stale, which the next sweep corrects.
        let st = unsafe { &mut *st };
        // A state change missed while no program was attached (daemon restart with a pinned
        // map) or skipped by the kernel (recursion miss): its time is not known, only that it
        // came after the last moment the old state was seen.
        if st.state != state {
            let mut after = st.last_sweep_ns;
            if st.state_since_ns > after {
                after = st.state_since_ns;
            }
            if st.first_seen_ns > after {
                after = st.first_seen_ns;
            }
            st.state = state;
            st.state_since_ns = 0;
            st.state_after_ns = after;
        }
        st.last_sweep_ns = now;
        st.netns_cookie = r.netns_cookie;
        // ACK progress since the last retransmission ends the chain.
        if st.chain > 0 && st.chain_snd_una != r.snd_una {
            st.chain = 0;
            st.chain_start_ns = 0;
        }
        r.flags |= record_flags::TRACKED;
        r.state_since_ns = st.state_since_ns;
        r.state_after_ns = st.state_after_ns;
        r.first_seen_ns = st.first_seen_ns;
        r.last_retrans_ns = st.last_retrans_ns;
        r.chain_start_ns = st.chain_start_ns;
        r.retrans = st.retrans;
        r.chain = st.chain;
        r.resets_sent = st.resets_sent;
        r.resets_received = st.resets_received;
        r.pid = st.pid;
        r.comm = st.comm;
    }
    let code = changed_or_not(r, entry, mark);
    r.seen_ns = now;
    // SAFETY: helper without arguments.
    let jiffies = unsafe { bpf_jiffies64() } as u32;
    r.lsnd_age_jiffies = jiffies.wrapping_sub(r.lsnd_age_jiffies);
    r.rcv_tstamp_age_jiffies = jiffies.wrapping_sub(r.rcv_tstamp_age_jiffies);
    r.lrcv_age_jiffies = jiffies.wrapping_sub(r.lrcv_age_jiffies);
    code
}

/// Compares the record (`seen_ns` 0, absolute jiffies stamps) with the socket's marks: the
/// verdict, and in `mark` what to remember once a full record is written.
#[inline(always)]
fn changed_or_not(r: &SockRecord, entry: *mut SockState, mark: &mut Mark) -> u8 {
    if entry.is_null() {
        return FILL_FULL;
    }
    let generation = match SWEEP_CTL.get(0) {
        Some(c) => c.generation,
        None => 0,
    };
    if generation == 0 {
        return FILL_FULL;
    }
    let fp = fingerprint(r);
    let (last_fp, last_gen) = marks(entry);
    // SAFETY: see `marks`.
    if unsafe { *last_gen == generation && *last_fp == fp } {
        return FILL_UNCHANGED;
    }
    mark.st = entry;
    mark.fp = fp;
    mark.generation = generation;
    FILL_FULL
}
