//! The web configuration of one HTTP listener, in the style of Prometheus exporter-toolkit's
//! `web-config.yml`, written in TOML (tcpwatch's configuration language):
//!
//! ```toml
//! bearer_token_files = ["/etc/tcpwatch/api-token"]   # top-level keys before tables
//!
//! [tls_server_config]
//! cert_file = "/etc/tcpwatch/tls/tls.crt"
//! key_file = "/etc/tcpwatch/tls/tls.key"
//! client_auth_type = "RequireAndVerifyClientCert"    # or NoClientCert, VerifyClientCertIfGiven
//! client_ca_file = "/etc/tcpwatch/tls/ca.crt"
//!
//! [basic_auth_users]
//! prometheus = "$2y$10$..."                          # bcrypt hash (htpasswd -nBC 10 "")
//!
//! [kubernetes_authorization]                         # other bearer tokens: `TokenReview` +
//! allowed_ttl_seconds = 30                           # `SubjectAccessReview` (crate::k8s_authz)
//! denied_ttl_seconds = 10
//! ```
//!
//! Parsing and validation are pure (files are read by the daemon); so are the credential
//! checks ([`Credentials`], [`verify_password`], [`token_matches`]). See `docs/security.md`.
use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use serde::Deserialize;

use crate::k8s_authz::{self, KubeAuthzConfig};

/// An error in a web configuration, naming its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebConfigError {
    /// Dotted key at fault (`tls_server_config.client_auth_type`), or `web config` for syntax.
    pub key: String,
    pub message: String,
}

impl fmt::Display for WebConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for WebConfigError {}

fn err(key: &str, message: impl Into<String>) -> WebConfigError {
    WebConfigError {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// Whether and how client certificates are checked (exporter-toolkit's names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    #[default]
    NoClientCert,
    /// A client certificate, when one is sent, must chain to `client_ca_file`.
    VerifyClientCertIfGiven,
    /// Every client must send a certificate that chains to `client_ca_file`.
    RequireAndVerifyClientCert,
}

/// `[tls_server_config]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    /// PEM certificate chain, server certificate first.
    pub cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    #[serde(default)]
    pub client_auth_type: ClientAuth,
    /// PEM bundle of the CAs client certificates must chain to.
    #[serde(default)]
    pub client_ca_file: String,
}

/// One listener's web configuration. The default (an empty file) is plain HTTP with no
/// authentication.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// Files each holding one bearer token (surrounding whitespace ignored).
    #[serde(default)]
    pub bearer_token_files: Vec<String>,
    #[serde(default)]
    pub tls_server_config: Option<TlsServerConfig>,
    /// User name to bcrypt hash.
    #[serde(default)]
    pub basic_auth_users: BTreeMap<String, String>,
    /// Bearer tokens not in `bearer_token_files` are checked by the Kubernetes API server
    /// (`TokenReview`, then `SubjectAccessReview`), as kube-rbac-proxy does.
    #[serde(default)]
    pub kubernetes_authorization: Option<KubeAuthzConfig>,
}

const TOP_KEYS: [&str; 4] = [
    "bearer_token_files",
    "tls_server_config",
    "basic_auth_users",
    "kubernetes_authorization",
];
const TLS_KEYS: [&str; 4] = [
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
];

fn check_keys(table: &toml::Table, known: &[&str], prefix: &str) -> Result<(), WebConfigError> {
    for k in table.keys() {
        if !known.contains(&k.as_str()) {
            return Err(err(
                &format!("{prefix}{k}"),
                format!("unknown key (known here: {})", known.join(", ")),
            ));
        }
    }
    Ok(())
}

