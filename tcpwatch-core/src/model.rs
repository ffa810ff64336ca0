//! The connection model shared by the table, the detectors, the HTTP API and `tcpwatch top`.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Nanoseconds on `CLOCK_MONOTONIC`, the clock of `bpf_ktime_get_ns()`.
pub type MonoNs = u64;

/// `CLOCK_MONOTONIC` now, in ns: the clock of `bpf_ktime_get_ns()`. For the I/O edges (daemon,
/// API, `top`); the pure logic of this crate never calls it and takes time as a parameter.
#[must_use]
pub fn mono_now() -> MonoNs {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * NS_PER_SEC + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

pub const NS_PER_MS: u64 = 1_000_000;
pub const NS_PER_SEC: u64 = 1_000_000_000;

/// TCP state, numbered as in the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TcpState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    NewSynRecv,
    Unknown,
}

impl TcpState {
    pub const ALL: [TcpState; 13] = [
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::Closing,
        TcpState::NewSynRecv,
        TcpState::Unknown,
    ];

    #[must_use]
    pub fn from_kernel(v: u8) -> Self {
        match v {
            1 => Self::Established,
            2 => Self::SynSent,
            3 => Self::SynRecv,
            4 => Self::FinWait1,
            5 => Self::FinWait2,
            6 => Self::TimeWait,
            7 => Self::Close,
            8 => Self::CloseWait,
            9 => Self::LastAck,
            10 => Self::Listen,
            11 => Self::Closing,
            12 => Self::NewSynRecv,
            _ => Self::Unknown,
        }
    }

    /// The name `ss` prints (`CLOSE-WAIT`, `ESTAB`, ...).
    #[must_use]
    pub fn ss_name(self) -> &'static str {
        match self {
            Self::Established => "ESTAB",
            Self::SynSent => "SYN-SENT",
            Self::SynRecv | Self::NewSynRecv => "SYN-RECV",
            Self::FinWait1 => "FIN-WAIT-1",
            Self::FinWait2 => "FIN-WAIT-2",
            Self::TimeWait => "TIME-WAIT",
            Self::Close => "UNCONN",
            Self::CloseWait => "CLOSE-WAIT",
            Self::LastAck => "LAST-ACK",
            Self::Listen => "LISTEN",
            Self::Closing => "CLOSING",
            Self::Unknown => "UNKNOWN",
        }
    }

    /// The name used in JSON, metrics labels and filters (`CLOSE_WAIT`, `ESTABLISHED`, ...).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Established => "ESTABLISHED",
            Self::SynSent => "SYN_SENT",
            Self::SynRecv => "SYN_RECV",
            Self::FinWait1 => "FIN_WAIT1",
            Self::FinWait2 => "FIN_WAIT2",
            Self::TimeWait => "TIME_WAIT",
            Self::Close => "CLOSE",
            Self::CloseWait => "CLOSE_WAIT",
            Self::LastAck => "LAST_ACK",
            Self::Listen => "LISTEN",
            Self::Closing => "CLOSING",
            Self::NewSynRecv => "NEW_SYN_RECV",
            Self::Unknown => "UNKNOWN",
        }
    }

    /// Parses [`TcpState::name`] or [`TcpState::ss_name`], case-insensitively.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        let up = s.to_ascii_uppercase().replace('-', "_");
        let up = if up == "ESTAB" {
            "ESTABLISHED".to_owned()
        } else {
            up
        };
        let up = match up.as_str() {
            "FIN_WAIT_1" => "FIN_WAIT1".to_owned(),
            "FIN_WAIT_2" => "FIN_WAIT2".to_owned(),
            _ => up,
        };
        Self::ALL.into_iter().find(|st| st.name() == up)
    }
}

/// A network namespace. The cookie identifies it over time (inode numbers are reused at once
/// after a namespace is deleted); the inode is what `readlink /proc/PID/ns/net` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NetnsId {
    pub cookie: u64,
    pub inode: u32,
}

/// Identity of a socket: the kernel address of its `struct sock` plus its namespace cookie.
/// A freed address can be reused by a new socket; the table resolves that through the CLOSE
/// event and the sweep (a socket missing from its namespace's sweep is gone).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConnKey {
    pub skaddr: u64,
    pub netns_cookie: u64,
}

/// Kubernetes pod a container belongs to, when known.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// The process that holds the socket's file descriptor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub pid: u32,
    pub comm: String,
    /// The descriptor number in that process, when found by scanning `/proc/PID/fd`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
}

