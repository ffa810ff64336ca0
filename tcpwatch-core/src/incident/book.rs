//! The life of an incident, mirroring the findings' (`detect/lifecycle.rs`):
//!
//! - **Open**: a group with members and no open incident of its id opens one at once.
//! - **Update**: an open incident's members, counts, diagnosis and `updated_at` are refreshed
//!   at every update; an `Updated` change is emitted at once when its kind, severity, cause or
//!   root changes, or when its member count moved by at least half of the count last emitted
//!   (at least 1) and the last emitted change is at least `min_update_interval` old.
//! - **Resolve**: when the incident has had no member for `resolve_after`. If members come
//!   back before, it stays open with the same id. An incident whose members moved into
//!   another incident (a causal merge formed or dissolved, an owner was found) resolves at
//!   once, saying where they went.
//! - **Merge hysteresis**: a `blocked_on_upstream` merge stays in place until its condition
//!   (upstream trouble and piling callers at the same time) has been false for
//!   `resolve_after`, so a flapping half does not split and re-merge the incident.
//! - **Bounds**: at most `max_open` incidents besides one overflow incident per kind; groups
//!   that would open beyond that join `overflow-<kind>` (counted in `overflowed()`). An open
//!   incident keeps its slot; newcomers get free slots most severe, then oldest, first. Slots
//!   freed by a resolution are reused from the next update on, except that incidents replaced
//!   by a merge or split hand theirs over at once.
use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::group::{self, Group, ProcKey};
use super::text::{self, Summary};
use super::{Incident, IncidentBook, IncidentChange, IncidentContext, IncidentKind, IncidentRoot};
use crate::detect::text::dur;
use crate::model::{Finding, Lifecycle, MonoNs, Severity};
use crate::wall::WallClock;

/// What the last emitted change said.
#[derive(Clone, Debug)]
struct Reported {
    at: MonoNs,
    kind: IncidentKind,
    severity: Severity,
    cause: String,
    root: IncidentRoot,
    members_total: u32,
}

impl Reported {
    fn of(i: &Incident, at: MonoNs) -> Self {
        Self {
            at,
            kind: i.kind,
            severity: i.severity,
            cause: i.cause.clone(),
            root: i.root.clone(),
            members_total: i.members_total,
        }
    }

    fn is_material(&self, i: &Incident, now: MonoNs, interval: u64) -> bool {
        if self.kind != i.kind
            || self.severity != i.severity
            || self.cause != i.cause
            || self.root != i.root
        {
            return true;
        }
        if now.saturating_sub(self.at) < interval {
            return false;
        }
        let old = f64::from(self.members_total);
        (f64::from(i.members_total) - old).abs() >= (0.5 * old).max(1.0)
    }
}

/// One open incident and its lifecycle state.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub(super) inc: Incident,
    reported: Reported,
    /// No member since (None: it has members).
    empty_since: Option<MonoNs>,
    /// `blocked_on_upstream` only: the process, and since when the merge condition is false.
    merge: Option<ProcKey>,
    merge_false_since: Option<MonoNs>,
}

fn is_overflow(id: &str) -> bool {
    id.starts_with("overflow-")
}

fn apply(inc: &mut Incident, s: Summary, kind: IncidentKind, now: MonoNs, wall: WallClock) {
    inc.kind = kind;
    inc.cause = s.cause;
    inc.severity = s.severity;
    inc.root = s.root;
    inc.diagnosis = s.diagnosis;
    inc.consequence = s.consequence;
    inc.counts = s.counts;
    inc.members = s.members;
    inc.members_total = s.members_total;
    inc.since = s.since;
    inc.since_time = wall.rfc3339(s.since);
    inc.updated_at = now;
    inc.updated_time = wall.rfc3339(now);
}

