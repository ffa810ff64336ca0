//! Tests of the grouping rules, one per rule, through the book's public API.
#![allow(clippy::unwrap_used, reason = "tests")]
use super::super::testkit::{
    NS1, NS2, assert_indexed, backlog, book, changes, ctx, cw_owned, cw_unaccepted, resets, s,
    step, upstream,
};
use crate::incident::{IncidentKind, ProcessRef};
use crate::model::Lifecycle::{Opened, Updated};
use crate::model::{FindingKind, Severity};

fn server() -> ProcessRef {
    ProcessRef {
        pid: 77,
        comm: "server".to_owned(),
    }
}

#[test]
fn listener_with_200_unaccepted_close_wait_is_one_incident() {
    let mut b = book();
    let c = ctx(&[(NS1, 8080, Some((77, "server")), 513, 512)]);
    let mut fs = vec![backlog(NS1, 8080, Some((77, "server")), "overflowing")];
    for p in 0..200u16 {
        let mut f = cw_unaccepted(NS1, 8080, 40000 + p);
        f.since = s(-133.0 + f64::from(p % 7));
        fs.push(f);
    }
    let ch = step(&mut b, 0.0, &fs, &c);
    assert_eq!(changes(&ch), vec![(Opened, "listener-1-8080".to_owned())]);
    assert_eq!(b.open_count(), 1);
    let inc = b.get("listener-1-8080").unwrap();
    assert_eq!(inc.kind, IncidentKind::ListenerNotAccepting);
    assert_eq!(inc.cause, "not_accepting");
    assert_eq!(inc.severity, Severity::Critical);
    assert_eq!(inc.root.local_port, Some(8080));
    assert_eq!(inc.root.process, Some(server()));
    assert_eq!(inc.root.netns, NS1);
    assert_eq!(inc.root.remote, None);
    assert_eq!(inc.counts["close_wait_stuck"], 200);
    assert_eq!(inc.counts["accept_backlog_filling"], 1);
    assert_eq!(inc.members_total, 201);
    assert_eq!(inc.members.len(), 50);
    assert_eq!(inc.since, s(-133.0));
    assert_eq!(inc.since_time, "2026-11-30T23:57:47.000Z");
    assert_eq!(
        inc.diagnosis,
        "app is not calling accept() on :8080 (server[77], netns 4026531833): accept queue 513/512, \
         new connections are dropped (ListenOverflows rising), 200 connections queued and already \
         closed by the peer (CLOSE_WAIT, never accepted), oldest 2m13s; look at what keeps \
         server[77] from accepting (a connection limit such as netutil.LimitListener, a blocked \
         accept loop) and dump its threads"
    );
    assert_indexed(&b, &fs);
}

#[test]
fn unaccepted_close_wait_alone_takes_the_owner_from_the_table() {
    let fs: Vec<_> = (0..200u16).map(|p| cw_unaccepted(NS1, 8080, p)).collect();
    let mut b = book();
    step(
        &mut b,
        0.0,
        &fs,
        &ctx(&[(NS1, 8080, Some((77, "server")), 200, 128)]),
    );
    let inc = b.get("listener-1-8080").unwrap();
    assert_eq!(b.open_count(), 1);
    assert_eq!(inc.root.process, Some(server()));
    assert_eq!(inc.members_total, 200);
    assert_eq!(inc.members.len(), 50);
    assert!(
        inc.diagnosis
            .contains("accept queue 200/128, 200 connections queued")
    );
    // A filling queue alone: slow rather than stopped.
    let mut b = book();
    let filling = backlog(NS1, 8080, Some((77, "server")), "filling");
    step(&mut b, 0.0, &[filling], &ctx(&[]));
    assert_eq!(
        b.get("listener-1-8080").unwrap().diagnosis,
        "app is not accepting fast enough on :8080 (server[77], netns 4026531833): accept queue \
         513/512; look at what keeps server[77] from accepting (a connection limit such as \
         netutil.LimitListener, a blocked accept loop) and dump its threads"
    );
    // Without the listener in the table: no owner, still one incident.
    let mut b = book();
    step(&mut b, 0.0, &fs, &ctx(&[]));
    let inc = b.get("listener-1-8080").unwrap();
    assert_eq!(inc.root.process, None);
    assert!(
        inc.diagnosis
            .starts_with("app is not calling accept() on :8080 (an unidentified process"),
        "{}",
        inc.diagnosis
    );
}

