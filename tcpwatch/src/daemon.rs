//! The daemon: loads the programs, reads state events in timed batches (`event_reader`),
//! sweeps every namespace periodically on a dedicated thread, attributes owners, runs the
//! detectors and serves the API. The event reader and the sweep loop feed the same [`Shared`]
//! state; after each sweep, and when a reader asks after events, a [`crate::view::View`] of it
//! is published, and everything that reads (API, `/metrics`) reads that view, never the lock.
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use tcpwatch_core::config::Config;
use tcpwatch_core::detect::Detectors;
use tcpwatch_core::incident::IncidentChange;
use tcpwatch_core::model::FindingChange;
use tcpwatch_core::table::{ConnTable, KernelClock, TableConfig};
use tcpwatch_core::wall::WallClock;
use tokio::sync::{Mutex, mpsc};

use crate::host::generations::Generations;
use crate::host::k8s::PodIndex;
use crate::host::netns::Home;
use crate::host::owners::OwnerIndex;
use crate::host::sweeper::{SweepBatch, sweep_all};
use crate::kernel::{Kernel, LoadOptions};
use crate::state::{Shared, mono_now};
use crate::view::Publisher;

/// Extra daemon options from the command line.
#[derive(Clone, Debug, Default)]
pub struct DaemonOptions {
    pub pretend_no_iter: bool,
    /// Pin directory for maps that survive restarts (None for one-shot commands).
    pub pin: Option<std::path::PathBuf>,
    /// Ring buffer size (None: 4 MiB).
    pub ringbuf_bytes: Option<u32>,
}

pub fn load_options(cfg: &Config, opts: DaemonOptions) -> LoadOptions {
    LoadOptions {
        max_sockets: u32::try_from(cfg.daemon.max_connections)
            .unwrap_or(u32::MAX)
            .max(1024),
        ringbuf_bytes: opts
            .ringbuf_bytes
            .unwrap_or(tcpwatch_common::hooks::map_size::EVENTS_BYTES),
        pin_dir: opts.pin,
        pretend_no_iter: opts.pretend_no_iter,
    }
}

pub fn new_shared(cfg: &Config, kernel: &Kernel, clock: KernelClock) -> Shared {
    let table = ConnTable::new(TableConfig {
        max_connections: usize::try_from(cfg.daemon.max_connections).unwrap_or(usize::MAX),
        history_len: cfg.daemon.history_len as usize,
    });
    let mut shared = Shared::new(
        table,
        Detectors::new(cfg.detectors.clone()),
        cfg.incidents.clone(),
    );
    shared.attached.clone_from(&kernel.attached);
    shared.features = Some(kernel.features.clone());
    shared.missing_optional.clone_from(&kernel.missing_optional);
    shared.clock = clock;
    shared.exposure_threshold_s = cfg.exposure.threshold_seconds;
    shared
}

/// Sweeps tcpwatch's own namespace twice 200 ms apart to learn the kernel's HZ (jiffies are
/// how the kernel stores RTO and last-send/receive times).
pub fn calibrate(kernel: &mut Kernel) -> anyhow::Result<KernelClock> {
    let a = kernel.sweep_current_netns(0)?.header;
    std::thread::sleep(Duration::from_millis(200));
    let b = kernel.sweep_current_netns(0)?.header;
    Ok(KernelClock::calibrate(&a, &b).unwrap_or_default())
}

fn sweeper_thread(
    mut kernel: Kernel,
    tx: &mpsc::Sender<SweepBatch>,
    interval: Duration,
    mut generations: Generations,
) -> anyhow::Result<()> {
    let home = Home::current()?;
    for n in 0_u64.. {
        let batch = sweep_all(
            &mut kernel,
            &home,
            n % GC_EVERY_SWEEPS == 1,
            &mut generations,
        );
        if batch.socks_gc_removed > 0 {
            tracing::info!(
                removed = batch.socks_gc_removed,
                "removed kernel entries of vanished sockets"
            );
        }
        if tx.blocking_send(batch).is_err() {
            return Ok(()); // the daemon is shutting down
        }
        std::thread::sleep(interval);
    }
    Ok(())
}

/// Kernel entries of vanished sockets are garbage-collected on the second sweep (after a
/// restart with pinned maps; an entry must be missing from two sweeps in a row) and then every
/// this many sweeps.
const GC_EVERY_SWEEPS: u64 = 60;

/// Cached socket owners re-checked per sweep (one `readlink` each).
const OWNER_REVALIDATE_PER_SWEEP: usize = 2048;

/// A namespace whose sweep takes longer than this is logged (100k sockets take ~100 ms).
const SLOW_NAMESPACE_SWEEP: Duration = Duration::from_millis(250);

/// At most one view is published per this interval (a flood of events or of readers costs
/// one table-sized list of references per interval at most).
const PUBLISH_EVERY: Duration = Duration::from_millis(25);

