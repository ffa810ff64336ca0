//! `/metrics`: Prometheus text exposition, rebuilt from the published [`View`] at every scrape.
//!
//! Cardinality is bounded whatever the number of connections: every labelled family has a
//! fixed label set or a cap (per connection, incident or owner: `daemon.top_k`).
//! [`series_bound`] is the bound documented in `docs/metrics.md`.
use std::collections::HashMap;

use prometheus::core::Collector;
use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use tcpwatch_common::counter;
use tcpwatch_core::k8s::short_id;
use tcpwatch_core::model::{
    ConnKey, ConnRecord, Finding, FindingKind, Owner, Severity, Subject, TcpState,
};

use crate::view::View;

/// Namespaces with their own `tcpwatch_sockets_by_netns` series; the rest are summed.
pub const MAX_NETNS_SERIES: usize = 50;
/// Pods with their own `tcpwatch_sockets_by_pod` series; the rest are summed.
pub const MAX_POD_SERIES: usize = 100;
/// Listening ports with their own `tcpwatch_listener_backlog*` series.
pub const MAX_LISTENER_PORTS: usize = 100;
/// Attached program series kept (the daemon attaches 4 tracepoints).
pub const MAX_ATTACHED_SERIES: usize = 8;
/// Kernel features reported by `tcpwatch_kernel_feature` (probe.rs: fixed list).
const MAX_FEATURE_SERIES: usize = 16;
/// Upper bounds of the `tcpwatch_send_queue_bytes` buckets.
pub const SEND_QUEUE_BUCKETS: [f64; 7] = [
    0.0,
    1024.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
];
pub(crate) const SEVERITIES: [Severity; 3] =
    [Severity::Info, Severity::Warning, Severity::Critical];
const CLOSE_WAIT_CAUSES: [&str; 2] = ["owned", "unaccepted"];

/// Most series (sample lines) one scrape can have, for a given `daemon.top_k`.
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "the documented bound, checked by the tests")
)]
#[must_use]
pub fn series_bound(top_k: usize) -> usize {
    let states = TcpState::ALL.len(); // tcpwatch_sockets
    let netns = MAX_NETNS_SERIES + 1; // + "other"
    let pods = MAX_POD_SERIES + 1; // + "other"
    let close_wait = CLOSE_WAIT_CAUSES.len();
    let histogram = SEND_QUEUE_BUCKETS.len() + 3; // + le="+Inf", _sum, _count
    let kernel = 1 + 2; // retransmits, resets{direction}
    let listeners = 2 * MAX_LISTENER_PORTS; // backlog + limit
    let findings = FindingKind::ALL.len() * SEVERITIES.len();
    // events_received, events_malformed, kernel_events_submitted, ringbuf_dropped,
    // kernel_map_full{map="socks"}, sweep_write_failed, sweeps, sweep_errors, namespaces_vanished,
    // alertmanager_alerts_sent, alertmanager_alerts_failed, sweep_duration,
    // sweep_sockets, namespaces, table_connections, table_max_connections,
    // table_events_applied, table_inserted, table_removed x3, table_evictions,
    // table_sweeps_applied, sweep_records{kind} x3, findings_suppressed, stream_lagged,
    // ready, build_info, kubernetes_api_errors, kubernetes_pods, namespaces_sharing_tcp_hash
    let features = MAX_FEATURE_SERIES;
    let self_metrics = 33 + MAX_ATTACHED_SERIES;
    states
        + features
        + netns
        + pods
        + close_wait
        + histogram
        + kernel
        + listeners
        + findings
        + self_metrics
        + endpoints::SERIES
        + bpf_programs::SERIES
        + state_changes::SERIES
        + owners::SERIES
        + exposure::series(top_k)
        + top_k
        + crate::serve::metrics::incidents::incident_series(top_k)
        + crate::serve::stats::MAX_SERIES
}

mod bpf_programs;
mod collector;
mod endpoints;
mod exposure;
pub mod incidents;
mod owners;
mod state_changes;
mod sweep_walk;

pub use collector::SelfCollector;
#[cfg(test)]
pub(crate) use collector::{build, encode};

pub(crate) fn to_i64<T: TryInto<i64>>(v: T) -> i64 {
    v.try_into().unwrap_or(i64::MAX)
}

/// Registers collectors on a fresh registry.
pub(crate) struct Builder {
    pub(crate) reg: Registry,
}

