//! Helpers shared by tcpwatch's privileged integration tests (`tcpwatch/tests`), the bench
//! (`cargo xtask bench`) and the vm-test runner (`tcpwatch-vmtest`): network namespaces the
//! caller creates and removes, sockets made inside them, `ss` ground truth, an HTTP client
//! (ureq), readers of the daemon's answers and metrics, and processes (the daemon, Prometheus,
//! Alertmanager) killed on drop.
//!
//! Two styles live side by side. What the bench and vm-test use returns `Result` (they run
//! as programs and must clean up and report). What only tests use panics on failure (a panic
//! is a failed test, with the message saying what failed): those modules allow `unwrap`.

pub mod metrics;
pub mod netns;
pub mod pki;
pub mod process;
pub mod snapshot;
pub mod ss;
pub mod webhook;

#[cfg(feature = "http")]
pub mod alertmanager;
#[cfg(feature = "http")]
pub mod daemon;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "http")]
pub mod prometheus;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// True when the privileged tests may run. Not root: a loud skip, except in CI where it is a
/// failure (privileged tests must never be skipped silently there).
#[must_use]
pub fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "privileged integration tests need root and CI must run them as root"
    );
    eprintln!(
        "\n!!!!!!!! SKIPPED: privileged tcpwatch integration test (not root). \
         Run `sudo cargo xtask test` to execute it. !!!!!!!!\n"
    );
    false
}

/// Polls `f` every 20 ms until it returns Some, for at most `limit`.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if t0.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A free TCP port on 127.0.0.1 (of the caller's namespace).
pub fn try_free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")
        .context("bind 127.0.0.1:0 for a free port")?
        .local_addr()?
        .port())
}

/// [`try_free_port`] for tests: panics when there is none.
#[must_use]
pub fn free_port() -> u16 {
    try_free_port().unwrap_or_else(|e| panic!("{e:#}"))
}

/// Runs a command quietly (stdin closed); its stdout, or an error naming it with its stderr.
pub fn try_run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// [`try_run`] for tests: panics when the command fails.
#[allow(
    clippy::must_use_candidate,
    reason = "run for its effect: callers often ignore the output"
)]
pub fn run(program: &str, args: &[&str]) -> String {
    try_run(program, args).unwrap_or_else(|e| panic!("{e:#}"))
}

/// The first file named `name` in a `PATH` directory (`/usr/sbin:/usr/bin:/sbin:/bin` when
/// `PATH` is unset, as in a VM's `/init`).
#[must_use]
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether a tool a test needs is installed. Missing: a loud skip, except in CI (`cargo
/// xtask setup --test-deps` installs the tools there), where it is a failure.
#[must_use]
pub fn installed(tool: &str) -> bool {
    if find_program(tool).is_some() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{tool} is not installed (cargo xtask setup --test-deps)"
    );
    eprintln!("\n!!!!!!!! SKIPPED: {tool} is not installed !!!!!!!!\n");
    false
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; panics when the hard limit is below
/// `need` (the test could not open its descriptors).
pub fn raise_fd_limit(need: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid rlimit out-pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) };
    assert!(
        lim.rlim_max >= need,
        "hard fd limit {} too low",
        lim.rlim_max
    );
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: raising the soft limit up to the hard limit is always allowed.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) };
}
