//! One HTTP/1.1 connection per request, over TCP or TLS (rustls with the webpki roots), with
//! connect and answer timeouts, and the gateway's JSON error answers. TLS failures are told
//! apart: retrying cannot fix an untrusted certificate or a plain-HTTP port.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::tls::{self, rustls_error};
use super::url::{Endpoint, Scheme};

/// Default of `--connect-timeout`: how long a TCP connect plus TLS handshake may take, and
/// then how long the answer's headers may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `--connect-timeout`, set once per process before the first connection.
static CONNECT_TIMEOUT: OnceLock<Duration> = OnceLock::new();

/// Sets the connect and answer timeout of every later request of this process.
pub fn set_connect_timeout(timeout: Duration) {
    let _ = CONNECT_TIMEOUT.set(timeout.max(Duration::from_millis(1)));
}

/// The connect timeout, also the answer-headers timeout.
pub fn connect_timeout() -> Duration {
    CONNECT_TIMEOUT
        .get()
        .copied()
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT)
}

/// Longest first line of a non-JSON error body kept for the message.
const MAX_MESSAGE_CHARS: usize = 200;

/// Largest non-streaming answer read (status JSON, errors).
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// `User-Agent` of every client request.
pub const USER_AGENT: &str = concat!("tailgate/", env!("CARGO_PKG_VERSION"));

/// Why a request got no answer: the network, not the gateway.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {addr} timed out after {}", humantime::format_duration(*.after))]
    ConnectTimeout { addr: String, after: Duration },
    #[error("{addr} accepted the connection but sent no answer within {}", humantime::format_duration(*.after))]
    NoAnswer { addr: String, after: Duration },
    #[error("TLS handshake with {host} failed")]
    Tls {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("HTTP exchange failed")]
    Hyper(#[from] hyper::Error),
    #[error("invalid request")]
    Request(#[from] http::Error),
    #[error("answer body too large or unreadable")]
    Body,
}

impl HttpError {
    /// A failure retrying cannot fix: the server's certificate is not trusted (or not for
    /// this host), or the port does not speak TLS.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::ServerName(_) => true,
            Self::Tls { source, .. } => rustls_error(source).is_some(),
            _ => false,
        }
    }

    /// What to do about a permanent failure, for the one-line message.
    pub fn hint(&self) -> Option<&'static str> {
        let Self::Tls { source, .. } = self else {
            return None;
        };
        rustls_error(source).map(tls::hint)
    }
}

/// An error answer from the gateway: its status and JSON `{"error","message"}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({status} {code})")]
pub struct ApiFailure {
    pub status: u16,
    /// The `error` code, or the status's reason when the body is not the gateway's JSON.
    pub code: String,
    pub message: String,
    /// From `Retry-After` (seconds), for 429 and 503.
    pub retry_after: Option<Duration>,
}

impl ApiFailure {
    /// Reads the error body of `resp`.
    pub async fn read(resp: Response<Incoming>) -> Self {
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .map(Duration::from_secs);
        let body = tokio::time::timeout(connect_timeout(), read_body(resp.into_body()))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        Self::from_body(status, &body, retry_after)
    }

    fn from_body(status: StatusCode, body: &[u8], retry_after: Option<Duration>) -> Self {
        let reason = status.canonical_reason().unwrap_or("error").to_string();
        let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let field = |name: &str| {
            json.as_ref()
                .and_then(|v| v.get(name))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let text = first_line(&String::from_utf8_lossy(body));
        Self {
            status: status.as_u16(),
            code: field("error").unwrap_or_else(|| reason.to_lowercase().replace(' ', "_")),
            message: field("message").unwrap_or(if text.is_empty() { reason } else { text }),
            retry_after,
        }
    }

    /// A token the gateway refused (`401`/`403`): retrying will not help.
    pub fn is_auth(&self) -> bool {
        matches!(self.status, 401 | 403)
    }

    /// Overload, draining or a proxy in between failing: worth retrying.
    pub fn is_retryable(&self) -> bool {
        matches!(self.status, 408 | 429 | 502 | 503 | 504) || self.status >= 500
    }
}

/// What a non-JSON error body (a proxy's HTML page) says in one line: its `<title>`, else
/// its first non-empty line, at most `MAX_MESSAGE_CHARS` characters.
fn first_line(body: &str) -> String {
    let title = body.find("<title>").and_then(|start| {
        let rest = &body[start + "<title>".len()..];
        rest.find("</title>").map(|end| &rest[..end])
    });
    let line = title.unwrap_or_else(|| {
        body.lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or_default()
    });
    let mut out: String = line
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_MESSAGE_CHARS)
        .collect();
    if line.trim().chars().count() > MAX_MESSAGE_CHARS {
        out.push_str("...");
    }
    out
}

/// Starts a request to `path` (with query) on `endpoint` with `Host` and `User-Agent` set.
pub fn request(method: &str, endpoint: &Endpoint, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, endpoint.authority())
        .header(header::USER_AGENT, USER_AGENT)
}

/// Adds `Authorization: Bearer` unless the token is `None`.
pub fn bearer(builder: http::request::Builder, token: Option<&str>) -> http::request::Builder {
    match token {
        Some(t) => builder.header(header::AUTHORIZATION, format!("Bearer {t}")),
        None => builder,
    }
}

