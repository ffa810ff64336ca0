//! HTTP server: health, readiness, `/metrics` and the read-only JSON API.
//!
//! | path | what |
//! |------|------|
//! | `GET /healthz` | `ok` while the process serves |
//! | `GET /readyz` | 200 once programs are attached and the first sweep is in, 503 before |
//! | `GET /metrics` | Prometheus text format (see `docs/metrics.md`) |
//! | `GET /api/v1/connections` | `ConnectionsBody` `{"connections":[ConnRecord...]}`, filters in [`crate::serve::api::ConnFilter`] |
//! | `GET /api/v1/findings` | `FindingsBody` `{"open":[...],"recently_resolved":[...]}` (each finding with its `incident_id`, `netns_name`, `since_seconds_ago`), filters `kind`, `severity` |
//! | `GET /api/v1/incidents` | `IncidentsBody` `{"open":[Incident...],"recently_resolved":[...]}`, open worst first, filters `kind`, `severity` |
//! | `GET /api/v1/exposure` | `ExposureBody`: the exposure audit per process and remote endpoint (`docs/exposure.md`); the filters of `/api/v1/connections` narrow the connections audited |
//! | `GET /api/v1/status` | attached programs, kernel features, table, counters, incident counts |
//! | `GET /api/v1/stream` | Server-Sent Events, one JSON `tcpwatch_core::api::StreamEvent` per event (`conn`, `finding`, `incident`, `lagged`) |
//!
//! The bodies are the types of `tcpwatch_core::api`, the contract `tcpwatch top` parses.
//!
//! Every answer is a function of the last published [`crate::view::View`]: no handler takes
//! the daemon's lock, so a slow client or a large body never delays the event path.
//!
//! Every route is GET only; bad query parameters get a 400 naming the parameter, unknown paths
//! a 404, and a request that waits longer than [`REQUEST_TIMEOUT`] for its answer a 503.
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::Stream;
use serde::Serialize;
use tcpwatch_core::api::{ConnectionsBody, StreamEvent};
use tcpwatch_core::config::{Config, DaemonConfig};
use tcpwatch_core::state_changes::StateChanges;
use tcpwatch_core::wall::WallClock;
use tokio::sync::broadcast::error::RecvError;

use crate::serve::api::{BadRequest, ConnFilter, FindingFilter, RawQuery, no_params};
use crate::serve::fanout::Frame;
use crate::serve::incidents_api::{IncidentFilter, findings_body, incidents_body};
use crate::view::Hub;

/// Longest a request may take to produce its response headers (a stream's body is not bounded).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct App {
    hub: Hub,
    /// The registry `/metrics` gathers: one long-lived [`crate::serve::metrics::SelfCollector`].
    metrics: Arc<(
        prometheus::Registry,
        Arc<crate::serve::metrics::SelfCollector>,
    )>,
    /// Stream events encoded once for all subscribers.
    frames: crate::serve::fanout::Frames,
}

/// The router with the default `daemon.top_k`.
#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "serve() passes its configuration; tests use the defaults"
    )
)]
pub fn router(hub: Hub) -> Router {
    router_with(hub, &DaemonConfig::default())
}

fn router_with(hub: Hub, cfg: &DaemonConfig) -> Router {
    routes(hub, cfg, Paths::All)
}

/// Which routes a listener serves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Paths {
    /// The API listener: everything.
    All,
    /// The metrics listener: `/metrics`, `/healthz`, `/readyz`; per-connection paths are 404.
    Aggregate,
}

fn routes(hub: Hub, cfg: &DaemonConfig, paths: Paths) -> Router {
    let top_k = usize::try_from(cfg.top_k).unwrap_or(usize::MAX);
    let collector = Arc::new(crate::serve::metrics::SelfCollector::new(
        hub.clone(),
        top_k,
    ));
    let registry = prometheus::Registry::new();
    // An unchecked collector (no descriptors) always registers.
    let _ = registry.register(Box::new(Registered(collector.clone())));
    let app = App {
        hub,
        metrics: Arc::new((registry, collector)),
        frames: crate::serve::fanout::Frames::default(),
    };
    let mut r = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if paths == Paths::All {
        r = r
            .route("/api/v1/connections", get(connections))
            .route("/api/v1/findings", get(findings))
            .route("/api/v1/incidents", get(incidents))
            .route("/api/v1/exposure", get(exposure))
            .route("/api/v1/status", get(status))
            .route("/api/v1/stream", get(stream));
    }
    r.fallback(not_found)
        .layer(middleware::from_fn(timeout))
        .with_state(app)
}

