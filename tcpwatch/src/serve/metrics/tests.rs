//! Tests of `/metrics` and the fixtures the HTTP tests share.
#![allow(
    clippy::float_cmp,
    reason = "sample values are small integers, exact in f64"
)]
use tcpwatch_common::{AF_INET, SockRecord, record_flags, tcp_state};
use tcpwatch_core::config::{DetectorConfig, IncidentConfig};
use tcpwatch_core::detect::Detectors;
use tcpwatch_core::model::{NS_PER_SEC, NetnsId, NetnsInfo, Owner, PodRef};
use tcpwatch_core::table::{ConnTable, KernelClock, TableConfig};
use tcpwatch_core::wall::WallClock;

use super::*;
use crate::state::{Evaluation, Shared};

/// Base of the fake monotonic clock of the fixtures.
pub(crate) const T0: u64 = 1_000 * NS_PER_SEC;

/// A full, tracked socket 10.0.0.1:`sport` -> 10.0.0.2:`dport` in `state` since T0.
pub(crate) fn sock(skaddr: u64, netns: u64, state: u8, sport: u16, dport: u16) -> SockRecord {
    SockRecord {
        skaddr,
        netns_cookie: netns,
        netns_ino: 4_026_531_000 + u32::try_from(netns).unwrap(),
        family: AF_INET,
        sport,
        dport,
        saddr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        daddr: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        state,
        flags: record_flags::FULL_SOCK | record_flags::TRACKED | record_flags::HAS_SOCKET,
        state_since_ns: T0,
        first_seen_ns: T0,
        inode: 1000 + skaddr,
        pid: 42,
        comm: *b"server\0\0\0\0\0\0\0\0\0\0",
        ..SockRecord::default()
    }
}

/// A `Shared` whose table holds the sweeps of each (netns cookie, records) at T0.
pub(crate) fn shared_with(sweeps: &[(u64, Vec<SockRecord>)]) -> Shared {
    let mut s = Shared::new(
        ConnTable::new(TableConfig::default()),
        Detectors::new(DetectorConfig::default()),
        IncidentConfig::default(),
    );
    let mut deltas = Vec::new();
    for (cookie, recs) in sweeps {
        let inode = recs.first().map_or(0, |r| r.netns_ino);
        s.netns.insert(
            *cookie,
            NetnsInfo::with_defaults(NetnsId {
                cookie: *cookie,
                inode,
            }),
        );
        s.table.apply_sweep(
            *cookie,
            recs,
            &[],
            T0,
            KernelClock { hz: 1000 },
            T0,
            Some(&mut deltas),
        );
    }
    s
}

/// Runs the detectors `secs` seconds after `T0` (`CLOSE_WAIT` sockets open findings at 30 s).
/// Incidents are regrouped too; the wall clock reads 2026-12-01T00:00:00Z at T0.
pub(crate) fn evaluate_at(s: &mut Shared, secs: u64) -> Evaluation {
    let wall = WallClock::at(T0, 1_796_083_200 * u128::from(NS_PER_SEC));
    s.evaluate(T0 + secs * NS_PER_SEC, wall)
}

/// An owner in pod `namespace/name` whose container id is `n` in 64 hex digits.
pub(crate) fn pod_owner(n: u64, namespace: &str, name: &str) -> Owner {
    Owner {
        pid: 42,
        comm: "server".into(),
        container_id: Some(format!("{n:064x}")),
        pod: Some(PodRef {
            namespace: namespace.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        }),
        ..Owner::default()
    }
}

/// Parses the text format: (name, labels, value) of every sample line.
pub(crate) fn parse(text: &str) -> Vec<(String, String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            let value: f64 = value.parse().unwrap_or_else(|e| panic!("{l}: {e}"));
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}').unwrap_or_else(|| panic!("{l}"))),
                None => (series, ""),
            };
            assert!(name.starts_with("tcpwatch_"), "{l}");
            (name.to_owned(), labels.to_owned(), value)
        })
        .collect()
}

fn value(samples: &[(String, String, f64)], name: &str, labels: &str) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.0 == name && s.1 == labels)
        .map(|s| s.2)
}

