//! Reading the classification maps of issue 13 (`ENDPOINTS`, `SERVER_RESETS`, `LISTENS`,
//! `CLASS_COUNTERS`) into [`EndpointFacts`]. Kernel times are `bpf_ktime_get_ns()`, the
//! `CLOCK_MONOTONIC` of [`tcpwatch_core::model::MonoNs`].
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::Context as _;
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap};
use tcpwatch_common::endpoints::{
    EndpointCounts, EndpointKey as KEndpointKey, ListenInfo, ListenKey, ServerResets, class_counter,
};
use tcpwatch_common::{AF_INET6, PortKey};
use tcpwatch_core::endpoints::{
    ClassCounters, EndpointFacts, EndpointKey, EndpointStats, ListenerHistory, ServerPortResets,
};

use super::Kernel;

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
        f
    }

    fn read_endpoints(&self, f: &mut EndpointFacts) -> anyhow::Result<()> {
        let map = self
            .ebpf
            .map("ENDPOINTS")
            .context("ENDPOINTS map missing")?;
        let m: PerCpuHashMap<&MapData, KEndpointKey, EndpointCounts> =
            PerCpuHashMap::try_from(map)?;
        for entry in &m {
            let (k, vals) = entry?;
            let mut s = EndpointStats::default();
            for v in vals.iter() {
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
        }
        Ok(())
    }

    fn read_server_resets(&self, f: &mut EndpointFacts) -> anyhow::Result<()> {
        let map = self
            .ebpf
            .map("SERVER_RESETS")
            .context("SERVER_RESETS map missing")?;
        let m: PerCpuHashMap<&MapData, PortKey, ServerResets> = PerCpuHashMap::try_from(map)?;
        for entry in &m {
            let (k, vals) = entry?;
            let mut s = ServerPortResets::default();
            for v in vals.iter() {
                s.timewait_sent += v.timewait_sent;
                s.orphan_sent += v.orphan_sent;
                s.last = s.last.max(v.last_ns);
            }
            f.server_ports.insert((k.netns_cookie, k.port), s);
        }
        Ok(())
    }

    fn read_listens(&self, f: &mut EndpointFacts) -> anyhow::Result<()> {
        let map = self.ebpf.map("LISTENS").context("LISTENS map missing")?;
        let m: BpfHashMap<&MapData, ListenKey, ListenInfo> = BpfHashMap::try_from(map)?;
        for entry in &m {
            let (k, v) = entry?;
            f.listeners.push(ListenerHistory {
                netns_cookie: k.netns_cookie,
                local: addr(k.family, k.addr, k.port),
                listens: v.listens,
                restarts: v.restarts,
                last_restart: (v.last_restart_ns != 0).then_some(v.last_restart_ns),
                pid: v.pid,
                comm: comm(&v.comm),
            });
        }
        f.listeners.sort_by_key(|l| (l.netns_cookie, l.local));
        Ok(())
    }

    fn read_class_counters(&self) -> anyhow::Result<ClassCounters> {
        let map = self
            .ebpf
            .map("CLASS_COUNTERS")
            .context("CLASS_COUNTERS map missing")?;
        let arr: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        let get = |idx: u32| -> anyhow::Result<u64> { Ok(arr.get(&idx, 0)?.iter().sum()) };
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
