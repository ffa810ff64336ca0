//! Settings of the detectors of issue 13: `[detectors.stale_connection_reuse]` and
//! `[detectors.connect_failing]`.
use serde::{Deserialize, Serialize};

use super::{ConfigError, at_least, seconds};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StaleReuseConfig {
    pub enabled: bool,
    /// Requests written into connections the peer had closed (per client process and server
    /// endpoint) within the window that open a finding.
    pub min_events: u32,
    pub window_seconds: f64,
    /// At or above this many per minute (over the window) the finding is critical.
    pub critical_per_minute: f64,
}

impl Default for StaleReuseConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_events: 2,
            window_seconds: 60.0,
            critical_per_minute: 30.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectFailingConfig {
    pub enabled: bool,
    /// Failed connects (refused, timed out, other) from one process to one remote endpoint
    /// within the window that open a finding.
    pub min_failures: u32,
    pub window_seconds: f64,
    /// A connect still in `SYN_SENT` with at least this many SYN retransmissions opens a
    /// finding at once.
    pub min_syn_retrans: u32,
}

impl Default for ConnectFailingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_failures: 3,
            window_seconds: 60.0,
            min_syn_retrans: 2,
        }
    }
}

pub(super) fn validate(s: &StaleReuseConfig, c: &ConnectFailingConfig) -> Result<(), ConfigError> {
    at_least(
        "detectors.stale_connection_reuse.min_events",
        u64::from(s.min_events),
        1,
    )?;
    seconds(
        "detectors.stale_connection_reuse.window_seconds",
        s.window_seconds,
        false,
    )?;
    seconds(
        "detectors.stale_connection_reuse.critical_per_minute",
        s.critical_per_minute,
        false,
    )?;
    at_least(
        "detectors.connect_failing.min_failures",
        u64::from(c.min_failures),
        1,
    )?;
    seconds(
        "detectors.connect_failing.window_seconds",
        c.window_seconds,
        false,
    )?;
    at_least(
        "detectors.connect_failing.min_syn_retrans",
        u64::from(c.min_syn_retrans),
        1,
    )
}
