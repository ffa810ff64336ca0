//! Tests of `features.rs`.
use super::*;
use crate::btf::VMLINUX_BTF_PATH as VMLINUX;

/// A BTF blob with no types and the given strings.
fn btf_with_strings(names: &[&str]) -> Vec<u8> {
    let mut strings = vec![0_u8];
    for n in names {
        strings.extend_from_slice(n.as_bytes());
        strings.push(0);
    }
    let mut raw = vec![0x9f, 0xeb, 1, 0];
    raw.extend_from_slice(&24_u32.to_le_bytes()); // hdr_len
    raw.extend_from_slice(&0_u32.to_le_bytes()); // type_off
    raw.extend_from_slice(&0_u32.to_le_bytes()); // type_len
    raw.extend_from_slice(&0_u32.to_le_bytes()); // str_off
    raw.extend_from_slice(&u32::try_from(strings.len()).unwrap().to_le_bytes());
    raw.extend_from_slice(&strings);
    raw
}

#[test]
fn kernel_releases() {
    assert_eq!(parse_release("6.1.0-56-cloud-amd64"), Some((6, 1)));
    assert_eq!(parse_release("6.12.95+deb12-cloud-amd64"), Some((6, 12)));
    assert_eq!(parse_release("6.18.44-fc-v445"), Some((6, 18)));
    assert_eq!(parse_release("5.15rc1"), Some((5, 15)));
    assert_eq!(parse_release("unknown"), None);
}

#[test]
fn btf_string_section() {
    let raw = btf_with_strings(&["btf_trace_inet_sock_set_state", "sock"]);
    let s = btf_strings(&raw).unwrap();
    assert!(has_name(s, "btf_trace_inet_sock_set_state"));
    assert!(has_name(s, "sock"));
    assert!(!has_name(s, "btf_trace_inet_sock"), "whole names only");
    assert!(btf_strings(&raw[..20]).is_none(), "truncated header");
    assert!(
        btf_strings(&raw[..raw.len() - 1]).is_none(),
        "truncated strings"
    );
    assert!(btf_strings(b"not btf at all, not btf at all").is_none());
}

#[test]
fn no_btf_refuses_with_minimum_kernel() {
    let f = from_btf("5.4.0-1-amd64", None, ProbeOptions::default());
    assert_eq!(f.kernel_version, Some((5, 4)));
    assert_eq!(f.get("btf").unwrap().support, Support::No);
    assert_eq!(f.get("iter_tcp").unwrap().support, Support::Unknown);
    let msg = f.refusal().unwrap();
    assert!(msg.contains("kernel BTF"), "{msg}");
    assert!(msg.contains("Minimum kernel: 5.10"), "{msg}");
    assert!(
        f.summary().starts_with("kernel 5.4.0-1-amd64: btf=no"),
        "{}",
        f.summary()
    );
}

#[test]
fn pretend_no_iter_names_iter_tcp() {
    let raw = btf_with_strings(&[]);
    let opts = ProbeOptions {
        pretend_no_iter: true,
    };
    let f = from_btf("6.18.0", Some(&raw), opts);
    let msg = f.refusal().unwrap();
    assert!(
        msg.contains("iter/tcp") && msg.contains("Linux 5.9+"),
        "{msg}"
    );
    assert!(msg.contains("Minimum kernel: 5.10"), "{msg}");
}

#[test]
fn attached_hooks_in_summary_and_metrics() {
    let mut f = from_btf("6.1.0", None, ProbeOptions::default());
    f.record_attached("inet_sock_set_state", "tp_btf");
    f.record_attached("tcp_send_reset", "raw_tp");
    f.record_attached("no_such_tracepoint", "raw_tp");
    assert!(
        f.summary().contains("hooks=tp_btf:1,raw_tp:1"),
        "{}",
        f.summary()
    );
    let m = f.metric_values();
    assert!(m.contains(&("btf".to_owned(), 0)));
    assert!(m.contains(&("iter_tcp".to_owned(), -1)));
    assert!(m.contains(&("tp_btf_attached".to_owned(), 1)));
    assert!(m.contains(&("raw_tp_attached".to_owned(), 1)));
    let json = serde_json::to_value(&f).unwrap();
    assert_eq!(json["items"][0]["support"], "no");
}

/// The running kernel's BTF when readable (no root needed): everything required is there.
#[test]
fn running_kernel_btf() {
    let Ok(raw) = std::fs::read(VMLINUX) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must probe the running kernel's BTF but cannot read {VMLINUX}"
        );
        eprintln!("SKIPPED: {VMLINUX} not readable");
        return;
    };
    let f = from_btf("running", Some(&raw), ProbeOptions::default());
    assert_eq!(f.refusal(), None, "{}", f.summary());
    assert!(
        f.tracepoints.iter().all(|t| t.in_btf),
        "{:?}",
        f.tracepoints
    );
    assert_eq!(f.get("iter_tcp").unwrap().support, Support::Yes);
    assert!(f.missing_required_fields.is_empty());
}
