//! The `/proc` owner scans' accounting (`OwnerStats`): how much attributing sockets to
//! processes costs, and how often cached owners turn out stale. [`SERIES`] series.
use super::Builder;
use crate::view::View;

/// Series written by [`owners`].
pub const SERIES: usize = 6;

pub(super) fn owners(out: &Builder, v: &View) -> prometheus::Result<()> {
    let o = &v.owner_stats;
    out.counter(
        "tcpwatch_owner_scans_total",
        "Scans of /proc/PID/fd for the owners of sockets with none known.",
        o.scans,
    )?;
    out.counter(
        "tcpwatch_owner_fds_read_total",
        "File descriptors read by the owner scans.",
        o.fds_read,
    )?;
    out.add(prometheus::Gauge::new(
        "tcpwatch_owner_last_scan_seconds",
        "Duration of the last owner scan.",
    )?)?
    .set(f64::from(u32::try_from(o.last_scan_ms).unwrap_or(u32::MAX)) / 1000.0);
    out.gauge(
        "tcpwatch_owner_retry_waiting",
        "Sockets whose owner a full scan missed (other pid namespace, orphaned, exiting), \
         retried with a backoff of up to 60 s instead of at every scan.",
        i64::try_from(o.retry_waiting).unwrap_or(i64::MAX),
    )?;
    out.counter(
        "tcpwatch_owner_revalidated_total",
        "Cached socket owners re-checked (one readlink each).",
        o.revalidated,
    )?;
    out.counter(
        "tcpwatch_owner_gone_total",
        "Re-checked owners found no longer holding their socket (looked up again).",
        o.owners_gone,
    )
}
