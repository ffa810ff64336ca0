//! HTTP server: health, readiness (API and metrics are added on top).
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use tcpwatch_core::config::Config;
use tokio::sync::Mutex;

use crate::state::Shared;

type AppState = Arc<Mutex<Shared>>;

pub fn router(shared: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/connections", get(connections))
        .with_state(shared)
}

async fn readyz(State(s): State<AppState>) -> (StatusCode, String) {
    let s = s.lock().await;
    if s.ready {
        (StatusCode::OK, "ready\n".into())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: first sweep not done\n".into())
    }
}

pub async fn serve(cfg: Config, shared: AppState) -> anyhow::Result<()> {
    let addr = cfg.daemon.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the HTTP API to {addr} (daemon.listen)"))?;
    axum::serve(listener, router(shared)).await.context("HTTP server failed")
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConnQuery {
    port: Option<u16>,
    state: Option<String>,
    netns: Option<u64>,
    limit: Option<usize>,
}

async fn connections(
    State(s): State<AppState>,
    Query(q): Query<ConnQuery>,
) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    let state = match &q.state {
        Some(st) => Some(tcpwatch_core::model::TcpState::parse(st).ok_or_else(|| {
            (StatusCode::BAD_REQUEST, format!("unknown state `{st}`\n"))
        })?),
        None => None,
    };
    let s = s.lock().await;
    let list: Vec<_> = s
        .table
        .iter()
        .filter(|c| q.port.is_none_or(|p| c.local.port() == p || c.remote.port() == p))
        .filter(|c| state.is_none_or(|st| c.state == st))
        .filter(|c| q.netns.is_none_or(|n| u64::from(c.netns.inode) == n))
        .take(q.limit.unwrap_or(1000))
        .collect();
    Ok(Json(serde_json::json!({ "connections": list })))
}
