//! Reading socket fields: from the kernel object itself (one helper call per field) or from a
//! copy of it made with one helper call. The address reader ([`tuple`]) and the namespace
//! reader ([`netns`]) are written once, for both sources.
use aya_ebpf::helpers::bpf_probe_read_kernel;
use tcpwatch_common::{AF_INET, AF_INET6, KernelOffsets, NETNS_INODE_TAG, OFFSET_MISSING};

use super::{diag, offsets};

/// Reads a `T` at `base + off`; 0 when the field is missing on this kernel or unreadable.
#[inline(always)]
pub(super) fn rd<T: Default>(base: *const u8, off: u32) -> T {
    if off == OFFSET_MISSING || base.is_null() {
        return T::default();
    }
    // SAFETY: bpf_probe_read_kernel validates the address; a fault yields an error, not a crash.
    unsafe {
        bpf_probe_read_kernel(base.wrapping_add(off as usize).cast::<T>()).unwrap_or_default()
    }
}

/// [`rd`] through a pointer that was itself read from a socket (`struct net`, the socket's
/// inode). A read at a wrong offset inside the socket still succeeds (it reads other bytes of
/// the same object); a pointer read that way is garbage and the read through it faults: the
/// sign that an offset is wrong for this kernel, noted for the log (`diag`). Only here, so
/// the many plain field reads keep no extra code on their error branch.
#[inline(always)]
pub(super) fn rd_through<T: Default>(base: *const u8, off: u32) -> T {
    if off == OFFSET_MISSING || base.is_null() {
        return T::default();
    }
    // SAFETY: as in `rd`.
    match unsafe { bpf_probe_read_kernel(base.wrapping_add(off as usize).cast::<T>()) } {
        Ok(v) => v,
        Err(_) => {
            diag::note(diag::kind::READ_FAILED, u64::from(off));
            T::default()
        }
    }
}

#[inline(always)]
pub(super) fn rd_ptr(base: *const u8, off: u32) -> *const u8 {
    rd::<u64>(base, off) as *const u8
}

/// Reads a `T` at `off` in an `N`-byte copy of a socket; 0 when the field is missing on this
/// kernel (the bound check also proves the access to the verifier).
#[inline(always)]
pub(super) fn bfn<const N: usize, T: Default>(buf: *const u8, off: u32) -> T {
    let off = off as usize;
    if off > N - core::mem::size_of::<T>() {
        return T::default();
    }
    // SAFETY: off + size_of::<T>() <= N, the size of the buffer `buf` points to.
    unsafe { core::ptr::read_unaligned(buf.add(off).cast::<T>()) }
}

/// Where a socket's fields are read from.
pub(super) trait Fields: Copy {
    fn get<T: Default>(self, off: u32) -> T;
}

/// The socket itself (`bpf_probe_read_kernel` per field).
#[derive(Clone, Copy)]
pub(super) struct Live(pub *const u8);

impl Fields for Live {
    #[inline(always)]
    fn get<T: Default>(self, off: u32) -> T {
        rd(self.0, off)
    }
}

/// An `N`-byte copy of the socket in a per-CPU buffer.
#[derive(Clone, Copy)]
pub(super) struct Copied<const N: usize>(pub *const u8);

impl<const N: usize> Fields for Copied<N> {
    #[inline(always)]
    fn get<T: Default>(self, off: u32) -> T {
        bfn::<N, T>(self.0, off)
    }
}

/// Family, local and remote address and ports (local host order, remote converted to host).
pub(super) struct Tuple {
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// Where [`read_tuple`] writes: a [`Tuple`] or, in place, a ring buffer event.
pub(super) trait TupleOut {
    fn set_ports(&mut self, family: u16, sport: u16, dport: u16);
    /// (local, remote) address fields.
    fn addrs(&mut self) -> (&mut [u8; 16], &mut [u8; 16]);
}

impl TupleOut for Tuple {
    #[inline(always)]
    fn set_ports(&mut self, family: u16, sport: u16, dport: u16) {
        (self.family, self.sport, self.dport) = (family, sport, dport);
    }
    #[inline(always)]
    fn addrs(&mut self) -> (&mut [u8; 16], &mut [u8; 16]) {
        (&mut self.saddr, &mut self.daddr)
    }
}

/// The one address reader: family, addresses and ports of a socket (`sock_common` fields),
/// written straight into `out` (no intermediate copy on the 512-byte stack). Addresses of
/// another family than IPv4/IPv6 are zero; IPv4 fills the first 4 bytes.
#[inline(always)]
pub(super) fn read_tuple<F: Fields, O: TupleOut>(f: F, o: &KernelOffsets, out: &mut O) {
    let family: u16 = f.get(o.skc_family);
    out.set_ports(family, f.get(o.skc_num), u16::from_be(f.get(o.skc_dport)));
    let (saddr, daddr) = out.addrs();
    if family == AF_INET6 {
        *saddr = f.get(o.skc_v6_rcv_saddr);
        *daddr = f.get(o.skc_v6_daddr);
        return;
    }
    if family == AF_INET {
        *saddr = v4(f.get(o.skc_rcv_saddr));
        *daddr = v4(f.get(o.skc_daddr));
    } else {
        *saddr = [0; 16];
        *daddr = [0; 16];
    }
}

#[inline(always)]
fn v4(a: [u8; 4]) -> [u8; 16] {
    [a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

/// [`read_tuple`] into a new [`Tuple`].
#[inline(always)]
pub(super) fn tuple<F: Fields>(f: F, o: &KernelOffsets) -> Tuple {
    let mut t = Tuple {
        family: 0,
        sport: 0,
        dport: 0,
        saddr: [0; 16],
        daddr: [0; 16],
    };
    read_tuple(f, o, &mut t);
    t
}

/// [`tuple`] read from the socket itself.
#[inline(always)]
pub(super) fn tuple_of(sk: *const u8) -> Tuple {
    tuple(Live(sk), offsets())
}

/// Network namespace of a socket: (cookie, inode). The `struct net` is always read live; a
/// failed read of its cookie is noted for the log (see [`rd_through`]).
#[inline(always)]
pub(super) fn netns<F: Fields>(f: F, o: &KernelOffsets) -> (u64, u32) {
    let net = f.get::<u64>(o.skc_net) as *const u8;
    let ino = rd::<u32>(net, o.net_ns_inum);
    let cookie = if o.net_cookie == OFFSET_MISSING {
        // No namespace cookie on this kernel (before 5.14): the tagged inode stands for it.
        NETNS_INODE_TAG | u64::from(ino)
    } else {
        rd_through::<u64>(net, o.net_cookie)
    };
    (cookie, ino)
}

/// [`netns`] of the socket itself, without noting a failure: the reset and retransmit hooks
/// (their call chain is at Linux 6.1's 512-byte stack limit). The state program and the sweep
/// read the same pointer of every socket and note it.
#[inline(always)]
pub(super) fn netns_of(sk: *const u8) -> (u64, u32) {
    let o = offsets();
    let net = rd_ptr(sk, o.skc_net);
    let ino = rd::<u32>(net, o.net_ns_inum);
    let cookie = if o.net_cookie == OFFSET_MISSING {
        NETNS_INODE_TAG | u64::from(ino)
    } else {
        rd::<u64>(net, o.net_cookie)
    };
    (cookie, ino)
}
