//! RFC 3339 wall-clock twins of the monotonic times the API shows (docs/api.md).
//!
//! The table and the detectors keep [`MonoNs`](crate::model::MonoNs) only; the twins are
//! filled where a record leaves the daemon (a response body, a stream event), from one
//! [`WallClock`] reading, so they cost nothing on the event path and always agree with the
//! monotonic values next to them. Incidents carry theirs already (`crate::incident`).
use serde::{Deserialize, Serialize};

use crate::api::{ConnectionsBody, FindingsBody, StreamEvent};
use crate::model::{ConnRecord, Finding};
use crate::table::Delta;
use crate::wall::WallClock;

/// Wall-clock twins of a connection's times, flattened into [`ConnRecord`]'s JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnTimes {
    /// `state_since`.
    pub state_since_time: String,
    /// `first_seen`.
    pub first_seen_time: String,
    /// `last_seen`.
    pub last_seen_time: String,
    /// `retrans.chain_start`, when set.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub retrans_chain_start_time: Option<String>,
    /// `retrans.last_retrans`, when set.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub retrans_last_time: Option<String>,
    /// `history[i].at`, in the same order (absent with the history).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub history_times: Vec<String>,
}

/// Wall-clock twins of a finding's times, flattened into [`Finding`]'s JSON (the names of
/// the incident's).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingTimes {
    /// `since`.
    pub since_time: String,
    /// `opened_at`.
    pub opened_time: String,
    /// `updated_at`.
    pub updated_time: String,
    /// `resolved_at`, when resolved.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub resolved_time: Option<String>,
}

impl ConnRecord {
    /// Fills the wall-clock twins from `wall` (replacing any).
    pub fn fill_wall_times(&mut self, wall: &WallClock) {
        self.wall = Some(Box::new(ConnTimes {
            state_since_time: wall.rfc3339(self.state_since),
            first_seen_time: wall.rfc3339(self.first_seen),
            last_seen_time: wall.rfc3339(self.last_seen),
            retrans_chain_start_time: self.retrans.chain_start.map(|t| wall.rfc3339(t)),
            retrans_last_time: self.retrans.last_retrans.map(|t| wall.rfc3339(t)),
            history_times: self.history.iter().map(|s| wall.rfc3339(s.at)).collect(),
        }));
    }
}

impl Finding {
    /// Fills the wall-clock twins from `wall` (replacing any).
    pub fn fill_wall_times(&mut self, wall: &WallClock) {
        self.wall = Some(Box::new(FindingTimes {
            since_time: wall.rfc3339(self.since),
            opened_time: wall.rfc3339(self.opened_at),
            updated_time: wall.rfc3339(self.updated_at),
            resolved_time: self.resolved_at.map(|t| wall.rfc3339(t)),
        }));
    }
}

impl ConnectionsBody {
    /// Fills the wall-clock twins of every connection.
    pub fn fill_wall_times(&mut self, wall: &WallClock) {
        for c in &mut self.connections {
            c.fill_wall_times(wall);
        }
    }
}

impl FindingsBody {
    /// Fills the wall-clock twins of every finding.
    pub fn fill_wall_times(&mut self, wall: &WallClock) {
        for f in self.open.iter_mut().chain(&mut self.recently_resolved) {
            f.fill_wall_times(wall);
        }
    }
}

impl StreamEvent {
    /// Fills the wall-clock twins of the connection or finding the event carries (incidents
    /// carry theirs already; removals and `lagged` have no times).
    pub fn fill_wall_times(&mut self, wall: &WallClock) {
        match self {
            Self::Conn(Delta::Upsert { conn }) => conn.fill_wall_times(wall),
            Self::Finding(c) => c.finding.fill_wall_times(wall),
            Self::Conn(_) | Self::Incident(_) | Self::Lagged { .. } => {}
        }
    }
}

#[cfg(test)]
#[path = "api_times_tests.rs"]
mod tests;