impl WebConfig {
    /// Parses and validates a web configuration file's text. Errors name the key.
    pub fn from_toml_str(text: &str) -> Result<Self, WebConfigError> {
        let table: toml::Table = toml::from_str(text)
            .map_err(|e| err("web config", format!("TOML syntax error: {}", e.message())))?;
        check_keys(&table, &TOP_KEYS, "")?;
        if let Some(tls) = table.get("tls_server_config") {
            let Some(tls) = tls.as_table() else {
                return Err(err("tls_server_config", "expected a table"));
            };
            check_keys(tls, &TLS_KEYS, "tls_server_config.")?;
        }
        if let Some(k) = table.get("kubernetes_authorization") {
            let Some(k) = k.as_table() else {
                return Err(err("kubernetes_authorization", "expected a table"));
            };
            check_keys(k, &k8s_authz::KEYS, "kubernetes_authorization.")?;
        }
        // The document is known-good in shape: a serde error is about one value's type.
        let cfg: Self = toml::Value::Table(table.clone()).try_into().map_err(|e| {
            let message = e.message().to_owned();
            let key = [
                "tls_server_config.client_auth_type",
                "kubernetes_authorization.allowed_ttl_seconds",
                "kubernetes_authorization.denied_ttl_seconds",
                "kubernetes_authorization.audiences",
                "kubernetes_authorization",
                "bearer_token_files",
                "basic_auth_users",
                "tls_server_config",
            ]
            .into_iter()
            .find(|k| {
                let mut probe = table.clone();
                remove_path(&mut probe, k);
                toml::Value::Table(probe).try_into::<Self>().is_ok()
            })
            .unwrap_or("web config");
            err(key, message)
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), WebConfigError> {
        for (i, f) in self.bearer_token_files.iter().enumerate() {
            if f.trim().is_empty() {
                return Err(err(&format!("bearer_token_files[{i}]"), "empty file name"));
            }
        }
        for (user, hash) in &self.basic_auth_users {
            let key = format!("basic_auth_users.{user}");
            if user.is_empty() || user.contains(':') {
                return Err(err(&key, "a user name must be non-empty and have no `:`"));
            }
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(err(
                    &key,
                    "not a bcrypt hash (like $2y$10$..., from `htpasswd -nBC 10 \"\" | tr -d ':'`)",
                ));
            }
        }
        if let Some(k) = &self.kubernetes_authorization {
            k.validate().map_err(|(key, message)| err(&key, message))?;
        }
        if let Some(tls) = &self.tls_server_config {
            if tls.cert_file.trim().is_empty() {
                return Err(err("tls_server_config.cert_file", "required with TLS"));
            }
            if tls.key_file.trim().is_empty() {
                return Err(err("tls_server_config.key_file", "required with TLS"));
            }
            let has_ca = !tls.client_ca_file.trim().is_empty();
            match (tls.client_auth_type, has_ca) {
                (ClientAuth::NoClientCert, true) => {
                    return Err(err(
                        "tls_server_config.client_ca_file",
                        "set, but client_auth_type is NoClientCert: set client_auth_type to \
                         RequireAndVerifyClientCert or VerifyClientCertIfGiven",
                    ));
                }
                (
                    ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert,
                    false,
                ) => {
                    return Err(err(
                        "tls_server_config.client_ca_file",
                        "required to verify client certificates",
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether requests must carry credentials (basic auth or a bearer token).
    #[must_use]
    pub fn requires_credentials(&self) -> bool {
        !self.basic_auth_users.is_empty()
            || !self.bearer_token_files.is_empty()
            || self.kubernetes_authorization.is_some()
    }

    /// Every file the configuration refers to, with the key that names it (to read them, and
    /// to watch them for changes).
    #[must_use]
    pub fn files(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(tls) = &self.tls_server_config {
            out.push(("tls_server_config.cert_file".into(), tls.cert_file.clone()));
            out.push(("tls_server_config.key_file".into(), tls.key_file.clone()));
            if !tls.client_ca_file.trim().is_empty() {
                out.push((
                    "tls_server_config.client_ca_file".into(),
                    tls.client_ca_file.clone(),
                ));
            }
        }
        for (i, f) in self.bearer_token_files.iter().enumerate() {
            out.push((format!("bearer_token_files[{i}]"), f.clone()));
        }
        out
    }
}

fn remove_path(t: &mut toml::Table, dotted: &str) {
    match dotted.split_once('.') {
        None => {
            t.remove(dotted);
        }
        Some((head, rest)) => {
            if let Some(toml::Value::Table(sub)) = t.get_mut(head) {
                remove_path(sub, rest);
            }
        }
    }
}

/// The credentials of a request's `Authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// No `Authorization` header.
    None,
    Basic {
        user: String,
        password: String,
    },
    Bearer(String),
    /// A header tcpwatch cannot read (other scheme, bad base64, no `:`).
    Malformed,
}

impl fmt::Debug for Credentials {
    // Never print secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Basic { user, .. } => write!(f, "Basic({user}, <password>)"),
            Self::Bearer(_) => f.write_str("Bearer(<token>)"),
            Self::Malformed => f.write_str("Malformed"),
        }
    }
}

impl Credentials {
    /// Reads an `Authorization` header value (`None` when there is no header).
    #[must_use]
    pub fn parse(header: Option<&[u8]>) -> Self {
        let Some(raw) = header else {
            return Self::None;
        };
        let Ok(text) = std::str::from_utf8(raw) else {
            return Self::Malformed;
        };
        let (scheme, rest) = text.trim().split_once(' ').unwrap_or((text, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(rest) else {
                return Self::Malformed;
            };
            let Ok(pair) = String::from_utf8(bytes) else {
                return Self::Malformed;
            };
            match pair.split_once(':') {
                Some((user, password)) => Self::Basic {
                    user: user.to_owned(),
                    password: password.to_owned(),
                },
                None => Self::Malformed,
            }
        } else if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
            Self::Bearer(rest.to_owned())
        } else {
            Self::Malformed
        }
    }
}

/// A bcrypt hash of a random password nobody knows: checked for unknown users so that an
/// unknown user costs as much time as a wrong password (no user enumeration by timing).
pub const DUMMY_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";

/// Whether `password` matches the bcrypt `hash` (CPU-heavy by design: run it off the async
/// threads and cache successes).
#[must_use]
pub fn verify_password(password: &str, hash: &str) -> bool {
    bcrypt::verify(password, hash).unwrap_or(false)
}

/// Whether `given` equals one of `tokens`, in time independent of where they differ.
#[must_use]
pub fn token_matches(tokens: &[String], given: &str) -> bool {
    let mut any = false;
    for t in tokens {
        any |= constant_time_eq(t.as_bytes(), given.as_bytes());
    }
    any
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() || a.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
#[path = "webconfig_tests.rs"]
mod tests;
