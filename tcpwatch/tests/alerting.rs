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
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::prom_alerts::{check_one_alert_per_incident, prometheus_firing, wait_firing};
use support::{Daemon, Netns, connect, free_port, http_get, listener, privileged, wait_for};

const RULES: &str = "deploy/prometheus/tcpwatch-rules.yml";
const RULE_TESTS: &str = "deploy/prometheus/tcpwatch-rules.test.yml";
const K8S_RULES: &str = "deploy/kubernetes/prometheusrule.yaml";
const K8S_GEN: &str = "deploy/kubernetes/gen-prometheusrule.sh";
const ALERTMANAGER: &str = "prometheus-alertmanager";
/// Bound of every wait on an external effect.
const WAIT: Duration = Duration::from_mins(1);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Whether a tool is installed. Missing: a loud skip, except in CI (`cargo xtask setup
/// --test-deps` installs prometheus and prometheus-alertmanager there).
fn have(tool: &str) -> bool {
    if which(tool) {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{tool} is not installed (cargo xtask setup --test-deps)"
    );
    eprintln!(
        "\n!!!!!!!! SKIPPED: {tool} is not installed (apt-get install prometheus prometheus-alertmanager) !!!!!!!!\n"
    );
    false
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "tcpwatch-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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

    if !have("promtool") {
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

/// A process started by the test: killed on drop; its log is printed if the test fails.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn start(name: &'static str, bin: &str, args: &[String], log: PathBuf) -> Self {
        let out = File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("{bin}: {e}"));
        Self { name, child, log }
    }

    /// Waits for `GET /-/ready` to answer 200.
    fn wait_ready(&mut self, port: u16) {
        let ok = wait_for(WAIT, || {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("{} exited with {st}:\n{}", self.name, self.log_text());
            }
            (http_get(port, "/-/ready").map(|x| x.0) == Some(200)).then_some(())
        });
        assert!(
            ok.is_some(),
            "{} not ready within {WAIT:?}:\n{}",
            self.name,
            self.log_text()
        );
    }

    fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- {} log (last lines) ----\n{}",
                self.name,
                self.log_text()
            );
        }
    }
}

