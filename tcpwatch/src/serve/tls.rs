//! The rustls server configuration of a listener, from PEM bytes already read by
//! [`super::web`] (so a reload sees one consistent set of files).
use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tcpwatch_core::webconfig::{ClientAuth, TlsServerConfig};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

/// PEM contents of the files of `[tls_server_config]`.
pub struct TlsFiles<'a> {
    pub cert: &'a [u8],
    pub key: &'a [u8],
    pub client_ca: Option<&'a [u8]>,
}

/// Builds the server configuration; errors name the key of the file at fault.
pub fn server_config(
    cfg: &TlsServerConfig,
    files: &TlsFiles<'_>,
) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(files.cert)
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!(
                "tls_server_config.cert_file: {}: not PEM certificates",
                cfg.cert_file
            )
        })?;
    if certs.is_empty() {
        return Err(anyhow!(
            "tls_server_config.cert_file: {}: no CERTIFICATE in the file",
            cfg.cert_file
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(files.key).with_context(|| {
        format!(
            "tls_server_config.key_file: {}: no PEM private key (PKCS#8, PKCS#1 or SEC1)",
            cfg.key_file
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS: no protocol version available")?;
    let builder = match (cfg.client_auth_type, files.client_ca) {
        (ClientAuth::NoClientCert, _) | (_, None) => builder.with_no_client_auth(),
        (auth, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca) {
                let c = c.with_context(|| {
                    format!(
                        "tls_server_config.client_ca_file: {}: not PEM",
                        cfg.client_ca_file
                    )
                })?;
                roots.add(c).with_context(|| {
                    format!(
                        "tls_server_config.client_ca_file: {}: unusable CA certificate",
                        cfg.client_ca_file
                    )
                })?;
            }
            if roots.is_empty() {
                return Err(anyhow!(
                    "tls_server_config.client_ca_file: {}: no CERTIFICATE in the file",
                    cfg.client_ca_file
                ));
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = if auth == ClientAuth::VerifyClientCertIfGiven {
                v.allow_unauthenticated()
            } else {
                v
            };
            let v = v.build().with_context(|| {
                format!("tls_server_config.client_ca_file: {}", cfg.client_ca_file)
            })?;
            builder.with_client_cert_verifier(v)
        }
    };
    let mut sc = builder.with_single_cert(certs, key).with_context(|| {
        format!(
            "tls_server_config: the key in {} does not fit the certificate in {}",
            cfg.key_file, cfg.cert_file
        )
    })?;
    sc.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(sc))
}
