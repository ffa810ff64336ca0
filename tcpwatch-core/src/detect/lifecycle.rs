//! The life of a finding, shared by all rules: opened -> updated -> resolved, with hysteresis.
//!
//! Every evaluation each rule hands in the [`Candidate`]s whose condition holds now (rule
//! thresholds already applied). This module turns them into [`FindingChange`]s:
//!
//! - **Open**: a candidate with no open finding opens one at once, unless the same id was
//!   resolved less than `reopen_after` ago: then its condition must first hold continuously for
//!   `reopen_after`. At most `max_open_findings` are open; candidates beyond that are counted
//!   ([`FindingBook::suppressed`]) and retried every evaluation.
//! - **Update**: an open finding's evidence, diagnosis and `updated_at` are refreshed every
//!   evaluation, but an `Updated` change is emitted only when its severity, cause or subject
//!   (state, owner) changes (at once), or when an evidence number moved materially — by at
//!   least half of the value last emitted (at least 1), or appeared/disappeared — and the last
//!   emitted change is at least `min_update_interval` old. Time evidence (`*_seconds`,
//!   `seconds_*`: ages always move) and the context numbers in [`CONTEXT_EVIDENCE`] never count
//!   as material.
//! - **Resolve**: when the condition has been false continuously for `resolve_after`; at once
//!   when the connection (or listener) the finding is about is gone. A value hovering at a
//!   threshold thus keeps the finding open instead of flapping; a full resolve/re-open cycle
//!   takes at least `resolve_after + reopen_after`.
//!
//! Bounds: one entry per id whose condition holds, is open, or resolved less than
//! `reopen_after` ago; ids are per live connection / listener / port, so the map is bounded
//! by the table's `max_connections` (plus ports). Resolved findings are kept in a ring of
//! `recently_resolved`.
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use crate::config::{DetectorConfig, seconds_to_ns};
use crate::detect::text;
use crate::model::{
    ConnKey, Finding, FindingChange, FindingKind, Lifecycle, MonoNs, Severity, Subject,
};

/// Evidence that describes the surroundings (a listener's pile, a process's total, a
/// namespace counter delta) rather than the finding itself: it does not trigger `Updated`.
pub(crate) const CONTEXT_EVIDENCE: &[&str] = &[
    "listener_unaccepted_close_wait",
    "process_stuck_close_wait",
    "listen_overflows_delta",
    "accept_queue",
    "accept_limit",
    "rate_per_second",
];

/// A condition that holds now, as one rule sees it.
#[derive(Clone, Debug)]
pub(crate) struct Candidate {
    pub id: String,
    pub kind: FindingKind,
    pub severity: Severity,
    pub subject: Subject,
    pub cause: &'static str,
    pub diagnosis: String,
    pub since: MonoNs,
    pub evidence: BTreeMap<String, f64>,
    /// The socket the finding is about: when it disappears the finding resolves at once.
    pub socket: Option<ConnKey>,
}

/// What the last emitted change said (to decide whether a new one is worth emitting).
#[derive(Clone, Debug)]
struct Reported {
    at: MonoNs,
    severity: Severity,
    cause: String,
    subject: Subject,
    evidence: BTreeMap<String, f64>,
}

#[derive(Clone, Debug, Default)]
struct Entry {
    socket: Option<ConnKey>,
    /// The cookie of that socket when the entry was last held (0 = not known).
    cookie: u64,
    /// The condition has held continuously since (None: it does not hold now).
    true_since: Option<MonoNs>,
    /// The condition has been false continuously since, while open.
    false_since: Option<MonoNs>,
    last_resolved: Option<MonoNs>,
    open: Option<(Finding, Reported)>,
}

#[derive(Debug)]
pub(crate) struct FindingBook {
    entries: BTreeMap<String, Entry>,
    resolved: VecDeque<Finding>,
    flagged: HashSet<ConnKey>,
    open_count: usize,
    suppressed: usize,
    resolve_after: u64,
    reopen_after: u64,
    update_interval: u64,
    ring: usize,
    max_open: usize,
}

