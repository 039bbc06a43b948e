//! Every long-lived request counts against its token subject's cap, so one token holder
//! cannot take every connection slot: `?wait=`, `/log` downloads and SSE text readers
//! share `--max-streams-per-subject` with SSE and WebSocket readers (abuse.rs), uploads
//! have `--max-uploads-per-subject`. A `429` closes its HTTP/1 connection.
//!
//! Requests that hold a slot are sent together, one more than the cap: exactly one is
//! refused, whichever the server saw last, so no test waits for the others to settle.

use std::time::Duration;

use futures_util::future::select_all;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tailgate::auth::job_claims;
use tailgate_tests::http_client::{self, Reply};
use tailgate_tests::{bearer, mint, test_config, SseStream, Upload, AUDIENCE, ISSUER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

const CAP: usize = 2;
const JOB: &str = "held";

/// A token of subject `sub` for `job`.
fn token(sub: &str, job: &str, publish: bool) -> String {
    let claims = job_claims(
        ISSUER,
        AUDIENCE,
        sub,
        "job_id",
        job,
        Duration::from_secs(600),
        publish,
    );
    bearer(&mint(&claims))
}

fn capped() -> tailgate::Config {
    let mut config = test_config();
    config.limits.max_streams_per_subject = CAP;
    config.limits.max_uploads_per_subject = CAP;
    config
}

/// Asserts a per-subject refusal: `429 over_limit`, JSON, `Retry-After`, and
/// `Connection: close` (HTTP/1).
fn assert_refused(reply: &Reply) {
    assert_eq!(reply.status, 429, "{} bytes", reply.body.len());
    reply.assert_error(429, "over_limit");
    assert!(reply.header("retry-after").is_some());
    assert_eq!(reply.header("connection"), Some("close"));
}

/// The first of `set` to answer, within 30 s.
async fn first_answer(set: &mut JoinSet<Reply>) -> Reply {
    tokio::time::timeout(Duration::from_secs(30), set.join_next())
        .await
        .expect("one request was answered")
        .expect("a request")
        .expect("request task")
}

/// `?wait=300` requests of one subject beyond its cap: one of them is refused at once,
/// while the others and another subject's wait hold until the job ends.
#[tokio::test]
async fn status_waits_count_against_the_subject() {
    let server = tailgate_tests::TestServer::start_with(capped()).await;
    let publisher = token("builder", JOB, true);
    let open = server
        .post(
            &format!("/v1/jobs/{JOB}/logs"),
            &[
                ("authorization", &publisher),
                ("content-type", "text/plain"),
            ],
            "running\n",
        )
        .await;
    assert_eq!(open.status, 200, "{}", open.text());
    let wait = |sub: &'static str| {
        let addr = server.addr;
        async move {
            let auth = token(sub, JOB, false);
            let path = format!("/v1/jobs/{JOB}?wait=300");
            http_client::request(addr, "GET", &path, &[("authorization", &auth)], "".into()).await
        }
    };
    let mut greedy = JoinSet::new();
    for _ in 0..=CAP {
        greedy.spawn(wait("greedy"));
    }
    assert_refused(&first_answer(&mut greedy).await);
    // Another subject still gets in: its wait holds like the greedy ones.
    let mut other = JoinSet::new();
    other.spawn(wait("someone-else"));
    // A wait that claimed its slot answers the job's end, not a refusal.
    let done = server
        .post(
            &format!("/v1/jobs/{JOB}/status"),
            &[
                ("authorization", &publisher),
                ("content-type", "application/json"),
            ],
            r#"{"status":"succeeded","exit_code":0}"#,
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.text());
    for set in [&mut greedy, &mut other] {
        while let Some(reply) = set.join_next().await {
            let reply = reply.expect("wait task");
            assert_eq!(reply.status, 200, "{}", reply.text());
            assert_eq!(reply.json()["status"], "succeeded");
        }
    }
    // The places were freed: a new wait of the greedy subject gets in (and answers at once).
    let again = wait("greedy").await;
    assert_eq!(again.status, 200, "{}", again.text());
}

