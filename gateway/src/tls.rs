//! HTTPS: rustls with the `--tls-cert` / `--tls-key` pair, ALPN `h2` and `http/1.1`,
//! TLS 1.2 and 1.3 only. SIGHUP reloads the pair from disk: new handshakes use the new
//! one, open connections keep theirs, and a bad new pair is logged and the old one kept.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::TlsFiles;

/// Why a certificate and key cannot be used; names the flag at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}", path.display())]
    Read {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} holds no PEM private key", path.display())]
    NoKey { path: PathBuf },
    #[error("the key in {} is not usable", path.display())]
    BadKey {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("the key in {} does not match the certificate", path.display())]
    Mismatch { path: PathBuf },
    #[error("cannot build the TLS configuration")]
    Config(#[source] rustls::Error),
}

impl TlsError {
    /// The config key to name in the start-up error.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Read { flag, .. } => flag,
            Self::NoCertificate { .. } | Self::Config(_) => "tls-cert",
            Self::NoKey { .. } | Self::BadKey { .. } | Self::Mismatch { .. } => "tls-key",
        }
    }
}

/// The TLS side of the listener: the acceptor and the reloadable pair behind it.
#[derive(Clone)]
pub(crate) struct Tls {
    acceptor: TlsAcceptor,
    current: Arc<CurrentKey>,
    files: TlsFiles,
}

/// The pair new handshakes get; swapped on reload.
#[derive(Debug)]
struct CurrentKey(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentKey {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.0.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

impl Tls {
    /// Loads and checks the pair now, so a bad one stops start-up.
    pub(crate) fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = Arc::new(CurrentKey(RwLock::new(Arc::new(certified_key(files)?))));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            current,
            files: files.clone(),
        })
    }

    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Reads the pair from disk again; on error the old pair stays.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let key = certified_key(&self.files)?;
        *self.current.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        Ok(())
    }

    /// Reloads on every SIGHUP until `shutdown`.
    pub(crate) async fn reload_on_sighup(self, shutdown: CancellationToken) {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut hup = match signal(SignalKind::hangup()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGHUP; certificates will not reload");
                    return;
                }
            };
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    got = hup.recv() => if got.is_none() { return },
                }
                match self.reload() {
                    Ok(()) => {
                        crate::metrics::get().tls_reload(true);
                        tracing::info!(tls.cert = %self.files.cert.display(), "certificate reloaded");
                    }
                    Err(e) => {
                        crate::metrics::get().tls_reload(false);
                        tracing::error!(
                            error = %crate::client::error_chain(&e),
                            "certificate reload failed; keeping the old one"
                        );
                    }
                }
            }
        }
        #[cfg(not(unix))]
        shutdown.cancelled().await;
    }
}

/// Loads and checks the configured pair, so `main` can refuse a bad one before it says
/// "listening".
pub fn check(config: &crate::config::Config) -> Result<(), TlsError> {
    config
        .tls
        .as_ref()
        .map_or(Ok(()), |files| Tls::load(files).map(drop))
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        flag,
        path: path.to_owned(),
        source,
    })
}

fn certified_key(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let cert_pem = read("tls-cert", &files.cert)?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
        });
    }
    let key_pem = read("tls-key", &files.key)?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| TlsError::NoKey {
            path: files.key.clone(),
        })?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(certs, key, &provider).map_err(|source| match source {
        rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
            path: files.key.clone(),
        },
        source => TlsError::BadKey {
            path: files.key.clone(),
            source,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> TlsFiles {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let files = TlsFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.cert.pem()).unwrap();
        std::fs::write(&files.key, cert.signing_key.serialize_pem()).unwrap();
        files
    }

    #[test]
    fn bad_pairs_name_their_flag_and_reload_keeps_the_old_pair() {
        let dir = std::env::temp_dir().join(format!("tailgate-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = pair(&dir, "a");
        let b = pair(&dir, "b");
        let key_of = |r: Result<Tls, TlsError>| r.err().map(|e| e.key());
        let missing = TlsFiles {
            cert: dir.join("nope.crt"),
            key: a.key.clone(),
        };
        assert_eq!(key_of(Tls::load(&missing)), Some("tls-cert"));
        let mismatched = TlsFiles {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        assert!(matches!(
            Tls::load(&mismatched),
            Err(TlsError::Mismatch { .. })
        ));
        let swapped = TlsFiles {
            cert: a.key.clone(),
            key: a.cert.clone(),
        };
        assert_eq!(key_of(Tls::load(&swapped)), Some("tls-cert"));

        let tls = Tls::load(&a).unwrap();
        let before = tls.current.0.read().unwrap().cert.clone();
        std::fs::write(&a.key, "not a key").unwrap();
        assert!(tls.reload().is_err());
        assert_eq!(tls.current.0.read().unwrap().cert, before, "old pair kept");
        std::fs::copy(&b.cert, &a.cert).unwrap();
        std::fs::copy(&b.key, &a.key).unwrap();
        tls.reload().unwrap();
        assert_ne!(
            tls.current.0.read().unwrap().cert,
            before,
            "new pair in use"
        );
    }
}
