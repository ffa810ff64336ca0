//! Network namespaces of the host: discovery (every `/proc/PID/ns/net` and every
//! `/run/netns` bind mount), entering them from the sweeper thread, and the per-namespace facts
//! the detectors need (`tcp_retries2`, `tcp_orphan_retries`, `ListenOverflows`).
use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;

use anyhow::Context as _;
use tcpwatch_common::NETNS_INODE_TAG;
use tcpwatch_core::model::{NetnsId, NetnsInfo};

/// A namespace found on the host: how to enter it and what to call it.
#[derive(Clone, Debug)]
pub struct NetnsHandle {
    pub inode: u32,
    /// Paths that refer to it (`/run/netns/NAME` first, then `/proc/PID/ns/net`).
    pub paths: Vec<PathBuf>,
    /// Its `ip netns` name, if it has one.
    pub name: Option<String>,
}

/// Lists every network namespace reachable through `/run/netns` and `/proc`.
#[must_use]
pub fn discover() -> Vec<NetnsHandle> {
    let mut by_inode: BTreeMap<u64, NetnsHandle> = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        for entry in dir.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let name = entry.file_name().to_string_lossy().into_owned();
            let h = by_inode.entry(meta.ino()).or_insert_with(|| NetnsHandle {
                inode: u32::try_from(meta.ino()).unwrap_or(0),
                paths: Vec::new(),
                name: None,
            });
            h.name.get_or_insert(name);
            h.paths.push(path);
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let fname = entry.file_name();
            let Some(pid) = fname
                .to_str()
                .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let h = by_inode.entry(meta.ino()).or_insert_with(|| NetnsHandle {
                inode: u32::try_from(meta.ino()).unwrap_or(0),
                paths: Vec::new(),
                name: None,
            });
            // Two paths are plenty to survive one process exiting.
            if h.paths.len() < 2 {
                h.paths.push(path);
            }
        }
    }
    by_inode.into_values().collect()
}

/// setns(2) into a network namespace for the calling thread only.
fn setns(fd: &File) -> std::io::Result<()> {
    // SAFETY: fd is a valid open file descriptor for the duration of the call.
    let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A namespace that disappeared between discovery and the sweep (its last process exited):
/// normal churn, not an error.
#[derive(Debug)]
pub struct Vanished {
    pub inode: u32,
    pub detail: String,
}

impl std::fmt::Display for Vanished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "namespace net:[{}] vanished before it could be entered ({})",
            self.inode, self.detail
        )
    }
}

impl std::error::Error for Vanished {}

/// The calling thread could not return to its own namespace after visiting `inode`: it is
/// stranded there. The sweeper stops the batch (the namespaces left are reported unreadable,
/// their records kept) and tries to return home before the next one.
#[derive(Debug)]
pub struct NotHome {
    pub inode: u32,
    pub detail: String,
}

impl std::fmt::Display for NotHome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "returning to tcpwatch's own network namespace after visiting net:[{}] failed ({}); \
             the sweeper thread is stranded there and stops this sweep",
            self.inode, self.detail
        )
    }
}

impl std::error::Error for NotHome {}

/// The calling thread's namespace, to return to after visiting others.
pub struct Home(File);

impl Home {
    pub fn current() -> anyhow::Result<Self> {
        Ok(Self(
            File::open("/proc/thread-self/ns/net").context("opening own network namespace")?,
        ))
    }

    /// Enters the home namespace (a no-op when the thread is there): recovers a thread that a
    /// failed return ([`NotHome`]) left elsewhere.
    pub fn enter(&self) -> anyhow::Result<()> {
        setns(&self.0).context("entering tcpwatch's own network namespace")
    }

    /// Runs `f` with the calling thread inside `ns`, then returns home. An error entering
    /// the namespace is returned; failing to return home returns [`NotHome`] (whatever `f`
    /// read is dropped): the caller must stop visiting and call [`Home::enter`] before it
    /// sweeps again.
    pub fn visit<T>(
        &self,
        ns: &NetnsHandle,
        f: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut last_err = None;
        let mut file = None;
        for p in &ns.paths {
            match File::open(p) {
                Ok(fh) => {
                    file = Some(fh);
                    break;
                }
                Err(e) => last_err = Some(format!("{}: {e}", p.display())),
            }
        }
        let Some(file) = file else {
            return Err(Vanished {
                inode: ns.inode,
                detail: last_err.unwrap_or_default(),
            }
            .into());
        };
        setns(&file).with_context(|| {
            format!(
                "entering network namespace net:[{}] failed (needs CAP_SYS_ADMIN; in a container \
                 run with hostPID and the host's /proc)",
                ns.inode
            )
        })?;
        let out = f();
        if let Err(e) = setns(&self.0) {
            return Err(NotHome {
                inode: ns.inode,
                detail: e.to_string(),
            }
            .into());
        }
        out
    }
}

