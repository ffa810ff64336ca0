//! The daemon's state, shared by the event reader, the sweep loop and the HTTP API. The
//! decisions (table merge, detectors, incident grouping) are the pure code of
//! `tcpwatch-core`; this module only holds them together and applies inputs in order.
use std::collections::{HashMap, HashSet};

use serde::Serialize;
use tcpwatch_common::{StateEvent, counter};
use tcpwatch_core::api::StreamEvent;
use tcpwatch_core::config::IncidentConfig;
use tcpwatch_core::detect::{DetectContext, Detectors};
use tcpwatch_core::incident::{IncidentBook, IncidentChange, IncidentContext, IncidentKind};
use tcpwatch_core::model::{FindingChange, FindingKind, Lifecycle, MonoNs, NetnsInfo, ResetCounts};
use tcpwatch_core::table::{ConnTable, Delta, KernelClock};
use tcpwatch_core::wall::WallClock;
use tokio::sync::broadcast;

use crate::host::sweeper::SweepBatch;
use crate::kernel::Attached;

/// What one evaluation changed: finding and incident lifecycle changes (log, alerts).
#[derive(Clone, Debug, Default)]
pub struct Evaluation {
    /// Finding changes, each carrying its open incident's id (`incident_id`).
    pub findings: Vec<FindingChange>,
    pub incidents: Vec<IncidentChange>,
}

/// Daemon self-accounting (exported as metrics).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct DaemonStats {
    pub events_received: u64,
    /// Events whose bytes did not have the expected size (never expected; counted anyway).
    pub events_malformed: u64,
    pub sweeps: u64,
    pub sweep_errors: u64,
    /// Namespaces that disappeared between discovery and their sweep.
    pub namespaces_vanished: u64,
    /// Alerts pushed to Alertmanager and accepted / not delivered.
    pub alerts_sent: u64,
    pub alerts_failed: u64,
    pub last_sweep_seconds: f64,
    pub last_sweep_sockets: u64,
    pub last_sweep_namespaces: u64,
    /// Namespaces of the last sweep that share the host's TCP established hash
    /// (`tcpwatch_core::shared_hash`).
    pub namespaces_sharing_hash: u64,
    /// Buckets of the hash they share (the host's), 0 when none does.
    pub shared_hash_buckets: u64,
    /// Stream events lost by slow subscribers (counted by the readers' hub, added to this in
    /// the published view).
    pub stream_lagged: u64,
}

/// Finding and incident changes queued per subscriber before it is told it lagged (they come
/// in bounded bursts: at most `detectors.max_open_findings` per evaluation, and as many
/// incident changes).
const CHANGES_CAPACITY: usize = 65_536;

pub struct Shared {
    pub table: ConnTable,
    pub detectors: Detectors,
    /// The open findings grouped by cause, regrouped after every detector evaluation.
    pub incidents: IncidentBook,
    /// Incidents opened since start, by kind (index of `IncidentKind::ALL`).
    pub incidents_opened: [u64; IncidentKind::ALL.len()],
    pub netns: HashMap<u64, NetnsInfo>,
    pub netns_names: HashMap<u64, String>,
    pub port_resets: HashMap<(u64, u16), ResetCounts>,
    pub kernel_counters: [u64; counter::COUNT as usize],
    /// The programs' kernel statistics and the lost-event accounting, as of the last sweep.
    pub programs: std::sync::Arc<tcpwatch_core::api::ProgramsStatus>,
    pub stats: DaemonStats,
    /// The `/proc` owner scans' accounting, as of the last sweep.
    pub owner_stats: crate::host::owners::OwnerStats,
    /// Problems of the last sweep that had any (bounded), for `/api/v1/status`.
    pub last_sweep_errors: Vec<String>,
    pub attached: Vec<Attached>,
    /// The kernel feature probe of start-up.
    pub features: Option<crate::kernel::probe::Features>,
    pub missing_optional: Vec<String>,
    pub clock: KernelClock,
    /// True once programs are attached and the first full sweep is in the table.
    pub ready: bool,
    /// Whether the shared-hash advice was logged since the walks last became cheap.
    hash_advice_given: bool,
    pub stream: broadcast::Sender<StreamEvent>,
    /// Finding and incident changes: a channel of their own, so that a flood of connection
    /// deltas never pushes them out of a subscriber's queue.
    pub changes: broadcast::Sender<StreamEvent>,
    /// Namespaces missing from sweeps: their records leave once they are gone.
    pub netns_presence: tcpwatch_core::netns_gone::NetnsPresence,
    /// `exposure.threshold_seconds` (the exposure audit, `docs/exposure.md`).
    pub exposure_threshold_s: u64,
    /// The last exposure audit of the sweeps, reused while its inputs are unchanged.
    pub exposure_cache: tcpwatch_core::exposure::AuditCache,
    /// Namespaces whose next sweep must be full (read by the sweeper thread).
    pub full_sweep_requests: crate::host::generations::FullSweepRequests,
}

