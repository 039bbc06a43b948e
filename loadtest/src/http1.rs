//! A minimal HTTP/1.1 client for long-lived GET streams: request writer, response-head parser
//! and an incremental chunked-transfer decoder. Cheaper per reader than a full client, which
//! matters when the load test shares the CPU with the server it measures.

/// Why a response could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("response head is malformed")]
    BadHead,
    #[error("response head is larger than {0} bytes")]
    HeadTooLarge(usize),
    #[error("chunk framing is malformed")]
    BadChunk,
}

/// Largest response head accepted.
pub const MAX_HEAD: usize = 16 * 1024;

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Chunked,
    Length(u64),
    /// Until the server closes the connection.
    Close,
}

/// The parts of a response head a load test cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub framing: Framing,
    /// `Content-Type`, lowercased, when present.
    pub content_type: Option<String>,
    /// `Content-Encoding`, lowercased, when present.
    pub content_encoding: Option<String>,
}

/// Builds a GET request. `headers` are written as given (`name`, `value`).
pub fn get_request(host: &str, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Builds a POST request with a `Content-Length` body, for pipelining on one connection.
pub fn post_request(host: &str, path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + body.len());
    for part in [
        "POST ",
        path,
        " HTTP/1.1\r\nHost: ",
        host,
        "\r\nContent-Type: ",
        content_type,
        "\r\nContent-Length: ",
    ] {
        out.extend_from_slice(part.as_bytes());
    }
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
    out
}

/// Reads back-to-back responses (answers to pipelined requests) from a byte stream.
#[derive(Debug, Default)]
pub struct ResponseReader {
    buf: Vec<u8>,
    /// The response whose body is being read.
    current: Option<(u16, BodyDecoder)>,
}

impl ResponseReader {
    /// Feeds received bytes; returns the status of each response they complete, in order.
    pub fn feed(&mut self, input: &[u8]) -> Result<Vec<u16>, ProtocolError> {
        self.buf.extend_from_slice(input);
        let mut done = Vec::new();
        let mut at = 0;
        loop {
            if self.current.is_none() {
                let Some((head, n)) = parse_head(&self.buf[at..])? else {
                    break;
                };
                at += n;
                if head.framing == Framing::Close {
                    // Without a length the next response cannot be found.
                    return Err(ProtocolError::BadHead);
                }
                self.current = Some((head.status, BodyDecoder::new(head.framing)));
            }
            let Some((status, decoder)) = self.current.as_mut() else {
                break;
            };
            at += decoder.feed(&self.buf[at..], &mut |_| {})?;
            if !decoder.is_done() {
                break;
            }
            done.push(*status);
            self.current = None;
        }
        self.buf.drain(..at);
        Ok(done)
    }
}

/// Parses a response head from the start of `buf`. `Ok(None)` means more bytes are needed;
/// `Ok(Some((head, n)))` means the head took the first `n` bytes.
pub fn parse_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, ProtocolError> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err(ProtocolError::HeadTooLarge(MAX_HEAD));
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| ProtocolError::BadHead)?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().ok_or(ProtocolError::BadHead)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().ok_or(ProtocolError::BadHead)?;
    if !version.starts_with("HTTP/1.") {
        return Err(ProtocolError::BadHead);
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or(ProtocolError::BadHead)?;
    let mut framing = Framing::Close;
    let mut content_type = None;
    let mut content_encoding = None;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(ProtocolError::BadHead)?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            if value.to_ascii_lowercase().ends_with("chunked") {
                framing = Framing::Chunked;
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            if framing != Framing::Chunked {
                let n = value.parse().map_err(|_| ProtocolError::BadHead)?;
                framing = Framing::Length(n);
            }
        } else if name.eq_ignore_ascii_case("content-type") {
            content_type = Some(value.to_ascii_lowercase());
        } else if name.eq_ignore_ascii_case("content-encoding") {
            content_encoding = Some(value.to_ascii_lowercase());
        }
    }
    // 1xx, 204 and 304 carry no body whatever the headers say.
    if status == 204 || status == 304 || (100..200).contains(&status) {
        framing = Framing::Length(0);
    }
    Ok(Some((
        ResponseHead {
            status,
            framing,
            content_type,
            content_encoding,
        },
        end + 4,
    )))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Incremental body decoder for the three framings.
#[derive(Debug)]
pub struct BodyDecoder {
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a chunk-size line: the size so far, and whether we are past the hex digits.
    Size {
        size: u64,
        digits: u8,
        in_ext: bool,
    },
    /// Saw CR after the size line; expecting LF.
    SizeLf {
        size: u64,
    },
    /// Inside chunk data.
    Data {
        left: u64,
    },
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// In the trailer section: `at_line_start` tells whether an empty line ends it.
    Trailer {
        at_line_start: bool,
    },
    /// A `Content-Length` body with bytes left.
    Length {
        left: u64,
    },
    /// Until EOF.
    Close,
    Done,
}

