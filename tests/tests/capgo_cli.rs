//! The published `@capgo/cli` itself streams a build from Tailgate: its own streaming
//! function (the one `capgo build request` runs with Capgo's `logs_url` and `logs_token`)
//! is driven by `tests/capgo-cli/stream.mjs` against a gateway on loopback, through a
//! proxy that cuts the connection mid-build.
//!
//! Needs `node` (and `npm` to install the CLI into the target dir, once); skipped with a
//! message when they are missing or the install fails, unless
//! `TAILGATE_REQUIRE_CAPGO_CLI=1`. `CAPGO_CLI_DIR` points at an installed package
//! (`.../node_modules/@capgo/cli`) instead of installing; `CAPGO_CLI_VERSION` picks the
//! version to install (default `latest`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use tailgate_tests::capgo::{capgo_config, capgo_token, publish_lines, publish_status, PREFIX};
use tailgate_tests::proxy::{Budget, Proxy};
use tailgate_tests::TestServer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

const HARNESS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/capgo-cli/stream.mjs");

fn required() -> bool {
    std::env::var("TAILGATE_REQUIRE_CAPGO_CLI").is_ok_and(|v| v == "1")
}

fn skip(why: &str) -> Option<PathBuf> {
    assert!(!required(), "TAILGATE_REQUIRE_CAPGO_CLI=1 but {why}");
    eprintln!("skipping the real Capgo CLI test: {why}");
    None
}

fn works(cmd: &str, arg: &str) -> bool {
    std::process::Command::new(cmd)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The installed CLI package directory, installed once per target dir.
fn cli_package() -> Option<PathBuf> {
    static PACKAGE: OnceLock<Option<PathBuf>> = OnceLock::new();
    PACKAGE
        .get_or_init(|| {
            if !works("node", "--version") {
                return skip("node is not installed");
            }
            if let Ok(dir) = std::env::var("CAPGO_CLI_DIR") {
                let dir = PathBuf::from(dir);
                return if dir.join("dist/index.js").exists() {
                    Some(dir)
                } else {
                    skip("CAPGO_CLI_DIR holds no dist/index.js")
                };
            }
            let version = std::env::var("CAPGO_CLI_VERSION").unwrap_or_else(|_| "latest".into());
            let prefix =
                Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("capgo-cli-{version}"));
            let package = prefix.join("node_modules/@capgo/cli");
            if package.join("dist/index.js").exists() {
                return Some(package);
            }
            if !works("npm", "--version") {
                return skip("npm is not installed");
            }
            let status = std::process::Command::new("npm")
                .args([
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--ignore-scripts",
                    "--prefix",
                ])
                .arg(&prefix)
                .arg(format!("@capgo/cli@{version}"))
                .stdout(Stdio::null())
                .status();
            match status {
                Ok(s) if s.success() && package.join("dist/index.js").exists() => Some(package),
                _ => skip(&format!("npm install @capgo/cli@{version} failed")),
            }
        })
        .clone()
}

/// The CLI's streaming run: its stdout lines as they come, and its exit code.
struct CliRun {
    lines: mpsc::UnboundedReceiver<String>,
    child: tokio::process::Child,
    seen: Vec<String>,
}

impl CliRun {
    fn start(package: &Path, logs_url: &str, token: &str) -> Self {
        let mut child = Command::new("node")
            .arg(HARNESS)
            .arg(package)
            .arg(logs_url)
            .arg(token)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn node");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let _ = tx.send(line);
            }
        });
        Self {
            lines,
            child,
            seen: Vec::new(),
        }
    }

    /// Waits until the CLI printed `line`.
    async fn until(&mut self, line: &str, within: Duration) {
        let wait = async {
            while !self.seen.iter().any(|l| l == line) {
                match self.lines.recv().await {
                    Some(l) => self.seen.push(l),
                    None => panic!("CLI ended before {line:?}: {:?}", self.seen),
                }
            }
        };
        tokio::time::timeout(within, wait)
            .await
            .unwrap_or_else(|_| panic!("CLI did not print {line:?}: {:?}", self.seen));
    }

    /// Waits for the exit; returns the exit code and every line printed.
    async fn finish(mut self, within: Duration) -> (Option<i32>, Vec<String>) {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("CLI still running: {:?}", self.seen))
            .expect("wait");
        while let Some(l) = self.lines.recv().await {
            self.seen.push(l);
        }
        (status.code(), self.seen)
    }
}

