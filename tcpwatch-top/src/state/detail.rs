//! The detail pane (a finding with its connection, a connection with its findings, an owner)
//! and the summary of an incident shown above its member list.
use std::fmt::Write as _;

use tcpwatch_core::incident::Incident;
use tcpwatch_core::model::{ConnRecord, Finding, MonoNs, TcpState};
use tcpwatch_core::render::{format_age, format_owner, ss_queues};

use super::order::{
    cmp_conns, cmp_findings, incident_port, incident_process, incident_remote, subject_key,
    subject_local, subject_owner, subject_remote,
};
use super::{App, Detail, RowId, SortKey};

impl App {
    /// The detail pane's content for the selected row, if any.
    pub fn detail(&mut self, now: MonoNs) -> Option<Detail> {
        let id = self.selected_id()?;
        match id {
            RowId::Incident(iid) => self.incident_detail(&iid, now),
            RowId::Finding(fid) => {
                let f = self.findings.get(&fid)?;
                let mut d = Detail {
                    title: format!("{} {}", f.severity.name(), f.kind.name()),
                    ..Detail::default()
                };
                finding_lines(f, now, &mut d.lines);
                if let Some(c) = subject_key(&f.subject).and_then(|k| self.conns.get(&k)) {
                    d.lines.push(String::new());
                    conn_lines(c, now, &mut d.lines);
                    series(c, &mut d);
                }
                Some(d)
            }
            RowId::Conn(key) => {
                let c = self.conns.get(&key)?;
                let mut d = Detail {
                    title: format!("{} {} -> {}", c.state.ss_name(), c.local, c.remote),
                    ..Detail::default()
                };
                conn_lines(c, now, &mut d.lines);
                if c.state == TcpState::Listen {
                    d.lines.push(format!(
                        "unaccepted CLOSE_WAIT on port {}: {}",
                        c.local.port(),
                        self.count_unaccepted(c)
                    ));
                }
                let mut fs: Vec<&Finding> = self
                    .findings
                    .values()
                    .filter(|f| subject_key(&f.subject) == Some(key))
                    .collect();
                fs.sort_by(|a, b| cmp_findings(a, b, SortKey::Severity));
                for f in fs {
                    d.lines.push(String::new());
                    finding_lines(f, now, &mut d.lines);
                }
                series(c, &mut d);
                Some(d)
            }
            RowId::Owner(name) => self.owner_detail(&name, now),
            RowId::Exposure(key) => self.exposure_detail(&key),
        }
    }

    /// An incident's story: diagnosis, consequence, root, counts per kind, times. Shown above
    /// its member list; `None` once it resolved.
    #[must_use]
    pub fn incident_detail(&self, id: &str, now: MonoNs) -> Option<Detail> {
        let i = self.incidents.get(id)?;
        let mut lines = Vec::new();
        incident_lines(i, now, &mut lines);
        let listed = self.members_of(id, SortKey::Severity).len();
        let total = usize::try_from(i.members_total).unwrap_or(usize::MAX);
        if listed < total {
            lines.push(format!(
                "members below: {listed} of {total} (the daemon lists a capped set; \
                 /api/v1/findings has every socket)"
            ));
        }
        Some(Detail {
            title: format!("{} {} {}", i.severity.name(), i.kind.name(), i.id),
            lines,
            ..Detail::default()
        })
    }

    fn owner_detail(&self, name: &str, now: MonoNs) -> Option<Detail> {
        let i = self
            .rows
            .ids
            .iter()
            .position(|r| *r == RowId::Owner(name.to_owned()))?;
        let r = self.rows.owners.get(i)?;
        let mut lines = vec![
            format!("owner: {}", r.name),
            format!(
                "sockets: {} (ESTAB {}, LISTEN {}, CLOSE-WAIT {} of which stuck {}, \
                 TIME-WAIT {}, other {})",
                r.sockets,
                r.established,
                r.listen,
                r.close_wait,
                r.stuck_close_wait,
                r.time_wait,
                r.other
            ),
            format!("Send-Q total: {} bytes", r.send_q_total),
            String::new(),
            "largest Send-Q:".to_owned(),
        ];
        let mut mine: Vec<&ConnRecord> = self
            .conns
            .values()
            .filter(|c| format_owner(c.owner.as_deref()) == name)
            .collect();
        mine.sort_by(|a, b| cmp_conns(a, b, SortKey::SendQ));
        for c in mine.into_iter().take(10) {
            let (rq, sq) = ss_queues(c);
            lines.push(format!(
                "  {:<10} {:>10} {:>10} {} -> {} {}",
                c.state.ss_name(),
                rq,
                sq,
                c.local,
                c.remote,
                format_age(c.state_age(now), c.state_since_exact)
            ));
        }
        Some(Detail {
            title: name.to_owned(),
            lines,
            ..Detail::default()
        })
    }

    fn count_unaccepted(&self, l: &ConnRecord) -> usize {
        self.conns
            .values()
            .filter(|c| {
                c.state == TcpState::CloseWait
                    && c.inode == 0
                    && c.key.netns_cookie == l.key.netns_cookie
                    && c.local.port() == l.local.port()
            })
            .count()
    }
}

fn series(c: &ConnRecord, d: &mut Detail) {
    d.send_q = c.history.iter().map(|s| u64::from(s.send_q)).collect();
    d.retrans = c
        .history
        .iter()
        .map(|s| u64::from(s.retrans_total))
        .collect();
}

