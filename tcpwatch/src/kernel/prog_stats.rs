//! The kernel's own accounting of tcpwatch's programs: run time, run count and recursion
//! misses from `bpf_prog_info` (`BPF_OBJ_GET_INFO_BY_FD`), as `ebpf_exporter` reads them.
//!
//! aya 0.14's `ProgramInfo` has run time and count but not `recursion_misses`, so the info is
//! read with the syscall directly. Run time and count are only counted while run-time
//! statistics are on: the daemon holds a `BPF_ENABLE_STATS` file descriptor for that (no
//! global sysctl change; the kernel turns them off when the last holder closes it).
use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};

use anyhow::{Context as _, bail};
use aya::Ebpf;
use tcpwatch_core::api::ProgramStats;

/// `BPF_OBJ_GET_INFO_BY_FD` (`enum bpf_cmd`).
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// `struct bpf_prog_info` up to and including `attach_btf_id` (Linux 5.16+), in u64 words.
const INFO_WORDS: usize = 29;
/// Byte offsets in `struct bpf_prog_info` (include/uapi/linux/bpf.h).
const OFF_ID: usize = 4;
const OFF_RUN_TIME_NS: usize = 192;
const OFF_RUN_CNT: usize = 200;
const OFF_RECURSION_MISSES: usize = 208;

/// Turns run-time statistics on for as long as the returned descriptor lives. None, with a
/// warning, when the kernel refuses (then `run_time_ns`/`run_count` stay 0 unless the host
/// sets `kernel.bpf_stats_enabled`).
pub fn enable_run_stats() -> Option<OwnedFd> {
    match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
        Ok(fd) => Some(fd),
        Err(e) => {
            tracing::warn!(
                error = %e,
                "BPF_ENABLE_STATS refused: program run time and run count are not counted \
                 (recursion misses still are); needs CAP_SYS_ADMIN and Linux 5.8+"
            );
            None
        }
    }
}

/// Whether the host counts run time for every program (`kernel.bpf_stats_enabled=1`).
pub fn host_stats_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|s| s.trim() == "1")
}

/// The statistics of every loaded program of `ebpf`, sorted by name.
pub fn read_all(ebpf: &Ebpf) -> anyhow::Result<Vec<ProgramStats>> {
    let mut out = Vec::new();
    for (name, prog) in ebpf.programs() {
        // Programs not loaded (the unused tp_btf/raw_tp twin, an optional hook) have no fd.
        let Ok(fd) = prog.fd() else { continue };
        let info = read_info(fd.as_fd().as_raw_fd())
            .with_context(|| format!("reading the kernel's statistics of program {name}"))?;
        out.push(stats_of(name, &info));
    }
    out.sort_by(|a, b| a.program.cmp(&b.program));
    Ok(out)
}

fn read_info(fd: i32) -> anyhow::Result<[u8; INFO_WORDS * 8]> {
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut buf = [0_u64; INFO_WORDS];
    let mut attr = InfoAttr {
        bpf_fd: u32::try_from(fd).context("negative fd")?,
        info_len: u32::try_from(size_of_val(&buf)).context("info size")?,
        info: (&raw mut buf) as u64,
    };
    // SAFETY: `attr` is the `info` member of `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD; the
    // kernel writes at most `info_len` bytes to `buf`, which is that large and lives across
    // the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &raw mut attr,
            size_of::<InfoAttr>(),
        )
    };
    if rc != 0 {
        bail!(
            "BPF_OBJ_GET_INFO_BY_FD: {}",
            std::io::Error::last_os_error()
        );
    }
    let mut bytes = [0_u8; INFO_WORDS * 8];
    for (chunk, w) in bytes.chunks_exact_mut(8).zip(buf) {
        chunk.copy_from_slice(&w.to_ne_bytes());
    }
    Ok(bytes)
}

/// Decodes the fields tcpwatch exports from the bytes of a `struct bpf_prog_info`.
fn stats_of(name: &str, info: &[u8; INFO_WORDS * 8]) -> ProgramStats {
    let u32_at = |o: usize| u32::from_ne_bytes([info[o], info[o + 1], info[o + 2], info[o + 3]]);
    let u64_at = |o: usize| {
        let mut b = [0_u8; 8];
        b.copy_from_slice(&info[o..o + 8]);
        u64::from_ne_bytes(b)
    };
    ProgramStats {
        program: name.to_owned(),
        id: u32_at(OFF_ID),
        run_time_ns: u64_at(OFF_RUN_TIME_NS),
        run_count: u64_at(OFF_RUN_CNT),
        recursion_misses: u64_at(OFF_RECURSION_MISSES),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_prog_info_fields_at_their_uapi_offsets() {
        let mut info = [0_u8; INFO_WORDS * 8];
        info[OFF_ID..OFF_ID + 4].copy_from_slice(&77_u32.to_ne_bytes());
        info[OFF_RUN_TIME_NS..OFF_RUN_TIME_NS + 8].copy_from_slice(&9000_u64.to_ne_bytes());
        info[OFF_RUN_CNT..OFF_RUN_CNT + 8].copy_from_slice(&30_u64.to_ne_bytes());
        info[OFF_RECURSION_MISSES..OFF_RECURSION_MISSES + 8].copy_from_slice(&2_u64.to_ne_bytes());
        let s = stats_of("tcpwatch_sweep", &info);
        assert_eq!(
            s,
            ProgramStats {
                program: "tcpwatch_sweep".into(),
                id: 77,
                run_time_ns: 9000,
                run_count: 30,
                recursion_misses: 2,
            }
        );
    }
}