impl Shared {
    #[must_use]
    pub fn new(table: ConnTable, detectors: Detectors, incidents: IncidentConfig) -> Self {
        let (stream, _) = broadcast::channel(4096);
        let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
        let incidents = IncidentBook::new(incidents, detectors.config());
        Self {
            table,
            detectors,
            incidents,
            incidents_opened: [0; IncidentKind::ALL.len()],
            netns: HashMap::new(),
            netns_names: HashMap::new(),
            port_resets: HashMap::new(),
            kernel_counters: [0; counter::COUNT as usize],
            programs: std::sync::Arc::default(),
            stats: DaemonStats::default(),
            owner_stats: crate::host::owners::OwnerStats::default(),
            last_sweep_errors: Vec::new(),
            hash_advice_given: false,
            attached: Vec::new(),
            features: None,
            missing_optional: Vec::new(),
            clock: KernelClock::default(),
            ready: false,
            stream,
            changes,
            netns_presence: tcpwatch_core::netns_gone::NetnsPresence::default(),
            exposure_threshold_s: tcpwatch_core::config_exposure::ExposureConfig::default()
                .threshold_seconds,
            exposure_cache: tcpwatch_core::exposure::AuditCache::default(),
            full_sweep_requests: crate::host::generations::FullSweepRequests::default(),
        }
    }

    pub fn apply_event(&mut self, ev: &StateEvent) {
        self.stats.events_received += 1;
        // Deltas are built only for live subscribers (`tcpwatch top`, SSE clients).
        let want = self.stream.receiver_count() > 0;
        if let Some(delta) = self.table.apply_event(ev, want) {
            let _ = self.stream.send(StreamEvent::Conn(delta));
        }
        if self.table.len() > self.table.config().max_connections + self.table.slack() {
            self.enforce_bound();
        }
    }

    /// Evicts past the table bound, sparing connections with an open finding.
    fn enforce_bound(&mut self) {
        let detectors = &self.detectors;
        for key in self.table.enforce_bound(|k| detectors.is_flagged(k)) {
            let _ = self.stream.send(StreamEvent::Conn(Delta::Remove { key }));
        }
    }

    /// The programs' statistics of a sweep; a failed read keeps the previous ones (counters
    /// never go backwards), the failure is in the sweep's errors.
    fn set_programs(&mut self, batch: &SweepBatch) {
        let programs = if batch.programs.is_empty() {
            self.programs.programs.clone()
        } else {
            batch.programs.clone()
        };
        let lost_events = tcpwatch_core::api::LostEvents::new(
            self.kernel_counters[counter::EVENTS_DROPPED as usize],
            &programs,
        );
        self.programs = std::sync::Arc::new(tcpwatch_core::api::ProgramsStatus {
            run_stats_enabled: batch.run_stats_enabled,
            programs,
            lost_events,
        });
    }

