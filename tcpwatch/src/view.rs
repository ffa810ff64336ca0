//! The published view: an immutable, typed copy of what the API, `/metrics` and `tcpwatch
//! top` read, swapped in whole after every sweep, and after event batches when a reader asks
//! for one (at most one per 25 ms). Readers
//! take the current `Arc<View>` and never touch the daemon's lock, so a slow reader (a client
//! reading 100 000 records at a trickle, a big scrape) cannot delay the event reader or the
//! sweep.
//!
//! Publishing is cheap: the table's records are shared (`Arc<ConnRecord>`, copied on write),
//! so a view's connection list is one reference count per record; findings and incidents
//! change only when the detectors run (after a sweep) and are copied then, not per event.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tcpwatch_common::counter;
use tcpwatch_core::aging::Aging;
use tcpwatch_core::api::StreamEvent;
use tcpwatch_core::endpoints::EndpointFacts;
use tcpwatch_core::incident::{Incident, IncidentKind};
use tcpwatch_core::model::{ConnKey, ConnRecord, Finding, NetnsInfo};
use tcpwatch_core::table::TableStats;
use tokio::sync::{Notify, broadcast, watch};

use crate::host::owners::OwnerStats;
use crate::kernel::Attached;
use crate::kernel::probe::Features;
use crate::state::{DaemonStats, Shared};

/// What the detectors and the incident grouping concluded at their last run.
#[derive(Debug, Default)]
pub struct Judged {
    /// Open findings, each with its open incident's id.
    pub findings_open: Vec<Finding>,
    pub findings_resolved: Vec<Finding>,
    /// Conditions not opened because `detectors.max_open_findings` was reached.
    pub findings_suppressed: usize,
    /// Sockets with an open finding.
    pub flagged: HashSet<ConnKey>,
    /// Open incidents in the book's order, and the recently resolved ones (newest first).
    pub incidents_open: Vec<Incident>,
    pub incidents_resolved: Vec<Incident>,
    pub incidents_overflowed: usize,
    /// Incidents opened since start, by kind (index of `IncidentKind::ALL`).
    pub incidents_opened: [u64; IncidentKind::ALL.len()],
    pub endpoint_facts: EndpointFacts,
}

impl Judged {
    fn of(s: &Shared) -> Self {
        let with_incident = |f: &Finding| {
            let mut f = f.clone();
            if f.incident_id.is_none() {
                f.incident_id = s.incidents.incident_of(&f.id).map(str::to_owned);
            }
            f
        };
        Self {
            findings_open: s.detectors.open().map(with_incident).collect(),
            findings_resolved: s.detectors.recently_resolved().map(with_incident).collect(),
            findings_suppressed: s.detectors.suppressed(),
            flagged: s
                .table
                .iter()
                .map(|c| c.key)
                .filter(|k| s.detectors.is_flagged(k))
                .collect(),
            incidents_open: s.incidents.open().cloned().collect(),
            incidents_resolved: s.incidents.recently_resolved().cloned().collect(),
            incidents_overflowed: s.incidents.overflowed(),
            incidents_opened: s.incidents_opened,
            endpoint_facts: s.detectors.endpoint_facts().clone(),
        }
    }

    /// Incidents opened since start, per kind.
    pub fn incidents_opened(&self) -> impl Iterator<Item = (IncidentKind, u64)> + '_ {
        IncidentKind::ALL.into_iter().zip(self.incidents_opened)
    }
}

/// What start-up fixed: the programs attached and the kernel's features.
#[derive(Debug, Default)]
pub struct Startup {
    pub attached: Vec<Attached>,
    pub features: Option<Features>,
    pub missing_optional: Vec<String>,
    pub kernel_hz: u32,
}

/// The kernel's self-accounting (`COUNTERS`, indexed by `counter::*`) as of the last sweep.
#[derive(Clone, Copy, Debug)]
pub struct KernelCounters(pub [u64; counter::COUNT as usize]);

impl Default for KernelCounters {
    fn default() -> Self {
        Self([0; counter::COUNT as usize])
    }
}

