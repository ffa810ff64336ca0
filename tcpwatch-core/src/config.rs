//! tcpwatch's configuration: one TOML file, every key optional (defaults below and in the
//! embedded `default-config.toml`), unknown keys rejected, values validated with errors that
//! name the dotted key (`detectors.close_wait.threshold_seconds: must be > 0, got -1`).
//!
//! Units: intervals of the daemon and of Alertmanager are integer milliseconds (`*_ms`);
//! detector thresholds and windows are seconds as floats (`*_seconds`, `30` and `30.0` both
//! work).
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::model::{MonoNs, Severity};

/// The embedded default configuration (`tcpwatch config --print-default`). It parses to
/// exactly [`Config::default`].
pub const DEFAULT_CONFIG_TOML: &str = include_str!("default-config.toml");

/// Longest accepted duration in seconds (one year): keeps nanosecond arithmetic far from
/// overflow.
pub const MAX_SECONDS: f64 = 31_536_000.0;

/// Converts validated seconds (finite, `0..=MAX_SECONDS`) to nanoseconds.
#[must_use]
pub fn seconds_to_ns(seconds: f64) -> MonoNs {
    let clamped = if seconds.is_finite() {
        seconds.clamp(0.0, MAX_SECONDS)
    } else {
        0.0
    };
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "clamped to 0..=1 year, far below u64::MAX ns"
    )]
    let ns = (clamped * 1e9).round() as u64;
    ns
}

/// Errors from reading or overriding the configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The text is not valid TOML.
    #[error("config: TOML syntax error at line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// A key that tcpwatch does not know (typo, or a key of another version).
    #[error("{key}: unknown key (known here: {known})")]
    UnknownKey { key: String, known: String },
    /// A key with a value of the wrong type or out of range.
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    /// The dotted key the error is about, if any.
    #[must_use]
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Syntax { .. } => None,
            Self::UnknownKey { key, .. } | Self::Invalid { key, .. } => Some(key),
        }
    }

    fn invalid(key: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub detectors: DetectorConfig,
    pub incidents: IncidentConfig,
    pub alertmanager: AlertmanagerConfig,
    pub http: crate::config_http::HttpConfig,
}

/// Bounds of the incident layer (`docs/incidents.md`). Its hysteresis is the findings'
/// (`detectors.resolve_after_seconds`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IncidentConfig {
    /// Most incidents open at once; further groupings join one overflow incident per kind.
    pub max_open: u32,
    /// Member finding ids listed per incident (all are counted).
    pub max_members_listed: u32,
    /// Resolved incidents kept for the API.
    pub recently_resolved: u32,
}

impl Default for IncidentConfig {
    fn default() -> Self {
        Self {
            max_open: 1000,
            max_members_listed: 50,
            recently_resolved: 128,
        }
    }
}

impl IncidentConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        range_u64("incidents.max_open", u64::from(self.max_open), 1, 1_000_000)?;
        range_u64(
            "incidents.max_members_listed",
            u64::from(self.max_members_listed),
            1,
            100_000,
        )?;
        range_u64(
            "incidents.recently_resolved",
            u64::from(self.recently_resolved),
            0,
            100_000,
        )
    }
}

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
    /// Most connections kept in the table.
    pub max_connections: u64,
    /// Samples kept per connection.
    pub history_len: u32,
    pub log_format: LogFormat,
    /// Period of the `/proc/*/fd` scan that finds socket owners.
    pub owner_scan_interval_ms: u64,
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
            max_connections: 200_000,
            history_len: 32,
            log_format: LogFormat::Text,
            owner_scan_interval_ms: 2000,
            top_k: 10,
        }
    }
}

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
    fn validate(&self) -> Result<(), ConfigError> {
        range_u64(
            "daemon.sweep_interval_ms",
            self.sweep_interval_ms,
            10,
            3_600_000,
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
        range_u64("daemon.top_k", u64::from(self.top_k), 1, 10_000)?;
        crate::config_http::validate_daemon(self)
    }
}

impl DetectorConfig {
    fn validate(&self) -> Result<(), ConfigError> {
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
        endpoints::validate(&self.stale_connection_reuse, &self.connect_failing)
    }
}

impl AlertmanagerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
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

impl Config {
    /// Parses and validates a configuration file's text.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| syntax_error(text, &e))?;
        check_known_keys(&table, &schema_sample(), "")?;
        let cfg = deserialize_table(&table)?;
        cfg.validate()?;
        crate::config_alertmanager::validate_access(&cfg.alertmanager)?;
        Ok(cfg)
    }

    /// The embedded `default-config.toml`.
    pub fn default_embedded() -> Result<Self, ConfigError> {
        Self::from_toml_str(DEFAULT_CONFIG_TOML)
    }

    /// Checks ranges; the error names the first offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.daemon.validate()?;
        self.detectors.validate()?;
        self.incidents.validate()?;
        self.alertmanager.validate()?;
        self.http.validate()
    }

    /// Sets one dotted key (`detectors.close_wait.threshold_seconds`) from its command-line
    /// text. The text is read as a TOML value (`10`, `0.5`, `true`, `[80, 443]`, `"x"`), or
    /// as a string when it is not one (`127.0.0.1:9977`). The result is validated like a
    /// file; on error `self` is unchanged.
    pub fn apply_override(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let path: Vec<&str> = key.split('.').collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(ConfigError::invalid(key, "not a dotted key"));
        }
        let parsed = parse_override_value(value);
        // Validate the key's shape against the schema by checking a one-key document.
        let mut probe = toml::Table::new();
        set_path(&mut probe, &path, parsed.clone(), key)?;
        check_known_keys(&probe, &schema_sample(), "")?;

        let mut current = toml::Table::try_from(&*self).map_err(|e| {
            ConfigError::invalid(key, format!("cannot serialize the current config: {e}"))
        })?;
        set_path(&mut current, &path, parsed, key)?;
        let cfg = deserialize_table(&current)?;
        cfg.validate()?;
        *self = cfg;
        Ok(())
    }
}