/// A `GET` without a body.
pub fn get(
    endpoint: &Endpoint,
    path: &str,
    token: Option<&str>,
) -> Result<Request<Empty<Bytes>>, HttpError> {
    Ok(bearer(request("GET", endpoint, path), token).body(Empty::new())?)
}

/// A `POST` of a JSON body.
pub fn post_json(
    endpoint: &Endpoint,
    path: &str,
    token: Option<&str>,
    body: &serde_json::Value,
) -> Result<Request<Full<Bytes>>, HttpError> {
    Ok(bearer(request("POST", endpoint, path), token)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))?)
}

/// Opens a connection to `endpoint`, sends `req` and returns the answer with its body
/// still streaming. The connection lives as long as the body is read. Connecting and then
/// the answer's headers each get [`connect_timeout`].
pub async fn send<B>(endpoint: &Endpoint, req: Request<B>) -> Result<Response<Incoming>, HttpError>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let after = connect_timeout();
    let answer = send_streaming(endpoint, req).await?;
    tokio::time::timeout(after, answer)
        .await
        .map_err(|_| HttpError::NoAnswer {
            addr: endpoint.to_string(),
            after,
        })?
}

/// Connects (within [`connect_timeout`]) and starts sending `req`; the returned future is
/// the answer, unbounded, for an upload whose answer comes only when its body ends.
pub async fn send_streaming<B>(
    endpoint: &Endpoint,
    req: Request<B>,
) -> Result<impl std::future::Future<Output = Result<Response<Incoming>, HttpError>>, HttpError>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let after = connect_timeout();
    let io = tokio::time::timeout(after, connect(endpoint))
        .await
        .map_err(|_| HttpError::ConnectTimeout {
            addr: endpoint.to_string(),
            after,
        })??;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "client connection ended");
        }
    });
    let answer = sender.send_request(req);
    Ok(async move { Ok(answer.await?) })
}

/// Sends `req` and reads a JSON answer; a non-2xx answer is an [`ApiFailure`].
pub async fn exchange_json<B>(
    endpoint: &Endpoint,
    req: Request<B>,
) -> Result<Result<serde_json::Value, ApiFailure>, HttpError>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let resp = send(endpoint, req).await?;
    if !resp.status().is_success() {
        return Ok(Err(ApiFailure::read(resp).await));
    }
    let status = resp.status();
    let after = connect_timeout();
    let body = tokio::time::timeout(after, read_body(resp.into_body()))
        .await
        .map_err(|_| HttpError::NoAnswer {
            addr: endpoint.to_string(),
            after,
        })??;
    Ok(serde_json::from_slice(&body).map_err(|e| ApiFailure {
        status: status.as_u16(),
        code: "bad_answer".into(),
        message: format!("the gateway's answer is not JSON: {e}"),
        retry_after: None,
    }))
}

/// Reads a whole (bounded) body.
pub async fn read_body(body: Incoming) -> Result<Bytes, HttpError> {
    Limited::new(body, MAX_ANSWER_BYTES)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|_| HttpError::Body)
}

/// A byte stream to the gateway, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn connect(endpoint: &Endpoint) -> Result<Box<dyn Io>, HttpError> {
    let addr = (endpoint.host.as_str(), endpoint.port);
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| HttpError::Connect {
            addr: endpoint.to_string(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    match endpoint.scheme {
        Scheme::Http => Ok(Box::new(tcp)),
        Scheme::Https => {
            let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone())
                .map_err(|_| HttpError::ServerName(endpoint.host.clone()))?;
            let connector = tokio_rustls::TlsConnector::from(tls::client_config());
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(|source| HttpError::Tls {
                    host: endpoint.host.clone(),
                    source,
                })?;
            Ok(Box::new(tls))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_read_the_gateway_json() {
        let f = ApiFailure::from_body(
            StatusCode::UNAUTHORIZED,
            br#"{"error":"invalid_token","message":"the token expired"}"#,
            None,
        );
        assert_eq!(
            (f.code.as_str(), f.message.as_str()),
            ("invalid_token", "the token expired")
        );
        assert!(f.is_auth() && !f.is_retryable());
        let f = ApiFailure::from_body(StatusCode::BAD_GATEWAY, b"upstream down", None);
        assert_eq!(
            (f.code.as_str(), f.message.as_str()),
            ("bad_gateway", "upstream down")
        );
        assert!(f.is_retryable());
        assert!(
            !ApiFailure::from_body(StatusCode::NOT_FOUND, b"", None).is_retryable(),
            "404 is final"
        );
    }

    #[test]
    fn a_proxy_page_becomes_one_line() {
        let page = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
                    <center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";
        let f = ApiFailure::from_body(StatusCode::BAD_GATEWAY, page.as_bytes(), None);
        assert_eq!(f.to_string(), "502 Bad Gateway (502 bad_gateway)");
        let f = ApiFailure::from_body(
            StatusCode::SERVICE_UNAVAILABLE,
            b"\n  down\nfor maintenance\n",
            None,
        );
        assert_eq!(f.message, "down");
        let long = "x".repeat(5000);
        let f = ApiFailure::from_body(StatusCode::BAD_GATEWAY, long.as_bytes(), None);
        assert_eq!(f.message.len(), MAX_MESSAGE_CHARS + 3);
    }
}
