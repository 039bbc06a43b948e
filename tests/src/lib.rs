//! Test support: the real server on an ephemeral loopback port, a small HTTP client, and
//! a spec-correct SSE reader. Tests bind `127.0.0.1:0`; there are no port races.

pub mod capgo;
pub mod child;
pub mod cli;
pub mod daemon;
pub mod gateway;
pub mod http_client;
pub mod proxy;
pub mod redis;
pub mod redis_ha;
pub mod s3;
pub mod sse;
pub mod tls;

use std::net::SocketAddr;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::Value;
use tailgate::auth::{job_claims, Minter};
use tailgate::Config;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use http_client::{Reply, Upload};
pub use sse::{Event, SseStream};

pub const SECRET: &str = "test-secret-0123456789-0123456789";
pub const ISSUER: &str = "tailgate-test";
pub const AUDIENCE: &str = "tailgate-test-aud";

/// A gateway running in this process.
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown_tx: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tailgate::ServerError>>>,
}

/// The config tests start from: the test secret, short timeouts.
pub fn test_config() -> Config {
    let mut c = Config::new_hmac(SECRET, ISSUER, AUDIENCE);
    c.drain_timeout = Duration::from_secs(5);
    // The tests' readers and publishers share a few token subjects; the caps have tests of
    // their own (slots.rs).
    c.limits.max_streams_per_subject = 100_000;
    c.limits.max_uploads_per_subject = 100_000;
    // Tests scrape the main listener; off by default (tests/tests/ops.rs checks that).
    c.metrics_public = true;
    c
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(test_config()).await
    }

    pub async fn start_with(config: Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(tailgate::run(listener, config, async {
            let _ = shutdown_rx.await;
        }));
        Self {
            addr,
            shutdown_tx: Some(shutdown_tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the server and waits for its drain; re-raises a panic of the server task.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(res) => res.expect("server returned an error"),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("server task failed: {e}"),
            }
        }
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        http_client::request(self.addr, "GET", path, headers, bytes::Bytes::new()).await
    }

    pub async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<bytes::Bytes>,
    ) -> Reply {
        http_client::request(self.addr, "POST", path, headers, body.into()).await
    }

    /// Publishes `body` as plain text with a publish token for `job`.
    pub async fn publish_text(&self, job: &str, body: impl Into<bytes::Bytes>) -> Reply {
        let auth = bearer(&publish_token(job));
        self.post(
            &format!("/v1/jobs/{job}/logs"),
            &[("authorization", &auth), ("content-type", "text/plain")],
            body,
        )
        .await
    }

    /// Publishes NDJSON records.
    pub async fn publish_ndjson(&self, job: &str, body: impl Into<bytes::Bytes>) -> Reply {
        publish_ndjson(self.addr, job, body).await
    }

    /// Posts a status with a publish token.
    pub async fn set_status(&self, job: &str, status: &str, exit_code: Option<i32>) -> Reply {
        let auth = bearer(&publish_token(job));
        let body = serde_json::json!({ "status": status, "exit_code": exit_code }).to_string();
        self.post(
            &format!("/v1/jobs/{job}/status"),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await
    }

    /// Opens the SSE stream of `job` with a read token and extra headers.
    pub async fn subscribe(&self, job: &str, query: &str, headers: &[(&str, &str)]) -> SseStream {
        let auth = bearer(&read_token(job));
        let mut all = vec![
            ("authorization", auth.as_str()),
            ("accept", "text/event-stream"),
        ];
        all.extend_from_slice(headers);
        let path = format!("/v1/jobs/{job}/logs{query}");
        let reply = http_client::open(self.addr, "GET", &path, &all).await;
        assert_eq!(reply.status().as_u16(), 200, "subscribe {path}");
        SseStream::new(reply.into_body())
    }

    /// Starts a chunked upload that stays open until [`Upload::finish`].
    pub async fn start_upload(&self, job: &str, content_type: &str) -> Upload {
        let auth = bearer(&publish_token(job));
        Upload::start(
            self.addr,
            &format!("/v1/jobs/{job}/logs"),
            &[("authorization", &auth), ("content-type", content_type)],
        )
        .await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(());
        }
    }
}

/// Publishes NDJSON records to `job` on the gateway at `addr` with a publish token: for
/// gateways this process did not start (a spawned binary, another instance).
pub async fn publish_ndjson(addr: SocketAddr, job: &str, body: impl Into<bytes::Bytes>) -> Reply {
    let auth = bearer(&publish_token(job));
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/x-ndjson"),
    ];
    let path = format!("/v1/jobs/{job}/logs");
    http_client::request(addr, "POST", &path, &headers, body.into()).await
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn minter() -> Minter {
    Minter::hmac(SECRET.as_bytes(), Algorithm::HS256).expect("hmac minter")
}

/// A token for `job` that may publish.
pub fn publish_token(job: &str) -> String {
    mint(&job_claims(
        ISSUER,
        AUDIENCE,
        "worker",
        "job_id",
        job,
        Duration::from_secs(600),
        true,
    ))
}

/// A token for `job` that may only read.
pub fn read_token(job: &str) -> String {
    mint(&job_claims(
        ISSUER,
        AUDIENCE,
        "reader",
        "job_id",
        job,
        Duration::from_secs(600),
        false,
    ))
}

/// Signs arbitrary claims with the test secret (HS256).
pub fn mint(claims: &Value) -> String {
    minter().mint(claims).expect("mint")
}

/// The `tailgate` binary built beside the test executable (`target/<profile>/tailgate`),
/// or `TAILGATE_TEST_BIN` (a release build, for a measurement at full scale).
pub fn tailgate_bin() -> std::path::PathBuf {
    if let Some(bin) = std::env::var_os("TAILGATE_TEST_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join(format!("tailgate{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} not built; run `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// Whether `program` runs (`program --version` exits 0).
pub fn have(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether a test that needs real components may run: `true` when `missing` is empty;
/// otherwise it fails under `CI=true` (CI installs them) and is skipped with a message
/// saying what is missing everywhere else.
pub fn components_present(test: &str, missing: &[&str]) -> bool {
    if missing.is_empty() {
        return true;
    }
    let what = missing.join(", ");
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "{test}: CI=true but {what} is missing (.ci/run installs it)"
    );
    eprintln!("skipping {test}: {what} is missing");
    false
}

/// `components_present` for programs on the `PATH`.
pub fn programs_present(test: &str, programs: &[&str]) -> bool {
    let missing: Vec<&str> = programs.iter().copied().filter(|p| !have(p)).collect();
    components_present(test, &missing)
}