    /// Applies a whole-host sweep; returns the socket inodes that still need an owner.
    pub fn apply_sweep(&mut self, batch: &SweepBatch, now: MonoNs) -> HashSet<u64> {
        self.stats.sweeps += 1;
        self.stats.sweep_errors += batch.errors.len() as u64;
        self.stats.namespaces_vanished += batch.vanished as u64;
        if !batch.errors.is_empty() {
            self.last_sweep_errors = batch.errors.iter().take(16).cloned().collect();
        }
        self.stats.last_sweep_seconds = batch.duration.as_secs_f64();
        self.stats.last_sweep_sockets = batch.sockets() as u64;
        self.stats.last_sweep_namespaces = batch.namespaces.len() as u64;
        self.kernel_counters = batch.counters;
        self.set_programs(batch);
        self.port_resets.clone_from(&batch.port_resets);
        self.detectors.set_endpoint_facts(batch.endpoints.clone());
        let mut deltas = Vec::new();
        let want = self.stream.receiver_count() > 0;
        let mut alive = HashMap::new();
        for ns in &batch.namespaces {
            let out = self.table.apply_sweep(
                ns.id.cookie,
                &ns.sweep.records,
                &ns.sweep.unchanged,
                ns.sweep.header.ktime_ns,
                self.clock,
                now,
                want.then_some(&mut deltas),
            );
            if out.unknown > 0 {
                // Told about sockets it does not have: the next sweep there is full.
                self.full_sweep_requests.request(ns.id.cookie);
            }
            alive.insert(ns.id.cookie, ns.info);
            if let Some(name) = &ns.name {
                self.netns_names.insert(ns.id.cookie, name.clone());
            }
        }
        self.netns = alive;
        self.stats.namespaces_sharing_hash =
            tcpwatch_core::shared_hash::sharing(self.netns.values()) as u64;
        self.stats.shared_hash_buckets =
            tcpwatch_core::shared_hash::shared_buckets(self.netns.values());
        self.netns_names.retain(|c, _| self.netns.contains_key(c));
        let swept = self.netns.keys().copied().collect();
        let mut gone = Vec::new();
        self.netns_presence
            .apply(&mut self.table, &swept, &batch.unreadable, &mut gone);
        if want {
            deltas.extend(gone);
        }
        for d in deltas {
            let _ = self.stream.send(StreamEvent::Conn(d));
        }
        self.enforce_bound();
        self.table
            .iter()
            .filter(|c| c.inode != 0 && c.owner.is_none())
            .map(|c| c.inode)
            .collect()
    }

    /// The shared-hash advice (`tcpwatch_core::shared_hash::advice`) when it starts to apply:
    /// once, until the walks become cheap again.
    pub fn take_shared_hash_advice(&mut self) -> Option<String> {
        let advice = tcpwatch_core::shared_hash::advice(
            usize::try_from(self.stats.namespaces_sharing_hash).unwrap_or(usize::MAX),
            self.stats.shared_hash_buckets,
            usize::try_from(self.stats.last_sweep_sockets).unwrap_or(usize::MAX),
        );
        let first = advice.is_some() && !self.hash_advice_given;
        self.hash_advice_given = advice.is_some();
        advice.filter(|_| first)
    }

    /// Runs the detectors at `now`, bounds the table, regroups the open findings into
    /// incidents and sends both kinds of change on the stream (findings first, each with its
    /// incident's id, then incidents). `wall` pairs `now` with the wall clock for the
    /// incidents' RFC 3339 times.
    pub fn evaluate(&mut self, now: MonoNs, wall: WallClock) -> Evaluation {
        let ctx = DetectContext {
            netns: &self.netns,
            port_resets: &self.port_resets,
            aging: self.table.aging(),
        };
        let mut findings = self.detectors.evaluate(now, self.table.iter(), &ctx);
        self.enforce_bound();
        let mut ictx = IncidentContext::from_conns(self.table.iter());
        // Upstream incidents name the process's exposure (only audited when one may open, and
        // recomputed only when what it reads changed: `tcpwatch_core::exposure::AuditCache`).
        if self.detectors.open().any(|f| {
            matches!(
                f.kind,
                FindingKind::RetransmitChain | FindingKind::AwaitingResponse
            )
        }) {
            ictx.exposure = Some(self.exposure_cache.audit(
                self.table.iter(),
                &self.netns,
                self.exposure_threshold_s,
            ));
        } else {
            self.exposure_cache.clear();
        }
        let incidents = self
            .incidents
            .update(now, wall, self.detectors.open(), &ictx);
        for c in &mut findings {
            c.finding.incident_id = self.incidents.incident_of(&c.finding.id).map(str::to_owned);
            let _ = self.changes.send(StreamEvent::Finding(Box::new(c.clone())));
        }
        for c in &incidents {
            if c.change == Lifecycle::Opened
                && let Some(i) = IncidentKind::ALL.iter().position(|k| *k == c.incident.kind)
            {
                self.incidents_opened[i] += 1;
            }
            let _ = self
                .changes
                .send(StreamEvent::Incident(Box::new(c.clone())));
        }
        Evaluation {
            findings,
            incidents,
        }
    }
}

pub use tcpwatch_core::model::mono_now;
