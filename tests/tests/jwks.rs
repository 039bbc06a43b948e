//! Keys from a JWKS served by the test: verification by `kid`, a rotation picked up on the
//! first unknown kid, made-up kids that cannot make the gateway hammer the issuer, a failed
//! refresh that keeps the last good set, and a JWKS that cannot be fetched at start.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use tailgate::auth::{job_claims, Minter};
use tailgate::config::{JwksConfig, JwksSource};
use tailgate_tests::{bearer, cli, test_config, TestServer, AUDIENCE, ISSUER};
use tokio::sync::Notify;

const WAIT: Duration = Duration::from_secs(10);

fn pem(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../gateway/src/auth/testdata")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The public JWK of test key `name` (`rsa_a`, `rsa_b`) with `kid`.
fn jwk(name: &str, kid: &str) -> serde_json::Value {
    let key = EncodingKey::from_rsa_pem(&pem(&format!("{name}.key.pem"))).expect("key");
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).expect("jwk");
    jwk.common.key_id = Some(kid.to_string());
    serde_json::to_value(jwk).expect("jwk json")
}

/// A read token for `job` signed by test key `name` with header `kid`.
fn token(name: &str, kid: &str, job: &str) -> String {
    let claims = job_claims(
        ISSUER,
        AUDIENCE,
        "u",
        "job_id",
        job,
        Duration::from_secs(600),
        false,
    );
    Minter::from_pem(&pem(&format!("{name}.key.pem")), Algorithm::RS256)
        .expect("minter")
        .with_kid(kid)
        .mint(&claims)
        .expect("mint")
}

/// An issuer's JWKS endpoint: serves `doc` (or a 500 while `failing`), counts fetches.
struct Issuer {
    addr: SocketAddr,
    doc: Arc<Mutex<(u16, String)>>,
    fetches: Arc<AtomicUsize>,
    fetched: Arc<Notify>,
}

impl Issuer {
    async fn start(keys: &[serde_json::Value]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let doc = Arc::new(Mutex::new((
            200,
            serde_json::json!({ "keys": keys }).to_string(),
        )));
        let fetches = Arc::new(AtomicUsize::new(0));
        let fetched = Arc::new(Notify::new());
        let (d, f, n) = (doc.clone(), fetches.clone(), fetched.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (d, f, n) = (d.clone(), f.clone(), n.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |_req| {
                        let (status, body) = d.lock().unwrap().clone();
                        f.fetch_add(1, Ordering::SeqCst);
                        n.notify_waiters();
                        let mut resp = Response::new(Full::new(Bytes::from(body)));
                        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            doc,
            fetches,
            fetched,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    fn serve(&self, status: u16, keys: &[serde_json::Value]) {
        *self.doc.lock().unwrap() = (status, serde_json::json!({ "keys": keys }).to_string());
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

async fn status_code(server: &TestServer, job: &str, token: &str) -> u16 {
    server
        .get(
            &format!("/v1/jobs/{job}"),
            &[("authorization", &bearer(token))],
        )
        .await
        .status
}

#[tokio::test]
async fn keys_come_from_the_jwks_and_rotate_on_an_unknown_kid() {
    let issuer = Issuer::start(&[jwk("rsa_a", "2026-a")]).await;
    let mut config = test_config();
    config.auth.hmac_secret = None;
    config.jwks = Some(JwksConfig {
        source: JwksSource::Url(issuer.url()),
        refresh: Duration::from_secs(300),
    });
    let server = TestServer::start_with(config).await;
    assert_eq!(
        status_code(&server, "j", &token("rsa_a", "2026-a", "j")).await,
        200
    );
    assert_eq!(issuer.fetches(), 1, "fetched once at start");
    // The right kid with the wrong key is a bad signature, not a refresh.
    assert_eq!(
        status_code(&server, "j", &token("rsa_b", "2026-a", "j")).await,
        401
    );
    assert_eq!(issuer.fetches(), 1);

    // The issuer rotates: the first token with the new kid fetches the set again.
    issuer.serve(200, &[jwk("rsa_b", "2026-b")]);
    assert_eq!(
        status_code(&server, "j", &token("rsa_b", "2026-b", "j")).await,
        200
    );
    assert_eq!(issuer.fetches(), 2);
    // The old key is gone from the set.
    let old = server
        .get(
            "/v1/jobs/j",
            &[("authorization", &bearer(&token("rsa_a", "2026-a", "j")))],
        )
        .await;
    old.assert_error(401, "invalid_token");

    // A flood of made-up kids within the rate limit fetches nothing more.
    for i in 0..20 {
        let made_up = token("rsa_a", &format!("made-up-{i}"), "j");
        assert_eq!(status_code(&server, "j", &made_up).await, 401);
    }
    assert_eq!(issuer.fetches(), 2, "unknown kids are rate-limited");
    server.stop().await;
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_last_good_keys() {
    let issuer = Issuer::start(&[jwk("rsa_a", "k")]).await;
    let mut config = test_config();
    config.jwks = Some(JwksConfig {
        source: JwksSource::Url(issuer.url()),
        refresh: Duration::from_secs(1),
    });
    let server = TestServer::start_with(config).await;
    // Answered once the start-up fetch is done.
    assert_eq!(
        status_code(&server, "k", &token("rsa_a", "k", "k")).await,
        200
    );
    issuer.serve(500, &[]);
    let refreshed = issuer.fetched.notified();
    tokio::time::timeout(WAIT, refreshed)
        .await
        .expect("scheduled refresh");
    assert!(issuer.fetches() >= 2);
    assert_eq!(
        status_code(&server, "k", &token("rsa_a", "k", "k")).await,
        200
    );
    server.stop().await;
}

#[tokio::test]
async fn a_jwks_that_cannot_be_fetched_at_start_is_a_config_error() {
    // A port nothing listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let url = format!("http://127.0.0.1:{port}/jwks.json");
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--memory-only",
        "--jwks-url",
        &url,
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        AUDIENCE,
    ];
    let done = cli::run(cli::tailgate(&args), WAIT).await;
    assert_eq!(done.code, Some(64), "{}", done.stderr);
    assert!(done.stderr.contains("config jwks-url"), "{}", done.stderr);
    assert!(done.stderr.contains(&url), "{}", done.stderr);

    let missing = std::env::temp_dir().join("tailgate-no-such-jwks.json");
    let missing = missing.display().to_string();
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--memory-only",
        "--jwks-file",
        &missing,
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        AUDIENCE,
    ];
    let done = cli::run(cli::tailgate(&args), WAIT).await;
    assert_eq!(done.code, Some(64), "{}", done.stderr);
    assert!(done.stderr.contains("config jwks-file"), "{}", done.stderr);
}
