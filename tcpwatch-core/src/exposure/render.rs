//! The exposure audit as plain text (`tcpwatch snapshot --exposure`).
use std::fmt::Write as _;

use super::audit::{ExposureReport, wait_text};

/// A summary line, then one line per group with exposed connections (most exposed first) and
/// its diagnosis indented below; groups without exposure are counted, not listed.
#[must_use]
pub fn text(r: &ExposureReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Exposure: {} of {} ESTABLISHED connections would wait more than {} for a vanished \
         peer ({} forever)",
        r.exposed,
        r.connections,
        wait_text(Some(r.threshold_seconds.saturating_mul(1000))),
        r.never
    );
    let exposed: Vec<_> = r.groups.iter().filter(|g| g.exposed > 0).collect();
    if exposed.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "{:<10} {:>5}/{:<5} {:>6} {:<28} REMOTE",
        "WORST", "EXPOS", "CONNS", "NEVER", "PROCESS"
    );
    for g in &exposed {
        let _ = writeln!(
            out,
            "{:<10} {:>5}/{:<5} {:>6} {:<28} {} (netns {})",
            wait_text(g.worst_case_ms),
            g.exposed,
            g.connections,
            g.never,
            g.process,
            g.remote,
            g.netns.inode
        );
        let _ = writeln!(out, "           {}", g.diagnosis);
    }
    let hidden = r.groups.len() - exposed.len();
    if hidden > 0 || r.groups_omitted > 0 {
        let _ = writeln!(
            out,
            "({} groups bounded within the threshold, {} not listed)",
            hidden, r.groups_omitted
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use std::collections::HashMap;

    use crate::detect::testutil::{NETNS, conn, owner};
    use crate::exposure::audit;
    use crate::model::{NetnsInfo, TcpState};

    #[test]
    fn lists_exposed_groups_with_their_diagnosis() {
        let mut a = conn(TcpState::Established, "10.0.0.1:40000", "10.0.0.2:80");
        a.owner = Some(owner(42, "api", 7).into());
        let mut b = conn(TcpState::Established, "10.0.0.1:40001", "10.0.0.3:80");
        b.owner = Some(owner(43, "web", 7).into());
        b.tcp.keepalive.enabled = true;
        b.tcp.keepalive.time_ms = 10_000;
        b.tcp.keepalive.intvl_ms = 5_000;
        b.tcp.keepalive.probes = 3;
        let ns = HashMap::from([(NETNS.cookie, NetnsInfo::with_defaults(NETNS))]);
        let t = super::text(&audit(&[a, b], &ns, 300));
        assert!(t.starts_with("Exposure: 1 of 2 ESTABLISHED"), "{t}");
        assert!(t.contains("never"), "{t}");
        assert!(t.contains("api[42]"), "{t}");
        assert!(!t.contains("web[43]"), "{t}");
        assert!(t.contains("1 groups bounded"), "{t}");
    }
}
