//! Linux capabilities of this process, read from `/proc/self/status`.
use anyhow::Context as _;

pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// The effective capability set.
pub fn effective() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    parse_cap_eff(&status).context("no CapEff line in /proc/self/status")
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

#[must_use]
pub fn has(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

/// Capabilities missing to load, attach and sweep every namespace. CAP_SYS_ADMIN is needed
/// for setns() into other network namespaces; since Linux 5.8 it also covers CAP_BPF and
/// CAP_PERFMON, which are listed separately for kernels and policies that split them.
#[must_use]
pub fn missing_for_load(caps: u64) -> Vec<&'static str> {
    let mut out = Vec::new();
    if !has(caps, CAP_SYS_ADMIN) {
        out.push("CAP_SYS_ADMIN");
        if !has(caps, CAP_BPF) {
            out.push("CAP_BPF");
        }
        if !has(caps, CAP_PERFMON) {
            out.push("CAP_PERFMON");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_capabilities() {
        let root = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        let caps = parse_cap_eff(root).unwrap();
        assert!(missing_for_load(caps).is_empty());
        let bpf_only = (1 << CAP_BPF) | (1 << CAP_PERFMON);
        assert_eq!(missing_for_load(bpf_only), vec!["CAP_SYS_ADMIN"]);
        assert_eq!(missing_for_load(0), vec!["CAP_SYS_ADMIN", "CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(parse_cap_eff("nothing"), None);
    }
}
