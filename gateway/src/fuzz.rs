//! Fuzz harnesses: one function per parser that takes what a client controls, panicking
//! when an invariant breaks. `gateway/fuzz/` drives them with libFuzzer (cargo-fuzz);
//! `tests/fuzz_corpus.rs` replays the committed corpus and every kept crash on stable.
//! Not an API: public only so the fuzz crate can reach the crate's internals.

use bytes::{Bytes, BytesMut};

use crate::auth::{token_from_request, Access, AuthSettings, Authenticator};
use crate::capgo::frames::{self, ClientFrame};
use crate::job_id::JobId;
use crate::publish::lines::{LineSplitter, Overflow};
use crate::publish::{Format, Parser, UploadLimits};
use crate::record::{RecordBody, Stream};
use crate::sse;

/// The SSE encoder and the line splitter: any text, encoded as an event between the
/// opening bytes and keep-alives, reads back through a spec parser (WHATWG "interpret an
/// event stream") as exactly that one event, its line ends normalised to LF.
pub fn sse_event(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut wire = BytesMut::from(sse::PRELUDE);
    wire.extend_from_slice(sse::KEEPALIVE);
    sse::write_event(&mut wire, Some(7), "log", &text);
    wire.extend_from_slice(sse::KEEPALIVE);
    let events = spec_parse(&wire);
    let want = text.replace("\r\n", "\n").replace('\r', "\n");
    assert_eq!(
        events,
        vec![(Some("7".to_string()), "log".to_string(), want)]
    );
}

/// The upload splitter: lines never exceed the limit, and (under `Split`) the pieces
/// joined again are the input without its line ends.
pub fn line_splitter(data: &[u8]) {
    let Some((&knob, body)) = data.split_first() else {
        return;
    };
    let max = 4 + usize::from(knob % 64);
    let cut = usize::from(knob).min(body.len());
    let (a, b) = body.split_at(cut);
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut splitter = LineSplitter::new(max, Overflow::Split);
    for chunk in [a, b] {
        let pushed = splitter.push(chunk, &mut |line| lines.push(line.to_vec()));
        assert!(pushed.is_ok(), "Split never refuses");
    }
    splitter.finish(&mut |line| lines.push(line.to_vec()));
    for line in &lines {
        assert!(line.len() <= max, "{} > {max}", line.len());
    }
    let kept: usize = lines.iter().map(Vec::len).sum();
    let bytes_but_lf = body.iter().filter(|&&b| b != b'\n').count();
    assert!(kept <= bytes_but_lf, "no byte is made up");
    let mut refuse = LineSplitter::new(max, Overflow::Refuse);
    let _ = refuse.push(body, &mut |line| assert!(line.len() <= max));
    refuse.finish(&mut |line| assert!(line.len() <= max));
}

/// The NDJSON upload parser: never panics; every record it yields is well formed, its
/// log lines within `--max-line-bytes`; a bad record names a line that exists.
pub fn ndjson_records(data: &[u8]) {
    let limits = UploadLimits {
        max_line_bytes: 32,
        max_record_bytes: 256,
    };
    let mut parser = Parser::new(Format::Ndjson, Stream::Stdout, limits, Some(3));
    let half = data.len() / 2;
    let mut failed = parser.push(&Bytes::copy_from_slice(&data[..half]));
    failed = failed.or_else(|| parser.push(&Bytes::copy_from_slice(&data[half..])));
    failed = failed.or_else(|| parser.finish());
    let lines = data.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    if let Some((line, _)) = failed {
        assert!((1..=lines).contains(&line), "line {line} of {lines}");
    }
    // A resent record (`n` at or below the highest seen) stays whole, for the log to drop
    // whole; every other log line is within the limit.
    let mut highest = Some(3);
    for record in parser.take() {
        let resend = matches!((record.n, highest), (Some(n), Some(h)) if n <= h);
        highest = highest.max(record.n);
        if let RecordBody::Log { stream, line } = &record.body {
            assert!(resend || line.len() <= limits.max_line_bytes);
            assert_ne!(*stream, Stream::System, "system is the gateway's");
        }
    }
}

