//! Builds BTF blobs for the tests of `btf`, and a small kernel look-alike sample.
use super::*;

/// Builds BTF blobs for tests; types get ids 1, 2, ... in the order they are added.
pub(crate) struct Builder {
    pub(crate) types: Vec<u8>,
    pub(crate) strings: Vec<u8>,
    pub(crate) next_id: u32,
}

/// (name, type id, offset word as stored in the member: bits, or `kind_flag` encoding).
pub(crate) type M<'a> = (&'a str, u32, u32);

impl Builder {
    pub(crate) fn new() -> Self {
        Self {
            types: Vec::new(),
            strings: vec![0],
            next_id: 1,
        }
    }

    pub(crate) fn str(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let off = u32::try_from(self.strings.len()).unwrap();
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }

    pub(crate) fn words(&mut self, words: &[u32]) {
        for w in words {
            self.types.extend_from_slice(&w.to_le_bytes());
        }
    }

    pub(crate) fn raw(
        &mut self,
        name: &str,
        k: u8,
        kf: bool,
        vlen: u16,
        sz: u32,
        tail: &[u32],
    ) -> u32 {
        let name_off = self.str(name);
        let info = (u32::from(k) << 24) | u32::from(vlen) | if kf { 1 << 31 } else { 0 };
        self.words(&[name_off, info, sz]);
        self.words(tail);
        self.next_id += 1;
        self.next_id - 1
    }

    pub(crate) fn int(&mut self, name: &str, size: u32) -> u32 {
        self.raw(name, kind::INT, false, 0, size, &[size * 8])
    }

    pub(crate) fn modifier(&mut self, k: u8, name: &str, target: u32) -> u32 {
        self.raw(name, k, false, 0, target, &[])
    }

    pub(crate) fn array(&mut self, elem: u32, index: u32, n: u32) -> u32 {
        self.raw("", kind::ARRAY, false, 0, 0, &[elem, index, n])
    }

    pub(crate) fn composite(
        &mut self,
        k: u8,
        kf: bool,
        name: &str,
        size: u32,
        members: &[M],
    ) -> u32 {
        let mut tail = Vec::new();
        for &(n, ty, off) in members {
            tail.extend([self.str(n), ty, off]);
        }
        let vlen = u16::try_from(members.len()).unwrap();
        self.raw(name, k, kf, vlen, size, &tail)
    }

    /// Struct with `kind_flag` 0; member offsets given in BYTES.
    pub(crate) fn strukt(&mut self, name: &str, size: u32, members: &[M]) -> u32 {
        let members: Vec<M> = members.iter().map(|&(n, t, o)| (n, t, o * 8)).collect();
        self.composite(kind::STRUCT, false, name, size, &members)
    }

    /// Union with `kind_flag` 0; member offsets given in BYTES.
    pub(crate) fn union(&mut self, name: &str, size: u32, members: &[M]) -> u32 {
        let members: Vec<M> = members.iter().map(|&(n, t, o)| (n, t, o * 8)).collect();
        self.composite(kind::UNION, false, name, size, &members)
    }

    pub(crate) fn build(&self) -> Vec<u8> {
        let type_len = u32::try_from(self.types.len()).unwrap();
        let str_len = u32::try_from(self.strings.len()).unwrap();
        let mut out = vec![0x9f, 0xeb, 1, 0];
        for w in [24, 0, type_len, type_len, str_len] {
            out.extend_from_slice(&u32::to_le_bytes(w));
        }
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }
}

