//! The live log page in a real browser: `tests/browser/view.test.mjs` drives Debian's
//! Chromium with Playwright against real `tailgate` processes on loopback: a roomy one, a
//! small one whose limits make gaps and truncation happen, and one on a spool that the
//! script kills (-9) and restarts mid-stream.
//!
//! Needs `node`, `/usr/bin/chromium` (or `TAILGATE_CHROMIUM`) and playwright-core installed
//! into `target/browser` (`.ci/run` does both; by hand: `cp tests/browser/package*.json
//! target/browser/ && npm ci --prefix target/browser`). Skipped with a message when one is
//! missing, unless `CI=true`, where that fails. Screenshots land in `target/browser/artifacts`;
//! `TAILGATE_UPDATE_SCREENSHOT=1` also refreshes the README's, beside the page's source
//! (install `fonts-noto-color-emoji` first, or its section emoji show as empty boxes).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tailgate_tests::daemon::{test_args, Daemon, TempDir};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/browser/view.test.mjs");
const SCREENSHOT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../gateway/src/view/screenshot.png"
);
/// The whole browser run; it takes well under a minute on two cores.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// What the browser run needs, or why it cannot run.
fn prerequisites() -> Result<(PathBuf, PathBuf), String> {
    let works = |cmd: &Path| {
        Command::new(cmd)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !works(Path::new("node")) {
        return Err("node is not installed".into());
    }
    let chromium = PathBuf::from(
        std::env::var("TAILGATE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    if !chromium.exists() {
        return Err(format!(
            "{} is missing (apt-get install chromium)",
            chromium.display()
        ));
    }
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir");
    let playwright = target.join("browser/node_modules/playwright-core");
    if !playwright.join("index.mjs").exists() {
        return Err(format!(
            "{} is missing (npm ci --prefix target/browser, as .ci/run does)",
            playwright.display()
        ));
    }
    Ok((chromium, playwright))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_log_page_in_chromium() {
    let (chromium, playwright) = match prerequisites() {
        Ok(found) => found,
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but the browser test cannot run: {why}")
        }
        Err(why) => {
            eprintln!("skipping the browser test of the live log page: {why}");
            return;
        }
    };
    let gateway = |extra: &[&str]| {
        let mut args = test_args();
        args.extend(extra.iter().map(|s| s.to_string()));
        Daemon::start(&args)
    };
    // Room for a 200,000-line log in one job's memory, so no reader meets a gap there.
    let roomy = gateway(&["--memory-only", "--job-memory-bytes", "268435456"]);
    // A job holds ~64 KiB in memory and stores at most 300 KB: gaps and truncation.
    let small = gateway(&[
        "--memory-only",
        "--job-memory-bytes",
        "65536",
        "--max-log-bytes",
        "300000",
    ]);
    // The restart scenario runs its own gateway on a spool here, killed and restarted.
    let data = TempDir::new("view");
    let artifacts = playwright
        .parent()
        .and_then(Path::parent)
        .expect("browser dir")
        .join("artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let mut node = tokio::process::Command::new("node");
    node.arg("--test-force-exit")
        .arg("--test-reporter=spec")
        .arg(SCRIPT)
        .env("TAILGATE_URL", format!("http://{}", roomy.addr))
        .env("TAILGATE_SMALL_URL", format!("http://{}", small.addr))
        .env("TAILGATE_BIN", tailgate_tests::tailgate_bin())
        .env("TAILGATE_DATA_DIR", data.path())
        .env("TAILGATE_SECRET", tailgate_tests::SECRET)
        .env("TAILGATE_ISSUER", tailgate_tests::ISSUER)
        .env("TAILGATE_AUDIENCE", tailgate_tests::AUDIENCE)
        .env("PLAYWRIGHT_CORE", &playwright)
        .env("CHROMIUM", &chromium)
        .env("ARTIFACTS", &artifacts)
        .kill_on_drop(true);
    if std::env::var("TAILGATE_UPDATE_SCREENSHOT").is_ok_and(|v| v == "1") {
        node.env("README_SCREENSHOT", SCREENSHOT);
    }
    let out = tokio::time::timeout(RUN_LIMIT, node.output())
        .await
        .expect("the browser run finished in time")
        .expect("run node");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "browser tests failed:\n{report}");
    // Every scenario ran: the spec reporter's summary counts none skipped, none failed.
    assert!(
        report.contains("ℹ skipped 0") && report.contains("ℹ fail 0"),
        "{report}"
    );
    println!("{report}");
    for shot in ["colours.png", "groups.png"] {
        let meta = std::fs::metadata(artifacts.join(shot)).expect("screenshot saved");
        assert!(meta.len() > 1000, "{shot} is {} bytes", meta.len());
    }
}
