//! A real Prometheus (Debian's `prometheus`) on a loopback port with a temporary directory,
//! killed and its directory removed on drop; its query and alerts APIs.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::process::{Service, TempDir};
use crate::{free_port, http::http_get};

pub const BIN: &str = "prometheus";

/// How long Prometheus may take to become ready.
const READY: Duration = Duration::from_mins(1);

/// A `prometheus.yml` that scrapes `127.0.0.1:<daemon_port>` as job `tcpwatch` every second
/// and evaluates every second; with `rules.yml` (next to it) when `rules`, sending alerts to
/// the Alertmanager on `alertmanager` when given.
#[must_use]
pub fn scrape_config(daemon_port: u16, rules: bool, alertmanager: Option<u16>) -> String {
    let mut cfg = String::from(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n",
    );
    if rules {
        cfg.push_str("rule_files:\n  - rules.yml\n");
    }
    if let Some(am) = alertmanager {
        let _ = write!(
            cfg,
            "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am}']\n"
        );
    }
    let _ = write!(
        cfg,
        "scrape_configs:\n  - job_name: tcpwatch\n    static_configs:\n      \
         - targets: ['127.0.0.1:{daemon_port}']\n"
    );
    cfg
}

/// Percent-encoding of everything but unreserved characters (a query in a URL).
#[must_use]
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

pub struct Prometheus {
    // Field order: the process stops before its directory is removed.
    svc: Service,
    pub port: u16,
    dir: TempDir,
}

impl Prometheus {
    /// Starts it with `config` as `prometheus.yml` and `files` (name, text) next to it, on a
    /// free loopback port; waits for `/-/ready`.
    #[must_use]
    pub fn start(config: &str, files: &[(&str, &str)]) -> Self {
        let port = free_port();
        let dir = TempDir::new(&format!("prom-{port}"));
        for (name, text) in files {
            dir.write(name, text);
        }
        let cfg = dir.write("prometheus.yml", config);
        let mut svc = Service::start(
            "prometheus",
            BIN,
            &[
                format!("--config.file={}", cfg.display()),
                format!("--storage.tsdb.path={}", dir.path("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
            ],
            dir.path("prometheus.log"),
        );
        svc.wait_ready(port, READY);
        Self { svc, port, dir }
    }

    /// Starts it with `rules` (the text of a rule file), scraping the daemon on
    /// `daemon_port` (see [`scrape_config`]).
    #[must_use]
    pub fn with_rules(rules: &str, daemon_port: u16) -> Self {
        Self::start(
            &scrape_config(daemon_port, true, None),
            &[("rules.yml", rules)],
        )
    }

    /// An instant query: the whole answer (`Null` when there was none).
    #[must_use]
    pub fn query(&self, expr: &str) -> Value {
        http_get(self.port, &format!("/api/v1/query?query={}", encode(expr)))
            .and_then(|(_, body)| serde_json::from_str(&body).ok())
            .unwrap_or(Value::Null)
    }

    /// Every alert of `/api/v1/alerts` (`labels`, `state`, `activeAt`, ...).
    #[must_use]
    pub fn alerts(&self) -> Vec<Value> {
        alerts(self.port)
    }

    /// The labels of every firing alert.
    #[must_use]
    pub fn firing(&self) -> Vec<Value> {
        firing_labels(self.port)
    }

    #[must_use]
    pub fn log_tail(&self) -> String {
        self.svc.log_tail()
    }

    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.root()
    }
}

/// Every alert of the `/api/v1/alerts` of the Prometheus on `port`.
#[must_use]
pub fn alerts(port: u16) -> Vec<Value> {
    let Some((200, body)) = http_get(port, "/api/v1/alerts") else {
        return Vec::new();
    };
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["data"]["alerts"].as_array().cloned().unwrap_or_default()
}

/// The labels of every firing alert of the Prometheus on `port`.
#[must_use]
pub fn firing_labels(port: u16) -> Vec<Value> {
    alerts(port)
        .into_iter()
        .filter(|a| a["state"] == "firing")
        .map(|a| a["labels"].clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_and_encoding() {
        let c = scrape_config(9000, true, Some(9093));
        assert!(c.contains("rule_files:\n  - rules.yml\n"));
        assert!(c.contains("targets: ['127.0.0.1:9093']"));
        assert!(c.contains("targets: ['127.0.0.1:9000']"));
        assert!(!scrape_config(9000, false, None).contains("rule_files"));
        assert_eq!(encode("up{a=\"b\"} 1"), "up%7Ba%3D%22b%22%7D%201");
    }
}
