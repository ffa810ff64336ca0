//! The data: connections, open findings and open incidents, and how snapshots and stream
//! events change them (buffered while paused).
use tcpwatch_core::incident::Incident;
use tcpwatch_core::model::{ConnKey, ConnRecord, Finding, Lifecycle, Severity};

use super::order::{cmp_findings, cmp_incidents};
use super::wire::{Delta, Snapshot, StreamEvent};
use super::{App, BadEvents, Pending, SortKey};

impl App {
    /// Replaces all data (initial load or resync).
    pub fn apply_snapshot(&mut self, snap: Snapshot) {
        if self.paused {
            self.pending.clear();
            self.pending.push(Pending::Snapshot(snap));
            return;
        }
        let Snapshot {
            conns,
            findings,
            incidents,
            exposure,
        } = snap;
        if exposure.is_some() {
            self.exposure = exposure;
        }
        self.conns = conns.into_iter().map(|c| (c.key, c)).collect();
        self.findings = findings
            .into_iter()
            .filter(|f| f.resolved_at.is_none())
            .map(|f| (f.id.clone(), f))
            .collect();
        self.incidents_served = incidents.is_some();
        self.incidents = incidents
            .unwrap_or_default()
            .into_iter()
            .filter(|i| i.resolved_at.is_none())
            .map(|i| (i.id.clone(), i))
            .collect();
        self.dirty = true;
    }

    /// Applies one stream event (buffered while paused).
    pub fn apply_stream_event(&mut self, ev: StreamEvent) {
        if self.paused {
            self.pending.push(Pending::Event(ev));
            return;
        }
        match ev {
            StreamEvent::Conn(Delta::Upsert { conn }) => {
                self.conns.insert(conn.key, *conn);
            }
            StreamEvent::Conn(Delta::Remove { key }) => {
                self.conns.remove(&key);
            }
            StreamEvent::Finding(fc) => match fc.change {
                Lifecycle::Opened | Lifecycle::Updated => {
                    self.findings.insert(fc.finding.id.clone(), fc.finding);
                }
                Lifecycle::Resolved => {
                    self.findings.remove(&fc.finding.id);
                }
            },
            StreamEvent::Incident(ic) => {
                // An incident event proves the daemon serves incidents.
                self.incidents_served = true;
                match ic.change {
                    Lifecycle::Opened | Lifecycle::Updated => {
                        self.incidents.insert(ic.incident.id.clone(), ic.incident);
                    }
                    Lifecycle::Resolved => {
                        self.incidents.remove(&ic.incident.id);
                    }
                }
            }
            StreamEvent::Lagged { .. } => return,
        }
        self.dirty = true;
    }

    /// Counts a stream event that did not parse (`error` from [`super::parse_event`]); the
    /// header shows the count and the last error.
    pub fn note_bad_event(&mut self, error: String) {
        self.bad_events.count += 1;
        self.bad_events.last_error = error;
    }

    #[must_use]
    pub fn bad_events(&self) -> &BadEvents {
        &self.bad_events
    }

    pub(super) fn set_paused(&mut self, paused: bool) {
        if paused == self.paused {
            return;
        }
        self.paused = paused;
        if !paused {
            for p in std::mem::take(&mut self.pending) {
                match p {
                    Pending::Snapshot(s) => self.apply_snapshot(s),
                    Pending::Event(e) => self.apply_stream_event(e),
                }
            }
        }
    }

    #[must_use]
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Updates waiting to be applied while paused (a buffered snapshot counts as one).
    #[must_use]
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    #[must_use]
    pub fn connection(&self, key: &ConnKey) -> Option<&ConnRecord> {
        self.conns.get(key)
    }

    #[must_use]
    pub fn finding(&self, id: &str) -> Option<&Finding> {
        self.findings.get(id)
    }

    #[must_use]
    pub fn incident(&self, id: &str) -> Option<&Incident> {
        self.incidents.get(id)
    }

    /// Whether the daemon serves `/api/v1/incidents` (an older one answers 404).
    #[must_use]
    pub fn incidents_served(&self) -> bool {
        self.incidents_served
    }

    /// Open findings by severity: (critical, warning, info).
    #[must_use]
    pub fn severity_counts(&self) -> (usize, usize, usize) {
        let n = |s| self.findings.values().filter(|f| f.severity == s).count();
        (
            n(Severity::Critical),
            n(Severity::Warning),
            n(Severity::Info),
        )
    }

    /// Open incidents by severity: (critical, warning, info).
    #[must_use]
    pub fn incident_counts(&self) -> (usize, usize, usize) {
        let n = |s| self.incidents.values().filter(|i| i.severity == s).count();
        (
            n(Severity::Critical),
            n(Severity::Warning),
            n(Severity::Info),
        )
    }

    /// All connections, sorted by key (for `--once --json`).
    #[must_use]
    pub fn all_connections(&self) -> Vec<&ConnRecord> {
        let mut v: Vec<&ConnRecord> = self.conns.values().collect();
        v.sort_by_key(|c| c.key);
        v
    }

    /// Open findings, by severity then age.
    #[must_use]
    pub fn all_findings(&self) -> Vec<&Finding> {
        let mut v: Vec<&Finding> = self.findings.values().collect();
        v.sort_by(|a, b| cmp_findings(a, b, SortKey::Severity));
        v
    }

    /// Open incidents, most severe first, then oldest.
    #[must_use]
    pub fn all_incidents(&self) -> Vec<&Incident> {
        let mut v: Vec<&Incident> = self.incidents.values().collect();
        v.sort_by(|a, b| cmp_incidents(a, b, SortKey::Severity));
        v
    }

    /// The open member findings of an incident: those that name it (`incident_id`) plus those
    /// its (capped) member list names, most severe first.
    #[must_use]
    pub fn members_of(&self, incident_id: &str, sort: SortKey) -> Vec<&Finding> {
        let listed = self.incidents.get(incident_id).map(|i| &i.members);
        let mut v: Vec<&Finding> = self
            .findings
            .values()
            .filter(|f| {
                f.incident_id.as_deref() == Some(incident_id)
                    || listed.is_some_and(|m| m.contains(&f.id))
            })
            .collect();
        v.sort_by(|a, b| cmp_findings(a, b, sort));
        v
    }
}
