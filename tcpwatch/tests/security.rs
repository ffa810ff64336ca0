//! Who may read a node's connections (issue 16, docs/security.md), end to end with the real
//! daemon, `curl`, `openssl` and a real Prometheus:
//! - TLS and authentication on both listeners: no or wrong credentials are a 401, a client
//!   certificate from an untrusted CA is refused, the right credentials get a 200, and the
//!   certificate is reloaded when its file changes;
//! - the metrics listener serves no per-connection path;
//! - Prometheus scrapes the metrics listener over TLS with basic auth (`up == 1`);
//! - 100 slow stream clients and 500 idle connections on the API listener neither stop a
//!   metrics scrape nor delay the event path beyond 100 ms, and the caps are counted.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use std::io::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::pki::{make_ca, make_cert};
use support::prometheus::{self, Prometheus};
use support::{
    BIN, Daemon, TempDir, daemon, free_port, http_get, installed, metrics, privileged, wait_for,
};

/// No extra `curl` arguments.
const NONE: &[&str] = &[];
const WAIT: Duration = Duration::from_secs(30);
const USER: &str = "prom";
const PASSWORD: &str = "s3cret-pass";
const TOKEN: &str = "tok-0123456789abcdef";

/// Certificates, a bearer token and two web configurations: the API listener requires a
/// client certificate from `ca` plus basic auth or the token; the metrics listener requires
/// basic auth over TLS.
fn setup(dir: &TempDir) -> (PathBuf, PathBuf) {
    make_ca(dir.root(), "ca");
    make_ca(dir.root(), "evil-ca");
    make_cert(dir.root(), "ca", "server", "tcpwatch-1", true);
    make_cert(dir.root(), "ca", "client", "operator", false);
    make_cert(dir.root(), "evil-ca", "evil", "operator", false);
    dir.write("token", &format!("{TOKEN}\n"));
    let hash = bcrypt::hash(PASSWORD, 10).unwrap();
    let api = dir.write(
        "api-web.toml",
        &format!(
            "bearer_token_files = [\"{}\"]\n\n[tls_server_config]\ncert_file = \"{}\"\n\
             key_file = \"{}\"\nclient_auth_type = \"RequireAndVerifyClientCert\"\n\
             client_ca_file = \"{}\"\n\n[basic_auth_users]\n{USER} = \"{hash}\"\n",
            dir.s("token"),
            dir.s("server.crt"),
            dir.s("server.key"),
            dir.s("ca.crt")
        ),
    );
    let metrics = dir.write(
        "metrics-web.toml",
        &format!(
            "[tls_server_config]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\n[basic_auth_users]\n\
             {USER} = \"{hash}\"\n",
            dir.s("server.crt"),
            dir.s("server.key")
        ),
    );
    (api, metrics)
}

/// `curl` over TLS trusting `ca.crt`: the HTTP status (0 when there was no HTTP answer, e.g.
/// a refused handshake) and the body.
fn curl<S: AsRef<std::ffi::OsStr>>(
    dir: &TempDir,
    port: u16,
    path: &str,
    extra: &[S],
) -> (u16, String) {
    let body = dir.path(&format!("body-{}", free_port()));
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(dir.path("ca.crt"))
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}"])
        .args(extra)
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let text = std::fs::read_to_string(&body).unwrap_or_default();
    let _ = std::fs::remove_file(&body);
    (code, text)
}

fn client_cert(dir: &TempDir, name: &str) -> Vec<String> {
    vec![
        "--cert".into(),
        dir.s(&format!("{name}.crt")),
        "--key".into(),
        dir.s(&format!("{name}.key")),
    ]
}

