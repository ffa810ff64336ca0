//! Which kernel struct fields tcpwatch reads, and their offsets in the running kernel.
//!
//! Rust eBPF has no CO-RE relocations: the offsets are resolved here from the kernel's BTF and
//! patched into the programs' `.rodata`. This table is tcpwatch's whole coupling to kernel
//! internals: every field, its expected width and whether tcpwatch can run without it.
use tcpwatch_common::{KernelOffsets, OFFSET_MISSING, SOCK_COPY_LEN};

use crate::btf::{Btf, BtfError};

/// One kernel field tcpwatch reads.
#[derive(Clone, Copy, Debug)]
pub struct FieldSpec {
    pub strukt: &'static str,
    pub path: &'static str,
    /// Expected width in bytes (None: the member is a struct whose address alone is used).
    pub size: Option<u32>,
    /// Without a required field tcpwatch refuses to start; an optional one reads as 0.
    pub required: bool,
    /// What the field is used for, shown when it is missing.
    pub purpose: &'static str,
}

macro_rules! fields {
    ($( $name:ident : $strukt:literal . $path:literal, $size:expr, $req:expr, $why:literal; )*) => {
        /// Every field, in `KernelOffsets` order.
        pub const FIELDS: &[(&str, FieldSpec)] = &[
            $( (stringify!($name), FieldSpec {
                strukt: $strukt, path: $path, size: $size, required: $req, purpose: $why,
            }), )*
        ];

        fn set(o: &mut KernelOffsets, name: &str, off: u32) {
            match name {
                $( stringify!($name) => o.$name = off, )*
                _ => {}
            }
        }

        /// The offset of field `name` (None: no such field).
        #[must_use]
        pub fn get(o: &KernelOffsets, name: &str) -> Option<u32> {
            match name {
                $( stringify!($name) => Some(o.$name), )*
                _ => None,
            }
        }
    };
}

fields! {
    skc_daddr: "sock_common"."skc_daddr", Some(4), true, "IPv4 remote address";
    skc_rcv_saddr: "sock_common"."skc_rcv_saddr", Some(4), true, "IPv4 local address";
    skc_dport: "sock_common"."skc_dport", Some(2), true, "remote port";
    skc_num: "sock_common"."skc_num", Some(2), true, "local port";
    skc_family: "sock_common"."skc_family", Some(2), true, "address family";
    skc_state: "sock_common"."skc_state", Some(1), true, "TCP state";
    skc_net: "sock_common"."skc_net", Some(8), true, "network namespace";
    skc_v6_daddr: "sock_common"."skc_v6_daddr", Some(16), false, "IPv6 remote address";
    skc_v6_rcv_saddr: "sock_common"."skc_v6_rcv_saddr", Some(16), false, "IPv6 local address";
    net_ns_inum: "net"."ns.inum", Some(4), true, "namespace inode number";
    net_cookie: "net"."net_cookie", Some(8), true, "namespace identity over time";
    sk_ack_backlog: "sock"."sk_ack_backlog", Some(4), true, "listener accept queue length";
    sk_max_ack_backlog: "sock"."sk_max_ack_backlog", Some(4), true, "listener accept queue limit";
    sk_socket: "sock"."sk_socket", Some(8), true, "owner (socket inode)";
    sk_sndbuf: "sock"."sk_sndbuf", Some(4), false, "send buffer size";
    sk_wmem_queued: "sock"."sk_wmem_queued", Some(4), false, "send buffer use";
    sk_protocol: "sock"."sk_protocol", Some(2), true, "TCP filter on state changes";
    sk_flags: "sock"."__sk_common.skc_flags", Some(8), false, "SO_KEEPALIVE (exposure audit)";
    inet_sport: "inet_sock"."inet_sport", Some(2), false, "local port of a reset sent after close";
    socket_alloc_vfs_inode: "socket_alloc"."vfs_inode", None, true, "owner (socket inode)";
    inode_i_ino: "inode"."i_ino", Some(8), true, "owner (socket inode)";
    icsk_rto: "inet_connection_sock"."icsk_rto", Some(4), true, "retransmission timeout";
    icsk_backoff: "inet_connection_sock"."icsk_backoff", Some(1), true, "RTO backoff";
    icsk_retransmits: "inet_connection_sock"."icsk_retransmits", Some(1), false, "retransmits of the head segment";
    icsk_probes_out: "inet_connection_sock"."icsk_probes_out", Some(1), false, "zero-window probes";
    icsk_user_timeout: "inet_connection_sock"."icsk_user_timeout", Some(4), false, "TCP_USER_TIMEOUT";
    icsk_ack_lrcvtime: "inet_connection_sock"."icsk_ack.lrcvtime", Some(4), false, "time of last data received";
    write_seq: "tcp_sock"."write_seq", Some(4), true, "Send-Q";
    snd_una: "tcp_sock"."snd_una", Some(4), true, "Send-Q and ACK progress";
    snd_nxt: "tcp_sock"."snd_nxt", Some(4), true, "unacked vs unsent bytes";
    rcv_nxt: "tcp_sock"."rcv_nxt", Some(4), true, "Recv-Q";
    copied_seq: "tcp_sock"."copied_seq", Some(4), true, "Recv-Q";
    snd_wnd: "tcp_sock"."snd_wnd", Some(4), true, "peer receive window (zero window)";
    srtt_us: "tcp_sock"."srtt_us", Some(4), false, "smoothed RTT";
    total_retrans: "tcp_sock"."total_retrans", Some(4), false, "kernel retransmit total";
    lsndtime: "tcp_sock"."lsndtime", Some(4), false, "time of last send";
    rcv_tstamp: "tcp_sock"."rcv_tstamp", Some(4), false, "time of last ACK received";
    data_segs_in: "tcp_sock"."data_segs_in", Some(4), false, "whether the peer ever sent data (awaiting_response)";
    data_segs_out: "tcp_sock"."data_segs_out", Some(4), false, "whether we ever sent data (awaiting_response)";
    keepalive_time: "tcp_sock"."keepalive_time", Some(4), false, "TCP_KEEPIDLE (exposure audit)";
    keepalive_intvl: "tcp_sock"."keepalive_intvl", Some(4), false, "TCP_KEEPINTVL (exposure audit)";
    keepalive_probes: "tcp_sock"."keepalive_probes", Some(1), false, "TCP_KEEPCNT (exposure audit)";
    tw_substate: "inet_timewait_sock"."tw_substate", Some(1), false, "TIME_WAIT counted, not listed";
}

