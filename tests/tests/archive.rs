//! The archive (`--archive-url`) against a real S3-compatible server (SeaweedFS, started
//! on free loopback ports): byte-identical reads after archiving, a resume that is one
//! ranged GET, kill -9 mid-upload, the server stopped and started again, a damaged
//! object, and 410 once the bucket's lifecycle deleted the object.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tailgate_tests::daemon::{test_args, Daemon, TempDir};
use tailgate_tests::http_client::{self, Reply};
use tailgate_tests::proxy::{Budget, Proxy};
use tailgate_tests::s3::{self, S3Server};
use tailgate_tests::{bearer, publish_ndjson, read_token};

pub(crate) const PREFIX: &str = "it";

/// Starts a gateway on `data` archiving to `endpoint`.
fn gateway(data: &TempDir, endpoint: &str, s3: &S3Server, extra: &[&str]) -> Daemon {
    let dir = data.path().display().to_string();
    archiving(&["--data-dir", &dir], endpoint, s3, extra)
}

/// Starts a gateway on the store `store` names (a data dir, or Redis) archiving to
/// `endpoint`.
pub(crate) fn archiving(store: &[&str], endpoint: &str, s3: &S3Server, extra: &[&str]) -> Daemon {
    let mut args = test_args();
    args.extend(store.iter().map(|s| s.to_string()));
    for a in [
        "--archive-url",
        &format!("s3://{}/{PREFIX}", s3::BUCKET),
        "--archive-endpoint",
        endpoint,
    ] {
        args.push(a.to_string());
    }
    if !extra.contains(&"--archive-quiet-secs") {
        args.extend(["--archive-quiet-secs".to_string(), "1".to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Daemon::try_start_with_env(&args, &env).unwrap_or_else(|(code, err)| {
        panic!("tailgate exited early: {code:?}: {err}");
    })
}

/// The test's own client of the bucket, to look at and damage objects.
pub(crate) fn bucket(s3: &S3Server) -> Arc<dyn ObjectStore> {
    Arc::new(bucket_builder(s3).build().expect("s3 client"))
}

/// The settings of the test's clients of the bucket, for a client that adds its own.
pub(crate) fn bucket_builder(s3: &S3Server) -> AmazonS3Builder {
    // reqwest's rustls without a built-in provider, as in the gateway.
    let _ = rustls::crypto::ring::default_provider().install_default();
    AmazonS3Builder::new()
        .with_bucket_name(s3::BUCKET)
        .with_endpoint(s3.endpoint())
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id(s3::ACCESS_KEY)
        .with_secret_access_key(s3::SECRET_KEY)
}

pub(crate) fn object(job: &str) -> ObjectPath {
    ObjectPath::from(format!("{PREFIX}/{job}.tglog"))
}

/// A build of `lines` varied lines (ANSI colour, progress CRs, stderr), then `failed`.
pub(crate) async fn build(addr: SocketAddr, job: &str, lines: u64) {
    let records = (1..=lines).map(|n| {
        let stream = if n % 5 == 0 { "stderr" } else { "stdout" };
        let line = format!(
            "\\u001b[32m   Compiling\\u001b[0m crate-{} v0.{}.{} ({n}) \\r{}%",
            n % 97,
            n % 7,
            n % 13,
            n % 100
        );
        format!("{{\"n\":{n},\"line\":\"{line}\",\"stream\":\"{stream}\"}}\n")
    });
    let status = format!(
        "{{\"n\":{},\"status\":\"failed\",\"exit_code\":3}}\n",
        lines + 1
    );
    publish_records(addr, job, records.chain([status])).await;
}

/// Publishes NDJSON `records` (each ending in a newline) to `job` in uploads of about
/// 512 KiB, each answered 200.
pub(crate) async fn publish_records(
    addr: SocketAddr,
    job: &str,
    records: impl IntoIterator<Item = String>,
) {
    let mut body = String::new();
    for record in records {
        body.push_str(&record);
        if body.len() > 512 * 1024 {
            let reply = publish_ndjson(addr, job, std::mem::take(&mut body)).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
    }
    if !body.is_empty() {
        let reply = publish_ndjson(addr, job, body).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
}

pub(crate) async fn get(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> Reply {
    let job = path.split('/').nth(3).unwrap_or_default();
    let auth = bearer(&read_token(job));
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend_from_slice(extra);
    http_client::request(addr, "GET", path, &headers, Default::default()).await
}

/// The job's whole SSE body (the stream ends after the final status), from `last`.
pub(crate) async fn sse(addr: SocketAddr, job: &str, last: Option<u64>) -> Reply {
    let last = last.map(|l| l.to_string());
    let mut headers = vec![("accept", "text/event-stream")];
    if let Some(last) = &last {
        headers.push(("last-event-id", last.as_str()));
    }
    let reply = get(addr, &format!("/v1/jobs/{job}/logs"), &headers).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply
}

pub(crate) fn spool_exists(data: &Path, job: &str) -> bool {
    std::fs::read_dir(data.join("jobs"))
        .map(|dir| {
            dir.filter_map(Result::ok).any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{job}."))
            })
        })
        .unwrap_or(false)
}

/// Waits until `cond` holds (each check is an S3 or file-system look), at most `secs`.
pub(crate) async fn until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn object_exists(store: &Arc<dyn ObjectStore>, job: &str) -> bool {
    store.head(&object(job)).await.is_ok()
}

pub(crate) async fn until_archived(
    store: &Arc<dyn ObjectStore>,
    data: &Path,
    job: &str,
    secs: u64,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while spool_exists(data, job) || !object_exists(store, job).await {
        assert!(
            Instant::now() < deadline,
            "{job} was not archived in {secs}s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Everything a reader sees of the job, minus the reader count.
pub(crate) async fn views(addr: SocketAddr, job: &str, middle: u64) -> Vec<(String, bytes::Bytes)> {
    let mut out = Vec::new();
    out.push(("sse".into(), sse(addr, job, None).await.body));
    out.push(("resume".into(), sse(addr, job, Some(middle)).await.body));
    let text = get(addr, &format!("/v1/jobs/{job}/logs?format=text"), &[]).await;
    out.push(("sse text".into(), text.body));
    let log = get(addr, &format!("/v1/jobs/{job}/log"), &[]).await;
    assert_eq!(log.status, 200);
    out.push(("log".into(), log.body));
    let tail = get(addr, &format!("/v1/jobs/{job}/log?tail_bytes=5000"), &[]).await;
    out.push(("tail".into(), tail.body));
    let mut status = get(addr, &format!("/v1/jobs/{job}?wait=5"), &[])
        .await
        .json();
    status.as_object_mut().map(|o| o.remove("subscribers"));
    out.push(("status".into(), status.to_string().into()));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archived_job_reads_byte_identical_on_every_route_and_its_spool_is_gone() {
    if !s3::available("archive::byte_identical") {
        return;
    }
    let s3 = S3Server::start();
    let store = bucket(&s3);
    let data = TempDir::new("archive-identical");
    let mut gw = gateway(&data, &s3.endpoint(), &s3, &["--archive-quiet-secs", "5"]);
    build(gw.addr, "ident", 30_000).await;
    let live = views(gw.addr, "ident", 12_345).await;
    until_archived(&store, data.path(), "ident", 60).await;
    // A restart forgets the memory copy: everything now comes from the object.
    gw.kill9();
    let gw = gateway(&data, &s3.endpoint(), &s3, &[]);
    let archived = views(gw.addr, "ident", 12_345).await;
    for ((what, live), (_, archived)) in live.iter().zip(&archived) {
        assert!(
            live == archived,
            "{what} differs after archiving ({} vs {} bytes)",
            live.len(),
            archived.len()
        );
    }
    // Small: compressed frames of the log.
    let size = store.head(&object("ident")).await.expect("head").size;
    let log_bytes = live[3].1.len() as u64;
    assert!(
        size * 5 < log_bytes,
        "object {size} bytes for a {log_bytes}-byte log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_from_the_middle_is_one_ranged_get() {
    if !s3::available("archive::one_ranged_get") {
        return;
    }
    let s3 = S3Server::start();
    let store = bucket(&s3);
    let data = TempDir::new("archive-range");
    let mut gw = gateway(&data, &s3.endpoint(), &s3, &[]);
    // Several 1 MiB frames of records.
    build(gw.addr, "ranged", 40_000).await;
    until_archived(&store, data.path(), "ranged", 60).await;
    gw.kill9();
    let gw = gateway(&data, &s3.endpoint(), &s3, &[]);
    // The status loads the job: its index, one GET from the object's end.
    let before = s3.requests("GET");
    let status = get(gw.addr, "/v1/jobs/ranged", &[]).await.json();
    assert_eq!(status["status"], "failed");
    assert_eq!(
        s3.requests_since("GET", before, 1).await,
        1,
        "the index is one GET"
    );
    // A resume near the end reads the one frame holding it.
    let before = s3.requests("GET");
    let body = sse(gw.addr, "ranged", Some(39_990)).await.text();
    assert!(body.contains("\"seq\":39991,") && body.contains("event: status"));
    assert!(!body.contains("\"seq\":39990,"));
    assert_eq!(
        s3.requests_since("GET", before, 1).await,
        1,
        "a resume is one ranged GET"
    );
    // Again: the frame is cached.
    let before = s3.requests("GET");
    sse(gw.addr, "ranged", Some(39_995)).await;
    assert_eq!(
        s3.requests_since("GET", before, 0).await,
        0,
        "a cached frame costs no GET"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_upload_is_redone_on_restart_once_and_whole() {
    if !s3::available("archive::kill_9") {
        return;
    }
    let s3 = S3Server::start();
    let store = bucket(&s3);
    let data = TempDir::new("archive-kill");
    // Every connection to S3 is cut after 64 KiB up: each upload of the object breaks
    // in the middle, and is retried, until the gateway is killed.
    let target: SocketAddr = format!("127.0.0.1:{}", s3.port).parse().expect("addr");
    let proxy = Proxy::start(
        target,
        Budget {
            up: Some(64 * 1024),
            down: None,
        },
    )
    .await;
    let mut gw = gateway(&data, &format!("http://{}", proxy.addr), &s3, &[]);
    build(gw.addr, "killed", 60_000).await;
    until(60, "an upload broke mid-way", || proxy.broken() > 0).await;
    gw.kill9();
    assert!(
        !object_exists(&store, "killed").await,
        "no half-written object"
    );
    assert!(spool_exists(data.path(), "killed"), "the job stayed local");
    let live = {
        let gw = gateway(
            &data,
            "http://127.0.0.1:9",
            &s3,
            &["--archive-quiet-secs", "600"],
        );
        let body = sse(gw.addr, "killed", None).await.body;
        drop(gw);
        body
    };
    // Restarted with a working path to S3: the upload is redone, whole.
    let gw = gateway(&data, &s3.endpoint(), &s3, &[]);
    until_archived(&store, data.path(), "killed", 60).await;
    let listed = store.list(Some(&ObjectPath::from(PREFIX)));
    let count = futures_util::StreamExt::count(listed).await;
    assert_eq!(count, 1);
    drop(gw);
    let gw = gateway(&data, &s3.endpoint(), &s3, &[]);
    assert!(sse(gw.addr, "killed", None).await.body == live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_s3_down_jobs_stay_local_and_ready_then_archive_when_it_returns() {
    if !s3::available("archive::s3_down") {
        return;
    }
    let mut s3 = S3Server::start();
    let data = TempDir::new("archive-down");
    let gw = gateway(&data, &s3.endpoint(), &s3, &[]);
    s3.stop();
    build(gw.addr, "patient", 2_000).await;
    let live = sse(gw.addr, "patient", None).await.body;
    // Past the quiet period and a few retries: still local, still ready.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(spool_exists(data.path(), "patient"));
    let ready = http_client::request(gw.addr, "GET", "/readyz", &[], Default::default()).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert!(sse(gw.addr, "patient", None).await.body == live);
    s3.restart();
    let store = bucket(&s3);
    until_archived(&store, data.path(), "patient", 90).await;
    assert!(sse(gw.addr, "patient", None).await.body == live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_object_answers_410_and_a_damaged_one_an_error_event() {
    if !s3::available("archive::deleted") {
        return;
    }
    let s3 = S3Server::start();
    let store = bucket(&s3);
    let data = TempDir::new("archive-deleted");
    let mut gw = gateway(&data, &s3.endpoint(), &s3, &[]);
    build(gw.addr, "gone", 500).await;
    build(gw.addr, "damaged", 500).await;
    build(gw.addr, "fine", 500).await;
    for job in ["gone", "damaged", "fine"] {
        until_archived(&store, data.path(), job, 60).await;
    }
    // The bucket's lifecycle deletes one; another is damaged in its frames.
    store.delete(&object("gone")).await.expect("delete");
    let mut bytes = store
        .get(&object("damaged"))
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes")
        .to_vec();
    bytes[20] ^= 0xff;
    store
        .put(&object("damaged"), PutPayload::from(bytes))
        .await
        .expect("put");
    gw.kill9();
    let gw = gateway(&data, &s3.endpoint(), &s3, &[]);
    get(gw.addr, "/v1/jobs/gone", &[])
        .await
        .assert_error(410, "job_expired");
    let body = sse(gw.addr, "damaged", None).await.text();
    assert!(body.contains("event: error"), "{body}");
    assert!(body.contains("damaged"), "{body}");
    // Other jobs are untouched.
    let fine = sse(gw.addr, "fine", None).await.text();
    assert!(
        fine.contains("\"seq\":501,") && fine.contains("event: status"),
        "{fine}"
    );
}
