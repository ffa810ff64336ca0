//! Tests of `btf::parse`: every kind, header, truncation and corruption; fuzzing.
use crate::btf::test_builder::*;
use crate::btf::*;
use proptest::prelude::*;

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
