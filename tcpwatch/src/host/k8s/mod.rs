//! Pod names for the pod UIDs found in cgroup paths ([`tcpwatch_core::k8s::parse_cgroup`]).
//!
//! In a cluster (`KUBERNETES_SERVICE_HOST`/`_PORT` set, the service account's token and CA
//! bundle mounted, `NODE_NAME` set from `spec.nodeName`), a dedicated thread LISTs the pods of
//! this node (`fieldSelector=spec.nodeName=...`), then watches them from the list's
//! `resourceVersion` with bookmarks, and keeps UID -> (namespace, name) in a bounded
//! [`Directory`] shared with the daemon through [`PodIndex`]. A watch that ends normally
//! (server timeout) resumes from the last version seen; `410 Gone` re-lists at once; other
//! errors are counted and retried with exponential backoff, re-listing. Only metadata is
//! asked for (`as=PartialObjectMetadataList`); full `Pod` objects decode the same way.
//!
//! HTTPS only, trusting only the service account's CA bundle. Outside a cluster nothing runs.
//!
//! Static pods: the kubelet names their cgroup after the config hash, and the API shows a
//! mirror pod with another UID whose `kubernetes.io/config.mirror` annotation is that hash;
//! both are indexed.
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;
use tcpwatch_core::model::PodRef;
use tcpwatch_core::table::ConnTable;

/// Most UIDs kept (pods and static-pod aliases). A node runs 110 pods by default and rarely
/// more than a few hundred.
pub const MAX_PODS: usize = 4096;
/// Longest watch event line read (a pod object with large annotations stays far below).
const MAX_EVENT_BYTES: u64 = 16 << 20;
/// Largest LIST answer read.
const MAX_LIST_BYTES: u64 = 256 << 20;
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
pub(crate) const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The API server ends a watch after this long; the client gives it some slack more.
const WATCH_SECONDS: u64 = 290;
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_mins(1);
const ACCEPT_LIST: &str =
    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
const ACCEPT_WATCH: &str =
    "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json";

/// Failed API requests and watch errors since start (`tcpwatch_kubernetes_api_errors_total`).
static API_ERRORS: AtomicU64 = AtomicU64::new(0);
/// Pods known (`tcpwatch_kubernetes_pods`).
static PODS_KNOWN: AtomicU64 = AtomicU64::new(0);

#[must_use]
pub fn api_errors() -> u64 {
    API_ERRORS.load(Ordering::Relaxed)
}

#[must_use]
pub fn pods_known() -> u64 {
    PODS_KNOWN.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------------------
// Decoding (pure).

/// What tcpwatch keeps of one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodMeta {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub resource_version: String,
    /// For the mirror pod of a static pod: the UID its containers' cgroups carry.
    pub mirror_of: Option<String>,
}

/// A decoded LIST answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodList {
    pub resource_version: String,
    pub pods: Vec<PodMeta>,
}

/// A decoded watch event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `ADDED` or `MODIFIED`.
    Upsert(PodMeta),
    Deleted(PodMeta),
    Bookmark {
        resource_version: String,
    },
    /// `ERROR`: the object is a `Status` (410 when the version is too old).
    Error {
        code: u16,
        message: String,
    },
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawMeta {
    uid: String,
    name: String,
    namespace: String,
    resource_version: String,
    annotations: Option<BTreeMap<String, String>>,
}

