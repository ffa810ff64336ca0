//! The HTTP listeners: the API listener (`daemon.listen`, every route) and the metrics
//! listener (`daemon.metrics_listen`, `/metrics`, `/healthz`, `/readyz`). Each has its own web
//! configuration (TLS, authentication; reloaded when its files change) and its own bounds
//! (`[http]`), so a flood on one never takes the other's connections.
//!
//! Every connection runs in its own task: the TLS handshake and the request headers must
//! finish within `http.header_timeout_ms`, and a connection that moves no byte for
//! `http.idle_timeout_ms` is closed. Beyond `http.max_connections` a new connection is closed
//! at once. Refusals are counted in `tcpwatch_http_rejected_total{listener,reason}`.
pub mod api;
pub mod auth;
pub mod fanout;
pub mod http;
pub mod incidents_api;
pub mod kube_authz;
pub mod limits;
pub mod metrics;
pub mod stats;
pub mod time_wait;
pub mod tls;
pub mod web;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::middleware;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tcpwatch_core::config_http::HttpConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use self::limits::{Activity, Limits, Tracked};
use self::stats::reason;
use self::web::{Loaded, Web};

/// Label of the API listener in self-metrics.
pub const API: &str = "api";
/// Label of the metrics listener.
pub const METRICS: &str = "metrics";

/// One listener to run.
pub struct ListenerSpec {
    pub name: &'static str,
    /// The config key of the address, for errors.
    pub key: &'static str,
    pub addr: std::net::SocketAddr,
    /// Web configuration file; `None`: plain HTTP without authentication.
    pub web_config: Option<PathBuf>,
    pub router: Router,
}

/// Runs each listener on a thread and runtime of its own, so that work for one listener's
/// clients (a flood of stream subscribers, TLS handshakes, bcrypt) never queues before the
/// daemon's event reader and sweep handling, nor before the other listener. Returns when one
/// fails (at start: it cannot bind, or its web configuration does not load).
pub async fn run(specs: Vec<ListenerSpec>, http: &HttpConfig) -> anyhow::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<anyhow::Result<()>>(specs.len().max(1));
    for spec in specs {
        let tx = tx.clone();
        let http = http.clone();
        let name = spec.name;
        std::thread::Builder::new()
            .name(format!("tcpwatch-http-{name}"))
            .spawn(move || {
                let r = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("starting the listener's runtime")
                    .and_then(|rt| rt.block_on(async { bind(spec, &http).await?.await }));
                let _ = tx.blocking_send(r.with_context(|| format!("{name} listener")));
            })
            .with_context(|| format!("starting the {name} listener's thread"))?;
    }
    drop(tx);
    match rx.recv().await {
        Some(r) => r,
        None => Ok(()),
    }
}

/// Loads the listener's web configuration (errors name the file and key), binds it and
/// returns the future that serves it.
pub async fn bind(
    spec: ListenerSpec,
    http: &HttpConfig,
) -> anyhow::Result<impl Future<Output = anyhow::Result<()>> + use<>> {
    let loaded = match &spec.web_config {
        None => Loaded::plain(),
        Some(p) => {
            let p = p.clone();
            tokio::task::spawn_blocking(move || Loaded::load(&p))
                .await
                .context("loading the web configuration")??
        }
    };
    let web = Web::new(spec.name, loaded);
    if let Some(p) = spec.web_config.clone() {
        tokio::spawn(web.clone().watch(p));
    }
    let limits = Limits {
        listener: spec.name,
        subscribers: Arc::new(Semaphore::new(http.max_stream_subscribers as usize)),
        max_response_bytes: http.max_response_bytes,
    };
    // Outermost first on the way in: authentication, then the caps.
    let router = spec
        .router
        .layer(middleware::from_fn_with_state(limits, limits::bound))
        .layer(middleware::from_fn_with_state(web.clone(), auth::require));
    let listener = TcpListener::bind(spec.addr).await.with_context(|| {
        format!(
            "binding the {} listener to {} ({})",
            spec.name, spec.addr, spec.key
        )
    })?;
    let tls = if web.current().tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(listener = spec.name, addr = %spec.addr, scheme = tls, "listening");
    stats::open(spec.name, 0);
    let conns = Arc::new(Semaphore::new(http.max_connections as usize));
    let header_timeout = Duration::from_millis(http.header_timeout_ms);
    let idle_timeout = Duration::from_millis(http.idle_timeout_ms);
    let name = spec.name;
    Ok(async move {
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = conns.clone().try_acquire_owned() else {
                stats::rejected(name, reason::CONNECTIONS);
                drop(tcp);
                continue;
            };
            let conn = Conn {
                name,
                web: web.clone(),
                router: router.clone(),
                header_timeout,
                idle_timeout,
            };
            tokio::spawn(async move {
                stats::open(name, 1);
                conn.run(tcp).await;
                stats::open(name, -1);
                drop(permit);
            });
        }
    })
}

