//! The kernel programs' rare diagnostics (aya-log records from `tcpwatch-ebpf/src/diag.rs`:
//! a failed field read, a map full for the first time) forwarded to the daemon's log.
use std::os::fd::AsRawFd as _;

use aya::Ebpf;
use aya_log::EbpfLogger;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Writes aya-log records as `tracing` events with target `tcpwatch::kernel`.
pub struct ToTracing;

impl log::Log for ToTracing {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let ebpf_module = record.module_path().unwrap_or("?");
        let msg = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(target: "tcpwatch::kernel", ebpf_module, "{msg}"),
            log::Level::Warn => tracing::warn!(target: "tcpwatch::kernel", ebpf_module, "{msg}"),
            log::Level::Info => tracing::info!(target: "tcpwatch::kernel", ebpf_module, "{msg}"),
            log::Level::Debug => tracing::debug!(target: "tcpwatch::kernel", ebpf_module, "{msg}"),
            log::Level::Trace => tracing::trace!(target: "tcpwatch::kernel", ebpf_module, "{msg}"),
        }
    }

    fn flush(&self) {}
}

pub type KernelLog = EbpfLogger<ToTracing>;

/// Takes the programs' log ring buffer (`AYA_LOGS`) out of the loaded object. Call it before
/// the programs are loaded and keep the result while they are (it holds the map's fd).
/// None, with a warning, if the object has no log map (build mismatch): the daemon runs on
/// without kernel diagnostics.
pub fn init(ebpf: &mut Ebpf) -> Option<KernelLog> {
    match EbpfLogger::init_with_logger(ebpf, ToTracing) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(
                error = %e,
                "kernel diagnostics (aya-log) unavailable: the kernel programs' rare warnings \
                 (failed reads, full maps) will not be logged; the counters still are exported"
            );
            None
        }
    }
}

/// Forwards records as they arrive (the ring buffer's fd wakes the task; nothing runs while
/// the programs have nothing to say).
pub async fn forward(log: KernelLog) -> anyhow::Result<()> {
    let fd = log.as_raw_fd();
    // SAFETY: the logger owns the ring buffer's map fd and keeps it open, unchanged, for as
    // long as it lives; the AsyncFd owns the logger.
    let mut log =
        unsafe { AsyncFd::register_with_interest(log, Interest::READABLE) }.map_err(|e| {
            anyhow::anyhow!("registering the kernel log ring buffer (fd {fd}) with epoll: {e}")
        })?;
    loop {
        let mut guard = log.readable_mut().await?;
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}
