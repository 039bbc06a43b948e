//! Server-sent events encoding: injection-proof fields, each event encoded once.
//!
//! The SSE spec ends a line at CR, LF or CRLF, so data is split at all three; ids and
//! event names come from the gateway, never from input.

use bytes::{BufMut, Bytes, BytesMut};

/// The first bytes of every stream: a reconnect delay and a comment, so proxies and
/// clients see the stream open before any log line exists. No blank line: `retry:` shares
/// the first event's block, because clients with known bugs (`fetch-event-source`,
/// `httpx-sse`) fire an empty event for a block that holds only `retry:`.
pub(crate) const PRELUDE: &[u8] = b"retry: 2000\n: tailgate stream open\n";

/// An idle keep-alive: one comment line that does not end a block. A blank line after it
/// would make `fetch-event-source` (any blank line) and `httpx-sse` (once an id was seen)
/// fire an empty event.
pub(crate) const KEEPALIVE: &[u8] = b":\n";

/// Appends one event to `out`. `data` is split into one `data:` field per line, at CR,
/// LF and CRLF; a reader joins them with LF.
pub(crate) fn write_event(out: &mut BytesMut, id: Option<u64>, event: &str, data: &str) {
    debug_assert!(!event.contains(['\r', '\n']));
    if let Some(id) = id {
        out.put_slice(b"id: ");
        out.put_slice(id.to_string().as_bytes());
        out.put_u8(b'\n');
    }
    out.put_slice(b"event: ");
    out.put_slice(event.as_bytes());
    out.put_u8(b'\n');
    for line in split_lines(data) {
        out.put_slice(b"data: ");
        out.put_slice(line.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
}

/// One event as its own buffer, allocated to its exact size: records held in memory
/// are counted by their length, so no slack may hide behind it. Sized for one `data:`
/// line (a record's JSON always is); data with line breaks is trimmed after writing.
pub(crate) fn event(id: Option<u64>, event: &str, data: &str) -> Bytes {
    let mut len = 7 + event.len() + 1 + 6 + data.len() + 1 + 1;
    if let Some(id) = id {
        len += 4 + digits(id) + 1;
    }
    let mut out = BytesMut::with_capacity(len);
    write_event(&mut out, id, event, data);
    let mut out = Vec::from(out);
    if out.len() != len {
        out.shrink_to_fit();
    }
    Bytes::from(out)
}

fn digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// Splits at CR, LF and CRLF (CRLF is one break). Unlike `str::lines`, a bare CR
/// also ends a line, as it does for an SSE parser.
pub(crate) fn split_lines(data: &str) -> impl Iterator<Item = &str> {
    let bytes = data.as_bytes();
    let mut start = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let rest = &bytes[start..];
        match rest.iter().position(|&b| b == b'\r' || b == b'\n') {
            Some(i) => {
                let line = &data[start..start + i];
                let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                start += i + skip;
                Some(line)
            }
            None => {
                done = true;
                Some(&data[start..])
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A spec-correct SSE parser (WHATWG "interpret an event stream"), fed in pieces.
    #[derive(Default)]
    struct Parser {
        buf: Vec<u8>,
        pending_cr: bool,
        id: Option<String>,
        event: String,
        data: Vec<String>,
        events: Vec<(Option<String>, String, String)>,
    }

    impl Parser {
        fn feed(&mut self, chunk: &[u8]) {
            for &b in chunk {
                if self.pending_cr {
                    self.pending_cr = false;
                    if b == b'\n' {
                        continue;
                    }
                }
                match b {
                    b'\r' => {
                        self.pending_cr = true;
                        self.line();
                    }
                    b'\n' => self.line(),
                    _ => self.buf.push(b),
                }
            }
        }

        fn line(&mut self) {
            let line = String::from_utf8(std::mem::take(&mut self.buf)).unwrap();
            if line.is_empty() {
                if !self.data.is_empty() {
                    let data = self.data.join("\n");
                    let event = std::mem::take(&mut self.event);
                    self.events.push((self.id.clone(), event, data));
                }
                self.data.clear();
                self.event.clear();
                return;
            }
            if line.starts_with(':') {
                return;
            }
            let (field, value) = match line.find(':') {
                Some(i) => {
                    let v = &line[i + 1..];
                    (&line[..i], v.strip_prefix(' ').unwrap_or(v))
                }
                None => (line.as_str(), ""),
            };
            match field {
                "id" => self.id = Some(value.to_string()),
                "event" => self.event = value.to_string(),
                "data" => self.data.push(value.to_string()),
                _ => {}
            }
        }
    }

    /// How a client with the known empty-event bugs reads a stream: `fetch-event-source`
    /// 2.0.1 dispatches at every blank line; `httpx-sse` 0.4.3 at a blank line once any of
    /// event, data, id (which persists) or retry is set. Returns the dispatched data.
    fn buggy_dispatches(wire: &[u8], persist_id: bool) -> Vec<String> {
        let text = String::from_utf8_lossy(wire)
            .replace("\r\n", "\n")
            .replace('\r', "\n");
        let (mut data, mut event, mut id, mut retry) = (Vec::new(), false, false, false);
        let mut out = Vec::new();
        // Only whole lines: what follows the last line end is not a line yet.
        let mut lines: Vec<&str> = text.split('\n').collect();
        lines.pop();
        for line in lines {
            if line.is_empty() {
                if !persist_id || event || !data.is_empty() || id || retry {
                    out.push(data.join("\n"));
                }
                (data, event, retry) = (Vec::new(), false, false);
                if !persist_id {
                    id = false;
                }
                continue;
            }
            match line.split(':').next() {
                Some("data") => {
                    data.push(line.trim_start_matches("data:").trim_start().to_string())
                }
                Some("event") => event = true,
                Some("id") => id = true,
                Some("retry") => retry = true,
                _ => {}
            }
        }
        out
    }

    #[test]
    fn buggy_clients_see_no_empty_event_for_the_opening_or_keepalives() {
        let mut wire = BytesMut::from(PRELUDE);
        wire.put_slice(KEEPALIVE);
        write_event(&mut wire, Some(1), "log", "one");
        wire.put_slice(KEEPALIVE);
        wire.put_slice(KEEPALIVE);
        write_event(&mut wire, Some(2), "status", "two");
        wire.put_slice(KEEPALIVE);
        for persist_id in [false, true] {
            assert_eq!(
                buggy_dispatches(&wire, persist_id),
                vec!["one".to_string(), "two".to_string()],
                "persist_id {persist_id}"
            );
        }
        let mut p = Parser::default();
        p.feed(&wire);
        assert_eq!(p.events.len(), 2, "a spec parser agrees");
    }

    fn normalise(s: &str) -> String {
        s.replace("\r\n", "\n").replace('\r', "\n")
    }

    #[test]
    fn forged_fields_stay_data() {
        let line = "x\r\nevent: status\r\ndata: {\"status\":\"succeeded\"}\r\rid: 99\n\nretry: 1";
        let bytes = event(Some(7), "log", line);
        let mut p = Parser::default();
        p.feed(PRELUDE);
        p.feed(&bytes);
        assert_eq!(
            p.events,
            vec![(Some("7".into()), "log".into(), normalise(line))]
        );
    }

    proptest! {
        #[test]
        fn parser_recovers_every_event_at_every_split(
            lines in proptest::collection::vec("(\\PC|[\r\n\u{0}\u{1b}:]){0,40}", 1..4),
            id in 1u64..u64::MAX,
        ) {
            let mut wire = BytesMut::new();
            wire.put_slice(PRELUDE);
            for (i, line) in lines.iter().enumerate() {
                write_event(&mut wire, Some(id.wrapping_add(i as u64)), "log", line);
                wire.put_slice(KEEPALIVE);
            }
            let expected: Vec<_> = lines
                .iter()
                .enumerate()
                .map(|(i, l)| (Some(id.wrapping_add(i as u64).to_string()), "log".to_string(), normalise(l)))
                .collect();
            for cut in 0..=wire.len() {
                let mut p = Parser::default();
                p.feed(&wire[..cut]);
                p.feed(&wire[cut..]);
                prop_assert_eq!(&p.events, &expected);
            }
        }
    }

    #[test]
    fn split_lines_treats_crlf_as_one_break() {
        let got: Vec<_> = split_lines("a\r\nb\rc\nd\r").collect();
        assert_eq!(got, vec!["a", "b", "c", "d", ""]);
        assert_eq!(split_lines("").collect::<Vec<_>>(), vec![""]);
    }
}