/// Publishes a view whenever asked (after a sweep, or by a reader when events arrived since
/// the last view), at most once per [`PUBLISH_EVERY`]: the first request after a quiet spell
/// is served at once, the requests during the following interval together at its end. The
/// lock is held only to take the list of references; the old view is released after it.
async fn publish_views(shared: Arc<Mutex<Shared>>, mut publisher: Publisher) {
    let pending = publisher.pending();
    loop {
        pending.wake.notified().await;
        let started = tokio::time::Instant::now();
        let judged = pending.judged.swap(false, Ordering::Relaxed);
        let old = {
            let s = shared.lock().await;
            // Cleared under the lock: events applied after this are not in the view.
            pending.events.store(false, Ordering::Relaxed);
            publisher.publish(&s, judged)
        };
        drop(old);
        if judged {
            // The previous versions of the records this sweep changed were freed with the old
            // view (unless a reader still holds it): give their pages back.
            crate::host::malloc::release_free();
        }
        tokio::time::sleep_until(started + PUBLISH_EVERY).await;
    }
}

/// Writes one structured debug line per finding lifecycle change (the per-socket detail of
/// the incidents).
pub fn log_changes(changes: &[FindingChange]) {
    for c in changes {
        let f = &c.finding;
        tracing::debug!(
            target: "tcpwatch::finding",
            change = ?c.change,
            kind = f.kind.name(),
            severity = f.severity.name(),
            id = %f.id,
            cause = %f.cause,
            incident = f.incident_id.as_deref().unwrap_or(""),
            "{}",
            f.diagnosis
        );
    }
}

/// Writes one structured info line per incident lifecycle change.
pub fn log_incident_changes(changes: &[IncidentChange]) {
    for c in changes {
        let i = &c.incident;
        tracing::info!(
            target: "tcpwatch::incident",
            change = ?c.change,
            id = %i.id,
            kind = i.kind.name(),
            severity = i.severity.name(),
            cause = %i.cause,
            members = i.members_total,
            consequence = i.consequence.as_deref().unwrap_or(""),
            "{}",
            i.diagnosis
        );
    }
}

/// Applies one whole-host sweep: table, owners and their pods, detectors, then logs and alerts.
async fn on_sweep(
    batch: &SweepBatch,
    shared: &Mutex<Shared>,
    owners: &mut OwnerIndex,
    pods: &PodIndex,
    alerts: Option<&crate::alerts::AlertSender>,
) {
    for e in &batch.errors {
        tracing::debug!(error = %e, "namespace not swept");
    }
    for ns in batch
        .namespaces
        .iter()
        .filter(|n| n.duration > SLOW_NAMESPACE_SWEEP)
    {
        tracing::warn!(
            netns = ns.id.inode,
            sockets = ns.sweep.sockets(),
            ms = ns.duration.as_millis(),
            "slow namespace sweep"
        );
    }
    let now = mono_now();
    let (wanted, first, advice) = {
        let mut s = shared.lock().await;
        let wanted = s.apply_sweep(batch, now);
        (wanted, !s.ready, s.take_shared_hash_advice())
    };
    if let Some(a) = advice {
        tracing::warn!("{a}");
    }
    // Cached owners that no longer hold their socket are looked up again.
    let regone = owners.revalidate(OWNER_REVALIDATE_PER_SWEEP);
    let mut wanted = wanted;
    wanted.extend(regone.iter().copied());
    // The /proc scan runs without the lock: the API keeps answering meanwhile.
    owners.refresh(&wanted, first, now);
    let mut s = shared.lock().await;
    s.table.forget_owners(&regone);
    s.table.attach_owners(|ino| owners.get(ino));
    pods.attach(&mut s.table);
    let st = s.table.stats();
    let removals =
        st.removed_closed + st.removed_by_sweep + st.removed_netns_gone + st.replaced + st.evicted;
    owners.retain_after(removals, || s.table.iter().map(|c| c.inode).collect());
    s.owner_stats = owners.stats;
    let changes = s.evaluate(now, WallClock::now());
    if !s.ready {
        s.ready = true;
        tracing::info!(
            sockets = batch.sockets(),
            namespaces = batch.namespaces.len(),
            ms = batch.duration.as_millis(),
            "first sweep done: ready"
        );
    }
    if let Some(a) = alerts {
        a.send(&changes.findings, &changes.incidents);
        let st = a.stats();
        s.stats.alerts_sent = st.sent;
        s.stats.alerts_failed = st.failed;
    }
    drop(s);
    log_changes(&changes.findings);
    log_incident_changes(&changes.incidents);
}

/// The kernel side, loaded, with the process reduced to its runtime capabilities.
pub struct Prepared {
    kernel: Kernel,
    ring: RingBuf<MapData>,
    /// The kernel programs' diagnostics (None: the object has no log map).
    kernel_log: Option<crate::kernel::log::KernelLog>,
    clock: KernelClock,
}