impl std::ops::Deref for KernelCounters {
    type Target = [u64; counter::COUNT as usize];
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// One published state of the daemon.
#[derive(Debug, Default)]
pub struct View {
    /// Every record of the table (in the table's order), as stored: the `last_seen` and ages
    /// of the records that follow their namespace's confirmation are derived by `aging`
    /// (`Aging::effective` on the copy that leaves the daemon).
    pub conns: Vec<Arc<ConnRecord>>,
    pub aging: Arc<Aging>,
    pub table_stats: TableStats,
    pub table_max: usize,
    pub judged: Arc<Judged>,
    pub startup: Arc<Startup>,
    pub netns: HashMap<u64, NetnsInfo>,
    pub netns_names: HashMap<u64, String>,
    pub kernel_counters: KernelCounters,
    /// The programs' kernel statistics and the lost-event accounting (changes per sweep).
    pub programs: Arc<tcpwatch_core::api::ProgramsStatus>,
    pub stats: DaemonStats,
    pub owner_stats: OwnerStats,
    pub last_sweep_errors: Vec<String>,
    pub ready: bool,
    /// `exposure.threshold_seconds`, for `/api/v1/exposure`.
    pub exposure_threshold_s: u64,
}

impl View {
    /// The view of `s` (judged afresh), for tests; the daemon publishes with a [`Publisher`].
    #[cfg(test)]
    #[must_use]
    pub fn of(s: &Shared) -> Self {
        Self::build(s, Arc::new(Judged::of(s)), Arc::new(Startup::of(s)), 0)
    }

    fn build(s: &Shared, judged: Arc<Judged>, startup: Arc<Startup>, lagged: u64) -> Self {
        let mut stats = s.stats;
        stats.stream_lagged += lagged;
        Self {
            conns: s.table.shared_records().cloned().collect(),
            aging: Arc::clone(s.table.aging()),
            table_stats: s.table.stats(),
            table_max: s.table.config().max_connections,
            judged,
            startup,
            netns: s.netns.clone(),
            netns_names: s.netns_names.clone(),
            kernel_counters: KernelCounters(s.kernel_counters),
            programs: Arc::clone(&s.programs),
            stats,
            owner_stats: s.owner_stats,
            last_sweep_errors: s.last_sweep_errors.clone(),
            ready: s.ready,
            exposure_threshold_s: s.exposure_threshold_s,
        }
    }
}

impl View {
    /// The exposure audit of the view's connections (`GET /api/v1/exposure`, `/metrics`).
    #[must_use]
    pub fn exposure(&self) -> tcpwatch_core::api::ExposureBody {
        tcpwatch_core::exposure::audit(
            self.conns.iter().map(AsRef::as_ref),
            &self.netns,
            self.exposure_threshold_s,
        )
    }
}

impl Startup {
    fn of(s: &Shared) -> Self {
        Self {
            attached: s.attached.clone(),
            features: s.features.clone(),
            missing_optional: s.missing_optional.clone(),
            kernel_hz: s.clock.hz,
        }
    }
}

/// The daemon's side: publishes views of its state.
pub struct Publisher {
    tx: watch::Sender<Arc<View>>,
    judged: Arc<Judged>,
    startup: Arc<Startup>,
    lagged: Arc<AtomicU64>,
    pending: Arc<Pending>,
}

/// What the published view lacks, and the publisher's wake-up.
#[derive(Debug, Default)]
pub struct Pending {
    pub wake: Notify,
    /// Events were applied since the last view: the next reader asks for a new one.
    pub events: AtomicBool,
    /// The detectors ran since the last view.
    pub judged: AtomicBool,
}

impl Pending {
    /// After an event batch: the view is renewed when a reader next asks (events alone cost
    /// nothing while nobody reads).
    pub fn events(&self) {
        self.events.store(true, Ordering::Relaxed);
    }

