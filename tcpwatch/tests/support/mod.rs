//! What the privileged integration tests share beyond `tcpwatch-testkit` (namespaces,
//! sockets, `ss`, HTTP, metric readers, Prometheus and Alertmanager, re-exported here): the
//! `tcpwatch` binary of this build and the daemon started from it.
#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

pub mod bpf;
pub mod prom_alerts;
pub mod proofs;

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

#[allow(unused_imports, reason = "each test binary uses a different subset")]
pub use tcpwatch_testkit::http::http_get;
#[allow(unused_imports, reason = "each test binary uses a different subset")]
pub use tcpwatch_testkit::netns::{
    Netns, connect, exchange_once, fill_send_buffer, listener, listener_at, nstat, nstat_all,
    spawn_in, unaccepted_sockets,
};
#[allow(unused_imports, reason = "each test binary uses a different subset")]
pub use tcpwatch_testkit::process::{Service, TempDir, run_ok};
#[allow(unused_imports, reason = "each test binary uses a different subset")]
pub use tcpwatch_testkit::snapshot::{conns_in, find, finding_at, finding_to};
#[allow(unused_imports, reason = "each test binary uses a different subset")]
pub use tcpwatch_testkit::ss::{SsRow, parse_ss, ss};
#[allow(unused_imports, reason = "each test binary uses a different subset")]
pub use tcpwatch_testkit::{
    alertmanager, daemon, free_port, http, installed, metrics, pki, privileged, prometheus,
    raise_fd_limit, run, wait_for, webhook,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_tcpwatch");

/// `tcpwatch snapshot --json`, parsed.
pub fn snapshot(extra: &[&str]) -> Value {
    let out = Command::new(BIN)
        .arg("snapshot")
        .arg("--json")
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "snapshot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A daemon of this build's binary ([`BIN`]), see [`daemon::Daemon`] (everything else of it
/// is reached through `Deref`).
pub struct Daemon(daemon::Daemon);

impl Daemon {
    /// Starts a daemon with `--set` overrides and a pin directory of its own.
    pub fn start(extra_sets: &[&str]) -> Self {
        Self(daemon::Daemon::start(Path::new(BIN), extra_sets))
    }

    /// Wraps a daemon started with [`daemon::Daemon::spawn`].
    pub fn from_kit(d: daemon::Daemon) -> Self {
        Self(d)
    }

    /// `kill -9` and start again with the same pin directory and settings.
    pub fn kill9_and_restart(self) -> Self {
        Self(self.0.kill9_and_restart())
    }

    /// `kill -9` and start again with the same pin directory and settings plus `args`, on a
    /// new port.
    pub fn kill9_and_restart_with_args(self, args: &[&str]) -> Self {
        Self(self.0.kill9_and_restart_with_args(args))
    }

    /// A daemon restarted with a one-page ring buffer (about 30 events; floods overflow it)
    /// on the pin directory of a first, normal start with `sets`.
    pub fn with_tiny_ring(sets: &[&str]) -> Self {
        Self::start(sets).kill9_and_restart_with_args(&["--ringbuf-bytes", "4096"])
    }

    /// `kill -9`, run `meanwhile`, then start again with the same pin directory and settings.
    pub fn kill9_and_restart_after(self, meanwhile: impl FnOnce()) -> Self {
        Self(self.0.kill9_and_restart_after(meanwhile))
    }
}

impl Deref for Daemon {
    type Target = daemon::Daemon;
    fn deref(&self) -> &daemon::Daemon {
        &self.0
    }
}

impl DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut daemon::Daemon {
        &mut self.0
    }
}

/// `n` connections to `addr` from `ns` (server ends accepted from `l`), held until two of
/// `d`'s sweeps have completed, so that a sweep listed them: their state changes (closing
/// them) go out as events. Changes of sockets no sweep has listed are counted in the kernel,
/// not sent, so a flood of short connections no longer fills the ring buffer.
#[allow(dead_code, reason = "each test binary uses a different subset")]
pub fn swept_pairs(
    daemon: &daemon::Daemon,
    ns: &Netns,
    listening: &socket2::Socket,
    addr: std::net::SocketAddr,
    count: usize,
) -> Vec<(std::net::TcpStream, socket2::Socket)> {
    raise_fd_limit(2 * count as u64 + 512);
    let pairs = (0..count)
        .map(|_| {
            let client = connect(ns, addr);
            let (server, _) = listening.accept().unwrap();
            (client, server)
        })
        .collect();
    let sweeps = || {
        daemon.get_json("/api/v1/status")["stats"]["sweeps"]
            .as_u64()
            .unwrap_or(0)
    };
    let s0 = sweeps();
    wait_for(std::time::Duration::from_mins(1), || {
        (sweeps() >= s0 + 2).then_some(())
    })
    .expect("two sweeps list the connections");
    pairs
}
