//! Optional push of finding lifecycle changes to Alertmanager (`[alertmanager]` in the
//! configuration): `POST {url}/api/v2/alerts` with one alert per finding.
//!
//! - Every finding at or above `min_severity` is one alert, `alertname="TcpwatchFinding"`, with
//!   labels that stay the same while the finding is open (`kind`, `severity`, `finding_id`,
//!   `node`, `netns`, `local`, `remote` for connections, `port` for ports, `cause`) so that
//!   Alertmanager deduplicates the re-sends and matches the resolution to its alert.
//! - Opened and updated findings are sent firing (`endsAt` = now + 4 re-send intervals, as
//!   Prometheus does, so that Alertmanager resolves them by itself if tcpwatch stops); resolved
//!   ones are sent with `endsAt` = when they resolved. A finding whose labels change (its
//!   severity or cause) is sent resolved under the old labels and firing under the new.
//! - Open findings are re-sent every `resend_interval_ms`. A resolution that could not be
//!   delivered is retried with the next re-send.
//! - The sender runs as a tokio task fed by a channel: [`AlertSender::send`] never blocks the
//!   daemon's loop (when the channel is full the changes are dropped and counted as failed).
//!   Failures are counted ([`AlertStats`]) and logged once per failure streak.
//!
//! The `node` label is the `NODE_NAME` environment variable when set (Kubernetes downward
//! API), else the host name.
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use tcpwatch_core::config::AlertmanagerConfig;
use tcpwatch_core::model::{Finding, FindingChange, FindingKind, Lifecycle, MonoNs, Subject};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::state::mono_now;

/// The `alertname` of every alert tcpwatch pushes.
pub const ALERT_NAME: &str = "TcpwatchFinding";
/// Where the runbooks live (one per Prometheus alert; findings link to the one of their kind).
pub const RUNBOOK_BASE: &str = "https://github.com/tcpwatch/tcpwatch/blob/main/docs/runbooks";
/// Changes queued for the sender task before [`AlertSender::send`] starts dropping them.
const CHANNEL_CAPACITY: usize = 16_384;
/// Most changes folded into one POST.
const MAX_BATCH: usize = 1000;
/// Most undelivered resolutions kept for a retry.
const MAX_PENDING_RESOLVED: usize = 10_000;
/// Most bytes of Alertmanager's answer read (only the status line matters).
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

/// Delivery counters, in alerts (one finding in one POST is one alert).
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
    tx: mpsc::Sender<FindingChange>,
    counters: Arc<Counters>,
}

