//! Text rendering shared by `tcpwatch snapshot` and logs: an `ss -tanpi`-like table with
//! tcpwatch's own columns.
use std::fmt::Write as _;

use crate::model::{ConnRecord, Finding, MonoNs, NS_PER_SEC, Owner, TcpState};

/// `45s`, `12m03s`, `2h05m`, `3d04h`; prefixed with `>` when the age is only a lower bound.
#[must_use]
pub fn format_age(ns: u64, exact: bool) -> String {
    let s = ns / NS_PER_SEC;
    let body = if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600)
    };
    if exact { body } else { format!(">{body}") }
}

/// `comm[pid]`, or `-` when no process holds the socket.
#[must_use]
pub fn format_owner(owner: Option<&Owner>) -> String {
    owner.map_or_else(|| "-".to_owned(), |o| format!("{}[{}]", o.comm, o.pid))
}

/// What `ss` shows as Recv-Q / Send-Q (for a listener: accept queue and its limit).
#[must_use]
pub fn ss_queues(c: &ConnRecord) -> (u32, u32) {
    if c.state == TcpState::Listen {
        (c.queues.accept_queue, c.queues.accept_limit)
    } else {
        (c.queues.recv_q, c.queues.send_q)
    }
}

/// The columns `ss -tani` users know plus tcpwatch's age, retransmit chain and backoff:
/// State, Recv-Q, Send-Q, Local, Peer, Age, Retr (chain/total), Backoff.
#[must_use]
pub fn ss_columns(c: &ConnRecord, now: MonoNs) -> [String; 8] {
    let (rq, sq) = ss_queues(c);
    [
        c.state.ss_name().to_owned(),
        rq.to_string(),
        sq.to_string(),
        c.local.to_string(),
        c.remote.to_string(),
        format_age(c.state_age(now), c.state_since_exact),
        format!(
            "{}/{}",
            c.retrans.chain,
            c.retrans.total.max(c.tcp.total_retrans)
        ),
        c.tcp.backoff.to_string(),
    ]
}

/// Renders connections as a table, in the order given.
#[must_use]
pub fn table(conns: &[&ConnRecord], now: MonoNs) -> String {
    let mut rows: Vec<[String; 10]> = vec![[
        "State".into(),
        "Recv-Q".into(),
        "Send-Q".into(),
        "Local".into(),
        "Peer".into(),
        "Age".into(),
        "Retr".into(),
        "Backoff".into(),
        "Owner".into(),
        "Netns".into(),
    ]];
    for c in conns {
        let [state, rq, sq, local, peer, age, retr, backoff] = ss_columns(c, now);
        rows.push([
            state,
            rq,
            sq,
            local,
            peer,
            age,
            retr,
            backoff,
            format_owner(c.owner.as_deref()),
            c.netns.inode.to_string(),
        ]);
    }
    let mut widths = [0_usize; 10];
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in r.iter().zip(widths).enumerate() {
            // Numbers right-aligned like ss, text left-aligned.
            if matches!(i, 1 | 2 | 7) {
                let _ = write!(line, "{cell:>w$} ");
            } else {
                let _ = write!(line, "{cell:<w$} ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One line per finding: severity, kind, diagnosis.
#[must_use]
pub fn findings(list: &[&Finding]) -> String {
    let mut out = String::new();
    for f in list {
        let _ = writeln!(
            out,
            "[{}] {}: {}",
            f.severity.name(),
            f.kind.name(),
            f.diagnosis
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ConnKey, NetnsId, Queues, ResetCounts, RetransInfo, TcpInfo};

    fn conn(state: TcpState) -> ConnRecord {
        ConnRecord {
            key: ConnKey {
                skaddr: 1,
                netns_cookie: 1,
            },
            cookie: 0,
            netns: NetnsId {
                cookie: 1,
                inode: 4_026_531_833,
            },
            local: "127.0.0.1:8080".parse().unwrap(),
            remote: "127.0.0.1:51000".parse().unwrap(),
            state,
            state_since: 0,
            state_since_exact: true,
            first_seen: 0,
            last_seen: 0,
            inode: 0,
            uid: 0,
            owner: None,
            creator_pid: None,
            creator_comm: None,
            queues: Queues {
                send_q: 10,
                recv_q: 1,
                accept_queue: 3,
                accept_limit: 2,
                ..Queues::default()
            },
            tcp: TcpInfo::default(),
            retrans: RetransInfo::default(),
            resets: ResetCounts::default(),
            full_sock: true,
            history: Vec::new(),
            wall: None,
        }
    }

    #[test]
    fn ages_are_human() {
        assert_eq!(format_age(45 * NS_PER_SEC, true), "45s");
        assert_eq!(format_age(723 * NS_PER_SEC, true), "12m03s");
        assert_eq!(format_age(7500 * NS_PER_SEC, false), ">2h05m");
        assert_eq!(format_age(100_000 * NS_PER_SEC, true), "1d03h");
    }

    #[test]
    fn table_shows_listener_queues_like_ss() {
        let l = conn(TcpState::Listen);
        let mut e = conn(TcpState::CloseWait);
        e.owner = Some(
            Owner {
                pid: 7,
                comm: "app".into(),
                ..Owner::default()
            }
            .into(),
        );
        let out = table(&[&l, &e], 61 * NS_PER_SEC);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("State"));
        assert!(
            lines[1].starts_with("LISTEN") && lines[1].contains("     3      2 "),
            "{out}"
        );
        assert!(
            lines[2].contains("CLOSE-WAIT") && lines[2].contains("app[7]"),
            "{out}"
        );
        assert!(lines[2].contains("1m01s"));
    }
}
