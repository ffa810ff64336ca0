//! Reading the classification maps of issue 13 (`ENDPOINTS`, `SERVER_RESETS`, `LISTENS`,
//! `CLASS_COUNTERS`) into [`EndpointFacts`]. Kernel times are `bpf_ktime_get_ns()`, the
//! `CLOCK_MONOTONIC` of [`tcpwatch_core::model::MonoNs`].
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;

use anyhow::Context as _;
use aya::Ebpf;
use aya::programs::TracePoint;
use tcpwatch_common::endpoints::{
    EndpointCounts, EndpointKey as KEndpointKey, ListenInfo, ListenKey, RESET_REASONS_MAX,
    ResetTpOffsets, ServerResets, class_counter,
};
use tcpwatch_common::hooks::{RESET_REASON_CATEGORY, RESET_REASON_PROGRAM, tracepoint};
use tcpwatch_common::{AF_INET6, PortKey};
use tcpwatch_core::endpoints::{
    ClassCounters, EndpointFacts, EndpointKey, EndpointStats, ListenerHistory, ServerPortResets,
};

use super::{Kernel, batch};

/// Where tracefs may be mounted.
const SEND_RESET_FORMATS: [&str; 2] = [
    "/sys/kernel/tracing/events/tcp/tcp_send_reset/format",
    "/sys/kernel/debug/tracing/events/tcp/tcp_send_reset/format",
];

/// Names of `enum sk_rst_reason` values by slot of `RESET_REASONS`, from the format file.
static REASON_NAMES: OnceLock<Vec<String>> = OnceLock::new();

/// The `reason` offset of the classic `tcp:tcp_send_reset` record (Linux 6.10+), and the names
/// of its values; `valid == 0` when the kernel has no reason or tracefs is not mounted.
pub(super) fn reset_tp_offsets() -> ResetTpOffsets {
    let Some(format) = SEND_RESET_FORMATS
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
    else {
        return ResetTpOffsets::default();
    };
    let Some((offset, 4)) = tcpwatch_core::tp_format::field_offset(&format, "reason") else {
        return ResetTpOffsets::default();
    };
    let mut names: Vec<String> = (0..RESET_REASONS_MAX).map(|v| v.to_string()).collect();
    for (v, name) in tcpwatch_core::tp_format::symbolic_names(&format, "reason") {
        if let Some(slot) = usize::try_from(v).ok().and_then(|i| names.get_mut(i)) {
            *slot = name;
        }
    }
    let _ = REASON_NAMES.set(names);
    ResetTpOffsets {
        reason: offset,
        valid: 1,
    }
}

/// Attaches the reset-reason program when the kernel has the field: Ok when attached, else
/// why not (the `reset_reason` feature's detail).
pub(super) fn attach_reset_reasons(ebpf: &mut Ebpf, tp: ResetTpOffsets) -> Result<(), String> {
    if tp.valid == 0 {
        return Err(
            if SEND_RESET_FORMATS
                .iter()
                .any(|p| std::path::Path::new(p).exists())
            {
                "tcp:tcp_send_reset has no `reason` field".into()
            } else {
                format!(
                    "cannot read tcp:tcp_send_reset's format (tracefs not mounted: {})",
                    SEND_RESET_FORMATS[0]
                )
            },
        );
    }
    let mut attach = || -> anyhow::Result<()> {
        let prog: &mut TracePoint = ebpf
            .program_mut(RESET_REASON_PROGRAM)
            .with_context(|| format!("program {RESET_REASON_PROGRAM} missing"))?
            .try_into()?;
        prog.load()?;
        prog.attach(RESET_REASON_CATEGORY, tracepoint::TCP_SEND_RESET)?;
        Ok(())
    };
    attach().map_err(|e| format!("attaching tcp:tcp_send_reset reasons: {e:#}"))
}

fn addr(family: u16, bytes: [u8; 16], port: u16) -> SocketAddr {
    let ip = if family == AF_INET6 {
        IpAddr::V6(Ipv6Addr::from(bytes))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    };
    SocketAddr::new(ip, port)
}

fn comm(bytes: &[u8; 16]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(bytes.get(..end).unwrap_or_default()).into_owned()
}

impl Kernel {
    /// Everything the classification maps hold now (per-CPU values summed). A map that cannot
    /// be read is an error naming it; the caller records it and goes on with the others.
    pub fn endpoint_facts(&self, errors: &mut Vec<String>) -> EndpointFacts {
        let mut f = EndpointFacts::default();
        if let Err(e) = self.read_endpoints(&mut f) {
            errors.push(format!("reading ENDPOINTS: {e:#}"));
        }
        if let Err(e) = self.read_server_resets(&mut f) {
            errors.push(format!("reading SERVER_RESETS: {e:#}"));
        }
        if let Err(e) = self.read_listens(&mut f) {
            errors.push(format!("reading LISTENS: {e:#}"));
        }
        match self.read_class_counters() {
            Ok(c) => f.counters = c,
            Err(e) => errors.push(format!("reading CLASS_COUNTERS: {e:#}")),
        }
        if let Some(names) = REASON_NAMES.get() {
            match self.read_reset_reasons(names) {
                Ok(r) => f.reset_reasons = r,
                Err(e) => errors.push(format!("reading RESET_REASONS: {e:#}")),
            }
        }
        f
    }

