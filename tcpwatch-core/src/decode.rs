//! Decoding of kernel records (`tcpwatch_common`'s `SockRecord`, `StateEvent`, `SweepHeader`)
//! into the model's types: the kernel clock (jiffies to ms with a calibrated `HZ`), addresses,
//! task names, queues from sequence numbers, and how long a socket has been in its state. The
//! table ([`crate::table`]) merges what comes out of here.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tcpwatch_common::{AF_INET6, SockRecord, SweepHeader, record_flags};

use crate::model::{
    ConnKey, ConnRecord, KeepaliveOpts, MonoNs, NS_PER_MS, NetnsId, Queues, ResetCounts,
    RetransInfo, TcpInfo, TcpState,
};

/// Kernel clock facts needed to turn jiffies into milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelClock {
    pub hz: u32,
}

impl KernelClock {
    /// Derives `HZ` from two sweep headers taken some time apart, rounding to the nearest
    /// value a kernel can be configured with. `None` if they are too close to tell.
    #[must_use]
    pub fn calibrate(a: &SweepHeader, b: &SweepHeader) -> Option<Self> {
        let dns = b.ktime_ns.checked_sub(a.ktime_ns)?;
        let dj = b.jiffies.checked_sub(a.jiffies)?;
        if dns < 50 * NS_PER_MS {
            return None;
        }
        #[expect(clippy::cast_precision_loss, reason = "ratios of small counts")]
        let hz = dj as f64 * 1e9 / dns as f64;
        [100_u32, 250, 300, 1000]
            .into_iter()
            .min_by(|x, y| {
                (f64::from(*x) - hz)
                    .abs()
                    .total_cmp(&(f64::from(*y) - hz).abs())
            })
            .map(|hz| Self { hz })
    }

    #[must_use]
    pub fn jiffies_to_ms(self, j: u32) -> u64 {
        u64::from(j) * 1000 / u64::from(self.hz.max(1))
    }
}

impl Default for KernelClock {
    fn default() -> Self {
        // The common distribution setting; replaced by calibration at start-up.
        Self { hz: 250 }
    }
}

pub(crate) fn addr(family: u16, raw: &[u8; 16], port: u16) -> SocketAddr {
    let ip = if family == AF_INET6 {
        IpAddr::V6(Ipv6Addr::from(*raw))
    } else {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    };
    SocketAddr::new(ip, port)
}

pub(crate) fn comm_str(raw: &[u8; 16]) -> Option<String> {
    let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
    (end > 0).then(|| String::from_utf8_lossy(&raw[..end]).into_owned())
}

/// Converts one sweep record into a fresh [`ConnRecord`] (no owner, no history).
#[must_use]
pub fn record_from_sweep(r: &SockRecord, clock: KernelClock, now: MonoNs) -> ConnRecord {
    let state = TcpState::from_kernel(r.state);
    let full = r.flags & record_flags::FULL_SOCK != 0;
    let tracked = r.flags & record_flags::TRACKED != 0;
    let first_seen = if r.first_seen_ns != 0 {
        r.first_seen_ns
    } else {
        now
    };
    let mut queues = Queues::default();
    let mut tcp = TcpInfo::default();
    if full {
        if state == TcpState::Listen {
            queues.accept_queue = r.ack_backlog;
            queues.accept_limit = r.max_ack_backlog;
        } else {
            queues.send_q = r.write_seq.wrapping_sub(r.snd_una);
            queues.unacked = r.snd_nxt.wrapping_sub(r.snd_una);
            queues.unsent = r.write_seq.wrapping_sub(r.snd_nxt);
            queues.recv_q = r.rcv_nxt.wrapping_sub(r.copied_seq);
        }
        tcp = TcpInfo {
            snd_una: r.snd_una,
            peer_window: r.snd_wnd,
            srtt_us: r.srtt_us8 >> 3,
            rto_ms: u32::try_from(clock.jiffies_to_ms(r.rto_jiffies)).unwrap_or(u32::MAX),
            backoff: r.backoff,
            retransmits: r.retransmits,
            probes_out: r.probes_out,
            total_retrans: r.total_retrans,
            user_timeout_ms: r.user_timeout_ms,
            sndbuf: r.sndbuf,
            wmem_queued: r.wmem_queued,
            last_send_age_ms: clock.jiffies_to_ms(r.lsnd_age_jiffies),
            last_ack_age_ms: clock.jiffies_to_ms(r.rcv_tstamp_age_jiffies),
            last_recv_age_ms: clock.jiffies_to_ms(r.lrcv_age_jiffies),
            data_segs_in: r.data_segs_in,
            data_segs_out: r.data_segs_out,
            keepalive: KeepaliveOpts {
                enabled: r.flags & record_flags::KEEPALIVE != 0,
                time_ms: clock.jiffies_to_ms(r.keepalive_time_jiffies),
                intvl_ms: clock.jiffies_to_ms(r.keepalive_intvl_jiffies),
                probes: r.keepalive_probes,
            },
        };
    }
    let (state_since, exact) = age::state_since(
        &age::AgeFacts {
            state,
            tracked,
            full_sock: full,
            state_since_ns: r.state_since_ns,
            state_after_ns: r.state_after_ns,
            first_seen,
            last_ack_age_ms: tcp.last_ack_age_ms,
        },
        // The jiffies ages were taken when the record was made, not when it is applied.
        if r.seen_ns != 0 {
            r.seen_ns.min(now)
        } else {
            now
        },
    );
    ConnRecord {
        key: ConnKey {
            skaddr: r.skaddr,
            netns_cookie: r.netns_cookie,
        },
        cookie: r.cookie,
        netns: NetnsId {
            cookie: r.netns_cookie,
            inode: r.netns_ino,
        },
        local: addr(r.family, &r.saddr, r.sport),
        remote: addr(r.family, &r.daddr, r.dport),
        state,
        state_since,
        state_since_exact: exact,
        first_seen,
        last_seen: now,
        inode: r.inode,
        uid: r.uid,
        owner: None,
        creator_pid: (r.pid != 0).then_some(r.pid),
        creator_comm: comm_str(&r.comm),
        queues,
        tcp,
        retrans: RetransInfo {
            // Retransmissions before tcpwatch watched the socket are only in the kernel's own
            // counters: `total_retrans`, and `icsk_retransmits` (RTO retransmissions of the
            // head segment since the last ACK progress: the kernel's view of the chain).
            total: r.retrans.max(r.total_retrans),
            chain: r.chain.max(u32::from(r.retransmits)),
            chain_start: (r.chain_start_ns != 0).then_some(r.chain_start_ns),
            last_retrans: (r.last_retrans_ns != 0).then_some(r.last_retrans_ns),
        },
        resets: ResetCounts {
            sent: r.resets_sent,
            received: r.resets_received,
        },
        full_sock: full,
        history: Vec::new(),
        wall: None,
    }
}

#[path = "decode_age.rs"]
mod age;
