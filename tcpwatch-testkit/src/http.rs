//! HTTP GET on loopback through ureq (the client the daemon already links): the status and
//! the whole body, whatever the status. No proxy from the environment: every target is local.
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context as _, Result};

/// Every answer is read whole: `/api/v1/connections` with 100 000 records is tens of MB.
const BODY_LIMIT: u64 = 1 << 30;

fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            // One connection per request, as `Connection: close`: a daemon killed and
            // restarted on the same port must not meet a pooled connection to its
            // predecessor.
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_per_read(Some(Duration::from_secs(10)))
            .build()
            .into()
    })
}

/// `GET http://127.0.0.1:<port><path>`: (status, body).
pub fn get(port: u16, path: &str) -> Result<(u16, String)> {
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut resp = agent()
        .get(&url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(BODY_LIMIT)
        .read_to_string()
        .with_context(|| format!("GET {url}: reading the body"))?;
    Ok((status, body))
}

/// `GET http://127.0.0.1:<port><path>` of a stream (`Accept: text/event-stream`): returns
/// once the headers arrived, with the status and a reader of the body as it comes (chunks
/// decoded). No read timeout: a stream may be quiet for long.
pub fn get_stream(port: u16, path: &str) -> Result<(u16, impl std::io::Read + Send + 'static)> {
    let url = format!("http://127.0.0.1:{port}{path}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_recv_response(Some(Duration::from_secs(30)))
        .build()
        .into();
    let resp = agent
        .get(&url)
        .header("Accept", "text/event-stream")
        .call()
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status().as_u16();
    Ok((status, resp.into_body().into_reader()))
}

/// [`get`] for polling loops: `None` when there was no answer (not listening yet, reset,
/// timeout).
#[must_use]
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    get(port, path).ok()
}

/// Whether `GET /-/ready` (Prometheus, Alertmanager) answers 200.
#[must_use]
pub fn ready(port: u16) -> bool {
    http_get(port, "/-/ready").is_some_and(|(s, _)| s == 200)
}