/// Every key with a value (options filled) so that the serialized table lists all keys.
fn schema_sample() -> toml::Table {
    let mut cfg = Config::default();
    cfg.alertmanager.url = Some(String::new());
    cfg.alertmanager.ca_file = Some(String::new());
    cfg.alertmanager.basic_auth_user = Some(String::new());
    cfg.alertmanager.basic_auth_password_file = Some(String::new());
    cfg.alertmanager.bearer_token_file = Some(String::new());
    toml::Table::try_from(&cfg).unwrap_or_default()
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Rejects keys that are not in the schema, naming the first one by its dotted path.
fn check_known_keys(
    user: &toml::Table,
    schema: &toml::Table,
    prefix: &str,
) -> Result<(), ConfigError> {
    for (k, v) in user {
        let path = join(prefix, k);
        match schema.get(k) {
            None => {
                let known = schema
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(ConfigError::UnknownKey { key: path, known });
            }
            Some(toml::Value::Table(sub)) => match v {
                toml::Value::Table(user_sub) => check_known_keys(user_sub, sub, &path)?,
                other => {
                    return Err(ConfigError::invalid(
                        &path,
                        format!("expected a table, got {}", other.type_str()),
                    ));
                }
            },
            Some(scalar) => {
                if let toml::Value::Table(_) = v {
                    return Err(ConfigError::invalid(
                        &path,
                        format!("expected {}, got a table", scalar.type_str()),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Deserializes; on error finds the key at fault by applying the user's keys one at a time
/// to the defaults (the serde error of a whole document does not carry the key path).
fn deserialize_table(table: &toml::Table) -> Result<Config, ConfigError> {
    let err = match toml::Value::Table(table.clone()).try_into::<Config>() {
        Ok(cfg) => return Ok(cfg),
        Err(e) => e,
    };
    let defaults = toml::Table::try_from(Config::default()).unwrap_or_default();
    let mut leaves = Vec::new();
    collect_leaves(table, "", &mut leaves);
    for (path, value) in leaves {
        let mut probe = defaults.clone();
        let parts: Vec<&str> = path.split('.').collect();
        set_path(&mut probe, &parts, value, &path)?;
        if let Err(e) = toml::Value::Table(probe).try_into::<Config>() {
            return Err(ConfigError::invalid(&path, one_line(e.message())));
        }
    }
    Err(ConfigError::invalid("config", one_line(err.message())))
}

fn collect_leaves(table: &toml::Table, prefix: &str, out: &mut Vec<(String, toml::Value)>) {
    for (k, v) in table {
        let path = join(prefix, k);
        match v {
            toml::Value::Table(sub) => collect_leaves(sub, &path, out),
            other => out.push((path, other.clone())),
        }
    }
}

fn set_path(
    table: &mut toml::Table,
    path: &[&str],
    value: toml::Value,
    key: &str,
) -> Result<(), ConfigError> {
    let Some((last, parents)) = path.split_last() else {
        return Err(ConfigError::invalid(key, "empty key"));
    };
    let mut cur = table;
    for (i, p) in parents.iter().enumerate() {
        let entry = cur
            .entry((*p).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            other => {
                return Err(ConfigError::invalid(
                    &path[..=i].join("."),
                    format!("is a {}, not a table", other.type_str()),
                ));
            }
        };
    }
    cur.insert((*last).to_owned(), value);
    Ok(())
}

fn parse_override_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) if t.len() == 1 => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        _ => toml::Value::String(raw.to_owned()),
    }
}

fn syntax_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = e
        .span()
        .map_or((0, 0), |span| line_column(text, span.start));
    let message = one_line(e.message());
    ConfigError::Syntax {
        line,
        column,
        message,
    }
}

/// A multi-line parser message on one line.
fn one_line(message: &str) -> String {
    let parts: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    parts.join("; ")
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

fn range_u64(key: &str, v: u64, lo: u64, hi: u64) -> Result<(), ConfigError> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("must be between {lo} and {hi}, got {v}"),
        ))
    }
}

fn at_least(key: &str, v: u64, lo: u64) -> Result<(), ConfigError> {
    if v >= lo {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("must be >= {lo}, got {v}"),
        ))
    }
}

fn seconds(key: &str, v: f64, zero_ok: bool) -> Result<(), ConfigError> {
    let low_ok = if zero_ok { v >= 0.0 } else { v > 0.0 };
    if !v.is_finite() || !low_ok {
        let bound = if zero_ok { ">= 0" } else { "> 0" };
        return Err(ConfigError::invalid(
            key,
            format!("must be {bound}, got {v}"),
        ));
    }
    if v > MAX_SECONDS {
        return Err(ConfigError::invalid(
            key,
            format!("must be <= {MAX_SECONDS} (one year), got {v}"),
        ));
    }
    Ok(())
}

fn ports(key: &str, list: &[u16]) -> Result<(), ConfigError> {
    if list.contains(&0) {
        return Err(ConfigError::invalid(key, "ports must be 1-65535, got 0"));
    }
    Ok(())
}

#[path = "config_endpoints.rs"]
mod endpoints;
pub use endpoints::{ConnectFailingConfig, StaleReuseConfig};

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;

/// Fuzzing of the config parser (committed corpus, then random and mutated inputs).
#[cfg(test)]
#[path = "config_fuzz.rs"]
mod fuzz;