#[test]
fn owned_close_wait_groups_per_process_and_listening_port() {
    let c = ctx(&[
        (NS1, 8080, Some((77, "server")), 0, 128),
        (NS1, 9090, None, 0, 128),
    ]);
    let mut fs: Vec<_> = (0..20u16)
        .map(|p| {
            let mut f = cw_owned(NS1, 77, "server", 8080, 5000 + p);
            f.since = s(-133.0 + f64::from(p));
            f
        })
        .collect();
    // Owner unknown on a listening port: per (netns, port).
    let mut unknown = cw_owned(NS1, 0, "", 9090, 1);
    if let crate::model::Subject::Connection { owner, .. } = &mut unknown.subject {
        *owner = None;
    }
    fs.push(unknown);
    // Outgoing connections (local port not listening) of the same process: one more group.
    fs.push(cw_owned(NS1, 77, "server", 40001, 443));
    fs.push(cw_owned(NS1, 77, "server", 40002, 443));
    let mut b = book();
    step(&mut b, 0.0, &fs, &c);
    let ids: Vec<_> = b.open().map(|i| i.id.clone()).collect();
    assert_eq!(
        ids,
        vec!["leak-1-77-8080", "leak-1-77-0", "leak-1-unknown-9090"]
    );
    let inc = b.get("leak-1-77-8080").unwrap();
    assert_eq!(inc.kind, IncidentKind::CloseWaitLeak);
    assert_eq!(inc.root.process, Some(server()));
    assert_eq!(inc.root.local_port, Some(8080));
    assert_eq!(inc.members_total, 20);
    assert!(
        inc.diagnosis.starts_with(
            "server[77] leaks sockets after the peer closed on :8080: 20 in CLOSE_WAIT, oldest \
             2m13s; it never calls close() on them"
        ),
        "{}",
        inc.diagnosis
    );
    assert!(inc.diagnosis.contains("ls -l /proc/77/fd"));
    let out = b.get("leak-1-77-0").unwrap();
    assert_eq!(out.root.local_port, None);
    assert_eq!(out.members_total, 2);
    assert!(out.diagnosis.contains("on its outgoing connections"));
    let unk = b.get("leak-1-unknown-9090").unwrap();
    assert_eq!(unk.root.process, None);
    assert_eq!(unk.root.local_port, Some(9090));
    assert_indexed(&b, &fs);
}

#[test]
fn client_retransmit_chains_of_one_process_to_one_remote_are_one_incident() {
    let r = "10.0.0.5:443";
    let mut fs: Vec<_> = (0..3u16)
        .map(|i| {
            let mut f = upstream(
                FindingKind::RetransmitChain,
                "peer_unreachable",
                NS1,
                42,
                "api",
                40000 + i,
                r,
            );
            f.since = s(-35.0);
            f
        })
        .collect();
    fs.push(upstream(
        FindingKind::SendQueueGrowing,
        "peer_unreachable",
        NS1,
        42,
        "api",
        40000,
        r,
    ));
    let mut b = book();
    let ch = step(&mut b, 0.0, &fs, &ctx(&[]));
    assert_eq!(
        changes(&ch),
        vec![(Opened, "upstream-1-42-10.0.0.5:443".to_owned())]
    );
    let inc = b.get("upstream-1-42-10.0.0.5:443").unwrap();
    assert_eq!(inc.kind, IncidentKind::UpstreamUnreachable);
    assert_eq!(inc.cause, "peer_unreachable");
    assert_eq!(inc.root.remote, Some(r.parse().unwrap()));
    assert_eq!(inc.root.local_port, None);
    assert_eq!(inc.root.process.as_ref().unwrap().comm, "api");
    assert_eq!(inc.members_total, 4);
    assert!(
        inc.diagnosis.starts_with(
            "10.0.0.5:443 unreachable from api[42] for 35s: 3 connections retransmitting, no ACK, \
             Send-Q not draining on 1;"
        ),
        "{}",
        inc.diagnosis
    );
    // Another remote, another process, another namespace: one incident each.
    let mut more = fs.clone();
    more.push(upstream(
        FindingKind::RetransmitChain,
        "peer_unreachable",
        NS1,
        42,
        "api",
        40010,
        "10.0.0.6:443",
    ));
    more.push(upstream(
        FindingKind::RetransmitChain,
        "peer_unreachable",
        NS1,
        43,
        "worker",
        40011,
        r,
    ));
    more.push(upstream(
        FindingKind::RetransmitChain,
        "peer_unreachable",
        NS2,
        42,
        "api",
        40000,
        r,
    ));
    step(&mut b, 1.0, &more, &ctx(&[]));
    assert_eq!(b.open_count(), 4);
    for id in [
        "upstream-1-42-10.0.0.6:443",
        "upstream-1-43-10.0.0.5:443",
        "upstream-2-42-10.0.0.5:443",
    ] {
        assert_eq!(b.get(id).unwrap().members_total, 1, "{id}");
    }
    assert_indexed(&b, &more);
}

