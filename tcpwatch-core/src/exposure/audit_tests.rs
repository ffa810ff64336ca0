#![allow(clippy::unwrap_used, reason = "test code")]
use std::collections::HashMap;

use super::*;
use crate::detect::testutil::{NETNS, conn, owner};
use crate::model::{KeepaliveOpts, NetnsInfo, TcpState};

fn api(local_port: u16, send_q: u32, ka: bool) -> ConnRecord {
    let mut c = conn(
        TcpState::Established,
        &format!("10.0.0.1:{local_port}"),
        "10.0.0.2:80",
    );
    c.owner = Some(owner(42, "api", i32::from(local_port % 100)).into());
    c.queues.send_q = send_q;
    c.tcp.keepalive = KeepaliveOpts {
        enabled: ka,
        time_ms: 10_000,
        intvl_ms: 5_000,
        probes: 3,
    };
    c
}

fn netns() -> HashMap<u64, NetnsInfo> {
    HashMap::from([(NETNS.cookie, NetnsInfo::with_defaults(NETNS))])
}

#[test]
fn groups_per_process_and_remote_with_counts_and_diagnosis() {
    let conns = vec![
        api(40001, 0, false),
        api(40002, 0, false),
        api(40003, 10, false),
        api(40004, 0, true),
    ];
    let r = audit(&conns, &netns(), 300);
    assert_eq!(r.connections, 4);
    assert_eq!(r.exposed, 3);
    assert_eq!(r.never, 2);
    assert_eq!(r.groups.len(), 1);
    let g = &r.groups[0];
    assert_eq!(g.process, "api[42]");
    assert_eq!(g.pid, Some(42));
    assert_eq!(
        (g.connections, g.exposed, g.never, g.in_flight),
        (4, 3, 2, 1)
    );
    assert_eq!(g.worst_case_ms, None);
    assert!(
        g.diagnosis.contains("2 idle with no keepalive"),
        "{}",
        g.diagnosis
    );
    assert!(g.diagnosis.contains("tcp_retries2=15"), "{}", g.diagnosis);
    assert!(g.diagnosis.contains("TCP_USER_TIMEOUT"), "{}", g.diagnosis);
    // Worst first: the two "never", then 924.6 s, then 25 s.
    let w: Vec<_> = g.sockets.iter().map(|s| s.exposure.worst_case_ms).collect();
    assert_eq!(w, [None, None, Some(924_600), Some(25_000)]);
    // Histogram: 25 s in the 30 s bucket, 924.6 s in the 1800 s one, two never.
    assert_eq!(r.histogram.count, 2);
    assert_eq!(r.histogram.never, 2);
    assert_eq!(r.histogram.sum_ms, 949_600);
    let b: HashMap<u64, u64> = r.histogram.buckets.iter().copied().collect();
    assert_eq!(
        (b[&10], b[&30], b[&900], b[&1800], b[&7200]),
        (0, 1, 1, 2, 2)
    );
}

#[test]
fn a_bounded_group_says_so_and_threshold_counts() {
    let conns = vec![api(40004, 0, true)];
    let r = audit(&conns, &netns(), 300);
    assert_eq!(r.exposed, 0);
    assert!(
        r.groups[0].diagnosis.starts_with("bounded"),
        "{}",
        r.groups[0].diagnosis
    );
    // With a 10 s threshold the 25 s keepalive is exposed.
    let r = audit(&conns, &netns(), 10);
    assert_eq!(r.exposed, 1);
    assert!(
        r.groups[0].diagnosis.contains("TCP_KEEPIDLE"),
        "{}",
        r.groups[0].diagnosis
    );
}

#[test]
fn tcp_retries2_of_the_namespace_changes_the_figure() {
    let conns = vec![api(40003, 10, false)];
    let mut n = netns();
    n.get_mut(&NETNS.cookie).unwrap().tcp_retries2 = 5;
    let r = audit(&conns, &n, 300);
    assert_eq!(r.groups[0].worst_case_ms, Some(12_600));
    assert_eq!(r.exposed, 0);
}

#[test]
fn process_line_for_incidents() {
    let conns: Vec<ConnRecord> = (0..13).map(|i| api(40010 + i, 0, false)).collect();
    let r = audit(&conns, &netns(), 300);
    let line = process_line(&r, 42, "10.0.0.2:80".parse().unwrap(), &[conns[0].local]).unwrap();
    assert!(
        line.starts_with(
            "other connections of api[42] to 10.0.0.2:80 would hang too: 12 with no timeout"
        ),
        "{line}"
    );
    assert!(process_line(&r, 43, "10.0.0.2:80".parse().unwrap(), &[]).is_none());
    let ok = vec![api(40004, 0, true)];
    let r = audit(&ok, &netns(), 300);
    assert!(process_line(&r, 42, "10.0.0.2:80".parse().unwrap(), &[]).is_none());
}