impl Builder {
    pub(crate) fn add<C: Collector + Clone + 'static>(&self, c: C) -> prometheus::Result<C> {
        self.reg.register(Box::new(c.clone()))?;
        Ok(c)
    }

    pub(crate) fn gauge(&self, name: &str, help: &str, v: i64) -> prometheus::Result<()> {
        self.add(IntGauge::new(name, help)?)?.set(v);
        Ok(())
    }

    /// A counter set to an absolute value read from elsewhere (kernel, table).
    pub(crate) fn counter(&self, name: &str, help: &str, v: u64) -> prometheus::Result<()> {
        self.add(IntCounter::new(name, help)?)?.inc_by(v);
        Ok(())
    }

    pub(crate) fn gauge_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntGaugeVec> {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels)?)
    }

    pub(crate) fn counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntCounterVec> {
        self.add(IntCounterVec::new(Opts::new(name, help), labels)?)
    }
}

/// Socket counts by state and namespace, the Send-Q histogram and listener backlogs.
fn connections(out: &Builder, sh: &View) -> prometheus::Result<()> {
    let mut by_state: HashMap<TcpState, i64> =
        TcpState::ALL.into_iter().map(|st| (st, 0)).collect();
    let mut by_netns: HashMap<u64, (u32, i64)> = sh
        .netns
        .iter()
        .map(|(cookie, info)| (*cookie, (info.id.inode, to_i64(info.time_wait))))
        .collect();
    crate::serve::time_wait::add_counted(&mut by_state, sh);
    // (port) -> (fill ratio, queue, limit) of the fullest listener on that port.
    let mut listeners: HashMap<u16, (f64, u32, u32)> = HashMap::new();
    let send_q = out.add(Histogram::with_opts(
        HistogramOpts::new(
            "tcpwatch_send_queue_bytes",
            "Send-Q (bytes written and not yet acknowledged) of ESTABLISHED connections.",
        )
        .buckets(SEND_QUEUE_BUCKETS.to_vec()),
    )?)?;
    for c in &sh.conns {
        *by_state.entry(c.state).or_default() += 1;
        by_netns
            .entry(c.netns.cookie)
            .or_insert((c.netns.inode, 0))
            .1 += 1;
        match c.state {
            TcpState::Established => send_q.observe(f64::from(c.queues.send_q)),
            TcpState::Listen => {
                let queue = c.queues.accept_queue;
                let cap = c.queues.accept_limit;
                let ratio = f64::from(queue) / f64::from(cap.max(1));
                let fullest = listeners
                    .entry(c.local.port())
                    .or_insert((ratio, queue, cap));
                if (ratio, queue) > (fullest.0, fullest.1) {
                    *fullest = (ratio, queue, cap);
                }
            }
            _ => {}
        }
    }

    let v = out.gauge_vec(
        "tcpwatch_sockets",
        "TCP sockets by state: those in the table, and for TIME_WAIT also the ones the sweep counted without listing them.",
        &["state"],
    )?;
    for (st, n) in by_state {
        v.with_label_values(&[st.name()]).set(n);
    }

    let v = out.gauge_vec(
        "tcpwatch_sockets_by_netns",
        "TCP sockets by network namespace (inode), counted TIME_WAIT included, the largest 50; the rest summed as netns=\"other\".",
        &["netns", "netns_name"],
    )?;
    let mut ns: Vec<(u64, u32, i64)> = by_netns
        .into_iter()
        .map(|(c, (ino, n))| (c, ino, n))
        .collect();
    ns.sort_unstable_by(|a, b| b.2.cmp(&a.2).then(a.1.cmp(&b.1)).then(a.0.cmp(&b.0)));
    for (cookie, inode, n) in ns.iter().take(MAX_NETNS_SERIES) {
        let name = sh.netns_names.get(cookie).map_or("", String::as_str);
        v.with_label_values(&[inode.to_string().as_str(), name])
            .add(*n);
    }
    if ns.len() > MAX_NETNS_SERIES {
        v.with_label_values(&["other", ""])
            .set(ns[MAX_NETNS_SERIES..].iter().map(|x| x.2).sum());
    }

    let mut ports: Vec<(u16, (f64, u32, u32))> = listeners.into_iter().collect();
    ports.sort_unstable_by(|a, b| {
        b.1.0
            .total_cmp(&a.1.0)
            .then(b.1.1.cmp(&a.1.1))
            .then(a.0.cmp(&b.0))
    });
    let fill = out.gauge_vec(
        "tcpwatch_listener_backlog",
        "Accept queue length of the fullest listener on each port (top 100 ports by fill ratio).",
        &["port"],
    )?;
    let limit = out.gauge_vec(
        "tcpwatch_listener_backlog_limit",
        "Accept queue limit of the listener reported by tcpwatch_listener_backlog.",
        &["port"],
    )?;
    for (port, (_, q, l)) in ports.into_iter().take(MAX_LISTENER_PORTS) {
        let port = port.to_string();
        fill.with_label_values(&[port.as_str()]).set(i64::from(q));
        limit.with_label_values(&[port.as_str()]).set(i64::from(l));
    }
    Ok(())
}

