#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
//! The Kubernetes authorization middleware against a fake API server on 127.0.0.1 that
//! answers with the recorded bodies of `tcpwatch-core/testdata/k8s_authz`.
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::middleware;
use axum::routing::get;
use tcpwatch_core::k8s_authz::KubeAuthzConfig;
use tower::ServiceExt as _;

use super::{Client, KubeAuthz};
use crate::serve::auth;
use crate::serve::web::{Loaded, Web};

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../../tcpwatch-core/testdata/k8s_authz/", $name))
    };
}

/// One request the fake API server received.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    authorization: String,
    content_type: String,
    body: String,
}

/// A fake API server: `TokenReview` authenticates `reader-token` (the reader service account)
/// and `stranger-token` (default:default), answers 403 `Status` to `broken-token` (tcpwatch
/// lacks the RBAC), and does not authenticate any other token. `SubjectAccessReview` allows the
/// reader on `/api/v1/connections`, denies with a reason on `/api/v1/stream`, and denies
/// everything else.
struct FakeApi {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeApi {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
                let (mut len, mut authorization, mut content_type) =
                    (0, String::new(), String::new());
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    let (k, v) = h.split_once(':').unwrap();
                    match k.to_ascii_lowercase().as_str() {
                        "content-length" => len = v.trim().parse().unwrap(),
                        "authorization" => v.trim().clone_into(&mut authorization),
                        "content-type" => v.trim().clone_into(&mut content_type),
                        _ => {}
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                let body = String::from_utf8(body).unwrap();
                let (status, answer) = answer(&path, &body);
                log.lock().unwrap().push(Seen {
                    path,
                    authorization,
                    content_type,
                    body,
                });
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            }
        });
        Self { base, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn answer(path: &str, body: &str) -> (u16, String) {
    if path.ends_with("/tokenreviews") {
        if body.contains("\"reader-token\"") {
            (201, fixture!("tokenreview-authenticated.json").to_owned())
        } else if body.contains("\"stranger-token\"") {
            (
                201,
                fixture!("tokenreview-authenticated.json").replace(
                    "system:serviceaccount:monitoring:tcpwatch-reader",
                    "system:serviceaccount:default:default",
                ),
            )
        } else if body.contains("\"broken-token\"") {
            (403, fixture!("status-forbidden.json").to_owned())
        } else {
            (201, fixture!("tokenreview-unauthenticated.json").to_owned())
        }
    } else if path.ends_with("/subjectaccessreviews") {
        if body.contains("\"/api/v1/stream\"") {
            (201, fixture!("sar-denied-explicit.json").to_owned())
        } else if body.contains("tcpwatch-reader") && body.contains("\"/api/v1/connections\"") {
            (201, fixture!("sar-allowed.json").to_owned())
        } else {
            (201, fixture!("sar-denied.json").to_owned())
        }
    } else {
        (404, fixture!("status-unauthorized.json").to_owned())
    }
}

struct Setup {
    api: FakeApi,
    router: Router,
    dir: TempDir,
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn setup(listener: &'static str, static_token: Option<&str>) -> Setup {
    let api = FakeApi::start();
    let dir = std::env::temp_dir().join(format!(
        "tcpwatch-kube-authz-{listener}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let sa_token = dir.join("token");
    std::fs::write(&sa_token, "tcpwatch-sa-token\n").unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .build()
        .into();
    let cfg = KubeAuthzConfig::default();
    let mut loaded = Loaded::plain();
    loaded.cfg.kubernetes_authorization = Some(cfg.clone());
    if let Some(t) = static_token {
        loaded.tokens = vec![t.to_owned()];
    }
    loaded.kube = Some(Arc::new(KubeAuthz::new(
        cfg,
        Client::new(agent, api.base.clone(), sa_token),
    )));
    let web = Web::new(listener, loaded);
    let router = Router::new()
        .route("/api/v1/connections", get(|| async { "connections" }))
        .route("/api/v1/stream", get(|| async { "stream" }))
        .route("/healthz", get(|| async { "ok" }))
        .layer(middleware::from_fn_with_state(web, auth::require));
    Setup {
        api,
        router,
        dir: TempDir(dir),
    }
}

async fn call(router: &Router, path: &str, token: Option<&str>) -> (StatusCode, String) {
    let mut req = Request::get(path);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let resp = router
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn rejected(listener: &str, reason: &str) -> f64 {
    let reg = prometheus::Registry::new();
    crate::serve::stats::register(&reg).unwrap();
    reg.gather()
        .iter()
        .filter(|f| f.name() == "tcpwatch_http_rejected_total")
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| {
            let l = m.get_label();
            l.iter()
                .any(|p| p.name() == "listener" && p.value() == listener)
                && l.iter()
                    .any(|p| p.name() == "reason" && p.value() == reason)
        })
        .map(|m| m.get_counter().get_value())
        .sum()
}

#[tokio::test]
async fn allowed_user_gets_200_after_token_and_access_reviews() {
    let s = setup("kube-allowed", None);
    let (status, body) = call(&s.router, "/api/v1/connections", Some("reader-token")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "connections"));
    let seen = s.api.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].path, "/apis/authentication.k8s.io/v1/tokenreviews");
    assert_eq!(
        seen[1].path,
        "/apis/authorization.k8s.io/v1/subjectaccessreviews"
    );
    for r in &seen {
        // tcpwatch authenticates itself with its own service-account token.
        assert_eq!(r.authorization, "Bearer tcpwatch-sa-token");
        assert_eq!(r.content_type, "application/json");
    }
    let tr: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(tr["spec"]["token"], "reader-token");
    let sar: serde_json::Value = serde_json::from_str(&seen[1].body).unwrap();
    assert_eq!(
        sar["spec"]["user"],
        "system:serviceaccount:monitoring:tcpwatch-reader"
    );
    assert_eq!(
        sar["spec"]["nonResourceAttributes"],
        serde_json::json!({"path": "/api/v1/connections", "verb": "get"})
    );
    // Cached: a second request asks nothing more.
    let (status, _) = call(&s.router, "/api/v1/connections", Some("reader-token")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.api.seen().len(), 2);
}

#[tokio::test]
async fn denied_user_gets_403_with_the_reason_and_it_is_counted() {
    let s = setup("kube-denied", None);
    let (status, body) = call(&s.router, "/api/v1/connections", Some("stranger-token")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body.contains("system:serviceaccount:default:default"),
        "{body}"
    );
    assert!(
        body.contains("get the non-resource URL /api/v1/connections"),
        "{body}"
    );
    // The reader may read connections but not the stream: the authorizer's reason is shown.
    let (status, body) = call(&s.router, "/api/v1/stream", Some("reader-token")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body.contains("stream access needs an approved ticket"),
        "{body}"
    );
    assert!((rejected("kube-denied", "forbidden") - 2.0).abs() < f64::EPSILON);
    // Denials are cached too.
    let n = s.api.seen().len();
    let (status, _) = call(&s.router, "/api/v1/stream", Some("reader-token")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(s.api.seen().len(), n);
}

#[tokio::test]
async fn unauthenticated_or_missing_tokens_get_401() {
    let s = setup("kube-unauth", None);
    let (status, body) = call(&s.router, "/api/v1/connections", Some("forged-token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("TokenReview"), "{body}");
    // No SubjectAccessReview for a token that is not authenticated.
    assert_eq!(s.api.seen().len(), 1);
    let (status, _) = call(&s.router, "/api/v1/connections", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!((rejected("kube-unauth", "unauthorized") - 2.0).abs() < f64::EPSILON);
    // Probes need nothing and ask nothing.
    let (status, _) = call(&s.router, "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.api.seen().len(), 1);
}

#[tokio::test]
async fn api_server_errors_give_503_are_counted_and_not_cached() {
    let s = setup("kube-unavailable", None);
    for _ in 0..2 {
        let (status, body) = call(&s.router, "/api/v1/connections", Some("broken-token")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("HTTP 403"), "{body}");
        assert!(body.contains("system:auth-delegator"), "{body}");
    }
    assert_eq!(s.api.seen().len(), 2, "errors must not be cached");
    assert!((rejected("kube-unavailable", "authz_unavailable") - 2.0).abs() < f64::EPSILON);
}

#[tokio::test]
async fn unreachable_api_server_gives_503() {
    let s = setup("kube-unreachable", None);
    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let agent: ureq::Agent = ureq::Agent::config_builder().proxy(None).build().into();
    let mut loaded = Loaded::plain();
    loaded.cfg.kubernetes_authorization = Some(KubeAuthzConfig::default());
    loaded.kube = Some(Arc::new(KubeAuthz::new(
        KubeAuthzConfig::default(),
        Client::new(agent, base, s.dir.0.join("token")),
    )));
    let router = Router::new()
        .route("/api/v1/connections", get(|| async { "connections" }))
        .layer(middleware::from_fn_with_state(
            Web::new("kube-unreachable", loaded),
            auth::require,
        ));
    let (status, body) = call(&router, "/api/v1/connections", Some("reader-token")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body.contains("/apis/authentication.k8s.io/v1/tokenreviews"),
        "{body}"
    );
}

#[tokio::test]
async fn static_tokens_are_accepted_without_asking_the_api_server() {
    let s = setup("kube-static", Some("local-token"));
    let (status, _) = call(&s.router, "/api/v1/connections", Some("local-token")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(s.api.seen().is_empty());
    let (status, _) = call(&s.router, "/api/v1/connections", Some("reader-token")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.api.seen().len(), 2);
}