/// Loads every web configuration file `cfg` names, as the daemon would at start (TLS
/// certificates and keys parsed, tokens read). Returns one line per listener; the error names
/// the configuration key, the file and the key inside it at fault.
pub fn check_web_configs(cfg: &tcpwatch_core::config::Config) -> anyhow::Result<Vec<String>> {
    let metrics = tcpwatch_core::config_http::metrics_listen(&cfg.daemon)?;
    let mut out = Vec::new();
    for (name, key, file, addr) in [
        (
            API,
            "daemon.web_config_file",
            &cfg.daemon.web_config_file,
            Some(cfg.daemon.listen),
        ),
        (
            METRICS,
            "daemon.metrics_web_config_file",
            &cfg.daemon.metrics_web_config_file,
            metrics,
        ),
    ] {
        let Some(addr) = addr else { continue };
        let file = file.trim();
        if file.is_empty() {
            out.push(format!(
                "{name} listener {addr}: plain HTTP, no authentication ({key} is empty)"
            ));
            continue;
        }
        let l = Loaded::load(std::path::Path::new(file)).context(key)?;
        let tls = match &l.cfg.tls_server_config {
            None => "plain HTTP".to_owned(),
            Some(t) => format!("TLS, client certificates: {:?}", t.client_auth_type),
        };
        let kube = if l.kube.is_some() {
            ", Kubernetes authorization (TokenReview + SubjectAccessReview)"
        } else {
            ""
        };
        out.push(format!(
            "{name} listener {addr}: {tls}, {} basic-auth user(s), {} bearer token(s){kube} \
             ({file})",
            l.cfg.basic_auth_users.len(),
            l.tokens.len()
        ));
    }
    Ok(out)
}

struct Conn {
    name: &'static str,
    web: Web,
    router: Router,
    header_timeout: Duration,
    idle_timeout: Duration,
}

impl Conn {
    async fn run(self, tcp: TcpStream) {
        let _ = tcp.set_nodelay(true);
        let activity = Activity::new();
        let tracked = Tracked {
            inner: tcp,
            activity: activity.clone(),
        };
        let Some(tls) = self.web.current().tls.clone() else {
            self.serve(tracked, activity).await;
            return;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        match tokio::time::timeout(self.header_timeout, acceptor.accept(tracked)).await {
            Ok(Ok(stream)) => self.serve(stream, activity).await,
            Ok(Err(e)) => {
                stats::rejected(self.name, reason::TLS_HANDSHAKE);
                tracing::debug!(listener = self.name, error = %e, "TLS handshake failed");
            }
            Err(_) => stats::rejected(self.name, reason::HEADER_TIMEOUT),
        }
    }

    async fn serve<I>(&self, io: I, activity: Activity)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout)
            .max_buf_size(64 * 1024);
        let svc = TowerToHyperService::new(self.router.clone());
        let conn = builder.serve_connection(TokioIo::new(io), svc);
        tokio::pin!(conn);
        let idle_ms = u64::try_from(self.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let check = (self.idle_timeout / 4).max(Duration::from_millis(250));
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        if e.is_timeout() {
                            stats::rejected(self.name, reason::HEADER_TIMEOUT);
                        }
                        tracing::debug!(listener = self.name, error = %e, "connection ended");
                    }
                    return;
                }
                () = tokio::time::sleep(check) => {
                    if activity.idle_ms() >= idle_ms {
                        stats::rejected(self.name, reason::IDLE_TIMEOUT);
                        return; // dropping the connection closes it
                    }
                }
            }
        }
    }
}