#[test]
fn small_host_exports_expected_series() {
    let mut l = sock(1, 1, tcp_state::LISTEN, 8080, 0);
    l.ack_backlog = 3;
    l.max_ack_backlog = 4;
    let mut e = sock(2, 1, tcp_state::ESTABLISHED, 8080, 40000);
    e.write_seq = 20_000;
    let mut cw = sock(3, 1, tcp_state::CLOSE_WAIT, 8080, 40001);
    cw.inode = 0;
    let mut s = shared_with(&[(1, vec![l, e, cw])]);
    s.netns_names.insert(1, "blue".into());
    s.kernel_counters[counter::RESETS_SENT as usize] = 7;
    s.kernel_counters[counter::EVENTS_DROPPED as usize] = 2;
    evaluate_at(&mut s, 60);
    assert!(s.detectors.open_count() >= 1);
    let text = encode(&build(&crate::view::View::of(&s), 10).unwrap()).unwrap();
    let m = parse(&text);
    assert_eq!(value(&m, "tcpwatch_sockets", "state=\"LISTEN\""), Some(1.0));
    assert_eq!(
        value(&m, "tcpwatch_sockets", "state=\"TIME_WAIT\""),
        Some(0.0)
    );
    assert_eq!(
        value(
            &m,
            "tcpwatch_sockets_by_netns",
            "netns=\"4026531001\",netns_name=\"blue\""
        ),
        Some(3.0)
    );
    assert_eq!(
        value(&m, "tcpwatch_listener_backlog", "port=\"8080\""),
        Some(3.0)
    );
    assert_eq!(
        value(&m, "tcpwatch_listener_backlog_limit", "port=\"8080\""),
        Some(4.0)
    );
    assert_eq!(
        value(&m, "tcpwatch_send_queue_bytes_bucket", "le=\"16384\""),
        Some(0.0)
    );
    assert_eq!(
        value(&m, "tcpwatch_send_queue_bytes_bucket", "le=\"65536\""),
        Some(1.0)
    );
    assert_eq!(value(&m, "tcpwatch_send_queue_bytes_count", ""), Some(1.0));
    assert_eq!(
        value(&m, "tcpwatch_resets_total", "direction=\"sent\""),
        Some(7.0)
    );
    assert_eq!(
        value(&m, "tcpwatch_ringbuf_dropped_events_total", ""),
        Some(2.0)
    );
    assert_eq!(
        value(&m, "tcpwatch_close_wait_stuck", "kind=\"unaccepted\""),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "tcpwatch_close_wait_stuck", "kind=\"owned\""),
        Some(0.0)
    );
    assert_eq!(value(&m, "tcpwatch_ready", ""), Some(0.0));
    assert_eq!(value(&m, "tcpwatch_table_connections", ""), Some(3.0));
    let flagged: Vec<_> = m
        .iter()
        .filter(|x| x.0 == "tcpwatch_flagged_connection")
        .collect();
    assert!(!flagged.is_empty());
    assert!(
        flagged
            .iter()
            .any(|x| x.1.contains("kind=\"close_wait_stuck\"")
                && x.1.contains("local=\"10.0.0.1:8080\"")
                && x.1.contains("remote=\"10.0.0.2:40001\"")
                && x.1.contains("comm=\"server\"")),
        "{flagged:?}"
    );
    let open: f64 = m
        .iter()
        .filter(|x| x.0 == "tcpwatch_findings_open")
        .map(|x| x.2)
        .sum();
    assert_eq!(
        open,
        f64::from(u32::try_from(s.detectors.open_count()).unwrap())
    );
    assert_eq!(
        m.iter().filter(|x| x.0 == "tcpwatch_findings_open").count(),
        24,
        "8 kinds x 3 severities"
    );
    assert!(m.len() <= series_bound(10));
}

/// Sockets count for the pod of their owner once its name is known; flagged sockets name
/// their pod and container.
#[test]
fn pods_label_sockets_and_flagged_connections() {
    let mut cw = sock(1, 1, tcp_state::CLOSE_WAIT, 8080, 40001);
    cw.inode = 5;
    let mut s = shared_with(&[(
        1,
        vec![
            cw,
            sock(2, 1, tcp_state::ESTABLISHED, 8080, 40002),
            sock(3, 1, tcp_state::ESTABLISHED, 8080, 40003),
        ],
    )]);
    s.table.attach_owners(|ino| {
        let mut o = pod_owner(0xabc, "shop", "web-0");
        if ino == 1003 {
            // Known by UID only: not counted, no series of its own.
            o.pod = Some(PodRef {
                uid: "uid-other".into(),
                ..PodRef::default()
            });
        }
        Some(o.into())
    });
    evaluate_at(&mut s, 60);
    let m = parse(&encode(&build(&crate::view::View::of(&s), 10).unwrap()).unwrap());
    let by_pod: Vec<_> = m
        .iter()
        .filter(|x| x.0 == "tcpwatch_sockets_by_pod")
        .collect();
    assert_eq!(by_pod.len(), 1, "{by_pod:?}");
    assert_eq!(
        value(
            &m,
            "tcpwatch_sockets_by_pod",
            "pod_name=\"web-0\",pod_namespace=\"shop\""
        ),
        Some(2.0)
    );
    let flagged: Vec<_> = m
        .iter()
        .filter(|x| x.0 == "tcpwatch_flagged_connection")
        .collect();
    assert!(
        flagged
            .iter()
            .any(|x| x.1.contains("kind=\"close_wait_stuck\"")
                && x.1.contains("container_id=\"000000000000\"")
                && x.1.contains("pod_name=\"web-0\",pod_namespace=\"shop\"")),
        "{flagged:?}"
    );
}

