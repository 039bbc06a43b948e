//! The load test's log line: `<counter> <unix_micros> <padding>`, written by the publisher and
//! read back by readers, from a raw line (nchan) or from a Tailgate `log` event's JSON.

use std::path::Path;
use std::sync::OnceLock;

/// The corpus lines (`--corpus`), when given: published after the counter and time.
static CORPUS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();

/// Loads every `*.log` of `dir` (sorted by name), line by line, for [`write_line`].
/// Returns the number of lines.
pub fn load_corpus(dir: &Path) -> std::io::Result<usize> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    let mut lines = Vec::new();
    for f in files {
        let text = std::fs::read(&f)?;
        lines.extend(
            text.split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec),
        );
    }
    if lines.is_empty() {
        return Err(std::io::Error::other(format!(
            "no lines in {}/*.log",
            dir.display()
        )));
    }
    let n = lines.len();
    let _ = CORPUS.set(lines);
    Ok(n)
}

/// Appends one line (without its LF) to `out`: the counter, the time, then the corpus line
/// of that counter when a corpus is loaded, else padding to at least `line_bytes` bytes.
pub fn write_line(out: &mut Vec<u8>, counter: u64, unix_micros: u64, line_bytes: usize) {
    let start = out.len();
    push_decimal(out, counter);
    out.push(b' ');
    push_decimal(out, unix_micros);
    if let Some(corpus) = CORPUS.get() {
        out.push(b' ');
        out.extend_from_slice(&corpus[(counter as usize - 1) % corpus.len()]);
        return;
    }
    let written = out.len() - start;
    if written < line_bytes {
        out.push(b' ');
        out.resize(start + line_bytes, b'x');
    }
}

fn push_decimal(out: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

/// Reads the counter and send time from the start of a line.
pub fn parse_line(line: &[u8]) -> Option<(u64, u64)> {
    let (counter, rest) = take_decimal(line)?;
    let rest = rest.strip_prefix(b" ")?;
    let (micros, rest) = take_decimal(rest)?;
    match rest.first() {
        None | Some(b' ') => Some((counter, micros)),
        _ => None,
    }
}

fn take_decimal(s: &[u8]) -> Option<(u64, &[u8])> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in &s[..digits] {
        v = v * 10 + u64::from(b - b'0');
    }
    Some((v, &s[digits..]))
}

/// Finds the `line` string of a Tailgate log event's JSON and parses its start. The fast path
/// looks for `"line":"` directly (our lines need no escaping); anything else goes through
/// serde_json.
pub fn parse_tailgate_data(data: &[u8]) -> Option<(u64, u64)> {
    const KEY: &[u8] = b"\"line\":\"";
    if let Some(pos) = data.windows(KEY.len()).position(|w| w == KEY) {
        if let Some(found) = parse_line(&data[pos + KEY.len()..]) {
            return Some(found);
        }
    }
    let value: serde_json::Value = serde_json::from_slice(data).ok()?;
    parse_line(value.get("line")?.as_str()?.as_bytes())
}

/// Whether a Tailgate `status` event's JSON carries a terminal status.
pub fn is_terminal_status(data: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return false;
    };
    if value.get("final").and_then(|f| f.as_bool()) == Some(true) {
        return true;
    }
    matches!(
        value.get("status").and_then(|s| s.as_str()),
        Some("succeeded" | "failed" | "cancelled" | "expired" | "released" | "lost")
    )
}

/// The `from..=to` range of a `gap` event.
pub fn parse_gap(data: &[u8]) -> Option<(u64, u64)> {
    let value: serde_json::Value = serde_json::from_slice(data).ok()?;
    Some((value.get("from")?.as_u64()?, value.get("to")?.as_u64()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_roundtrip_and_padding() {
        let mut out = Vec::new();
        write_line(&mut out, 42, 1_700_000_000_123_456, 60);
        assert_eq!(out.len(), 60);
        assert_eq!(parse_line(&out), Some((42, 1_700_000_000_123_456)));
        let mut short = Vec::new();
        write_line(&mut short, 7, 9, 1);
        assert_eq!(short, b"7 9");
        assert_eq!(parse_line(&short), Some((7, 9)));
    }

    #[test]
    fn tailgate_json_fast_and_slow_path() {
        let fast = br#"{"seq":3,"ts":"t","stream":"stdout","line":"3 99 xxx"}"#;
        assert_eq!(parse_tailgate_data(fast), Some((3, 99)));
        let spaced = br#"{"seq":3, "line" : "4 100 x"}"#;
        assert_eq!(parse_tailgate_data(spaced), Some((4, 100)));
        assert_eq!(parse_tailgate_data(b"{\"line\":\"nope\"}"), None);
    }

    #[test]
    fn status_and_gap() {
        assert!(is_terminal_status(
            br#"{"seq":9,"status":"succeeded","exit_code":0,"final":true}"#
        ));
        assert!(!is_terminal_status(br#"{"seq":9,"status":"running"}"#));
        assert_eq!(parse_gap(br#"{"from":3,"to":8}"#), Some((3, 8)));
    }
}
