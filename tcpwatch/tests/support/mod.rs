//! Helpers for the privileged integration tests: network namespaces the tests create and
//! remove, sockets made inside them, `ss` ground truth, and running the real binary.
#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

pub mod alertmanager;
pub mod prom_alerts;
pub mod prometheus;
pub mod proofs;

use std::fs::File;
use std::net::{SocketAddr, TcpStream};

use socket2::{Domain, Socket, Type};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_tcpwatch");

/// True when the tests may run. Not root: a loud skip, except in CI where it is a failure
/// (privileged tests must never be skipped silently there).
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

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A network namespace created for one test, removed on drop.
pub struct Netns {
    pub name: String,
    pub inode: u64,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        let name = format!(
            "twt-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        let inode = std::fs::metadata(format!("/run/netns/{name}"))
            .unwrap()
            .ino();
        Self { name, inode }
    }

    /// Runs `f` on a thread that has entered this namespace: sockets it creates live here.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let fd = File::open(&path).unwrap();
            // SAFETY: valid fd; affects only this short-lived thread.
            let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    }

    pub fn exec(&self, cmd: &str, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", &self.name, cmd];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec("sysctl", &["-q", "-w", &format!("{key}={value}")]);
    }

    /// Drops every packet to or from `port` on arrival (a peer that vanished without FIN or
    /// RST). Dropping on the input hook matters: an output drop is a local transmit failure,
    /// which the sender handles differently (no RTO retransmissions).
    pub fn blackhole_port(&self, port: u16) {
        let rules = format!(
            "add table inet twt\n\
             add chain inet twt in {{ type filter hook input priority 0; }}\n\
             add rule inet twt in tcp dport {port} drop\n\
             add rule inet twt in tcp sport {port} drop\n"
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), rules.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success(), "nft failed");
    }
}

/// A listening socket on 127.0.0.1 (ephemeral port) created inside `ns`.
pub fn listener(ns: &Netns, backlog: i32) -> (Socket, SocketAddr) {
    ns.enter(move || {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        s.listen(backlog).unwrap();
        let addr = s.local_addr().unwrap().as_socket().unwrap();
        (s, addr)
    })
}

/// A client connection from inside `ns` to `addr`.
pub fn connect(ns: &Netns, addr: SocketAddr) -> TcpStream {
    ns.enter(move || TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap())
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A socket as `ss -tani` reports it.
#[derive(Debug, Clone)]
pub struct SsRow {
    pub state: String,
    pub recv_q: u32,
    pub send_q: u32,
    pub local: SocketAddr,
    pub peer: String,
    pub info: String,
}

impl SsRow {
    /// A `key:value` field of the info line, e.g. `backoff`.
    pub fn field(&self, key: &str) -> Option<String> {
        self.info.split_whitespace().find_map(|w| {
            w.strip_prefix(key)
                .and_then(|r| r.strip_prefix(':'))
                .map(str::to_owned)
        })
    }
}

/// `ss -tani` inside a namespace, parsed.
pub fn ss(ns: &Netns) -> Vec<SsRow> {
    parse_ss(&ns.exec("ss", &["-tanieH"]))
}

pub fn parse_ss(text: &str) -> Vec<SsRow> {
    let mut rows: Vec<SsRow> = Vec::new();
    for line in text.lines() {
        if line.starts_with(|c: char| c.is_whitespace()) {
            if let Some(last) = rows.last_mut() {
                last.info.push_str(line.trim());
                last.info.push(' ');
            }
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 {
            continue;
        }
        let Ok(local) = f[3].replace('*', "0.0.0.0").parse() else {
            continue;
        };
        rows.push(SsRow {
            state: f[0].to_owned(),
            recv_q: f[1].parse().unwrap_or(0),
            send_q: f[2].parse().unwrap_or(0),
            local,
            peer: f[4].to_owned(),
            info: f[5..].join(" ") + " ",
        });
    }
    rows
}

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

/// The connections of one namespace (by inode) in a snapshot or API answer.
pub fn conns_in(v: &Value, netns_inode: u64) -> Vec<Value> {
    let list = v
        .get("connections")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    list.into_iter()
        .filter(|c| c["netns"]["inode"].as_u64() == Some(netns_inode))
        .collect()
}

pub fn find<'a>(
    conns: &'a [Value],
    state: &str,
    local: &SocketAddr,
    remote: Option<&SocketAddr>,
) -> Option<&'a Value> {
    conns.iter().find(|c| {
        c["state"] == state
            && c["local"] == local.to_string()
            && remote.is_none_or(|r| c["remote"] == r.to_string())
    })
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

/// A daemon started by a test, killed on drop (its pin directory is removed too).
pub struct Daemon {
    pub child: Child,
    pub port: u16,
    pub pin_dir: String,
    pub extra: Vec<String>,
}

impl Daemon {
    /// Starts a daemon with `--set` overrides and a pin directory of its own (tests run in
    /// parallel: they must not share kernel state).
    pub fn start(extra_sets: &[&str]) -> Self {
        let pin_dir = format!(
            "/sys/fs/bpf/tcpwatch-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let extra = extra_sets.iter().map(|s| (*s).to_owned()).collect();
        Self::start_with(pin_dir, free_port(), extra)
    }

    fn start_with(pin_dir: String, port: u16, extra: Vec<String>) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.arg("daemon").arg("--pin-dir").arg(&pin_dir);
        cmd.arg("--set")
            .arg(format!("daemon.listen=\"127.0.0.1:{port}\""));
        for s in &extra {
            cmd.arg("--set").arg(s);
        }
        // Daemon logs at `warn` unless the test run asks for more (TCPWATCH_LOG=info).
        if std::env::var_os("TCPWATCH_LOG").is_none() {
            cmd.env("TCPWATCH_LOG", "warn");
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let d = Self {
            child,
            port,
            pin_dir,
            extra,
        };
        let ready = wait_for(Duration::from_secs(20), || {
            (http_get(d.port, "/readyz").map(|(s, _)| s) == Some(200)).then_some(())
        });
        assert!(ready.is_some(), "daemon not ready within 20 s");
        d
    }

    /// `kill -9` and start again with the same pin directory and settings.
    pub fn kill9_and_restart(mut self) -> Self {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let pin_dir = std::mem::take(&mut self.pin_dir);
        let extra = std::mem::take(&mut self.extra);
        let port = self.port;
        std::mem::forget(self);
        Self::start_with(pin_dir, port, extra)
    }

    /// `kill -9`, run `meanwhile` (things happen while no program is attached), then start
    /// again with the same pin directory and settings.
    pub fn kill9_and_restart_after(mut self, meanwhile: impl FnOnce()) -> Self {
        let _ = self.child.kill();
        let _ = self.child.wait();
        meanwhile();
        self.kill9_and_restart()
    }

    pub fn get_json(&self, path: &str) -> Value {
        let (status, body) = http_get(self.port, path).unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Minimal HTTP/1.1 GET on loopback: (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default();
    let body = if buf
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(&body)
    } else {
        body
    };
    Some((status, body))
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}
