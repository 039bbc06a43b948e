//! Compressed streams read by `curl --compressed` (libcurl's zlib and zstd decoders): the
//! decoded stream is byte-identical to the uncompressed one, over the direct socket path
//! (HTTP/1.1) and hyper's (HTTP/2 cleartext), and a live line decodes within a bound while
//! the stream is still open (a compressor that buffers would hold it back). The plain `/log`
//! (whole and `?tail_bytes=`) decodes byte-identical too.

use std::process::Stdio;
use std::time::Duration;

use tailgate_tests::{programs_present, read_token, test_config, TestServer};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};

/// A live line must be decoded by then.
const LIVE_BOUND: Duration = Duration::from_secs(3);
const WAIT: Duration = Duration::from_secs(30);

/// Lines with colours, CR progress and group markers, as build logs have them.
fn build_lines(n: usize) -> String {
    let mut body = String::from("::group::cargo build\n");
    for i in 0..n {
        match i % 3 {
            0 => body.push_str(&format!(
                "\x1b[1m\x1b[32m   Compiling\x1b[0m crate-{} v0.{}.0\n",
                i % 13,
                i % 4
            )),
            1 => body.push_str(&format!("[{i}/{n}] gcc -O2 -c src/f{i}.c\r 42%\n")),
            _ => body.push_str(&format!(
                "npm http fetch GET 200 https://r.example/p{i} 12ms\n"
            )),
        }
    }
    body.push_str("::endgroup::\n");
    body
}

