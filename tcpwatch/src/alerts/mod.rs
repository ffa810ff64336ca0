//! Optional push of incident (and, opt-in, finding) lifecycle changes to Alertmanager
//! (`[alertmanager]` in the configuration): `POST {url}/api/v2/alerts`, one alert per cause.
//!
//! - Every incident at or above `min_severity` is one alert, `alertname="TcpwatchIncident"`,
//!   with labels that stay the same while the incident is open (`incident_id`, `kind`,
//!   `severity`, `node`, `netns` and its bounded root labels `process`, `port`, `remote`; see
//!   `alerts/incidents.rs`) so that Alertmanager deduplicates the re-sends and matches the
//!   resolution to its alert. Its annotations carry the diagnosis, the consequence and the
//!   member count.
//! - With `per_finding_alerts = true`, every finding at or above `min_severity` is an alert
//!   too, `alertname="TcpwatchFinding"` (`kind`, `severity`, `finding_id`, `node`, `netns`,
//!   `local`, `remote` for connections, `port` for ports, `cause`).
//! - Opened and updated incidents (findings) are sent firing (`endsAt` = now + 4 re-send
//!   intervals, as Prometheus does, so that Alertmanager resolves them by itself if tcpwatch
//!   stops); resolved ones are sent with `endsAt` = when they resolved. One whose labels change
//!   (kind, severity, cause, root) is sent resolved under the old labels and firing under the
//!   new.
//! - Open findings are re-sent every `resend_interval_ms`. A resolution that could not be
//!   delivered is retried with the next re-send.
//! - The sender runs as a tokio task fed by a channel: [`AlertSender::send`] never blocks the
//!   daemon's loop (when the channel is full the changes are dropped and counted as failed).
//!   Failures are counted ([`AlertStats`]) and logged once per failure streak.
//!
//! The `node` label is the `NODE_NAME` environment variable when set (Kubernetes downward
//! API), else the host name.
pub mod http;
pub mod incidents;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use tcpwatch_core::config::AlertmanagerConfig;
use tcpwatch_core::incident::{Incident, IncidentChange};
use tcpwatch_core::model::{
    Finding, FindingChange, FindingKind, Lifecycle, MonoNs, Severity, Subject,
};
use tokio::sync::mpsc;

pub use crate::alerts::http::{Client, Endpoint};
use crate::alerts::incidents::{incident_annotations, incident_labels};
use crate::state::mono_now;

/// The `alertname` of the opt-in per-finding alerts.
pub const ALERT_NAME: &str = "TcpwatchFinding";
/// Where the runbooks live (one per Prometheus alert; findings link to the one of their kind).
pub const RUNBOOK_BASE: &str = "https://github.com/tcpwatch/tcpwatch/blob/main/docs/runbooks";
/// Changes queued for the sender task before [`AlertSender::send`] starts dropping them.
const CHANNEL_CAPACITY: usize = 16_384;
/// Most changes folded into one POST.
const MAX_BATCH: usize = 1000;
/// Most undelivered resolutions kept for a retry.
const MAX_PENDING_RESOLVED: usize = 10_000;

/// A lifecycle change the sender turns into alerts.
#[derive(Clone, Debug)]
pub enum AlertChange {
    Finding(Box<FindingChange>),
    Incident(Box<IncidentChange>),
}

/// What one alert is about.
#[derive(Clone, Debug)]
enum Source {
    Finding(Box<Finding>),
    Incident(Box<Incident>),
}

impl Source {
    /// The key of the open set (findings and incidents have separate id spaces).
    fn key(&self) -> String {
        match self {
            Self::Finding(f) => format!("finding/{}", f.id),
            Self::Incident(i) => format!("incident/{}", i.id),
        }
    }

    fn severity(&self) -> Severity {
        match self {
            Self::Finding(f) => f.severity,
            Self::Incident(i) => i.severity,
        }
    }

    fn opened_at(&self) -> MonoNs {
        match self {
            Self::Finding(f) => f.opened_at,
            Self::Incident(i) => i.opened_at,
        }
    }

    fn resolved_at(&self) -> Option<MonoNs> {
        match self {
            Self::Finding(f) => f.resolved_at,
            Self::Incident(i) => i.resolved_at,
        }
    }

    fn labels(&self, node: &str) -> Map<String, Value> {
        match self {
            Self::Finding(f) => labels(f, node),
            Self::Incident(i) => incident_labels(i, node),
        }
    }

    fn annotations(&self, node: &str) -> Map<String, Value> {
        match self {
            Self::Finding(f) => finding_annotations(f, node),
            Self::Incident(i) => incident_annotations(i, node),
        }
    }
}

