//! Linux capabilities of this process, read from `/proc/self/status`.
use anyhow::Context as _;

pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// The effective capability set.
pub fn effective() -> anyhow::Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    parse_cap_eff(&status).context("no CapEff line in /proc/self/status")
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

#[must_use]
pub fn has(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

/// Capabilities missing to load, attach and sweep every namespace. `CAP_SYS_ADMIN` is needed
/// for `setns()` into other network namespaces; since Linux 5.8 it also covers `CAP_BPF` and
/// `CAP_PERFMON`, which are listed separately for kernels and policies that split them.
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

/// What the daemon still needs after start-up: `CAP_SYS_ADMIN` (setns into namespaces for
/// every sweep), `CAP_BPF` and `CAP_PERFMON` (an iterator link per sweep, map reads),
/// `CAP_SYS_PTRACE` and `CAP_DAC_READ_SEARCH` (other processes' `/proc/PID/fd`, to find socket
/// owners).
pub const RUNTIME_CAPS: [u32; 5] = [
    CAP_DAC_READ_SEARCH,
    CAP_SYS_PTRACE,
    CAP_SYS_ADMIN,
    CAP_PERFMON,
    CAP_BPF,
];

#[must_use]
pub fn mask(caps: &[u32]) -> u64 {
    caps.iter().fold(0, |m, &c| m | (1 << c))
}

/// Names of the capabilities in `caps` that tcpwatch knows about.
#[must_use]
pub fn names(caps: u64) -> Vec<&'static str> {
    [
        (CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH"),
        (CAP_SYS_PTRACE, "CAP_SYS_PTRACE"),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
        (CAP_PERFMON, "CAP_PERFMON"),
        (CAP_BPF, "CAP_BPF"),
    ]
    .into_iter()
    .filter(|(c, _)| has(caps, *c))
    .map(|(_, n)| n)
    .collect()
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Drops every capability but [`RUNTIME_CAPS`] from the effective, permitted, inheritable
/// and bounding sets (the process can never regain them). Returns the effective set kept.
pub fn drop_to_runtime() -> anyhow::Result<u64> {
    let keep = effective()? & mask(&RUNTIME_CAPS);
    // Bounding set first (needs CAP_SETPCAP, which is dropped right after).
    for cap in 0..64_u32 {
        if keep & (1 << cap) == 0 {
            // SAFETY: prctl with integer arguments; EINVAL for caps the kernel doesn't know.
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        }
    }
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    #[expect(
        clippy::cast_possible_truncation,
        reason = "splitting a 64-bit mask in halves"
    )]
    let (lo, hi) = (keep as u32, (keep >> 32) as u32);
    let data = [
        CapData {
            effective: lo,
            permitted: lo,
            inheritable: 0,
        },
        CapData {
            effective: hi,
            permitted: hi,
            inheritable: 0,
        },
    ];
    // SAFETY: header and data are valid for the capset ABI (version 3 takes two CapData).
    let rc = unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).map_err(|e| anyhow::anyhow!("capset: {e}"));
    }
    effective()
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
        assert_eq!(
            missing_for_load(0),
            vec!["CAP_SYS_ADMIN", "CAP_BPF", "CAP_PERFMON"]
        );
        assert_eq!(parse_cap_eff("nothing"), None);
    }

    #[test]
    fn runtime_set_is_what_loading_needs() {
        let m = mask(&RUNTIME_CAPS);
        assert!(missing_for_load(m).is_empty());
        assert_eq!(names(m).len(), 5);
        assert_eq!(names(1 << CAP_BPF), vec!["CAP_BPF"]);
    }
}