/// `curl` reading `url` to its end; `args` choose the coding and protocol.
async fn curl(url: &str, args: &[&str]) -> (Vec<u8>, String) {
    let out = tokio::time::timeout(
        WAIT,
        Command::new("curl")
            .args(["-sS", "-N", "--fail", "-D", "/dev/stderr"])
            .args(args)
            .arg(url)
            .output(),
    )
    .await
    .expect("curl ended")
    .expect("curl ran");
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(out.status.success(), "curl {args:?}: {stderr}");
    (out.stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_decodes_every_coding_to_the_uncompressed_stream() {
    if !programs_present("compressed streams with curl", &["curl"]) {
        return;
    }
    let server = TestServer::start().await;
    let job = "compressed";
    let reply = server.publish_text(job, build_lines(3000)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = server.set_status(job, "succeeded", Some(0)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    for query in ["", "&format=text"] {
        let url = server.url(&format!(
            "/v1/jobs/{job}/logs?token={}{query}",
            read_token(job)
        ));
        let (plain, head) = curl(&url, &[]).await;
        assert!(!head.contains("content-encoding"), "{head}");
        assert!(plain.len() > 100_000, "{} bytes", plain.len());
        for (coding, proto) in [
            ("gzip", "--http1.1"),
            ("zstd", "--http1.1"),
            ("gzip", "--http2-prior-knowledge"),
            ("zstd", "--http2-prior-knowledge"),
        ] {
            let accept = format!("accept-encoding: {coding}");
            let (decoded, head) = curl(&url, &["--compressed", proto, "-H", &accept]).await;
            assert!(
                head.contains(&format!("content-encoding: {coding}")),
                "{coding} {proto}: {head}"
            );
            assert!(head.contains("vary: accept-encoding"), "{head}");
            assert!(
                decoded == plain,
                "{coding} over {proto} ({query}) decodes to {} bytes, the plain stream has {}",
                decoded.len(),
                plain.len()
            );
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_decodes_the_compressed_plain_log() {
    if !programs_present("compressed /log with curl", &["curl"]) {
        return;
    }
    let server = TestServer::start().await;
    let job = "plain-log";
    // Several 64 KiB chunks of text, so the body is several flushed pieces.
    let reply = server.publish_text(job, build_lines(8000)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let empty = "plain-log-empty";
    let reply = server.set_status(empty, "running", None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    for (job, query) in [(job, ""), (job, "&tail_bytes=5000"), (empty, "")] {
        let url = server.url(&format!(
            "/v1/jobs/{job}/log?token={}{query}",
            read_token(job)
        ));
        let (plain, head) = curl(&url, &[]).await;
        assert!(!head.contains("content-encoding"), "{head}");
        if job == empty {
            assert!(plain.is_empty(), "{} bytes", plain.len());
        } else if query.is_empty() {
            assert!(plain.len() > 300_000, "{} bytes", plain.len());
        } else {
            assert!(
                plain.len() <= 5000 && plain.len() > 4000,
                "{} bytes",
                plain.len()
            );
        }
        // `--compressed` alone offers every coding curl has; the gateway picks zstd first.
        let (decoded, head) = curl(&url, &["--compressed"]).await;
        assert!(head.contains("content-encoding: zstd"), "{query}: {head}");
        assert!(
            decoded == plain,
            "--compressed ({job}{query}) decodes differently"
        );
        for (coding, magic) in [
            ("gzip", &[0x1f, 0x8b][..]),
            ("zstd", &[0x28, 0xb5, 0x2f, 0xfd]),
        ] {
            let accept = format!("accept-encoding: {coding}");
            let (decoded, head) = curl(&url, &["--compressed", "-H", &accept]).await;
            assert!(
                head.contains(&format!("content-encoding: {coding}")),
                "{head}"
            );
            assert!(head.contains("vary: accept-encoding"), "{head}");
            assert!(
                decoded == plain,
                "{coding} ({job}{query}) decodes to {} bytes, the plain log has {}",
                decoded.len(),
                plain.len()
            );
            // What crossed the wire: the coding's own bytes, and far fewer of them.
            let (raw, _) = curl(&url, &["-H", &accept]).await;
            assert!(
                raw.starts_with(magic),
                "{coding}: {:x?}",
                &raw[..raw.len().min(8)]
            );
            if plain.len() > 100_000 {
                assert!(
                    raw.len() * 5 < plain.len(),
                    "{coding}: {} of {}",
                    raw.len(),
                    plain.len()
                );
            }
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_line_and_keepalives_decode_at_once() {
    if !programs_present("compressed live stream with curl", &["curl"]) {
        return;
    }
    let mut config = test_config();
    config.keepalive = Duration::from_millis(200);
    let server = TestServer::start_with(config).await;
    for (n, coding) in ["gzip", "zstd"].into_iter().enumerate() {
        let job = format!("live-{n}");
        let reply = server.publish_text(&job, build_lines(200)).await;
        assert_eq!(reply.status, 200);
        let url = server.url(&format!("/v1/jobs/{job}/logs?token={}", read_token(&job)));
        let mut child = Command::new("curl")
            .args(["-sS", "-N", "--compressed", "-H"])
            .arg(format!("accept-encoding: {coding}"))
            .arg(&url)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("curl");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        wait_for(&mut lines, coding, |l| l.contains("::endgroup::")).await;
        // A keep-alive comment arrives (decoded) while the job is quiet.
        wait_for(&mut lines, coding, |l| l == ":").await;
        for i in 0..3 {
            let line = format!("live line {i} of {coding}");
            let reply = server.publish_text(&job, format!("{line}\n")).await;
            assert_eq!(reply.status, 200);
            wait_for(&mut lines, coding, |l| l.contains(&line)).await;
        }
        drop(child);
    }
    server.stop().await;
}

/// Reads decoded lines until one matches, within [`LIVE_BOUND`].
async fn wait_for(
    lines: &mut Lines<BufReader<ChildStdout>>,
    coding: &str,
    matches: impl Fn(&str) -> bool,
) {
    let found = tokio::time::timeout(LIVE_BOUND, async {
        while let Some(line) = lines.next_line().await.expect("read") {
            if matches(&line) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        found,
        Ok(true),
        "{coding}: the line was not decoded within {LIVE_BOUND:?}"
    );
}
