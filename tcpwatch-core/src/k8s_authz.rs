//! Kubernetes authorization of API requests, as kube-rbac-proxy does it (pure part: request
//! bodies, answer parsing, the decision cache; the daemon does the HTTP calls).
//!
//! A request's bearer token is sent to the API server in a `TokenReview`
//! (`POST /apis/authentication.k8s.io/v1/tokenreviews`). When the token is authenticated, a
//! `SubjectAccessReview` (`POST /apis/authorization.k8s.io/v1/subjectaccessreviews`) asks
//! whether that user and its groups may do the request. Like kube-rbac-proxy without
//! `resourceAttributes`, the check is a *non-resource* one: `path` is the request path
//! (`/api/v1/connections`) and `verb` the lower-case HTTP verb as the API server names it
//! (`GET`/`HEAD` -> `get`, `POST` -> `create`, `PUT` -> `update`, `PATCH` -> `patch`,
//! `DELETE` -> `delete`). A `ClusterRole` grants it with
//! `nonResourceURLs: ["/api/v1/*"]`, `verbs: ["get"]`.
//!
//! Answers are cached ([`DecisionCache`]): allowed for `allowed_ttl_seconds`, denied and
//! unauthenticated for `denied_ttl_seconds`; API-server errors are never cached.
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::model::MonoNs;

/// Default time an allowed decision is reused.
pub const DEFAULT_ALLOWED_TTL_SECONDS: u64 = 30;
/// Default time a denied or unauthenticated decision is reused.
pub const DEFAULT_DENIED_TTL_SECONDS: u64 = 10;
/// Most decisions cached; beyond, expired ones are dropped, then the oldest half.
pub const CACHE_MAX: usize = 1024;
/// Longest TTL accepted (a revoked `RoleBinding` must take effect soon).
pub const MAX_TTL_SECONDS: u64 = 600;

fn default_allowed() -> u64 {
    DEFAULT_ALLOWED_TTL_SECONDS
}
fn default_denied() -> u64 {
    DEFAULT_DENIED_TTL_SECONDS
}

/// `[kubernetes_authorization]` of a web configuration. Its presence turns the check on.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeAuthzConfig {
    /// Seconds an allowed decision is reused.
    #[serde(default = "default_allowed")]
    pub allowed_ttl_seconds: u64,
    /// Seconds a denied (403) or unauthenticated (401) decision is reused.
    #[serde(default = "default_denied")]
    pub denied_ttl_seconds: u64,
    /// Audiences the token must be meant for (`TokenReview.spec.audiences`); empty: the API
    /// server's own.
    #[serde(default)]
    pub audiences: Vec<String>,
}

impl Default for KubeAuthzConfig {
    fn default() -> Self {
        Self {
            allowed_ttl_seconds: DEFAULT_ALLOWED_TTL_SECONDS,
            denied_ttl_seconds: DEFAULT_DENIED_TTL_SECONDS,
            audiences: Vec::new(),
        }
    }
}

/// Keys of `[kubernetes_authorization]`.
pub const KEYS: [&str; 3] = ["allowed_ttl_seconds", "denied_ttl_seconds", "audiences"];

impl KubeAuthzConfig {
    /// Checks the values; the error is (key, message).
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (k, v) in [
            ("allowed_ttl_seconds", self.allowed_ttl_seconds),
            ("denied_ttl_seconds", self.denied_ttl_seconds),
        ] {
            if v > MAX_TTL_SECONDS {
                return Err((
                    format!("kubernetes_authorization.{k}"),
                    format!(
                        "{v} is over {MAX_TTL_SECONDS} (a revoked grant must take effect soon)"
                    ),
                ));
            }
        }
        for (i, a) in self.audiences.iter().enumerate() {
            if a.trim().is_empty() {
                return Err((
                    format!("kubernetes_authorization.audiences[{i}]"),
                    "empty audience".into(),
                ));
            }
        }
        Ok(())
    }
}

/// API path of `TokenReview`.
pub const TOKEN_REVIEW_PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
/// API path of `SubjectAccessReview`.
pub const SUBJECT_ACCESS_REVIEW_PATH: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";

/// The non-resource attributes checked for one request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub path: String,
    pub verb: &'static str,
}