/// Sockets by the pod of their owner (pods whose name is known), the largest 100 pods.
fn pods(out: &Builder, sh: &View) -> prometheus::Result<()> {
    let mut by_pod: HashMap<(&str, &str), i64> = HashMap::new();
    for c in &sh.conns {
        if let Some(p) = c.owner.as_ref().and_then(|o| o.pod.as_ref())
            && !p.name.is_empty()
        {
            *by_pod
                .entry((p.namespace.as_str(), p.name.as_str()))
                .or_default() += 1;
        }
    }
    let v = out.gauge_vec(
        "tcpwatch_sockets_by_pod",
        "TCP sockets held by processes of each pod, the largest 100; the rest summed as pod_name=\"other\".",
        &["pod_namespace", "pod_name"],
    )?;
    let mut pods: Vec<((&str, &str), i64)> = by_pod.into_iter().collect();
    pods.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for ((namespace, name), n) in pods.iter().take(MAX_POD_SERIES) {
        v.with_label_values(&[*namespace, *name]).set(*n);
    }
    if pods.len() > MAX_POD_SERIES {
        v.with_label_values(&["", "other"])
            .set(pods[MAX_POD_SERIES..].iter().map(|x| x.1).sum());
    }
    Ok(())
}

/// Open findings by kind and severity, stuck `CLOSE_WAIT` by cause, the top-K flagged sockets.
fn findings(b: &Builder, s: &View, top_k: usize) -> prometheus::Result<()> {
    let open = b.gauge_vec(
        "tcpwatch_findings_open",
        "Open findings by kind and severity.",
        &["kind", "severity"],
    )?;
    for k in FindingKind::ALL {
        for sev in SEVERITIES {
            open.with_label_values(&[k.name(), sev.name()]).set(0);
        }
    }
    let cw = b.gauge_vec(
        "tcpwatch_close_wait_stuck",
        "Sockets stuck in CLOSE_WAIT (open close_wait_stuck findings), by cause.",
        &["kind"],
    )?;
    for cause in CLOSE_WAIT_CAUSES {
        cw.with_label_values(&[cause]).set(0);
    }
    let mut worst: Vec<&Finding> = Vec::new();
    for f in &s.judged.findings_open {
        open.with_label_values(&[f.kind.name(), f.severity.name()])
            .inc();
        if f.kind == FindingKind::CloseWaitStuck && CLOSE_WAIT_CAUSES.contains(&f.cause.as_str()) {
            cw.with_label_values(&[f.cause.as_str()]).inc();
        }
        if !matches!(f.subject, Subject::Port { .. } | Subject::Peer { .. }) {
            worst.push(f);
        }
    }
    // Worst first: highest severity, then oldest condition.
    worst.sort_unstable_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.since.cmp(&b.since))
            .then(a.id.cmp(&b.id))
    });
    let flagged = b.gauge_vec(
        "tcpwatch_flagged_connection",
        "1 for each of the top-K (daemon.top_k) worst open findings about one socket.",
        &[
            "kind",
            "severity",
            "local",
            "remote",
            "netns",
            "comm",
            "pod_namespace",
            "pod_name",
            "container_id",
        ],
    )?;
    // The records of flagged sockets, for their owners' labels.
    let flagged_recs: HashMap<&ConnKey, &ConnRecord> = s
        .conns
        .iter()
        .filter(|c| s.judged.flagged.contains(&c.key))
        .map(|c| (&c.key, &**c))
        .collect();
    for f in worst.into_iter().take(top_k) {
        let (key, netns, local, remote, owner) = match &f.subject {
            Subject::Connection {
                key,
                netns,
                local,
                remote,
                owner,
                ..
            } => (key, netns, local, remote.to_string(), owner),
            Subject::Listener {
                key,
                netns,
                local,
                owner,
            } => (key, netns, local, String::new(), owner),
            Subject::Port { .. } | Subject::Peer { .. } => continue,
        };
        let (comm, pod_ns, pod_name, container) =
            owner_labels(owner.as_ref(), flagged_recs.get(key).copied());
        let labels = [
            f.kind.name(),
            f.severity.name(),
            &local.to_string(),
            &remote,
            &netns.inode.to_string(),
            comm,
            pod_ns,
            pod_name,
            container,
        ];
        flagged.with_label_values(&labels).set(1);
    }
    b.gauge(
        "tcpwatch_findings_suppressed",
        "Conditions not opened as findings because detectors.max_open_findings was reached.",
        to_i64(s.judged.findings_suppressed),
    )
}

