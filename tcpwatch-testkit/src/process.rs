//! Processes and files a test makes: a temporary directory removed on drop, a command that
//! must succeed, and a service (Prometheus, Alertmanager, ...) killed on drop, whose log is
//! printed when the test fails.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
#[cfg(feature = "http")]
use std::time::Duration;

/// A temporary directory `tcpwatch-<tag>-<pid>-<ns>`, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    #[must_use]
    pub fn new(tag: &str) -> Self {
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

    #[must_use]
    pub fn root(&self) -> &Path {
        &self.0
    }

    /// The path of `name` in the directory.
    #[must_use]
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// [`TempDir::path`] as a string.
    #[must_use]
    pub fn s(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// Writes `text` to `name`; its path.
    #[allow(
        clippy::must_use_candidate,
        reason = "run for its effect: callers often ignore the output"
    )]
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
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

/// Runs `cmd`; panics with its output unless it succeeds.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A process started by a test, its stdout and stderr in a log file: killed on drop; the
/// last lines of its log are printed if the test fails.
pub struct Service {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Service {
    /// Starts `bin args` (stdin closed) logging to `log`. Panics if it cannot start.
    #[must_use]
    pub fn start(name: &str, bin: &str, args: &[String], log: PathBuf) -> Self {
        let out = File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("{bin}: {e} (cargo xtask setup --test-deps)"));
        Self {
            name: name.to_owned(),
            child,
            log,
        }
    }

    /// The exit status if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for `GET /-/ready` on `port` to answer 200; panics if the process exits first
    /// or is not ready within `limit`.
    #[cfg(feature = "http")]
    pub fn wait_ready(&mut self, port: u16, limit: Duration) {
        let ok = crate::wait_for(limit, || {
            if let Some(st) = self.exited() {
                panic!("{} exited with {st}:\n{}", self.name, self.log_tail());
            }
            crate::http::ready(port).then_some(())
        });
        assert!(
            ok.is_some(),
            "{} not ready within {limit:?}:\n{}",
            self.name,
            self.log_tail()
        );
    }

    /// The last 40 lines of its log.
    #[must_use]
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- {} log (last lines) ----\n{}",
                self.name,
                self.log_tail()
            );
        }
    }
}
