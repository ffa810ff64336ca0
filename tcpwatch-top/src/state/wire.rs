//! What the daemon sends: the `tcpwatch_core::api` contract (one set of types for both sides)
//! and the parsing of one stream event.
use tcpwatch_core::incident::Incident;
use tcpwatch_core::model::{ConnRecord, Finding};

pub use tcpwatch_core::api::{ConnectionsBody, FindingsBody, IncidentsBody, StreamEvent};
pub use tcpwatch_core::table::Delta;

/// A whole load of the daemon's state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub conns: Vec<ConnRecord>,
    pub findings: Vec<Finding>,
    /// `None` when the daemon does not serve `/api/v1/incidents` (HTTP 404: an older daemon).
    pub incidents: Option<Vec<Incident>>,
    /// The exposure audit; `None` when the daemon does not serve `/api/v1/exposure`.
    pub exposure: Option<tcpwatch_core::api::ExposureBody>,
}

/// Longest parse error kept for the status line.
const MAX_ERROR_CHARS: usize = 120;

/// Parses one `/api/v1/stream` event (an SSE `data` payload). The error says what did not
/// parse, shortened for the status line.
pub fn parse_event(data: &str) -> Result<StreamEvent, String> {
    serde_json::from_str(data).map_err(|e| {
        let kind = serde_json::from_str::<serde_json::Value>(data)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
            .unwrap_or_else(|| "?".to_owned());
        let mut msg = format!("event type `{kind}`: {e}");
        if msg.chars().count() > MAX_ERROR_CHARS {
            msg = msg.chars().take(MAX_ERROR_CHARS).collect::<String>() + "...";
        }
        msg
    })
}
