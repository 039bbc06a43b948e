//! HTTPS: SSE over HTTP/1.1 (the socket path) and HTTP/2, publishing over TLS, a
//! certificate reloaded on SIGHUP while a stream stays open, a bad pair refused at start,
//! and `tailgate tail`/`push` trusting a private CA with `--ca-file`.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::Version as HttpVersion;
use tailgate_tests::cli;
use tailgate_tests::gateway::Gateway;
use tailgate_tests::tls::{self, TestPki, Version};
use tailgate_tests::{
    bearer, publish_token, read_token, test_config, SseStream, TestServer, AUDIENCE, ISSUER, SECRET,
};

const WAIT: Duration = Duration::from_secs(10);

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tailgate-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

async fn subscribe(pki: &TestPki, addr: std::net::SocketAddr, job: &str, v: Version) -> SseStream {
    let auth = bearer(&read_token(job));
    let path = format!("/v1/jobs/{job}/logs");
    let req = tls::request(
        v,
        "GET",
        addr,
        &path,
        &[("authorization", &auth)],
        Bytes::new(),
    );
    let resp = tls::send(pki, addr, v, req).await;
    assert_eq!(resp.status(), 200);
    let want = match v {
        Version::Http1 => HttpVersion::HTTP_11,
        Version::Http2 => HttpVersion::HTTP_2,
    };
    assert_eq!(resp.version(), want);
    let mut sse = SseStream::new(resp.into_body());
    sse.wait_comments(1).await;
    sse
}

async fn publish(pki: &TestPki, addr: std::net::SocketAddr, job: &str, v: Version, body: &str) {
    let auth = bearer(&publish_token(job));
    let path = format!("/v1/jobs/{job}/logs");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "text/plain"),
    ];
    let req = tls::request(v, "POST", addr, &path, &headers, body.to_string());
    let reply = tls::reply(tls::send(pki, addr, v, req).await).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test]