impl FindingBook {
    pub(crate) fn new(cfg: &DetectorConfig) -> Self {
        Self {
            entries: BTreeMap::new(),
            resolved: VecDeque::new(),
            flagged: HashSet::new(),
            open_count: 0,
            suppressed: 0,
            resolve_after: seconds_to_ns(cfg.resolve_after_seconds),
            reopen_after: seconds_to_ns(cfg.reopen_after_seconds),
            update_interval: seconds_to_ns(cfg.min_update_interval_seconds),
            ring: usize::try_from(cfg.recently_resolved).unwrap_or(usize::MAX),
            max_open: usize::try_from(cfg.max_open_findings).unwrap_or(usize::MAX),
        }
    }

    pub(crate) fn open(&self) -> impl Iterator<Item = &Finding> {
        self.entries
            .values()
            .filter_map(|e| e.open.as_ref().map(|(f, _)| f))
    }

    pub(crate) fn open_count(&self) -> usize {
        self.open_count
    }

    /// Newest first.
    pub(crate) fn recently_resolved(&self) -> impl Iterator<Item = &Finding> {
        self.resolved.iter().rev()
    }

    /// The sockets of every entry (open, pending or holding off a reopen).
    pub(crate) fn sockets(&self) -> impl Iterator<Item = ConnKey> + '_ {
        self.entries.values().filter_map(|e| e.socket)
    }

    pub(crate) fn is_flagged(&self, key: &ConnKey) -> bool {
        self.flagged.contains(key)
    }

    pub(crate) fn suppressed(&self) -> usize {
        self.suppressed
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Finding> {
        self.entries
            .get(id)
            .and_then(|e| e.open.as_ref().map(|(f, _)| f))
    }

    /// Applies one evaluation's candidates. `present` holds every socket of this evaluation,
    /// with its cookie.
    pub(crate) fn apply(
        &mut self,
        now: MonoNs,
        candidates: Vec<Candidate>,
        present: &HashMap<ConnKey, u64>,
    ) -> Vec<FindingChange> {
        let mut changes = Vec::new();
        self.resolve_gone(now, present, &mut changes);
        let mut seen: HashSet<String> = HashSet::with_capacity(candidates.len());
        self.suppressed = 0;
        for c in candidates {
            if seen.insert(c.id.clone()) {
                let cookie = c.socket.and_then(|k| present.get(&k).copied()).unwrap_or(0);
                let id = c.id.clone();
                self.holds(now, c, &mut changes);
                if let Some(e) = self.entries.get_mut(&id) {
                    e.cookie = cookie;
                }
            }
        }
        self.resolve_cleared(now, &seen, &mut changes);
        self.flagged = self
            .entries
            .values()
            .filter(|e| e.open.is_some())
            .filter_map(|e| e.socket)
            .collect();
        changes
    }

    /// Sockets that are gone: resolve at once, forget everything about them. A socket whose
    /// key now has another cookie is gone too (a new socket took its address).
    fn resolve_gone(
        &mut self,
        now: MonoNs,
        present: &HashMap<ConnKey, u64>,
        changes: &mut Vec<FindingChange>,
    ) {
        let gone_socket = |e: &Entry, k: ConnKey| match present.get(&k) {
            None => true,
            Some(&cookie) => e.cookie != 0 && cookie != 0 && cookie != e.cookie,
        };
        let gone: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.socket.is_some_and(|k| gone_socket(e, k)))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            if let Some(Entry {
                open: Some((f, _)), ..
            }) = self.entries.remove(&id)
            {
                self.open_count -= 1;
                changes.push(self.resolve(now, f, "connection closed"));
            }
        }
    }

    /// A condition that holds now: open, refresh or update its finding.
    fn holds(&mut self, now: MonoNs, c: Candidate, changes: &mut Vec<FindingChange>) {
        let room = self.open_count < self.max_open;
        let entry = self.entries.entry(c.id.clone()).or_default();
        entry.socket = c.socket;
        entry.false_since = None;
        let true_since = *entry.true_since.get_or_insert(now);
        if let Some((finding, reported)) = &mut entry.open {
            let material = is_material(reported, &c, now, self.update_interval);
            refresh(finding, now, c);
            if material {
                *reported = Reported::of(finding, now);
                changes.push(FindingChange {
                    change: Lifecycle::Updated,
                    finding: finding.clone(),
                });
            }
            return;
        }
        let held_off = entry.last_resolved.is_some_and(|r| {
            true_since < r.saturating_add(self.reopen_after)
                && now < true_since.saturating_add(self.reopen_after)
        });
        if held_off {
            return;
        }
        if !room {
            self.suppressed += 1;
            return;
        }
        let finding = Finding {
            id: c.id,
            kind: c.kind,
            severity: c.severity,
            subject: c.subject,
            cause: c.cause.to_owned(),
            diagnosis: c.diagnosis,
            since: c.since,
            opened_at: now,
            updated_at: now,
            resolved_at: None,
            evidence: c.evidence,
            incident_id: None,
            wall: None,
        };
        changes.push(FindingChange {
            change: Lifecycle::Opened,
            finding: finding.clone(),
        });
        entry.open = Some((finding.clone(), Reported::of(&finding, now)));
        self.open_count += 1;
    }

    /// Conditions that no longer hold: resolve after `resolve_after`, forget stale entries.
    fn resolve_cleared(
        &mut self,
        now: MonoNs,
        seen: &HashSet<String>,
        changes: &mut Vec<FindingChange>,
    ) {
        let mut to_resolve = Vec::new();
        let mut to_forget = Vec::new();
        for (id, e) in &mut self.entries {
            if seen.contains(id) {
                continue;
            }
            e.true_since = None;
            if e.open.is_some() {
                let since = *e.false_since.get_or_insert(now);
                if now.saturating_sub(since) >= self.resolve_after {
                    to_resolve.push(id.clone());
                }
            } else if e
                .last_resolved
                .is_none_or(|r| now.saturating_sub(r) >= self.reopen_after)
            {
                to_forget.push(id.clone());
            }
        }
        for id in to_forget {
            self.entries.remove(&id);
        }
        for id in to_resolve {
            let Some(e) = self.entries.get_mut(&id) else {
                continue;
            };
            let Some((f, _)) = e.open.take() else {
                continue;
            };
            e.false_since = None;
            e.last_resolved = Some(now);
            self.open_count -= 1;
            changes.push(self.resolve(now, f, "condition cleared"));
        }
    }

    fn resolve(&mut self, now: MonoNs, mut f: Finding, reason: &str) -> FindingChange {
        let lasted = now.saturating_sub(f.since);
        f.resolved_at = Some(now);
        f.updated_at = now;
        f.evidence
            .insert("duration_seconds".to_owned(), text::secs(lasted));
        f.evidence.insert(
            "open_seconds".to_owned(),
            text::secs(now.saturating_sub(f.opened_at)),
        );
        f.diagnosis = format!(
            "resolved after {} ({reason}): {}",
            text::dur(lasted),
            f.diagnosis
        );
        if self.ring > 0 {
            while self.resolved.len() >= self.ring {
                self.resolved.pop_front();
            }
            self.resolved.push_back(f.clone());
        }
        FindingChange {
            change: Lifecycle::Resolved,
            finding: f,
        }
    }
}