/// A pod, a `PartialObjectMetadata` or a `Status`: only the fields tcpwatch reads.
#[derive(Deserialize, Default)]
#[serde(default)]
struct RawObject {
    kind: String,
    metadata: Option<RawMeta>,
    code: Option<u16>,
    reason: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct RawList {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: Option<RawMeta>,
    #[serde(default)]
    items: Option<Vec<RawObject>>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    object: RawObject,
}

fn pod_meta(m: RawMeta) -> PodMeta {
    let mirror_of = m
        .annotations
        .and_then(|mut a| a.remove(MIRROR_ANNOTATION))
        .filter(|h| !h.is_empty());
    PodMeta {
        uid: m.uid,
        namespace: m.namespace,
        name: m.name,
        resource_version: m.resource_version,
        mirror_of,
    }
}

/// Decodes a `PodList` or `PartialObjectMetadataList`.
pub fn decode_list(body: &[u8]) -> anyhow::Result<PodList> {
    let raw: RawList = serde_json::from_slice(body).context("decoding the pod list")?;
    if raw.kind == "Status" {
        anyhow::bail!(
            "the API server answered a Status: {}",
            raw.message.unwrap_or_default()
        );
    }
    let resource_version = raw.metadata.map(|m| m.resource_version).unwrap_or_default();
    if resource_version.is_empty() {
        anyhow::bail!("pod list without metadata.resourceVersion");
    }
    let pods = raw
        .items
        .unwrap_or_default()
        .into_iter()
        .filter_map(|o| o.metadata)
        .map(pod_meta)
        .filter(|p| !p.uid.is_empty())
        .collect();
    Ok(PodList {
        resource_version,
        pods,
    })
}

/// Decodes one line of a watch stream.
pub fn decode_event(line: &[u8]) -> anyhow::Result<Event> {
    let raw: RawEvent = serde_json::from_slice(line).context("decoding a watch event")?;
    let obj = raw.object;
    let meta = |m: Option<RawMeta>| -> anyhow::Result<PodMeta> {
        let m = pod_meta(m.unwrap_or_default());
        if m.uid.is_empty() {
            anyhow::bail!("{} event about an object without uid", raw.kind);
        }
        Ok(m)
    };
    Ok(match raw.kind.as_str() {
        "ADDED" | "MODIFIED" => Event::Upsert(meta(obj.metadata)?),
        "DELETED" => Event::Deleted(meta(obj.metadata)?),
        "BOOKMARK" => Event::Bookmark {
            resource_version: obj.metadata.map(|m| m.resource_version).unwrap_or_default(),
        },
        "ERROR" => Event::Error {
            code: obj.code.unwrap_or(0),
            message: match (obj.reason, obj.message) {
                (Some(r), Some(m)) => format!("{r}: {m}"),
                (r, m) => r.or(m).unwrap_or(obj.kind),
            },
        },
        other => anyhow::bail!("unknown watch event type {other:?}"),
    })
}

/// The message of a `Status` body (error answers), or the start of the body.
fn status_message(body: &[u8]) -> String {
    match serde_json::from_slice::<RawObject>(body) {
        Ok(o) if o.kind == "Status" => o.message.or(o.reason).unwrap_or_default(),
        _ => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    }
}

/// Reads one newline-terminated watch event into `buf`; false at the end of the stream.
fn read_event_line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    buf.clear();
    let n = r.by_ref().take(MAX_EVENT_BYTES).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(false);
    }
    if buf.last() != Some(&b'\n') && n as u64 == MAX_EVENT_BYTES {
        return Err(std::io::Error::other(format!(
            "watch event longer than {MAX_EVENT_BYTES} bytes"
        )));
    }
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// The directory (pure state).

/// What to do after an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    Watch,
    /// The version is gone (410): list again, now.
    Relist,
    /// The server reported an error: count it, back off, list again.
    Failed(String),
}

/// UID -> pod of this node, bounded to [`MAX_PODS`] UIDs, and the version to watch from.
#[derive(Debug, Default)]
pub struct Directory {
    by_uid: HashMap<String, PodRef>,
    /// Mirror pod UID -> static pod UID (the alias also in `by_uid`).
    mirrors: HashMap<String, String>,
    resource_version: Option<String>,
    /// Pods not kept because the directory was full.
    pub dropped: u64,
}

impl Directory {
    #[must_use]
    pub fn get(&self, uid: &str) -> Option<&PodRef> {
        self.by_uid.get(uid)
    }

