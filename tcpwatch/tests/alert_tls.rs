//! The daemon's push to Alertmanagers that need more than plain HTTP (root, real servers):
//!
//! - one served over TLS (`--web.config.file` with `tls_server_config`) with a certificate
//!   signed by a CA this test makes with the `openssl` CLI: the daemon trusts it through
//!   `alertmanager.ca_file`;
//! - one with `basic_auth_users` (a bcrypt hash): the daemon sends
//!   `alertmanager.basic_auth_user` and the password from `alertmanager.basic_auth_password_file`.
//!
//! A `CLOSE_WAIT` leak in a namespace of the test is one incident; its alert must appear in each
//! Alertmanager's own API (queried with the CA, with the credentials). A third daemon with a
//! wrong password, and a fourth without the CA, must count their pushes as failed
//! (`tcpwatch_alertmanager_alerts_failed_total`) and log one clear error naming the URL, the
//! cause and the keys to check, never the password.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is a panic with its context"
)]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    Netns, TempDir, connect, free_port, http_get, installed, listener, privileged, wait_for,
};

const ALERTMANAGER: &str = "prometheus-alertmanager";
/// Bound of every wait on an external effect.
const WAIT: Duration = Duration::from_mins(1);
const USER: &str = "tcpwatch";
const PASSWORD: &str = "right-horse-battery";
const WRONG_PASSWORD: &str = "wrong-staple-4711";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`ca.pem`) and a server certificate for 127.0.0.1 signed by it (`server.pem`,
/// `server.key`), all P-256.
fn make_ca_and_server_cert(tmp: &TempDir) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "1",
        "-subj",
        "/CN=tcpwatch test CA",
    ];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(tmp.root(), &ca);
    let mut csr = vec!["req", "-new", "-subj", "/CN=127.0.0.1"];
    csr.extend(ec);
    csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(tmp.root(), &csr);
    tmp.write(
        "server.ext",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    );
    openssl(
        tmp.root(),
        &[
            "x509",
            "-req",
            "-days",
            "1",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
}

/// A real Alertmanager on a loopback port with a web configuration, and the client that
/// reaches it (with the test CA, or with the credentials).
struct Am {
    child: Child,
    port: u16,
    name: &'static str,
    log: PathBuf,
    https: bool,
    agent: ureq::Agent,
    auth: Option<String>,
}

impl Am {
    fn start(tmp: &TempDir, name: &'static str, web_config: &str, https: bool) -> Self {
        let dir = tmp.path(name);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let cfg = tmp.write(
            &format!("{name}.yml"),
            "route:\n  receiver: none\n  group_by: ['alertname']\nreceivers:\n  - name: none\n",
        );
        let web = tmp.write(&format!("{name}-web.yml"), web_config);
        let port = free_port();
        let log = tmp.path(&format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(ALERTMANAGER)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--web.config.file={}", web.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut tls = ureq::tls::TlsConfig::builder().provider(ureq::tls::TlsProvider::Rustls);
        if https {
            let pem = std::fs::read(tmp.path("ca.pem")).unwrap();
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|i| match i {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c.to_owned()),
                    _ => None,
                })
                .collect();
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let agent = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .proxy(None)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        Self {
            child,
            port,
            name,
            log,
            https,
            agent,
            auth: None,
        }
    }

    fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `GET path` with this Alertmanager's CA and credentials: (status, body).
    fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut req = self.agent.get(&format!("{}{path}", self.url()));
        if let Some(a) = &self.auth {
            req = req.header("authorization", a);
        }
        let mut resp = req.call().ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.body_mut().read_to_string().ok()?))
    }

    fn wait_ready(&mut self) {
        let ready = wait_for(Duration::from_secs(30), || {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("{} exited with {st}: {}", self.name, self.log_text());
            }
            (self.get("/-/ready").map(|x| x.0) == Some(200)).then_some(())
        });
        assert!(
            ready.is_some(),
            "{} not ready in 30 s: {}",
            self.name,
            self.log_text()
        );
    }

    /// Active alerts in `/api/v2/alerts`.
    fn alerts(&self) -> Vec<Value> {
        let Some((200, body)) = self.get("/api/v2/alerts") else {
            return Vec::new();
        };
        serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Am {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- {} log ----\n{}", self.name, self.log_text());
        }
    }
}

