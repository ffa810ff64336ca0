//! A real Prometheus (Debian's `prometheus`) on a loopback port, scraping one daemon every
//! second and evaluating the SHIPPED rules with their `for:` durations scaled by one knob
//! ([`scale_for`]); killed, and its data directory removed, on drop. Its alerts API is read
//! with every state (`pending` and `firing`).
use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{free_port, http_get, wait_for};

pub const BIN: &str = "prometheus";
pub const RULES: &str = "deploy/prometheus/tcpwatch-rules.yml";

/// Whether the binary is installed. Missing: a loud skip, except in CI (`cargo xtask setup
/// --test-deps` installs it there).
pub fn available() -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(BIN).is_file()));
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{BIN} is not installed (cargo xtask setup --test-deps)"
        );
        eprintln!("\n!!!!!!!! SKIPPED: {BIN} is not installed !!!!!!!!\n");
    }
    found
}

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

pub struct Prometheus {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts it with `rules` (the text of a rule file), scraping `127.0.0.1:<daemon_port>` as
    /// job `tcpwatch` every second, evaluating every second; waits for `/-/ready`.
    pub fn start(rules: &str, daemon_port: u16) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("tcpwatch-prom-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("rules.yml"), rules).unwrap();
        let cfg = dir.join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - rules.yml\n\
                 scrape_configs:\n  - job_name: tcpwatch\n    static_configs:\n      \
                 - targets: ['127.0.0.1:{daemon_port}']\n"
            ),
        )
        .unwrap();
        let log = File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(BIN)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{BIN}: {e}"));
        let mut p = Self { child, port, dir };
        let ready = wait_for(Duration::from_mins(1), || {
            if let Ok(Some(st)) = p.child.try_wait() {
                panic!("{BIN} exited with {st}:\n{}", p.log_tail());
            }
            (http_get(port, "/-/ready").map(|x| x.0) == Some(200)).then_some(())
        });
        assert!(ready.is_some(), "{BIN} not ready:\n{}", p.log_tail());
        p
    }

    /// Every alert of `/api/v1/alerts` (`labels`, `state`, `activeAt`, ...).
    pub fn alerts(&self) -> Vec<Value> {
        let Some((200, body)) = http_get(self.port, "/api/v1/alerts") else {
            return Vec::new();
        };
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        v["data"]["alerts"].as_array().cloned().unwrap_or_default()
    }

    /// The labels of every firing alert.
    pub fn firing(&self) -> Vec<Value> {
        self.alerts()
            .into_iter()
            .filter(|a| a["state"] == "firing")
            .map(|a| a["labels"].clone())
            .collect()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- prometheus log (last lines) ----\n{}", self.log_tail());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
