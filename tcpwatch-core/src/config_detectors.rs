//! The `[detectors]` section of the configuration: the shared lifecycle and one table per
//! rule (the issue-13 rules are in `config_endpoints.rs`).
use serde::{Deserialize, Serialize};

use super::{
    ConfigError, ConnectFailingConfig, StaleReuseConfig, at_least, ports, range_u64, seconds,
};

/// Settings of all detectors: the shared lifecycle (hysteresis) and one section per rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// An open finding resolves only after its condition has been false this long.
    pub resolve_after_seconds: f64,
    /// After a finding resolved, the same finding re-opens only once its condition has held
    /// this long again (unless it comes back later than this after the resolution).
    pub reopen_after_seconds: f64,
    /// `Updated` changes for evidence moves (not severity / cause changes) are emitted at most
    /// this often per finding.
    pub min_update_interval_seconds: f64,
    /// Resolved findings kept for the API.
    pub recently_resolved: u32,
    /// Most findings open at once; further ones are counted and not opened.
    pub max_open_findings: u32,
    pub close_wait: CloseWaitConfig,
    pub send_queue: SendQueueConfig,
    pub retransmit: RetransmitConfig,
    pub accept_backlog: AcceptBacklogConfig,
    pub awaiting_response: AwaitingResponseConfig,
    pub reset_burst: ResetBurstConfig,
    pub stale_connection_reuse: StaleReuseConfig,
    pub connect_failing: ConnectFailingConfig,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            resolve_after_seconds: 3.0,
            reopen_after_seconds: 10.0,
            min_update_interval_seconds: 30.0,
            recently_resolved: 256,
            max_open_findings: 10_000,
            close_wait: CloseWaitConfig::default(),
            send_queue: SendQueueConfig::default(),
            retransmit: RetransmitConfig::default(),
            accept_backlog: AcceptBacklogConfig::default(),
            awaiting_response: AwaitingResponseConfig::default(),
            reset_burst: ResetBurstConfig::default(),
            stale_connection_reuse: StaleReuseConfig::default(),
            connect_failing: ConnectFailingConfig::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloseWaitConfig {
    pub enabled: bool,
    /// A socket in `CLOSE_WAIT` longer than this is stuck.
    pub threshold_seconds: f64,
}

impl Default for CloseWaitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold_seconds: 30.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SendQueueConfig {
    pub enabled: bool,
    /// Send-Q at or above this many bytes is watched.
    pub min_bytes: u32,
    /// Send-Q must not drain (no ACK progress) for this long.
    pub window_seconds: f64,
}

impl Default for SendQueueConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_bytes: 1,
            window_seconds: 10.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetransmitConfig {
    pub enabled: bool,
    /// Consecutive retransmissions without ACK progress that open a finding.
    pub min_chain: u32,
    /// RTO backoff exponent that opens a finding.
    pub min_backoff: u32,
    /// RTO backoff exponent from which the finding is critical.
    pub critical_backoff: u32,
}

impl Default for RetransmitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_chain: 3,
            min_backoff: 4,
            critical_backoff: 6,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcceptBacklogConfig {
    pub enabled: bool,
    /// Accept queue / limit at or above which a listener is filling.
    pub fill_fraction: f64,
    /// The queue must stay that full for this long.
    pub window_seconds: f64,
}

impl Default for AcceptBacklogConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            fill_fraction: 0.8,
            window_seconds: 5.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwaitingResponseConfig {
    pub enabled: bool,
    /// Nothing received this long after our (acknowledged) send.
    pub threshold_seconds: f64,
    /// Local ports never reported (long-poll, streaming).
    pub ignore_local_ports: Vec<u16>,
    /// Remote ports never reported (long-poll, streaming, message brokers).
    pub ignore_remote_ports: Vec<u16>,
}

impl Default for AwaitingResponseConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold_seconds: 60.0,
            ignore_local_ports: Vec::new(),
            ignore_remote_ports: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResetBurstConfig {
    pub enabled: bool,
    /// Resets (sent + received) on one local port within the window that open a finding.
    pub min_resets: u32,
    pub window_seconds: f64,
}

impl Default for ResetBurstConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_resets: 10,
            window_seconds: 10.0,
        }
    }
}

impl DetectorConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        seconds(
            "detectors.resolve_after_seconds",
            self.resolve_after_seconds,
            true,
        )?;
        seconds(
            "detectors.reopen_after_seconds",
            self.reopen_after_seconds,
            true,
        )?;
        seconds(
            "detectors.min_update_interval_seconds",
            self.min_update_interval_seconds,
            true,
        )?;
        range_u64(
            "detectors.recently_resolved",
            u64::from(self.recently_resolved),
            0,
            65_536,
        )?;
        let max_open = u64::from(self.max_open_findings);
        range_u64("detectors.max_open_findings", max_open, 1, 10_000_000)?;

        let cw = &self.close_wait;
        seconds(
            "detectors.close_wait.threshold_seconds",
            cw.threshold_seconds,
            false,
        )?;

        let sq = &self.send_queue;
        at_least("detectors.send_queue.min_bytes", u64::from(sq.min_bytes), 1)?;
        seconds(
            "detectors.send_queue.window_seconds",
            sq.window_seconds,
            false,
        )?;

        let rt = &self.retransmit;
        range_u64(
            "detectors.retransmit.min_chain",
            u64::from(rt.min_chain),
            1,
            255,
        )?;
        range_u64(
            "detectors.retransmit.min_backoff",
            u64::from(rt.min_backoff),
            1,
            255,
        )?;
        let critical = u64::from(rt.critical_backoff);
        range_u64("detectors.retransmit.critical_backoff", critical, 1, 255)?;

        let ab = &self.accept_backlog;
        let fill = ab.fill_fraction;
        if !(fill.is_finite() && fill > 0.0 && fill <= 1.0) {
            return Err(ConfigError::invalid(
                "detectors.accept_backlog.fill_fraction",
                format!("must be > 0 and <= 1, got {fill}"),
            ));
        }
        seconds(
            "detectors.accept_backlog.window_seconds",
            ab.window_seconds,
            false,
        )?;

        let aw = &self.awaiting_response;
        seconds(
            "detectors.awaiting_response.threshold_seconds",
            aw.threshold_seconds,
            false,
        )?;
        ports(
            "detectors.awaiting_response.ignore_local_ports",
            &aw.ignore_local_ports,
        )?;
        ports(
            "detectors.awaiting_response.ignore_remote_ports",
            &aw.ignore_remote_ports,
        )?;

        let rb = &self.reset_burst;
        at_least(
            "detectors.reset_burst.min_resets",
            u64::from(rb.min_resets),
            1,
        )?;
        seconds(
            "detectors.reset_burst.window_seconds",
            rb.window_seconds,
            false,
        )?;
        super::endpoints::validate(&self.stale_connection_reuse, &self.connect_failing)
    }
}