impl IncidentBook {
    pub(super) fn regroup(
        &mut self,
        now: MonoNs,
        wall: WallClock,
        findings: &[&Finding],
        ctx: &IncidentContext,
    ) -> Vec<IncidentChange> {
        let parts = group::parts(findings, ctx);
        let holds = group::merge_holds(&parts);
        let merged = self.merge_hysteresis(now, &holds);
        let groups = group::assemble(parts, &merged);
        let leaving = self.leaving(&groups, findings);
        let groups = self.bound(groups, leaving);

        let mut index: BTreeMap<String, String> = BTreeMap::new();
        for g in &groups {
            for f in g.members() {
                index.insert(f.id.clone(), g.id.clone());
            }
        }
        let present: HashSet<&str> = groups.iter().map(|g| g.id.as_str()).collect();
        let (mut changes, last) = self.retire(now, wall, &present, &index);
        for g in &groups {
            changes.extend(self.refresh(now, wall, g, ctx));
        }
        self.of_finding = index;
        self.reorder();
        changes.extend(last);
        changes
    }

    /// Open incidents without a group this update: resolved at once when their members moved
    /// to other incidents (first list), else emptied and resolved after `resolve_after`
    /// (second list).
    fn retire(
        &mut self,
        now: MonoNs,
        wall: WallClock,
        present: &HashSet<&str>,
        index: &BTreeMap<String, String>,
    ) -> (Vec<IncidentChange>, Vec<IncidentChange>) {
        let mut moved_to: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
        for (f, old) in &self.of_finding {
            if let Some(new) = index.get(f)
                && new != old
            {
                moved_to
                    .entry(old.clone())
                    .or_default()
                    .insert(new.as_str());
            }
        }
        let mut first = Vec::new();
        let mut last = Vec::new();
        let gone: Vec<String> = self
            .entries
            .keys()
            .filter(|id| !present.contains(id.as_str()))
            .cloned()
            .collect();
        for id in gone {
            let Some(e) = self.entries.get_mut(&id) else {
                continue;
            };
            if e.empty_since.is_none()
                && let Some(dest) = moved_to.get(&id)
            {
                let verb = if e.inc.kind == IncidentKind::BlockedOnUpstream {
                    "split into"
                } else {
                    "merged into"
                };
                let reason = format!(
                    "{verb} {}",
                    dest.iter().copied().collect::<Vec<_>>().join(", ")
                );
                if let Some(e) = self.entries.remove(&id) {
                    first.push(self.resolve(now, wall, e.inc, &reason));
                }
                continue;
            }
            let since = *e.empty_since.get_or_insert(now);
            e.inc.counts.clear();
            e.inc.members.clear();
            e.inc.members_total = 0;
            e.inc.updated_at = now;
            e.inc.updated_time = wall.rfc3339(now);
            if now.saturating_sub(since) >= self.resolve_after
                && let Some(e) = self.entries.remove(&id)
            {
                last.push(self.resolve(now, wall, e.inc, "all member findings resolved"));
            }
        }
        (first, last)
    }

    /// Opens the incident of a group, or refreshes it (emitting `Updated` when material).
    fn refresh(
        &mut self,
        now: MonoNs,
        wall: WallClock,
        g: &Group<'_>,
        ctx: &IncidentContext,
    ) -> Option<IncidentChange> {
        let s = text::describe(g, ctx, now, self.cfg.max_members_listed, self.cfg.max_open);
        if let Some(e) = self.entries.get_mut(&g.id) {
            apply(&mut e.inc, s, g.kind, now, wall);
            e.empty_since = None;
            if !e.reported.is_material(&e.inc, now, self.update_interval) {
                return None;
            }
            e.reported = Reported::of(&e.inc, now);
            return Some(IncidentChange {
                change: Lifecycle::Updated,
                incident: e.inc.clone(),
            });
        }
        let mut inc = Incident {
            id: g.id.clone(),
            kind: g.kind,
            cause: String::new(),
            severity: Severity::Info,
            root: s.root.clone(),
            diagnosis: String::new(),
            consequence: None,
            counts: BTreeMap::new(),
            members: Vec::new(),
            members_total: 0,
            since: s.since,
            opened_at: now,
            updated_at: now,
            resolved_at: None,
            since_time: String::new(),
            opened_time: wall.rfc3339(now),
            updated_time: String::new(),
            resolved_time: None,
        };
        apply(&mut inc, s, g.kind, now, wall);
        self.entries.insert(
            g.id.clone(),
            Entry {
                reported: Reported::of(&inc, now),
                inc: inc.clone(),
                empty_since: None,
                merge: g.merged_for,
                merge_false_since: None,
            },
        );
        Some(IncidentChange {
            change: Lifecycle::Opened,
            incident: inc,
        })
    }

