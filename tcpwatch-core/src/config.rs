//! tcpwatch's configuration: one TOML file, every key optional (defaults below and in the
//! embedded `default-config.toml`), unknown keys rejected, values validated with errors that
//! name the dotted key (`detectors.close_wait.threshold_seconds: must be > 0, got -1`).
//!
//! Units: intervals of the daemon and of Alertmanager are integer milliseconds (`*_ms`);
//! detector thresholds and windows are seconds as floats (`*_seconds`, `30` and `30.0` both
//! work).
use serde::{Deserialize, Serialize};

use crate::model::MonoNs;

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
    pub exposure: crate::config_exposure::ExposureConfig,
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
        self.exposure.validate()?;
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

#[path = "config_daemon.rs"]
mod daemon;
pub use daemon::{AlertmanagerConfig, DaemonConfig, LogFormat};

#[path = "config_detectors.rs"]
mod detectors;
pub use detectors::{
    AcceptBacklogConfig, AwaitingResponseConfig, CloseWaitConfig, DetectorConfig, ResetBurstConfig,
    RetransmitConfig, SendQueueConfig,
};

#[path = "config_toml.rs"]
mod toml_io;
use toml_io::{
    check_known_keys, deserialize_table, parse_override_value, schema_sample, set_path,
    syntax_error,
};

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
