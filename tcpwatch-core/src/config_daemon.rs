//! The `[daemon]` and `[alertmanager]` sections of the configuration.
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{ConfigError, range_u64};
use crate::model::Severity;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Address of the API listener (per-connection detail, and `/metrics`).
    pub listen: SocketAddr,
    /// Address of the metrics listener (`/metrics`, `/healthz`, `/readyz` only); empty: none.
    pub metrics_listen: String,
    /// Web configuration (TLS, authentication) of the API listener; empty: plain HTTP.
    pub web_config_file: String,
    /// Web configuration of the metrics listener; empty: plain HTTP.
    pub metrics_web_config_file: String,
    /// Period of the full socket sweep (`iter/tcp`).
    pub sweep_interval_ms: u64,
    /// Every this many sweeps every socket is written in full; in between a sweep writes in
    /// full only the sockets whose watched fields changed (change-only sweeps). 1: every
    /// sweep full (change-only sweeps off).
    pub full_sweep_every: u32,
    /// Most connections kept in the table.
    pub max_connections: u64,
    /// Samples kept per connection.
    pub history_len: u32,
    pub log_format: LogFormat,
    /// Period of the `/proc/*/fd` scan that finds socket owners.
    pub owner_scan_interval_ms: u64,
    /// Period of the state-event reader: the kernel submits events without a wakeup and the
    /// daemon drains them in one batch this often (and at once when the ring is a quarter
    /// full). Bounds the latency of the live stream, hence at most 100.
    pub event_drain_interval_ms: u64,
    /// Turn on the kernel's BPF run statistics (a `BPF_ENABLE_STATS` descriptor held while
    /// the daemon runs) so that every program's run time and count are exported. While on,
    /// the kernel reads the clock twice around every run of every BPF program of the host,
    /// not only tcpwatch's. Off: those figures are exported only if something else turned
    /// the statistics on (`kernel.bpf_stats_enabled`); recursion misses are always exported.
    pub bpf_run_stats: bool,
    /// Connections shown per category in summaries and metrics.
    pub top_k: u32,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9977)),
            metrics_listen: String::new(),
            web_config_file: String::new(),
            metrics_web_config_file: String::new(),
            sweep_interval_ms: 1000,
            full_sweep_every: 60,
            max_connections: 200_000,
            history_len: 32,
            log_format: LogFormat::Text,
            owner_scan_interval_ms: 2000,
            event_drain_interval_ms: 20,
            bpf_run_stats: true,
            top_k: 10,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertmanagerConfig {
    /// Base URL of Alertmanager (`http://127.0.0.1:9093`); unset = no alerts are sent.
    pub url: Option<String>,
    /// Findings below this severity are not sent.
    pub min_severity: Severity,
    /// Timeout of one POST.
    pub timeout_ms: u64,
    /// Firing alerts are re-sent this often (Alertmanager expires silent alerts).
    pub resend_interval_ms: u64,
    /// Also push one alert per finding (default: one alert per incident only).
    pub per_finding_alerts: bool,
    /// PEM bundle of the CAs that sign an `https://` Alertmanager's certificate (unset: the
    /// Mozilla roots bundled with the client). See `config_alertmanager.rs`.
    pub ca_file: Option<String>,
    /// HTTP basic auth user (with `basic_auth_password_file`).
    pub basic_auth_user: Option<String>,
    /// File holding the basic auth password (read at start and before each push).
    pub basic_auth_password_file: Option<String>,
    /// File holding a bearer token (read at start and before each push).
    pub bearer_token_file: Option<String>,
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        Self {
            url: None,
            min_severity: Severity::Warning,
            timeout_ms: 5000,
            resend_interval_ms: 60_000,
            per_finding_alerts: false,
            ca_file: None,
            basic_auth_user: None,
            basic_auth_password_file: None,
            bearer_token_file: None,
        }
    }
}

impl AlertmanagerConfig {
    #[must_use]
    pub fn enabled(&self) -> bool {
        self.url.is_some()
    }
}

impl DaemonConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        range_u64(
            "daemon.sweep_interval_ms",
            self.sweep_interval_ms,
            10,
            3_600_000,
        )?;
        range_u64(
            "daemon.full_sweep_every",
            u64::from(self.full_sweep_every),
            1,
            1_000_000,
        )?;
        range_u64(
            "daemon.max_connections",
            self.max_connections,
            1,
            100_000_000,
        )?;
        range_u64("daemon.history_len", u64::from(self.history_len), 1, 4096)?;
        range_u64(
            "daemon.owner_scan_interval_ms",
            self.owner_scan_interval_ms,
            10,
            3_600_000,
        )?;
        range_u64(
            "daemon.event_drain_interval_ms",
            self.event_drain_interval_ms,
            1,
            100,
        )?;
        range_u64("daemon.top_k", u64::from(self.top_k), 1, 10_000)?;
        crate::config_http::validate_daemon(self)
    }
}

impl AlertmanagerConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::invalid(
                "alertmanager.url",
                format!("must start with http:// or https://, got {url:?}"),
            ));
        }
        range_u64("alertmanager.timeout_ms", self.timeout_ms, 1, 600_000)?;
        range_u64(
            "alertmanager.resend_interval_ms",
            self.resend_interval_ms,
            1000,
            86_400_000,
        )?;
        crate::config_alertmanager::validate_keys(self)
    }
}
