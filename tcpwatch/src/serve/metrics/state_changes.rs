//! `tcpwatch_kernel_state_changes_total{state,delivery}`: every TCP state change the kernel
//! program saw, by new state and by how it reached userspace (`tcpwatch_core::state_changes`).
//! `delivery="event"`: a socket userspace knows, sent as a state event; `delivery="counted"`:
//! a socket no sweep had listed yet, counted in the kernel only.
use tcpwatch_core::model::TcpState;
use tcpwatch_core::state_changes::by_state;

use super::Builder;
use crate::view::View;

/// Series of this module: every state, two deliveries.
pub const SERIES: usize = 2 * TcpState::ALL.len();

pub fn state_changes(out: &Builder, sh: &View) -> prometheus::Result<()> {
    let v = out.counter_vec(
        "tcpwatch_kernel_state_changes_total",
        "TCP state changes seen by the kernel probe, by new state. delivery=\"event\": the \
         socket was known to userspace (listed by a sweep, or a listener) and the change was \
         sent as a state event (or lost to a full ring buffer); delivery=\"counted\": no sweep \
         had listed the socket yet (a connection opened and closed between two sweeps), so \
         the change was only counted in the kernel.",
        &["state", "delivery"],
    )?;
    for (state, c) in by_state(&sh.kernel_counters.0) {
        v.with_label_values(&[state.name(), "event"]).inc_by(c.sent);
        v.with_label_values(&[state.name(), "counted"])
            .inc_by(c.counted);
    }
    Ok(())
}