/// The identity of the calling thread's current namespace: its cookie (`SO_NETNS_COOKIE`,
/// Linux 5.14+), or on kernels without cookies its inode number tagged with
/// [`NETNS_INODE_TAG`], as the kernel programs compute it then (the loader patches
/// `net_cookie` as missing exactly when [`so_netns_cookie`] fails, see `fallbacks.rs`).
pub fn current_cookie() -> anyhow::Result<u64> {
    match so_netns_cookie() {
        Ok(c) => Ok(c),
        Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => {
            let ino = std::fs::metadata("/proc/thread-self/ns/net")
                .context("reading /proc/thread-self/ns/net (namespace inode: no netns cookies)")?
                .ino();
            Ok(NETNS_INODE_TAG | ino)
        }
        Err(e) => Err(e).context("getsockopt(SO_NETNS_COOKIE) failed"),
    }
}

/// The cookie of the calling thread's current namespace (`SO_NETNS_COOKIE`); `ENOPROTOOPT`
/// before Linux 5.14.
pub fn so_netns_cookie() -> std::io::Result<u64> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    // SAFETY: plain socket(2) call; the returned fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket() and is owned by nobody else.
    let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut cookie: u64 = 0;
    let mut len =
        libc::socklen_t::try_from(std::mem::size_of::<u64>()).map_err(std::io::Error::other)?;
    // SAFETY: cookie and len are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            owned.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cookie)
}

/// Reads `tcp_retries2`, `tcp_orphan_retries`, `tcp_syn_retries`, `tcp_syn_linear_timeouts`,
/// `tcp_keepalive_time/intvl/probes` and ListenOverflows/ListenDrops of the calling thread's namespace (a sysctl that cannot be
/// read keeps the kernel's default).
#[must_use]
pub fn current_info(id: NetnsId) -> NetnsInfo {
    let mut info = NetnsInfo::with_defaults(id);
    if let Some(v) = read_sysctl("/proc/sys/net/ipv4/tcp_retries2") {
        info.tcp_retries2 = v;
    }
    if let Some(v) = read_sysctl("/proc/sys/net/ipv4/tcp_orphan_retries") {
        info.tcp_orphan_retries = v;
    }
    if let Some(v) = read_sysctl("/proc/sys/net/ipv4/tcp_syn_retries") {
        info.tcp_syn_retries = v;
    }
    if let Some(v) = read_sysctl("/proc/sys/net/ipv4/tcp_keepalive_time") {
        info.tcp_keepalive_time_s = v;
    }
    if let Some(v) = read_sysctl("/proc/sys/net/ipv4/tcp_keepalive_intvl") {
        info.tcp_keepalive_intvl_s = v;
    }
    if let Some(v) = read_sysctl("/proc/sys/net/ipv4/tcp_keepalive_probes") {
        info.tcp_keepalive_probes = v;
    }
    // Linux 6.7+ only: absent elsewhere (None).
    info.tcp_syn_linear_timeouts = read_sysctl("/proc/sys/net/ipv4/tcp_syn_linear_timeouts");
    // Linux 6.1+ only; negative when the namespace shares the host's hash.
    info.tcp_ehash_entries = read_sysctl("/proc/sys/net/ipv4/tcp_ehash_entries");
    if let Ok(s) = std::fs::read_to_string("/proc/thread-self/net/netstat") {
        let (o, d) = parse_listen_counters(&s);
        info.listen_overflows = o;
        info.listen_drops = d;
    }
    info
}

fn read_sysctl<T: std::str::FromStr>(path: &str) -> Option<T> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Extracts `ListenOverflows` and `ListenDrops` from `/proc/net/netstat`'s `TcpExt` lines.
#[must_use]
pub fn parse_listen_counters(netstat: &str) -> (u64, u64) {
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return (0, 0);
    };
    let mut overflows = 0;
    let mut drops = 0;
    for (n, v) in names
        .split_whitespace()
        .zip(values.split_whitespace())
        .skip(1)
    {
        match n {
            "ListenOverflows" => overflows = v.parse().unwrap_or(0),
            "ListenDrops" => drops = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    (overflows, drops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_counters_are_parsed() {
        let s = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 7 9\n\
                 IpExt: InNoRoutes\nIpExt: 1\n";
        assert_eq!(parse_listen_counters(s), (7, 9));
        assert_eq!(parse_listen_counters(""), (0, 0));
    }
}