impl Attributes {
    /// The attributes of an HTTP request (kube-rbac-proxy's mapping of methods to verbs).
    #[must_use]
    pub fn for_request(method: &str, path: &str) -> Self {
        let verb = match method {
            "POST" => "create",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "get",
        };
        Self {
            path: path.to_owned(),
            verb,
        }
    }
}

/// The user a `TokenReview` authenticated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct UserInfo {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub extra: HashMap<String, Vec<String>>,
}

/// The body of a `TokenReview` for `token`.
#[must_use]
pub fn token_review_request(token: &str, audiences: &[String]) -> Vec<u8> {
    let mut spec = serde_json::json!({ "token": token });
    if !audiences.is_empty() {
        spec["audiences"] = serde_json::json!(audiences);
    }
    serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": spec,
    })
    .to_string()
    .into_bytes()
}

/// The body of a `SubjectAccessReview`: may `user` do `attrs`?
#[must_use]
pub fn subject_access_review_request(user: &UserInfo, attrs: &Attributes) -> Vec<u8> {
    let mut spec = serde_json::json!({
        "user": user.username,
        "groups": user.groups,
        "nonResourceAttributes": { "path": attrs.path, "verb": attrs.verb },
    });
    if !user.uid.is_empty() {
        spec["uid"] = serde_json::json!(user.uid);
    }
    if !user.extra.is_empty() {
        spec["extra"] = serde_json::json!(user.extra);
    }
    serde_json::json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": spec,
    })
    .to_string()
    .into_bytes()
}

/// The API server could not answer (not a decision about the token): 503 to the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ApiError(pub String);

/// What a `TokenReview` said about a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authn {
    Authenticated(UserInfo),
    /// Not a valid token (the API server's `status.error`, possibly empty).
    Unauthenticated(String),
}

/// What a `SubjectAccessReview` said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authz {
    Allowed,
    /// Denied, with the API server's reason (possibly empty).
    Denied(String),
}

#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    message: String,
    #[serde(default)]
    reason: String,
}

/// The error of a non-201/200 answer, from its `Status` object when it has one.
fn api_error(what: &str, status: u16, body: &[u8]) -> ApiError {
    let detail = match serde_json::from_slice::<Status>(body) {
        Ok(s) if !s.message.is_empty() => format!("{} ({})", s.message, s.reason),
        _ => String::from_utf8_lossy(&body[..body.len().min(200)])
            .trim()
            .to_owned(),
    };
    let hint = match status {
        401 => ": tcpwatch's service-account token was refused",
        403 => {
            ": tcpwatch's service account needs `create` on tokenreviews and \
                subjectaccessreviews (ClusterRole system:auth-delegator, see deploy/kubernetes)"
        }
        _ => "",
    };
    ApiError(format!(
        "{what}: API server answered HTTP {status}: {detail}{hint}"
    ))
}

#[derive(Deserialize)]
struct TokenReviewStatus {
    #[serde(default)]
    authenticated: bool,
    #[serde(default)]
    user: UserInfo,
    #[serde(default)]
    error: String,
}

#[derive(Deserialize)]
struct TokenReview {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    status: Option<TokenReviewStatus>,
}

/// Reads the API server's answer to a `TokenReview`.
pub fn parse_token_review(status: u16, body: &[u8]) -> Result<Authn, ApiError> {
    if !(200..300).contains(&status) {
        return Err(api_error("TokenReview", status, body));
    }
    let r: TokenReview = serde_json::from_slice(body)
        .map_err(|e| ApiError(format!("TokenReview: unreadable answer: {e}")))?;
    if r.kind != "TokenReview" {
        return Err(ApiError(format!(
            "TokenReview: answer of kind {:?}, expected TokenReview",
            r.kind
        )));
    }
    let Some(s) = r.status else {
        return Err(ApiError("TokenReview: answer without status".into()));
    };
    if s.authenticated && !s.user.username.is_empty() {
        Ok(Authn::Authenticated(s.user))
    } else {
        Ok(Authn::Unauthenticated(s.error))
    }
}

#[derive(Deserialize)]
struct SarStatus {
    #[serde(default)]
    allowed: bool,
    #[serde(default)]
    denied: bool,
    #[serde(default)]
    reason: String,
    #[serde(default, rename = "evaluationError")]
    evaluation_error: String,
}

