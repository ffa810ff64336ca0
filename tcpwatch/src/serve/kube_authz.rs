//! Kubernetes authorization of bearer tokens (`[kubernetes_authorization]` in a web
//! configuration), as kube-rbac-proxy does it: `TokenReview`, then a non-resource
//! `SubjectAccessReview` for the request's path and verb ([`tcpwatch_core::k8s_authz`]).
//!
//! The API calls are blocking (ureq, the pod watcher's client: HTTPS, the service account's CA
//! and token) and run on the blocking pool, at most [`MAX_CONCURRENT_REVIEWS`] at a time, so a
//! flood of tokens never stalls the listener's async thread. Decisions are cached; API-server
//! errors are not, and give 503.
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use tcpwatch_core::k8s_authz::{
    ApiError, Attributes, Authn, Decision, DecisionCache, KubeAuthzConfig,
    SUBJECT_ACCESS_REVIEW_PATH, TOKEN_REVIEW_PATH, parse_subject_access_review, parse_token_review,
    subject_access_review_request, token_review_request,
};
use tokio::sync::Semaphore;

/// Reviews in flight at once (per process); more requests wait for a slot.
pub const MAX_CONCURRENT_REVIEWS: usize = 4;
/// One API call's time limit.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest review answer read.
const MAX_ANSWER_BYTES: u64 = 1 << 20;

static REVIEWS: Semaphore = Semaphore::const_new(MAX_CONCURRENT_REVIEWS);

/// Where the reviews go.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    /// tcpwatch's own service-account token (re-read on every call: the kubelet rotates it).
    token: PathBuf,
}

impl Client {
    /// The in-cluster API server, from `KUBERNETES_SERVICE_HOST`/`_PORT` and the mounted
    /// service account.
    pub fn in_cluster() -> anyhow::Result<Self> {
        let (Ok(host), Ok(port)) = (
            std::env::var("KUBERNETES_SERVICE_HOST"),
            std::env::var("KUBERNETES_SERVICE_PORT"),
        ) else {
            return Err(anyhow!(
                "not running in a Kubernetes pod (KUBERNETES_SERVICE_HOST/PORT unset): remove \
                 [kubernetes_authorization] or run the daemon in the cluster"
            ));
        };
        let dir = std::path::Path::new(crate::host::k8s::SA_DIR);
        let ca = std::fs::read(dir.join("ca.crt")).with_context(|| {
            format!(
                "reading {}/ca.crt (automountServiceAccountToken must be on)",
                crate::host::k8s::SA_DIR
            )
        })?;
        let token = dir.join("token");
        std::fs::metadata(&token).with_context(|| format!("reading {}", token.display()))?;
        Ok(Self::new(
            crate::host::k8s::agent(&ca)?,
            crate::host::k8s::base_url(&host, &port),
            token,
        ))
    }

    /// Another API server (tests: a fake one on 127.0.0.1).
    #[must_use]
    pub fn new(agent: ureq::Agent, base: String, token: PathBuf) -> Self {
        Self { agent, base, token }
    }

    /// POSTs `body` to `path`; returns the status and the body.
    fn post(&self, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>), ApiError> {
        let fail = |e: &dyn std::fmt::Display| ApiError(format!("{path}: {e}"));
        let token = std::fs::read_to_string(&self.token)
            .map_err(|e| fail(&format!("reading {}: {e}", self.token.display())))?;
        let resp = self
            .agent
            .post(&format!("{}{path}", self.base))
            .config()
            .timeout_global(Some(REVIEW_TIMEOUT))
            .http_status_as_error(false)
            .build()
            .header("Authorization", format!("Bearer {}", token.trim()))
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .send(body)
            .map_err(|e| fail(&e))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .into_with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_vec()
            .map_err(|e| fail(&format!("reading the answer: {e}")))?;
        Ok((status, bytes))
    }

    /// `TokenReview`, then (authenticated) `SubjectAccessReview`. Blocking.
    fn review(
        &self,
        cfg: &KubeAuthzConfig,
        token: &str,
        attrs: &Attributes,
    ) -> Result<Decision, ApiError> {
        let (status, body) = self.post(
            TOKEN_REVIEW_PATH,
            &token_review_request(token, &cfg.audiences),
        )?;
        let user = match parse_token_review(status, &body)? {
            Authn::Unauthenticated(e) => return Ok(Decision::Unauthenticated(e)),
            Authn::Authenticated(u) => u,
        };
        let (status, body) = self.post(
            SUBJECT_ACCESS_REVIEW_PATH,
            &subject_access_review_request(&user, attrs),
        )?;
        Ok(Decision::from_reviews(
            &user,
            parse_subject_access_review(status, &body)?,
        ))
    }
}

/// One listener's Kubernetes authorization: the client and its decision cache (emptied when
/// the web configuration is reloaded, since a new one is built).
pub struct KubeAuthz {
    cfg: KubeAuthzConfig,
    client: Client,
    cache: Mutex<DecisionCache>,
    epoch: Instant,
}

impl KubeAuthz {
    #[must_use]
    pub fn new(cfg: KubeAuthzConfig, client: Client) -> Self {
        Self {
            cache: Mutex::new(DecisionCache::new(&cfg)),
            cfg,
            client,
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn cached(&self, token: &str, attrs: &Attributes) -> Option<Decision> {
        let now = self.now();
        match self.cache.lock() {
            Ok(c) => c.get(token, attrs, now),
            Err(p) => p.into_inner().get(token, attrs, now),
        }
    }

    fn remember(&self, token: &str, attrs: &Attributes, d: Decision) {
        let now = self.now();
        match self.cache.lock() {
            Ok(mut c) => c.insert(token, attrs, d, now),
            Err(p) => p.into_inner().insert(token, attrs, d, now),
        }
    }

    /// Decides whether the holder of `token` may do `method` on `path`.
    pub async fn check(
        self: &Arc<Self>,
        token: &str,
        method: &str,
        path: &str,
    ) -> Result<Decision, ApiError> {
        let attrs = Attributes::for_request(method, path);
        if let Some(d) = self.cached(token, &attrs) {
            return Ok(d);
        }
        let _permit = REVIEWS
            .acquire()
            .await
            .map_err(|e| ApiError(format!("review slots closed: {e}")))?;
        // Another request may have asked the same while this one waited.
        if let Some(d) = self.cached(token, &attrs) {
            return Ok(d);
        }
        let me = self.clone();
        let (t, a) = (token.to_owned(), attrs.clone());
        let d = tokio::task::spawn_blocking(move || me.client.review(&me.cfg, &t, &a))
            .await
            .map_err(|e| ApiError(format!("review task failed: {e}")))??;
        self.remember(token, &attrs, d.clone());
        Ok(d)
    }
}

#[cfg(test)]
#[path = "kube_authz_tests.rs"]
mod tests;
