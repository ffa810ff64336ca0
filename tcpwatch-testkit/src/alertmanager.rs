//! A real Alertmanager (Debian's `prometheus-alertmanager`) on a loopback port with a
//! temporary storage directory, killed and removed on drop.
use std::time::Duration;

use serde_json::Value;

use crate::process::{Service, TempDir};
use crate::{free_port, http::http_get};

pub const BIN: &str = "prometheus-alertmanager";

/// How long Alertmanager may take to become ready.
const READY: Duration = Duration::from_mins(1);

/// A configuration with one receiver that sends nowhere (the test reads `/api/v2/alerts`).
pub const NO_RECEIVER: &str =
    "route:\n  receiver: none\n  group_by: ['alertname']\nreceivers:\n  - name: none\n";

/// A configuration that groups by alertname, flushes every second and sends every
/// notification, resolved ones too, to the webhook on `hook_port`.
#[must_use]
pub fn webhook_config(hook_port: u16) -> String {
    format!(
        "route:\n  receiver: hook\n  group_by: ['alertname']\n  group_wait: 1s\n  \
         group_interval: 1s\n  repeat_interval: 1h\n\
         receivers:\n  - name: hook\n    webhook_configs:\n      - url: 'http://127.0.0.1:{hook_port}/'\n        \
         send_resolved: true\n"
    )
}

pub struct Alertmanager {
    // Field order: the process stops before its directory is removed.
    svc: Service,
    pub port: u16,
    _dir: TempDir,
}

impl Alertmanager {
    /// Whether the binary is installed (a loud skip when not; a failure in CI).
    #[must_use]
    pub fn available() -> bool {
        crate::installed(BIN)
    }

    /// Starts it with [`NO_RECEIVER`].
    #[must_use]
    pub fn start() -> Self {
        Self::with_config(NO_RECEIVER)
    }

    /// Starts it with `config` as `alertmanager.yml`, clustering off; waits for `/-/ready`.
    #[must_use]
    pub fn with_config(config: &str) -> Self {
        let port = free_port();
        let dir = TempDir::new(&format!("am-{port}"));
        let cfg = dir.write("alertmanager.yml", config);
        std::fs::create_dir_all(dir.path("data"))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.s("data")));
        let mut svc = Service::start(
            "alertmanager",
            BIN,
            &[
                format!("--config.file={}", cfg.display()),
                format!("--storage.path={}", dir.path("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--cluster.listen-address=".to_owned(),
            ],
            dir.path("alertmanager.log"),
        );
        svc.wait_ready(port, READY);
        Self {
            svc,
            port,
            _dir: dir,
        }
    }

    /// `url` for the daemon's `alertmanager.url`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Active alerts (`GET /api/v2/alerts`; resolved alerts are not listed).
    #[must_use]
    pub fn alerts(&self) -> Vec<Value> {
        let Some((200, body)) = http_get(self.port, "/api/v2/alerts") else {
            return Vec::new();
        };
        serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    #[must_use]
    pub fn log_tail(&self) -> String {
        self.svc.log_tail()
    }
}