    /// UIDs known (aliases of static pods included).
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_uid.len()
    }

    #[must_use]
    pub fn resource_version(&self) -> Option<&str> {
        self.resource_version.as_deref()
    }

    /// Forgets the version: the next sync lists again.
    pub fn forget_version(&mut self) {
        self.resource_version = None;
    }

    /// Replaces everything with a LIST answer.
    pub fn replace(&mut self, list: PodList) {
        self.by_uid.clear();
        self.mirrors.clear();
        for p in list.pods {
            self.insert(&p);
        }
        self.resource_version = Some(list.resource_version);
    }

    pub fn apply(&mut self, ev: Event) -> Next {
        match ev {
            Event::Upsert(p) => {
                self.set_version(&p.resource_version);
                self.insert(&p);
            }
            Event::Deleted(p) => {
                self.set_version(&p.resource_version);
                self.remove(&p.uid);
            }
            Event::Bookmark { resource_version } => self.set_version(&resource_version),
            Event::Error { code: 410, .. } => {
                self.resource_version = None;
                return Next::Relist;
            }
            Event::Error { code, message } => {
                self.resource_version = None;
                return Next::Failed(format!("watch error {code}: {message}"));
            }
        }
        Next::Watch
    }

    fn set_version(&mut self, rv: &str) {
        if !rv.is_empty() {
            self.resource_version = Some(rv.to_owned());
        }
    }

    fn insert(&mut self, p: &PodMeta) {
        let mut keys = vec![p.uid.clone()];
        if let Some(hash) = &p.mirror_of {
            keys.push(hash.clone());
            self.mirrors.insert(p.uid.clone(), hash.clone());
        }
        for uid in keys {
            if self.by_uid.len() >= MAX_PODS && !self.by_uid.contains_key(&uid) {
                self.dropped += 1;
                continue;
            }
            let pod = PodRef {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                uid: uid.clone(),
            };
            self.by_uid.insert(uid, pod);
        }
    }

    fn remove(&mut self, uid: &str) {
        self.by_uid.remove(uid);
        if let Some(hash) = self.mirrors.remove(uid) {
            self.by_uid.remove(&hash);
        }
    }
}

/// The daemon's handle on the directory the watcher thread maintains.
#[derive(Clone, Debug, Default)]
pub struct PodIndex {
    dir: Arc<RwLock<Directory>>,
}

impl PodIndex {
    #[cfg(test)]
    #[must_use]
    pub fn lookup(&self, uid: &str) -> Option<PodRef> {
        self.read(|d| d.get(uid).cloned())
    }

    /// Fills the names of owners' pods known by UID only. Returns how many were filled.
    pub fn attach(&self, table: &mut ConnTable) -> usize {
        self.read(|d| {
            if d.len() == 0 {
                return 0;
            }
            table.attach_pods(|uid| d.get(uid).cloned())
        })
    }

    fn read<T>(&self, f: impl FnOnce(&Directory) -> T) -> T {
        f(&self.dir.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn write<T>(&self, f: impl FnOnce(&mut Directory) -> T) -> T {
        let mut d = self.dir.write().unwrap_or_else(PoisonError::into_inner);
        let out = f(&mut d);
        PODS_KNOWN.store(d.len() as u64, Ordering::Relaxed);
        out
    }
}

// ---------------------------------------------------------------------------------------------
// The API client.

/// Where and how to reach the API server.
struct Api {
    agent: ureq::Agent,
    base: String,
    node: String,
    token: PathBuf,
}

/// Starts the watcher thread when running in a cluster; the index stays empty otherwise.
pub fn spawn() -> PodIndex {
    let index = PodIndex::default();
    let api = match Api::from_env() {
        Ok(Some(api)) => api,
        Ok(None) => {
            tracing::debug!("not in a Kubernetes cluster: pods are known by UID only");
            return index;
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "pod names disabled");
            return index;
        }
    };
    let idx = index.clone();
    let started = std::thread::Builder::new()
        .name("tcpwatch-pods".into())
        .spawn(move || watch_forever(&api, &idx));
    if let Err(e) = started {
        tracing::warn!(error = %e, "could not start the pod watcher: pod names disabled");
    }
    index
}

impl Api {
    /// `Ok(None)` outside a cluster; an error when in one but misconfigured.
    fn from_env() -> anyhow::Result<Option<Self>> {
        let (Ok(host), Ok(port)) = (
            std::env::var("KUBERNETES_SERVICE_HOST"),
            std::env::var("KUBERNETES_SERVICE_PORT"),
        ) else {
            return Ok(None);
        };
        let dir = std::path::Path::new(SA_DIR);
        let token = dir.join("token");
        let Ok(ca) = std::fs::read(dir.join("ca.crt")) else {
            return Ok(None);
        };
        if std::fs::metadata(&token).is_err() {
            return Ok(None);
        }
        let node = std::env::var("NODE_NAME").unwrap_or_default();
        if !valid_node_name(&node) {
            anyhow::bail!(
                "NODE_NAME must be set to spec.nodeName (got {node:?}) to watch this node's pods"
            );
        }
        Ok(Some(Self {
            agent: agent(&ca)?,
            base: base_url(&host, &port),
            node,
            token,
        }))
    }

