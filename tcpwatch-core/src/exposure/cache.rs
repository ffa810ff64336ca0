//! The exposure audit, recomputed only when what it reads changed. The audit folds every
//! `ESTABLISHED` full socket of the table (a whole-host cost: it runs after every sweep while
//! an upstream finding is open). It reads no time, only these fields of each record: the key,
//! the namespace id, both addresses, state and `full_sock`, `TCP_USER_TIMEOUT`, the keepalive
//! options, whether the send queue is empty, and the owner text's inputs (owner pid, comm and
//! pod; inode zero or not, the creator); plus the namespaces' sysctls and the threshold. A
//! fingerprint of exactly those (one pass, no allocation, independent of iteration order) is
//! compared with the last audit's: equal, the last report is reused. Records that changed only
//! in other fields (counters, ages, RTT, history) do not cause a new audit.
//!
//! Keep [`fingerprint`] in step with `audit`/`assess`: a field they start reading must be
//! hashed here too (`cache_tests.rs` changes every field at random and compares).
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};

use super::audit::{ExposureReport, audit};
use crate::model::{ConnRecord, KeepaliveOpts, NetnsInfo, TcpState};

/// Audits done and reused, for the daemon's accounting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditCacheStats {
    pub computed: u64,
    pub reused: u64,
}

/// What the last audit was made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Inputs {
    threshold_seconds: u64,
    records: u64,
    sum: u64,
    xor: u64,
}

/// The last audit and the fingerprint of its inputs.
#[derive(Debug, Default)]
pub struct AuditCache {
    last: Option<(Inputs, HashMap<u64, NetnsInfo>, ExposureReport)>,
    pub stats: AuditCacheStats,
}

impl AuditCache {
    /// The same as [`audit`] of `conns` (an iterator that can be walked twice).
    pub fn audit<'a, I, S>(
        &mut self,
        conns: I,
        netns: &HashMap<u64, NetnsInfo, S>,
        threshold_seconds: u64,
    ) -> ExposureReport
    where
        I: IntoIterator<Item = &'a ConnRecord> + Clone,
        S: BuildHasher,
    {
        let inputs = fingerprint(conns.clone(), threshold_seconds);
        if let Some((i, ns, report)) = &self.last
            && *i == inputs
            && ns.len() == netns.len()
            && ns.iter().all(|(k, v)| netns.get(k) == Some(v))
        {
            self.stats.reused += 1;
            return report.clone();
        }
        self.stats.computed += 1;
        let report = audit(conns, netns, threshold_seconds);
        let ns = netns.iter().map(|(k, v)| (*k, *v)).collect();
        self.last = Some((inputs, ns, report.clone()));
        report
    }

    /// Drops the last report (no audit is needed for now): it holds no memory meanwhile.
    pub fn clear(&mut self) {
        self.last = None;
    }
}

/// The audit's inputs, folded in any order: per record a 64-bit hash of the fields the audit
/// reads, summed and xored.
fn fingerprint<'a>(
    conns: impl IntoIterator<Item = &'a ConnRecord>,
    threshold_seconds: u64,
) -> Inputs {
    let mut out = Inputs {
        threshold_seconds,
        records: 0,
        sum: 0,
        xor: 0,
    };
    for c in conns {
        // `assess` skips every other record: nothing of theirs reaches the report.
        if c.state != TcpState::Established || !c.full_sock {
            continue;
        }
        let h = record_hash(c);
        out.records += 1;
        out.sum = out.sum.wrapping_add(h);
        out.xor ^= h;
    }
    out
}

fn record_hash(c: &ConnRecord) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    c.key.hash(&mut h);
    c.netns.hash(&mut h);
    c.local.hash(&mut h);
    c.remote.hash(&mut h);
    c.tcp.user_timeout_ms.hash(&mut h);
    // Destructured: a field added to the options must be considered here.
    let KeepaliveOpts {
        enabled,
        time_ms,
        intvl_ms,
        probes,
    } = c.tcp.keepalive;
    (enabled, time_ms, intvl_ms, probes).hash(&mut h);
    (c.queues.send_q > 0).hash(&mut h);
    if let Some(o) = &c.owner {
        (1u8, o.pid, &o.comm).hash(&mut h);
        o.pod.hash(&mut h);
    } else {
        (0u8, c.inode == 0).hash(&mut h);
        (&c.creator_comm, c.creator_pid).hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