/// `comm`, pod namespace, pod name and short container id of a flagged socket's owner: the
/// finding's copy of the owner, completed by the table's record (which may know the pod's name
/// first), else the task that created the socket.
fn owner_labels<'a>(
    owner: Option<&'a Owner>,
    rec: Option<&'a ConnRecord>,
) -> (&'a str, &'a str, &'a str, &'a str) {
    let proc_owner = owner.or_else(|| rec.and_then(|c| c.owner.as_deref()));
    let comm = proc_owner
        .map(|o| o.comm.as_str())
        .or_else(|| rec.and_then(|c| c.creator_comm.as_deref()))
        .unwrap_or("");
    let pod = rec
        .and_then(|c| c.owner.as_ref())
        .and_then(|o| o.pod.as_ref())
        .filter(|p| !p.name.is_empty())
        .or_else(|| proc_owner.and_then(|o| o.pod.as_ref()));
    let (pod_ns, pod_name) = pod.map_or(("", ""), |p| (p.namespace.as_str(), p.name.as_str()));
    let container = proc_owner
        .and_then(|o| o.container_id.as_deref())
        .map_or("", short_id);
    (comm, pod_ns, pod_name, container)
}

/// Kernel counters and the daemon's own accounting.
fn kernel(out: &Builder, sh: &View) -> prometheus::Result<()> {
    let kc = |i: u32| sh.kernel_counters[i as usize];
    out.counter(
        "tcpwatch_retransmits_total",
        "TCP segment retransmissions seen by the kernel probe.",
        kc(counter::RETRANS),
    )?;
    let v = out.counter_vec(
        "tcpwatch_resets_total",
        "TCP resets seen by the kernel probe.",
        &["direction"],
    )?;
    v.with_label_values(&["sent"])
        .inc_by(kc(counter::RESETS_SENT));
    v.with_label_values(&["received"])
        .inc_by(kc(counter::RESETS_RECEIVED));
    out.counter(
        "tcpwatch_kernel_events_submitted_total",
        "State events written to the ring buffer.",
        kc(counter::EVENTS_SUBMITTED),
    )?;
    out.counter(
        "tcpwatch_ringbuf_dropped_events_total",
        "State events lost because the ring buffer was full.",
        kc(counter::EVENTS_DROPPED),
    )?;
    let v = out.counter_vec(
        "tcpwatch_kernel_map_full_total",
        "Kernel map inserts that failed because the map was full (socks: per-socket state that \
         could not be created, SOCKS hash full or socket-local storage not allocated).",
        &["map"],
    )?;
    v.with_label_values(&["socks"])
        .inc_by(kc(counter::SOCKS_FULL));
    out.counter(
        "tcpwatch_sweep_write_failed_total",
        "Sweep records the kernel iterator failed to write.",
        kc(counter::SWEEP_WRITE_FAILED),
    )?;
    Ok(())
}