async fn sse_over_https_with_http1_and_http2_and_publish_over_tls() {
    let pki = TestPki::new(&temp_dir("sse"), "a");
    let mut config = test_config();
    config.tls = Some(pki.files.clone());
    let server = TestServer::start_with(config).await;
    let addr = server.addr;

    let mut h1 = subscribe(&pki, addr, "tls-job", Version::Http1).await;
    let mut h2 = subscribe(&pki, addr, "tls-job", Version::Http2).await;
    publish(&pki, addr, "tls-job", Version::Http2, "over h2\n").await;
    publish(&pki, addr, "tls-job", Version::Http1, "over h1\n").await;
    for sse in [&mut h1, &mut h2] {
        for want in ["over h2", "over h1"] {
            let e = sse.next_within(WAIT).await.expect("event");
            assert_eq!(
                (e.event.as_str(), e.json()["line"].as_str()),
                ("log", Some(want))
            );
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn sighup_reloads_the_certificate_while_a_stream_stays_open() {
    let dir = temp_dir("reload");
    let old = TestPki::new(&dir, "old");
    let new = TestPki::new(&dir, "new");
    let live = tailgate::config::TlsFiles {
        cert: dir.join("live.crt"),
        key: dir.join("live.key"),
    };
    old.install_over(&live);
    let cert = live.cert.display().to_string();
    let key = live.key.display().to_string();
    let mut gw = Gateway::start(
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--jwt-secret",
            SECRET,
            "--jwt-issuer",
            ISSUER,
            "--jwt-audience",
            AUDIENCE,
        ],
        &[],
    )
    .await;
    let addr = gw.addr;
    let mut open = subscribe(&old, addr, "rotating", Version::Http1).await;

    new.install_over(&live);
    gw.signal("HUP");
    gw.wait_log("certificate reloaded", WAIT).await;
    // New handshakes get the new certificate; the old CA no longer verifies it.
    assert!(probe(&new, addr).await.is_ok());
    assert!(
        probe(&old, addr).await.is_err(),
        "old certificate still served"
    );

    // The stream opened before the reload still flows.
    publish(&new, addr, "rotating", Version::Http2, "after reload\n").await;
    let e = open
        .next_within(WAIT)
        .await
        .expect("event on the old connection");
    assert_eq!(e.json()["line"], "after reload");

    // A bad pair is logged and the current one kept.
    std::fs::write(&live.key, "not a key").expect("break key");
    gw.signal("HUP");
    gw.wait_log("certificate reload failed", WAIT).await;
    assert!(
        probe(&new, addr).await.is_ok(),
        "the good pair stays after a bad reload"
    );

    assert_eq!(gw.stop(WAIT).await, Some(0));
}

async fn probe(pki: &TestPki, addr: std::net::SocketAddr) -> Result<(), String> {
    let req = tls::request(Version::Http1, "GET", addr, "/healthz", &[], Bytes::new());
    tls::try_send(pki, addr, Version::Http1, req)
        .await
        .map(drop)
}

#[tokio::test]
async fn a_bad_pair_is_a_config_error_naming_the_flag() {
    let dir = temp_dir("bad");
    let a = TestPki::new(&dir, "a");
    let b = TestPki::new(&dir, "b");
    let base = [
        "--jwt-secret",
        SECRET,
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        AUDIENCE,
    ];
    let cert = a.files.cert.display().to_string();
    let key_b = b.files.key.display().to_string();
    let missing = dir.join("missing.pem").display().to_string();
    for (args, flag) in [
        (
            vec!["--tls-cert", cert.as_str(), "--tls-key", key_b.as_str()],
            "tls-key",
        ),
        (
            vec!["--tls-cert", missing.as_str(), "--tls-key", key_b.as_str()],
            "tls-cert",
        ),
        (vec!["--tls-cert", cert.as_str()], "tls-key"),
    ] {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0", "--memory-only"];
        all.extend_from_slice(&base);
        all.extend(args.iter().copied());
        let done = cli::run(cli::tailgate(&all), WAIT).await;
        assert_eq!(done.code, Some(64), "{args:?}: {}", done.stderr);
        assert!(
            done.stderr.contains(&format!("config {flag}")),
            "{args:?}: {}",
            done.stderr
        );
    }
}

#[tokio::test]
async fn tail_and_push_trust_a_private_ca_with_ca_file() {
    let pki = TestPki::new(&temp_dir("cli"), "cli");
    let mut config = test_config();
    config.tls = Some(pki.files.clone());
    let server = TestServer::start_with(config).await;
    let base = format!("https://localhost:{}", server.addr.port());
    let ca = pki.ca_file.display().to_string();

    let mut push = cli::tailgate(&[
        "push",
        "--url",
        &base,
        "--job",
        "cli-tls",
        "--ca-file",
        &ca,
        "--status",
        "succeeded",
    ]);
    push.env("TAILGATE_TOKEN", publish_token("cli-tls"))
        .stdin(std::process::Stdio::piped());
    let mut child = push.spawn().expect("spawn push");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().expect("stdin");
        // A push that failed early has closed its stdin: its stderr says why, below.
        let _ = stdin.write_all(b"built over https\n").await;
    }
    let pushed = cli::wait(child, WAIT).await;
    assert_eq!(pushed.code, Some(0), "{}", pushed.stderr);

    let logs = format!("{base}/v1/jobs/cli-tls/logs");
    let mut tail = cli::tailgate(&["tail", "--ca-file", &ca, &logs]);
    tail.env("TAILGATE_TOKEN", read_token("cli-tls"));
    let tailed = cli::run(tail, WAIT).await;
    assert_eq!(tailed.code, Some(0), "{}", tailed.stderr);
    assert_eq!(tailed.stdout, "built over https\n");

    // Without the CA the certificate is not trusted.
    let mut untrusted = cli::tailgate(&["tail", "--no-follow", "--timeout", "1s", &logs]);
    untrusted.env("TAILGATE_TOKEN", read_token("cli-tls"));
    let refused = cli::run(untrusted, WAIT).await;
    assert_ne!(refused.code, Some(0), "{}", refused.stdout);
    server.stop().await;
}
