//! Alerting: the shipped Prometheus rules pass `promtool` (syntax and unit tests, also when not
//! root), the Kubernetes `PrometheusRule` is the generated copy of them, and, end to end (root),
//! a real Prometheus scraping a real daemon fires the rules, a real Alertmanager delivers them
//! to a webhook (one alert per incident, not per socket), and they resolve once the incidents
//! are gone. The daemon's own push to Alertmanager (`[alertmanager]`) is checked against the
//! same Alertmanager.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is a panic with its context"
)]
mod support;

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::alertmanager::{self, Alertmanager};
use support::prom_alerts::{check_one_alert_per_incident, prometheus_firing, wait_firing};
use support::prometheus::{self, Prometheus};
use support::webhook::Webhook;
use support::{Daemon, Netns, TempDir, connect, installed, listener, privileged, run_ok, wait_for};

const RULES: &str = "deploy/prometheus/tcpwatch-rules.yml";
const RULE_TESTS: &str = "deploy/prometheus/tcpwatch-rules.test.yml";
const K8S_RULES: &str = "deploy/kubernetes/prometheusrule.yaml";
const K8S_GEN: &str = "deploy/kubernetes/gen-prometheusrule.sh";
/// Bound of every wait on an external effect.
const WAIT: Duration = Duration::from_mins(1);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The rules file without its header and the `spec:` of the `PrometheusRule`, de-indented.
fn k8s_spec(text: &str) -> String {
    let mut out = String::new();
    let mut in_spec = false;
    for line in text.lines() {
        if in_spec {
            let l = line.strip_prefix("  ").unwrap_or(line);
            out.push_str(l);
            out.push('\n');
        } else if line == "spec:" {
            in_spec = true;
        }
    }
    assert!(in_spec, "{K8S_RULES} has no top-level `spec:`");
    out
}

#[test]
fn shipped_rules_pass_promtool_and_match_the_kubernetes_copy() {
    let root = repo_root();
    // The PrometheusRule is exactly what the generator prints from the rules file.
    let generated = run_ok(Command::new("sh").arg(root.join(K8S_GEN)));
    let shipped = std::fs::read_to_string(root.join(K8S_RULES)).unwrap();
    assert!(
        String::from_utf8_lossy(&generated.stdout) == shipped,
        "{K8S_RULES} is stale: run `{K8S_GEN} > {K8S_RULES}`"
    );
    let rules = std::fs::read_to_string(root.join(RULES)).unwrap();
    let mut body = String::new();
    for l in rules.lines().filter(|l| !l.starts_with('#')) {
        body.push_str(l);
        body.push('\n');
    }
    assert_eq!(
        k8s_spec(&shipped),
        body,
        "the PrometheusRule spec differs from {RULES}"
    );
    // Every alert has a runbook, and every runbook link points at an existing file; every
    // alert has promtool unit tests that show it firing.
    let tests = std::fs::read_to_string(root.join(RULE_TESTS)).unwrap();
    for line in rules.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert: ") {
            assert!(
                tests.contains(&format!("alertname: {name}\n        exp_alerts:")),
                "{name}: no firing case in {RULE_TESTS}"
            );
            let doc = root.join(format!("docs/runbooks/{name}.md"));
            assert!(doc.is_file(), "no runbook {}", doc.display());
            assert!(
                rules.contains(&format!("docs/runbooks/{name}.md")),
                "{name}: runbook_url"
            );
        }
    }

    if !installed("promtool") {
        return;
    }
    let tmp = TempDir::new("promtool");
    let spec = tmp.write("prometheusrule-spec.yml", &k8s_spec(&shipped));
    let out = run_ok(
        Command::new("promtool")
            .arg("check")
            .arg("rules")
            .arg(root.join(RULES))
            .arg(&spec),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("SUCCESS: 15 rules found").count(), 2, "{text}");
    let out = run_ok(
        Command::new("promtool")
            .arg("test")
            .arg("rules")
            .arg(root.join(RULE_TESTS)),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SUCCESS"), "{text}");
}

/// The shipped rules with every `for:` set to 0s, so that the end-to-end test does not wait
/// minutes for them (what is tested here is the wiring; the `for:` durations are covered by
/// the promtool unit tests).
fn rules_without_for(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("for:") {
            assert!(!rest.trim().is_empty(), "{line}");
            let indent = &line[..line.len() - t.len()];
            writeln!(out, "{indent}for: 0s").unwrap();
        } else {
            writeln!(out, "{line}").unwrap();
        }
    }
    out
}

/// The daemon's own per-finding alerts about the test namespace, of `kind`.
fn pushed(alerts: &[Value], netns: u64, kind: &str) -> Vec<Value> {
    pushed_as(alerts, "TcpwatchFinding", netns, kind)
}

