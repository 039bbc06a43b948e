//! The Capgo WebSocket with `permessage-deflate`, read by Node's real `ws` (the client the
//! published `@capgo/cli` bundles): the extension is agreed when offered, the frames are
//! the same as without it, a client that compresses its own messages is understood, and
//! the bytes on the socket are at most a fifth.
//!
//! `.ci/run` installs `ws` into `target/sse-clients`; without it (or node) the test is
//! skipped with a message, and with `CI=true` it fails instead.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tailgate_tests::capgo::{
    capgo_config, capgo_token, publish_lines, publish_status, stream_url, PREFIX,
};
use tailgate_tests::{components_present, have, TestServer};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(60);
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/sse-clients/capgo_ws.mjs");

/// Build-log lines as a CLI shows them: colours, paths, progress.
fn build_lines(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i % 4 {
            0 => format!(
                "\x1b[1m\x1b[32m   Compiling\x1b[0m crate-{} v0.{}.{}",
                i % 17,
                i % 5,
                i % 3
            ),
            1 => format!(
                "[{i}/{n}] clang -O2 -c ios/App/Pods/Module{}/Source{i}.m -o build/obj/{i}.o",
                i % 9
            ),
            2 => format!(
                "npm http fetch GET 200 https://registry.npmjs.org/pkg-{} {}ms (cache hit)",
                i % 31,
                i % 97
            ),
            _ => format!(
                "▸ Compiling ViewController{}.swift ({}%)",
                i % 23,
                i * 100 / n
            ),
        })
        .collect()
}

/// What one run of the client saw: its text messages and its summary.
struct Run {
    messages: Vec<Value>,
    extensions: String,
    bytes_read: u64,
}

/// Publishes `lines` to a fresh job, follows it with the client in `mode`, and finishes
/// the job once the client's heartbeat was answered (so that answer is always seen).
async fn follow(server: &TestServer, modules: &Path, lines: &[String], mode: &str) -> Run {
    let job = format!("deflate-{mode}");
    for part in lines.chunks(500) {
        publish_lines(server.addr, &job, part.to_vec()).await;
    }
    let url = stream_url(server.addr, PREFIX, &job, &capgo_token(&job));
    let mut child = Command::new("node")
        .arg(SCRIPT)
        .arg(modules)
        .arg(&url)
        .arg(mode)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut run = Run {
        messages: Vec::new(),
        extensions: String::new(),
        bytes_read: 0,
    };
    let read = async {
        while let Some(line) = out.next_line().await.expect("read") {
            let v: Value = serde_json::from_str(&line).expect("a JSON line");
            if let Some(s) = v.get("summary") {
                run.extensions = s["extensions"].as_str().unwrap_or_default().to_owned();
                run.bytes_read = s["bytes_read"].as_u64().expect("bytes read");
                return;
            }
            if v["message"]["type"] == "heartbeat_response" {
                publish_status(server.addr, &job, "succeeded").await;
            }
            run.messages.push(v["message"].clone());
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("the client ended");
    let status = child.wait().await.expect("node ran");
    assert!(status.success(), "{mode}: {status}");
    run
}

/// The log lines and the final status the messages carry, in order.
fn records(messages: &[Value]) -> (Vec<String>, Vec<String>) {
    let (mut lines, mut statuses) = (Vec::new(), Vec::new());
    let mut take = |m: &Value| match m["type"].as_str() {
        Some("log") => lines.push(m["message"].as_str().unwrap_or_default().to_owned()),
        Some("status") => statuses.push(m["status"].as_str().unwrap_or_default().to_owned()),
        _ => {}
    };
    for m in messages {
        match m["messages"].as_array() {
            Some(batch) => batch.iter().for_each(&mut take),
            None => take(m),
        }
    }
    (lines, statuses)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ws_agrees_deflate_and_reads_a_fifth_of_the_bytes() {
    let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/sse-clients");
    let mut missing = Vec::new();
    if !modules.join("node_modules/ws").exists() {
        missing.push("npm ws in target/sse-clients");
    }
    if !have("node") {
        missing.push("node");
    }
    if !components_present("capgo permessage-deflate with node ws", &missing) {
        return;
    }
    let server = TestServer::start_with(capgo_config()).await;
    let lines = build_lines(3000);
    let plain = follow(&server, &modules, &lines, "plain").await;
    assert_eq!(plain.extensions, "", "nothing offered, nothing agreed");
    let (plain_lines, plain_status) = records(&plain.messages);
    assert_eq!(plain_lines, lines);
    assert_eq!(plain_status, ["succeeded"]);

    for mode in ["deflate", "deflate-all"] {
        let run = follow(&server, &modules, &lines, mode).await;
        assert_eq!(run.extensions, "permessage-deflate", "{mode}");
        let (got, status) = records(&run.messages);
        assert!(
            got == lines,
            "{mode}: the lines differ from the published ones"
        );
        assert_eq!(status, ["succeeded"], "{mode}");
        // The heartbeat (compressed by the client in deflate-all) was read and answered:
        // the job finished only then.
        eprintln!(
            "{mode}: {} bytes on the socket, {} without deflate",
            run.bytes_read, plain.bytes_read
        );
        assert!(
            run.bytes_read * 5 <= plain.bytes_read,
            "{mode}: {} bytes on the socket against {} without deflate",
            run.bytes_read,
            plain.bytes_read
        );
    }
    server.stop().await;
}
