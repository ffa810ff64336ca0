//! The HTTP side of the Alertmanager push: the endpoint parsed from `alertmanager.url` and
//! one bounded HTTP/1.1 POST (tcpwatch has no HTTP client dependency for this).
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Most bytes of Alertmanager's answer read (only the status line matters).
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

/// Where to POST: `http://host[:port][/prefix]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Host as written in the URL (brackets kept for IPv6), for the `Host` header.
    pub host: String,
    pub port: u16,
    /// `{prefix}/api/v2/alerts`.
    pub path: String,
}

impl Endpoint {
    /// Parses `alertmanager.url`. Only `http://` is supported (no TLS client in tcpwatch).
    pub fn parse(url: &str) -> Result<Self, String> {
        if url.starts_with("https://") {
            return Err(format!(
                "alertmanager.url: https:// is not supported (tcpwatch has no TLS client), got \
                 {url:?}; use http:// (e.g. a sidecar or a cluster-internal service)"
            ));
        }
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("alertmanager.url: must start with http://, got {url:?}"))?;
        let (authority, prefix) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        if authority.contains('@') {
            return Err(format!(
                "alertmanager.url: credentials in the URL are not supported, got {url:?}"
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, tail) = v6
                .split_once(']')
                .ok_or_else(|| format!("alertmanager.url: unclosed '[' in {url:?}"))?;
            (format!("[{h}]"), tail.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (authority.to_owned(), None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(format!("alertmanager.url: no host in {url:?}"));
        }
        let port = match port {
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("alertmanager.url: bad port {p:?} in {url:?}"))?,
        };
        let prefix = prefix
            .split(['?', '#'])
            .next()
            .unwrap_or("")
            .trim_end_matches('/');
        Ok(Self {
            host,
            port,
            path: format!("{prefix}/api/v2/alerts"),
        })
    }

    /// Host to connect to (without IPv6 brackets).
    pub(crate) fn connect_host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }
}

/// The HTTP/1.1 request of one POST.
pub(crate) fn request(ep: &Endpoint, body: &str) -> String {
    let host = if ep.port == 80 {
        ep.host.clone()
    } else {
        format!("{}:{}", ep.host, ep.port)
    };
    format!(
        "POST {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tcpwatch/{}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        ep.path,
        env!("CARGO_PKG_VERSION"),
        body.len()
    )
}

/// The status code of an HTTP/1.x response head.
pub(crate) fn status_of(response: &[u8]) -> Option<u16> {
    let line = response.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

/// One POST; Ok on a 2xx answer. The caller bounds it with `timeout_ms`.
pub(crate) async fn post_json(ep: &Endpoint, body: &str) -> Result<(), String> {
    let mut s = TcpStream::connect((ep.connect_host(), ep.port))
        .await
        .map_err(|e| format!("connect {}:{}: {e}", ep.host, ep.port))?;
    s.write_all(request(ep, body).as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut resp = Vec::new();
    (&mut s)
        .take(MAX_RESPONSE_BYTES)
        .read_to_end(&mut resp)
        .await
        .map_err(|e| format!("read: {e}"))?;
    match status_of(&resp) {
        Some(code) if (200..300).contains(&code) => Ok(()),
        Some(code) => {
            let text = String::from_utf8_lossy(&resp);
            let body = text.split_once("\r\n\r\n").map_or("", |x| x.1).trim();
            let body: String = body.chars().take(300).collect();
            Err(format!("POST {} answered {code}: {body}", ep.path))
        }
        None => Err("no HTTP response".to_owned()),
    }
}
