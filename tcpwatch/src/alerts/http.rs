//! The HTTP side of the Alertmanager push: the endpoint checked from `alertmanager.url`, the
//! client (ureq with rustls: `https://` trusts `alertmanager.ca_file`, else the Mozilla roots
//! bundled with ureq; basic auth or a bearer token read from files) and one bounded POST, run
//! on tokio's blocking pool so that the runtime never waits on the network.
//!
//! Secrets are read from their files before each POST (a rotated secret is picked up without
//! a restart). They never appear in a log line or an error: errors name the file, not its
//! content.
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use tcpwatch_core::config::AlertmanagerConfig;
use ureq::http::Uri;
use ureq::tls::{PemItem, RootCerts, TlsConfig, TlsProvider};

/// Most bytes of a refusal's body kept for the error message.
const MAX_ERROR_BODY: u64 = 64 * 1024;
/// Most characters of a refusal's body shown.
const MAX_ERROR_CHARS: usize = 300;

/// What to check when TLS fails.
const TLS_HINT: &str = " (check alertmanager.ca_file: it must hold the CA that signed \
                        Alertmanager's certificate, whose names must include the URL's host)";

/// Where to POST: `{scheme}://{authority}{prefix}/api/v2/alerts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The full URL of the POST.
    pub url: String,
    pub https: bool,
}

impl Endpoint {
    /// Checks `alertmanager.url` (`http://` or `https://`, a host, no credentials: those come
    /// from the credential files) and derives the POST URL.
    pub fn parse(url: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("alertmanager.url {url:?}: {why}");
        let uri: Uri = url.parse().map_err(|e| bad(&format!("not a URL ({e})")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("must start with http:// or https://")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad(
                "credentials in the URL are not supported (use alertmanager.basic_auth_user \
                 and alertmanager.basic_auth_password_file)",
            ));
        }
        if authority.host().is_empty() || authority.host() == "[]" {
            return Err(bad("no host"));
        }
        let a = authority.as_str();
        let after_host = a.rsplit_once(']').map_or(a, |(_, tail)| tail);
        if let Some((_, port)) = after_host.rsplit_once(':')
            && !port.parse::<u16>().is_ok_and(|p| p != 0)
        {
            return Err(bad(&format!("bad port {port:?}")));
        }
        let prefix = uri.path().trim_end_matches('/');
        let scheme = if https { "https" } else { "http" };
        Ok(Self {
            url: format!("{scheme}://{authority}{prefix}/api/v2/alerts"),
            https,
        })
    }
}

/// The credentials sent with each POST.
#[derive(Clone, Debug)]
enum Auth {
    None,
    Basic {
        user: String,
        password_file: PathBuf,
    },
    Bearer {
        token_file: PathBuf,
    },
}

/// The push client: one ureq agent (connections kept alive between pushes) and the endpoint.
/// Its `Debug` shows no secret (it holds none: only the files' paths).
#[derive(Clone, Debug)]
pub struct Client {
    agent: ureq::Agent,
    pub endpoint: Endpoint,
    auth: Auth,
}