/// Loads and attaches the programs, then drops every capability the daemon no longer needs.
/// Call it before starting any other thread (the tokio runtime included): capabilities are
/// per thread, and only threads created after the drop inherit the reduced set.
pub fn prepare(cfg: &Config, opts: DaemonOptions) -> anyhow::Result<Prepared> {
    crate::host::malloc::tune();
    let mut kernel = Kernel::load(&load_options(cfg, opts))?;
    // The programs' run time and count (`/api/v1/status`, `tcpwatch_bpf_program_*`).
    if cfg.daemon.bpf_run_stats {
        kernel.enable_run_stats();
    } else {
        tracing::info!(
            "daemon.bpf_run_stats = false: program run time and count are exported only if \
             kernel.bpf_stats_enabled is on"
        );
    }
    for a in &kernel.attached {
        tracing::info!(tracepoint = a.tracepoint, variant = a.variant, "attached");
    }
    if !kernel.missing_optional.is_empty() {
        tracing::warn!(fields = ?kernel.missing_optional, "kernel lacks optional fields; they read as 0");
    }
    // The kernel's BTF (several MB, read once and parsed by tcpwatch's and aya's parsers during
    // load, see kernel/btf.rs) is gone: give the memory back.
    crate::host::malloc::release_free();
    // Everything is loaded: keep only what sweeping and owner lookup need from now on.
    match crate::host::caps::drop_to_runtime() {
        Ok(kept) => {
            tracing::info!(kept = ?crate::host::caps::names(kept), "dropped unneeded capabilities");
        }
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "could not drop capabilities"),
    }
    let ring = kernel.take_events()?;
    let kernel_log = kernel.take_log();
    let clock = calibrate(&mut kernel)?;
    tracing::info!(hz = clock.hz, "kernel clock calibrated");
    Ok(Prepared {
        kernel,
        ring,
        kernel_log,
        clock,
    })
}

pub async fn run(cfg: Config, prepared: Prepared) -> anyhow::Result<()> {
    let Prepared {
        kernel,
        ring,
        kernel_log,
        clock,
    } = prepared;
    let shared = new_shared(&cfg, &kernel, clock);
    let generations = Generations::new(
        cfg.daemon.full_sweep_every,
        shared.full_sweep_requests.clone(),
    );
    let (publisher, hub) = Publisher::new(&shared);
    let shared = Arc::new(Mutex::new(shared));
    let pending = publisher.pending();
    tokio::spawn(publish_views(shared.clone(), publisher));

    // One batch in flight: a sweep of 100k sockets is ~20 MB until applied.
    let (tx, mut rx) = mpsc::channel::<SweepBatch>(1);
    let interval = Duration::from_millis(cfg.daemon.sweep_interval_ms);
    std::thread::Builder::new()
        .name("tcpwatch-sweep".into())
        .spawn(move || {
            if let Err(e) = sweeper_thread(kernel, &tx, interval, generations) {
                tracing::error!(error = %format!("{e:#}"), "sweeper stopped");
            }
        })
        .context("starting the sweeper thread")?;
    let events = tokio::spawn(crate::event_reader::read_events(
        ring,
        shared.clone(),
        pending.clone(),
        Duration::from_millis(cfg.daemon.event_drain_interval_ms),
    ));
    if let Some(l) = kernel_log {
        tokio::spawn(async move {
            if let Err(e) = crate::kernel::log::forward(l).await {
                tracing::warn!(error = %format!("{e:#}"), "kernel diagnostics no longer forwarded");
            }
        });
    }
    let http = tokio::spawn(crate::serve::http::serve(cfg.clone(), hub));
    tracing::info!(listen = %cfg.daemon.listen, "tcpwatch daemon started");
    let alerts = crate::alerts::spawn(&cfg.alertmanager);

    let mut owners = OwnerIndex::new(Duration::from_millis(cfg.daemon.owner_scan_interval_ms));
    // Pod names and namespaces for the pod UIDs of owners' cgroups (in a cluster only).
    let pods = crate::host::k8s::spawn();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else {
                    anyhow::bail!("the sweeper thread stopped (see the error above)");
                };
                on_sweep(&batch, &shared, &mut owners, &pods, alerts.as_ref()).await;
                pending.judged();
            }
            r = &mut Box::pin(tokio::signal::ctrl_c()) => {
                r?;
                tracing::info!("interrupted, exiting");
                break;
            }
            _ = sigterm.recv() => {
                tracing::info!("SIGTERM, exiting");
                break;
            }
        }
        if events.is_finished() || http.is_finished() {
            break;
        }
    }
    if events.is_finished() {
        events.await??;
    }
    if http.is_finished() {
        http.await??;
    }
    Ok(())
}