/// Starts a daemon with a metrics listener and waits until it is ready, checking readiness
/// through the metrics listener (`/readyz` needs no credentials; TLS when `tls_ca` is set).
fn start(sets: &[String], metrics_port: u16, tls: Option<&TempDir>) -> Daemon {
    let mut extra = vec![format!(
        "daemon.metrics_listen=\"127.0.0.1:{metrics_port}\""
    )];
    extra.extend(sets.iter().cloned());
    let mut d = daemon::Daemon::spawn(
        Path::new(BIN),
        daemon::pin_dir("sec"),
        free_port(),
        extra,
        |_| {},
    );
    d.wait_ready(WAIT, || {
        let code = match tls {
            Some(dir) => curl(dir, metrics_port, "/readyz", NONE).0,
            None => http_get(metrics_port, "/readyz").map_or(0, |x| x.0),
        };
        code == 200
    });
    Daemon::from_kit(d)
}

/// The value of a sample `name{labels}` in Prometheus text.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    metrics::sample(text, &format!("{name}{{{labels}}}"))
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one scenario: both listeners, every credential case, then rotation"
)]
fn tls_and_credentials_guard_both_listeners() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new("sec-tls");
    let (api_web, metrics_web) = setup(&dir);
    let metrics_port = free_port();
    let d = start(
        &[
            format!("daemon.web_config_file=\"{}\"", api_web.display()),
            format!(
                "daemon.metrics_web_config_file=\"{}\"",
                metrics_web.display()
            ),
        ],
        metrics_port,
        Some(&dir),
    );
    let api = d.port;
    let good = client_cert(&dir, "client");
    let good: Vec<&str> = good.iter().map(String::as_str).collect();
    let evil = client_cert(&dir, "evil");
    let evil: Vec<&str> = evil.iter().map(String::as_str).collect();
    let basic = format!("{USER}:{PASSWORD}");
    let path = "/api/v1/connections?limit=5";

    // API listener: trusted client certificate, then credentials.
    let with = |extra: &[&str]| -> Vec<String> {
        good.iter().chain(extra).map(|s| (*s).to_owned()).collect()
    };
    let (code, body) = curl(&dir, api, path, &good);
    assert_eq!(code, 401, "no credentials: {body}");
    assert_eq!(
        curl(&dir, api, path, &with(&["-u", &format!("{USER}:nope")])).0,
        401
    );
    assert_eq!(
        curl(
            &dir,
            api,
            path,
            &with(&["-u", &format!("nobody:{PASSWORD}")])
        )
        .0,
        401
    );
    assert_eq!(
        curl(
            &dir,
            api,
            path,
            &with(&["-H", "Authorization: Bearer wrong-token"])
        )
        .0,
        401
    );
    let (code, body) = curl(&dir, api, path, &with(&["-u", &basic]));
    assert_eq!(code, 200, "right password: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["connections"].is_array(), "{body}");
    let bearer = format!("Authorization: Bearer {TOKEN}");
    assert_eq!(
        curl(&dir, api, path, &with(&["-H", &bearer])).0,
        200,
        "right token"
    );
    // Probes need no credentials (still a trusted client certificate).
    assert_eq!(curl(&dir, api, "/healthz", &good).0, 200);
    // The right password does not help without a trusted client certificate.
    let (code, _) = curl(&dir, api, path, &[&evil[..], &["-u", &basic]].concat());
    assert_eq!(
        code, 0,
        "a client certificate of another CA is refused in the handshake"
    );
    let (code, _) = curl(&dir, api, path, &["-u", &basic]);
    assert_eq!(code, 0, "no client certificate is refused in the handshake");
    // Plain HTTP on a TLS listener gets no HTTP answer.
    assert_eq!(http_get(api, "/healthz").map(|x| x.0), None);

    // Metrics listener: aggregate paths only, credentials required.
    let (code, body) = curl(&dir, metrics_port, "/metrics", NONE);
    assert_eq!(code, 401, "{body}");
    assert_eq!(
        curl(
            &dir,
            metrics_port,
            "/metrics",
            &["-u", &format!("{USER}:x")]
        )
        .0,
        401
    );
    let (code, metrics) = curl(&dir, metrics_port, "/metrics", &["-u", &basic]);
    assert_eq!(code, 200, "{metrics}");
    assert!(metrics.contains("tcpwatch_build_info"), "{metrics}");
    for p in [
        "/api/v1/connections",
        "/api/v1/findings",
        "/api/v1/stream",
        "/api/v1/status",
    ] {
        let (code, body) = curl(&dir, metrics_port, p, &["-u", &basic]);
        assert_eq!(code, 404, "{p} on the metrics listener: {body}");
    }
    // Refusals are counted per listener and reason.
    let (_, metrics) = curl(&dir, metrics_port, "/metrics", &["-u", &basic]);
    let rejected = |listener: &str, reason: &str| {
        sample(
            &metrics,
            "tcpwatch_http_rejected_total",
            &format!("listener=\"{listener}\",reason=\"{reason}\""),
        )
        .unwrap_or_else(|| panic!("no rejected series {listener}/{reason}:\n{metrics}"))
    };
    assert!(rejected("api", "unauthorized") >= 4.0);
    assert!(rejected("api", "tls_handshake") >= 3.0);
    assert!(rejected("metrics", "unauthorized") >= 2.0);

    // Certificate rotation: a new server certificate is served without a restart.
    let subject = |port: u16| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "openssl s_client -connect 127.0.0.1:{port} -CAfile ca.crt </dev/null 2>/dev/null \
                 | openssl x509 -noout -subject"
            ))
            .current_dir(dir.root())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert!(
        subject(metrics_port).contains("tcpwatch-1"),
        "{}",
        subject(metrics_port)
    );
    make_cert(dir.root(), "ca", "server", "tcpwatch-2", true);
    let rotated = wait_for(Duration::from_secs(10), || {
        subject(metrics_port).contains("tcpwatch-2").then_some(())
    });
    assert!(
        rotated.is_some(),
        "certificate not reloaded: {}",
        subject(metrics_port)
    );
    assert_eq!(
        curl(&dir, api, path, &with(&["-u", &basic])).0,
        200,
        "API after rotation"
    );
    let (_, metrics) = curl(&dir, metrics_port, "/metrics", &["-u", &basic]);
    assert!(
        sample(
            &metrics,
            "tcpwatch_http_web_config_reloads_total",
            "listener=\"metrics\",result=\"success\""
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    drop(d);
}

#[test]
fn check_config_names_a_bad_key_or_an_unreadable_file() {
    let dir = TempDir::new("sec-check");
    let check = |web: &str| {
        let p = dir.write("web.toml", web);
        let cfg = dir.write(
            "tcpwatch.toml",
            &format!("[daemon]\nweb_config_file = \"{}\"\n", p.display()),
        );
        Command::new(BIN)
            .args(["--config"])
            .arg(&cfg)
            .arg("check-config")
            .output()
            .unwrap()
    };
    let out =
        check("[tls_server_config]\ncert_file = \"/c\"\nkey_file = \"/k\"\nclient_auth = 1\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("tls_server_config.client_auth"), "{err}");
    let out =
        check("[tls_server_config]\ncert_file = \"/nonexistent/tls.crt\"\nkey_file = \"/k\"\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("tls_server_config.cert_file") && err.contains("/nonexistent/tls.crt"),
        "{err}"
    );
    let out = check("[basic_auth_users]\nprom = \"plain\"\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("basic_auth_users.prom"));
    let out = check("");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("api listener"));
}

#[test]
fn prometheus_scrapes_the_metrics_listener_over_tls_with_basic_auth() {
    if !privileged() || !installed(prometheus::BIN) {
        return;
    }
    let dir = TempDir::new("sec-prom");
    let (_, metrics_web) = setup(&dir);
    let metrics_port = free_port();
    let d = start(
        &[format!(
            "daemon.metrics_web_config_file=\"{}\"",
            metrics_web.display()
        )],
        metrics_port,
        Some(&dir),
    );
    let prom = Prometheus::start(
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: tcpwatch\n    scheme: https\n    tls_config:\n      \
             ca_file: {}\n    basic_auth:\n      username: {USER}\n      password: {PASSWORD}\n    \
             static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n",
            dir.s("ca.crt")
        ),
        &[],
    );
    let up = wait_for(WAIT, || {
        let r = prom.query("up{job=\"tcpwatch\"}")["data"]["result"]
            .as_array()?
            .first()?
            .clone();
        (r["value"][1] == "1").then_some(r)
    });
    assert!(
        up.is_some(),
        "up != 1 within {WAIT:?}; prometheus log:\n{}",
        prom.log_tail()
    );
    // And the scraped series are tcpwatch's.
    drop(d);
}

/// Time from a new listening socket to its being counted in `/metrics` of the metrics
/// listener (`tcpwatch_sockets{state="LISTEN"}`): the event path (ring buffer to table, the
/// sweep is off) as a scraper sees it, polled every 20 ms. (Measured through the metrics
/// listener, not the flooded API listener, whose own answers are expected to be slower.)
fn event_delay(metrics_port: u16) -> (Duration, std::net::TcpListener) {
    let listening = || {
        let (code, body) = http_get(metrics_port, "/metrics")?;
        (code == 200).then_some(())?;
        sample(&body, "tcpwatch_sockets", "state=\"LISTEN\"")
    };
    let before = listening().expect("metrics scrape");
    let t0 = Instant::now();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let seen = wait_for(Duration::from_secs(5), || {
        listening().is_some_and(|n| n > before).then(Instant::now)
    })
    .expect("the new listener reached the metrics");
    (seen.duration_since(t0), l)
}

#[test]
fn flood_of_api_clients_does_not_stop_scrapes_or_delay_events() {
    if !privileged() {
        return;
    }
    let metrics_port = free_port();
    // Sweeps only at start-up: later changes arrive through the event path alone.
    let d = start(
        &["daemon.sweep_interval_ms=600000".to_owned()],
        metrics_port,
        None,
    );
    let api = d.port;
    let mut baseline = Vec::new();
    let mut keep = Vec::new();
    for _ in 0..5 {
        let (lat, c) = event_delay(metrics_port);
        baseline.push(lat);
        keep.push(c);
    }
    baseline.sort();

    // 100 slow stream clients: they ask for the stream and never read a byte.
    let mut slow = Vec::new();
    for _ in 0..100 {
        let mut s = TcpStream::connect(("127.0.0.1", api)).unwrap();
        write!(s, "GET /api/v1/stream HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        slow.push(s);
    }
    // 500 idle connections that never send anything.
    let mut idle = Vec::new();
    for _ in 0..500 {
        idle.push(TcpStream::connect(("127.0.0.1", api)).unwrap());
    }
    std::thread::sleep(Duration::from_millis(500));

    // Scrapes still succeed, quickly, and events still arrive within 100 ms.
    let t = Instant::now();
    let (code, metrics) = http_get(metrics_port, "/metrics").expect("scrape under flood");
    let scrape = t.elapsed();
    assert_eq!(code, 200);
    assert!(scrape < Duration::from_secs(1), "scrape took {scrape:?}");
    let mut lat = Vec::new();
    for _ in 0..5 {
        let (l, c) = event_delay(metrics_port);
        lat.push(l);
        keep.push(c);
    }
    lat.sort();
    eprintln!("event-to-metrics delay: baseline {baseline:?}, under flood {lat:?}");
    assert!(lat[2] < Duration::from_millis(100), "median {:?}", lat[2]);

    // The caps held and were counted (defaults: 128 connections, 32 subscribers).
    let get = |name: &str, labels: &str| {
        let prefix = format!("{name}{{{labels}}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name}{{{labels}}}:\n{metrics}"))
    };
    assert_eq!(
        get("tcpwatch_http_stream_subscribers", "listener=\"api\""),
        32
    );
    assert_eq!(get("tcpwatch_http_connections", "listener=\"api\""), 128);
    assert_eq!(
        get(
            "tcpwatch_http_rejected_total",
            "listener=\"api\",reason=\"stream_subscribers\""
        ),
        68
    );
    assert_eq!(
        get(
            "tcpwatch_http_rejected_total",
            "listener=\"api\",reason=\"connections\""
        ),
        472
    );
    assert_eq!(
        get(
            "tcpwatch_http_rejected_total",
            "listener=\"metrics\",reason=\"connections\""
        ),
        0
    );
    drop((slow, idle, keep));
    drop(d);
}