/// A small kernel look-alike: anonymous unions/structs, nested named members, a named
/// member of anonymous struct type, typedef/modifier chains, bitfields of both encodings.
pub(crate) fn sample() -> Vec<u8> {
    let mut b = Builder::new();
    let u8t = b.int("unsigned char", 1);
    let u16t = b.int("short unsigned int", 2);
    let u32t = b.int("unsigned int", 4);
    let u64t = b.int("long long unsigned int", 8);
    let long = b.int("long unsigned int", 8);
    let td1 = b.modifier(kind::TYPEDEF, "__u32", u32t);
    let td2 = b.modifier(kind::TYPEDEF, "u32", td1);
    let cst = b.modifier(kind::CONST, "", td2);
    let vol_u8 = b.modifier(kind::VOLATILE, "", u8t);
    let tag = b.modifier(kind::TYPE_TAG, "rcu", cst);
    let restrict = b.modifier(kind::RESTRICT, "", tag);

    // struct sock_common
    let addrs = b.strukt("", 8, &[("skc_daddr", td2, 0), ("skc_rcv_saddr", td2, 4)]);
    let addr_u = b.union("", 8, &[("skc_addrpair", u64t, 0), ("", addrs, 0)]);
    let ports = b.strukt("", 4, &[("skc_dport", u16t, 0), ("skc_num", u16t, 2)]);
    let ports_u = b.union("", 4, &[("skc_portpair", u32t, 0), ("", ports, 0)]);
    let net_fwd = b.raw("net", kind::FWD, false, 0, 0, &[]);
    let net_ptr = b.modifier(kind::PTR, "", net_fwd);
    let possible = b.strukt("", 8, &[("net", net_ptr, 0)]);
    let possible_td = b.modifier(kind::TYPEDEF, "possible_net_t", possible);
    let v6 = b.array(u8t, u32t, 16);
    b.strukt(
        "sock_common",
        64,
        &[
            ("", addr_u, 0),
            ("skc_hash", u32t, 8),
            ("", ports_u, 12),
            ("skc_family", u16t, 16),
            ("skc_state", vol_u8, 18),
            ("skc_net", possible_td, 24),
            ("skc_v6_daddr", v6, 32),
            ("skc_v6_rcv_saddr", v6, 48),
        ],
    );

    // struct net { ...; struct ns_common ns; ...; u64 net_cookie; }
    let ns = b.strukt("ns_common", 24, &[("stashed", long, 0), ("inum", u32t, 16)]);
    b.strukt(
        "net",
        128,
        &[
            ("passive", u32t, 0),
            ("ns", ns, 64),
            ("net_cookie", u64t, 120),
        ],
    );

    // struct inet_connection_sock: kind_flag 1, bitfields, named member of anon type.
    let ack = b.strukt(
        "",
        16,
        &[("pending", u8t, 0), ("lrcvtime", u32t, 4), ("ato", long, 8)],
    );
    b.composite(
        kind::STRUCT,
        true,
        "inet_connection_sock",
        96,
        &[
            ("icsk_rto", u32t, 32 * 8),
            ("icsk_ca_state", u8t, (5 << 24) | (36 * 8)),
            ("icsk_ca_initialized", u8t, (1 << 24) | (36 * 8 + 5)),
            ("icsk_backoff", u8t, 37 * 8),
            ("icsk_ack", ack, 48 * 8),
            ("icsk_user_timeout", restrict, 64 * 8),
        ],
    );

    // struct tcp_sock: cacheline-group markers, anon struct > anon union, modifiers.
    let marker = b.array(u8t, u32t, 0);
    let una_u = b.union("", 4, &[("snd_una", td2, 0), ("snd_una_alias", u32t, 0)]);
    let group = b.strukt("", 8, &[("", una_u, 0), ("snd_nxt", cst, 4)]);
    b.strukt(
        "tcp_sock",
        256,
        &[
            ("__cacheline_group_begin__tcp_sock_read_tx", marker, 128),
            ("", group, 128),
            ("write_seq", td2, 136),
            ("__cacheline_group_end__tcp_sock_read_tx", marker, 140),
            ("rcv_nxt", u32t, 140),
        ],
    );

    // kind_flag 0 bitfields: INT encoding with 3 bits; a byte at a non-byte bit offset.
    let int3 = b.raw("unsigned int", kind::INT, false, 0, 4, &[3]);
    b.composite(
        kind::STRUCT,
        false,
        "bits0",
        8,
        &[("flag", int3, 0), ("odd", u8t, 3), ("whole", u32t, 32)],
    );
    b.build()
}

pub(crate) fn parsed() -> Btf {
    Btf::parse(&sample()).unwrap()
}
