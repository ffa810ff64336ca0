//! Network namespaces made by a test or the bench and removed on drop, threads that run
//! inside them, and listening sockets made there.
#![allow(
    clippy::unwrap_used,
    reason = "the panicking helpers are for tests: a failed unwrap is a failed test"
)]

use std::fs::File;
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use socket2::{Domain, Socket, Type};

use crate::try_run;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A network namespace (`/run/netns/<name>`) with `lo` up, removed on drop.
pub struct Netns {
    pub name: String,
    /// Inode of the namespace: what the daemon reports as `netns.inode`.
    pub inode: u64,
}

impl Netns {
    /// Creates the namespace `name` and brings `lo` up.
    pub fn create(name: String) -> Result<Self> {
        try_run("ip", &["netns", "add", &name])?;
        // From here on, drop removes it.
        let mut ns = Self { name, inode: 0 };
        try_run("ip", &["-n", &ns.name, "link", "set", "lo", "up"])?;
        ns.inode = std::fs::metadata(ns.path())
            .with_context(|| format!("stat {}", ns.path()))?
            .ino();
        Ok(ns)
    }

    /// A namespace of one test, `twt-<tag>-<pid>-<n>` (tests run in parallel). Panics on
    /// failure.
    #[must_use]
    pub fn new(tag: &str) -> Self {
        let name = format!(
            "twt-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        Self::create(name).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// `/run/netns/<name>`.
    #[must_use]
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs `program` inside the namespace (`ip netns exec`); its stdout.
    pub fn try_exec(&self, program: &str, args: &[&str]) -> Result<String> {
        let mut full = vec!["netns", "exec", &self.name, program];
        full.extend_from_slice(args);
        try_run("ip", &full)
    }

    /// [`Netns::try_exec`], panicking on failure.
    #[allow(
        clippy::must_use_candidate,
        reason = "run for its effect: callers often ignore the output"
    )]
    pub fn exec(&self, program: &str, args: &[&str]) -> String {
        self.try_exec(program, args)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// `sysctl -w key=value` inside the namespace. Panics on failure.
    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec("sysctl", &["-q", "-w", &format!("{key}={value}")]);
    }

    /// Loads an nftables ruleset into the namespace.
    pub fn nft(&self, rules: &str) -> Result<()> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start ip netns exec nft")?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(rules.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft failed: {}\nrules:\n{rules}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Drops every packet to or from `port` on arrival (a peer that vanished without FIN or
    /// RST). Dropping on the input hook matters: an output drop is a local transmit failure,
    /// which the sender handles differently (no RTO retransmissions). Panics on failure.
    pub fn blackhole_port(&self, port: u16) {
        let rules = format!(
            "add table inet twt\n\
             add chain inet twt in {{ type filter hook input priority 0; }}\n\
             add rule inet twt in tcp dport {port} drop\n\
             add rule inet twt in tcp sport {port} drop\n"
        );
        self.nft(&rules).unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Runs `f` on a thread that has entered this namespace: sockets it creates live here.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn_in(f).join().unwrap()
    }

    /// Spawns a thread that enters this namespace first: every socket it creates lives
    /// there. Unlike [`Netns::enter`] the thread keeps running (a load generator or a server).
    pub fn spawn_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = self.path();
        std::thread::spawn(move || {
            enter_netns(&path).unwrap_or_else(|e| panic!("{e:#}"));
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdin(Stdio::null())
            .output();
    }
}

/// Moves the calling thread into the namespace at `path` (a thread of its own: the change
/// is for this thread only).
pub fn enter_netns(path: &str) -> Result<()> {
    let f = File::open(path).with_context(|| format!("open {path}"))?;
    // SAFETY: valid fd; changes only the calling thread's network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!("setns {path}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// A listening socket bound to `addr` (IPv4 or IPv6) in the caller's namespace, with an
/// explicit backlog (std always uses 128). `v6only = false` on `[::]` makes a dual-stack
/// listener that accepts IPv4 peers as `::ffff:a.b.c.d`.
pub fn listen_on(
    addr: SocketAddr,
    backlog: i32,
    v6only: bool,
) -> std::io::Result<(Socket, SocketAddr)> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        s.set_only_v6(v6only)?;
    }
    s.bind(&addr.into())?;
    s.listen(backlog)?;
    let local = s
        .local_addr()?
        .as_socket()
        .ok_or_else(|| std::io::Error::other("listener has no IP address"))?;
    Ok((s, local))
}

