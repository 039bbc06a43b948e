//! `tailgate tail` as a real process against a real gateway: streams, exit codes, resume
//! across broken connections (through a proxy that cuts them), and its output options.

use std::time::Duration;

use tailgate_tests::cli::{run, tailgate, Running};
use tailgate_tests::proxy::{Budget, Proxy};
use tailgate_tests::{read_token, TestServer};

const WAIT: Duration = Duration::from_secs(30);

fn tail_cmd(url: &str, job: &str, extra: &[&str]) -> tokio::process::Command {
    let mut cmd = tailgate(&["tail", url]);
    cmd.args(extra).env("TAILGATE_TOKEN", read_token(job));
    cmd
}

/// Publishes lines `from..=to` of `job` as NDJSON (`n` = line number).
async fn publish_lines(server: &TestServer, job: &str, from: u32, to: u32) {
    let body: String = (from..=to)
        .map(|i| format!("{{\"n\":{i},\"line\":\"line {i} {}\"}}\n", "x".repeat(40)))
        .collect();
    let reply = server.publish_ndjson(job, body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

fn expected(from: u32, to: u32) -> Vec<String> {
    (from..=to)
        .map(|i| format!("line {i} {}", "x".repeat(40)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_once_across_connections_cut_mid_event() {
    let server = TestServer::start().await;
    // Each connection carries at most 700 bytes to tail: it breaks every few events, at
    // arbitrary points inside them. tail asks for zstd, and a burst of these lines is one
    // small chunk: 300 lines make enough bytes to break it often.
    let proxy = Proxy::start(
        server.addr,
        Budget {
            up: None,
            down: Some(700),
        },
    )
    .await;
    let job = "cut-mid-event";
    let tail = Running::spawn(tail_cmd(
        &proxy.url(&format!("/v1/jobs/{job}/logs")),
        job,
        &[],
    ));
    for batch in 0..30 {
        publish_lines(&server, job, batch * 10 + 1, batch * 10 + 10).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        server.set_status(job, "succeeded", Some(0)).await.status,
        200
    );
    let done = tail.finish(WAIT).await;
    assert_eq!(done.code, Some(0), "stderr: {}", done.stderr);
    let lines: Vec<&str> = done.stdout.lines().collect();
    assert_eq!(lines, expected(1, 300), "each line exactly once, in order");
    assert!(
        proxy.broken() >= 5,
        "the proxy broke only {} connections",
        proxy.broken()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_after_every_connection_is_dropped() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.addr, Budget::default()).await;
    let job = "cut-all";
    let mut tail = Running::spawn(tail_cmd(
        &proxy.url(&format!("/v1/jobs/{job}/logs")),
        job,
        &[],
    ));
    publish_lines(&server, job, 1, 20).await;
    tail.lines_until(20, WAIT).await;
    proxy.cut();
    publish_lines(&server, job, 21, 40).await;
    tail.lines_until(40, WAIT).await;
    proxy.cut();
    proxy.cut();
    publish_lines(&server, job, 41, 60).await;
    assert_eq!(server.set_status(job, "failed", Some(5)).await.status, 200);
    let done = tail.finish(WAIT).await;
    assert_eq!(
        done.code,
        Some(5),
        "a failed job's exit code; stderr: {}",
        done.stderr
    );
    assert_eq!(done.stdout.lines().collect::<Vec<_>>(), expected(1, 60));
    assert!(proxy.accepted() >= 2, "tail reconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_follow_the_terminal_status() {
    let server = TestServer::start().await;
    for (job, status, code, want) in [
        ("ok", "succeeded", Some(0), 0),
        ("f-none", "failed", None, 1),
        ("f-9", "failed", Some(9), 9),
        ("cancel", "cancelled", Some(0), 1),
        ("gone", "lost", None, 1),
    ] {
        publish_lines(&server, job, 1, 2).await;
        assert_eq!(server.set_status(job, status, code).await.status, 200);
        let done = run(
            tail_cmd(&server.url(&format!("/v1/jobs/{job}/logs")), job, &[]),
            WAIT,
        )
        .await;
        assert_eq!(done.code, Some(want), "{status} {code:?}: {}", done.stderr);
        assert_eq!(done.stdout.lines().count(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_follow_prints_the_log_so_far_and_exits_0() {
    let server = TestServer::start().await;
    let job = "running";
    publish_lines(&server, job, 1, 3).await;
    let url = server.url(&format!("/v1/jobs/{job}/logs"));
    let done = run(tail_cmd(&url, job, &["--no-follow"]), WAIT).await;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert_eq!(done.stdout.lines().collect::<Vec<_>>(), expected(1, 3));
    let empty = run(
        tail_cmd(
            &server.url("/v1/jobs/empty/logs"),
            "empty",
            &["--no-follow"],
        ),
        WAIT,
    )
    .await;
    assert_eq!((empty.code, empty.stdout.as_str()), (Some(0), ""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_bounds_the_wait() {
    let server = TestServer::start().await;
    let job = "never-ends";
    publish_lines(&server, job, 1, 1).await;
    let url = server.url(&format!("/v1/jobs/{job}/logs"));
    let started = std::time::Instant::now();
    let done = run(tail_cmd(&url, job, &["--timeout", "1s"]), WAIT).await;
    assert_eq!(done.code, Some(75), "{}", done.stderr);
    assert_eq!(done.stdout.lines().count(), 1);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_exits_77_with_the_gateway_message() {
    let server = TestServer::start().await;
    let url = server.url("/v1/jobs/mine/logs");
    let mut cmd = tailgate(&["tail", &url, "--token", &read_token("someone-elses")]);
    cmd.env("TAILGATE_TOKEN", "ignored-when-the-flag-is-given");
    let done = run(cmd, WAIT).await;
    assert_eq!(done.code, Some(77));
    assert!(
        done.stderr.contains("the token is for another job"),
        "{}",
        done.stderr
    );
    let done = run(tailgate(&["tail", &url]), WAIT).await;
    assert_eq!(done.code, Some(77), "no token at all");
    assert!(done.stderr.contains("no token"), "{}", done.stderr);
    let done = run(
        tailgate(&["tail", "http://127.0.0.1:1/v1/jobs/../logs"]),
        WAIT,
    )
    .await;
    assert_eq!(done.code, Some(64), "{}", done.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_colour_timestamps_and_json() {
    let server = TestServer::start().await;
    let job = "styled";
    let body = concat!(
        "{\"n\":1,\"line\":\"\\u001b[31mred\\u001b[0m\"}\n",
        "{\"n\":2,\"line\":\"oops\",\"stream\":\"stderr\"}\n",
        "{\"n\":3,\"custom\":{\"kind\":\"qr_download_link\",\"data\":{\"url\":\"https://e.x/a\"}}}\n",
        "{\"n\":4,\"status\":\"succeeded\",\"exit_code\":0}\n",
    );
    assert_eq!(server.publish_ndjson(job, body).await.status, 200);
    let url = server.url(&format!("/v1/jobs/{job}/logs"));

    let raw = run(tail_cmd(&url, job, &[]), WAIT).await;
    assert_eq!(raw.code, Some(0));
    assert_eq!(raw.stdout, "\x1b[31mred\x1b[0m\n", "colour passes through");
    assert_eq!(raw.stderr_lines(), ["oops"]);
    assert!(
        raw.stderr
            .contains("tailgate: qr_download_link: {\"url\":\"https://e.x/a\"}"),
        "{}",
        raw.stderr
    );

    let plain = run(tail_cmd(&url, job, &["--no-color", "--timestamps"]), WAIT).await;
    let (ts, line) = plain
        .stdout
        .trim_end()
        .split_once(' ')
        .expect("timestamp prefix");
    assert_eq!(line, "red");
    assert!(
        ts.starts_with("20") && ts.ends_with('Z') && ts.contains('T'),
        "{ts}"
    );

    let json = run(tail_cmd(&url, job, &["--json"]), WAIT).await;
    let events: Vec<serde_json::Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["log", "log", "custom", "status"]);
    assert_eq!(events[1]["stream"], "stderr");
    assert_eq!(events[0]["line"], "\x1b[31mred\x1b[0m");
    assert_eq!(events[3]["seq"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_gateway_is_reported_per_attempt_then_given_up_with_69() {
    // A port nobody listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/v1/jobs/absent/logs");
    let started = std::time::Instant::now();
    // stderr is a pipe here, as in CI: the retries must still be said.
    let done = run(
        tail_cmd(&url, "absent", &["--give-up-after", "1500ms"]),
        WAIT,
    )
    .await;
    assert_eq!(done.code, Some(69), "{}", done.stderr);
    let retries = done
        .stderr
        .lines()
        .filter(|l| l.contains("retrying in"))
        .count();
    assert!(retries >= 2, "one line per failed attempt: {}", done.stderr);
    assert!(
        done.stderr
            .lines()
            .last()
            .unwrap_or("")
            .contains("gave up after 1s 500ms"),
        "{}",
        done.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    let done = run(
        tail_cmd(&url, "absent", &["--no-follow", "--give-up-after", "500ms"]),
        WAIT,
    )
    .await;
    assert_eq!(done.code, Some(69), "--no-follow too: {}", done.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_failures_do_not_collide_with_a_job_exit_code() {
    let server = TestServer::start().await;
    // A build that exits 2 (make's "error") passes its code through...
    publish_lines(&server, "exit-2", 1, 1).await;
    assert_eq!(
        server.set_status("exit-2", "failed", Some(2)).await.status,
        200
    );
    let url = server.url("/v1/jobs/exit-2/logs");
    let build = run(tail_cmd(&url, "exit-2", &[]), WAIT).await;
    assert_eq!(build.code, Some(2), "{}", build.stderr);
    // ...and a refused token, a bad flag and a refused request each have their own.
    let mut cmd = tailgate(&["tail", &url, "--token", &read_token("other")]);
    cmd.env("TAILGATE_TOKEN", "unused");
    assert_eq!(run(cmd, WAIT).await.code, Some(77));
    let usage = run(tailgate(&["tail", &url, "--no-such-flag"]), WAIT).await;
    assert_eq!(usage.code, Some(64), "{}", usage.stderr);
    // A gateway behind another prefix: 404 for this path.
    let refused = run(
        tail_cmd(&server.url("/elsewhere/v1/jobs/exit-2/logs"), "exit-2", &[]),
        WAIT,
    )
    .await;
    assert_eq!(refused.code, Some(76), "{}", refused.stderr);
    let help = run(tailgate(&["tail", "--help"]), WAIT).await;
    assert_eq!(help.code, Some(0));
    for code in ["64", "69", "75", "76", "77"] {
        assert!(
            help.stdout.contains(&format!("  {code}  ")),
            "{}",
            help.stdout
        );
    }
}
