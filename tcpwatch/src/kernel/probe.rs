//! Start-up feature probing: what the running kernel offers tcpwatch (BTF, ring buffer,
//! `tp_btf`/`raw_tp`, BPF iterators over TCP, BPF statistics, the tracepoints and the struct
//! fields it reads), reported in the log, the `/readyz` body and a metric, and one clear
//! refusal message naming what is missing and the minimum kernel (docs/kernels.md).
//!
//! The static facts come from the kernel's BTF, analysed by the pure
//! `tcpwatch_core::features`. The dynamic ones here ask the `bpf()` syscall through aya's probes
//! (they need `CAP_BPF`; without it they read `unknown`).
use tcpwatch_core::features::from_parsed;
pub use tcpwatch_core::features::{Feature, Features, ProbeOptions, Support};

use super::btf::KernelBtf;

const VMLINUX: &str = tcpwatch_core::btf::VMLINUX_BTF_PATH;

/// Probes the running kernel, its BTF read and parsed once by the caller. Never fails: what
/// cannot be probed reads `unknown`.
#[must_use]
pub fn probe(opts: ProbeOptions, btf: &KernelBtf) -> Features {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned());
    let mut f = from_parsed(&release, btf.for_probe(), opts);
    if let Some(e) = btf.read_error() {
        f.set_detail("btf", format!("{VMLINUX}: {e}"));
    }
    f.push(syscall_feature(
        "ringbuf",
        false,
        "BPF ring buffer (state events)",
        "5.8",
        aya::sys::is_map_supported(aya::maps::MapType::RingBuf).map_err(|e| e.to_string()),
    ));
    f.push(syscall_feature(
        "raw_tp",
        false,
        "raw tracepoint programs (fallback of tp_btf)",
        "4.17",
        aya::sys::is_program_supported(aya::programs::ProgramType::RawTracePoint)
            .map_err(|e| e.to_string()),
    ));
    f.push(syscall_feature(
        "bpf_stats",
        false,
        "BPF run-time statistics (BPF_ENABLE_STATS)",
        "5.8",
        // Stats stay enabled while the fd is open: dropped at once.
        aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .map(drop)
            .map(|()| true)
            .map_err(|e| e.to_string()),
    ));
    f.push(syscall_feature(
        "fentry",
        false,
        "fentry/fexit trampolines (not used by default)",
        "5.5",
        aya::sys::is_program_supported(aya::programs::ProgramType::Tracing)
            .map_err(|e| e.to_string()),
    ));
    let kprobe_pmu = std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists();
    f.push(Feature {
        name: "kprobe",
        support: if kprobe_pmu {
            Support::Yes
        } else {
            Support::No
        },
        required: false,
        what: "kprobes (perf kprobe PMU; not used by default)",
        since: "4.17",
        detail: String::new(),
        affects: "",
    });
    f.push(tcpwatch_core::fallbacks::netns_cookie(
        crate::host::netns::so_netns_cookie()
            .map(drop)
            .map_err(|e| format!("getsockopt(SO_NETNS_COOKIE): {e}")),
    ));
    f
}

fn syscall_feature(
    name: &'static str,
    required: bool,
    what: &'static str,
    since: &'static str,
    probed: Result<bool, String>,
) -> Feature {
    let (support, detail) = match probed {
        Ok(true) => (Support::Yes, String::new()),
        Ok(false) => (Support::No, String::new()),
        Err(e) => (Support::Unknown, e),
    };
    Feature {
        name,
        support,
        required,
        what,
        since,
        detail,
        affects: "",
    }
}

/// Logs the summary (info), each unavailable optional feature and unknown probe (debug or
/// warn) and missing optional fields (warn).
pub fn log(features: &Features) {
    tracing::info!(
        kernel = %features.kernel_release,
        features = %features.summary(),
        "kernel features probed"
    );
    for f in &features.items {
        match f.support {
            Support::Yes => {}
            Support::No if f.required => {
                tracing::error!(feature = f.name, since = f.since, detail = %f.detail, "{} is missing", f.what);
            }
            // A fallback tcpwatch takes: what it loses is said once, at warn.
            Support::No if !f.affects.is_empty() => {
                tracing::warn!(
                    feature = f.name,
                    since = f.since,
                    detail = %f.detail,
                    affects = f.affects,
                    "{} not available on this kernel: falling back",
                    f.what
                );
            }
            Support::No => {
                tracing::debug!(feature = f.name, "{} is not available", f.what);
            }
            Support::Unknown if f.required => {
                tracing::warn!(feature = f.name, error = %f.detail, "could not probe {}", f.what);
            }
            // An optional feature tcpwatch does not use by default: nothing to act on.
            Support::Unknown => {
                tracing::debug!(feature = f.name, error = %f.detail, "could not probe {}", f.what);
            }
        }
    }
    if !features.missing_optional_fields.is_empty() {
        tracing::warn!(
            fields = %features.missing_optional_fields.join(", "),
            "this kernel lacks optional fields: they read as 0"
        );
    }
}
