//! `tailgate push` as a real process against a real gateway: two streams and the exit code,
//! `tail` on the same job, uploads cut mid-record (nothing lost, nothing doubled), masking,
//! stdin mode, signal forwarding.
//!
//! Not covered: resending across a gateway restart; the gateway keeps jobs in memory only,
//! so a restarted gateway has no `last_n` to resume from.

use std::time::Duration;

use tailgate_tests::cli::{run, tailgate, Running};
use tailgate_tests::proxy::{Budget, Proxy};
use tailgate_tests::{bearer, publish_token, read_token, TestServer};
use tokio::io::AsyncWriteExt;

const WAIT: Duration = Duration::from_secs(60);

fn push_cmd(base: &str, job: &str, extra: &[&str]) -> tokio::process::Command {
    let mut cmd = tailgate(&["push", "--url", base, "--job", job]);
    cmd.args(extra).env("TAILGATE_TOKEN", publish_token(job));
    cmd
}

/// The job's plain-text log and its status JSON, read straight from the gateway.
async fn job_log(server: &TestServer, job: &str) -> (String, serde_json::Value) {
    let auth = bearer(&read_token(job));
    let log = server
        .get(&format!("/v1/jobs/{job}/log"), &[("authorization", &auth)])
        .await;
    assert_eq!(log.status, 200);
    let status = server
        .get(&format!("/v1/jobs/{job}"), &[("authorization", &auth)])
        .await;
    (log.text(), status.json())
}