impl BodyDecoder {
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Chunked => State::Size {
                size: 0,
                digits: 0,
                in_ext: false,
            },
            Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length { left: n },
            Framing::Close => State::Close,
        };
        Self { state }
    }

    /// The body is complete (last chunk and trailers, or all of `Content-Length`).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether EOF from the server is a normal end of this body.
    pub fn eof_is_end(&self) -> bool {
        matches!(self.state, State::Close | State::Done)
    }

    /// Decodes `input`, passing each run of body bytes to `on_body`. Returns how many bytes
    /// were the body's: bytes after its end (a pipelined next response) are left alone.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        on_body: &mut impl FnMut(&[u8]),
    ) -> Result<usize, ProtocolError> {
        let given = input.len();
        while !input.is_empty() {
            match self.state {
                State::Close => {
                    on_body(input);
                    return Ok(given);
                }
                State::Done => return Ok(given - input.len()),
                State::Length { left } | State::Data { left } => {
                    let take = input.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    on_body(&input[..take]);
                    input = &input[take..];
                    let left = left - take as u64;
                    self.state = match self.state {
                        State::Length { .. } if left == 0 => State::Done,
                        State::Length { .. } => State::Length { left },
                        _ if left == 0 => State::DataCr,
                        _ => State::Data { left },
                    };
                }
                _ => {
                    let b = input[0];
                    input = &input[1..];
                    self.state = self.step(b)?;
                }
            }
        }
        Ok(given)
    }

    fn step(&self, b: u8) -> Result<State, ProtocolError> {
        Ok(match self.state {
            State::Size {
                size,
                digits,
                in_ext,
            } => match b {
                b'\r' if digits > 0 => State::SizeLf { size },
                b'\n' if digits > 0 => Self::after_size(size),
                _ if in_ext => State::Size {
                    size,
                    digits,
                    in_ext,
                },
                b';' | b' ' | b'\t' if digits > 0 => State::Size {
                    size,
                    digits,
                    in_ext: true,
                },
                _ => {
                    let d = (b as char).to_digit(16).ok_or(ProtocolError::BadChunk)?;
                    if digits >= 15 {
                        return Err(ProtocolError::BadChunk);
                    }
                    State::Size {
                        size: size * 16 + u64::from(d),
                        digits: digits + 1,
                        in_ext: false,
                    }
                }
            },
            State::SizeLf { size } if b == b'\n' => Self::after_size(size),
            State::DataCr if b == b'\r' => State::DataLf,
            State::DataCr if b == b'\n' => Self::size_start(),
            State::DataLf if b == b'\n' => Self::size_start(),
            State::Trailer { at_line_start } => match b {
                b'\r' => State::Trailer { at_line_start },
                b'\n' if at_line_start => State::Done,
                b'\n' => State::Trailer {
                    at_line_start: true,
                },
                _ => State::Trailer {
                    at_line_start: false,
                },
            },
            _ => return Err(ProtocolError::BadChunk),
        })
    }

    fn after_size(size: u64) -> State {
        if size == 0 {
            State::Trailer {
                at_line_start: true,
            }
        } else {
            State::Data { left: size }
        }
    }

    fn size_start() -> State {
        State::Size {
            size: 0,
            digits: 0,
            in_ext: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNKED: &[u8] = b"7\r\nretry: \r\n5;ext=1\r\n2000\n\r\nA\r\nid: 1\ndata\r\n0\r\nx-trailer: y\r\n\r\nGARBAGE";

    fn decode(parts: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut dec = BodyDecoder::new(Framing::Chunked);
        let mut out = Vec::new();
        for p in parts {
            dec.feed(p, &mut |b| out.extend_from_slice(b)).unwrap();
        }
        (out, dec.is_done())
    }

    #[test]
    fn chunked_split_at_every_offset() {
        let want = b"retry: 2000\nid: 1\ndata".to_vec();
        for cut in 0..=CHUNKED.len() {
            let (a, b) = CHUNKED.split_at(cut);
            assert_eq!(decode(&[a, b]), (want.clone(), true), "split at {cut}");
        }
        let bytes: Vec<&[u8]> = CHUNKED.chunks(1).collect();
        assert_eq!(decode(&bytes), (want, true));
    }

    #[test]
    fn bad_chunk_size_is_an_error() {
        let mut dec = BodyDecoder::new(Framing::Chunked);
        assert_eq!(
            dec.feed(b"zz\r\n", &mut |_| {}),
            Err(ProtocolError::BadChunk)
        );
    }

    #[test]
    fn pipelined_responses_are_read_back_in_order_at_every_split() {
        let raw: &[u8] = b"HTTP/1.1 202 Accepted\r\nContent-Length: 5\r\n\r\nhello\
            HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
            HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
        for cut in 0..=raw.len() {
            let mut reader = ResponseReader::default();
            let (a, b) = raw.split_at(cut);
            let mut statuses = reader.feed(a).unwrap();
            statuses.extend(reader.feed(b).unwrap());
            assert_eq!(statuses, [202, 500, 201], "split at {cut}");
        }
        let request = post_request("h", "/pub/j", "text/plain", b"line");
        assert!(request.starts_with(b"POST /pub/j HTTP/1.1\r\nHost: h\r\n"));
        assert!(request.ends_with(b"Content-Length: 4\r\n\r\nline"));
    }

    #[test]
    fn head_parses_status_and_framing() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\nrest";
        let (head, n) = parse_head(raw).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.framing, Framing::Chunked);
        assert_eq!(&raw[n..], b"rest");
        assert!(parse_head(&raw[..20]).unwrap().is_none());
        let (head, _) = parse_head(b"HTTP/1.1 204 No Content\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.framing, Framing::Length(0));
    }
}
