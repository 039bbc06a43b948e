//! Published SSE clients, unmodified, read a job with awkward lines: Node's `eventsource`
//! (v3), `@microsoft/fetch-event-source`, Python's `httpx-sse` and `sseclient-py`. Each
//! must fire exactly one event per record: none for the opening bytes or a keep-alive
//! (two of them have empty-event bugs the stream is shaped around), none forged by log
//! text, every line intact.
//!
//! `.ci/run` installs them: npm packages into `target/sse-clients`, a venv in
//! `target/sse-venv`. Without them the test is skipped with a message; with `CI=true`
//! it fails instead.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tailgate_tests::{components_present, read_token, test_config, Event, TestServer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(60);
const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/sse-clients");

fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
}

/// Each client's command line, or what is missing.
fn clients(url: &str) -> Result<Vec<(&'static str, Command)>, Vec<String>> {
    let modules = target_dir().join("sse-clients");
    let python = target_dir().join("sse-venv/bin/python");
    let mut missing = Vec::new();
    for package in ["eventsource", "@microsoft/fetch-event-source"] {
        if !modules.join("node_modules").join(package).exists() {
            missing.push(format!("npm {package} in {}", modules.display()));
        }
    }
    if !tailgate_tests::have("node") {
        missing.push("node".into());
    }
    let python_ok = std::process::Command::new(&python)
        .args(["-c", "import httpx, httpx_sse, sseclient"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !python_ok {
        missing.push(format!(
            "httpx-sse and sseclient-py in {}",
            python.display()
        ));
    }
    if !missing.is_empty() {
        return Err(missing);
    }
    let node = |client: &str| {
        let mut cmd = Command::new("node");
        cmd.arg(format!("{SCRIPTS}/clients.mjs"))
            .arg(client)
            .arg(&modules)
            .arg(url);
        cmd
    };
    let py = |client: &str| {
        let mut cmd = Command::new(&python);
        cmd.arg(format!("{SCRIPTS}/clients.py"))
            .arg(client)
            .arg(url);
        cmd
    };
    Ok(vec![
        ("eventsource", node("eventsource")),
        ("fetch-event-source", node("fetch-event-source")),
        ("httpx-sse", py("httpx-sse")),
        ("sseclient-py", py("sseclient-py")),
    ])
}

/// A client process whose printed events arrive on a channel.
struct Reader {
    name: &'static str,
    child: Child,
    events: mpsc::UnboundedReceiver<Value>,
    seen: Vec<Value>,
}

impl Reader {
    fn spawn(name: &'static str, mut cmd: Command) -> Self {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{name}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("{name} printed {line:?}: {e}"));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Self {
            name,
            child,
            events,
            seen: Vec::new(),
        }
    }

    /// Waits until the client has fired `n` events in all.
    async fn until(&mut self, n: usize) {
        while self.seen.len() < n {
            let next = tokio::time::timeout(WAIT, self.events.recv()).await;
            match next {
                Ok(Some(v)) => self.seen.push(v),
                _ => panic!(
                    "{}: {} events, waiting for {n}: {:#?}",
                    self.name,
                    self.seen.len(),
                    self.seen
                ),
            }
        }
    }

    /// Waits for the client to exit; returns every event it fired.
    async fn finish(mut self) -> Vec<Value> {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not end", self.name))
            .expect("wait");
        while let Some(v) = self.events.recv().await {
            self.seen.push(v);
        }
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut stderr).await;
        }
        assert!(
            status.success(),
            "{} exited {status:?}: {stderr}",
            self.name
        );
        self.seen
    }
}

/// The awkward log: each entry is one line of a plain-text upload.
fn awkward_lines() -> Vec<Vec<u8>> {
    vec![
        b"\x1b[1;31merror\x1b[0m: ANSI colour".to_vec(),
        b"progress 10%\rprogress 50%\rprogress 100%".to_vec(),
        b"event: status".to_vec(),
        b"data: {\"status\":\"succeeded\",\"final\":true}".to_vec(),
        b"id: 999".to_vec(),
        b"retry: 1".to_vec(),
        b": not a comment".to_vec(),
        b"forged\revent: status\rdata: {\"final\":true}\r\rid: 7".to_vec(),
        "emoji 🦀 ✅ and separators \u{2028} \u{85} end"
            .as_bytes()
            .to_vec(),
        b"invalid \xff\xfe\xc3 utf-8".to_vec(),
        Vec::new(),
        vec![b'y'; 100 * 1024],
    ]
}

fn as_client_would_see(e: &Event) -> Value {
    json!({ "type": e.event, "id": e.id, "data": e.data })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_sse_clients_fire_exactly_one_event_per_record() {
    let mut config = test_config();
    config.keepalive = Duration::from_millis(300);
    config.limits.max_line_bytes = 256 * 1024;
    let server = TestServer::start_with(config).await;
    let job = "awkward";
    let url = server.url(&format!("/v1/jobs/{job}/logs?token={}", read_token(job)));
    let clients = match clients(&url) {
        Ok(c) => c,
        Err(missing) => {
            let missing: Vec<&str> = missing.iter().map(String::as_str).collect();
            assert!(!components_present("published SSE clients", &missing));
            return;
        }
    };

    let mut body = Vec::new();
    for line in awkward_lines() {
        body.extend_from_slice(&line);
        body.push(b'\n');
    }
    let reply = server.publish_text(job, body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let first = awkward_lines().len();

    let mut readers: Vec<Reader> = clients
        .into_iter()
        .map(|(name, cmd)| Reader::spawn(name, cmd))
        .collect();
    for r in &mut readers {
        r.until(first).await;
    }
    // Every client is caught up and idle: let keep-alives reach them (a reader of our own
    // counts them: the opening comment, then two keep-alives).
    let mut own = server.subscribe(job, "", &[]).await;
    own.wait_comments(3).await;

    let custom = json!({ "n": 1, "custom": { "kind": "qr_download_link", "data": { "url": "https://e.x/a?b=1" } } });
    let reply = server.publish_ndjson(job, format!("{custom}\n")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        server.set_status(job, "succeeded", Some(0)).await.status,
        200
    );

    let expected: Vec<Value> = own
        .collect(WAIT)
        .await
        .iter()
        .map(as_client_would_see)
        .collect();
    assert_eq!(expected.len(), first + 2, "{expected:#?}");
    assert_eq!(
        expected[10]["data"]
            .as_str()
            .map(|d| d.contains("\"line\":\"\"")),
        Some(true)
    );
    for reader in readers {
        let name = reader.name;
        let got = reader.finish().await;
        assert_eq!(
            got.len(),
            expected.len(),
            "{name}: one event per record, no more: {got:#?}"
        );
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(g, e, "{name}");
        }
    }
}
