//! TLS for tests: a private CA and a `localhost` certificate made at test time (rcgen),
//! and HTTPS requests over HTTP/1.1 or HTTP/2 trusting that CA.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tailgate::config::TlsFiles;

use crate::Reply;

/// A CA and a server certificate it signed, as PEM files in `dir`.
pub struct TestPki {
    pub ca_pem: String,
    pub ca_file: PathBuf,
    pub files: TlsFiles,
}

impl TestPki {
    /// Makes a CA named `name` and a certificate for `localhost` and `127.0.0.1`.
    pub fn new(dir: &Path, name: &str) -> Self {
        std::fs::create_dir_all(dir).expect("pki dir");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("tailgate test CA {name}"),
        );
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key"))
            .expect("ca cert");
        let key = KeyPair::generate().expect("server key");
        let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("server params")
            .signed_by(&key, &ca)
            .expect("server cert");
        let ca_pem = ca.as_ref().pem();
        let ca_file = dir.join(format!("{name}-ca.pem"));
        let files = TlsFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&ca_file, &ca_pem).expect("write ca");
        std::fs::write(&files.cert, cert.pem()).expect("write cert");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        Self {
            ca_pem,
            ca_file,
            files,
        }
    }

    /// Copies this pair over `target`'s files (a certificate rotation on disk).
    pub fn install_over(&self, target: &TlsFiles) {
        std::fs::copy(&self.files.cert, &target.cert).expect("copy cert");
        std::fs::copy(&self.files.key, &target.key).expect("copy key");
    }

    /// A client config trusting only this CA, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile_certs(self.ca_pem.as_bytes()) {
            roots.add(cert).expect("add ca");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

/// HTTP version spoken over TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http1,
    Http2,
}

/// Connects to `addr` as `localhost`, trusting `pki`'s CA, and sends `req`.
pub async fn try_send(
    pki: &TestPki,
    addr: SocketAddr,
    version: Version,
    req: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, String> {
    let alpn: &[&[u8]] = match version {
        Version::Http1 => &[b"http/1.1"],
        Version::Http2 => &[b"h2"],
    };
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(pki.client_config(alpn))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    assert_eq!(negotiated.as_deref(), Some(alpn[0]), "ALPN");
    let io = TokioIo::new(tls);
    match version {
        Version::Http1 => {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            sender.send_request(req).await.map_err(|e| e.to_string())
        }
        Version::Http2 => {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            sender.send_request(req).await.map_err(|e| e.to_string())
        }
    }
}

/// [`try_send`], panicking on failure.
pub async fn send(
    pki: &TestPki,
    addr: SocketAddr,
    version: Version,
    req: Request<Full<Bytes>>,
) -> Response<Incoming> {
    try_send(pki, addr, version, req)
        .await
        .unwrap_or_else(|e| panic!("https request failed: {e}"))
}

/// A request to `https://localhost:{port}{path}`: origin-form with `Host` over HTTP/1.1
/// (as curl sends it), the full URI over HTTP/2.
pub fn request(
    version: Version,
    method: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let authority = format!("localhost:{}", addr.port());
    let mut req = Request::builder().method(method);
    req = match version {
        Version::Http1 => req.uri(path).header("host", authority),
        Version::Http2 => req.uri(format!("https://{authority}{path}")),
    };
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Full::new(body.into())).expect("request")
}

/// Reads a whole response.
pub async fn reply(resp: Response<Incoming>) -> Reply {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("read body").to_bytes();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}
