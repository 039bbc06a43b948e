//! `tailgate tail` and `push` at the edges users hit: a gateway that accepts and never
//! answers, TLS that cannot work (an end-entity certificate as `--ca-file`, `https://`
//! against a plain port), tokens inside URLs (never printed), resume points from the URL and
//! flags, and nginx's 502 page in front of a stopped gateway.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tailgate_tests::capgo::{self, capgo_config, capgo_token};
use tailgate_tests::cli::{run, tailgate};
use tailgate_tests::{publish_token, read_token, test_config, TestServer};

const WAIT: Duration = Duration::from_secs(60);

/// A listener that accepts every connection and never reads or writes; the connections
/// stay open until the test ends.
async fn silent_gateway() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tailgate-edges-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn retry_lines(stderr: &str) -> usize {
    stderr.lines().filter(|l| l.contains("retrying in")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_counts_a_silent_gateway_as_failed_attempts_and_honours_give_up_after() {
    let addr = silent_gateway().await;
    let url = format!("http://{addr}/v1/jobs/silent/logs");
    let mut cmd = tailgate(&[
        "tail",
        &url,
        "--give-up-after",
        "2s",
        "--connect-timeout",
        "300ms",
    ]);
    cmd.env("TAILGATE_TOKEN", read_token("silent"));
    let started = Instant::now();
    let done = run(cmd, WAIT).await;
    assert_eq!(done.code, Some(69), "{}", done.stderr);
    assert!(
        retry_lines(&done.stderr) >= 2,
        "one line per failed attempt: {}",
        done.stderr
    );
    assert!(
        done.stderr.contains("sent no answer within 300ms"),
        "{}",
        done.stderr
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // With the default 10 s timeouts, --give-up-after still ends it on time.
    let mut cmd = tailgate(&["tail", &url, "--give-up-after", "1s"]);
    cmd.env("TAILGATE_TOKEN", read_token("silent"));
    let started = Instant::now();
    let done = run(cmd, WAIT).await;
    assert_eq!(done.code, Some(69), "{}", done.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_runs_the_command_at_once_when_the_gateway_is_silent() {
    let addr = silent_gateway().await;
    let base = format!("http://{addr}");
    let mut cmd = tailgate(&[
        "push",
        "--url",
        &base,
        "--job",
        "silent",
        "--connect-timeout",
        "300ms",
        "--flush-timeout",
        "3s",
        "--",
        "sh",
        "-c",
        "echo ran; exit 4",
    ]);
    cmd.env("TAILGATE_TOKEN", publish_token("silent"));
    let started = Instant::now();
    let done = run(cmd, WAIT).await;
    assert_eq!(done.stdout, "ran\n", "the command ran: {}", done.stderr);
    assert_eq!(done.code, Some(4), "the command's code: {}", done.stderr);
    assert!(
        done.stderr.contains("output is buffered"),
        "{}",
        done.stderr
    );
    assert!(
        retry_lines(&done.stderr) >= 2,
        "one line per failed attempt: {}",
        done.stderr
    );
    assert!(
        done.stderr
            .contains("records were not acknowledged in time"),
        "{}",
        done.stderr
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

/// A certificate for `localhost` that signs itself, with `CA:TRUE` as `openssl req -x509`
/// makes it: what people pass as `--ca-file` (rustls: `CaUsedAsEndEntity`).
fn self_signed(dir: &std::path::Path) -> tailgate::config::TlsFiles {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("self-signed");
    let files = tailgate::config::TlsFiles {
        cert: dir.join("self.crt"),
        key: dir.join("self.key"),
    };
    std::fs::write(&files.cert, cert.pem()).expect("write cert");
    std::fs::write(&files.key, key.serialize_pem()).expect("write key");
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_failures_fail_fast_with_a_hint() {
    let dir = temp_dir("tls");
    let files = self_signed(&dir);
    let mut config = test_config();
    config.tls = Some(files.clone());
    let tls_server = TestServer::start_with(config).await;
    let plain = TestServer::start().await;
    let ca = files.cert.display().to_string();
    let marker = dir.join("ran");
    let touch = format!("touch {}", marker.display());

    // The server's own (end-entity) certificate as the CA: never trusted, so not retried.
    let url = format!(
        "https://localhost:{}/v1/jobs/t/logs",
        tls_server.addr.port()
    );
    let mut cmd = tailgate(&["tail", &url, "--ca-file", &ca]);
    cmd.env("TAILGATE_TOKEN", read_token("t"));
    let started = Instant::now();
    let done = run(cmd, WAIT).await;
    assert_eq!(done.code, Some(76), "{}", done.stderr);
    assert!(
        done.stderr
            .contains("pass the CA that issued the server's certificate"),
        "{}",
        done.stderr
    );
    assert_eq!(retry_lines(&done.stderr), 0, "{}", done.stderr);
    let base = format!("https://localhost:{}", tls_server.addr.port());
    let mut cmd = tailgate(&[
        "push",
        "--url",
        &base,
        "--job",
        "t",
        "--ca-file",
        &ca,
        "--",
        "sh",
        "-c",
        &touch,
    ]);
    cmd.env("TAILGATE_TOKEN", publish_token("t"));
    let done = run(cmd, WAIT).await;
    assert_eq!(done.code, Some(76), "{}", done.stderr);
    assert!(done.stderr.contains("pass the CA"), "{}", done.stderr);
    assert!(!marker.exists(), "the command did not run");

    // https:// against a plain-HTTP port.
    let url = format!("https://127.0.0.1:{}/v1/jobs/t/logs", plain.addr.port());
    let mut cmd = tailgate(&["tail", &url]);
    cmd.env("TAILGATE_TOKEN", read_token("t"));
    let done = run(cmd, WAIT).await;
    assert_eq!(done.code, Some(76), "{}", done.stderr);
    assert!(done.stderr.contains("http:// URL"), "{}", done.stderr);
    let base = format!("https://127.0.0.1:{}", plain.addr.port());
    let mut cmd = tailgate(&[
        "push", "--url", &base, "--job", "t", "--", "sh", "-c", &touch,
    ]);
    cmd.env("TAILGATE_TOKEN", publish_token("t"));
    let done = run(cmd, WAIT).await;
    assert_eq!(done.code, Some(76), "{}", done.stderr);
    assert!(!marker.exists(), "the command did not run");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

async fn publish_three(server: &TestServer, job: &str) {
    let body =
        "{\"n\":1,\"line\":\"one\"}\n{\"n\":2,\"line\":\"two\"}\n{\"n\":3,\"line\":\"three\"}\n\
                {\"n\":4,\"status\":\"succeeded\",\"exit_code\":0}\n";
    assert_eq!(server.publish_ndjson(job, body).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_come_from_page_and_query_urls_and_are_never_printed() {
    let server = TestServer::start().await;
    let job = "urls";
    publish_three(&server, job).await;
    let token = read_token(job);
    let page = server.url(&format!("/v1/jobs/{job}/view#token={token}"));
    let done = run(tailgate(&["tail", &page]), WAIT).await;
    assert_eq!(
        (done.code, done.stdout.as_str()),
        (Some(0), "one\ntwo\nthree\n"),
        "{}",
        done.stderr
    );
    let query = server.url(&format!(
        "/v1/jobs/{job}/logs?token={token}&last_event_id=1"
    ));
    let done = run(tailgate(&["tail", &query]), WAIT).await;
    assert_eq!(
        (done.code, done.stdout.as_str()),
        (Some(0), "two\nthree\n"),
        "{}",
        done.stderr
    );

    // Errors quote the URL without the token.
    for bad in [
        format!("{}#token={token}", server.url("/v1/jobs/urls/other")),
        format!("{}?token={token}", server.url("/v1/jobs/a%20b/logs")),
        format!("ftp://h/v1/jobs/urls/logs?token={token}"),
    ] {
        let done = run(tailgate(&["tail", &bad]), WAIT).await;
        assert_eq!(done.code, Some(64), "{bad}: {}", done.stderr);
        assert!(
            !done.stderr.contains(&token),
            "the token was printed: {}",
            done.stderr
        );
    }
    // A token for another job in the URL: refused, and not echoed.
    let other = read_token("other");
    let url = server.url(&format!("/v1/jobs/{job}/logs?token={other}"));
    let done = run(tailgate(&["tail", &url]), WAIT).await;
    assert_eq!(done.code, Some(77), "{}", done.stderr);
    assert!(!done.stderr.contains(&other), "{}", done.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_seq_and_last_event_id_start_later() {
    let server = TestServer::start().await;
    let job = "resume";
    publish_three(&server, job).await;
    let url = server.url(&format!("/v1/jobs/{job}/logs"));
    for (flags, want) in [
        (&["--from-seq", "3"][..], "three\n"),
        (&["--from-seq", "1"][..], "one\ntwo\nthree\n"),
        (&["--last-event-id", "1"][..], "two\nthree\n"),
    ] {
        let mut cmd = tailgate(&["tail", &url]);
        cmd.args(flags).env("TAILGATE_TOKEN", read_token(job));
        let done = run(cmd, WAIT).await;
        assert_eq!(
            (done.code, done.stdout.as_str()),
            (Some(0), want),
            "{flags:?}: {}",
            done.stderr
        );
    }
    // A position the gateway does not know (another life of the job): `event: reset`, and
    // the log from its start, with a line saying so.
    let mut cmd = tailgate(&["tail", &url, "--last-event-id", "99"]);
    cmd.env("TAILGATE_TOKEN", read_token(job));
    let done = run(cmd, WAIT).await;
    assert_eq!(
        (done.code, done.stdout.as_str()),
        (Some(0), "one\ntwo\nthree\n"),
        "{}",
        done.stderr
    );
    assert!(
        done.stderr.contains("starts again from the beginning"),
        "{}",
        done.stderr
    );
    let mut cmd = tailgate(&["tail", &url, "--from-seq", "2", "--last-event-id", "1"]);
    cmd.env("TAILGATE_TOKEN", read_token(job));
    assert_eq!(run(cmd, WAIT).await.code, Some(64), "the two conflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_capgo_stream_url_form_is_followed_over_sse() {
    let server = TestServer::start_with(capgo_config()).await;
    let job = "capgo-form";
    capgo::publish_lines(server.addr, job, ["built".to_string()]).await;
    capgo::publish_status(server.addr, job, "succeeded").await;
    // The WebSocket URL Capgo's CLI opens, followed here over SSE.
    let url = capgo::stream_url(server.addr, "/build_logs_direct", job, &capgo_token(job));
    let done = run(tailgate(&["tail", &url]), WAIT).await;
    assert_eq!(
        (done.code, done.stdout.as_str()),
        (Some(0), "built\n"),
        "{}",
        done.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_ended_otherwise_says_so_on_stderr() {
    let server = TestServer::start().await;
    for status in ["cancelled", "expired", "lost"] {
        let job = format!("ended-{status}");
        assert_eq!(server.set_status(&job, status, None).await.status, 200);
        let mut cmd = tailgate(&["tail", &server.url(&format!("/v1/jobs/{job}/logs"))]);
        cmd.env("TAILGATE_TOKEN", read_token(&job));
        let done = run(cmd, WAIT).await;
        assert_eq!(done.code, Some(1), "{}", done.stderr);
        assert!(
            done.stderr
                .contains(&format!("tailgate: job {job} {status}")),
            "stderr is a pipe here, as in CI: {}",
            done.stderr
        );
    }
}

/// nginx on a free port, proxying to `upstream`; stopped when dropped.
struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nginx_in_front_of(upstream: SocketAddr) -> Option<(Nginx, SocketAddr)> {
    let bin = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    let Some(bin) = bin else {
        tailgate_tests::components_present("nginx_502", &["nginx"]);
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = temp_dir("nginx");
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log stderr crit;\nevents {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n\
         proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
         uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         server {{\n    listen 127.0.0.1:{port};\n\
         location / {{ proxy_pass http://{upstream}; proxy_buffering off; }}\n  }}\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).expect("write nginx.conf");
    let child = std::process::Command::new(bin)
        .args(["-p", &d.to_string(), "-e", "stderr", "-c"])
        .arg(dir.join("nginx.conf"))
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("start nginx");
    Some((Nginx(child), ([127, 0, 0, 1], port).into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_nginx_each_failed_attempt_is_one_line() {
    // An upstream nobody listens on: nginx answers each attempt with its 502 page.
    let upstream = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let Some((_nginx, addr)) = nginx_in_front_of(upstream) else {
        return;
    };
    let started = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(started.elapsed() < WAIT, "nginx did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let url = format!("http://{addr}/v1/jobs/behind/logs");
    let mut cmd = tailgate(&["tail", &url, "--give-up-after", "1500ms"]);
    cmd.env("TAILGATE_TOKEN", read_token("behind"));
    let done = run(cmd, WAIT).await;
    assert_eq!(done.code, Some(69), "{}", done.stderr);
    let lines: Vec<&str> = done.stderr.lines().collect();
    assert!(retry_lines(&done.stderr) >= 2, "{}", done.stderr);
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("tailgate: ") && !l.contains('<')),
        "one tailgate line per attempt, no HTML: {}",
        done.stderr
    );
    assert!(
        lines.iter().any(|l| l.contains("502 Bad Gateway")),
        "{}",
        done.stderr
    );
}