/// Queue sizes. For a LISTEN socket `send_q`/`recv_q` are 0 and the accept queue is reported in
/// `accept_queue`/`accept_limit` (what `ss` shows as Recv-Q/Send-Q of a listener).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queues {
    /// `write_seq - snd_una`: bytes written by the app and not yet acknowledged.
    pub send_q: u32,
    /// Of `send_q`, bytes sent and not yet acknowledged (`snd_nxt - snd_una`).
    pub unacked: u32,
    /// Of `send_q`, bytes not yet sent (`write_seq - snd_nxt`).
    pub unsent: u32,
    /// `rcv_nxt - copied_seq`: bytes received and not yet read by the app (a received FIN
    /// counts 1, as in `ss`).
    pub recv_q: u32,
    pub accept_queue: u32,
    pub accept_limit: u32,
}

/// TCP internals from the sweep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpInfo {
    pub snd_una: u32,
    /// Peer's advertised receive window in bytes (0 = zero window).
    pub peer_window: u32,
    pub srtt_us: u32,
    pub rto_ms: u32,
    /// `icsk_backoff`: exponent of the RTO backoff.
    pub backoff: u8,
    /// `icsk_retransmits`: retransmissions of the head segment since the last ACK progress.
    pub retransmits: u8,
    /// `icsk_probes_out`: unanswered zero-window / keepalive probes.
    pub probes_out: u8,
    /// The kernel's `total_retrans` for this socket.
    pub total_retrans: u32,
    /// `TCP_USER_TIMEOUT` in ms, 0 = not set.
    pub user_timeout_ms: u32,
    pub sndbuf: u32,
    pub wmem_queued: u32,
    /// Time since the last data sent / ACK received / data received, in ms.
    pub last_send_age_ms: u64,
    pub last_ack_age_ms: u64,
    pub last_recv_age_ms: u64,
    /// `data_segs_in` / `data_segs_out`: data segments received / sent over the connection's
    /// life (0 = never; tells a request sent in the same jiffy as the handshake from an
    /// answered one, or from a connection that never sent anything).
    #[serde(default)]
    pub data_segs_in: u32,
    #[serde(default)]
    pub data_segs_out: u32,
    /// The socket's keepalive settings (`SO_KEEPALIVE`, `TCP_KEEPIDLE/INTVL/CNT`).
    #[serde(default)]
    pub keepalive: KeepaliveOpts,
}

/// A socket's keepalive settings as the kernel holds them: 0 means "the namespace's
/// `tcp_keepalive_*` sysctl" (the kernel's `keepalive_time_when()` and friends).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepaliveOpts {
    /// `SO_KEEPALIVE` is on.
    pub enabled: bool,
    /// `TCP_KEEPIDLE` in ms (0 = namespace default).
    pub time_ms: u64,
    /// `TCP_KEEPINTVL` in ms (0 = namespace default).
    pub intvl_ms: u64,
    /// `TCP_KEEPCNT` (0 = namespace default).
    pub probes: u8,
}

/// Retransmissions as tcpwatch's tracepoint saw them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetransInfo {
    /// Retransmissions seen since tcpwatch started watching this socket.
    pub total: u32,
    /// Consecutive retransmissions with no ACK progress (`snd_una` frozen) in between.
    pub chain: u32,
    pub chain_start: Option<MonoNs>,
    pub last_retrans: Option<MonoNs>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetCounts {
    pub sent: u32,
    pub received: u32,
}

/// One sample of a connection's queues over time (kept only for connections with something
/// to show, bounded per connection).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    pub at: MonoNs,
    pub send_q: u32,
    pub recv_q: u32,
    pub snd_una: u32,
    pub retrans_total: u32,
}

/// One TCP socket, merged from state events and sweeps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnRecord {
    pub key: ConnKey,
    /// The kernel's socket cookie: the socket's generation, which tells a new socket at a
    /// reused `skaddr` from the old one. 0 = not known (a `raw_tp` event).
    #[serde(default)]
    pub cookie: u64,
    pub netns: NetnsId,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: TcpState,
    /// When the socket entered `state`. If `state_since_exact` is false the entry time is not
    /// known (the socket was already in that state when tcpwatch first saw it, or it changed
    /// state while tcpwatch was not watching) and this is the latest time it can have entered
    /// it: the age it gives is a lower bound.
    pub state_since: MonoNs,
    pub state_since_exact: bool,
    pub first_seen: MonoNs,
    /// The last sweep or event that confirmed this socket.
    pub last_seen: MonoNs,
    /// Socket inode (0 = no `struct socket`: never accepted, or orphaned after `close()`).
    pub inode: u64,
    pub uid: u32,
    /// The process holding the socket, from `/proc` (None: none found, or not looked up yet).
    /// Shared with the daemon's owner cache and with every copy of the record.
    pub owner: Option<Arc<Owner>>,
    /// The task that called `connect()`/`listen()`, as the kernel saw it.
    pub creator_pid: Option<u32>,
    pub creator_comm: Option<String>,
    pub queues: Queues,
    pub tcp: TcpInfo,
    pub retrans: RetransInfo,
    pub resets: ResetCounts,
    /// Whether the record has `tcp_sock` fields (`TIME_WAIT` / `NEW_SYN_RECV` minisockets do not).
    pub full_sock: bool,
    /// Recent samples, oldest first, bounded by the table's history length.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub history: Vec<Sample>,
    /// RFC 3339 twins of the times above (`state_since_time`, ...), filled where the record
    /// leaves the daemon (`crate::api_times`); absent inside the table.
    #[serde(flatten)]
    pub wall: Option<Box<crate::api_times::ConnTimes>>,
}

