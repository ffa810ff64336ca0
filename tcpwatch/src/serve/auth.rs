//! Authentication middleware: basic auth (bcrypt) and bearer tokens from the listener's web
//! configuration. `/healthz` and `/readyz` need no credentials (kubelet probes cannot send
//! any); TLS client-certificate checks, when configured, apply to every path.
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tcpwatch_core::k8s_authz::{ApiError, Attributes, Decision};
use tcpwatch_core::webconfig::{Credentials, DUMMY_HASH, token_matches, verify_password};
use tokio::sync::Semaphore;

use super::stats;
use super::web::{Loaded, Web};

/// Paths served without credentials.
pub const OPEN_PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// Most remembered successful (user, password) pairs per configuration.
const CACHE_MAX: usize = 64;

/// Successful password checks, so a client that sends its password on every request costs one
/// bcrypt run, not one per request (exporter-toolkit does the same). Cleared on reload.
#[derive(Default)]
pub struct PasswordCache(Mutex<HashSet<(String, String)>>);

impl PasswordCache {
    fn contains(&self, user: &str, password: &str) -> bool {
        self.0
            .lock()
            .is_ok_and(|s| s.contains(&(user.to_owned(), password.to_owned())))
    }

    fn insert(&self, user: &str, password: &str) {
        if let Ok(mut s) = self.0.lock() {
            if s.len() >= CACHE_MAX {
                s.clear();
            }
            s.insert((user.to_owned(), password.to_owned()));
        }
    }
}

/// bcrypt runs one at a time on the blocking pool: wrong passwords in a loop cost at most one
/// core and never the async threads.
static BCRYPT: Semaphore = Semaphore::const_new(1);

async fn check_basic(cfg: &Arc<Loaded>, user: &str, password: &str) -> bool {
    if cfg.cache.contains(user, password) {
        return true;
    }
    let Ok(_permit) = BCRYPT.acquire().await else {
        return false;
    };
    let (known, hash) = match cfg.cfg.basic_auth_users.get(user) {
        Some(h) => (true, h.clone()),
        None => (false, DUMMY_HASH.to_owned()),
    };
    let pw = password.to_owned();
    let ok = tokio::task::spawn_blocking(move || verify_password(&pw, &hash))
        .await
        .unwrap_or(false)
        && known;
    if ok {
        cfg.cache.insert(user, password);
    }
    ok
}

/// Refuses requests without valid credentials when the web configuration asks for them.
/// With `[kubernetes_authorization]`, a bearer token that is not one of `bearer_token_files`
/// is reviewed by the Kubernetes API server: 401 when it is not authenticated, 403 when the
/// user may not, 503 when the API server cannot be asked.
pub async fn require(State(web): State<Web>, req: Request, next: Next) -> Response {
    let cfg = web.current();
    if !cfg.cfg.requires_credentials() || OPEN_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let creds = Credentials::parse(
        req.headers()
            .get(header::AUTHORIZATION)
            .map(axum::http::HeaderValue::as_bytes),
    );
    let ok = match &creds {
        Credentials::Basic { user, password } => check_basic(&cfg, user, password).await,
        Credentials::Bearer(t) if token_matches(&cfg.tokens, t) => true,
        Credentials::Bearer(t) => match &cfg.kube {
            None => false,
            Some(k) => {
                let (method, path) = (req.method().as_str().to_owned(), req.uri().path());
                match kube_verdict(web.listener, k.check(t, &method, path).await, &method, path) {
                    None => true,
                    Some(refusal) => return refusal,
                }
            }
        },
        Credentials::None | Credentials::Malformed => false,
    };
    if ok {
        return next.run(req).await;
    }
    stats::rejected(web.listener, stats::reason::UNAUTHORIZED);
    let why = match creds {
        Credentials::None => "credentials required (basic auth or a bearer token)\n",
        Credentials::Malformed => "unreadable Authorization header\n",
        _ => "wrong credentials\n",
    };
    unauthorized(&cfg, why)
}

fn unauthorized(cfg: &Loaded, why: &'static str) -> Response {
    let challenge = if cfg.cfg.basic_auth_users.is_empty() {
        "Bearer realm=\"tcpwatch\""
    } else {
        "Basic realm=\"tcpwatch\""
    };
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, challenge)],
        why,
    )
        .into_response()
}

/// `None` when allowed; otherwise the refusal (counted).
fn kube_verdict(
    listener: &'static str,
    d: Result<Decision, ApiError>,
    method: &str,
    path: &str,
) -> Option<Response> {
    match d {
        Ok(Decision::Allowed { .. }) => None,
        Ok(Decision::Unauthenticated(e)) => {
            stats::rejected(listener, stats::reason::UNAUTHORIZED);
            tracing::debug!(listener, error = %e, "bearer token not authenticated by TokenReview");
            Some(
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer realm=\"tcpwatch\"")],
                    "the Kubernetes API server did not authenticate this token (TokenReview)\n",
                )
                    .into_response(),
            )
        }
        Ok(Decision::Forbidden { user, reason }) => {
            stats::rejected(listener, stats::reason::FORBIDDEN);
            let verb = Attributes::for_request(method, path).verb;
            let reason = if reason.is_empty() {
                String::new()
            } else {
                format!(": {reason}")
            };
            Some(
                (
                    StatusCode::FORBIDDEN,
                    format!(
                        "forbidden: user {user:?} may not {verb} the non-resource URL {path} \
                         (SubjectAccessReview){reason}\n"
                    ),
                )
                    .into_response(),
            )
        }
        Err(e) => {
            stats::rejected(listener, stats::reason::AUTHZ_UNAVAILABLE);
            tracing::warn!(listener, error = %e, "Kubernetes authorization unavailable");
            Some(
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot check the token with the Kubernetes API server: {e}\n"),
                )
                    .into_response(),
            )
        }
    }
}
