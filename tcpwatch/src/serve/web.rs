//! A listener's web configuration, loaded with every file it names, and reloaded when the
//! configuration file or one of those files changes (certificate rotation, new tokens).
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, anyhow};
use tcpwatch_core::webconfig::WebConfig;
use tokio_rustls::rustls::ServerConfig;

use super::auth::PasswordCache;
use super::kube_authz::{Client, KubeAuthz};
use super::tls::{TlsFiles, server_config};

/// How often the files are checked for changes.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// Modification time and size of each file: a change of either triggers a reload.
type Fingerprint = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

/// One loaded web configuration.
pub struct Loaded {
    pub cfg: WebConfig,
    pub tls: Option<Arc<ServerConfig>>,
    /// The bearer tokens of `bearer_token_files`, trimmed.
    pub tokens: Vec<String>,
    /// Passwords that matched their hash since this configuration was loaded.
    pub cache: PasswordCache,
    /// `[kubernetes_authorization]`: other bearer tokens are reviewed by the API server.
    pub kube: Option<Arc<KubeAuthz>>,
    fingerprint: Fingerprint,
}

fn stamp(p: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn read(key: &str, path: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow!("{key}: cannot read {path}: {e}"))
}

impl Loaded {
    /// No web configuration: plain HTTP, no authentication.
    #[must_use]
    pub fn plain() -> Self {
        Self {
            cfg: WebConfig::default(),
            tls: None,
            tokens: Vec::new(),
            cache: PasswordCache::default(),
            kube: None,
            fingerprint: Vec::new(),
        }
    }

    /// Reads and checks the web configuration file at `path` and every file it names.
    /// Errors name the file and the key.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let mut fingerprint = vec![(path.to_owned(), stamp(path))];
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the web configuration {}", path.display()))?;
        let cfg = WebConfig::from_toml_str(&text)
            .map_err(|e| anyhow!("web configuration {}: {e}", path.display()))?;
        for (_, f) in cfg.files() {
            fingerprint.push((PathBuf::from(&f), stamp(Path::new(&f))));
        }
        let mut tokens = Vec::new();
        for (i, f) in cfg.bearer_token_files.iter().enumerate() {
            let key = format!("bearer_token_files[{i}]");
            let bytes = read(&key, f)?;
            let t = String::from_utf8(bytes)
                .map_err(|_| anyhow!("{key}: {f}: not UTF-8 text"))?
                .trim()
                .to_owned();
            if t.is_empty() {
                return Err(anyhow!("{key}: {f}: the file is empty"));
            }
            tokens.push(t);
        }
        let tls = match &cfg.tls_server_config {
            None => None,
            Some(t) => {
                let cert = read("tls_server_config.cert_file", &t.cert_file)?;
                let key = read("tls_server_config.key_file", &t.key_file)?;
                let ca = if t.client_ca_file.trim().is_empty() {
                    None
                } else {
                    Some(read("tls_server_config.client_ca_file", &t.client_ca_file)?)
                };
                let files = TlsFiles {
                    cert: &cert,
                    key: &key,
                    client_ca: ca.as_deref(),
                };
                Some(
                    server_config(t, &files)
                        .map_err(|e| anyhow!("web configuration {}: {e:#}", path.display()))?,
                )
            }
        };
        let kube = match &cfg.kubernetes_authorization {
            None => None,
            Some(k) => {
                let client = Client::in_cluster().map_err(|e| {
                    anyhow!(
                        "web configuration {}: kubernetes_authorization: {e:#}",
                        path.display()
                    )
                })?;
                Some(Arc::new(KubeAuthz::new(k.clone(), client)))
            }
        };
        Ok(Self {
            cfg,
            tls,
            tokens,
            cache: PasswordCache::default(),
            kube,
            fingerprint,
        })
    }

    /// The files' stamps now (compare with the ones at load).
    fn restamp(&self) -> Fingerprint {
        self.fingerprint
            .iter()
            .map(|(p, _)| (p.clone(), stamp(p)))
            .collect()
    }
}

/// The current configuration of one listener, swapped as a whole on reload.
#[derive(Clone)]
pub struct Web {
    current: Arc<RwLock<Arc<Loaded>>>,
    pub listener: &'static str,
}

impl Web {
    #[must_use]
    pub fn new(listener: &'static str, loaded: Loaded) -> Self {
        Self {
            current: Arc::new(RwLock::new(Arc::new(loaded))),
            listener,
        }
    }

    /// The configuration in force.
    #[must_use]
    pub fn current(&self) -> Arc<Loaded> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, l: Loaded) {
        match self.current.write() {
            Ok(mut g) => *g = Arc::new(l),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(l),
        }
    }

    /// Reloads from `path` whenever a file changes. A configuration that fails to load is
    /// logged and counted; the previous one stays in force.
    pub async fn watch(self, path: PathBuf) {
        let mut tick = tokio::time::interval(RELOAD_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Stamps of a set of files that failed to load: not retried until they change again.
        let mut failed: Option<Fingerprint> = None;
        loop {
            tick.tick().await;
            let cur = self.current();
            let now = cur.restamp();
            if now == cur.fingerprint || failed.as_ref() == Some(&now) {
                continue;
            }
            let p = path.clone();
            let result = tokio::task::spawn_blocking(move || Loaded::load(&p)).await;
            match result {
                Ok(Ok(l)) => {
                    self.set(l);
                    failed = None;
                    super::stats::reload(self.listener, true);
                    tracing::info!(listener = self.listener, file = %path.display(), "web configuration reloaded");
                }
                Ok(Err(e)) => {
                    failed = Some(now);
                    super::stats::reload(self.listener, false);
                    tracing::warn!(listener = self.listener, error = %format!("{e:#}"), "web configuration not reloaded; the previous one stays in force");
                }
                Err(e) => tracing::warn!(error = %e, "web configuration reload task failed"),
            }
        }
    }
}