    fn get(&self, url: &str, accept: &str, timeout: Duration) -> anyhow::Result<ureq::Body> {
        let token = std::fs::read_to_string(&self.token).context("reading the token")?;
        let resp = self
            .agent
            .get(url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("Authorization", format!("Bearer {}", token.trim()))
            .header("Accept", accept)
            .call()?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        if status != 200 {
            let text = body
                .with_config()
                .limit(64 << 10)
                .read_to_vec()
                .unwrap_or_default();
            return Err(HttpStatus(status, status_message(&text)).into());
        }
        Ok(body)
    }

    fn list(&self) -> anyhow::Result<PodList> {
        let body = self.get(
            &list_url(&self.base, &self.node),
            ACCEPT_LIST,
            Duration::from_mins(1),
        )?;
        let bytes = body
            .into_with_config()
            .limit(MAX_LIST_BYTES)
            .read_to_vec()
            .context("reading the pod list")?;
        decode_list(&bytes)
    }
}

/// A non-200 answer.
#[derive(Debug)]
struct HttpStatus(u16, String);

impl std::fmt::Display for HttpStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.0, self.1)
    }
}

impl std::error::Error for HttpStatus {}

pub(crate) fn agent(ca_pem: &[u8]) -> anyhow::Result<ureq::Agent> {
    use ureq::tls::{PemItem, RootCerts, TlsConfig, TlsProvider};
    let certs: Vec<_> = ureq::tls::parse_pem(ca_pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        anyhow::bail!("no certificate in {SA_DIR}/ca.crt");
    }
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(RootCerts::new_with_certs(&certs))
        .build();
    Ok(ureq::Agent::config_builder()
        .tls_config(tls)
        .https_only(true)
        .proxy(None)
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .build()
        .into())
}

/// Node names are DNS subdomains: nothing to escape in a query.
fn valid_node_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

pub(crate) fn base_url(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    }
}

fn list_url(base: &str, node: &str) -> String {
    format!("{base}/api/v1/pods?fieldSelector=spec.nodeName%3D{node}")
}

fn watch_url(base: &str, node: &str, rv: &str) -> String {
    let rv: String = rv
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!(
        "{}&watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds={WATCH_SECONDS}",
        list_url(base, node)
    )
}

fn watch_forever(api: &Api, index: &PodIndex) {
    tracing::info!(node = %api.node, api = %api.base, "watching this node's pods");
    let mut backoff = MIN_BACKOFF;
    loop {
        match sync(api, index) {
            Ok(()) => backoff = MIN_BACKOFF,
            Err(e) => {
                API_ERRORS.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    error = %format!("{e:#}"),
                    retry_in_s = backoff.as_secs(),
                    "pod list/watch failed"
                );
                std::thread::sleep(jitter(backoff));
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Up to a quarter more, so that every node of a cluster does not retry at once.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    d + d / 4 * (nanos % 1000) / 1000
}

/// Lists when no version is known, then watches until the stream ends. A failed watch
/// request forgets the version (the next sync lists again).
fn sync(api: &Api, index: &PodIndex) -> anyhow::Result<()> {
    let rv = if let Some(rv) = index.read(|d| d.resource_version().map(str::to_owned)) {
        rv
    } else {
        let list = api.list()?;
        let rv = list.resource_version.clone();
        let n = list.pods.len();
        index.write(|d| d.replace(list));
        tracing::debug!(pods = n, resource_version = %rv, "listed this node's pods");
        rv
    };
    let url = watch_url(&api.base, &api.node, &rv);
    let body = match api.get(&url, ACCEPT_WATCH, Duration::from_secs(WATCH_SECONDS + 30)) {
        Ok(b) => b,
        Err(e) => {
            index.write(Directory::forget_version);
            if e.downcast_ref::<HttpStatus>().is_some_and(|s| s.0 == 410) {
                return Ok(());
            }
            return Err(e);
        }
    };
    let mut reader = BufReader::new(body.into_with_config().limit(u64::MAX).reader());
    let mut line = Vec::new();
    while read_event_line(&mut reader, &mut line).context("reading the watch stream")? {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let ev = decode_event(&line)?;
        match index.write(|d| d.apply(ev)) {
            Next::Watch => {}
            Next::Relist => return Ok(()),
            Next::Failed(msg) => anyhow::bail!(msg),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