    fn read_reset_reasons(&self, names: &[String]) -> anyhow::Result<Vec<(String, u64)>> {
        let map = self
            .ebpf
            .map("RESET_REASONS")
            .context("RESET_REASONS map missing")?;
        let sums = batch::percpu_sums(map, u32::try_from(names.len())?)?;
        Ok(names
            .iter()
            .zip(sums)
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| (name.clone(), n))
            .collect())
    }

    fn read_endpoints(&self, f: &mut EndpointFacts) -> anyhow::Result<()> {
        let map = self
            .ebpf
            .map("ENDPOINTS")
            .context("ENDPOINTS map missing")?;
        batch::for_each_percpu_hash(map, |k: KEndpointKey, vals: &[EndpointCounts]| {
            let mut s = EndpointStats::default();
            for v in vals {
                s.stale_resets += v.stale_resets;
                s.resets_received += v.resets_received;
                s.connects_refused += v.connects_refused;
                s.connects_timed_out += v.connects_timed_out;
                s.connects_failed += v.connects_failed;
                s.syn_retrans += v.syn_retrans;
                s.connects_ok += v.connects_ok;
                if v.last_ns > s.last {
                    s.last = v.last_ns;
                }
                if s.comm.is_empty() && v.comm[0] != 0 {
                    s.comm = comm(&v.comm);
                }
            }
            let key = EndpointKey {
                netns_cookie: k.netns_cookie,
                remote: addr(k.family, k.addr, k.port),
                pid: k.pid,
            };
            f.endpoints.insert(key, s);
        })
    }

    fn read_server_resets(&self, f: &mut EndpointFacts) -> anyhow::Result<()> {
        let map = self
            .ebpf
            .map("SERVER_RESETS")
            .context("SERVER_RESETS map missing")?;
        batch::for_each_percpu_hash(map, |k: PortKey, vals: &[ServerResets]| {
            let mut s = ServerPortResets::default();
            for v in vals {
                s.timewait_sent += v.timewait_sent;
                s.orphan_sent += v.orphan_sent;
                s.last = s.last.max(v.last_ns);
            }
            f.server_ports.insert((k.netns_cookie, k.port), s);
        })
    }

    fn read_listens(&self, f: &mut EndpointFacts) -> anyhow::Result<()> {
        let map = self.ebpf.map("LISTENS").context("LISTENS map missing")?;
        batch::for_each_hash(map, |k: ListenKey, v: &ListenInfo| {
            f.listeners.push(ListenerHistory {
                netns_cookie: k.netns_cookie,
                local: addr(k.family, k.addr, k.port),
                listens: v.listens,
                restarts: v.restarts,
                last_restart: (v.last_restart_ns != 0).then_some(v.last_restart_ns),
                pid: v.pid,
                comm: comm(&v.comm),
            });
        })?;
        f.listeners.sort_by_key(|l| (l.netns_cookie, l.local));
        Ok(())
    }

    fn read_class_counters(&self) -> anyhow::Result<ClassCounters> {
        let map = self
            .ebpf
            .map("CLASS_COUNTERS")
            .context("CLASS_COUNTERS map missing")?;
        let sums = batch::percpu_sums(map, class_counter::COUNT)?;
        let get = |idx: u32| -> anyhow::Result<u64> {
            usize::try_from(idx)
                .ok()
                .and_then(|i| sums.get(i).copied())
                .context("class counter index out of range")
        };
        Ok(ClassCounters {
            no_socket_rst_sent: get(class_counter::NO_SOCKET_RST_SENT)?,
            timewait_rst_sent: get(class_counter::TIMEWAIT_RST_SENT)?,
            orphan_rst_sent: get(class_counter::ORPHAN_RST_SENT)?,
            stale_rst_received: get(class_counter::STALE_RST_RECEIVED)?,
            connects_failed: get(class_counter::CONNECTS_FAILED)?,
            endpoints_full: get(class_counter::ENDPOINTS_FULL)?,
            server_resets_full: get(class_counter::SERVER_RESETS_FULL)?,
            connecting_full: get(class_counter::CONNECTING_FULL)?,
            listens_full: get(class_counter::LISTENS_FULL)?,
            stale_tuples_full: get(class_counter::STALE_TUPLES_FULL)?,
        })
    }
}
