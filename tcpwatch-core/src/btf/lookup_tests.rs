//! Tests of `btf::lookup` (on hand-built BTF and on the running kernel's).
use crate::btf::test_builder::*;
use crate::btf::*;

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