/// Serves the API listener (`daemon.listen`) and, when set, the metrics listener
/// (`daemon.metrics_listen`), each with its web configuration and bounds (see
/// [`crate::serve`]). Fails at start when a listener cannot bind or a web configuration
/// cannot be loaded.
pub async fn serve(cfg: Config, hub: Hub) -> anyhow::Result<()> {
    let file = |s: &str| (!s.trim().is_empty()).then(|| std::path::PathBuf::from(s.trim()));
    let mut specs = vec![crate::serve::ListenerSpec {
        name: crate::serve::API,
        key: "daemon.listen",
        addr: cfg.daemon.listen,
        web_config: file(&cfg.daemon.web_config_file),
        router: routes(hub.clone(), &cfg.daemon, Paths::All),
    }];
    if let Some(addr) = tcpwatch_core::config_http::metrics_listen(&cfg.daemon)? {
        specs.push(crate::serve::ListenerSpec {
            name: crate::serve::METRICS,
            key: "daemon.metrics_listen",
            addr,
            web_config: file(&cfg.daemon.metrics_web_config_file),
            router: routes(hub, &cfg.daemon, Paths::Aggregate),
        });
    }
    crate::serve::run(specs, &cfg.http)
        .await
        .context("HTTP server failed")
}

/// The collector as the registry holds it (a registry owns its collectors; the scrape also
/// asks the collector for its last error).
struct Registered(Arc<crate::serve::metrics::SelfCollector>);

impl prometheus::core::Collector for Registered {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.0.collect()
    }
}

async fn timeout(req: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "request timed out\n").into_response(),
    }
}

async fn not_found(uri: Uri) -> (StatusCode, String) {
    (
        StatusCode::NOT_FOUND,
        format!(
            "no such endpoint `{}`; endpoints: /healthz, /readyz, /metrics, /api/v1/connections, \
             /api/v1/findings, /api/v1/incidents, /api/v1/status, /api/v1/stream\n",
            uri.path()
        ),
    )
}

async fn healthz(q: RawQuery) -> Result<&'static str, BadRequest> {
    no_params(q)?;
    Ok("ok\n")
}

async fn readyz(State(app): State<App>, q: RawQuery) -> Result<(StatusCode, String), BadRequest> {
    no_params(q)?;
    let s = app.hub.fresh().await;
    let kernel = s
        .startup
        .features
        .as_ref()
        .map(crate::kernel::probe::Features::summary)
        .unwrap_or_default();
    Ok(if s.ready {
        (StatusCode::OK, format!("ready\n{kernel}\n"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: first sweep not done\n{kernel}\n"),
        )
    })
}

/// What is attached and how, the last sweep's problems and the daemon's counters.
async fn status(State(app): State<App>, q: RawQuery) -> Result<Response, BadRequest> {
    no_params(q)?;
    let s = app.hub.fresh().await;
    let j = &s.judged;
    let mut by_kind = serde_json::Map::new();
    for k in tcpwatch_core::incident::IncidentKind::ALL {
        let n = j.incidents_open.iter().filter(|i| i.kind == k).count();
        by_kind.insert(k.name().to_owned(), n.into());
    }
    Ok(json_response(&serde_json::json!({
        "ready": s.ready,
        "version": env!("CARGO_PKG_VERSION"),
        "attached": s.startup.attached,
        "kernel": s.startup.features,
        "kernel_fields_missing": s.startup.missing_optional,
        "kernel_hz": s.startup.kernel_hz,
        "table": { "connections": s.conns.len(), "stats": s.table_stats },
        "stats": s.stats,
        // tcpwatch_core::api::ProgramsStatus, flattened.
        "run_stats_enabled": s.programs.run_stats_enabled,
        "programs": s.programs.programs,
        "lost_events": s.programs.lost_events,
        "state_changes": StateChanges::from_counters(&s.kernel_counters.0),
        "last_sweep_errors": s.last_sweep_errors,
        "namespaces": s.netns.len(),
        "time_wait": super::time_wait::status(&s),
        "findings_open": j.findings_open.len(),
        "incidents": {
            "open": j.incidents_open.len(),
            "open_by_kind": by_kind,
            "overflowed": j.incidents_overflowed,
            "opened_total": j.incidents_opened().map(|(_, n)| n).sum::<u64>(),
        },
    })))
}

fn json_response<T: Serialize>(v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding JSON: {e}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(app): State<App>, q: RawQuery) -> Result<Response, BadRequest> {
    no_params(q)?;
    // The collector reads the current view: make it one with every event applied.
    app.hub.fresh().await;
    let (registry, collector) = &*app.metrics;
    Ok(match collector.scrape(registry) {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("building metrics: {e}\n"),
        )
            .into_response(),
    })
}

