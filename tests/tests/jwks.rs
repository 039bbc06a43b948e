//! Keys from a JWKS served by the test: verification by `kid`, a rotation picked up after
//! the first unknown kid, made-up kids answered at once (even while the issuer hangs) that
//! cannot make the gateway hammer the issuer, `kid` required when several keys share an
//! algorithm, a failed refresh that keeps the last good set, a JWKS that cannot be fetched
//! at start, and `http://` JWKS URLs refused without `--jwks-allow-http`.

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
/// Answers the issuer may give at once while its gate is open.
const GATE_OPEN: usize = 1_000;

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
    minted(name, Some(kid), job)
}

/// A read token for `job` signed by test key `name`, with a `kid` header if given.
fn minted(name: &str, kid: Option<&str>, job: &str) -> String {
    let claims = job_claims(
        ISSUER,
        AUDIENCE,
        "u",
        "job_id",
        job,
        Duration::from_secs(600),
        false,
    );
    let minter =
        Minter::from_pem(&pem(&format!("{name}.key.pem")), Algorithm::RS256).expect("minter");
    match kid {
        Some(kid) => minter.with_kid(kid),
        None => minter,
    }
    .mint(&claims)
    .expect("mint")
}

/// An issuer's JWKS endpoint: serves `doc` (or a 500 while `failing`), counts fetches,
/// and while `hang` is closed holds each answer until it opens.
struct Issuer {
    addr: SocketAddr,
    doc: Arc<Mutex<(u16, String)>>,
    fetches: Arc<AtomicUsize>,
    fetched: Arc<Notify>,
    /// Permits to answer; `hang()` takes them all away until `release()`.
    gate: Arc<tokio::sync::Semaphore>,
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
        let gate = Arc::new(tokio::sync::Semaphore::new(GATE_OPEN));
        let (d, f, n, g) = (doc.clone(), fetches.clone(), fetched.clone(), gate.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (d, f, n, g) = (d.clone(), f.clone(), n.clone(), g.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |_req| {
                        let (status, body) = d.lock().unwrap().clone();
                        f.fetch_add(1, Ordering::SeqCst);
                        n.notify_waiters();
                        let mut resp = Response::new(Full::new(Bytes::from(body)));
                        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                        let g = g.clone();
                        async move {
                            let _pass = g.acquire().await;
                            Ok::<_, Infallible>(resp)
                        }
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
            gate,
        }
    }

    /// Holds every answer from now on, until [`Issuer::release`].
    async fn hang(&self) {
        self.gate
            .acquire_many(GATE_OPEN as u32)
            .await
            .expect("gate")
            .forget();
    }

    fn release(&self) {
        self.gate.add_permits(GATE_OPEN);
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

    // The issuer rotates: the first token with the new kid is answered from the set in
    // force (401) and fetches the set again in the background; once it is in, it passes.
    issuer.serve(200, &[jwk("rsa_b", "2026-b")]);
    let fetched = issuer.fetched.notified();
    assert_eq!(
        status_code(&server, "j", &token("rsa_b", "2026-b", "j")).await,
        401
    );
    tokio::time::timeout(WAIT, fetched)
        .await
        .expect("background fetch");
    let rotated = token("rsa_b", "2026-b", "j");
    let mut accepted = false;
    for _ in 0..100 {
        // The fetch has been answered; its set lands a moment later.
        if status_code(&server, "j", &rotated).await == 200 {
            accepted = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(accepted, "the rotated key was never accepted");
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
        "--jwks-allow-http",
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

#[tokio::test]
async fn made_up_kids_are_answered_at_once_while_the_issuer_hangs() {
    let issuer = Issuer::start(&[jwk("rsa_a", "k")]).await;
    let mut config = test_config();
    config.jwks = Some(JwksConfig {
        source: JwksSource::Url(issuer.url()),
        refresh: Duration::from_secs(300),
    });
    let server = TestServer::start_with(config).await;
    // Answered once the start-up fetch is done.
    assert_eq!(
        status_code(&server, "k", &token("rsa_a", "k", "k")).await,
        200
    );
    issuer.hang().await;
    let fetched = issuer.fetched.notified();
    // Each is answered while the fetch it caused is still held by the issuer.
    for i in 0..5 {
        let made_up = token("rsa_a", &format!("made-up-{i}"), "k");
        let answered = tokio::time::timeout(WAIT, status_code(&server, "k", &made_up)).await;
        assert_eq!(answered, Ok(401), "made-up kid {i} waited on the issuer");
    }
    tokio::time::timeout(WAIT, fetched)
        .await
        .expect("one background fetch");
    assert_eq!(issuer.fetches(), 2, "one fetch for all made-up kids");
    assert_eq!(
        status_code(&server, "k", &token("rsa_a", "k", "k")).await,
        200,
        "known kids pass while the fetch hangs"
    );
    issuer.release();
    server.stop().await;
}

#[tokio::test]
async fn a_token_without_kid_must_name_its_key_when_several_share_its_algorithm() {
    let issuer = Issuer::start(&[jwk("rsa_a", "a"), jwk("rsa_b", "b")]).await;
    let mut config = test_config();
    config.auth.hmac_secret = None;
    config.jwks = Some(JwksConfig {
        source: JwksSource::Url(issuer.url()),
        refresh: Duration::from_secs(300),
    });
    let server = TestServer::start_with(config).await;
    let refused = server
        .get(
            "/v1/jobs/j",
            &[("authorization", &bearer(&minted("rsa_b", None, "j")))],
        )
        .await;
    refused.assert_error(401, "invalid_token");
    let challenge = refused.header("www-authenticate").unwrap_or_default();
    assert!(challenge.contains("(kid)"), "{challenge}");
    assert_eq!(
        status_code(&server, "j", &minted("rsa_b", Some("b"), "j")).await,
        200
    );
    let metrics = server.get("/metrics", &[]).await.text();
    assert!(
        metrics.contains("tailgate_auth_failures_total{reason=\"missing_kid\"} 1"),
        "{metrics}"
    );
    server.stop().await;

    // With one key of its algorithm, a token may leave the kid out.
    let single = Issuer::start(&[jwk("rsa_a", "a")]).await;
    let mut config = test_config();
    config.auth.hmac_secret = None;
    config.jwks = Some(JwksConfig {
        source: JwksSource::Url(single.url()),
        refresh: Duration::from_secs(300),
    });
    let server = TestServer::start_with(config).await;
    assert_eq!(
        status_code(&server, "j", &minted("rsa_a", None, "j")).await,
        200
    );
    server.stop().await;
}

#[tokio::test]
async fn an_http_jwks_url_needs_the_flag_and_no_url_secret_reaches_stderr() {
    let args = |url: &str, extra: &[&str]| {
        let mut a = vec![
            "serve".to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--memory-only".into(),
            "--jwks-url".into(),
            url.into(),
            "--jwt-issuer".into(),
            ISSUER.into(),
            "--jwt-audience".into(),
            AUDIENCE.into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let plain = "http://127.0.0.1:9/jwks.json";
    let a = args(plain, &[]);
    let done = cli::run(
        cli::tailgate(&a.iter().map(String::as_str).collect::<Vec<_>>()),
        WAIT,
    )
    .await;
    assert_eq!(done.code, Some(64), "{}", done.stderr);
    assert!(
        done.stderr.contains("config jwks-url") && done.stderr.contains("--jwks-allow-http"),
        "{}",
        done.stderr
    );

    // An https:// URL with user info and an API key, which cannot be fetched (nothing
    // listens): the error names the host, not the secrets.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let secret_url =
        format!("https://SECRETU:SECRET%40P@ss:w/rd@127.0.0.1:{port}/jwks.json?api_key=SECRETK");
    let a = args(&secret_url, &[]);
    let done = cli::run(
        cli::tailgate(&a.iter().map(String::as_str).collect::<Vec<_>>()),
        WAIT,
    )
    .await;
    assert_eq!(done.code, Some(64), "{}", done.stderr);
    assert!(done.stderr.contains("config jwks-url"), "{}", done.stderr);
    assert!(
        done.stderr.contains(&format!("127.0.0.1:{port}/jwks.json")),
        "{}",
        done.stderr
    );
    assert!(!done.stderr.contains("SECRET"), "{}", done.stderr);
}
