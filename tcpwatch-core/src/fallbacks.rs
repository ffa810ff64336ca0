//! Optional kernel features tcpwatch uses where the kernel has them, and falls back from
//! where it does not (Linux 5.10 lacks them all): each is decided by a start-up probe, never
//! by the kernel version, and reported as a [`Feature`] whose `affects` says what is lost.
//! The daemon's probe and loader build them from their results (docs/kernels.md).
use crate::features::{Feature, Support};

/// `Ok(())` when the probe found the feature, else why not.
pub type Probed = Result<(), String>;

/// `SO_NETNS_COOKIE` (Linux 5.14+; also what makes `net.net_cookie` a plain value that is
/// always set). Without it namespaces are identified by their inode number, tagged with
/// `tcpwatch_common::NETNS_INODE_TAG`, in the kernel programs and in userspace alike.
#[must_use]
pub fn netns_cookie(probed: Probed) -> Feature {
    feature(
        "netns_cookie",
        probed,
        "network namespace cookies (SO_NETNS_COOKIE)",
        "5.14",
        "namespaces are told apart by inode number, which the kernel reuses at once after a \
         namespace is deleted: the clean-up of a deleted namespace's records (netns_gone) and \
         of kernel socket entries cannot tell it from a new namespace with the same inode",
    )
}

/// `bpf_get_socket_cookie` from tracing and iterator programs (Linux 5.12+). Without it the
/// `raw_tp` hooks and the sweep without cookies run (`tcpwatch_sweep_nocookie`).
#[must_use]
pub fn socket_cookie(probed: Probed) -> Feature {
    feature(
        "socket_cookie",
        probed,
        "socket cookies in tracing and iterator programs (bpf_get_socket_cookie)",
        "5.12",
        "a new socket at the kernel address of a closed one is told apart only by its state \
         events: if they were missed (daemon restart with pinned maps), it inherits the old \
         socket's state age and retransmit/reset counters, and findings on the old socket \
         (close_wait, retransmit_chain, send_queue, zero_window, awaiting_response) are \
         carried over to it instead of being resolved",
    )
}

/// Socket-local storage (`BPF_MAP_TYPE_SK_STORAGE`) from the `tp_btf` and `iter/tcp` programs
/// (Linux 5.11+; tcpwatch also needs the `tp_btf` hooks and the sweep with socket cookies,
/// 5.12+). Without it per-socket state is kept in the `SOCKS` hash (`tcpwatch_common::hooks::
/// store_mode`). Decided by loading the programs with it: the verifier's refusal is the detail.
#[must_use]
pub fn sk_storage(probed: Probed) -> Feature {
    feature(
        "sk_storage",
        probed,
        "socket-local storage for per-socket state (bpf_sk_storage_get from tp_btf and iter/tcp)",
        "5.12",
        "per-socket state is kept in the SOCKS hash instead: a hash insert and delete per \
         connection (a higher kernel cost per event), at most daemon.max_connections sockets \
         (beyond: tcpwatch_kernel_map_full_total{map=\"socks\"}), and entries of sockets \
         closed while tcpwatch was down are garbage-collected by the sweep",
    )
}

/// The `reason` field of the classic `tcp:tcp_send_reset` tracepoint (Linux 6.10+).
#[must_use]
pub fn reset_reason(probed: Probed) -> Feature {
    feature(
        "reset_reason",
        probed,
        "reasons of sent resets (tcp:tcp_send_reset `reason`)",
        "6.10",
        "tcpwatch_resets_sent_by_reason_total is not exported; resets are still counted and \
         classified (stale_connection_reuse, server resets) from the sockets' states",
    )
}

fn feature(
    name: &'static str,
    probed: Probed,
    what: &'static str,
    since: &'static str,
    affects: &'static str,
) -> Feature {
    let (support, detail) = match probed {
        Ok(()) => (Support::Yes, String::new()),
        Err(e) => (Support::No, e),
    };
    Feature {
        name,
        support,
        required: false,
        what,
        since,
        detail,
        affects,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_features_say_why_and_what_is_lost() {
        let f = socket_cookie(Err("verifier: unknown func".into()));
        assert_eq!(f.support, Support::No);
        assert!(!f.required);
        assert_eq!(f.detail, "verifier: unknown func");
        assert!(f.affects.contains("close_wait"));
        let f = sk_storage(Err(
            "tp_inet_sock_set_state: unknown func bpf_sk_storage_get#107".into(),
        ));
        assert_eq!(f.support, Support::No);
        assert!(f.affects.contains("SOCKS hash"));
        let f = netns_cookie(Ok(()));
        assert_eq!((f.support, f.detail.as_str()), (Support::Yes, ""));
        assert!(f.affects.contains("netns_gone"));
        assert!(reset_reason(Ok(())).affects.contains("by_reason"));
        let json = serde_json::to_value(netns_cookie(Ok(()))).unwrap();
        assert!(json["affects"].is_string());
    }
}
