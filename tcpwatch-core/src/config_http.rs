//! The `[http]` section (bounds of both HTTP listeners against abuse) and the validation of
//! the listener keys of `[daemon]` (`metrics_listen`, `web_config_file`,
//! `metrics_web_config_file`). See `docs/security.md`.
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, DaemonConfig};

/// Bounds applied to each listener (API and metrics) separately, so a flood of API clients
/// cannot take the metrics listener's connections.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Most connections open at once on one listener; further ones are closed at accept.
    pub max_connections: u32,
    /// Most `/api/v1/stream` subscribers at once; further ones get a 503.
    pub max_stream_subscribers: u32,
    /// Time a new connection has to finish its TLS handshake and each request its headers.
    pub header_timeout_ms: u64,
    /// A connection that moves no byte either way this long is closed (a stream that sends
    /// keep-alives every 15 s counts as moving).
    pub idle_timeout_ms: u64,
    /// Largest response body; a bigger answer is refused with 507 (narrow it with filters or
    /// `limit`).
    pub max_response_bytes: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_connections: 128,
            max_stream_subscribers: 32,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_response_bytes: 64 << 20,
        }
    }
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

fn range(key: &str, v: u64, lo: u64, hi: u64) -> Result<(), ConfigError> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("must be between {lo} and {hi}, got {v}"),
        ))
    }
}

impl HttpConfig {
    /// Checks ranges; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        range(
            "http.max_connections",
            u64::from(self.max_connections),
            1,
            100_000,
        )?;
        range(
            "http.max_stream_subscribers",
            u64::from(self.max_stream_subscribers),
            0,
            10_000,
        )?;
        range(
            "http.header_timeout_ms",
            self.header_timeout_ms,
            100,
            600_000,
        )?;
        range(
            "http.idle_timeout_ms",
            self.idle_timeout_ms,
            1000,
            86_400_000,
        )?;
        if self.idle_timeout_ms <= 15_000 {
            return Err(invalid(
                "http.idle_timeout_ms",
                format!(
                    "must exceed the stream's 15 s keep-alive (15000), got {}",
                    self.idle_timeout_ms
                ),
            ));
        }
        range(
            "http.max_response_bytes",
            self.max_response_bytes,
            1 << 16,
            1 << 32,
        )
    }
}

/// `daemon.metrics_listen`, parsed: `None` when it is empty (no metrics listener).
pub fn metrics_listen(d: &DaemonConfig) -> Result<Option<SocketAddr>, ConfigError> {
    let text = d.metrics_listen.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let addr: SocketAddr = text.parse().map_err(|e| {
        invalid(
            "daemon.metrics_listen",
            format!("not an address:port (like 0.0.0.0:9978) or \"\": {e}, got {text:?}"),
        )
    })?;
    if addr == d.listen {
        return Err(invalid(
            "daemon.metrics_listen",
            format!("must differ from daemon.listen ({addr})"),
        ));
    }
    Ok(Some(addr))
}

/// Checks the listener keys of `[daemon]` (the web configuration files themselves are read
/// and checked by the daemon and `tcpwatch check-config`).
pub fn validate_daemon(d: &DaemonConfig) -> Result<(), ConfigError> {
    let metrics = metrics_listen(d)?;
    if metrics.is_none() && !d.metrics_web_config_file.trim().is_empty() {
        return Err(invalid(
            "daemon.metrics_web_config_file",
            "set, but daemon.metrics_listen is empty (no metrics listener to apply it to)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        HttpConfig::default().validate().unwrap();
        let e = Config::from_toml_str("[http]\nidle_timeout_ms = 5000\n").unwrap_err();
        assert_eq!(e.key(), Some("http.idle_timeout_ms"));
        let e = Config::from_toml_str("[http]\nmax_connections = 0\n").unwrap_err();
        assert_eq!(e.key(), Some("http.max_connections"));
        let e = Config::from_toml_str("[daemon]\nmetrics_listen = \"nope\"\n").unwrap_err();
        assert_eq!(e.key(), Some("daemon.metrics_listen"));
        let e =
            Config::from_toml_str("[daemon]\nmetrics_listen = \"127.0.0.1:9977\"\n").unwrap_err();
        assert_eq!(e.key(), Some("daemon.metrics_listen"));
        let e = Config::from_toml_str("[daemon]\nmetrics_web_config_file = \"/x\"\n").unwrap_err();
        assert_eq!(e.key(), Some("daemon.metrics_web_config_file"));
        let c = Config::from_toml_str("[daemon]\nmetrics_listen = \"0.0.0.0:9978\"\n").unwrap();
        assert_eq!(
            metrics_listen(&c.daemon).unwrap(),
            Some("0.0.0.0:9978".parse().unwrap())
        );
        assert_eq!(metrics_listen(&Config::default().daemon).unwrap(), None);
    }
}
