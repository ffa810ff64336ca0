//! Change-only sweeps: the sweep writes a full [`SockRecord`](crate::SockRecord) only for a
//! socket whose watched fields changed since the last full record of the same sweep
//! generation, and a 16-byte [`SockSeen`] ("still here, unchanged") for the others.
//!
//! The fingerprint covers the whole record as the sweep fills it, except the time it was made
//! (`seen_ns`) and the three jiffies ages, which it takes as the absolute jiffies stamps they
//! are computed from (`lsndtime`, `rcv_tstamp`, `icsk_ack.lrcvtime`): an idle socket keeps its
//! fingerprint. It is stored with the generation in the socket's `SockState` (socket-local
//! storage or `SOCKS` entry: `sweep_fp`, `sweep_gen`) only once the full record was written.
//!
//! Userspace sets the generation ([`SweepCtl`], map `SWEEP_CTL`) before each namespace's
//! sweep; a new generation makes every record of that sweep full: the first sweep of a daemon
//! (generations start from the monotonic clock, so a restarted daemon never reuses one), every
//! `daemon.full_sweep_every`-th sweep, and the next sweep of a namespace whose sweep failed or
//! named a socket userspace did not have. `NEW_SYN_RECV` minisockets (and orphaned `FIN_WAIT2`
//! timewait ones) have no `SockState` and are always written in full; `TIME_WAIT` ones are
//! counted into the sweep's trailer, not written (`SweepHeader::time_wait`).

/// The low bit of [`SockSeen::tagged_skaddr`]: socket addresses are aligned, so a slot whose
/// first word has it set is a [`SockSeen`] (or, with the rest of [`crate::SWEEP_MAGIC`] and
/// [`crate::ABI_VERSION`] in it, a header; a kernel address never has those upper bits).
pub const SEEN_TAG: u64 = 1;

/// "This socket is still there and none of its watched fields changed."
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockSeen {
    /// The socket's address with [`SEEN_TAG`] set.
    pub tagged_skaddr: u64,
    /// Socket cookie (0 = not known, as in `SockRecord`).
    pub cookie: u64,
}

impl SockSeen {
    #[must_use]
    pub const fn skaddr(&self) -> u64 {
        self.tagged_skaddr & !SEEN_TAG
    }
}

pub const SOCK_SEEN_SIZE: usize = core::mem::size_of::<SockSeen>();

/// Value of the one-entry `SWEEP_CTL` array, written by userspace before a namespace's sweep.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepCtl {
    /// Generation of this sweep; 0 = change-only sweeps off (every record full).
    pub generation: u64,
}

/// Fingerprint step: a bijection of `h` for each word, so a single changed word always
/// changes the result.
#[must_use]
#[expect(
    clippy::inline_always,
    reason = "called from the eBPF sweep, where a call per word would cost more than the work"
)]
#[inline(always)]
pub const fn fp_step(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(0x0000_0100_0000_01b3)
}

/// Fingerprint seed (FNV-1a 64 offset basis).
pub const FP_SEED: u64 = 0xcbf2_9ce4_8422_2325;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_tag() {
        assert_eq!(SOCK_SEEN_SIZE, 16);
        let s = SockSeen {
            tagged_skaddr: 0xffff_8881_0318_0000 | SEEN_TAG,
            cookie: 7,
        };
        assert_eq!(s.skaddr(), 0xffff_8881_0318_0000);
        // The header's first word has the tag bit too, but its upper half is the ABI version.
        assert_eq!(u64::from(crate::SWEEP_MAGIC) & SEEN_TAG, SEEN_TAG);
    }

    #[test]
    fn one_changed_word_changes_the_fingerprint() {
        let words = [1_u64, 2, 3, u64::MAX, 0];
        let base = words.iter().fold(FP_SEED, |h, &w| fp_step(h, w));
        for i in 0..words.len() {
            for bit in [0, 1, 31, 63] {
                let mut w = words;
                w[i] ^= 1 << bit;
                assert_ne!(w.iter().fold(FP_SEED, |h, &w| fp_step(h, w)), base);
            }
        }
    }
}