impl ConnRecord {
    /// A record known only by its identity, tuple and state, entered at `at` (exactly): no
    /// owner, no queues, no counters yet.
    #[must_use]
    pub fn new(
        key: ConnKey,
        netns: NetnsId,
        local: SocketAddr,
        remote: SocketAddr,
        state: TcpState,
        at: MonoNs,
    ) -> Self {
        Self {
            key,
            cookie: 0,
            netns,
            local,
            remote,
            state,
            state_since: at,
            state_since_exact: true,
            first_seen: at,
            last_seen: at,
            inode: 0,
            uid: 0,
            owner: None,
            creator_pid: None,
            creator_comm: None,
            queues: Queues::default(),
            tcp: TcpInfo::default(),
            retrans: RetransInfo::default(),
            resets: ResetCounts::default(),
            full_sock: true,
            history: Vec::new(),
            wall: None,
        }
    }

    /// Age of the current state at `now`, in ns.
    #[must_use]
    pub fn state_age(&self, now: MonoNs) -> u64 {
        now.saturating_sub(self.state_since)
    }

    /// A socket in `CLOSE_WAIT` or `ESTABLISHED` with no `struct socket` is still in its listener's
    /// accept queue: the application never called `accept()` for it.
    #[must_use]
    pub fn is_unaccepted(&self) -> bool {
        self.inode == 0
            && self.full_sock
            && matches!(self.state, TcpState::CloseWait | TcpState::Established)
    }
}

/// Per-namespace facts the detectors need (read by the sweeper inside each namespace).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetnsInfo {
    pub id: NetnsId,
    /// `net.ipv4.tcp_retries2` of that namespace.
    pub tcp_retries2: u32,
    /// `net.ipv4.tcp_orphan_retries` of that namespace: retries of orphaned sockets (0, the
    /// default, means 8 while the RTO is below `TCP_RTO_MAX`).
    #[serde(default)]
    pub tcp_orphan_retries: u32,
    /// `TcpExtListenOverflows` and `TcpExtListenDrops` of that namespace (`nstat`).
    pub listen_overflows: u64,
    pub listen_drops: u64,
    /// `net.ipv4.tcp_syn_retries` of that namespace.
    #[serde(default = "crate::netns_defaults::syn_retries")]
    pub tcp_syn_retries: u32,
    /// `net.ipv4.tcp_syn_linear_timeouts` (Linux 6.7+; None where the kernel has no such
    /// sysctl).
    #[serde(default)]
    pub tcp_syn_linear_timeouts: Option<u32>,
    /// `net.ipv4.tcp_keepalive_time` / `tcp_keepalive_intvl` (seconds) and
    /// `tcp_keepalive_probes` of that namespace: the keepalive of a socket that sets none.
    #[serde(default = "crate::netns_defaults::keepalive_time")]
    pub tcp_keepalive_time_s: u32,
    #[serde(default = "crate::netns_defaults::keepalive_intvl")]
    pub tcp_keepalive_intvl_s: u32,
    #[serde(default = "crate::netns_defaults::keepalive_probes")]
    pub tcp_keepalive_probes: u32,
    /// `TIME_WAIT` sockets in that namespace at its last sweep: counted by the kernel sweep,
    /// not listed as connections (`ss state time-wait` counts the same sockets).
    #[serde(default)]
    pub time_wait: u64,
    /// `net.ipv4.tcp_ehash_entries` (Linux 6.1+): negative when the namespace shares the
    /// host's established hash (`shared_hash`).
    #[serde(default)]
    pub tcp_ehash_entries: Option<i64>,
}

impl NetnsInfo {
    #[must_use]
    pub fn with_defaults(id: NetnsId) -> Self {
        Self {
            id,
            tcp_retries2: 15,
            tcp_orphan_retries: 0,
            listen_overflows: 0,
            listen_drops: 0,
            tcp_syn_retries: crate::netns_defaults::syn_retries(),
            tcp_syn_linear_timeouts: None,
            tcp_keepalive_time_s: crate::netns_defaults::keepalive_time(),
            tcp_keepalive_intvl_s: crate::netns_defaults::keepalive_intvl(),
            tcp_keepalive_probes: crate::netns_defaults::keepalive_probes(),
            time_wait: 0,
            tcp_ehash_entries: None,
        }
    }
}