    /// After a sweep: publish now.
    pub fn judged(&self) {
        self.judged.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }
}

/// Longest a reader waits for a view with the latest events (the publisher needs the lock,
/// which a sweep may hold); past it, the reader answers from the view it has.
const FRESH_WAIT: Duration = Duration::from_secs(1);

/// The readers' side (HTTP handlers, `/metrics`): the current view, the live stream's
/// channels, and the stream's lag counter. Cloning it is cheap.
#[derive(Clone)]
pub struct Hub {
    view: watch::Receiver<Arc<View>>,
    pub stream: broadcast::Sender<StreamEvent>,
    pub changes: broadcast::Sender<StreamEvent>,
    lagged: Arc<AtomicU64>,
    pending: Arc<Pending>,
}

impl Hub {
    /// The latest published view (a reference count; the view never changes).
    #[must_use]
    pub fn view(&self) -> Arc<View> {
        self.view.borrow().clone()
    }

    /// A view with every event applied so far: the current one, or (when events arrived since
    /// it) the next one, asked of the publisher (at most one per 25 ms, whatever the number of
    /// readers).
    pub async fn fresh(&self) -> Arc<View> {
        if !self.pending.events.load(Ordering::Relaxed) {
            return self.view();
        }
        let mut rx = self.view.clone();
        rx.mark_unchanged();
        self.pending.wake.notify_one();
        let _ = tokio::time::timeout(FRESH_WAIT, rx.changed()).await;
        rx.borrow().clone()
    }

    /// Counts stream events lost by a slow subscriber (in the next view's
    /// `stats.stream_lagged`).
    pub fn add_lagged(&self, missed: u64) {
        self.lagged.fetch_add(missed, Ordering::Relaxed);
    }
}

impl Publisher {
    /// A publisher for `s`, with its first view published, and the readers' hub.
    #[must_use]
    pub fn new(s: &Shared) -> (Self, Hub) {
        let judged = Arc::new(Judged::of(s));
        let startup = Arc::new(Startup::of(s));
        let lagged = Arc::new(AtomicU64::new(0));
        let pending = Arc::new(Pending::default());
        let first = View::build(s, judged.clone(), startup.clone(), 0);
        let (tx, view) = watch::channel(Arc::new(first));
        let hub = Hub {
            view,
            stream: s.stream.clone(),
            changes: s.changes.clone(),
            lagged: lagged.clone(),
            pending: pending.clone(),
        };
        (
            Self {
                tx,
                judged,
                startup,
                lagged,
                pending,
            },
            hub,
        )
    }

    /// The flags the event reader and the sweep loop set.
    #[must_use]
    pub fn pending(&self) -> Arc<Pending> {
        self.pending.clone()
    }

    /// Publishes the state of `s`. `judged`: the detectors ran since the last publish (their
    /// conclusions are copied again; otherwise the last copy is shared). Returns the previous
    /// view, for the caller to release once it no longer holds the lock.
    pub fn publish(&mut self, s: &Shared, judged: bool) -> Arc<View> {
        if judged {
            self.judged = Arc::new(Judged::of(s));
        }
        let lagged = self.lagged.load(Ordering::Relaxed);
        let v = View::build(s, self.judged.clone(), self.startup.clone(), lagged);
        self.tx.send_replace(Arc::new(v))
    }
}

/// A daemon state that tests change under its lock and whose view they publish on demand.
#[cfg(test)]
#[derive(Clone)]
pub struct Live(
    Arc<(
        tokio::sync::Mutex<Shared>,
        tokio::sync::Mutex<Publisher>,
        Hub,
    )>,
);

#[cfg(test)]
impl Live {
    pub fn new(s: Shared) -> Self {
        let (publisher, hub) = Publisher::new(&s);
        Self(Arc::new((
            tokio::sync::Mutex::new(s),
            tokio::sync::Mutex::new(publisher),
            hub,
        )))
    }

    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, Shared> {
        self.0.0.lock().await
    }

    /// Publishes the current state (judged afresh) and returns the readers' hub.
    pub async fn hub(&self) -> Hub {
        let s = self.0.0.lock().await;
        self.0.1.lock().await.publish(&s, true);
        self.0.2.clone()
    }
}