/// The daemon's own accounting: events, sweeps, the stream, the table, programs.
fn daemon(out: &Builder, sh: &View) -> prometheus::Result<()> {
    let st = &sh.stats;
    out.counter(
        "tcpwatch_events_received_total",
        "State events read from the ring buffer.",
        st.events_received,
    )?;
    out.counter(
        "tcpwatch_events_malformed_total",
        "Ring buffer events of unexpected size.",
        st.events_malformed,
    )?;
    out.counter(
        "tcpwatch_sweeps_total",
        "Whole-host socket sweeps done.",
        st.sweeps,
    )?;
    out.counter(
        "tcpwatch_sweep_errors_total",
        "Namespaces that could not be swept.",
        st.sweep_errors,
    )?;
    out.counter(
        "tcpwatch_alertmanager_alerts_sent_total",
        "Finding alerts Alertmanager accepted.",
        st.alerts_sent,
    )?;
    out.counter(
        "tcpwatch_alertmanager_alerts_failed_total",
        "Finding alerts not delivered to Alertmanager (error, timeout, non-2xx, queue full).",
        st.alerts_failed,
    )?;
    out.counter(
        "tcpwatch_namespaces_vanished_total",
        "Namespaces that disappeared between discovery and their sweep (normal churn).",
        st.namespaces_vanished,
    )?;
    out.add(Gauge::new(
        "tcpwatch_sweep_duration_seconds",
        "Duration of the last sweep.",
    )?)?
    .set(st.last_sweep_seconds);
    out.gauge(
        "tcpwatch_sweep_sockets",
        "Sockets listed by the last sweep.",
        to_i64(st.last_sweep_sockets),
    )?;
    out.gauge(
        "tcpwatch_namespaces",
        "Network namespaces swept by the last sweep.",
        to_i64(st.last_sweep_namespaces),
    )?;
    out.counter(
        "tcpwatch_stream_lagged_total",
        "Stream events lost by slow /api/v1/stream subscribers.",
        st.stream_lagged,
    )?;
    out.counter(
        "tcpwatch_kubernetes_api_errors_total",
        "Failed pod list/watch requests to the Kubernetes API server.",
        crate::host::k8s::api_errors(),
    )?;
    out.gauge(
        "tcpwatch_kubernetes_pods",
        "Pods of this node known from the API server (names for the pod UIDs of cgroups).",
        to_i64(crate::host::k8s::pods_known()),
    )?;

    Ok(())
}

fn table(out: &Builder, sh: &View) -> prometheus::Result<()> {
    let t = sh.table_stats;
    out.gauge(
        "tcpwatch_table_connections",
        "Connections in the table.",
        to_i64(sh.conns.len()),
    )?;
    out.gauge(
        "tcpwatch_table_max_connections",
        "Most connections the table keeps.",
        to_i64(sh.table_max),
    )?;
    out.counter(
        "tcpwatch_table_events_applied_total",
        "State events applied to the table.",
        t.events_applied,
    )?;
    out.counter(
        "tcpwatch_table_inserted_total",
        "Records inserted into the table.",
        t.inserted,
    )?;
    let v = out.counter_vec(
        "tcpwatch_table_removed_total",
        "Records removed from the table, by reason.",
        &["reason"],
    )?;
    v.with_label_values(&["closed"]).inc_by(t.removed_closed);
    v.with_label_values(&["sweep"]).inc_by(t.removed_by_sweep);
    v.with_label_values(&["netns_gone"])
        .inc_by(t.removed_netns_gone);
    out.counter(
        "tcpwatch_table_evictions_total",
        "Records evicted because the table was full.",
        t.evicted,
    )?;
    out.counter(
        "tcpwatch_table_sweeps_applied_total",
        "Namespace sweeps applied to the table.",
        t.sweeps_applied,
    )?;
    let v = out.counter_vec(
        "tcpwatch_sweep_records_total",
        "Sweep records by kind: full, unchanged (change-only sweeps), unknown (unchanged, for a \
         socket the table did not have: the namespace's next sweep is full).",
        &["kind"],
    )?;
    v.with_label_values(&["full"]).inc_by(t.sweep_records_full);
    v.with_label_values(&["unchanged"])
        .inc_by(t.sweep_records_unchanged);
    v.with_label_values(&["unknown"])
        .inc_by(t.sweep_records_unknown);
    Ok(())
}

fn programs(out: &Builder, sh: &View) -> prometheus::Result<()> {
    let v = out.gauge_vec(
        "tcpwatch_attached_programs",
        "eBPF programs attached, by tracepoint and variant.",
        &["tracepoint", "variant"],
    )?;
    for a in sh.startup.attached.iter().take(MAX_ATTACHED_SERIES) {
        v.with_label_values(&[a.tracepoint, a.variant]).set(1);
    }
    if let Some(f) = &sh.startup.features {
        let v = out.gauge_vec(
            "tcpwatch_kernel_feature",
            "Kernel features found at start-up: 1 yes, 0 no, -1 could not be probed \
             (hook counts for tp_btf_attached/raw_tp_attached).",
            &["feature"],
        )?;
        for (name, value) in f.metric_values().into_iter().take(MAX_FEATURE_SERIES) {
            v.with_label_values(&[name.as_str()]).set(value);
        }
    }
    out.gauge(
        "tcpwatch_ready",
        "1 once programs are attached and the first sweep is in.",
        i64::from(sh.ready),
    )?;
    let v = out.gauge_vec(
        "tcpwatch_build_info",
        "Always 1; the version of tcpwatch.",
        &["version"],
    )?;
    v.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