/// A listening socket on 127.0.0.1 (ephemeral port) created inside `ns`.
#[must_use]
pub fn listener(ns: &Netns, backlog: i32) -> (Socket, SocketAddr) {
    listener_at(ns, "127.0.0.1:0", backlog, false)
}

/// A listening socket bound to `addr` inside `ns` (see [`listen_on`]).
#[must_use]
pub fn listener_at(ns: &Netns, addr: &str, backlog: i32, v6only: bool) -> (Socket, SocketAddr) {
    let addr: SocketAddr = addr.parse().unwrap();
    ns.enter(move || listen_on(addr, backlog, v6only).unwrap())
}

/// A client connection from inside `ns` to `addr`.
#[must_use]
pub fn connect(ns: &Netns, addr: SocketAddr) -> TcpStream {
    ns.enter(move || TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap())
}

/// [`Netns::spawn_in`] as a function.
pub fn spawn_in<T: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    ns.spawn_in(f)
}

/// Every absolute TCP/IP counter of `nstat -asz` in `ns` (nstat's history file untouched),
/// by name. Panics when nstat fails.
#[must_use]
pub fn nstat_all(ns: &Netns) -> std::collections::BTreeMap<String, u64> {
    ns.exec("nstat", &["-asz"])
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_owned(), f.next()?.parse().ok()?))
        })
        .collect()
}

/// One absolute counter of `nstat` (e.g. `TcpOutRsts`) in `ns`, without touching nstat's
/// history file. Panics when it is missing.
#[must_use]
pub fn nstat(ns: &Netns, name: &str) -> u64 {
    let out = ns.exec("nstat", &["-asz", name]);
    out.lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(name)).then(|| f.next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("nstat has no {name}: {out}"))
}

/// Writes to `stream` (made non-blocking) in 64 KiB chunks until the kernel refuses more
/// (`WouldBlock`: the peer does not read and the send buffer is full), at most 10 000
/// chunks; the bytes written.
pub fn fill_send_buffer(stream: &mut TcpStream) -> std::io::Result<usize> {
    stream.set_nonblocking(true)?;
    let chunk = vec![0x5a_u8; 65_536];
    let mut written = 0_usize;
    for _ in 0..10_000 {
        match std::io::Write::write(stream, &chunk) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// In `ns`: `listeners` listeners on 127.0.0.1 (backlog 64) and `clients` connections spread
/// over them, never accepted: `listeners + 2 × clients` sockets, `listeners + clients`
/// descriptors (the server ends wait in the accept queues).
#[must_use]
pub fn unaccepted_sockets(
    ns: &Netns,
    listeners: usize,
    clients: usize,
) -> (Vec<Socket>, Vec<TcpStream>) {
    let (socks, addrs): (Vec<Socket>, Vec<SocketAddr>) = ns.enter(move || {
        (0..listeners)
            .map(|_| listen_on(SocketAddr::from(([127, 0, 0, 1], 0)), 64, false).unwrap())
            .unzip()
    });
    let conns = ns.enter(move || {
        (0..clients)
            .map(|i| TcpStream::connect(addrs[i % addrs.len()]).unwrap())
            .collect()
    });
    (socks, conns)
}

/// One HTTP exchange on an open connection, both ends held by the test: `client` sends
/// `request`, `server` reads it and answers `200 OK` with an empty body, `client` reads the
/// answer (a keep-alive connection, used once and left open).
pub fn exchange_once(client: &mut TcpStream, server: &mut TcpStream, request: &[u8]) {
    const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    client.write_all(request).unwrap();
    let mut buf = vec![0_u8; request.len()];
    std::io::Read::read_exact(server, &mut buf).unwrap();
    server.write_all(ANSWER).unwrap();
    let mut resp = [0_u8; ANSWER.len()];
    std::io::Read::read_exact(client, &mut resp).unwrap();
}
