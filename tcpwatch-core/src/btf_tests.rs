//! Unit tests of `btf`.
use super::*;
use proptest::prelude::*;

/// Builds BTF blobs for tests; types get ids 1, 2, ... in the order they are added.
struct Builder {
    types: Vec<u8>,
    strings: Vec<u8>,
    next_id: u32,
}

/// (name, type id, offset word as stored in the member: bits, or `kind_flag` encoding).
type M<'a> = (&'a str, u32, u32);

impl Builder {
    fn new() -> Self {
        Self {
            types: Vec::new(),
            strings: vec![0],
            next_id: 1,
        }
    }

    fn str(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let off = u32::try_from(self.strings.len()).unwrap();
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }

    fn words(&mut self, words: &[u32]) {
        for w in words {
            self.types.extend_from_slice(&w.to_le_bytes());
        }
    }

    fn raw(&mut self, name: &str, k: u8, kf: bool, vlen: u16, sz: u32, tail: &[u32]) -> u32 {
        let name_off = self.str(name);
        let info = (u32::from(k) << 24) | u32::from(vlen) | if kf { 1 << 31 } else { 0 };
        self.words(&[name_off, info, sz]);
        self.words(tail);
        self.next_id += 1;
        self.next_id - 1
    }

    fn int(&mut self, name: &str, size: u32) -> u32 {
        self.raw(name, kind::INT, false, 0, size, &[size * 8])
    }

    fn modifier(&mut self, k: u8, name: &str, target: u32) -> u32 {
        self.raw(name, k, false, 0, target, &[])
    }

    fn array(&mut self, elem: u32, index: u32, n: u32) -> u32 {
        self.raw("", kind::ARRAY, false, 0, 0, &[elem, index, n])
    }

    fn composite(&mut self, k: u8, kf: bool, name: &str, size: u32, members: &[M]) -> u32 {
        let mut tail = Vec::new();
        for &(n, ty, off) in members {
            tail.extend([self.str(n), ty, off]);
        }
        let vlen = u16::try_from(members.len()).unwrap();
        self.raw(name, k, kf, vlen, size, &tail)
    }

    /// Struct with `kind_flag` 0; member offsets given in BYTES.
    fn strukt(&mut self, name: &str, size: u32, members: &[M]) -> u32 {
        let members: Vec<M> = members.iter().map(|&(n, t, o)| (n, t, o * 8)).collect();
        self.composite(kind::STRUCT, false, name, size, &members)
    }

    /// Union with `kind_flag` 0; member offsets given in BYTES.
    fn union(&mut self, name: &str, size: u32, members: &[M]) -> u32 {
        let members: Vec<M> = members.iter().map(|&(n, t, o)| (n, t, o * 8)).collect();
        self.composite(kind::UNION, false, name, size, &members)
    }