fn numbered(count: u32) -> String {
    (1..=count).map(|i| format!("line {i}\n")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_gives_two_streams_status_failed_and_its_exit_code() {
    let server = TestServer::start().await;
    let job = "fails";
    let mut tail = tailgate(&["tail", &server.url(&format!("/v1/jobs/{job}/logs"))]);
    tail.env("TAILGATE_TOKEN", read_token(job));
    let tail = Running::spawn(tail);
    let base = server.url("");
    let push = run(
        push_cmd(
            &base,
            job,
            &[
                "--separate-streams",
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 3",
            ],
        ),
        WAIT,
    )
    .await;
    assert_eq!(
        push.code,
        Some(3),
        "push exits with the command's code: {}",
        push.stderr
    );
    assert_eq!(push.stdout, "out\n", "output is echoed locally");
    assert_eq!(push.stderr_lines(), ["err"]);

    let (log, status) = job_log(&server, job).await;
    assert_eq!(
        (status["status"].as_str(), status["exit_code"].as_i64()),
        (Some("failed"), Some(3))
    );
    let mut lines: Vec<&str> = log.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["err", "out"]);

    let tail = tail.finish(WAIT).await;
    assert_eq!(
        tail.code,
        Some(3),
        "tail exits with the job's code: {}",
        tail.stderr
    );
    assert_eq!(tail.stdout, "out\n", "stdout lines to stdout");
    assert_eq!(tail.stderr_lines(), ["err"], "stderr lines to stderr");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_cut_mid_record_lose_and_double_nothing() {
    let server = TestServer::start().await;
    // Every connection through the proxy may send at most 2000 bytes: the upload breaks
    // inside a record again and again, and push must resend from the job's last_n.
    let proxy = Proxy::start(
        server.addr,
        Budget {
            up: Some(2000),
            down: None,
        },
    )
    .await;
    let job = "cut-upload";
    let script = "i=1; while [ $i -le 300 ]; do echo \"line $i\"; i=$((i+1)); done";
    let push = run(
        push_cmd(&proxy.url(""), job, &["--quiet", "--", "sh", "-c", script]),
        WAIT,
    )
    .await;
    assert_eq!(push.code, Some(0), "{}", push.stderr);
    let (log, status) = job_log(&server, job).await;
    assert_eq!(log, numbered(300), "every line once, in order");
    assert_eq!(status["status"], "succeeded");
    assert_eq!(status["lines"], 300);
    assert!(
        proxy.broken() >= 3,
        "the proxy broke only {} uploads",
        proxy.broken()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_command_survives_dropped_connections() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.addr, Budget::default()).await;
    let job = "cut-slow";
    let script = "i=1; while [ $i -le 60 ]; do echo \"line $i\"; i=$((i+1)); sleep 0.02; done";
    let mut push = Running::spawn(push_cmd(&proxy.url(""), job, &["--", "sh", "-c", script]));
    push.lines_until(15, WAIT).await;
    proxy.cut();
    push.lines_until(35, WAIT).await;
    proxy.cut();
    let done = push.finish(WAIT).await;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let (log, status) = job_log(&server, job).await;
    assert_eq!(log, numbered(60));
    assert_eq!(status["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_written_in_pieces_stay_whole_and_a_partial_last_line_is_sent() {
    let server = TestServer::start().await;
    let job = "pieces";
    let script = "printf 'a'; sleep 0.3; printf 'b\\r\\n'; printf 'c\\rd\\n'; printf 'no newline'";
    let push = run(
        push_cmd(&server.url(""), job, &["-q", "--", "sh", "-c", script]),
        WAIT,
    )
    .await;
    assert_eq!(push.code, Some(0), "{}", push.stderr);
    let (_, status) = job_log(&server, job).await;
    assert_eq!(status["lines"], 3);
    let mut sse = server.subscribe(job, "", &[]).await;
    let events = sse.collect(Duration::from_secs(10)).await;
    let lines: Vec<String> = events
        .iter()
        .filter(|e| e.event == "log")
        .map(|e| e.json()["line"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(lines, ["ab", "c\rd", "no newline"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_masked_before_they_leave() {
    let server = TestServer::start().await;
    let job = "masked";
    let script = "echo 'token=hunter2 and s3cr3t'; echo 'other-secret' >&2; echo fine";
    let mut cmd = push_cmd(
        &server.url(""),
        job,
        &["--mask", "hunter2", "--", "sh", "-c", script],
    );
    cmd.env("TAILGATE_MASK", "s3cr3t\nother-secret\n");
    let push = run(cmd, WAIT).await;
    assert_eq!(push.code, Some(0), "{}", push.stderr);
    let (log, _) = job_log(&server, job).await;
    for secret in ["hunter2", "s3cr3t", "other-secret"] {
        assert!(!log.contains(secret), "{secret} leaked: {log}");
        assert!(
            !push.stdout.contains(secret) && !push.stderr.contains(secret),
            "{secret} echoed"
        );
    }
    assert!(log.contains("token=*** and ***\n"), "{log}");
    assert!(log.contains("***\n") && log.contains("fine\n"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_is_streamed_and_status_posted_at_its_end() {
    let server = TestServer::start().await;
    let job = "piped";
    let mut cmd = push_cmd(
        &server.url(""),
        job,
        &[
            "--status",
            "failed",
            "--exit-code",
            "4",
            "--stream",
            "stderr",
        ],
    );
    cmd.stdin(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn push");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"one\ntwo\npartial").await.unwrap();
    drop(stdin);
    let done = tailgate_tests::cli::wait(child, WAIT).await;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let (log, status) = job_log(&server, job).await;
    assert_eq!(log, "one\ntwo\npartial\n");
    assert_eq!(
        (status["status"].as_str(), status["exit_code"].as_i64()),
        (Some("failed"), Some(4))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_forwarded_and_the_job_is_cancelled() {
    let server = TestServer::start().await;
    let job = "interrupted";
    let script = "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.1; done";
    let mut push = Running::spawn(push_cmd(&server.url(""), job, &["--", "sh", "-c", script]));
    push.lines_until(1, WAIT).await;
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &push.pid().to_string()])
        .status()
        .await
        .expect("kill");
    assert!(killed.success());
    let done = push.finish(WAIT).await;
    assert_eq!(
        done.code,
        Some(7),
        "the command's own exit code: {}",
        done.stderr
    );
    let (log, status) = job_log(&server, job).await;
    // The shell may also report its `sleep` killed by the forwarded signal ("Terminated").
    let lines: Vec<&str> = log.lines().filter(|l| !l.contains("Terminated")).collect();
    assert_eq!(lines, ["ready", "got-term"], "{log}");
    assert_eq!(
        (status["status"].as_str(), status["exit_code"].as_i64()),
        (Some("cancelled"), Some(7))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_stop_before_the_command_runs() {
    let server = TestServer::start().await;
    let base = server.url("");
    let marker = std::env::temp_dir().join(format!("tailgate-push-ran-{}", std::process::id()));
    let touch = format!("touch {}", marker.display());
    let mut cmd = tailgate(&[
        "push", "--url", &base, "--job", "ro", "--", "sh", "-c", &touch,
    ]);
    cmd.env("TAILGATE_TOKEN", read_token("ro"));
    let done = run(cmd, WAIT).await;
    assert_eq!(done.code, Some(77), "a read-only token: {}", done.stderr);
    assert!(
        done.stderr.contains("does not allow publishing"),
        "{}",
        done.stderr
    );
    assert!(!marker.exists(), "the command did not run");

    assert_eq!(
        server.set_status("over", "succeeded", Some(0)).await.status,
        200
    );
    let done = run(push_cmd(&base, "over", &["--", "sh", "-c", &touch]), WAIT).await;
    assert_eq!(done.code, Some(76), "a finished job is a refusal");
    assert!(done.stderr.contains("already ended"), "{}", done.stderr);
    assert!(!marker.exists());

    let done = run(
        push_cmd(&base, "nope", &["--", "/nonexistent/command"]),
        WAIT,
    )
    .await;
    assert_eq!(done.code, Some(127), "{}", done.stderr);
    let (_, status) = job_log(&server, "nope").await;
    assert_eq!(
        (status["status"].as_str(), status["exit_code"].as_i64()),
        (Some("failed"), Some(127))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_memory_buffer_spools_to_disk_and_still_delivers_in_order() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(
        server.addr,
        Budget {
            up: Some(3000),
            down: None,
        },
    )
    .await;
    let job = "spooled";
    let script = "i=1; while [ $i -le 200 ]; do echo \"line $i\"; i=$((i+1)); done";
    let args = ["-q", "--buffer-bytes", "256", "--", "sh", "-c", script];
    let push = run(push_cmd(&proxy.url(""), job, &args), WAIT).await;
    assert_eq!(push.code, Some(0), "{}", push.stderr);
    let (log, status) = job_log(&server, job).await;
    assert_eq!(log, numbered(200));
    assert_eq!(status["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_gateway_is_reported_per_attempt_and_unacknowledged_output_exits_69() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let mut cmd = push_cmd(
        &base,
        "absent",
        &["--status", "succeeded", "--flush-timeout", "1500ms"],
    );
    cmd.stdin(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn tailgate");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"one line\n").await.unwrap();
    drop(stdin);
    let done = tailgate_tests::cli::wait(child, WAIT).await;
    // stderr is a pipe, as in CI: each retry is still said.
    assert!(
        done.stderr
            .lines()
            .filter(|l| l.contains("retrying in"))
            .count()
            >= 1,
        "{}",
        done.stderr
    );
    assert_eq!(done.code, Some(69), "{}", done.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_stdout_and_stderr_keep_the_order_they_were_written_in() {
    let server = TestServer::start().await;
    // 300 pairs written back to back: two pipes read as they come scramble them.
    let script =
        "i=1; while [ $i -le 300 ]; do echo \"out $i\"; echo \"err $i\" >&2; i=$((i+1)); done; \
                  echo 'deploy failed' >&2; exit 1";
    let want: String = (1..=300)
        .map(|i| format!("out {i}\nerr {i}\n"))
        .chain(["deploy failed\n".to_string()])
        .collect();
    let push = run(
        push_cmd(
            &server.url(""),
            "interleaved",
            &["-q", "--", "sh", "-c", script],
        ),
        WAIT,
    )
    .await;
    assert_eq!(push.code, Some(1), "{}", push.stderr);
    let (log, status) = job_log(&server, "interleaved").await;
    assert_eq!(log, want, "the order the command wrote");
    assert_eq!(status["status"], "failed");

    // --tty: the command sees a terminal, and the order is kept too.
    let script = "test -t 1 && test -t 2 && echo on-a-terminal; \
                  i=1; while [ $i -le 100 ]; do echo \"out $i\"; echo \"err $i\" >&2; i=$((i+1)); done";
    let want: String = ["on-a-terminal\n".to_string()]
        .into_iter()
        .chain((1..=100).map(|i| format!("out {i}\nerr {i}\n")))
        .collect();
    let push = run(
        push_cmd(
            &server.url(""),
            "on-tty",
            &["-q", "--tty", "--", "sh", "-c", script],
        ),
        WAIT,
    )
    .await;
    assert_eq!(push.code, Some(0), "{}", push.stderr);
    let (log, _) = job_log(&server, "on-tty").await;
    assert_eq!(log, want, "a terminal's order");
}