fn ms_ago(now: MonoNs, t: MonoNs) -> String {
    format_age(now.saturating_sub(t), true) + " ago"
}

fn incident_lines(i: &Incident, now: MonoNs, out: &mut Vec<String>) {
    out.push(format!("diagnosis: {}", i.diagnosis));
    if let Some(c) = &i.consequence {
        out.push(format!("consequence: {c}"));
    }
    let mut root = format!(
        "root: process {}  port {}  remote {}  netns {}",
        incident_process(i),
        incident_port(i),
        incident_remote(i),
        i.root.netns.inode
    );
    if let Some(p) = &i.root.pod {
        let _ = write!(root, "  pod {}/{}", p.namespace, p.name);
    }
    out.push(root);
    let mut counts = format!("members: {} open (", i.members_total);
    for (n, (kind, count)) in i.counts.iter().enumerate() {
        if n > 0 {
            counts.push_str(", ");
        }
        let _ = write!(counts, "{kind} {count}");
    }
    counts.push(')');
    out.push(counts);
    out.push(format!(
        "cause {}  since {}  opened {}  updated {}",
        i.cause,
        ms_ago(now, i.since),
        ms_ago(now, i.opened_at),
        ms_ago(now, i.updated_at),
    ));
}

fn finding_lines(f: &Finding, now: MonoNs, out: &mut Vec<String>) {
    out.push(format!(
        "finding {} [{}] {} cause={}",
        f.id,
        f.severity.name(),
        f.kind.name(),
        f.cause
    ));
    out.push(format!("diagnosis: {}", f.diagnosis));
    out.push(format!(
        "since {}  opened {}  updated {}  subject {} -> {} owner {}",
        ms_ago(now, f.since),
        ms_ago(now, f.opened_at),
        ms_ago(now, f.updated_at),
        subject_local(&f.subject),
        subject_remote(&f.subject),
        format_owner(subject_owner(&f.subject)),
    ));
    if let Some(id) = &f.incident_id {
        out.push(format!("incident: {id}"));
    }
    if !f.evidence.is_empty() {
        let mut ev = String::from("evidence:");
        for (k, v) in &f.evidence {
            let _ = write!(ev, " {k}={v}");
        }
        out.push(ev);
    }
}

fn conn_lines(c: &ConnRecord, now: MonoNs, out: &mut Vec<String>) {
    let o = c.owner.as_deref();
    out.push(format!(
        "{} {} -> {}  state age {}  netns {} (cookie {})",
        c.state.name(),
        c.local,
        c.remote,
        format_age(c.state_age(now), c.state_since_exact),
        c.netns.inode,
        c.netns.cookie
    ));
    out.push(format!(
        "owner {} fd {} container {} pod {}  creator {}[{}]  inode {} uid {}",
        format_owner(o),
        o.and_then(|o| o.fd)
            .map_or_else(|| "-".to_owned(), |fd| fd.to_string()),
        o.and_then(|o| o.container_id.as_deref()).unwrap_or("-"),
        o.and_then(|o| o.pod.as_ref())
            .map_or_else(|| "-".to_owned(), |p| format!("{}/{}", p.namespace, p.name)),
        c.creator_comm.as_deref().unwrap_or("-"),
        c.creator_pid
            .map_or_else(|| "-".to_owned(), |p| p.to_string()),
        c.inode,
        c.uid
    ));
    let q = &c.queues;
    out.push(format!(
        "Send-Q {} (unacked {}, unsent {})  Recv-Q {}  accept {}/{}",
        q.send_q, q.unacked, q.unsent, q.recv_q, q.accept_queue, q.accept_limit
    ));
    let t = &c.tcp;
    out.push(format!(
        "rtt {:.1}ms rto {}ms backoff {} retransmits {} probes {} total_retrans {}  peer window {}",
        f64::from(t.srtt_us) / 1000.0,
        t.rto_ms,
        t.backoff,
        t.retransmits,
        t.probes_out,
        t.total_retrans,
        t.peer_window
    ));
    out.push(format!(
        "user_timeout {}ms sndbuf {} wmem_queued {}  last send/ack/recv {}/{}/{} ms ago",
        t.user_timeout_ms,
        t.sndbuf,
        t.wmem_queued,
        t.last_send_age_ms,
        t.last_ack_age_ms,
        t.last_recv_age_ms
    ));
    out.push(format!(
        "retrans chain {} total {}{}{}  resets sent {} received {}  full_sock {}",
        c.retrans.chain,
        c.retrans.total,
        c.retrans
            .chain_start
            .map_or_else(String::new, |s| format!(" chain since {}", ms_ago(now, s))),
        c.retrans
            .last_retrans
            .map_or_else(String::new, |s| format!(" last {}", ms_ago(now, s))),
        c.resets.sent,
        c.resets.received,
        c.full_sock
    ));
    out.push(format!(
        "first seen {}  last seen {}",
        ms_ago(now, c.first_seen),
        ms_ago(now, c.last_seen)
    ));
}

/// Age of a finding's condition.
#[must_use]
pub fn finding_age(f: &Finding, now: MonoNs) -> String {
    format_age(now.saturating_sub(f.since), true)
}

/// Age of an incident's oldest member condition.
#[must_use]
pub fn incident_age(i: &Incident, now: MonoNs) -> String {
    format_age(now.saturating_sub(i.since), true)
}
