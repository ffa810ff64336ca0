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
