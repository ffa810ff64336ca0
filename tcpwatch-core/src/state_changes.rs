//! The kernel's accounting of TCP state changes (`counter::STATE_CHANGES_SENT` and
//! `counter::STATE_CHANGES_COUNTED`): every change the state program saw, by new state and by
//! how it reached userspace. Changes of sockets userspace knows (a sweep listed them, or
//! listeners) are sent as events; changes of sockets no sweep has listed yet (connections that
//! open and close between two sweeps) are only counted in the kernel. In `/api/v1/status`
//! (`state_changes`) and the metric `tcpwatch_kernel_state_changes_total{state,delivery}`.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tcpwatch_common::counter;

use crate::model::TcpState;

/// Changes into one state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChangeCount {
    /// Sent as a state event (written to the ring buffer, or lost to a full one:
    /// `lost_events.ringbuf_full`).
    pub sent: u64,
    /// Counted in the kernel only: no sweep had listed the socket.
    pub counted: u64,
}

/// `state_changes` of `GET /api/v1/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChanges {
    /// Every change the state program saw (`sent + counted`).
    pub total: u64,
    pub sent: u64,
    pub counted: u64,
    /// By new state ([`TcpState::name`]); states never entered are left out.
    pub by_state: BTreeMap<String, StateChangeCount>,
}

/// Changes by new state from the kernel's counters (`counters` indexed by `counter::*`; a
/// shorter slice reads as zeros). Kernel state numbers outside `TcpState` count as `UNKNOWN`.
#[must_use]
pub fn by_state(counters: &[u64]) -> Vec<(TcpState, StateChangeCount)> {
    let at = |i: u32| counters.get(i as usize).copied().unwrap_or(0);
    let mut out: Vec<(TcpState, StateChangeCount)> = TcpState::ALL
        .iter()
        .map(|s| (*s, StateChangeCount::default()))
        .collect();
    for n in 0..counter::STATE_SLOTS {
        let state = TcpState::from_kernel(u8::try_from(n).unwrap_or(0));
        if let Some((_, c)) = out.iter_mut().find(|(s, _)| *s == state) {
            c.sent = c.sent.saturating_add(at(counter::STATE_CHANGES_SENT + n));
            c.counted = c
                .counted
                .saturating_add(at(counter::STATE_CHANGES_COUNTED + n));
        }
    }
    out
}

impl StateChanges {
    #[must_use]
    pub fn from_counters(counters: &[u64]) -> Self {
        let mut s = Self::default();
        for (state, c) in by_state(counters) {
            s.sent = s.sent.saturating_add(c.sent);
            s.counted = s.counted.saturating_add(c.counted);
            if c.sent > 0 || c.counted > 0 {
                s.by_state.insert(state.name().to_owned(), c);
            }
        }
        s.total = s.sent.saturating_add(s.counted);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_rows_by_state_and_delivery() {
        let mut k = [0_u64; counter::COUNT as usize];
        k[(counter::STATE_CHANGES_SENT + 7) as usize] = 3; // CLOSE
        k[(counter::STATE_CHANGES_COUNTED + 7) as usize] = 40;
        k[(counter::STATE_CHANGES_COUNTED + 2) as usize] = 41; // SYN_SENT
        k[(counter::STATE_CHANGES_COUNTED + 15) as usize] = 1; // no such state
        k[counter::EVENTS_SUBMITTED as usize] = 99; // not a state change row
        let s = StateChanges::from_counters(&k);
        assert_eq!((s.total, s.sent, s.counted), (85, 3, 82));
        assert_eq!(
            s.by_state["CLOSE"],
            StateChangeCount {
                sent: 3,
                counted: 40
            }
        );
        assert_eq!(s.by_state["SYN_SENT"].counted, 41);
        assert_eq!(s.by_state["UNKNOWN"].counted, 1);
        assert_eq!(s.by_state.len(), 3);
        let rows = by_state(&k);
        assert_eq!(rows.len(), TcpState::ALL.len());
        assert_eq!(StateChanges::from_counters(&[]), StateChanges::default());
    }
}