/// An HTTP server that records request bodies (Alertmanager's webhook receiver).
struct Webhook {
    port: u16,
    bodies: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Webhook {
    fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (bodies.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((conn, _)) => {
                        if let Some(body) = serve_one(conn) {
                            b.lock().unwrap().push(body);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self {
            port,
            bodies,
            stop,
            thread: Some(thread),
        }
    }

    /// (alertname, status, labels) of every alert of every notification so far.
    fn alerts(&self) -> Vec<(String, String, Value)> {
        let bodies = self.bodies.lock().unwrap().clone();
        let mut out = Vec::new();
        for b in bodies {
            let v: Value = serde_json::from_str(&b).unwrap_or(Value::Null);
            for a in v["alerts"].as_array().into_iter().flatten() {
                let name = a["labels"]["alertname"].as_str().unwrap_or("").to_owned();
                let status = a["status"].as_str().unwrap_or("").to_owned();
                out.push((name, status, a["labels"].clone()));
            }
        }
        out
    }

    fn has(&self, alertname: &str, status: &str) -> bool {
        self.alerts()
            .iter()
            .any(|(n, s, _)| n == alertname && s == status)
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one HTTP request, answers 200 and closes; returns the body.
fn serve_one(mut conn: TcpStream) -> Option<String> {
    conn.set_nonblocking(false).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0_u8; 16_384];
    let body = loop {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if body.len() >= len {
                break body.to_owned();
            }
        }
    };
    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    Some(body)
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

/// Active alerts in Alertmanager's `/api/v2/alerts` (resolved ones are not listed).
fn alertmanager_alerts(port: u16) -> Vec<Value> {
    let Some((200, body)) = http_get(port, "/api/v2/alerts") else {
        return Vec::new();
    };
    serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
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
    let path = format!("/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let fd = File::open(&path).unwrap();
        // SAFETY: a valid namespace fd; setns only affects this thread.
        let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
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
fn check_daemon_push(am_port: u16, netns: u64, owned_addr: SocketAddr, full_addr: SocketAddr) {
    let incidents = wait_for(WAIT, || {
        let alerts = alertmanager_alerts(am_port);
        let leak = pushed_as(&alerts, "TcpwatchIncident", netns, "close_wait_leak");
        let full = pushed_as(&alerts, "TcpwatchIncident", netns, "listener_not_accepting");
        (leak.len() == 1 && full.len() == 1).then_some((leak, full))
    });
    let (leak, full) = incidents.unwrap_or_else(|| {
        panic!(
            "not one TcpwatchIncident per cause for netns {netns} within {WAIT:?}: {:?}",
            alertmanager_alerts(am_port)
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
        let alerts = alertmanager_alerts(am_port);
        let cw = pushed(&alerts, netns, "close_wait_stuck");
        let bl = pushed(&alerts, netns, "accept_backlog_filling");
        (!cw.is_empty() && !bl.is_empty()).then_some(cw)
    });
    assert!(
        pushed_now.is_some(),
        "no TcpwatchFinding for netns {} in Alertmanager within {WAIT:?}: {:?}",
        netns,
        alertmanager_alerts(am_port)
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
fn check_daemon_resolved(am_port: u16, hook: &Webhook, netns: u64) {
    let inode = netns.to_string();
    let gone = wait_for(WAIT, || {
        let alerts = alertmanager_alerts(am_port);
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
        pushed(&alertmanager_alerts(am_port), netns, "close_wait_stuck")
    );
}

/// Alertmanager: one group per alertname, flushed every second, to the webhook.
fn start_alertmanager(tmp: &TempDir, hook_port: u16) -> (Proc, u16) {
    let am_port = free_port();
    let am_cfg = tmp.write(
        "alertmanager.yml",
        &format!(
            "route:\n  receiver: hook\n  group_by: ['alertname']\n  group_wait: 1s\n  \
             group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: hook\n    webhook_configs:\n      - url: 'http://127.0.0.1:{hook_port}/'\n        \
             send_resolved: true\n"
        ),
    );
    std::fs::create_dir_all(tmp.path("am-data")).unwrap();
    let mut am = Proc::start(
        "alertmanager",
        ALERTMANAGER,
        &[
            format!("--config.file={}", am_cfg.display()),
            format!("--storage.path={}", tmp.path("am-data").display()),
            format!("--web.listen-address=127.0.0.1:{am_port}"),
            "--cluster.listen-address=".to_owned(),
        ],
        tmp.path("alertmanager.log"),
    );
    am.wait_ready(am_port);

    (am, am_port)
}

/// Prometheus scraping the daemon every second with the shipped rules (`for: 0s`, see
/// [`rules_without_for`]), sending to Alertmanager.
fn start_prometheus(tmp: &TempDir, am_port: u16, daemon_port: u16) -> (Proc, u16) {
    let shipped = std::fs::read_to_string(repo_root().join(RULES)).unwrap();
    tmp.write("rules.yml", &rules_without_for(&shipped));
    let prom_port = free_port();
    let prom_cfg = tmp.write(
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - rules.yml\n\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\n\
             scrape_configs:\n  - job_name: tcpwatch\n    static_configs:\n      - targets: ['127.0.0.1:{daemon_port}']\n"
        ),
    );
    let mut prom = Proc::start(
        "prometheus",
        "prometheus",
        &[
            format!("--config.file={}", prom_cfg.display()),
            format!("--storage.tsdb.path={}", tmp.path("prom-data").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ],
        tmp.path("prometheus.log"),
    );
    prom.wait_ready(prom_port);
    (prom, prom_port)
}

#[test]
fn rules_fire_and_resolve_through_prometheus_and_alertmanager() {
    if !privileged() || !have("prometheus") || !have(ALERTMANAGER) {
        return;
    }
    let t0 = Instant::now();
    let tmp = TempDir::new("alerting");
    let hook = Webhook::start();

    let (am, am_port) = start_alertmanager(&tmp, hook.port);

    // The daemon, short detector windows, pushing to that Alertmanager: one alert per
    // incident and, opted in, one per finding.
    let d = Daemon::start(&[
        "detectors.close_wait.threshold_seconds=2",
        "detectors.accept_backlog.window_seconds=2",
        "daemon.sweep_interval_ms=500",
        &format!("alertmanager.url=\"http://127.0.0.1:{am_port}\""),
        "alertmanager.per_finding_alerts=true",
    ]);

    let (prom, prom_port) = start_prometheus(&tmp, am_port, d.port);
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

    check_daemon_push(am_port, ns.inode, owned_addr, full_addr);
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

    check_daemon_resolved(am_port, &hook, ns.inode);
    eprintln!(
        "daemon's alerts resolved after {:?}; total {:?}",
        t_fix.elapsed(),
        t0.elapsed()
    );
    drop(prom);
    drop(d);
    drop(am);
}
