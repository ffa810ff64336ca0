//! The API client: a LIST then WATCH loop on its own thread, HTTPS with the service
//! account's CA bundle only, exponential backoff on errors.
use super::{
    ACCEPT_LIST, ACCEPT_WATCH, API_ERRORS, Directory, MAX_BACKOFF, MAX_LIST_BYTES, MIN_BACKOFF,
    Next, PodIndex, PodList, SA_DIR, WATCH_SECONDS, decode_event, decode_list, read_event_line,
    status_message,
};
use std::io::BufReader;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;

/// Where and how to reach the API server.
pub(super) struct Api {
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
pub(super) struct HttpStatus(u16, String);

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
pub(super) fn valid_node_name(n: &str) -> bool {
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

pub(super) fn list_url(base: &str, node: &str) -> String {
    format!("{base}/api/v1/pods?fieldSelector=spec.nodeName%3D{node}")
}

pub(super) fn watch_url(base: &str, node: &str, rv: &str) -> String {
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

pub(super) fn watch_forever(api: &Api, index: &PodIndex) {
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
pub(super) fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    d + d / 4 * (nanos % 1000) / 1000
}

/// Lists when no version is known, then watches until the stream ends. A failed watch
/// request forgets the version (the next sync lists again).
pub(super) fn sync(api: &Api, index: &PodIndex) -> anyhow::Result<()> {
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