/// Structs that must start with the one before them (tcpwatch reads `tcp_sock`,
/// `inet_connection_sock`, `sock` and `sock_common` fields from the same pointer).
const EMBEDDED_AT_ZERO: &[(&str, &str)] = &[
    ("tcp_sock", "inet_conn"),
    ("inet_connection_sock", "icsk_inet"),
    ("inet_sock", "sk"),
    ("sock", "__sk_common"),
];

/// Why the running kernel can't be used.
#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    #[error(
        "the running kernel lacks {field} ({purpose}): {source}. tcpwatch supports Linux 6.1 \
         and later built with CONFIG_DEBUG_INFO_BTF=y; see docs/operations.md"
    )]
    Missing {
        field: String,
        purpose: &'static str,
        source: Box<BtfError>,
    },
    #[error(
        "{field} is {actual} bytes wide in the running kernel, tcpwatch reads {expected}: this \
         kernel's layout is not supported (see docs/operations.md)"
    )]
    Width {
        field: String,
        expected: u32,
        actual: u32,
    },
    #[error(
        "the socket fields tcpwatch reads span {len} bytes in this kernel, more than the \
         {max}-byte copy of its sweep: unsupported kernel layout"
    )]
    TooLarge { len: u32, max: usize },
    #[error("{outer}.{member} is not at offset 0 (found {offset}): unsupported kernel layout")]
    Layout {
        outer: &'static str,
        member: &'static str,
        offset: u32,
    },
}

/// Optional fields the running kernel lacks (reported at start-up, read as 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub offsets: KernelOffsets,
    pub missing_optional: Vec<String>,
}