    fn build(&self) -> Vec<u8> {
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
fn sample() -> Vec<u8> {
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

fn parsed() -> Btf {
    Btf::parse(&sample()).unwrap()
}

#[test]
fn direct_and_anonymous_members() {
    let btf = parsed();
    assert_eq!(btf.member_offset("sock_common", "skc_daddr").unwrap(), 0);
    assert_eq!(
        btf.member_offset("sock_common", "skc_rcv_saddr").unwrap(),
        4
    );
    assert_eq!(btf.member_offset("sock_common", "skc_dport").unwrap(), 12);
    assert_eq!(btf.member_offset("sock_common", "skc_num").unwrap(), 14);
    assert_eq!(btf.member_offset("sock_common", "skc_family").unwrap(), 16);
    assert_eq!(btf.member_offset("sock_common", "skc_state").unwrap(), 18);
    assert_eq!(
        btf.member_offset("sock_common", "skc_v6_rcv_saddr")
            .unwrap(),
        48
    );
    assert_eq!(
        btf.member_size("sock_common", "skc_v6_rcv_saddr").unwrap(),
        16
    );
    assert_eq!(btf.member_size("sock_common", "skc_state").unwrap(), 1);
    assert_eq!(btf.member_size("sock_common", "skc_num").unwrap(), 2);
    assert_eq!(btf.struct_size("sock_common").unwrap(), 64);
    assert!(btf.has_struct("tcp_sock"));
    assert!(!btf.has_struct("tcp6_sock"));
}

#[test]
fn nested_named_member() {
    let btf = parsed();
    assert_eq!(btf.member_offset("net", "ns").unwrap(), 64);
    assert_eq!(btf.member_offset("net", "ns.inum").unwrap(), 80);
    assert_eq!(btf.member_size("net", "ns.inum").unwrap(), 4);
    assert_eq!(btf.member_size("net", "ns").unwrap(), 24);
    assert_eq!(btf.member_offset("net", "net_cookie").unwrap(), 120);
    assert_eq!(btf.member_size("net", "net_cookie").unwrap(), 8);
}

#[test]
fn named_member_of_anonymous_struct_type_with_kind_flag() {
    let btf = parsed();
    assert_eq!(
        btf.member_offset("inet_connection_sock", "icsk_ack.lrcvtime")
            .unwrap(),
        52
    );
    assert_eq!(
        btf.member_size("inet_connection_sock", "icsk_ack.lrcvtime")
            .unwrap(),
        4
    );
    assert_eq!(
        btf.member_offset("inet_connection_sock", "icsk_rto")
            .unwrap(),
        32
    );
    assert_eq!(
        btf.member_offset("inet_connection_sock", "icsk_backoff")
            .unwrap(),
        37
    );
    assert_eq!(
        btf.member_size("inet_connection_sock", "icsk_backoff")
            .unwrap(),
        1
    );
}

#[test]
fn anonymous_union_inside_anonymous_struct_and_markers() {
    let btf = parsed();
    assert_eq!(btf.member_offset("tcp_sock", "snd_una").unwrap(), 128);
    assert_eq!(btf.member_offset("tcp_sock", "snd_una_alias").unwrap(), 128);
    assert_eq!(btf.member_offset("tcp_sock", "snd_nxt").unwrap(), 132);
    assert_eq!(btf.member_offset("tcp_sock", "write_seq").unwrap(), 136);
    assert_eq!(btf.member_offset("tcp_sock", "rcv_nxt").unwrap(), 140);
    let marker = "__cacheline_group_begin__tcp_sock_read_tx";
    assert_eq!(btf.member_size("tcp_sock", marker).unwrap(), 0);
}

#[test]
fn typedef_and_modifier_chains() {
    let btf = parsed();
    // typedef struct {..} possible_net_t: descend through the typedef.
    assert_eq!(btf.member_offset("sock_common", "skc_net.net").unwrap(), 24);
    assert_eq!(btf.member_size("sock_common", "skc_net").unwrap(), 8);
    assert_eq!(btf.member_size("sock_common", "skc_net.net").unwrap(), 8);
    // const -> typedef u32 -> typedef __u32 -> unsigned int
    assert_eq!(btf.member_size("tcp_sock", "snd_nxt").unwrap(), 4);
    // restrict -> type_tag -> const -> typedef -> typedef -> int
    assert_eq!(
        btf.member_size("inet_connection_sock", "icsk_user_timeout")
            .unwrap(),
        4
    );
    assert_eq!(
        btf.member_offset("inet_connection_sock", "icsk_user_timeout")
            .unwrap(),
        64
    );
}

#[test]
fn bitfields_are_errors_naming_the_field() {
    let btf = parsed();
    for (strukt, path) in [
        ("inet_connection_sock", "icsk_ca_state"),
        ("inet_connection_sock", "icsk_ca_initialized"),
        ("bits0", "flag"),
        ("bits0", "odd"),
    ] {
        let err = btf.member_offset(strukt, path).unwrap_err();
        assert!(
            matches!(err, BtfError::Bitfield { .. }),
            "{strukt}.{path}: {err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(strukt) && msg.contains(&format!("`{path}`")),
            "{msg}"
        );
        assert!(msg.contains("bitfield"), "{msg}");
        assert!(btf.member_size(strukt, path).is_err());
    }
    assert_eq!(btf.member_offset("bits0", "whole").unwrap(), 4);
}

#[test]
fn missing_member_and_struct_errors() {
    let btf = parsed();
    let err = btf.member_offset("tcp_sock", "rcv_tstamp").unwrap_err();
    assert!(err.is_missing());
    assert_eq!(
        err.to_string(),
        "struct tcp_sock has no member `rcv_tstamp` in the running kernel's BTF (kernel too \
         old or too new for this tcpwatch build)"
    );
    let err = btf.member_offset("net", "ns.ino").unwrap_err();
    assert!(err.is_missing());
    assert!(err.to_string().contains("no member `ns.ino`"), "{err}");
    assert!(err.to_string().contains("`ino` not found"), "{err}");

    let err = btf.member_offset("tcp6_sock", "snd_una").unwrap_err();
    assert!(err.is_missing());
    assert!(
        err.to_string().contains("struct tcp6_sock is not in"),
        "{err}"
    );
    assert!(btf.struct_size("tcp6_sock").unwrap_err().is_missing());

    // Descending into a non-struct member.
    let err = btf.member_offset("net", "net_cookie.lo").unwrap_err();
    assert!(matches!(err, BtfError::NotComposite { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("`net_cookie` is not a struct or union (its type is: integer)"),
        "{err}"
    );
    assert!(!err.is_missing());

    for bad in ["", ".", "ns.", ".inum", "ns..inum"] {
        let err = btf.member_offset("net", bad).unwrap_err();
        assert!(matches!(err, BtfError::BadPath { .. }), "{bad:?}: {err}");
    }
}

#[test]
fn member_sizes_without_a_size() {
    let mut b = Builder::new();
    let proto = b.raw("", kind::FUNC_PROTO, false, 0, 0, &[]);
    let fwd = b.raw("later", kind::FWD, false, 0, 0, &[]);
    b.strukt("s", 8, &[("f", proto, 0), ("g", fwd, 0)]);
    let btf = Btf::parse(&b.build()).unwrap();
    assert_eq!(btf.member_offset("s", "f").unwrap(), 0);
    let err = btf.member_size("s", "f").unwrap_err();
    assert!(
        matches!(
            err,
            BtfError::NoSize {
                kind: "function prototype",
                ..
            }
        ),
        "{err}"
    );
    let err = btf.member_size("s", "g").unwrap_err();
    assert!(
        matches!(
            err,
            BtfError::NoSize {
                kind: "forward declaration",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn every_kind_is_skipped_with_its_length() {
    let mut b = Builder::new();
    let int = b.int("int", 4);
    let ptr = b.modifier(kind::PTR, "", int);
    let arr = b.array(int, int, 3);
    let e = b.raw("e", kind::ENUM, false, 2, 4, &[1, 0, 2, 1]);
    b.raw("fwd", kind::FWD, false, 0, 0, &[]);
    let td = b.modifier(kind::TYPEDEF, "td", int);
    let vol = b.modifier(kind::VOLATILE, "", td);
    let cst = b.modifier(kind::CONST, "", vol);
    let rst = b.modifier(kind::RESTRICT, "", ptr);
    let proto = b.raw("", kind::FUNC_PROTO, false, 2, int, &[0, int, 0, ptr]);
    b.raw("f", kind::FUNC, false, 0, proto, &[]);
    let var = b.raw("v", kind::VAR, false, 0, int, &[1]);
    b.raw(".data", kind::DATASEC, false, 1, 4, &[var, 0, 4]);
    let float = b.raw("double", kind::FLOAT, false, 0, 8, &[]);
    b.raw("tag", kind::DECL_TAG, false, 0, var, &[u32::MAX]);
    let tt = b.modifier(kind::TYPE_TAG, "user", cst);
    let e64 = b.raw("e64", kind::ENUM64, false, 1, 8, &[1, 0, 1]);
    let un = b.union("u", 8, &[("i", int, 0), ("d", float, 0)]);
    b.strukt(
        "all",
        64,
        &[
            ("p", rst, 0),
            ("a", arr, 8),
            ("e", e, 20),
            ("c", tt, 24),
            ("d", float, 32),
            ("e64", e64, 40),
            ("u", un, 48),
        ],
    );
    let btf = Btf::parse(&b.build()).unwrap();
    assert_eq!(btf.type_count(), 20);
    let sizes = [
        ("p", 8),
        ("a", 12),
        ("e", 4),
        ("c", 4),
        ("d", 8),
        ("e64", 8),
        ("u", 8),
    ];
    for (name, size) in sizes {
        assert_eq!(btf.member_size("all", name).unwrap(), size, "{name}");
    }
    assert_eq!(btf.member_offset("all", "u.d").unwrap(), 48);
    assert_eq!(btf.member_offset("all", "e64").unwrap(), 40);
    assert_eq!(btf.struct_size("u").unwrap(), 8);
}

#[test]
fn unknown_kind_is_an_error() {
    let mut b = Builder::new();
    b.int("int", 4);
    b.raw("x", 20, false, 0, 0, &[]);
    let err = Btf::parse(&b.build()).unwrap_err();
    assert_eq!(
        err,
        BtfError::UnknownKind {
            type_id: 2,
            kind: 20
        }
    );
    assert!(err.to_string().contains("upgrade tcpwatch"), "{err}");
}

#[test]
fn header_errors() {
    let good = sample();
    let mut bad = good.clone();
    bad[0] = 0xeb;
    bad[1] = 0x9f;
    assert_eq!(
        Btf::parse(&bad).unwrap_err(),
        BtfError::BadMagic { found: 0x9feb }
    );
    let mut bad = good.clone();
    bad[2] = 2;
    assert_eq!(
        Btf::parse(&bad).unwrap_err(),
        BtfError::UnsupportedVersion(2)
    );
    let mut bad = good.clone();
    bad[4..8].copy_from_slice(&8u32.to_le_bytes()); // hdr_len < 24
    assert!(matches!(
        Btf::parse(&bad).unwrap_err(),
        BtfError::BadSection { .. }
    ));
    let mut bad = good;
    bad[16..20].copy_from_slice(&u32::MAX.to_le_bytes()); // str_off far away
    assert!(matches!(
        Btf::parse(&bad).unwrap_err(),
        BtfError::BadSection { .. }
    ));
    assert!(matches!(
        Btf::parse(&[]).unwrap_err(),
        BtfError::Truncated { .. }
    ));
}

#[test]
fn every_truncation_is_an_error() {
    let good = sample();
    for len in 0..good.len() {
        let err = Btf::parse(&good[..len]).unwrap_err();
        assert!(
            matches!(
                err,
                BtfError::Truncated { .. } | BtfError::BadSection { .. }
            ),
            "len {len}: {err}"
        );
    }
}

#[test]
fn truncated_type_section_is_an_error() {
    let mut b = Builder::new();
    let int = b.int("int", 4);
    b.strukt("s", 8, &[("a", int, 0), ("b", int, 4)]);
    // Cut the type section in the middle of the struct's members.
    let cut = b.types.len() - 6;
    b.types.truncate(cut);
    let err = Btf::parse(&b.build()).unwrap_err();
    assert!(matches!(err, BtfError::Truncated { .. }), "{err}");
    assert!(err.to_string().contains("BTF type #2"), "{err}");
}

#[test]
fn corrupt_references_are_errors_not_panics() {
    let mut b = Builder::new();
    // typedef cycle: #1 -> #2 -> #1
    b.modifier(kind::TYPEDEF, "a", 2);
    b.modifier(kind::TYPEDEF, "b", 1);
    // anonymous member that contains its own struct
    b.strukt("loop", 4, &[("", 3, 0)]);
    b.strukt("dangling", 4, &[("x", 999, 0)]);
    b.strukt("cyc", 4, &[("x", 1, 0)]);
    let btf = Btf::parse(&b.build()).unwrap();
    let err = btf.member_offset("loop", "x").unwrap_err();
    assert!(matches!(err, BtfError::TooDeep { .. }), "{err}");
    let err = btf.member_size("dangling", "x").unwrap_err();
    assert!(
        matches!(err, BtfError::BadTypeId { type_id: 999, .. }),
        "{err}"
    );
    let err = btf.member_size("cyc", "x").unwrap_err();
    assert!(matches!(err, BtfError::TooDeep { .. }), "{err}");
}

const SAMPLE_PATHS: &[(&str, &str)] = &[
    ("sock_common", "skc_daddr"),
    ("sock_common", "skc_net.net"),
    ("net", "ns.inum"),
    ("inet_connection_sock", "icsk_ack.lrcvtime"),
    ("inet_connection_sock", "icsk_ca_state"),
    ("tcp_sock", "snd_una"),
    ("bits0", "odd"),
];

fn query_all(btf: &Btf) {
    for (s, p) in SAMPLE_PATHS {
        let _ = btf.member_offset(s, p);
        let _ = btf.member_size(s, p);
        let _ = btf.struct_size(s);
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(btf) = Btf::parse(&data) {
            query_all(&btf);
        }
    }

    #[test]
    fn random_type_section_never_panics(
        words in proptest::collection::vec(any::<u32>(), 0..96),
        kinds in proptest::collection::vec(0u32..21, 0..96),
        strings in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        // Valid header, type words with plausible kinds/vlens so that parsing gets deep.
        let mut types = Vec::new();
        for (i, w) in words.iter().enumerate() {
            let w = if i % 3 == 1 {
                let k = kinds.get(i / 3).copied().unwrap_or(4);
                (w & 0x8000_0003) | (k << 24)
            } else if i % 3 == 2 {
                w % 24
            } else {
                w % 70
            };
            types.extend_from_slice(&w.to_le_bytes());
        }
        let mut strs = vec![0u8];
        strs.extend_from_slice(&strings);
        let mut b = Builder::new();
        b.types = types;
        b.strings = strs;
        if let Ok(btf) = Btf::parse(&b.build()) {
            query_all(&btf);
        }
    }

    #[test]
    fn mutated_sample_never_panics(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut data = sample();
        for (at, v) in &edits {
            let i = at.index(data.len());
            data[i] ^= v;
        }
        if truncate {
            data.truncate(cut.index(data.len()));
        }
        if let Ok(btf) = Btf::parse(&data) {
            query_all(&btf);
        }
    }
}

/// The fields tcpwatch reads (`tcpwatch_common::KernelOffsets`), with their expected sizes
/// (0: not checked).
const KERNEL_FIELDS: &[(&str, &str, u32)] = &[
    ("sock_common", "skc_daddr", 4),
    ("sock_common", "skc_rcv_saddr", 4),
    ("sock_common", "skc_dport", 2),
    ("sock_common", "skc_num", 2),
    ("sock_common", "skc_family", 2),
    ("sock_common", "skc_state", 1),
    ("sock_common", "skc_net", 8),
    ("sock_common", "skc_v6_daddr", 16),
    ("sock_common", "skc_v6_rcv_saddr", 16),
    ("net", "ns.inum", 4),
    ("net", "net_cookie", 8),
    ("sock", "sk_ack_backlog", 4),
    ("sock", "sk_max_ack_backlog", 4),
    ("sock", "sk_socket", 8),
    ("sock", "sk_sndbuf", 4),
    ("sock", "sk_wmem_queued", 4),
    ("socket_alloc", "vfs_inode", 0),
    ("inode", "i_ino", 8),
    ("inet_connection_sock", "icsk_rto", 4),
    ("inet_connection_sock", "icsk_backoff", 1),
    ("inet_connection_sock", "icsk_retransmits", 1),
    ("inet_connection_sock", "icsk_probes_out", 1),
    ("inet_connection_sock", "icsk_user_timeout", 4),
    ("inet_connection_sock", "icsk_ack.lrcvtime", 4),
    ("tcp_sock", "write_seq", 4),
    ("tcp_sock", "snd_una", 4),
    ("tcp_sock", "snd_nxt", 4),
    ("tcp_sock", "rcv_nxt", 4),
    ("tcp_sock", "copied_seq", 4),
    ("tcp_sock", "snd_wnd", 4),
    ("tcp_sock", "srtt_us", 4),
    ("tcp_sock", "total_retrans", 4),
    ("tcp_sock", "lsndtime", 4),
    ("tcp_sock", "rcv_tstamp", 4),
];

#[test]
fn real_vmlinux_btf_resolves_kernel_offsets() {
    let data = match std::fs::read(VMLINUX_BTF_PATH) {
        Ok(data) => data,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must test the running kernel's BTF but cannot read {VMLINUX_BTF_PATH}: {e}"
            );
            eprintln!(
                "\n!!!!! SKIPPED real_vmlinux_btf_resolves_kernel_offsets: cannot read \
                 {VMLINUX_BTF_PATH}: {e} (kernel without CONFIG_DEBUG_INFO_BTF?) !!!!!\n"
            );
            return;
        }
    };
    let start = std::time::Instant::now();
    let btf = Btf::parse(&data).unwrap();
    eprintln!(
        "parsed {} bytes of vmlinux BTF ({} types) in {:?}",
        data.len(),
        btf.type_count(),
        start.elapsed()
    );
    for &(strukt, path, size) in KERNEL_FIELDS {
        let off = btf.member_offset(strukt, path).unwrap();
        let got = btf.member_size(strukt, path).unwrap();
        eprintln!("{strukt}.{path}: offset {off}, size {got}");
        if size != 0 {
            assert_eq!(got, size, "{strukt}.{path}");
        }
        assert!(
            off + got <= btf.struct_size(strukt).unwrap(),
            "{strukt}.{path}"
        );
    }
    let sc = |p| btf.member_offset("sock_common", p).unwrap();
    assert_eq!(sc("skc_daddr"), 0);
    assert_eq!(sc("skc_rcv_saddr"), 4);
    assert_eq!(sc("skc_dport"), 12);
    assert_eq!(sc("skc_num"), 14);
    assert_eq!(sc("skc_family"), 16);
    assert_eq!(sc("skc_state"), 18);
    // struct sock starts with sock_common, inet_connection_sock with (inet_sock with) sock,
    // tcp_sock with inet_connection_sock.
    assert_eq!(btf.member_offset("sock", "__sk_common").unwrap(), 0);
    let sock = btf.struct_size("sock").unwrap();
    let icsk = btf.struct_size("inet_connection_sock").unwrap();
    assert!(
        btf.member_offset("sock", "sk_ack_backlog").unwrap()
            >= btf.struct_size("sock_common").unwrap()
    );
    for &(strukt, path, _) in KERNEL_FIELDS {
        let off = btf.member_offset(strukt, path).unwrap();
        match strukt {
            "inet_connection_sock" => assert!(off >= sock, "{path}"),
            "tcp_sock" => assert!(off >= icsk, "{path}"),
            _ => {}
        }
    }
}
