//! TLS for outbound connections: the roots they trust (the Mozilla roots from `webpki-roots` plus
//! `--ca-file`), and what to tell a user whose handshake cannot work.

use std::sync::{Arc, OnceLock};

/// Environment twin of `--ca-file`.
pub const ENV_CA_FILE: &str = "TAILGATE_CA_FILE";

/// CA certificates from `--ca-file`, trusted besides the webpki roots; set once per process
/// before the first connection.
static EXTRA_ROOTS: OnceLock<Vec<rustls::pki_types::CertificateDer<'static>>> = OnceLock::new();

/// Why `--ca-file` cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    #[error("cannot read it: {0}")]
    Read(#[source] std::io::Error),
    #[error("holds no PEM certificate")]
    Empty,
}

/// Trusts the CA certificates in the PEM file at `path` for every later `https://`
/// connection of this process.
pub fn trust_ca_file(path: &std::path::Path) -> Result<(), CaFileError> {
    let pem = std::fs::read(path).map_err(CaFileError::Read)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(CaFileError::Empty);
    }
    let _ = EXTRA_ROOTS.set(certs);
    Ok(())
}

/// The TLS client config: the Mozilla roots from `webpki-roots` plus `--ca-file`'s,
/// HTTP/1.1 by ALPN.
pub(crate) fn client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let extra = EXTRA_ROOTS.get().map(Vec::as_slice).unwrap_or_default();
            let (added, _) = roots.add_parsable_certificates(extra.iter().cloned());
            if added < extra.len() {
                tracing::warn!("some --ca-file certificates are not usable CA certificates");
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| b.with_root_certificates(roots).with_no_client_auth())
                .unwrap_or_else(|_| {
                    // The ring provider supports the default versions; this cannot fail.
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth()
                });
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(config)
        })
        .clone()
}

/// The rustls error inside a TLS handshake's I/O error, if it is one.
pub(crate) fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// What to do about a TLS failure, for the one-line message: retrying will not help.
pub(crate) fn hint(e: &rustls::Error) -> &'static str {
    match e {
        rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
        | rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForNameContext { .. },
        ) => "the server's certificate is not for this host name; use the name it was issued for",
        rustls::Error::InvalidCertificate(
            rustls::CertificateError::Expired
            | rustls::CertificateError::ExpiredContext { .. }
            | rustls::CertificateError::NotValidYet
            | rustls::CertificateError::NotValidYetContext { .. },
        ) => "the server's certificate is outside its validity period (or this clock is wrong)",
        rustls::Error::InvalidCertificate(_) => {
            "pass the CA that issued the server's certificate with --ca-file (not the server's own certificate)"
        }
        rustls::Error::InvalidMessage(_)
        | rustls::Error::InappropriateMessage { .. }
        | rustls::Error::InappropriateHandshakeMessage { .. } => {
            "is this port serving plain HTTP? then use an http:// URL"
        }
        _ => "the server and this client cannot agree on TLS; check the URL's port and the server's TLS setup",
    }
}