/// The daemon's own alerts named `alertname` about the test namespace, of `kind`.
fn pushed_as(alerts: &[Value], alertname: &str, netns: u64, kind: &str) -> Vec<Value> {
    let netns = netns.to_string();
    alerts
        .iter()
        .filter(|a| {
            let l = &a["labels"];
            l["alertname"] == alertname && l["netns"] == netns && l["kind"] == kind
        })
        .cloned()
        .collect()
}

/// Keeps trying to connect to a full listener (short timeouts) so that the namespace's
/// `ListenOverflows` keeps rising, until `stop`.
fn overflow_attempts(ns: &Netns, addr: SocketAddr, stop: Arc<AtomicBool>) -> JoinHandle<u32> {
    ns.spawn_in(move || {
        let mut failed = 0;
        while !stop.load(Ordering::Relaxed) {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                failed += 1;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        failed
    })
}

/// The daemon's own push: one `TcpwatchIncident` per cause (the leaking listener and the full
/// one) and, opted in, `TcpwatchFinding` alerts about the test namespace in Alertmanager, with
/// their labels and annotations.
fn check_daemon_push(am: &Alertmanager, netns: u64, owned_addr: SocketAddr, full_addr: SocketAddr) {
    let incidents = wait_for(WAIT, || {
        let alerts = am.alerts();
        let leak = pushed_as(&alerts, "TcpwatchIncident", netns, "close_wait_leak");
        let full = pushed_as(&alerts, "TcpwatchIncident", netns, "listener_not_accepting");
        (leak.len() == 1 && full.len() == 1).then_some((leak, full))
    });
    let (leak, full) = incidents.unwrap_or_else(|| {
        panic!(
            "not one TcpwatchIncident per cause for netns {netns} within {WAIT:?}: {:?}",
            am.alerts()
        )
    });
    assert_eq!(
        leak[0]["labels"]["port"],
        owned_addr.port().to_string(),
        "{leak:?}"
    );
    assert_eq!(leak[0]["annotations"]["members"], "5", "{leak:?}");
    assert_eq!(
        full[0]["labels"]["port"],
        full_addr.port().to_string(),
        "{full:?}"
    );
    let pushed_now = wait_for(WAIT, || {
        let alerts = am.alerts();
        let cw = pushed(&alerts, netns, "close_wait_stuck");
        let bl = pushed(&alerts, netns, "accept_backlog_filling");
        (!cw.is_empty() && !bl.is_empty()).then_some(cw)
    });
    assert!(
        pushed_now.is_some(),
        "no TcpwatchFinding for netns {} in Alertmanager within {WAIT:?}: {:?}",
        netns,
        am.alerts()
    );
    let cw = pushed_now.unwrap();
    let owned = cw
        .iter()
        .find(|a| a["labels"]["cause"] == "owned" && a["labels"]["local"] == owned_addr.to_string())
        .unwrap_or_else(|| panic!("no owned close_wait_stuck alert for {owned_addr}: {cw:?}"));
    let l = &owned["labels"];
    for key in ["severity", "finding_id", "node", "remote"] {
        assert!(
            l[key].as_str().is_some_and(|s| !s.is_empty()),
            "label {key}: {owned}"
        );
    }
    assert_eq!(l["severity"], "warning", "{owned}");
    let ann = &owned["annotations"];
    assert!(
        ann["description"].as_str().unwrap().contains("close()"),
        "{owned}"
    );
    assert!(
        ann["summary"]
            .as_str()
            .unwrap()
            .contains("close_wait_stuck"),
        "{owned}"
    );
    assert!(
        ann["runbook_url"]
            .as_str()
            .unwrap()
            .ends_with("/TcpwatchCloseWaitStuck.md"),
        "{owned}"
    );
}

/// Waits until the webhook received every alert of `names` with `status`.
fn wait_webhook(hook: &Webhook, names: &[&str], status: &str) {
    let got = wait_for(WAIT, || {
        names.iter().all(|n| hook.has(n, status)).then_some(())
    });
    assert!(
        got.is_some(),
        "webhook did not receive {names:?} {status} within {WAIT:?}: {:?}",
        hook.alerts()
    );
}

/// The daemon resolved its own alerts too: none about the namespace is active any more, and
/// the webhook saw them resolved.
fn check_daemon_resolved(am: &Alertmanager, hook: &Webhook, netns: u64) {
    let inode = netns.to_string();
    let gone = wait_for(WAIT, || {
        let alerts = am.alerts();
        let active = pushed(&alerts, netns, "close_wait_stuck").len()
            + pushed(&alerts, netns, "accept_backlog_filling").len()
            + pushed_as(&alerts, "TcpwatchIncident", netns, "close_wait_leak").len()
            + pushed_as(&alerts, "TcpwatchIncident", netns, "listener_not_accepting").len();
        let hook_resolved = hook
            .alerts()
            .iter()
            .any(|(n, s, l)| n == "TcpwatchFinding" && s == "resolved" && l["netns"] == inode);
        (active == 0 && hook_resolved).then_some(())
    });
    assert!(
        gone.is_some(),
        "the daemon's alerts for netns {} did not resolve within {WAIT:?}: {:?}",
        netns,
        pushed(&am.alerts(), netns, "close_wait_stuck")
    );
}

/// Prometheus scraping the daemon every second with the shipped rules (`for: 0s`, see
/// [`rules_without_for`]), sending to Alertmanager.
fn start_prometheus(am_port: u16, daemon_port: u16) -> Prometheus {
    let shipped = std::fs::read_to_string(repo_root().join(RULES)).unwrap();
    Prometheus::start(
        &prometheus::scrape_config(daemon_port, true, Some(am_port)),
        &[("rules.yml", &rules_without_for(&shipped))],
    )
}

#[test]
fn rules_fire_and_resolve_through_prometheus_and_alertmanager() {
    if !privileged() || !installed(prometheus::BIN) || !installed(alertmanager::BIN) {
        return;
    }
    let t0 = Instant::now();
    let hook = Webhook::start();

    // Alertmanager: one group per alertname, flushed every second, to the webhook.
    let am = Alertmanager::with_config(&alertmanager::webhook_config(hook.port));
    let am_port = am.port;

    // The daemon, short detector windows, pushing to that Alertmanager: one alert per
    // incident and, opted in, one per finding.
    let d = Daemon::start(&[
        "detectors.close_wait.threshold_seconds=2",
        "detectors.accept_backlog.window_seconds=2",
        "daemon.sweep_interval_ms=500",
        &format!("alertmanager.url=\"http://127.0.0.1:{am_port}\""),
        "alertmanager.per_finding_alerts=true",
    ]);

    let prom = start_prometheus(am_port, d.port);
    let prom_port = prom.port;
    eprintln!(
        "alertmanager, daemon and prometheus up after {:?}",
        t0.elapsed()
    );

    // Incidents in a namespace of the test: a CLOSE_WAIT pile-up the application leaks...
    let ns = Netns::new("alerting");
    let (l_owned, owned_addr) = listener(&ns, 16);
    let mut leaked = Vec::new();
    for _ in 0..5 {
        let c = connect(&ns, owned_addr);
        leaked.push(l_owned.accept().unwrap().0);
        drop(c);
    }
    // ...and a listener (backlog 2) that never accepts, overflowing.
    let (l_full, full_addr) = listener(&ns, 2);
    let mut queued: Vec<TcpStream> = (0..3).map(|_| connect(&ns, full_addr)).collect();
    drop(queued.pop()); // one never-accepted CLOSE_WAIT too
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = overflow_attempts(&ns, full_addr, stop.clone());
    let t_incident = Instant::now();

    // One incident each: the owned leak (5 sockets) and the listener that never accepts.
    let wanted = ["TcpwatchCloseWaitLeak", "TcpwatchListenerNotAccepting"];
    let ours = [
        (wanted[0], owned_addr.port()),
        (wanted[1], full_addr.port()),
    ];
    let firing = wait_firing(&d, prom_port, &ours, WAIT);
    eprintln!(
        "Prometheus firing after {:?}: {firing:?}",
        t_incident.elapsed()
    );
    check_one_alert_per_incident(prom_port, owned_addr, full_addr);
    for silent in ["TcpwatchDown", "TcpwatchNotReady"] {
        assert!(
            !firing.iter().any(|f| f == silent),
            "{silent} fired: {firing:?}"
        );
    }

    wait_webhook(&hook, &wanted, "firing");
    eprintln!("webhook got them firing after {:?}", t_incident.elapsed());

    check_daemon_push(&am, ns.inode, owned_addr, full_addr);
    eprintln!(
        "daemon's TcpwatchFinding alerts in Alertmanager after {:?}",
        t_incident.elapsed()
    );

    // Remove the conditions: close the leaked sockets, stop the attempts, drop the listener
    // and its clients.
    stop.store(true, Ordering::Relaxed);
    let failed_attempts = attempts.join().unwrap();
    assert!(
        failed_attempts > 0,
        "no connection attempt to the full listener failed"
    );
    drop(leaked);
    drop(l_owned);
    drop(queued);
    drop(l_full);
    let t_fix = Instant::now();

    let resolved = wait_for(WAIT, || {
        let firing = prometheus_firing(prom_port);
        let quiet = !wanted.iter().any(|w| firing.iter().any(|f| f == w));
        (quiet && wanted.iter().all(|w| hook.has(w, "resolved"))).then_some(())
    });
    assert!(
        resolved.is_some(),
        "not resolved within {WAIT:?}: Prometheus firing {:?}; webhook {:?}; findings {}",
        prometheus_firing(prom_port),
        hook.alerts(),
        d.get_json("/api/v1/findings")
    );
    eprintln!("resolution reached the webhook after {:?}", t_fix.elapsed());

    check_daemon_resolved(&am, &hook, ns.inode);
    eprintln!(
        "daemon's alerts resolved after {:?}; total {:?}",
        t_fix.elapsed(),
        t0.elapsed()
    );
    drop(prom);
    drop(d);
    drop(am);
}