#[test]
fn awaiting_and_zero_window_are_not_responding_until_retransmissions_appear() {
    let r = "10.0.0.2:8080";
    let mut fs = vec![
        upstream(
            FindingKind::AwaitingResponse,
            "no_response",
            NS1,
            9,
            "fasthttp",
            41000,
            r,
        ),
        upstream(
            FindingKind::AwaitingResponse,
            "no_response",
            NS1,
            9,
            "fasthttp",
            41001,
            r,
        ),
    ];
    let mut b = book();
    step(&mut b, 0.0, &fs, &ctx(&[]));
    let id = "upstream-1-9-10.0.0.2:8080";
    let inc = b.get(id).unwrap();
    assert_eq!(inc.kind, IncidentKind::UpstreamNotResponding);
    assert_eq!(inc.cause, "no_response");
    assert_eq!(inc.severity, Severity::Info);
    assert!(
        inc.diagnosis.starts_with(
            "10.0.0.2:8080 stopped answering fasthttp[9] for 0ms: 2 connections waiting for a \
             response;"
        ),
        "{}",
        inc.diagnosis
    );
    fs.push(upstream(
        FindingKind::SendQueueGrowing,
        "peer_not_reading",
        NS1,
        9,
        "fasthttp",
        41002,
        r,
    ));
    let ch = step(&mut b, 1.0, &fs, &ctx(&[]));
    assert_eq!(changes(&ch), vec![(Updated, id.to_owned())]);
    assert_eq!(ch[0].incident.cause, "peer_not_reading");
    assert_eq!(ch[0].incident.severity, Severity::Warning);
    fs.push(upstream(
        FindingKind::RetransmitChain,
        "peer_unreachable",
        NS1,
        9,
        "fasthttp",
        41003,
        r,
    ));
    let ch = step(&mut b, 2.0, &fs, &ctx(&[]));
    assert_eq!(changes(&ch), vec![(Updated, id.to_owned())]);
    assert_eq!(ch[0].incident.kind, IncidentKind::UpstreamUnreachable);
    assert_eq!(b.open_count(), 1);
    // `no_ack_progress` (no ACK, no retransmission seen) counts as unreachable too.
    let lone = upstream(
        FindingKind::SendQueueGrowing,
        "no_ack_progress",
        NS1,
        9,
        "fasthttp",
        41004,
        "10.0.0.3:80",
    );
    step(&mut b, 3.0, &[lone], &ctx(&[]));
    let inc = b.get("upstream-1-9-10.0.0.3:80").unwrap();
    assert_eq!(inc.kind, IncidentKind::UpstreamUnreachable);
}

#[test]
fn server_side_connections_group_per_client_host_and_do_not_merge() {
    let c = ctx(&[(NS1, 8080, Some((77, "server")), 0, 128)]);
    let mut fs: Vec<_> = (0..5u16)
        .map(|p| {
            upstream(
                FindingKind::RetransmitChain,
                "peer_unreachable",
                NS1,
                77,
                "server",
                8080,
                &format!("10.0.0.9:{}", 50000 + p),
            )
        })
        .collect();
    fs.push(cw_owned(NS1, 77, "server", 8080, 1));
    let mut b = book();
    step(&mut b, 0.0, &fs, &c);
    assert_eq!(
        b.open_count(),
        2,
        "{:?}",
        b.open().map(|i| &i.id).collect::<Vec<_>>()
    );
    let inc = b.get("upstream-1-77-10.0.0.9:0").unwrap();
    assert_eq!(inc.members_total, 5);
    assert_eq!(inc.root.local_port, Some(8080));
    assert_eq!(inc.root.remote, Some("10.0.0.9:0".parse().unwrap()));
    assert!(
        inc.diagnosis
            .starts_with("client host 10.0.0.9 of :8080 unreachable from server[77]"),
        "{}",
        inc.diagnosis
    );
    assert!(b.get("leak-1-77-8080").is_some());
}

#[test]
fn reset_bursts_group_per_namespace_and_port() {
    let c = ctx(&[(NS1, 443, Some((77, "server")), 0, 128)]);
    let fs = vec![
        resets(NS1, 443, "sent"),
        resets(NS1, 80, "received"),
        resets(NS2, 443, "both"),
    ];
    let mut b = book();
    step(&mut b, 0.0, &fs, &c);
    assert_eq!(b.open_count(), 3);
    let inc = b.get("resets-1-443").unwrap();
    assert_eq!(inc.kind, IncidentKind::ResetStorm);
    assert_eq!(inc.cause, "sent");
    assert_eq!(inc.root.process, Some(server()));
    assert_eq!(inc.root.local_port, Some(443));
    assert_eq!(inc.diagnosis, "reset burst on :443");
    assert_eq!(b.get("resets-2-443").unwrap().cause, "both");
    assert_indexed(&b, &fs);
}