/// A daemon of this test whose log (stderr, `warn` and above) goes to a file.
struct LoggedDaemon {
    child: Child,
    port: u16,
    pin_dir: String,
    log: PathBuf,
}

impl LoggedDaemon {
    fn start(tmp: &TempDir, name: &str, sets: &[String]) -> Self {
        let port = free_port();
        let pin_dir = format!(
            "/sys/fs/bpf/tcpwatch-test-{}-alert-tls-{name}",
            std::process::id()
        );
        let log = tmp.path(&format!("daemon-{name}.log"));
        let mut cmd = Command::new(support::BIN);
        cmd.arg("daemon").arg("--pin-dir").arg(&pin_dir);
        cmd.arg("--set")
            .arg(format!("daemon.listen=\"127.0.0.1:{port}\""));
        for s in sets {
            cmd.arg("--set").arg(s);
        }
        let child = cmd
            .env("TCPWATCH_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut d = Self {
            child,
            port,
            pin_dir,
            log,
        };
        let ready = wait_for(Duration::from_secs(20), || {
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!("daemon {name} exited with {st}: {}", d.log_text());
            }
            (http_get(d.port, "/readyz").map(|(s, _)| s) == Some(200)).then_some(())
        });
        assert!(ready.is_some(), "daemon {name} not ready within 20 s");
        d
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A counter of the daemon's `/metrics` (0 when absent).
    fn counter(&self, name: &str) -> u64 {
        let (_, body) = http_get(self.port, "/metrics").unwrap();
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for LoggedDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.pin_dir);
        if std::thread::panicking() {
            eprintln!(
                "---- daemon log {} ----\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// The daemon's incident alert about the `CLOSE_WAIT` leak on `port` in the test namespace.
fn leak_alert(alerts: &[Value], netns: u64, port: u16) -> Option<Value> {
    alerts
        .iter()
        .find(|a| {
            let l = &a["labels"];
            l["alertname"] == "TcpwatchIncident"
                && l["kind"] == "close_wait_leak"
                && l["netns"].as_str() == Some(&*netns.to_string())
                && l["port"].as_str() == Some(&*port.to_string())
        })
        .cloned()
}

/// The Alertmanager served over TLS (the test CA's certificate) and the one with basic auth,
/// both ready and reached with the CA / the credentials.
fn start_alertmanagers(tmp: &TempDir) -> (Am, Am) {
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let tls_web = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
        tmp.path("server.pem").display(),
        tmp.path("server.key").display()
    );
    let mut am_tls = Am::start(tmp, "am-tls", &tls_web, true);
    let auth_web = format!("basic_auth_users:\n  {USER}: '{hash}'\n");
    let mut am_auth = Am::start(tmp, "am-auth", &auth_web, false);
    am_tls.wait_ready();
    am_auth.auth = Some(format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{USER}:{PASSWORD}")
        )
    ));
    am_auth.wait_ready();
    // Without credentials it refuses: the web configuration is in force.
    let creds = am_auth.auth.take();
    assert_eq!(am_auth.get("/-/ready").map(|x| x.0), Some(401));
    am_auth.auth = creds;
    // Plain HTTP to the TLS one does not get alerts through.
    assert_ne!(
        http_get(am_tls.port, "/-/ready").map(|x| x.0),
        Some(200),
        "the TLS Alertmanager answered plain HTTP"
    );

    (am_tls, am_auth)
}

/// A daemon whose pushes `am` refuses: counted as failed (none sent), logged once per
/// failure streak with the URL and every one of `wants` (the cause, the keys to check).
fn check_refused(d: &LoggedDaemon, am: &Am, wants: &[&str]) {
    let failed = wait_for(WAIT, || {
        let n = d.counter("tcpwatch_alertmanager_alerts_failed_total");
        (n >= 2).then_some(n)
    });
    assert!(
        failed.is_some(),
        "no failed push counted by daemon {}: {}",
        d.log.display(),
        d.log_text()
    );
    assert_eq!(d.counter("tcpwatch_alertmanager_alerts_sent_total"), 0);
    let log = d.log_text();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("cannot push alerts to alertmanager"))
        .collect();
    assert_eq!(refused.len(), 1, "logged once per failure streak: {log}");
    let line = refused[0];
    eprintln!("refused as expected: {line}");
    let post_url = format!("{}/api/v2/alerts", am.url());
    for want in [post_url.as_str()].iter().chain(wants) {
        assert!(line.contains(want), "{want:?} not in {line}");
    }
}

