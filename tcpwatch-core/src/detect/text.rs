//! Small helpers shared by the rules: unit conversions, durations and names in plain words,
//! finding ids and subjects.
use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::model::{ConnKey, ConnRecord, FindingKind, MonoNs, NS_PER_MS, NetnsId, Subject};

/// Nanoseconds to seconds.
pub(crate) fn secs(ns: u64) -> f64 {
    #[allow(
        clippy::cast_precision_loss,
        reason = "durations far below 2^53 ns are exact enough"
    )]
    let s = ns as f64 / 1e9;
    s
}

/// Milliseconds to seconds.
pub(crate) fn ms_secs(ms: u64) -> f64 {
    #[allow(
        clippy::cast_precision_loss,
        reason = "millisecond ages far below 2^53"
    )]
    let s = ms as f64 / 1e3;
    s
}

/// A count as an evidence number.
pub(crate) fn num(v: u64) -> f64 {
    #[allow(clippy::cast_precision_loss, reason = "counters far below 2^53")]
    let f = v as f64;
    f
}

/// A signed difference as an evidence number.
pub(crate) fn signed(v: i64) -> f64 {
    #[allow(
        clippy::cast_precision_loss,
        reason = "byte and count deltas far below 2^53"
    )]
    let f = v as f64;
    f
}

pub(crate) fn ms_to_ns(ms: u64) -> MonoNs {
    ms.saturating_mul(NS_PER_MS)
}

/// `850ms`, `45s`, `14m05s`, `2h03m`.
pub(crate) fn dur(ns: u64) -> String {
    let ms = ns / NS_PER_MS;
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    if s < 60 {
        let tenths = (ms % 1000) / 100;
        return if tenths > 0 {
            format!("{s}.{tenths}s")
        } else {
            format!("{s}s")
        };
    }
    if s < 3600 {
        return format!("{}m{:02}s", s / 60, s % 60);
    }
    format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
}

/// The process holding the socket in plain words: `nginx[1234]`, `nginx[1234] fd 7 in pod
/// default/web-0`, `nginx[1234] in pod uid 0f1e...` (pod name not known yet), or `no process`
/// (with the creating task when known).
pub(crate) fn owner(rec: &ConnRecord, with_fd: bool) -> String {
    if let Some(o) = &rec.owner {
        let mut s = format!("{}[{}]", o.comm, o.pid);
        if with_fd && let Some(fd) = o.fd {
            let _ = write!(s, " fd {fd}");
        }
        match &o.pod {
            Some(pod) if !pod.name.is_empty() => {
                let _ = write!(s, " in pod {}/{}", pod.namespace, pod.name);
            }
            // Known from the cgroup path only (no API server, or not listed yet).
            Some(pod) if !pod.uid.is_empty() => {
                let _ = write!(s, " in pod uid {}", pod.uid);
            }
            _ => {}
        }
        s
    } else {
        let base = if rec.inode == 0 {
            "no process"
        } else {
            "process not found yet"
        };
        match (&rec.creator_comm, rec.creator_pid) {
            (Some(c), Some(p)) => format!("{base} (created by {c}[{p}])"),
            _ => base.to_owned(),
        }
    }
}

pub(crate) fn netns(n: NetnsId) -> String {
    format!("netns {}", n.inode)
}

pub(crate) fn conn_id(kind: FindingKind, key: ConnKey) -> String {
    format!("{}:{}:{:x}", kind.name(), key.netns_cookie, key.skaddr)
}

pub(crate) fn port_id(kind: FindingKind, netns_cookie: u64, port: u16) -> String {
    format!("{}:{netns_cookie}:{port}", kind.name())
}

pub(crate) fn conn_subject(rec: &ConnRecord) -> Subject {
    Subject::Connection {
        key: rec.key,
        netns: rec.netns,
        local: rec.local,
        remote: rec.remote,
        state: rec.state,
        owner: rec.owner.as_deref().cloned(),
    }
}

pub(crate) fn listener_subject(rec: &ConnRecord) -> Subject {
    Subject::Listener {
        key: rec.key,
        netns: rec.netns,
        local: rec.local,
        owner: rec.owner.as_deref().cloned(),
    }
}

pub(crate) fn evidence<const N: usize>(pairs: [(&str, f64); N]) -> BTreeMap<String, f64> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_read_well_with_their_pod() {
        use crate::detect::testutil::{conn, owner as proc_owner};
        use crate::model::{PodRef, TcpState};
        let mut rec = conn(TcpState::Established, "10.0.0.1:80", "10.0.0.2:4000");
        assert_eq!(owner(&rec, true), "process not found yet");
        rec.owner = Some(proc_owner(1234, "nginx", 7).into());
        assert_eq!(owner(&rec, true), "nginx[1234] fd 7");
        assert_eq!(owner(&rec, false), "nginx[1234]");
        let uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        if let Some(o) = rec.owner.as_mut().map(std::sync::Arc::make_mut) {
            o.pod = Some(PodRef {
                uid: uid.to_owned(),
                ..PodRef::default()
            });
        }
        assert_eq!(owner(&rec, false), format!("nginx[1234] in pod uid {uid}"));
        if let Some(p) = rec
            .owner
            .as_mut()
            .and_then(|o| std::sync::Arc::make_mut(o).pod.as_mut())
        {
            p.namespace = "default".to_owned();
            p.name = "web-0".to_owned();
        }
        assert_eq!(owner(&rec, true), "nginx[1234] fd 7 in pod default/web-0");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(dur(850 * NS_PER_MS), "850ms");
        assert_eq!(dur(2_500 * NS_PER_MS), "2.5s");
        assert_eq!(dur(45_000 * NS_PER_MS), "45s");
        assert_eq!(dur(924_600 * NS_PER_MS), "15m24s");
        assert_eq!(dur(7_380_000 * NS_PER_MS), "2h03m");
    }
}
