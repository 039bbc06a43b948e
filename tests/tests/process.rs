//! The real binary: `serve --dev` prints working commands; SIGTERM drains with streams open.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tailgate_tests::{http_client, SseStream};

/// Starts `tailgate serve` on an ephemeral port; returns the child, its address and stdout.
fn start(args: &[&str]) -> (Child, std::net::SocketAddr, Vec<String>) {
    // Each process its own data directory: one gateway per directory.
    static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let data = std::env::temp_dir().join(format!("tailgate-process-{}-{n}", std::process::id()));
    let mut child = Command::new(tailgate_tests::tailgate_bin())
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .env("TAILGATE_DATA_DIR", &data)
        .args(args)
        .env("TAILGATE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn tailgate");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut lines = Vec::new();
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(
            out.read_line(&mut line).expect("read stdout") > 0,
            "tailgate exited early"
        );
        lines.push(line.trim_end().to_string());
        if let Some(rest) = line.trim().strip_prefix("tailgate listening on http://") {
            break rest.parse().expect("address");
        }
    };
    // Keep reading stdout in the background so the banner is captured and the pipe drains.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in out.lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    lines.extend(rx.try_iter());
    (child, addr, lines)
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test]
async fn sigterm_completes_within_seconds_with_streams_open() {
    let (mut child, addr, _) = start(&[
        "--jwt-secret",
        tailgate_tests::SECRET,
        "--jwt-issuer",
        tailgate_tests::ISSUER,
        "--jwt-audience",
        tailgate_tests::AUDIENCE,
        "--drain-timeout-secs",
        "10",
    ]);
    let token = tailgate_tests::read_token("open");
    let mut streams = Vec::new();
    for _ in 0..20 {
        let resp = http_client::open(
            addr,
            "GET",
            "/v1/jobs/open/logs",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!(resp.status(), 200);
        let mut sse = SseStream::new(resp.into_body());
        sse.wait_comments(1).await;
        streams.push(sse);
    }
    let started = Instant::now();
    sigterm(&child);
    for sse in &mut streams {
        let end = tokio::time::timeout(Duration::from_secs(5), sse.next())
            .await
            .expect("stream ended on shutdown");
        assert!(end.is_none());
    }
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "drained in {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn dev_mode_prints_commands_that_work() {
    let (mut child, addr, lines) = start(&["--dev"]);
    let banner = lines.join("\n");
    let tokens: Vec<&str> = banner
        .split("Bearer ")
        .skip(1)
        .map(|s| s.split('\'').next().unwrap())
        .collect();
    assert_eq!(tokens.len(), 3, "{banner}");
    assert!(banner.contains(&format!("http://{addr}/v1/jobs/demo/logs")));
    let reply = http_client::request(
        addr,
        "POST",
        "/v1/jobs/demo/logs",
        &[
            ("authorization", &format!("Bearer {}", tokens[1])),
            ("content-type", "text/plain"),
        ],
        "hello\n".into(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = http_client::request(
        addr,
        "GET",
        "/v1/jobs/demo/log",
        &[("authorization", &format!("Bearer {}", tokens[0]))],
        Default::default(),
    )
    .await;
    assert_eq!(reply.text(), "hello\n");
    // The page to open in a browser, with the read token in its fragment.
    let view = format!("http://{addr}/v1/jobs/demo/view#token={}", tokens[0]);
    assert!(banner.lines().any(|l| l == view), "{banner}");
    let page =
        http_client::request(addr, "GET", "/v1/jobs/demo/view", &[], Default::default()).await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("view/page.js"), "{}", page.text());
    sigterm(&child);
    assert!(child.wait().unwrap().success());
}