async fn connections(State(app): State<App>, q: RawQuery) -> Result<Response, BadRequest> {
    let f = ConnFilter::from_query(q)?;
    let s = app.hub.fresh().await;
    // Copying and encoding up to 100 000 records is CPU work: off the runtime's worker
    // threads, which carry the event reader and the stream.
    let encode = move || {
        let mut body = ConnectionsBody {
            connections: s
                .conns
                .iter()
                .filter(|c| f.matches(c, &s.judged.flagged))
                .take(f.limit)
                .map(|c| s.aging.effective(c))
                .collect(),
        };
        drop(s);
        body.fill_wall_times(&WallClock::now());
        json_response(&body)
    };
    let encoded = tokio::task::spawn_blocking(encode).await;
    Ok(encoded.unwrap_or_else(|e| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding connections: {e}\n"),
        )
            .into_response()
    }))
}

async fn findings(State(app): State<App>, q: RawQuery) -> Result<Response, BadRequest> {
    let f = FindingFilter::from_query(q)?;
    let s = app.hub.fresh().await;
    Ok(json_response(&findings_body(&s, &f, WallClock::now())))
}

async fn exposure(State(app): State<App>, q: RawQuery) -> Result<Response, BadRequest> {
    // The connection filters of /api/v1/connections narrow the connections audited.
    let f = ConnFilter::from_query(q)?;
    let s = app.hub.fresh().await;
    let body = tcpwatch_core::exposure::audit(
        s.conns
            .iter()
            .filter(|c| f.matches(c, &s.judged.flagged))
            .map(AsRef::as_ref),
        &s.netns,
        s.exposure_threshold_s,
    );
    Ok(json_response(&body))
}

async fn incidents(State(app): State<App>, q: RawQuery) -> Result<Response, BadRequest> {
    let f = IncidentFilter::from_query(q)?;
    let body = incidents_body(&*app.hub.fresh().await, &f);
    Ok(json_response(&body))
}

