//! A real tcpwatch daemon started by a test: its own pin directory and API port, killed on
//! drop (its pin directory is removed too), and readers of its API and metrics.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::http::http_get;
use crate::snapshot::{finding_at, finding_to};
use crate::{free_port, metrics, wait_for};

/// How long a daemon may take to answer `/readyz`.
pub const READY: Duration = Duration::from_secs(20);

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A pin directory of its own, `/sys/fs/bpf/tcpwatch-test-<pid>-<tag><n>` (tests run in
/// parallel: they must not share kernel state).
#[must_use]
pub fn pin_dir(tag: &str) -> String {
    format!(
        "/sys/fs/bpf/tcpwatch-test-{}-{tag}{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A daemon started by a test, killed on drop (its pin directory is removed too).
pub struct Daemon {
    pub child: Child,
    /// Port of the API listener on 127.0.0.1.
    pub port: u16,
    pub pin_dir: String,
    /// The `--set` overrides it was started with.
    pub extra: Vec<String>,
    bin: PathBuf,
}

impl Daemon {
    /// Starts `bin daemon` with `--set` overrides, a pin directory and a port of its own;
    /// waits until `/readyz` answers 200.
    #[must_use]
    pub fn start(bin: &Path, sets: &[&str]) -> Self {
        let extra = sets.iter().map(|s| (*s).to_owned()).collect();
        let mut d = Self::spawn(bin, pin_dir(""), free_port(), extra, |_| {});
        d.wait_api_ready();
        d
    }

    /// Spawns `bin daemon --pin-dir <pin_dir> --set daemon.listen=127.0.0.1:<port>` and one
    /// `--set` per `extra`, logging at `warn` unless the run sets `TCPWATCH_LOG`, stderr
    /// inherited; `tweak` may change the command last. Does not wait.
    pub fn spawn(
        bin: &Path,
        pin_dir: String,
        port: u16,
        extra: Vec<String>,
        tweak: impl FnOnce(&mut Command),
    ) -> Self {
        let mut cmd = Command::new(bin);
        cmd.arg("daemon").arg("--pin-dir").arg(&pin_dir);
        cmd.arg("--set")
            .arg(format!("daemon.listen=\"127.0.0.1:{port}\""));
        for s in &extra {
            cmd.arg("--set").arg(s);
        }
        if std::env::var_os("TCPWATCH_LOG").is_none() {
            cmd.env("TCPWATCH_LOG", "warn");
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
        tweak(&mut cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
        Self {
            child,
            port,
            pin_dir,
            extra,
            bin: bin.to_owned(),
        }
    }

    /// Polls `ready` until it is true; panics if the daemon exits first or after `limit`.
    pub fn wait_ready(&mut self, limit: Duration, mut ready: impl FnMut() -> bool) {
        let ok = wait_for(limit, || {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("daemon exited: {st}");
            }
            ready().then_some(())
        });
        assert!(ok.is_some(), "daemon not ready within {limit:?}");
    }

    /// Waits until the API's `/readyz` answers 200 (see [`READY`]).
    pub fn wait_api_ready(&mut self) {
        let port = self.port;
        self.wait_ready(READY, || {
            http_get(port, "/readyz").is_some_and(|(s, _)| s == 200)
        });
    }

    /// `kill -9` and start again with the same pin directory, port and settings.
    #[must_use]
    pub fn kill9_and_restart(mut self) -> Self {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let pin_dir = std::mem::take(&mut self.pin_dir);
        let extra = std::mem::take(&mut self.extra);
        let mut d = Self::spawn(&self.bin, pin_dir, self.port, extra, |_| {});
        // Dropping the old one now is harmless: it is reaped and its pin directory name is
        // empty, so nothing is removed.
        drop(self);
        d.wait_api_ready();
        d
    }

    /// `kill -9` and start again with the same pin directory and settings plus the daemon
    /// arguments `args` (e.g. `--ringbuf-bytes 4096`), on a new port.
    #[must_use]
    pub fn kill9_and_restart_with_args(mut self, args: &[&str]) -> Self {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let pin_dir = std::mem::take(&mut self.pin_dir);
        let extra = std::mem::take(&mut self.extra);
        let mut d = Self::spawn(&self.bin, pin_dir, free_port(), extra, |cmd| {
            cmd.args(args);
        });
        drop(self);
        d.wait_api_ready();
        d
    }

    /// `kill -9`, run `meanwhile` (things happen while no program is attached), then start
    /// again with the same pin directory and settings.
    #[must_use]
    pub fn kill9_and_restart_after(mut self, meanwhile: impl FnOnce()) -> Self {
        let _ = self.child.kill();
        let _ = self.child.wait();
        meanwhile();
        self.kill9_and_restart()
    }

    /// `GET path` on the API; panics unless it answers 200 with JSON.
    #[must_use]
    pub fn get_json(&self, path: &str) -> Value {
        let (status, body) = http_get(self.port, path).unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// The `/metrics` text of the API listener.
    #[must_use]
    pub fn metrics(&self) -> String {
        http_get(self.port, "/metrics").unwrap().1
    }

    /// The sample `series` of `/metrics` (0 when absent), see [`metrics::sample`].
    #[must_use]
    pub fn metric(&self, series: &str) -> f64 {
        metrics::sample(&self.metrics(), series).unwrap_or(0.0)
    }

    /// The sum of every `/metrics` sample starting with `prefix`, see [`metrics::sum`].
    #[must_use]
    pub fn metric_sum(&self, prefix: &str) -> f64 {
        metrics::sum(&self.metrics(), prefix)
    }

    /// `tcpwatch_sockets_by_netns` of the namespace with inode `inode`, if listed.
    #[must_use]
    pub fn sockets_in_netns(&self, inode: u64) -> Option<f64> {
        let (_, body) = http_get(self.port, "/metrics")?;
        let line = body.lines().find(|l| {
            l.starts_with("tcpwatch_sockets_by_netns{") && l.contains(&format!("netns=\"{inode}\""))
        })?;
        line.rsplit(' ').next()?.parse::<f64>().ok()
    }

    /// `connections` of `/api/v1/connections?<query>`.
    #[must_use]
    pub fn connections(&self, query: &str) -> Vec<Value> {
        self.get_json(&format!("/api/v1/connections?{query}"))["connections"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The open finding of `kind` whose subject's local address is `local`.
    #[must_use]
    pub fn open_finding_at(&self, kind: &str, local: &SocketAddr) -> Option<Value> {
        finding_at(&self.open_findings(), kind, local).cloned()
    }

    /// The open finding of `kind` whose subject's remote endpoint is `remote`.
    #[must_use]
    pub fn open_finding_to(&self, kind: &str, remote: &SocketAddr) -> Option<Value> {
        finding_to(&self.open_findings(), kind, remote).cloned()
    }

    /// The open findings (`open` of `/api/v1/findings`).
    #[must_use]
    pub fn open_findings(&self) -> Vec<Value> {
        self.get_json("/api/v1/findings")["open"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.pin_dir.is_empty() {
            let _ = std::fs::remove_dir_all(&self.pin_dir);
        }
    }
}
