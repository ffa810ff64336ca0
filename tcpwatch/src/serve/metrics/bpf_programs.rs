//! The kernel's accounting of tcpwatch's own programs (as `ebpf_exporter` exports it) and the
//! lost-event accounting: ring-buffer drops next to recursion misses, so no loss is silent.
use prometheus::{CounterVec, Opts};
use tcpwatch_core::api::ProgramsStatus;

use super::Builder;

/// Programs with their own series (tcpwatch loads 7: five hooks, the optional reset-reason
/// tracepoint and the sweep iterator).
pub const MAX_PROGRAMS: usize = 12;
/// Series of this module: three per program, the stats switch, two lost-event causes.
pub const SERIES: usize = 3 * MAX_PROGRAMS + 1 + 2;

pub fn register(out: &Builder, p: &ProgramsStatus) -> prometheus::Result<()> {
    let seconds = out.add(CounterVec::new(
        Opts::new(
            "tcpwatch_bpf_program_run_seconds_total",
            "Time the kernel spent running each of tcpwatch's programs (bpf_prog_info \
             run_time_ns; counted while tcpwatch_bpf_program_run_stats_enabled is 1).",
        ),
        &["program"],
    )?)?;
    let runs = out.counter_vec(
        "tcpwatch_bpf_program_runs_total",
        "Times each of tcpwatch's programs ran (bpf_prog_info run_cnt; counted while \
         tcpwatch_bpf_program_run_stats_enabled is 1).",
        &["program"],
    )?;
    let misses = out.counter_vec(
        "tcpwatch_bpf_program_recursion_misses_total",
        "Times the kernel skipped one of tcpwatch's programs because it would have nested on \
         the same CPU: events the program never saw.",
        &["program"],
    )?;
    for s in p.programs.iter().take(MAX_PROGRAMS) {
        #[expect(
            clippy::cast_precision_loss,
            reason = "nanoseconds as f64 seconds: exact below 104 days of run time"
        )]
        let secs = s.run_time_ns as f64 / 1e9;
        seconds.with_label_values(&[&s.program]).inc_by(secs);
        runs.with_label_values(&[&s.program]).inc_by(s.run_count);
        misses
            .with_label_values(&[&s.program])
            .inc_by(s.recursion_misses);
    }
    out.gauge(
        "tcpwatch_bpf_program_run_stats_enabled",
        "1 while the kernel counts program run time and runs (the daemon holds \
         BPF_ENABLE_STATS, or kernel.bpf_stats_enabled=1).",
        i64::from(p.run_stats_enabled),
    )?;
    let lost = out.counter_vec(
        "tcpwatch_kernel_events_lost_total",
        "Kernel events tcpwatch lost, by cause: ringbuf_full (a state event not written) or \
         recursion_miss (a hook run the kernel skipped).",
        &["cause"],
    )?;
    lost.with_label_values(&["ringbuf_full"])
        .inc_by(p.lost_events.ringbuf_full);
    lost.with_label_values(&["recursion_miss"])
        .inc_by(p.lost_events.recursion_misses);
    Ok(())
}