/// Resolves every field of [`FIELDS`] from `btf`.
pub fn resolve(btf: &Btf) -> Result<Resolved, OffsetsError> {
    for &(outer, member) in EMBEDDED_AT_ZERO {
        let offset = btf
            .member_offset(outer, member)
            .map_err(|source| OffsetsError::Missing {
                field: format!("{outer}.{member}"),
                purpose: "struct embedding",
                source: Box::new(source),
            })?;
        if offset != 0 {
            return Err(OffsetsError::Layout {
                outer,
                member,
                offset,
            });
        }
    }
    let mut out = KernelOffsets::UNSET;
    let mut missing_optional = Vec::new();
    for (name, f) in FIELDS {
        let field = format!("{}.{}", f.strukt, f.path);
        match btf.member_offset(f.strukt, f.path) {
            Ok(off) => {
                if let Some(expected) = f.size {
                    let actual = btf.member_size(f.strukt, f.path).map_err(|source| {
                        OffsetsError::Missing {
                            field: field.clone(),
                            purpose: f.purpose,
                            source: Box::new(source),
                        }
                    })?;
                    if actual != expected {
                        return Err(OffsetsError::Width {
                            field,
                            expected,
                            actual,
                        });
                    }
                }
                set(&mut out, name, off);
            }
            Err(e) if !f.required && e.is_missing() => {
                set(&mut out, name, OFFSET_MISSING);
                missing_optional.push(field);
            }
            Err(source) => {
                return Err(OffsetsError::Missing {
                    field,
                    purpose: f.purpose,
                    source: Box::new(source),
                });
            }
        }
    }
    // The sweep copies each socket once: far enough to cover every field read from it.
    let mut full = 0;
    let mut common = 0;
    let mut spans = Vec::new();
    for (name, f) in FIELDS {
        let Some(off) = get(&out, name).filter(|&o| o != OFFSET_MISSING) else {
            continue;
        };
        let end = off + f.size.unwrap_or(0);
        match f.strukt {
            "sock_common" => {
                common = common.max(end);
                full = full.max(end);
                spans.push((off, end));
            }
            "sock" | "inet_connection_sock" | "tcp_sock" => {
                full = full.max(end);
                spans.push((off, end));
            }
            _ => {} // net, socket_alloc, inode: read through pointers; timewait: read alone
        }
    }
    if full as usize > SOCK_COPY_LEN {
        return Err(OffsetsError::TooLarge {
            len: full,
            max: SOCK_COPY_LEN,
        });
    }
    out.full_read_len = full.next_multiple_of(8);
    out.common_read_len = common.next_multiple_of(8);
    out.copy_ranges = crate::copy_ranges::copy_ranges(&spans);
    out.valid = 1;
    Ok(Resolved {
        offsets: out,
        missing_optional,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_offsets_field_is_listed_once() {
        // KernelOffsets has one u32 per field plus the two read lengths and `valid`.
        let n = std::mem::size_of::<KernelOffsets>() / 4 - 3;
        assert_eq!(FIELDS.len(), n);
        let mut names: Vec<&str> = FIELDS.iter().map(|f| f.0).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
        // `set`/`get` name real fields (they compile), are distinct and cover the struct.
        let mut o = KernelOffsets::UNSET;
        for (i, (name, _)) in FIELDS.iter().enumerate() {
            set(&mut o, name, u32::try_from(i).unwrap());
        }
        for (i, (name, _)) in FIELDS.iter().enumerate() {
            assert_eq!(get(&o, name), Some(u32::try_from(i).unwrap()), "{name}");
        }
    }

    /// Resolves against the running kernel when its BTF is readable (no root needed).
    #[test]
    fn resolves_running_kernel() {
        let Ok(data) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must test the running kernel's offsets but cannot read /sys/kernel/btf/vmlinux"
            );
            eprintln!(
                "SKIPPED: /sys/kernel/btf/vmlinux not readable; real-kernel offsets untested"
            );
            return;
        };
        let btf = Btf::parse(&data).unwrap();
        let r = resolve(&btf).unwrap();
        assert_eq!(r.offsets.valid, 1);
        assert_eq!(r.offsets.skc_family, 16);
        assert_eq!(r.offsets.skc_state, 18);
        assert_eq!(r.offsets.skc_num, 14);
        assert_eq!(r.offsets.skc_dport, 12);
        assert!(
            r.offsets.snd_una > r.offsets.sk_socket,
            "tcp_sock fields follow struct sock"
        );
        assert!(r.offsets.full_read_len > r.offsets.snd_una + 3);
        assert!(r.offsets.common_read_len > r.offsets.skc_state);
        assert!(r.offsets.common_read_len < r.offsets.full_read_len);
        assert!(
            r.offsets.tw_substate != OFFSET_MISSING && r.offsets.tw_substate >= 56,
            "tw_substate follows the embedded sock_common"
        );
        let ranges: Vec<_> = r.offsets.copy_ranges.iter().filter(|x| x[1] > 0).collect();
        let copied: u32 = ranges.iter().map(|x| x[1]).sum();
        assert!(copied < r.offsets.full_read_len, "{ranges:?}");
        eprintln!(
            "sweep copies {copied} bytes per socket in {} ranges {ranges:?}, out of {} ({} for \
             minisockets)",
            ranges.len(),
            r.offsets.full_read_len,
            r.offsets.common_read_len
        );
    }
}
