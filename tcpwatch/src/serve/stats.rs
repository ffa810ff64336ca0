//! Self-metrics of the HTTP listeners: refusals by reason, open connections and stream
//! subscribers, web configuration reloads. Process-wide (the listeners and their middleware
//! count here; `/metrics` adds them to its registry with [`register`]).
use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Default)]
struct Counts {
    rejected: BTreeMap<(&'static str, &'static str), u64>,
    reloads: BTreeMap<(&'static str, &'static str), u64>,
    open: BTreeMap<&'static str, i64>,
    subscribers: BTreeMap<&'static str, i64>,
}

static COUNTS: Mutex<Counts> = Mutex::new(Counts {
    rejected: BTreeMap::new(),
    reloads: BTreeMap::new(),
    open: BTreeMap::new(),
    subscribers: BTreeMap::new(),
});

fn with<T>(f: impl FnOnce(&mut Counts) -> T) -> T {
    match COUNTS.lock() {
        Ok(mut g) => f(&mut g),
        Err(poisoned) => f(&mut poisoned.into_inner()),
    }
}

/// The reasons a request or connection is refused (the `reason` label).
pub mod reason {
    /// `http.max_connections` reached: closed at accept.
    pub const CONNECTIONS: &str = "connections";
    /// `http.max_stream_subscribers` reached: 503.
    pub const STREAM_SUBSCRIBERS: &str = "stream_subscribers";
    /// No, wrong or unreadable credentials: 401.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// TLS handshake failed (untrusted client certificate, not TLS, ...).
    pub const TLS_HANDSHAKE: &str = "tls_handshake";
    /// TLS handshake or request headers not complete within `http.header_timeout_ms`.
    pub const HEADER_TIMEOUT: &str = "header_timeout";
    /// No byte either way for `http.idle_timeout_ms`.
    pub const IDLE_TIMEOUT: &str = "idle_timeout";
    /// Response body over `http.max_response_bytes`: 507.
    pub const RESPONSE_SIZE: &str = "response_size";
    /// Kubernetes authorization: the `SubjectAccessReview` denied the request: 403.
    pub const FORBIDDEN: &str = "forbidden";
    /// Kubernetes authorization: the API server could not be asked (error, timeout): 503.
    pub const AUTHZ_UNAVAILABLE: &str = "authz_unavailable";
}

/// Every refusal reason, in label order.
pub const REASONS: [&str; 9] = [
    reason::CONNECTIONS,
    reason::STREAM_SUBSCRIBERS,
    reason::UNAUTHORIZED,
    reason::TLS_HANDSHAKE,
    reason::HEADER_TIMEOUT,
    reason::IDLE_TIMEOUT,
    reason::RESPONSE_SIZE,
    reason::FORBIDDEN,
    reason::AUTHZ_UNAVAILABLE,
];

/// Counts one refusal.
pub fn rejected(listener: &'static str, reason: &'static str) {
    with(|c| *c.rejected.entry((listener, reason)).or_default() += 1);
}

/// Counts one reload attempt of a web configuration.
pub fn reload(listener: &'static str, ok: bool) {
    let result = if ok { "success" } else { "failure" };
    with(|c| *c.reloads.entry((listener, result)).or_default() += 1);
}

/// One more (`+1`) or one fewer (`-1`) open connection.
pub fn open(listener: &'static str, delta: i64) {
    with(|c| *c.open.entry(listener).or_default() += delta);
}

/// One more or one fewer stream subscriber.
pub fn subscribers(listener: &'static str, delta: i64) {
    with(|c| *c.subscribers.entry(listener).or_default() += delta);
}

/// Most series [`register`] adds: per listener (API, metrics) 9 refusal reasons, 2 reload
/// results, open connections and stream subscribers.
pub const MAX_SERIES: usize = 2 * (REASONS.len() + 2 + 1 + 1);

/// Adds the HTTP self-metrics to `reg`.
pub fn register(reg: &Registry) -> prometheus::Result<()> {
    let rejected = IntCounterVec::new(
        Opts::new(
            "tcpwatch_http_rejected_total",
            "Connections and requests refused by an HTTP listener, by reason (caps, timeouts, \
             authentication, TLS).",
        ),
        &["listener", "reason"],
    )?;
    let reloads = IntCounterVec::new(
        Opts::new(
            "tcpwatch_http_web_config_reloads_total",
            "Reloads of a listener's web configuration after one of its files changed.",
        ),
        &["listener", "result"],
    )?;
    let open = IntGaugeVec::new(
        Opts::new(
            "tcpwatch_http_connections",
            "Connections open on an HTTP listener.",
        ),
        &["listener"],
    )?;
    let subs = IntGaugeVec::new(
        Opts::new(
            "tcpwatch_http_stream_subscribers",
            "Clients of /api/v1/stream connected now.",
        ),
        &["listener"],
    )?;
    with(|c| {
        // Every listener has its series from the start, at 0.
        for l in c.open.keys() {
            for r in REASONS {
                rejected.with_label_values(&[*l, r]);
            }
        }
        for ((l, r), n) in &c.rejected {
            rejected.with_label_values(&[*l, *r]).inc_by(*n);
        }
        for ((l, r), n) in &c.reloads {
            reloads.with_label_values(&[*l, *r]).inc_by(*n);
        }
        for (l, n) in &c.open {
            open.with_label_values(&[*l]).set(*n);
        }
        for (l, n) in &c.subscribers {
            subs.with_label_values(&[*l]).set(*n);
        }
    });
    reg.register(Box::new(rejected))?;
    reg.register(Box::new(reloads))?;
    reg.register(Box::new(open))?;
    reg.register(Box::new(subs))
}