impl Reported {
    fn of(f: &Finding, at: MonoNs) -> Self {
        Self {
            at,
            severity: f.severity,
            cause: f.cause.clone(),
            subject: f.subject.clone(),
            evidence: f.evidence.clone(),
        }
    }
}

fn refresh(f: &mut Finding, now: MonoNs, c: Candidate) {
    f.severity = c.severity;
    c.cause.clone_into(&mut f.cause);
    f.subject = c.subject;
    f.diagnosis = c.diagnosis;
    f.since = c.since;
    f.evidence = c.evidence;
    f.updated_at = now;
}

/// Ages and durations (`age_seconds`, `seconds_since_ack_progress`) always move.
fn counts_as_material(key: &str) -> bool {
    !key.ends_with("_seconds") && !key.starts_with("seconds_") && !CONTEXT_EVIDENCE.contains(&key)
}

fn is_material(old: &Reported, new: &Candidate, now: MonoNs, update_interval: u64) -> bool {
    if old.severity != new.severity || old.cause != new.cause || old.subject != new.subject {
        return true;
    }
    if now.saturating_sub(old.at) < update_interval {
        return false;
    }
    let moved = new
        .evidence
        .iter()
        .filter(|(k, _)| counts_as_material(k))
        .any(|(k, v)| {
            old.evidence
                .get(k)
                .is_none_or(|o| (v - o).abs() >= 0.5 * o.abs().max(1.0))
        });
    moved
        || old
            .evidence
            .keys()
            .any(|k| counts_as_material(k) && !new.evidence.contains_key(k))
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
