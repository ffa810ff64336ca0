//! A real Alertmanager (Debian's `prometheus-alertmanager`) on a loopback port with a
//! temporary storage directory, killed and removed on drop.
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{free_port, http_get, wait_for};

pub const BIN: &str = "prometheus-alertmanager";

pub struct Alertmanager {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Alertmanager {
    /// Whether the binary is installed. Missing: a loud skip, except in CI (`cargo xtask
    /// setup --test-deps` installs it there).
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

    /// Starts it with one receiver that sends nowhere (the test reads `/api/v2/alerts`).
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tcpwatch-am-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let cfg = dir.join("alertmanager.yml");
        std::fs::write(
            &cfg,
            "route:\n  receiver: none\n  group_by: ['alertname']\nreceivers:\n  - name: none\n",
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("log")).unwrap();
        let child = Command::new(BIN)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{BIN}: {e}"));
        let mut am = Self { child, port, dir };
        let ready = wait_for(Duration::from_secs(30), || {
            if let Ok(Some(st)) = am.child.try_wait() {
                panic!("{BIN} exited with {st}: {}", am.log());
            }
            (http_get(port, "/-/ready").map(|x| x.0) == Some(200)).then_some(())
        });
        assert!(ready.is_some(), "{BIN} not ready in 30 s: {}", am.log());
        am
    }

    /// `url` for the daemon's `alertmanager.url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Active alerts (`GET /api/v2/alerts`; resolved alerts are not listed).
    pub fn alerts(&self) -> Vec<Value> {
        let Some((200, body)) = http_get(self.port, "/api/v2/alerts") else {
            return Vec::new();
        };
        serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- alertmanager log ----\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