impl Client {
    /// Builds the client: checks the URL, reads `ca_file` and checks that the credential files
    /// are readable. Errors name the key, the file and what to do.
    pub fn new(cfg: &AlertmanagerConfig) -> Result<Self, String> {
        let url = cfg
            .url
            .as_deref()
            .ok_or_else(|| "alertmanager.url is not set".to_owned())?;
        let endpoint = Endpoint::parse(url)?;
        let mut tls = TlsConfig::builder().provider(TlsProvider::Rustls);
        if let Some(ca) = &cfg.ca_file {
            tls = tls.root_certs(RootCerts::new_with_certs(&read_ca(ca)?));
        }
        let agent = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .proxy(None)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_millis(cfg.timeout_ms.max(1))))
            .user_agent(concat!("tcpwatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let auth = match (
            &cfg.basic_auth_user,
            &cfg.basic_auth_password_file,
            &cfg.bearer_token_file,
        ) {
            (Some(user), Some(pw), _) => Auth::Basic {
                user: user.clone(),
                password_file: pw.into(),
            },
            (_, _, Some(t)) => Auth::Bearer {
                token_file: t.into(),
            },
            _ => Auth::None,
        };
        let client = Self {
            agent,
            endpoint,
            auth,
        };
        client.authorization()?;
        Ok(client)
    }

    /// The `Authorization` header value, read from the secret files now.
    fn authorization(&self) -> Result<Option<String>, String> {
        Ok(match &self.auth {
            Auth::None => None,
            Auth::Basic {
                user,
                password_file,
            } => {
                let pw = read_secret("alertmanager.basic_auth_password_file", password_file)?;
                let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
                Some(format!("Basic {pair}"))
            }
            Auth::Bearer { token_file } => Some(format!(
                "Bearer {}",
                read_secret("alertmanager.bearer_token_file", token_file)?
            )),
        })
    }

    /// One POST of a JSON body, on the blocking pool; Ok on a 2xx answer. The error names
    /// the URL, the cause and what to check.
    pub async fn post_json(&self, body: String) -> Result<(), String> {
        let client = self.clone();
        tokio::task::spawn_blocking(move || client.post_blocking(&body))
            .await
            .map_err(|e| format!("POST {}: the push thread failed: {e}", self.endpoint.url))?
    }

    fn post_blocking(&self, body: &str) -> Result<(), String> {
        let url = &self.endpoint.url;
        let mut req = self
            .agent
            .post(url)
            .header("content-type", "application/json");
        if let Some(value) = self.authorization()? {
            req = req.header("authorization", value);
        }
        let mut resp = req
            .send(body)
            .map_err(|e| format!("POST {url}: {e}{}", hint_of(&e)))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_ERROR_BODY)
            .lossy_utf8(true)
            .read_to_string()
            .unwrap_or_default();
        let text: String = text.trim().chars().take(MAX_ERROR_CHARS).collect();
        let hint = match status {
            401 | 403 => {
                "; check alertmanager.basic_auth_user and alertmanager.basic_auth_password_file \
                 (or alertmanager.bearer_token_file) against Alertmanager's web config"
            }
            404 => "; check the path prefix of alertmanager.url",
            _ => "",
        };
        Err(format!("POST {url} answered {status}: {text}{hint}"))
    }
}

/// Whether an I/O error is rustls' (a refused certificate arrives as one).
fn is_tls(io: &std::io::Error) -> bool {
    matches!(io.get_ref(), Some(inner) if inner.is::<tokio_rustls::rustls::Error>())
}

/// What to check for a failure before any answer.
fn hint_of(e: &ureq::Error) -> &'static str {
    match e {
        ureq::Error::Rustls(_) | ureq::Error::Tls(_) | ureq::Error::Pem(_) => TLS_HINT,
        ureq::Error::Io(io) if is_tls(io) => TLS_HINT,
        ureq::Error::Io(_)
        | ureq::Error::ConnectionFailed
        | ureq::Error::HostNotFound
        | ureq::Error::Timeout(_) => {
            " (check that Alertmanager runs and that alertmanager.url and alertmanager.timeout_ms \
             are right)"
        }
        _ => "",
    }
}

/// The certificates of a PEM bundle (`alertmanager.ca_file`).
fn read_ca(path: &str) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| {
        format!("alertmanager.ca_file {path}: cannot read it ({e}); point it at a PEM CA bundle")
    })?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c.to_owned()),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(format!(
            "alertmanager.ca_file {path}: no PEM certificate in it (expected \
             -----BEGIN CERTIFICATE----- blocks)"
        ));
    }
    Ok(certs)
}

/// A secret file's content without its trailing newline. The error names the file, never the
/// content.
fn read_secret(key: &str, path: &PathBuf) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "{key} {}: cannot read it ({e}); make it readable by tcpwatch",
            path.display()
        )
    })?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(format!("{key} {}: the file is empty", path.display()));
    }
    Ok(secret.to_owned())
}