/// Delivery counters, in alerts (one incident or finding in one POST is one alert).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AlertStats {
    /// Alerts Alertmanager accepted (2xx).
    pub sent: u64,
    /// Alerts not delivered: POST failed, timed out, non-2xx, or the queue was full.
    pub failed: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    failed: AtomicU64,
    queue_full_logged: AtomicBool,
}

/// Handle of the sender task. Dropping it stops the task once the queue is drained.
pub struct AlertSender {
    tx: mpsc::Sender<AlertChange>,
    counters: Arc<Counters>,
    /// `per_finding_alerts`: finding changes are only queued when they become alerts.
    per_finding: bool,
}

impl AlertSender {
    /// Queues lifecycle changes for Alertmanager (the findings' only with
    /// `per_finding_alerts`); never blocks.
    pub fn send(&self, findings: &[FindingChange], incidents: &[IncidentChange]) {
        let findings = findings
            .iter()
            .filter(|_| self.per_finding)
            .map(|c| AlertChange::Finding(Box::new(c.clone())));
        let incidents = incidents
            .iter()
            .map(|c| AlertChange::Incident(Box::new(c.clone())));
        for c in findings.chain(incidents) {
            if self.tx.try_send(c).is_err() {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                if !self
                    .counters
                    .queue_full_logged
                    .swap(true, Ordering::Relaxed)
                {
                    tracing::warn!(
                        capacity = CHANNEL_CAPACITY,
                        "alertmanager sender queue full or stopped: incident/finding changes dropped"
                    );
                }
            }
        }
    }

    #[must_use]
    pub fn stats(&self) -> AlertStats {
        AlertStats {
            sent: self.counters.sent.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
        }
    }
}

/// Checks the parts of `[alertmanager]` the configuration validation leaves to the sender:
/// the keys that go together (once all `--set` are applied), the URL's form and, with
/// `read_files` (commands that push), `ca_file` and the credential files. Called at startup so
/// that these are configuration errors.
pub fn check_config(cfg: &AlertmanagerConfig, read_files: bool) -> anyhow::Result<()> {
    tcpwatch_core::config_alertmanager::validate_access(cfg)?;
    if let Some(url) = &cfg.url {
        Endpoint::parse(url).map_err(|e| anyhow::anyhow!(e))?;
        if read_files {
            Client::new(cfg).map_err(|e| anyhow::anyhow!(e))?;
        }
    }
    Ok(())
}

/// Starts the sender task (needs a tokio runtime). None when `alertmanager.url` is unset or
/// unusable (the latter is logged; [`check_config`] reports it at startup).
#[must_use]
pub fn spawn(cfg: &AlertmanagerConfig) -> Option<AlertSender> {
    let url = cfg.url.as_ref()?;
    let client = match Client::new(cfg) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "alertmanager disabled");
            return None;
        }
    };
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let counters = Arc::new(Counters::default());
    let task = Task {
        client,
        cfg: cfg.clone(),
        node: node_name(),
        counters: counters.clone(),
        open: HashMap::new(),
        pending_resolved: Vec::new(),
        failing: 0,
    };
    tracing::info!(
        url = %url,
        min_severity = cfg.min_severity.name(),
        per_finding_alerts = cfg.per_finding_alerts,
        ca_file = cfg.ca_file.as_deref().unwrap_or("-"),
        auth = if cfg.basic_auth_user.is_some() {
            "basic"
        } else if cfg.bearer_token_file.is_some() {
            "bearer"
        } else {
            "none"
        },
        "pushing incidents to alertmanager"
    );
    tokio::spawn(task.run(rx));
    Some(AlertSender {
        tx,
        counters,
        per_finding: cfg.per_finding_alerts,
    })
}

