//! Prometheus' alerts API as the alerting tests read it: what fires, with which labels, and
//! the one-alert-per-incident check of the incident rules, and the shipped rules with their
//! `for:` durations scaled by one knob ([`scale_for`]).
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use super::{Daemon, prometheus, wait_for};

/// Firing alert names in Prometheus' `/api/v1/alerts`.
pub fn prometheus_firing(port: u16) -> Vec<String> {
    prometheus_firing_labels(port)
        .iter()
        .filter_map(|l| l["alertname"].as_str().map(str::to_owned))
        .collect()
}

/// The labels of every firing alert in Prometheus' `/api/v1/alerts`.
pub fn prometheus_firing_labels(port: u16) -> Vec<Value> {
    prometheus::firing_labels(port)
}

/// The shipped rules, relative to the repository root.
pub const RULES: &str = "deploy/prometheus/tcpwatch-rules.yml";

/// The rules text with every `for: <N>m` rewritten to `for: <N × secs_per_minute>s`, and the
/// number of rewritten lines. Nothing else changes (expressions, labels, annotations). Any
/// other `for:` form is a panic: the knob must cover every rule.
pub fn scale_for(text: &str, secs_per_minute: u64) -> (String, usize) {
    let mut out = String::new();
    let mut n = 0;
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("for:") {
            let mins: u64 = rest
                .trim()
                .strip_suffix('m')
                .and_then(|m| m.parse().ok())
                .unwrap_or_else(|| panic!("`{line}`: only `for: <N>m` is scaled"));
            let indent = &line[..line.len() - t.len()];
            writeln!(out, "{indent}for: {}s", mins * secs_per_minute).unwrap();
            n += 1;
        } else {
            writeln!(out, "{line}").unwrap();
        }
    }
    (out, n)
}

/// Firing alerts named `alertname` whose `port` label is `port`: one per incident.
pub fn firing_for_port(prom_port: u16, alertname: &str, port: u16) -> Vec<Value> {
    prometheus_firing_labels(prom_port)
        .into_iter()
        .filter(|l| {
            l["alertname"] == alertname
                && l["port"].as_str().and_then(|p| p.parse::<u16>().ok()) == Some(port)
        })
        .collect()
}

/// Waits until Prometheus fires each (alert, port) of `ours`; returns the firing names.
pub fn wait_firing(
    d: &Daemon,
    prom_port: u16,
    ours: &[(&str, u16)],
    wait: Duration,
) -> Vec<String> {
    let fired = wait_for(wait, || {
        ours.iter()
            .all(|(name, port)| !firing_for_port(prom_port, name, *port).is_empty())
            .then(|| prometheus_firing(prom_port))
    });
    assert!(
        fired.is_some(),
        "Prometheus did not fire {ours:?} within {wait:?}; firing: {:?}; incidents: {}",
        prometheus_firing_labels(prom_port),
        d.get_json("/api/v1/incidents")
    );
    fired.unwrap()
}

/// One Prometheus alert per incident, not per socket: the leak (5 sockets) is one
/// `TcpwatchCloseWaitLeak` naming this process, the listener one `TcpwatchListenerNotAccepting`.
pub fn check_one_alert_per_incident(prom_port: u16, owned_addr: SocketAddr, full_addr: SocketAddr) {
    let leak = firing_for_port(prom_port, "TcpwatchCloseWaitLeak", owned_addr.port());
    assert_eq!(
        leak.len(),
        1,
        "one alert for the leak on :{}: {leak:?}",
        owned_addr.port()
    );
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
    assert_eq!(
        leak[0]["process"].as_str(),
        Some(comm.trim()),
        "the leak names this process: {leak:?}"
    );
    let lna = firing_for_port(prom_port, "TcpwatchListenerNotAccepting", full_addr.port());
    assert_eq!(lna.len(), 1, "one alert for :{}: {lna:?}", full_addr.port());
}
