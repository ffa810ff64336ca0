//! `awaiting_response`: a client connection that sent something the peer acknowledged
//! (`queues.send_q == 0`), and has received nothing since: the last event was our send
//! (`tcp.last_send_age_ms < tcp.last_recv_age_ms`, or both in the same jiffy, we sent data and
//! the peer never did: `tcp.data_segs_out > 0`, `tcp.data_segs_in == 0`) and that send is older
//! than `threshold_seconds`. A
//! keep-alive request sent in the same jiffy as the previous response arrived is not told
//! apart from an answered one (documented limit). Info: a request waiting on a hung server, often with no read timeout.
//!
//! Not reported: listeners, connections still in an accept queue, server-side connections (the
//! local port is a listening port in that namespace: a server waiting for the next request on a
//! keep-alive connection is normal), idle keep-alive connections whose last event was a
//! receive, and connections whose local or remote port is in the ignore lists (long-poll,
//! streaming).
use crate::config::{AwaitingResponseConfig, seconds_to_ns};
use crate::detect::lifecycle::Candidate;
use crate::detect::{Snapshot, text};
use crate::model::{FindingKind, MonoNs, Severity, TcpState};

pub(crate) fn detect(
    cfg: &AwaitingResponseConfig,
    snap: &Snapshot<'_>,
    now: MonoNs,
    out: &mut Vec<Candidate>,
) {
    let threshold = seconds_to_ns(cfg.threshold_seconds);
    for c in snap
        .conns
        .iter()
        .filter(|c| c.state == TcpState::Established && c.full_sock && c.inode != 0)
    {
        // Our send is the last event: it is newer than the last receive, or (the same jiffy,
        // e.g. a request written right after the handshake, which sets both times) we sent
        // data and the peer never sent any. (Read from the stored fields, before the aged
        // copy: aging grows both ages by the same amount, which keeps their order.)
        let s = &c.tcp;
        let sent_last = s.last_send_age_ms < s.last_recv_age_ms
            || (s.last_send_age_ms == s.last_recv_age_ms
                && s.data_segs_out > 0
                && s.data_segs_in == 0);
        if c.queues.send_q != 0 || !sent_last {
            continue;
        }
        let t = &snap.aging.tcp(c);
        let waiting = text::ms_to_ns(t.last_send_age_ms);
        if waiting < threshold {
            continue;
        }
        if cfg.ignore_local_ports.contains(&c.local.port())
            || cfg.ignore_remote_ports.contains(&c.remote.port())
            || snap.is_listening_port(c.key.netns_cookie, c.local.port())
        {
            continue;
        }
        let diagnosis = format!(
            "waiting for a response: {} -> {} ({}, {}): our last send was acknowledged {} ago and nothing \
             has been received since; the server may be hung, and without a read timeout this request \
             waits forever",
            c.local,
            c.remote,
            text::owner(c, false),
            text::netns(c.netns),
            text::dur(waiting),
        );
        out.push(Candidate {
            id: text::conn_id(FindingKind::AwaitingResponse, c.key),
            kind: FindingKind::AwaitingResponse,
            severity: Severity::Info,
            subject: text::conn_subject(c),
            cause: "no_response",
            diagnosis,
            since: now.saturating_sub(waiting),
            evidence: text::evidence([
                ("waiting_seconds", text::secs(waiting)),
                ("last_recv_age_seconds", text::ms_secs(t.last_recv_age_ms)),
                ("remote_port", f64::from(c.remote.port())),
            ]),
            socket: Some(c.key),
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::config::DetectorConfig;
    use crate::detect::testutil::{Harness, changes, conn, listener, owner, s};
    use crate::model::Lifecycle::{Opened, Resolved};
    use crate::model::{ConnRecord, FindingKind, Severity, TcpState};

    const K: FindingKind = FindingKind::AwaitingResponse;

    /// A client that sent a request `sent` seconds ago and last received `recv` seconds ago.
    fn client(sent: u64, recv: u64) -> ConnRecord {
        let mut c = conn(TcpState::Established, "10.0.0.1:41000", "10.0.0.2:8080");
        c.owner = Some(owner(9, "fasthttp", 4).into());
        c.tcp.last_send_age_ms = sent * 1000;
        c.tcp.last_recv_age_ms = recv * 1000;
        c
    }

    #[test]
    fn fires_after_threshold_since_the_request() {
        let mut h = Harness::new(DetectorConfig::default());
        // Idle 300 s before the request: the wait counts from the request, not the last receive.
        assert!(h.step_kind(0.0, &[client(59, 359)], K).is_empty());
        let ch = h.step_kind(1.0, &[client(60, 360)], K);
        assert_eq!(changes(&ch), vec![Opened]);
        let f = &ch[0].finding;
        assert_eq!(f.severity, Severity::Info);
        assert_eq!(f.since, s(-59.0));
        assert_eq!(
            f.diagnosis,
            "waiting for a response: 10.0.0.1:41000 -> 10.0.0.2:8080 (fasthttp[9], netns 4026531833): our \
             last send was acknowledged 1m00s ago and nothing has been received since; the server may be \
             hung, and without a read timeout this request waits forever"
        );
        for t in 2..100u32 {
            let age = u64::from(t);
            assert!(
                h.step_kind(f64::from(t), &[client(59 + age, 359 + age)], K)
                    .is_empty()
            );
        }
        // The response arrives: last event is a receive.
        assert!(h.step_kind(100.0, &[client(40, 0)], K).is_empty());
        assert!(h.step_kind(102.0, &[client(42, 2)], K).is_empty());
        assert_eq!(
            changes(&h.step_kind(103.0, &[client(43, 3)], K)),
            vec![Resolved]
        );
    }

    /// A request written in the same jiffy as the handshake completed: `tcp_finish_connect`
    /// set the last send and receive times, so both ages are equal; the peer never sent data.
    #[test]
    fn a_request_sent_right_after_connect_is_awaited() {
        let mut h = Harness::new(DetectorConfig::default());
        let mut c = client(61, 61);
        c.tcp.data_segs_out = 1;
        assert_eq!(changes(&h.step_kind(0.0, &[c.clone()], K)), vec![Opened]);
        // The same tie on a connection that never sent data (a pre-dialed idle pool
        // connection), or whose peer sent data (an answer in the same jiffy): silent.
        let mut h = Harness::new(DetectorConfig::default());
        let mut idle = client(61, 61);
        idle.tcp.data_segs_out = 0;
        let mut answered = c;
        answered.key.skaddr += 1;
        answered.tcp.data_segs_in = 1;
        assert!(h.step_kind(0.0, &[idle, answered], K).is_empty());
    }

    #[test]
    fn look_alikes_are_silent() {
        let mut h = Harness::new(DetectorConfig::default());
        // Idle keep-alive: the response was the last event.
        let keepalive = client(500, 499);
        // Unacknowledged data: Send-Q rules' business.
        let mut unacked = client(90, 200);
        unacked.key.skaddr += 1;
        unacked.queues.send_q = 10;
        // Server side of a keep-alive connection: its port is listening.
        let mut server = conn(TcpState::Established, "10.0.0.1:8443", "10.0.0.5:50000");
        server.tcp.last_send_age_ms = 90_000;
        server.tcp.last_recv_age_ms = 91_000;
        // A long-poll port in the ignore list.
        let mut poll = client(600, 700);
        poll.key.skaddr += 2;
        poll.remote.set_port(5222);
        // Never accepted.
        let mut unaccepted = client(600, 700);
        unaccepted.key.skaddr += 3;
        unaccepted.inode = 0;
        let mut cfg = DetectorConfig::default();
        cfg.awaiting_response.ignore_remote_ports = vec![5222];
        let mut h2 = Harness::new(cfg);
        let conns = [
            keepalive,
            unacked,
            server,
            poll,
            unaccepted,
            listener(8443, 0, 128),
        ];
        for t in 0..10 {
            assert!(h2.step_kind(f64::from(t), &conns, K).is_empty(), "t={t}");
        }
        // Without the ignore list the long poll is reported.
        assert_eq!(changes(&h.step_kind(0.0, &conns, K)), vec![Opened]);
    }
}