    /// Most severe, then oldest, then by id.
    fn reorder(&mut self) {
        let mut order: Vec<(&String, &Entry)> = self.entries.iter().collect();
        order.sort_by(|(a, x), (b, y)| {
            y.inc
                .severity
                .cmp(&x.inc.severity)
                .then(x.inc.since.cmp(&y.inc.since))
                .then(a.cmp(b))
        });
        self.order = order.into_iter().map(|(id, _)| id.clone()).collect();
    }

    /// The processes whose parts merge now: the merge condition holds, or it held for an
    /// open `blocked_on_upstream` incident less than `resolve_after` ago.
    fn merge_hysteresis(&mut self, now: MonoNs, holds: &BTreeSet<ProcKey>) -> BTreeSet<ProcKey> {
        let mut merged = holds.clone();
        for e in self.entries.values_mut() {
            let Some(k) = e.merge else {
                continue;
            };
            if holds.contains(&k) {
                e.merge_false_since = None;
            } else {
                let since = *e.merge_false_since.get_or_insert(now);
                if now.saturating_sub(since) < self.resolve_after {
                    merged.insert(k);
                }
            }
        }
        merged
    }

    /// Open incidents (overflow aside) that resolve at this update because their members
    /// moved to another group (a merge formed or dissolved): their slots go to the new groups
    /// at once.
    fn leaving(&self, groups: &[Group<'_>], findings: &[&Finding]) -> usize {
        let ids: HashSet<&str> = groups.iter().map(|g| g.id.as_str()).collect();
        let open: HashSet<&str> = findings.iter().map(|f| f.id.as_str()).collect();
        let moving: HashSet<&str> = self
            .of_finding
            .iter()
            .filter(|(f, inc)| {
                open.contains(f.as_str()) && !ids.contains(inc.as_str()) && !is_overflow(inc)
            })
            .map(|(_, inc)| inc.as_str())
            .collect();
        moving.len()
    }

    /// Keeps every group that has an open incident, opens new ones while fewer than
    /// `max_open` incidents (overflow incidents aside) are open, most severe then oldest
    /// first, and folds the rest into one overflow group per kind.
    fn bound<'a>(&mut self, groups: Vec<Group<'a>>, leaving: usize) -> Vec<Group<'a>> {
        let open_real = self
            .entries
            .keys()
            .filter(|id| !is_overflow(id))
            .count()
            .saturating_sub(leaving);
        let max = usize::try_from(self.cfg.max_open).unwrap_or(usize::MAX);
        let room = max.saturating_sub(open_real);
        let (mut kept, mut new): (Vec<Group<'a>>, Vec<Group<'a>>) = groups
            .into_iter()
            .partition(|g| self.entries.contains_key(&g.id));
        new.sort_by(|a, b| {
            b.severity()
                .cmp(&a.severity())
                .then(a.since().cmp(&b.since()))
                .then(a.id.cmp(&b.id))
        });
        let rest = if new.len() > room {
            new.split_off(room)
        } else {
            Vec::new()
        };
        self.overflowed = rest.len();
        kept.extend(new);
        kept.extend(group::fold_overflow(rest));
        kept
    }

    fn resolve(
        &mut self,
        now: MonoNs,
        wall: WallClock,
        mut inc: Incident,
        reason: &str,
    ) -> IncidentChange {
        let lasted = now.saturating_sub(inc.since);
        inc.resolved_at = Some(now);
        inc.resolved_time = Some(wall.rfc3339(now));
        inc.updated_at = now;
        inc.updated_time = wall.rfc3339(now);
        inc.diagnosis = format!(
            "resolved after {} ({reason}): {}",
            dur(lasted),
            inc.diagnosis
        );
        let ring = usize::try_from(self.cfg.recently_resolved).unwrap_or(usize::MAX);
        if ring > 0 {
            while self.resolved.len() >= ring {
                self.resolved.pop_front();
            }
            self.resolved.push_back(inc.clone());
        }
        IncidentChange {
            change: Lifecycle::Resolved,
            incident: inc,
        }
    }
}

#[cfg(test)]
#[path = "book_tests.rs"]
mod tests;
