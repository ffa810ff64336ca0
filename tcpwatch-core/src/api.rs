//! The wire contract between the daemon and its clients (`tcpwatch top`, scripts): the
//! response bodies of `/api/v1/*` and the events of `/api/v1/stream`. The daemon serializes
//! these types and `top` deserializes the same ones, so a change on one side is a compile
//! error or a failing contract test on the other.
use serde::{Deserialize, Serialize};

use crate::incident::{Incident, IncidentChange};
use crate::model::{ConnRecord, Finding, FindingChange};
use crate::table::Delta;

/// One event of `/api/v1/stream` (an SSE `data:` line, JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    /// A change of the connection table.
    Conn(Delta),
    /// A finding lifecycle change.
    Finding(Box<FindingChange>),
    /// An incident lifecycle change.
    Incident(Box<IncidentChange>),
    /// The daemon dropped `missed` events for this subscriber: the client must resync. With
    /// `conn_only`, only connection deltas were lost: finding and incident changes travel on
    /// their own channel and are complete.
    Lagged {
        missed: u64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        conn_only: bool,
    },
}

/// `GET /api/v1/connections`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectionsBody {
    pub connections: Vec<ConnRecord>,
}

/// `GET /api/v1/findings`: each finding carries its `incident_id`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FindingsBody {
    pub open: Vec<Finding>,
    pub recently_resolved: Vec<Finding>,
}

/// `GET /api/v1/incidents`: open incidents (most severe, then oldest, first) and the recently
/// resolved ones (newest first).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IncidentsBody {
    pub open: Vec<Incident>,
    pub recently_resolved: Vec<Incident>,
}

/// `GET /api/v1/exposure` and `tcpwatch snapshot --exposure --json`: the exposure audit
/// (`docs/exposure.md`), per process and remote endpoint, most exposed first.
pub type ExposureBody = crate::exposure::ExposureReport;

/// The kernel's own accounting of one of tcpwatch's programs (`bpf_prog_info`), in
/// `/api/v1/status` (`programs`) and the metrics `tcpwatch_bpf_program_*`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramStats {
    /// The program's name in tcpwatch's object (`tp_inet_sock_set_state`, `tcpwatch_sweep`...).
    pub program: String,
    /// The kernel's program id (changes with every load).
    pub id: u32,
    /// Total time the program ran, in nanoseconds. Counted only while run-time statistics are
    /// enabled (`run_stats_enabled`).
    pub run_time_ns: u64,
    /// Times the program ran; same condition as `run_time_ns`.
    pub run_count: u64,
    /// Times the kernel skipped the program because it would have nested on the same CPU:
    /// each is an event the program never saw. Always counted.
    pub recursion_misses: u64,
}

/// Kernel events tcpwatch lost, by cause (`/api/v1/status` `lost_events`; the metric
/// `tcpwatch_kernel_events_lost_total{cause}`). None is ever silent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostEvents {
    /// State events not written because the ring buffer was full.
    pub ringbuf_full: u64,
    /// Hook runs the kernel skipped (recursion on the same CPU), summed over the programs.
    pub recursion_misses: u64,
    /// The sum of the above.
    pub total: u64,
}

impl LostEvents {
    /// The accounting from the ring buffer's drop counter and the programs' statistics.
    #[must_use]
    pub fn new(ringbuf_full: u64, programs: &[ProgramStats]) -> Self {
        let recursion_misses = programs.iter().map(|p| p.recursion_misses).sum();
        Self {
            ringbuf_full,
            recursion_misses,
            total: ringbuf_full.saturating_add(recursion_misses),
        }
    }
}

/// `programs` and `lost_events` of `GET /api/v1/status`: what the kernel programs cost and
/// what they missed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramsStatus {
    /// Whether the daemon holds run-time statistics on (`BPF_ENABLE_STATS`, or the host's
    /// `kernel.bpf_stats_enabled`): without, `run_time_ns` and `run_count` stay 0.
    pub run_stats_enabled: bool,
    pub programs: Vec<ProgramStats>,
    pub lost_events: LostEvents,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_events_add_recursion_misses_to_ringbuf_drops() {
        let p = |n| ProgramStats {
            recursion_misses: n,
            ..ProgramStats::default()
        };
        let l = LostEvents::new(5, &[p(3), p(0), p(4)]);
        assert_eq!((l.ringbuf_full, l.recursion_misses, l.total), (5, 7, 12));
        assert_eq!(LostEvents::new(u64::MAX, &[p(1)]).total, u64::MAX);
        assert_eq!(LostEvents::new(0, &[]), LostEvents::default());
    }
}