fn node_name() -> String {
    if let Ok(n) = std::env::var("NODE_NAME")
        && !n.trim().is_empty()
    {
        return n.trim().to_owned();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The sender task's state.
struct Task {
    client: Client,
    cfg: AlertmanagerConfig,
    node: String,
    counters: Arc<Counters>,
    /// Open incidents (findings) sent firing, by [`Source::key`], with the labels they were
    /// sent with.
    open: HashMap<String, (Source, Map<String, Value>)>,
    /// Resolutions not delivered yet (retried with the next re-send).
    pending_resolved: Vec<Value>,
    /// Consecutive failed POSTs (0 = healthy).
    failing: u64,
}

/// Clocks of one batch: the monotonic clock of findings and the wall clock of Alertmanager.
#[derive(Clone, Copy, Debug)]
struct Clocks {
    mono: MonoNs,
    wall: SystemTime,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<AlertChange>) {
        let every = Duration::from_millis(self.cfg.resend_interval_ms.max(1));
        let mut resend = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                n = rx.recv_many(&mut batch, MAX_BATCH) => {
                    if n == 0 {
                        return; // the daemon dropped its sender
                    }
                    let clocks = Clocks { mono: mono_now(), wall: SystemTime::now() };
                    let alerts = self.apply(&batch, clocks);
                    batch.clear();
                    self.post(alerts, false).await;
                }
                _ = resend.tick() => {
                    let clocks = Clocks { mono: mono_now(), wall: SystemTime::now() };
                    let alerts: Vec<Outgoing> = self
                        .open
                        .values()
                        .map(|(f, labels)| Outgoing {
                            alert: self.firing(f, labels, clocks),
                            resolved: false,
                        })
                        .collect();
                    self.post(alerts, true).await;
                }
            }
        }
    }

    /// Applies changes to the open set; returns the alerts to send for them.
    fn apply(&mut self, changes: &[AlertChange], clocks: Clocks) -> Vec<Outgoing> {
        let mut out = Vec::new();
        for c in changes {
            let (change, source, enabled) = match c {
                AlertChange::Finding(c) => (
                    c.change,
                    Source::Finding(Box::new(c.finding.clone())),
                    self.cfg.per_finding_alerts,
                ),
                AlertChange::Incident(c) => (
                    c.change,
                    Source::Incident(Box::new(c.incident.clone())),
                    true,
                ),
            };
            let wanted = enabled
                && change != Lifecycle::Resolved
                && source.severity() >= self.cfg.min_severity;
            let key = source.key();
            let labels = source.labels(&self.node);
            if let Some((old, old_labels)) = self.open.remove(&key)
                && (!wanted || old_labels != labels)
            {
                // Resolved, dropped below min_severity, or relabelled: end the old alert.
                let at = source.resolved_at().unwrap_or(clocks.mono).min(clocks.mono);
                let alert = alert(&old, &old_labels, &self.node, at, clocks);
                out.push(Outgoing {
                    alert,
                    resolved: true,
                });
            }
            if wanted {
                let alert = self.firing(&source, &labels, clocks);
                out.push(Outgoing {
                    alert,
                    resolved: false,
                });
                self.open.insert(key, (source, labels));
            }
        }
        out
    }

    fn firing(&self, f: &Source, labels: &Map<String, Value>, clocks: Clocks) -> Value {
        let ttl = self
            .cfg
            .resend_interval_ms
            .saturating_mul(4)
            .saturating_mul(1_000_000);
        alert(
            f,
            labels,
            &self.node,
            clocks.mono.saturating_add(ttl),
            clocks,
        )
    }

    /// POSTs alerts (plus the pending resolutions on a re-send); counts and logs the outcome.
    async fn post(&mut self, mut alerts: Vec<Outgoing>, resend: bool) {
        if resend {
            alerts.extend(self.pending_resolved.drain(..).map(|alert| Outgoing {
                alert,
                resolved: true,
            }));
        }
        if alerts.is_empty() {
            return;
        }
        let n = alerts.len() as u64;
        let body = Value::Array(alerts.iter().map(|a| a.alert.clone()).collect()).to_string();
        let timeout = Duration::from_millis(self.cfg.timeout_ms);
        let result = match tokio::time::timeout(timeout, self.client.post_json(body)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "POST {}: timed out after {} ms (check that Alertmanager runs, or raise \
                 alertmanager.timeout_ms)",
                self.client.endpoint.url, self.cfg.timeout_ms
            )),
        };
        match result {
            Ok(()) => {
                self.counters.sent.fetch_add(n, Ordering::Relaxed);
                if self.failing > 0 {
                    tracing::info!(failed_posts = self.failing, "alertmanager reachable again");
                }
                self.failing = 0;
            }
            Err(e) => {
                self.counters.failed.fetch_add(n, Ordering::Relaxed);
                if self.failing == 0 {
                    tracing::warn!(
                        error = %e,
                        url = %self.client.endpoint.url,
                        alerts = n,
                        "cannot push alerts to alertmanager (logged once until it works again)"
                    );
                }
                self.failing += 1;
                // Keep the resolutions for the next re-send (open alerts are re-sent anyway).
                self.pending_resolved
                    .extend(alerts.into_iter().filter(|a| a.resolved).map(|a| a.alert));
                let excess = self
                    .pending_resolved
                    .len()
                    .saturating_sub(MAX_PENDING_RESOLVED);
                self.pending_resolved.drain(..excess);
            }
        }
    }
}

/// One alert to POST; resolutions are kept for a retry when the POST fails.
#[derive(Debug)]
struct Outgoing {
    alert: Value,
    resolved: bool,
}