async fn stream(
    State(app): State<App>,
    q: RawQuery,
) -> Result<Sse<impl Stream<Item = Result<Event, axum::Error>>>, BadRequest> {
    no_params(q)?;
    let sub = app.frames.subscribe(&app.hub).await;
    let events = futures_util::stream::unfold((sub, app.hub), |(mut sub, hub)| async move {
        // Finding and incident changes first, then connection deltas.
        let (got, conn) = tokio::select! {
            biased;
            f = sub.changes.recv() => (f, false),
            f = sub.conns.recv() => (f, true),
        };
        let ev = match got {
            Ok(Frame::Json(json)) => Ok(Event::default().data(&*json)),
            Ok(Frame::Lagged { missed, conn_only }) => {
                Event::default().json_data(StreamEvent::Lagged { missed, conn_only })
            }
            Err(RecvError::Lagged(missed)) => {
                hub.add_lagged(missed);
                Event::default().json_data(StreamEvent::Lagged {
                    missed,
                    conn_only: conn,
                })
            }
            Err(RecvError::Closed) => return None,
        };
        Some((ev, (sub, hub)))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// Fuzzing of the API query parsing through the real router.
#[cfg(test)]
#[path = "http_fuzz.rs"]
mod fuzz;

#[cfg(test)]
#[path = "http_incidents_tests.rs"]
mod incident_tests;

#[cfg(test)]
#[path = "http_times_tests.rs"]
mod times_tests;

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use futures_util::StreamExt as _;
    use tcpwatch_common::tcp_state;
    use tcpwatch_core::model::{ConnKey, ConnRecord};
    use tcpwatch_core::table::Delta;
    use tower::ServiceExt as _;

    use super::*;
    use crate::serve::metrics::tests::{evaluate_at, parse, shared_with, sock};
    use crate::view::Live;

    pub(super) fn fixture() -> Live {
        let mut cw = sock(3, 1, tcp_state::CLOSE_WAIT, 8080, 40001);
        cw.pid = 77;
        cw.comm = *b"stuckapp\0\0\0\0\0\0\0\0";
        let mut s = shared_with(&[
            (
                1,
                vec![
                    sock(1, 1, tcp_state::LISTEN, 8080, 0),
                    sock(2, 1, tcp_state::ESTABLISHED, 8080, 40000),
                    cw,
                ],
            ),
            (
                2,
                vec![
                    sock(4, 2, tcp_state::ESTABLISHED, 5000, 443),
                    sock(5, 2, tcp_state::ESTABLISHED, 5001, 443),
                ],
            ),
        ]);
        s.netns_names.insert(1, "blue".into());
        evaluate_at(&mut s, 60);
        Live::new(s)
    }

    pub(super) async fn get(shared: &Live, uri: &str) -> (StatusCode, String) {
        let req = Request::builder().uri(uri).body(Body::empty()).unwrap();
        let resp = router(shared.hub().await).oneshot(req).await.unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    async fn conns(shared: &Live, query: &str) -> Vec<ConnRecord> {
        let (st, body) = get(shared, &format!("/api/v1/connections{query}")).await;
        assert_eq!(st, StatusCode::OK, "{body}");
        let mut v: serde_json::Value = serde_json::from_str(&body).unwrap();
        serde_json::from_value(v["connections"].take()).unwrap()
    }

    #[tokio::test]
    async fn connection_filters() {
        let sh = fixture();
        assert_eq!(conns(&sh, "").await.len(), 5);
        let l = conns(&sh, "?port=8080&state=LISTEN").await;
        assert_eq!(l.len(), 1);
        assert_eq!(
            l[0].key,
            ConnKey {
                skaddr: 1,
                netns_cookie: 1
            }
        );
        assert_eq!(conns(&sh, "?port=443").await.len(), 2);
        assert_eq!(conns(&sh, "?state=estab").await.len(), 3);
        assert_eq!(conns(&sh, "?netns=4026531002").await.len(), 2);
        assert_eq!(conns(&sh, "?limit=2").await.len(), 2);
        assert_eq!(conns(&sh, "?limit=0").await.len(), 0);
        let flagged = conns(&sh, "?flagged=true").await;
        assert_eq!(
            flagged.iter().map(|c| c.key.skaddr).collect::<Vec<_>>(),
            vec![3]
        );
        assert_eq!(conns(&sh, "?flagged=false").await.len(), 4);
        assert_eq!(conns(&sh, "?owner=stuck").await.len(), 1);
        assert_eq!(conns(&sh, "?owner=77").await.len(), 1);
        assert_eq!(conns(&sh, "?owner=42").await.len(), 4);
    }

    #[tokio::test]
    async fn bad_parameters_are_400_naming_the_parameter() {
        let sh = fixture();
        for (uri, name) in [
            ("/api/v1/connections?port=http", "`port`"),
            ("/api/v1/connections?state=BOGUS", "`state`"),
            ("/api/v1/connections?limit=999999", "`limit`"),
            ("/api/v1/connections?colour=red", "`colour`"),
            ("/api/v1/findings?severity=loud", "`severity`"),
            ("/metrics?x=1", "`x`"),
        ] {
            let (st, body) = get(&sh, uri).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{uri}");
            assert!(body.contains(name), "{uri}: {body}");
        }
    }

    #[tokio::test]
    async fn unknown_path_is_404_and_writes_are_refused() {
        let sh = fixture();
        let (st, body) = get(&sh, "/api/v1/nope").await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        assert!(body.contains("/api/v1/nope"), "{body}");
        let req = Request::builder()
            .method("POST")
            .uri("/api/v1/connections")
            .body(Body::empty())
            .unwrap();
        let resp = router(sh.hub().await).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn readyz_follows_the_first_sweep() {
        let sh = fixture();
        assert_eq!(get(&sh, "/healthz").await.0, StatusCode::OK);
        assert_eq!(get(&sh, "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
        sh.lock().await.ready = true;
        let (st, body) = get(&sh, "/readyz").await;
        assert_eq!(st, StatusCode::OK);
        assert!(body.starts_with("ready\n"), "{body}");
    }

    #[tokio::test]
    async fn findings_have_netns_name_and_age() {
        let sh = fixture();
        let (st, body) = get(&sh, "/api/v1/findings").await;
        assert_eq!(st, StatusCode::OK, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let open = v["open"].as_array().unwrap();
        assert_eq!(open.len(), 1, "{body}");
        assert_eq!(open[0]["kind"], "close_wait_stuck");
        assert_eq!(open[0]["netns_name"], "blue");
        assert!(open[0]["since_seconds_ago"].is_f64());
        assert!(v["recently_resolved"].as_array().unwrap().is_empty());
        let (_, body) = get(&sh, "/api/v1/findings?kind=reset_burst&severity=critical").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(v["open"].as_array().unwrap().is_empty());
    }

    #[tokio::test]
    async fn metrics_endpoint_parses() {
        let sh = fixture();
        let req = Request::builder()
            .uri("/metrics")
            .body(Body::empty())
            .unwrap();
        let resp = router(sh.hub().await).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(
            resp.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let m = parse(std::str::from_utf8(&body).unwrap());
        let has = |name: &str, labels: &str| m.iter().any(|x| x.0 == name && x.1 == labels);
        assert!(has("tcpwatch_sockets", "state=\"ESTABLISHED\""));
        assert!(has(
            "tcpwatch_build_info",
            &format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))
        ));
        assert!(
            has(
                "tcpwatch_findings_open",
                "kind=\"close_wait_stuck\",severity=\"warning\""
            ) || has(
                "tcpwatch_findings_open",
                "kind=\"close_wait_stuck\",severity=\"critical\""
            )
        );
        assert!(m.iter().any(|x| x.0 == "tcpwatch_flagged_connection"));
    }

    #[tokio::test]
    async fn stream_sends_events_and_reports_lag() {
        let sh = fixture();
        let req = Request::builder()
            .uri("/api/v1/stream")
            .body(Body::empty())
            .unwrap();
        let resp = router(sh.hub().await).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(
            resp.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let mut body = resp.into_body().into_data_stream();
        let key = ConnKey {
            skaddr: 9,
            netns_cookie: 1,
        };
        {
            let s = sh.lock().await;
            // The channel holds 4096: overflow it by 10.
            for _ in 0..4106 {
                s.stream
                    .send(StreamEvent::Conn(Delta::Remove { key }))
                    .unwrap();
            }
        }
        let first = String::from_utf8(body.next().await.unwrap().unwrap().to_vec()).unwrap();
        // Only connection deltas were lost: finding and incident changes have their own channel.
        assert_eq!(
            first,
            "data: {\"type\":\"lagged\",\"missed\":10,\"conn_only\":true}\n\n"
        );
        assert_eq!(sh.hub().await.view().stats.stream_lagged, 10);
        let second = String::from_utf8(body.next().await.unwrap().unwrap().to_vec()).unwrap();
        assert!(
            second.starts_with("data: {\"type\":\"conn\",\"op\":\"remove\""),
            "{second}"
        );
    }
}
