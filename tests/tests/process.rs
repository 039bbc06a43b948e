//! The real binary: `serve --dev` prints working commands; SIGTERM drains with streams open.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tailgate_tests::{http_client, SseStream};

/// Starts `tailgate serve` on an ephemeral port; returns the child, its address and stdout.
fn start(args: &[&str]) -> (Child, std::net::SocketAddr, Vec<String>) {
    start_with(args, &[])
}

/// [`start`] with `env` set for it (glibc's malloc variables removed first).
fn start_with(args: &[&str], env: &[(&str, &str)]) -> (Child, std::net::SocketAddr, Vec<String>) {
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
        .env_remove("MALLOC_ARENA_MAX")
        .env_remove("GLIBC_TUNABLES")
        .envs(env.iter().copied())
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

/// Kills the gateway if the test fails before stopping it.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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

/// The environment `pid` runs with (`/proc/PID/environ`), as `NAME=value` strings.
fn environ(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .expect("read environ")
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// `serve` starts itself again with one malloc arena and transparent huge pages for the
/// heap (memory.rs: what each costs and saves), and keeps what the operator set.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn serve_runs_with_one_malloc_arena_and_huge_pages_unless_the_operator_chose() {
    let dev = ["--dev", "--memory-only"];
    let (child, _, _) = start_with(&dev, &[]);
    let child = KillOnDrop(child);
    let env = environ(child.0.id());
    assert!(env.iter().any(|v| v == "MALLOC_ARENA_MAX=1"), "{env:?}");
    assert!(
        env.iter()
            .any(|v| v == "GLIBC_TUNABLES=glibc.malloc.hugetlb=1"),
        "{env:?}"
    );
    drop(child);

    let chosen = [
        ("GLIBC_TUNABLES", "glibc.malloc.hugetlb=0"),
        ("MALLOC_ARENA_MAX", "2"),
    ];
    let (child, _, _) = start_with(&dev, &chosen);
    let child = KillOnDrop(child);
    let env = environ(child.0.id());
    assert!(env.iter().any(|v| v == "MALLOC_ARENA_MAX=2"), "{env:?}");
    assert!(
        env.iter()
            .any(|v| v == "GLIBC_TUNABLES=glibc.malloc.hugetlb=0"),
        "{env:?}"
    );
    assert!(!env
        .iter()
        .any(|v| v == "GLIBC_TUNABLES=glibc.malloc.hugetlb=1"));
}

/// Runs `script` with `sh -e`, `tailgate` on the `PATH`; returns (success, stdout, stderr).
fn sh(script: &str) -> (bool, String, String) {
    let bin_dir = tailgate_tests::tailgate_bin()
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("sh")
        .args(["-e", "-c", script])
        .env_clear()
        .env("PATH", path)
        .output()
        .expect("run sh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn dev_mode_prints_shell_lines_that_work_and_a_fresh_job_each_start() {
    if !tailgate_tests::programs_present("the dev banner test", &["curl"]) {
        return;
    }
    let (child, addr, lines) = start(&["--dev", "--memory-only"]);
    let mut child = KillOnDrop(child);
    let exports: Vec<&str> = lines
        .iter()
        .map(String::as_str)
        .filter(|l| l.starts_with("export "))
        .collect();
    assert_eq!(exports.len(), 3, "{lines:#?}");
    assert!(exports[0].starts_with(&format!("export TAILGATE_URL=http://{addr} JOB=demo-")));
    // Everything the banner says to run, but the follow (which waits for the end).
    let commands: Vec<&str> = lines
        .iter()
        .map(String::as_str)
        .filter(|l| {
            l.starts_with("printf ")
                || l.starts_with("curl -sS")
                || l.starts_with("tailgate token ")
        })
        .collect();
    assert_eq!(commands.len(), 2, "{lines:#?}");
    // Then what the README's first publish example does: the banner left the job open, so
    // it is accepted (a banner that finished the job made it a 409).
    let script = format!(
        "{}\n{}\necho more | curl -sS --fail-with-body -H \"Authorization: Bearer $PUB\" -H 'Content-Type: text/plain' --data-binary @- \"$TAILGATE_URL/v1/jobs/$JOB/logs\"\ncurl -sS --fail-with-body -H \"Authorization: Bearer $READ\" \"$TAILGATE_URL/v1/jobs/$JOB/log\"\n",
        exports.join("\n"),
        commands.join("\n")
    );
    let (ok, stdout, stderr) = sh(&script);
    assert!(ok, "{script}\n{stdout}\n{stderr}");
    assert!(stdout.contains("\"accepted\":1"), "{stdout}");
    assert!(stdout.ends_with("hello\nfrom tailgate\nmore\n"), "{stdout}");
    // The finish command is shown, commented out, for when the user is done.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("#   curl") && l.contains("/status")),
        "{lines:#?}"
    );
    // The minted line prints a token the gateway accepts for its job.
    // (curl's JSON answers end without a newline: the token may follow one on its line.)
    let minted = stdout
        .split(['}', '\n'])
        .find(|l| l.starts_with("eyJ"))
        .expect("a minted token");
    let reply = http_client::request(
        addr,
        "GET",
        "/v1/jobs/build-1",
        &[("authorization", &format!("Bearer {minted}"))],
        Default::default(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // The page to open in a browser, with the read token in its fragment.
    let job = exports[0].rsplit("JOB=").next().unwrap_or_default();
    let view = format!("http://{addr}/v1/jobs/{job}/view#token=");
    assert!(
        lines
            .iter()
            .any(|l| l.trim_start_matches(['#', ' ']).starts_with(&view)),
        "{lines:#?}"
    );
    let page = http_client::request(
        addr,
        "GET",
        &format!("/v1/jobs/{job}/view"),
        &[],
        Default::default(),
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("view/page.js"), "{}", page.text());
    sigterm(&child.0);
    assert!(child.0.wait().unwrap().success());

    let (again, _, lines_again) = start(&["--dev", "--memory-only"]);
    let mut again = KillOnDrop(again);
    let job = |lines: &[String]| {
        lines
            .iter()
            .find_map(|l| l.split(" JOB=").nth(1).map(str::to_string))
    };
    assert_ne!(job(&lines), job(&lines_again), "a fresh job per start");
    sigterm(&again.0);
    assert!(again.0.wait().unwrap().success());
}