/// `/log` downloads that are not read hold their places (the log is larger than the
/// socket buffers); with the cap held, the next download and an SSE text reader of the
/// same subject are refused, another subject's download is whole.
#[tokio::test]
async fn unread_log_downloads_and_text_readers_count_against_the_subject() {
    let mut config = capped();
    // The whole log in memory (without a spool, records evicted from memory are gone).
    config.limits.job_memory_bytes = 64 << 20;
    let server = tailgate_tests::TestServer::start_with(config).await;
    let publisher = token("builder", JOB, true);
    let line = format!("{}\n", "x".repeat(1023));
    let chunk = line.repeat(1024);
    for _ in 0..40 {
        let reply = server
            .post(
                &format!("/v1/jobs/{JOB}/logs"),
                &[
                    ("authorization", &publisher),
                    ("content-type", "text/plain"),
                ],
                chunk.clone(),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let whole = 40 * chunk.len();
    let greedy = token("greedy", JOB, false);
    let path = format!("/v1/jobs/{JOB}/log");
    let mut held = Vec::new();
    for _ in 0..CAP {
        let resp =
            http_client::open(server.addr, "GET", &path, &[("authorization", &greedy)]).await;
        assert_eq!(resp.status(), 200);
        held.push(resp); // not read: 40 MB do not fit the socket buffers
    }
    let refused = server.get(&path, &[("authorization", &greedy)]).await;
    assert_refused(&refused);
    let text = server
        .get(
            &format!("/v1/jobs/{JOB}/logs?format=text"),
            &[("authorization", &greedy)],
        )
        .await;
    assert_refused(&text);
    let other = server
        .get(
            &path,
            &[("authorization", &token("someone-else", JOB, false))],
        )
        .await;
    assert_eq!(other.status, 200);
    assert_eq!(other.body.len(), whole);
    // Reading a held download to its end frees its place.
    let body = held.pop().expect("held").into_body();
    assert_eq!(body.collect().await.expect("body").to_bytes().len(), whole);
    let mut freed = None;
    for _ in 0..100 {
        let reply = server.get(&path, &[("authorization", &greedy)]).await;
        if reply.status == 200 {
            freed = Some(reply);
            break;
        }
        // The server frees the place when hyper drops the finished body, just after
        // the last byte reached this client.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(freed.expect("a place was freed").body.len(), whole);
}

/// Uploads of one subject beyond `--max-uploads-per-subject`: one is refused before its
/// body is read; another subject's upload goes through; the reads of the same subject
/// have a cap of their own.
#[tokio::test]
async fn uploads_count_against_their_own_cap() {
    let server = tailgate_tests::TestServer::start_with(capped()).await;
    let greedy = token("builder", JOB, true);
    let path = format!("/v1/jobs/{JOB}/logs");
    let headers = [
        ("authorization", greedy.as_str()),
        ("content-type", "text/plain"),
    ];
    // One more upload than the cap, with no body sent yet: one is refused at once.
    let mut uploads = Vec::new();
    for _ in 0..=CAP {
        uploads.push(Upload::start(server.addr, &path, &headers).await);
    }
    let answers = uploads.iter_mut().map(|u| Box::pin(u.early_reply()));
    let (refused, at, _) = tokio::time::timeout(Duration::from_secs(30), select_all(answers))
        .await
        .expect("one upload was answered");
    assert_refused(&refused);
    drop(uploads.remove(at));
    // The same subject's reads are not held back by its uploads.
    let reader = http_client::open(server.addr, "GET", &path, &[("authorization", &greedy)]).await;
    assert_eq!(reader.status(), 200);
    let mut reader = SseStream::new(reader.into_body());
    // Another subject's upload is not held back either.
    let other = server
        .post(
            &path,
            &[
                ("authorization", &token("other-builder", JOB, true)),
                ("content-type", "text/plain"),
            ],
            "from another builder\n",
        )
        .await;
    assert_eq!(other.status, 200, "{}", other.text());
    assert_eq!(other.json()["accepted"], 1);
    let first = reader.next_within(Duration::from_secs(10)).await;
    assert_eq!(
        first.expect("the other builder's line").json()["line"],
        "from another builder"
    );
    // The admitted uploads take their bodies.
    for upload in uploads {
        upload.send("admitted\n").await;
        let reply = upload.finish().await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.json()["accepted"], 1);
    }
}

/// A `429` answered on an HTTP/1.1 keep-alive connection closes it; on HTTP/2 the refused
/// stream ends and the connection serves the next request.
#[tokio::test]
async fn a_refusal_closes_its_http1_connection_not_an_http2_one() {
    let mut config = test_config();
    config.limits.max_streams_per_subject = 1;
    let server = tailgate_tests::TestServer::start_with(config).await;
    let greedy = token("greedy", JOB, false);
    let path = format!("/v1/jobs/{JOB}/logs");
    let held = http_client::open(server.addr, "GET", &path, &[("authorization", &greedy)]).await;
    assert_eq!(held.status(), 200);

    let mut tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let head = format!("GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: {greedy}\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    // Ends only if the gateway closes the connection.
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .expect("the connection was closed after the 429")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(answer.starts_with("http/1.1 429"), "{answer}");
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    assert!(answer.contains(r#""error":"over_limit""#), "{answer}");

    // HTTP/2 (h2c): the refused stream ends; the connection goes on.
    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2c handshake");
    tokio::spawn(conn);
    let request = |path: &str| {
        http::Request::get(format!("http://{}{path}", server.addr))
            .header("authorization", &greedy)
            .body(Empty::<bytes::Bytes>::new())
            .expect("request")
    };
    let refused = h2.send_request(request(&path)).await.expect("h2 request");
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().get("connection").is_none());
    let next = h2
        .send_request(request(&format!("/v1/jobs/{JOB}")))
        .await
        .expect("the connection serves the next request");
    assert_eq!(next.status(), 200);
}