/// 20 000 connections over 2 000 local ports in 100 namespaces, many of them flagged:
/// the series count stays under the documented bound.
/// More programs than the cap of their series (tcpwatch loads 7).
fn more_programs_than_the_cap() -> std::sync::Arc<tcpwatch_core::api::ProgramsStatus> {
    let programs = (0..super::bpf_programs::MAX_PROGRAMS + 3)
        .map(|i| tcpwatch_core::api::ProgramStats {
            program: format!("prog_{i}"),
            run_count: 1,
            ..Default::default()
        })
        .collect();
    std::sync::Arc::new(tcpwatch_core::api::ProgramsStatus {
        programs,
        ..Default::default()
    })
}

#[test]
fn cardinality_is_bounded() {
    let mut sweeps = Vec::new();
    let mut skaddr = 0;
    for ns in 1..=100_u64 {
        let mut recs = Vec::new();
        for p in 0..20_u16 {
            let port = 10_000 + u16::try_from(ns).unwrap() * 20 + p;
            skaddr += 1;
            let mut l = sock(skaddr, ns, tcp_state::LISTEN, port, 0);
            l.ack_backlog = u32::from(p);
            l.max_ack_backlog = 128;
            recs.push(l);
            for c in 0..9_u16 {
                skaddr += 1;
                let st = if c == 0 {
                    tcp_state::CLOSE_WAIT
                } else {
                    tcp_state::ESTABLISHED
                };
                let mut r = sock(skaddr, ns, st, port, 30_000 + c);
                r.write_seq = u32::from(c) * 100_000;
                recs.push(r);
            }
        }
        sweeps.push((ns, recs));
    }
    let mut s = shared_with(&sweeps);
    assert_eq!(s.table.len(), 20_000);
    // 300 pods, each with its own container.
    s.table.attach_owners(|ino| {
        let pod = format!("pod-{}", ino % 300);
        Some(pod_owner(ino % 300, "ns", &pod).into())
    });
    evaluate_at(&mut s, 60);
    // Every reset reason slot of the kernel seen (the reason family full).
    let reasons = (0..tcpwatch_common::endpoints::RESET_REASONS_MAX)
        .map(|r| (format!("REASON_{r}"), u64::from(r) + 1))
        .collect();
    s.detectors
        .set_endpoint_facts(tcpwatch_core::endpoints::EndpointFacts {
            reset_reasons: reasons,
            ..Default::default()
        });
    s.programs = more_programs_than_the_cap();
    assert!(
        s.detectors.open_count() >= 2_000,
        "{}",
        s.detectors.open_count()
    );
    for top_k in [10, 50] {
        let m = parse(&encode(&build(&crate::view::View::of(&s), top_k).unwrap()).unwrap());
        assert!(
            m.len() <= series_bound(top_k),
            "{} > {}",
            m.len(),
            series_bound(top_k)
        );
        // Every capped family is full here: the bound is exact but for unattached programs,
        // the kernel feature probe (no kernel in a unit test) and the HTTP listeners' own
        // series (added by the HTTP layer, `serve::stats`).
        assert_eq!(
            m.len(),
            series_bound(top_k)
                - MAX_ATTACHED_SERIES
                - MAX_FEATURE_SERIES
                - crate::serve::stats::MAX_SERIES
        );
        let count = |n: &str| m.iter().filter(|x| x.0 == n).count();
        assert_eq!(count("tcpwatch_flagged_connection"), top_k);
        assert_eq!(count("tcpwatch_incident"), top_k);
        assert_eq!(count("tcpwatch_exposure_owner_exposed_connections"), top_k);
        assert_eq!(count("tcpwatch_exposure_owner_worst_case_seconds"), top_k);
        assert!(s.incidents.open_count() > top_k);
        assert_eq!(count("tcpwatch_listener_backlog"), MAX_LISTENER_PORTS);
        assert_eq!(count("tcpwatch_sockets_by_netns"), MAX_NETNS_SERIES + 1);
        assert_eq!(count("tcpwatch_sockets_by_pod"), MAX_POD_SERIES + 1);
        let total: f64 = m
            .iter()
            .filter(|x| x.0 == "tcpwatch_sockets_by_pod")
            .map(|x| x.2)
            .sum();
        assert_eq!(total, 20_000.0);
        assert!(
            m.iter()
                .filter(|x| x.0 == "tcpwatch_flagged_connection")
                .all(|x| x.1.contains("pod_name=\"pod-")
                    && x.1.contains("pod_namespace=\"ns\"")
                    && x.1.contains("container_id=\"0000000000")),
        );
        let total: f64 = m
            .iter()
            .filter(|x| x.0 == "tcpwatch_sockets_by_netns")
            .map(|x| x.2)
            .sum();
        assert_eq!(total, 20_000.0);
        // The fullest listeners are the ones kept.
        assert!(
            m.iter()
                .filter(|x| x.0 == "tcpwatch_listener_backlog")
                .all(|x| x.2 >= 19.0)
        );
    }
    // The number documented in docs/metrics.md.
    assert_eq!(series_bound(10), 721);
}