/// The labels identifying a finding's alert.
#[must_use]
pub fn labels(f: &Finding, node: &str) -> Map<String, Value> {
    let mut l = Map::new();
    let mut put = |k: &str, v: String| {
        l.insert(k.to_owned(), Value::String(v));
    };
    put("alertname", ALERT_NAME.to_owned());
    put("kind", f.kind.name().to_owned());
    put("severity", f.severity.name().to_owned());
    put("finding_id", f.id.clone());
    put("node", node.to_owned());
    put("cause", f.cause.clone());
    match &f.subject {
        Subject::Connection {
            netns,
            local,
            remote,
            ..
        } => {
            put("netns", netns.inode.to_string());
            put("local", local.to_string());
            put("remote", remote.to_string());
        }
        Subject::Listener { netns, local, .. } => {
            put("netns", netns.inode.to_string());
            put("local", local.to_string());
        }
        Subject::Port { netns, port } => {
            put("netns", netns.inode.to_string());
            put("port", port.to_string());
        }
        Subject::Peer { netns, remote, .. } => {
            put("netns", netns.inode.to_string());
            put("remote", remote.to_string());
        }
    }
    l
}

/// The Prometheus alert (and runbook) of a finding kind.
#[must_use]
pub fn runbook_alert(kind: FindingKind) -> &'static str {
    match kind {
        FindingKind::CloseWaitStuck => "TcpwatchCloseWaitStuck",
        FindingKind::SendQueueGrowing => "TcpwatchSendQueueGrowing",
        FindingKind::RetransmitChain => "TcpwatchRetransmitChain",
        FindingKind::AcceptBacklogFilling => "TcpwatchAcceptBacklogFilling",
        FindingKind::AwaitingResponse => "TcpwatchAwaitingResponse",
        FindingKind::ResetBurst => "TcpwatchResetBurst",
        FindingKind::StaleConnectionReuse => "TcpwatchStaleConnectionReuse",
        FindingKind::ConnectFailing => "TcpwatchConnectFailing",
    }
}

/// One line naming the subject: `10.0.0.1:8080 <- 10.0.0.2:5555 (CLOSE_WAIT, nginx[12], netns 4026531833)`.
#[must_use]
pub fn subject_text(s: &Subject) -> String {
    let who = |o: Option<&tcpwatch_core::model::Owner>| {
        o.map(|o| format!("{}[{}], ", o.comm, o.pid))
            .unwrap_or_default()
    };
    match s {
        Subject::Connection {
            netns,
            local,
            remote,
            state,
            owner,
            ..
        } => format!(
            "{local} -> {remote} ({}, {}netns {})",
            state.name(),
            who(owner.as_ref()),
            netns.inode
        ),
        Subject::Listener {
            netns,
            local,
            owner,
            ..
        } => {
            format!(
                "listener {local} ({}netns {})",
                who(owner.as_ref()),
                netns.inode
            )
        }
        Subject::Port { netns, port } => format!("port {port} (netns {})", netns.inode),
        Subject::Peer {
            netns,
            remote,
            owner,
        } => format!("{}-> {remote} (netns {})", who(owner.as_ref()), netns.inode),
    }
}

/// One Alertmanager v2 alert, firing until `ends_at` (now or earlier resolves it).
fn alert(
    src: &Source,
    labels: &Map<String, Value>,
    node: &str,
    ends_at: MonoNs,
    clocks: Clocks,
) -> Value {
    let starts_at = src.opened_at().min(clocks.mono);
    json!({
        "labels": labels,
        "annotations": src.annotations(node),
        "startsAt": rfc3339(wall_of(starts_at, clocks.mono, clocks.wall)),
        "endsAt": rfc3339(wall_of(ends_at.max(starts_at), clocks.mono, clocks.wall)),
    })
}

/// Summary, description and runbook of a finding's alert.
fn finding_annotations(f: &Finding, node: &str) -> Map<String, Value> {
    let mut annotations = Map::new();
    annotations.insert(
        "summary".into(),
        Value::String(format!(
            "{} on {}: {}",
            f.kind.name(),
            node,
            subject_text(&f.subject)
        )),
    );
    annotations.insert("description".into(), Value::String(f.diagnosis.clone()));
    annotations.insert(
        "runbook_url".into(),
        Value::String(format!("{RUNBOOK_BASE}/{}.md", runbook_alert(f.kind))),
    );
    annotations
}

/// Wall-clock time of a monotonic instant: `wall = wall_now - (mono_now - t)`.
#[must_use]
pub fn wall_of(t: MonoNs, mono_now: MonoNs, wall_now: SystemTime) -> SystemTime {
    if t <= mono_now {
        wall_now
            .checked_sub(Duration::from_nanos(mono_now - t))
            .filter(|w| *w >= UNIX_EPOCH)
            .unwrap_or(UNIX_EPOCH)
    } else {
        wall_now + Duration::from_nanos(t - mono_now)
    }
}

/// RFC 3339 in UTC with milliseconds: `2023-11-14T22:13:20.123Z`.
#[must_use]
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests;

#[cfg(test)]
#[path = "incidents_tests.rs"]
pub(crate) mod incident_tests;