#[test]
fn processes_sum_their_groups() {
    let mut other = api(40020, 0, true);
    other.remote = "10.0.0.9:443".parse().unwrap();
    let conns = vec![api(40001, 0, false), api(40003, 10, false), other];
    let r = audit(&conns, &netns(), 300);
    assert_eq!(r.groups.len(), 2);
    assert_eq!(r.processes.len(), 1);
    let p = &r.processes[0];
    assert_eq!((p.connections, p.exposed, p.never), (3, 2, 1));
    assert_eq!(p.worst_case_ms, None);
}

#[test]
fn lists_are_bounded_and_counted() {
    let conns: Vec<ConnRecord> = (0..40).map(|i| api(41000 + i, 0, false)).collect();
    let r = audit(&conns, &netns(), 300);
    let g = &r.groups[0];
    assert_eq!(g.connections, 40);
    assert_eq!(g.sockets.len(), MAX_SOCKETS_LISTED);
    assert_eq!(g.sockets_omitted, 8);
}

#[test]
fn a_large_group_lists_its_worst_sockets_in_order() {
    // Past 2 x MAX_SOCKETS_LISTED the group keeps only its worst sockets while folding: the
    // list must be what one sort of every socket would give (never first, then the longest
    // wait, then the local address), and the counts must cover every socket.
    let conns: Vec<ConnRecord> = (0..200_u16)
        .rev()
        .map(|i| api(40_000 + i, if i % 3 == 0 { 100 } else { 0 }, i % 2 == 0))
        .collect();
    let r = audit(&conns, &netns(), 300);
    let g = &r.groups[0];
    assert_eq!(g.connections, 200);
    assert_eq!(g.sockets_omitted as usize, 200 - MAX_SOCKETS_LISTED);
    let mut all: Vec<ExposedSocket> = conns
        .iter()
        .map(|c| ExposedSocket {
            key: c.key,
            local: c.local,
            remote: c.remote,
            exposure: super::assess(c, &NetnsInfo::with_defaults(NETNS)).unwrap(),
        })
        .collect();
    all.sort_by(|a, b| {
        worse(a.exposure.worst_case_ms, b.exposure.worst_case_ms).then(a.local.cmp(&b.local))
    });
    all.truncate(MAX_SOCKETS_LISTED);
    assert_eq!(g.sockets, all);
    let never = conns
        .iter()
        .filter(|c| c.queues.send_q == 0 && !c.tcp.keepalive.enabled)
        .count();
    assert_eq!(g.never as usize, never);
    assert_eq!(g.worst_case_ms, None);
    assert!(
        g.diagnosis
            .starts_with(&format!("{never} idle with no keepalive")),
        "{}",
        g.diagnosis
    );
}

#[test]
fn wait_text_formats() {
    assert_eq!(wait_text(None), "never");
    assert_eq!(wait_text(Some(924_600)), "15m24s");
    assert_eq!(wait_text(Some(5_000)), "5s");
}

#[test]
fn upstream_incident_diagnosis_names_the_process_exposure() {
    use crate::incident::testkit::{NS1, book, ctx, step, upstream};
    // api[42] has 13 idle connections to 10.0.0.2:80 without keepalive; one of them is the
    // incident's member.
    let conns: Vec<ConnRecord> = (0..13)
        .map(|i| {
            let mut c = api(40010 + i, 0, false);
            c.key.netns_cookie = NS1.cookie;
            c.netns = NS1;
            c
        })
        .collect();
    let namespaces = HashMap::from([(NS1.cookie, NetnsInfo::with_defaults(NS1))]);
    let mut context = ctx(&[]);
    context.exposure = Some(audit(&conns, &namespaces, 300));
    let finding = upstream(
        crate::model::FindingKind::RetransmitChain,
        "no_ack_progress",
        NS1,
        42,
        "api",
        40010,
        "10.0.0.2:80",
    );
    let mut b = book();
    let ch = step(&mut b, 0.0, std::slice::from_ref(&finding), &context);
    let d = &ch[0].incident.diagnosis;
    assert!(
        d.contains(
            "other connections of api[42] to 10.0.0.2:80 would hang too: 12 with no timeout"
        ),
        "{d}"
    );
    // Without the audit, the diagnosis is as before.
    let mut b = book();
    let ch = step(&mut b, 0.0, &[finding], &ctx(&[]));
    assert!(!ch[0].incident.diagnosis.contains("would hang too"));
}