/// What a finding is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    CloseWaitStuck,
    SendQueueGrowing,
    RetransmitChain,
    AcceptBacklogFilling,
    AwaitingResponse,
    ResetBurst,
    StaleConnectionReuse,
    ConnectFailing,
}

impl FindingKind {
    pub const ALL: [FindingKind; 8] = [
        FindingKind::CloseWaitStuck,
        FindingKind::SendQueueGrowing,
        FindingKind::RetransmitChain,
        FindingKind::AcceptBacklogFilling,
        FindingKind::AwaitingResponse,
        FindingKind::ResetBurst,
        FindingKind::StaleConnectionReuse,
        FindingKind::ConnectFailing,
    ];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::CloseWaitStuck => "close_wait_stuck",
            Self::SendQueueGrowing => "send_queue_growing",
            Self::RetransmitChain => "retransmit_chain",
            Self::AcceptBacklogFilling => "accept_backlog_filling",
            Self::AwaitingResponse => "awaiting_response",
            Self::ResetBurst => "reset_burst",
            Self::StaleConnectionReuse => "stale_connection_reuse",
            Self::ConnectFailing => "connect_failing",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// The thing a finding names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Subject {
    /// One connection.
    Connection {
        key: ConnKey,
        netns: NetnsId,
        local: SocketAddr,
        remote: SocketAddr,
        state: TcpState,
        #[serde(skip_serializing_if = "Option::is_none")]
        owner: Option<Owner>,
    },
    /// A listening socket.
    Listener {
        key: ConnKey,
        netns: NetnsId,
        local: SocketAddr,
        #[serde(skip_serializing_if = "Option::is_none")]
        owner: Option<Owner>,
    },
    /// A local port in a namespace (reset bursts).
    Port { netns: NetnsId, port: u16 },
    /// A remote endpoint as one process (the one that called `connect()`) sees it: stale
    /// connection reuse, failing connects. `owner` carries only pid and comm (the sockets
    /// involved are gone).
    Peer {
        netns: NetnsId,
        remote: SocketAddr,
        #[serde(skip_serializing_if = "Option::is_none")]
        owner: Option<Owner>,
    },
}

/// Where a finding is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    Opened,
    Updated,
    Resolved,
}

/// One diagnosed problem.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable identity: the same condition on the same subject keeps the same id while open.
    pub id: String,
    pub kind: FindingKind,
    pub severity: Severity,
    pub subject: Subject,
    /// Short machine-readable cause, e.g. `owned`, `unaccepted`, `peer_unreachable`,
    /// `peer_not_reading`, `overflowing`.
    pub cause: String,
    /// One line in plain words, naming the connection and what to do.
    pub diagnosis: String,
    /// When the condition started (may be before the finding opened: thresholds).
    pub since: MonoNs,
    pub opened_at: MonoNs,
    pub updated_at: MonoNs,
    pub resolved_at: Option<MonoNs>,
    /// Evidence numbers, by name (`send_q_bytes`, `chain`, `age_seconds`, ...).
    pub evidence: BTreeMap<String, f64>,
    /// The open incident this finding belongs to (filled in by the daemon from the incident
    /// layer; detectors leave it empty).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub incident_id: Option<String>,
    /// RFC 3339 twins of the times above (`since_time`, `opened_time`, ...), filled where the
    /// finding leaves the daemon (`crate::api_times`).
    #[serde(flatten)]
    pub wall: Option<Box<crate::api_times::FindingTimes>>,
}

/// A lifecycle change of a finding: what the log, the stream and Alertmanager receive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FindingChange {
    pub change: Lifecycle,
    pub finding: Finding,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_round_trip() {
        for st in TcpState::ALL {
            assert_eq!(TcpState::parse(st.name()), Some(st));
        }
        assert_eq!(TcpState::parse("close-wait"), Some(TcpState::CloseWait));
        assert_eq!(TcpState::parse("estab"), Some(TcpState::Established));
        assert_eq!(TcpState::parse("nope"), None);
        assert_eq!(TcpState::from_kernel(8), TcpState::CloseWait);
        assert_eq!(TcpState::from_kernel(200), TcpState::Unknown);
    }

    #[test]
    fn finding_kind_serializes_as_api_names() {
        for k in FindingKind::ALL {
            let s = serde_json::to_string(&k).unwrap();
            assert_eq!(s, format!("\"{}\"", k.name()));
        }
    }
}
