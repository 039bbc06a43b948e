//! Incremental server-sent events parser (WHATWG EventSource rules).
//!
//! Feed it body bytes split anywhere; it calls back once per dispatched event. CR, LF and CRLF
//! all end a line, even when the CR and the LF arrive in different chunks.

/// One dispatched event, borrowed from the parser's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// The last event id in force when this event was dispatched (ids persist across events).
    pub id: &'a [u8],
    /// The `event:` field, or `message` when none was given.
    pub kind: &'a [u8],
    /// The `data:` lines joined with LF.
    pub data: &'a [u8],
}

/// Parser state carried between chunks.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the current, unfinished line.
    line: Vec<u8>,
    /// The previous chunk ended with CR: a leading LF in the next one belongs to that line end.
    skip_lf: bool,
    /// `data:` lines of the event being built, joined with LF.
    data: Vec<u8>,
    /// Whether any `data:` field was seen for the event being built (empty data still counts).
    has_data: bool,
    /// `event:` field of the event being built.
    kind: Vec<u8>,
    /// Last event id, which stays set across events until a new `id:` field changes it.
    last_id: Vec<u8>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// The last event id seen so far (what a client sends as `Last-Event-ID` on reconnect).
    pub fn last_id(&self) -> &[u8] {
        &self.last_id
    }

    /// Sets the last event id, as a client does when it resumes with `Last-Event-ID`.
    pub fn set_last_id(&mut self, id: &[u8]) {
        self.last_id.clear();
        self.last_id.extend_from_slice(id);
    }

    /// Bytes held for an unfinished line (a reader's memory cost between reads).
    pub fn buffered(&self) -> usize {
        self.line.len() + self.data.len()
    }

    /// Parses `chunk`, calling `on_event` for each complete event.
    pub fn feed(&mut self, mut chunk: &[u8], on_event: &mut impl FnMut(Event<'_>)) {
        if chunk.is_empty() {
            return;
        }
        if self.skip_lf {
            self.skip_lf = false;
            if let [b'\n', rest @ ..] = chunk {
                chunk = rest;
            }
        }
        while !chunk.is_empty() {
            match chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
                None => {
                    self.line.extend_from_slice(chunk);
                    return;
                }
                Some(end) => {
                    let is_cr = chunk[end] == b'\r';
                    if self.line.is_empty() {
                        self.process_line(Line::Chunk(end), chunk, on_event);
                    } else {
                        self.line.extend_from_slice(&chunk[..end]);
                        self.process_line(Line::Owned, chunk, on_event);
                    }
                    chunk = &chunk[end + 1..];
                    if is_cr {
                        match chunk {
                            [b'\n', rest @ ..] => chunk = rest,
                            [] => self.skip_lf = true,
                            _ => {}
                        }
                    }
                }
            }
        }
    }

    fn process_line(&mut self, which: Line, chunk: &[u8], on_event: &mut impl FnMut(Event<'_>)) {
        let owned = std::mem::take(&mut self.line);
        let line: &[u8] = match which {
            Line::Chunk(end) => &chunk[..end],
            Line::Owned => &owned,
        };
        if line.is_empty() {
            self.dispatch(on_event);
        } else if line[0] != b':' {
            let (name, value) = match line.iter().position(|&b| b == b':') {
                Some(colon) => {
                    let value = &line[colon + 1..];
                    (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (line, &b""[..]),
            };
            match name {
                b"data" => {
                    if self.has_data {
                        self.data.push(b'\n');
                    }
                    self.data.extend_from_slice(value);
                    self.has_data = true;
                }
                b"event" => {
                    self.kind.clear();
                    self.kind.extend_from_slice(value);
                }
                b"id" if !value.contains(&0) => {
                    self.last_id.clear();
                    self.last_id.extend_from_slice(value);
                }
                _ => {} // `retry` and unknown fields do not matter to a load test
            }
        }
        // Give the allocation back so the next long line does not reallocate.
        self.line = owned;
        self.line.clear();
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(Event<'_>)) {
        if self.has_data {
            let kind: &[u8] = if self.kind.is_empty() {
                b"message"
            } else {
                &self.kind
            };
            on_event(Event {
                id: &self.last_id,
                kind,
                data: &self.data,
            });
        }
        self.data.clear();
        self.kind.clear();
        self.has_data = false;
    }
}

/// Where the current line's bytes are: in the incoming chunk, or accumulated in `line`.
enum Line {
    Chunk(usize),
    Owned,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    struct Owned {
        id: String,
        kind: String,
        data: String,
    }

    fn parse(chunks: &[&[u8]]) -> Vec<Owned> {
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, &mut |ev| {
                out.push(Owned {
                    id: String::from_utf8_lossy(ev.id).into_owned(),
                    kind: String::from_utf8_lossy(ev.kind).into_owned(),
                    data: String::from_utf8_lossy(ev.data).into_owned(),
                })
            });
        }
        out
    }

    const STREAM: &[u8] = b"retry: 2000\n: open\n\nid: 1\nevent: log\ndata: {\"seq\":1,\"line\":\"a\"}\n\n\
id: 2\r\nevent: log\r\ndata: two\r\ndata:lines\r\n\r\n: keep-alive\rid: 3\revent: gap\rdata: {\"from\":3,\"to\":4}\r\r\
data\n\nevent: status\ndata: done\n\n";

    fn expected() -> Vec<Owned> {
        let e = |id: &str, kind: &str, data: &str| Owned {
            id: id.into(),
            kind: kind.into(),
            data: data.into(),
        };
        vec![
            e("1", "log", "{\"seq\":1,\"line\":\"a\"}"),
            e("2", "log", "two\nlines"),
            e("3", "gap", "{\"from\":3,\"to\":4}"),
            e("3", "message", ""),
            e("3", "status", "done"),
        ]
    }

    #[test]
    fn parses_whole_stream() {
        assert_eq!(parse(&[STREAM]), expected());
    }

    #[test]
    fn split_at_every_offset_gives_the_same_events() {
        for cut in 0..=STREAM.len() {
            let (a, b) = STREAM.split_at(cut);
            assert_eq!(parse(&[a, b]), expected(), "split at {cut}");
        }
    }

    #[test]
    fn split_at_every_pair_of_offsets_and_byte_by_byte() {
        for i in 0..=STREAM.len() {
            for j in i..=STREAM.len() {
                let parts = [&STREAM[..i], &STREAM[i..j], &STREAM[j..]];
                assert_eq!(parse(&parts), expected(), "split at {i},{j}");
            }
        }
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(parse(&bytes), expected());
    }

    #[test]
    fn crlf_split_between_chunks_is_one_line_end() {
        // "data: a\r" | "\n\r\n": one CRLF, then an empty line: one event "a".
        let events = parse(&[b"data: a\r", b"\n\r\n"]);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "a");
    }

    #[test]
    fn unfinished_event_is_not_dispatched() {
        assert!(parse(&[b"id: 9\ndata: partial\n"]).is_empty());
    }
}