#[derive(Deserialize)]
struct Sar {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    status: Option<SarStatus>,
}

/// Reads the API server's answer to a `SubjectAccessReview`. Only `allowed: true` (and not
/// `denied`) allows; an evaluation error with no grant denies, with the error as reason.
pub fn parse_subject_access_review(status: u16, body: &[u8]) -> Result<Authz, ApiError> {
    if !(200..300).contains(&status) {
        return Err(api_error("SubjectAccessReview", status, body));
    }
    let r: Sar = serde_json::from_slice(body)
        .map_err(|e| ApiError(format!("SubjectAccessReview: unreadable answer: {e}")))?;
    if r.kind != "SubjectAccessReview" {
        return Err(ApiError(format!(
            "SubjectAccessReview: answer of kind {:?}, expected SubjectAccessReview",
            r.kind
        )));
    }
    let Some(s) = r.status else {
        return Err(ApiError(
            "SubjectAccessReview: answer without status".into(),
        ));
    };
    if s.allowed && !s.denied {
        return Ok(Authz::Allowed);
    }
    let reason = match (s.reason.is_empty(), s.evaluation_error.is_empty()) {
        (false, true) => s.reason,
        (true, false) => s.evaluation_error,
        (false, false) => format!("{} ({})", s.reason, s.evaluation_error),
        (true, true) => String::new(),
    };
    Ok(Authz::Denied(reason))
}

/// The outcome of checking one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// 200: the user may.
    Allowed { user: String },
    /// 401: the token is not valid.
    Unauthenticated(String),
    /// 403: the user may not.
    Forbidden { user: String, reason: String },
}

impl Decision {
    /// Combines a `TokenReview` and, when authenticated, a `SubjectAccessReview`.
    #[must_use]
    pub fn from_reviews(user: &UserInfo, authz: Authz) -> Self {
        match authz {
            Authz::Allowed => Self::Allowed {
                user: user.username.clone(),
            },
            Authz::Denied(reason) => Self::Forbidden {
                user: user.username.clone(),
                reason,
            },
        }
    }
}

/// Recent decisions by (token, attributes), bounded, with time injected.
#[derive(Debug)]
pub struct DecisionCache {
    allowed_ttl_ns: u64,
    denied_ttl_ns: u64,
    entries: HashMap<(String, Attributes), (Decision, MonoNs)>,
}

impl DecisionCache {
    #[must_use]
    pub fn new(cfg: &KubeAuthzConfig) -> Self {
        Self {
            allowed_ttl_ns: cfg.allowed_ttl_seconds.saturating_mul(1_000_000_000),
            denied_ttl_ns: cfg.denied_ttl_seconds.saturating_mul(1_000_000_000),
            entries: HashMap::new(),
        }
    }

    /// The decision for `token` and `attrs` if made less than its TTL before `now`.
    #[must_use]
    pub fn get(&self, token: &str, attrs: &Attributes, now: MonoNs) -> Option<Decision> {
        let (d, expires) = self.entries.get(&(token.to_owned(), attrs.clone()))?;
        (now < *expires).then(|| d.clone())
    }

    /// Remembers a decision made at `now`.
    pub fn insert(&mut self, token: &str, attrs: &Attributes, d: Decision, now: MonoNs) {
        let ttl = match d {
            Decision::Allowed { .. } => self.allowed_ttl_ns,
            _ => self.denied_ttl_ns,
        };
        if ttl == 0 {
            return;
        }
        if self.entries.len() >= CACHE_MAX {
            self.entries.retain(|_, (_, exp)| now < *exp);
        }
        if self.entries.len() >= CACHE_MAX {
            // Still full of live entries: drop those expiring soonest (half).
            let mut exps: Vec<u64> = self.entries.values().map(|(_, e)| *e).collect();
            exps.sort_unstable();
            let cut = exps[exps.len() / 2];
            self.entries.retain(|_, (_, exp)| *exp > cut);
        }
        self.entries.insert(
            (token.to_owned(), attrs.clone()),
            (d, now.saturating_add(ttl)),
        );
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
#[path = "k8s_authz_tests.rs"]
mod tests;