#[test]
fn daemon_pushes_to_alertmanager_over_tls_and_with_basic_auth() {
    if !privileged() || !installed(ALERTMANAGER) || !installed("openssl") {
        return;
    }
    let t0 = Instant::now();
    let tmp = TempDir::new("alert-tls");
    make_ca_and_server_cert(&tmp);

    let (am_tls, am_auth) = start_alertmanagers(&tmp);

    let pw = tmp.write("password", &format!("{PASSWORD}\n"));
    let wrong = tmp.write("wrong-password", WRONG_PASSWORD);
    let common = [
        "detectors.close_wait.threshold_seconds=2".to_owned(),
        "daemon.sweep_interval_ms=500".to_owned(),
        "alertmanager.resend_interval_ms=1000".to_owned(),
    ];
    let with = |extra: &[String]| -> Vec<String> { common.iter().chain(extra).cloned().collect() };
    let d_tls = LoggedDaemon::start(
        &tmp,
        "tls",
        &with(&[
            format!("alertmanager.url=\"{}\"", am_tls.url()),
            format!("alertmanager.ca_file=\"{}\"", tmp.path("ca.pem").display()),
        ]),
    );
    let auth_sets = |file: &Path| {
        with(&[
            format!("alertmanager.url=\"{}\"", am_auth.url()),
            format!("alertmanager.basic_auth_user=\"{USER}\""),
            format!(
                "alertmanager.basic_auth_password_file=\"{}\"",
                file.display()
            ),
        ])
    };
    let d_auth = LoggedDaemon::start(&tmp, "auth", &auth_sets(&pw));
    let d_wrong = LoggedDaemon::start(&tmp, "wrong", &auth_sets(&wrong));
    // Without the CA, the TLS Alertmanager's certificate is not trusted.
    let d_untrusted = LoggedDaemon::start(
        &tmp,
        "untrusted",
        &with(&[format!("alertmanager.url=\"{}\"", am_tls.url())]),
    );
    eprintln!("alertmanagers and daemons up after {:?}", t0.elapsed());

    // One incident: an application that leaks five CLOSE_WAIT sockets on its port.
    let ns = Netns::new("alerttls");
    let (l, addr) = listener(&ns, 16);
    let mut leaked = Vec::new();
    for _ in 0..5 {
        let c = connect(&ns, addr);
        leaked.push(l.accept().unwrap().0);
        drop(c);
    }
    let t_incident = Instant::now();

    for (am, d) in [(&am_tls, &d_tls), (&am_auth, &d_auth)] {
        // The incident may open with fewer members and grow to the five (sent again with
        // each update and re-send).
        let got = wait_for(WAIT, || {
            leak_alert(&am.alerts(), ns.inode, addr.port())
                .filter(|a| a["annotations"]["members"] == "5")
        });
        let alert = got.unwrap_or_else(|| {
            panic!(
                "no TcpwatchIncident close_wait_leak of 5 members for port {} in {} within \
                 {WAIT:?}: {:?}\n\
                 daemon log: {}\nincidents: {:?}",
                addr.port(),
                am.name,
                am.alerts(),
                d.log_text(),
                http_get(d.port, "/api/v1/incidents")
            )
        });
        assert_eq!(alert["annotations"]["members"], "5", "{alert}");
        assert!(d.counter("tcpwatch_alertmanager_alerts_sent_total") >= 1);
        assert_eq!(
            d.counter("tcpwatch_alertmanager_alerts_failed_total"),
            0,
            "{}",
            d.log_text()
        );
        eprintln!("{}: alert after {:?}", am.name, t_incident.elapsed());
    }

    check_refused(
        &d_wrong,
        &am_auth,
        &["answered 401", "alertmanager.basic_auth_password_file"],
    );
    check_refused(
        &d_untrusted,
        &am_tls,
        &["certificate", "check alertmanager.ca_file"],
    );
    for d in [&d_wrong, &d_auth, &d_tls, &d_untrusted] {
        let log = d.log_text();
        for secret in [WRONG_PASSWORD, PASSWORD] {
            assert!(!log.contains(secret), "a password in {}", d.log.display());
        }
    }
    drop(leaked);
    drop(l);
    eprintln!("total {:?}", t0.elapsed());
}