impl AlertSender {
    /// Queues lifecycle changes for Alertmanager; never blocks.
    pub fn send(&self, changes: &[FindingChange]) {
        for c in changes {
            if self.tx.try_send(c.clone()).is_err() {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                if !self
                    .counters
                    .queue_full_logged
                    .swap(true, Ordering::Relaxed)
                {
                    tracing::warn!(
                        capacity = CHANNEL_CAPACITY,
                        "alertmanager sender queue full or stopped: finding changes dropped"
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

/// Where to POST: `http://host[:port][/prefix]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Host as written in the URL (brackets kept for IPv6), for the `Host` header.
    pub host: String,
    pub port: u16,
    /// `{prefix}/api/v2/alerts`.
    pub path: String,
}

impl Endpoint {
    /// Parses `alertmanager.url`. Only `http://` is supported (no TLS client in tcpwatch).
    pub fn parse(url: &str) -> Result<Self, String> {
        if url.starts_with("https://") {
            return Err(format!(
                "alertmanager.url: https:// is not supported (tcpwatch has no TLS client), got \
                 {url:?}; use http:// (e.g. a sidecar or a cluster-internal service)"
            ));
        }
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("alertmanager.url: must start with http://, got {url:?}"))?;
        let (authority, prefix) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        if authority.contains('@') {
            return Err(format!(
                "alertmanager.url: credentials in the URL are not supported, got {url:?}"
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, tail) = v6
                .split_once(']')
                .ok_or_else(|| format!("alertmanager.url: unclosed '[' in {url:?}"))?;
            (format!("[{h}]"), tail.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (authority.to_owned(), None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(format!("alertmanager.url: no host in {url:?}"));
        }
        let port = match port {
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("alertmanager.url: bad port {p:?} in {url:?}"))?,
        };
        let prefix = prefix
            .split(['?', '#'])
            .next()
            .unwrap_or("")
            .trim_end_matches('/');
        Ok(Self {
            host,
            port,
            path: format!("{prefix}/api/v2/alerts"),
        })
    }

    /// Host to connect to (without IPv6 brackets).
    fn connect_host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }
}

/// Checks the parts of `[alertmanager]` the configuration validation leaves to the sender
/// (the URL scheme and form). Called at startup so that a bad URL is a configuration error.
pub fn check_config(cfg: &AlertmanagerConfig) -> anyhow::Result<()> {
    if let Some(url) = &cfg.url {
        Endpoint::parse(url).map_err(|e| anyhow::anyhow!(e))?;
    }
    Ok(())
}

/// Starts the sender task (needs a tokio runtime). None when `alertmanager.url` is unset or
/// unusable (the latter is logged; [`check_config`] reports it at startup).
#[must_use]
pub fn spawn(cfg: &AlertmanagerConfig) -> Option<AlertSender> {
    let url = cfg.url.as_ref()?;
    let endpoint = match Endpoint::parse(url) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "alertmanager disabled");
            return None;
        }
    };
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let counters = Arc::new(Counters::default());
    let task = Task {
        endpoint,
        cfg: cfg.clone(),
        node: node_name(),
        counters: counters.clone(),
        open: HashMap::new(),
        pending_resolved: Vec::new(),
        failing: 0,
    };
    tracing::info!(url = %url, min_severity = cfg.min_severity.name(), "pushing findings to alertmanager");
    tokio::spawn(task.run(rx));
    Some(AlertSender { tx, counters })
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
    endpoint: Endpoint,
    cfg: AlertmanagerConfig,
    node: String,
    counters: Arc<Counters>,
    /// Open findings sent firing, by id, with the labels they were sent with.
    open: HashMap<String, (Finding, Map<String, Value>)>,
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
    async fn run(mut self, mut rx: mpsc::Receiver<FindingChange>) {
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
    fn apply(&mut self, changes: &[FindingChange], clocks: Clocks) -> Vec<Outgoing> {
        let mut out = Vec::new();
        for c in changes {
            let f = &c.finding;
            let wanted = c.change != Lifecycle::Resolved && f.severity >= self.cfg.min_severity;
            let labels = labels(f, &self.node);
            if let Some((old, old_labels)) = self.open.remove(&f.id)
                && (!wanted || old_labels != labels)
            {
                // Resolved, dropped below min_severity, or relabelled: end the old alert.
                let at = f.resolved_at.unwrap_or(clocks.mono).min(clocks.mono);
                let alert = alert(&old, &old_labels, &self.node, at, clocks);
                out.push(Outgoing {
                    alert,
                    resolved: true,
                });
            }
            if wanted {
                let alert = self.firing(f, &labels, clocks);
                out.push(Outgoing {
                    alert,
                    resolved: false,
                });
                self.open.insert(f.id.clone(), (f.clone(), labels));
            }
        }
        out
    }

    fn firing(&self, f: &Finding, labels: &Map<String, Value>, clocks: Clocks) -> Value {
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
        let result = match tokio::time::timeout(timeout, post_json(&self.endpoint, &body)).await {
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {} ms", self.cfg.timeout_ms)),
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
                        host = %self.endpoint.host,
                        port = self.endpoint.port,
                        "cannot push alerts to alertmanager (logged once until it works again)"
                    );
                }
                self.failing += 1;
                // Keep the resolutions for the next re-send (open findings are re-sent anyway).
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
    f: &Finding,
    labels: &Map<String, Value>,
    node: &str,
    ends_at: MonoNs,
    clocks: Clocks,
) -> Value {
    let starts_at = f.opened_at.min(clocks.mono);
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
    json!({
        "labels": labels,
        "annotations": annotations,
        "startsAt": rfc3339(wall_of(starts_at, clocks.mono, clocks.wall)),
        "endsAt": rfc3339(wall_of(ends_at.max(starts_at), clocks.mono, clocks.wall)),
    })
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
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let y = if m <= 2 { y + 1 } else { y };
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

/// The HTTP/1.1 request of one POST.
fn request(ep: &Endpoint, body: &str) -> String {
    let host = if ep.port == 80 {
        ep.host.clone()
    } else {
        format!("{}:{}", ep.host, ep.port)
    };
    format!(
        "POST {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tcpwatch/{}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        ep.path,
        env!("CARGO_PKG_VERSION"),
        body.len()
    )
}

/// The status code of an HTTP/1.x response head.
fn status_of(response: &[u8]) -> Option<u16> {
    let line = response.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

/// One POST; Ok on a 2xx answer. The caller bounds it with `timeout_ms`.
async fn post_json(ep: &Endpoint, body: &str) -> Result<(), String> {
    let mut s = TcpStream::connect((ep.connect_host(), ep.port))
        .await
        .map_err(|e| format!("connect {}:{}: {e}", ep.host, ep.port))?;
    s.write_all(request(ep, body).as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut resp = Vec::new();
    (&mut s)
        .take(MAX_RESPONSE_BYTES)
        .read_to_end(&mut resp)
        .await
        .map_err(|e| format!("read: {e}"))?;
    match status_of(&resp) {
        Some(code) if (200..300).contains(&code) => Ok(()),
        Some(code) => {
            let text = String::from_utf8_lossy(&resp);
            let body = text.split_once("\r\n\r\n").map_or("", |x| x.1).trim();
            let body: String = body.chars().take(300).collect();
            Err(format!("POST {} answered {code}: {body}", ep.path))
        }
        None => Err("no HTTP response".to_owned()),
    }
}

#[cfg(test)]
#[path = "alerts_tests.rs"]
mod tests;