/// Seed incident #1: P's client is wedged on a vanished upstream R while its callers'
/// connections pile up in `CLOSE_WAIT` on P's listener; an unrelated problem elsewhere stays
/// separate.
#[test]
fn incident_1_is_one_blocked_on_upstream_incident() {
    let r = "10.0.0.5:443";
    let c = ctx(&[(NS1, 8080, Some((42, "api")), 0, 128)]);
    let mut chain = upstream(
        FindingKind::RetransmitChain,
        "peer_unreachable",
        NS1,
        42,
        "api",
        40000,
        r,
    );
    chain.since = s(-35.0);
    let mut sendq = upstream(
        FindingKind::SendQueueGrowing,
        "peer_unreachable",
        NS1,
        42,
        "api",
        40000,
        r,
    );
    sendq.since = s(-30.0);
    let mut fs = vec![chain, sendq];
    fs.extend((0..20u16).map(|p| cw_owned(NS1, 42, "api", 8080, 6000 + p)));
    // Unrelated: a leak of another process in another namespace.
    fs.push(cw_owned(NS2, 42, "api", 40000, 1));
    let mut b = book();
    let ch = step(&mut b, 0.0, &fs, &c);
    assert_eq!(
        changes(&ch),
        vec![
            (Opened, "blocked-1-42".to_owned()),
            (Opened, "leak-2-42-0".to_owned())
        ]
    );
    let inc = b.get("blocked-1-42").unwrap();
    assert_eq!(inc.kind, IncidentKind::BlockedOnUpstream);
    assert_eq!(inc.cause, "peer_unreachable");
    assert_eq!(inc.severity, Severity::Critical);
    assert_eq!(inc.root.remote, Some(r.parse().unwrap()));
    assert_eq!(inc.root.local_port, Some(8080));
    assert_eq!(
        inc.root.process,
        Some(ProcessRef {
            pid: 42,
            comm: "api".to_owned()
        })
    );
    assert!(
        inc.diagnosis.starts_with(
            "api[42] is blocked on 10.0.0.5:443 for 35s: 1 connection retransmitting, no ACK, \
             with a Send-Q not draining;"
        ),
        "{}",
        inc.diagnosis
    );
    assert_eq!(
        inc.consequence.as_deref(),
        Some("its callers' connections pile up on :8080: 20 in CLOSE_WAIT")
    );
    assert_eq!(inc.counts["close_wait_stuck"], 20);
    assert_eq!(inc.counts["retransmit_chain"], 1);
    assert_eq!(inc.counts["send_queue_growing"], 1);
    assert_eq!(inc.members_total, 22);
    assert_eq!(inc.since, s(-35.0));
    assert_indexed(&b, &fs);

    // A second, less severe upstream: named as "and 1 other", the root stays R.
    fs.push(upstream(
        FindingKind::AwaitingResponse,
        "no_response",
        NS1,
        42,
        "api",
        40100,
        "10.0.0.6:80",
    ));
    step(&mut b, 1.0, &fs, &c);
    assert_eq!(b.open_count(), 2);
    let inc = b.get("blocked-1-42").unwrap();
    assert_eq!(inc.root.remote, Some(r.parse().unwrap()));
    assert!(
        inc.diagnosis
            .starts_with("api[42] is blocked on 10.0.0.5:443 and 1 other upstream(s) for 36s")
    );
    assert_indexed(&b, &fs);
}

#[test]
fn blocked_on_upstream_through_a_listener_that_stopped_accepting() {
    let c = ctx(&[(NS1, 8080, Some((42, "api")), 513, 512)]);
    let mut fs = vec![
        backlog(NS1, 8080, Some((42, "api")), "overflowing"),
        upstream(
            FindingKind::RetransmitChain,
            "peer_unreachable",
            NS1,
            42,
            "api",
            40000,
            "10.0.0.5:443",
        ),
    ];
    fs.extend((0..9u16).map(|p| cw_unaccepted(NS1, 8080, p)));
    let mut b = book();
    step(&mut b, 0.0, &fs, &c);
    assert_eq!(b.open_count(), 1);
    let inc = b.get("blocked-1-42").unwrap();
    assert_eq!(
        inc.consequence.as_deref(),
        Some("its callers' connections pile up on :8080: 9 in CLOSE_WAIT, accept queue 513/512")
    );
    assert_eq!(inc.members_total, 11);
    // A listener owned by someone else does not merge.
    let c2 = ctx(&[(NS1, 8080, Some((77, "server")), 513, 512)]);
    fs[0] = backlog(NS1, 8080, Some((77, "server")), "overflowing");
    let mut b = book();
    step(&mut b, 0.0, &fs, &c2);
    let ids: Vec<_> = b.open().map(|i| i.id.clone()).collect();
    assert_eq!(ids, vec!["listener-1-8080", "upstream-1-42-10.0.0.5:443"]);
}