/// Token extraction and claims parsing: whatever the headers and query, extraction and
/// verification end in a token or a refusal, never a panic, and an unsigned or forged
/// token is never accepted.
pub fn token(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (header, query) = text.split_once('\n').unwrap_or((&text, ""));
    let mut headers = http::HeaderMap::new();
    for (name, value) in [("authorization", header), ("x-capgo-log-token", header)] {
        if let Ok(value) = http::HeaderValue::from_str(value) {
            headers.append(name, value);
        }
    }
    let auth = authenticator();
    let job = JobId::parse("fuzz-job").expect("a valid job id");
    if let Some(token) = token_from_request(&headers, Some(query)) {
        let verified = auth.verify(&token, &job, Access::Read);
        assert!(
            verified.is_err(),
            "a token signed without the secret was accepted"
        );
    }
    let _ = auth.verify(&text, &job, Access::Publish);
}

fn authenticator() -> &'static Authenticator {
    static AUTH: std::sync::OnceLock<Authenticator> = std::sync::OnceLock::new();
    AUTH.get_or_init(|| {
        let settings = AuthSettings {
            hmac_secret: Some(b"fuzz-secret-never-in-any-input-0123456789".to_vec()),
            keys: Vec::new(),
            issuer: "fuzz".into(),
            audience: "fuzz".into(),
            job_claim: "job_id".into(),
            leeway: std::time::Duration::from_secs(30),
        };
        Authenticator::new(&settings).expect("an HMAC authenticator")
    })
}

/// Job ids, a security boundary (they name files): an accepted id is 1 to 128 bytes of
/// `[A-Za-z0-9._-]`, not `.` or `..`, and is exactly the input.
pub fn job_id(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(id) = JobId::parse(&text) {
        let s = id.as_str();
        assert_eq!(s, text);
        assert!((1..=128).contains(&s.len()));
        assert!(s != "." && s != "..");
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
    }
}

/// The socket path's request head: whatever the bytes, the head it takes is a plain
/// `GET .../logs` with no body, upgrade or expectation; anything else goes to hyper.
pub fn request_head(data: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; crate::socket::MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    if parsed.parse(data).is_err() {
        return;
    }
    if let Some(req) = crate::socket::request(&parsed) {
        assert_eq!(req.method(), http::Method::GET);
        assert!(crate::routes::stream_route(req.uri().path()).is_some());
        for name in [
            http::header::TRANSFER_ENCODING,
            http::header::UPGRADE,
            http::header::EXPECT,
        ] {
            assert!(!req.headers().contains_key(name));
        }
    }
}

/// Capgo's client frames: any text is a heartbeat, a confirmation or ignored.
pub fn capgo_frame(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match frames::parse_client(&text) {
        ClientFrame::Heartbeat { .. } | ClientFrame::Confirmed { .. } => {
            assert!(text.contains("\"type\""), "a frame without a type was read");
        }
        ClientFrame::Other => {}
    }
}

/// A harness: panics when an invariant breaks.
pub type Harness = fn(&[u8]);

/// Every harness by name, for the corpus replay.
pub const TARGETS: &[(&str, Harness)] = &[
    ("sse_event", sse_event),
    ("line_splitter", line_splitter),
    ("ndjson_records", ndjson_records),
    ("token", token),
    ("job_id", job_id),
    ("request_head", request_head),
    ("capgo_frame", capgo_frame),
];

/// A spec-correct SSE parser: (id, event, data) of each dispatched event.
fn spec_parse(wire: &[u8]) -> Vec<(Option<String>, String, String)> {
    let text = String::from_utf8_lossy(wire);
    let (mut id, mut event, mut data) = (None, String::new(), Vec::<String>::new());
    let mut events = Vec::new();
    let mut rest = text.as_ref();
    // Only whole lines (ended by CR, LF or CRLF) count.
    while let Some(end) = rest.find(['\r', '\n']) {
        let line = &rest[..end];
        let skip = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
        if line.is_empty() {
            if !data.is_empty() {
                events.push((id.clone(), std::mem::take(&mut event), data.join("\n")));
            }
            data.clear();
            event.clear();
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "id" => id = Some(value.to_string()),
            "event" => event = value.to_string(),
            "data" => data.push(value.to_string()),
            _ => {}
        }
    }
    events
}