fn log_lines(all: &[String]) -> Vec<String> {
    all.iter()
        .filter(|l| l.starts_with("line "))
        .cloned()
        .collect()
}

fn lines(range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.map(|i| format!("line {i}")).collect()
}

#[tokio::test]
async fn the_published_cli_streams_a_build_across_a_cut_connection() {
    let Some(package) = cli_package() else { return };
    let server = TestServer::start_with(capgo_config()).await;
    let proxy = Proxy::start(server.addr, Budget::default()).await;
    let job = "cli-build";
    publish_lines(server.addr, job, lines(1..=20)).await;

    let logs_url = format!("http://{}{PREFIX}/{job}", proxy.addr);
    let mut cli = CliRun::start(&package, &logs_url, &capgo_token(job));
    cli.until("line 20", Duration::from_secs(30)).await;
    // Let the confirmations arrive, then break the connection as a network would.
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.cut();
    publish_lines(server.addr, job, lines(21..=40)).await;
    tailgate_tests::capgo::publish(
        server.addr,
        job,
        &[serde_json::json!({"custom": {"kind": "qr_download_link", "data": {"url": "https://example.com/app.apk"}}})],
    )
    .await;
    publish_status(server.addr, job, "succeeded").await;

    let (code, out) = cli.finish(Duration::from_secs(60)).await;
    assert_eq!(
        log_lines(&out),
        lines(1..=40),
        "every line once, in order: {out:#?}"
    );
    // Versions before 8 ignore custom_msg frames; later ones render the QR code and URL.
    let bundle = std::fs::read_to_string(package.join("dist/index.js")).expect("bundle");
    if bundle.contains("\"custom_msg\"") {
        assert!(
            out.iter().any(|l| l == "https://example.com/app.apk"),
            "QR link shown: {out:#?}"
        );
    }
    assert!(
        out.iter().any(|l| l == "TAILGATE_RESULT=succeeded"),
        "{out:#?}"
    );
    assert_eq!(code, Some(0));
    assert!(proxy.broken() >= 1, "the stream was cut");
    assert!(proxy.accepted() >= 3, "start, stream, and the reconnect");
    server.stop().await;
}

#[tokio::test]
async fn the_published_cli_exits_non_zero_for_a_failed_build() {
    let Some(package) = cli_package() else { return };
    let server = TestServer::start_with(capgo_config()).await;
    let job = "cli-failed";
    let logs_url = format!("http://{}{PREFIX}/{job}", server.addr);
    let mut cli = CliRun::start(&package, &logs_url, &capgo_token(job));
    cli.until("Connecting to log streaming...", Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    publish_lines(server.addr, job, lines(1..=3)).await;
    publish_status(server.addr, job, "failed").await;
    let (code, out) = cli.finish(Duration::from_secs(60)).await;
    assert_eq!(log_lines(&out), lines(1..=3), "{out:#?}");
    assert!(
        out.iter().any(|l| l == "TAILGATE_RESULT=failed"),
        "{out:#?}"
    );
    assert_eq!(code, Some(1));
    server.stop().await;
}

#[tokio::test]
async fn the_published_cli_falls_back_when_start_refuses_the_token() {
    let Some(package) = cli_package() else { return };
    let server = TestServer::start_with(capgo_config()).await;
    let logs_url = format!("http://{}{PREFIX}/cli-denied", server.addr);
    let cli = CliRun::start(&package, &logs_url, &capgo_token("another-job"));
    let (code, out) = cli.finish(Duration::from_secs(30)).await;
    assert!(
        out.iter().any(|l| l == "TAILGATE_RESULT=null"),
        "no streaming: {out:#?}"
    );
    assert_eq!(code, Some(1));
    server.stop().await;
}
