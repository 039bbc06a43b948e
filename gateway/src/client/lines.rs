//! Splits a command's output into log lines as `push` sends them: a line ends at LF (one
//! trailing CR dropped, a bare CR kept), pieces of a line stay one line, a partial last line
//! is flushed at the end, and an over-long line is split at a character boundary.

/// Longest line sent as one record (the gateway's default plain-text line limit).
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Turns byte chunks into lines.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
}

impl Default for LineSplitter {
    fn default() -> Self {
        Self::new(MAX_LINE_BYTES)
    }
}

impl LineSplitter {
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max: max.max(4),
        }
    }

    /// Feeds `chunk`; calls `emit` with each completed line (invalid UTF-8 replaced).
    pub fn feed(&mut self, chunk: &[u8], mut emit: impl FnMut(String)) {
        let mut rest = chunk;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            self.push(&rest[..i], &mut emit);
            let mut line = std::mem::take(&mut self.buf);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            emit(String::from_utf8_lossy(&line).into_owned());
            rest = &rest[i + 1..];
        }
        self.push(rest, &mut emit);
    }

    /// The partial last line, if any.
    pub fn finish(&mut self) -> Option<String> {
        if self.buf.is_empty() {
            return None;
        }
        Some(String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned())
    }

    /// Appends to the current line, emitting `max`-byte pieces of an over-long one.
    fn push(&mut self, mut bytes: &[u8], emit: &mut impl FnMut(String)) {
        while self.buf.len() + bytes.len() > self.max {
            let take = self.max - self.buf.len();
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            let cut = cut_point(&self.buf);
            let tail = self.buf.split_off(cut);
            emit(String::from_utf8_lossy(&std::mem::replace(&mut self.buf, tail)).into_owned());
        }
        self.buf.extend_from_slice(bytes);
    }
}

/// Length of `buf` without a trailing incomplete UTF-8 sequence (never 0 for a `buf` over
/// 3 bytes).
fn cut_point(buf: &[u8]) -> usize {
    let len = buf.len();
    let mut start = len;
    while start > 0 && len - start < 3 && (buf[start - 1] & 0xC0) == 0x80 {
        start -= 1;
    }
    if start == 0 {
        return len;
    }
    let need = match buf[start - 1] {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => return len,
    };
    if len - (start - 1) < need && start > 1 {
        start - 1
    } else {
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], max: usize) -> Vec<String> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, |l| out.push(l));
        }
        out.extend(s.finish());
        out
    }

    #[test]
    fn lines_end_at_lf_and_pieces_stay_one_line() {
        assert_eq!(
            split(&[b"a\r\nb", b"c\rd\n\n", b"last"], 100),
            ["a", "bc\rd", "", "last"]
        );
        assert_eq!(split(&[b"x\n"], 100), ["x"]);
        assert_eq!(split(&[b"\xffok\n"], 100), ["\u{fffd}ok"]);
    }

    #[test]
    fn long_lines_split_at_char_boundaries() {
        let text = "é".repeat(10);
        let lines = split(&[text.as_bytes(), b"\n"], 5);
        assert!(
            lines
                .iter()
                .all(|l| !l.contains('\u{fffd}') && l.len() <= 5),
            "{lines:?}"
        );
        assert_eq!(lines.concat(), text);
        let lines = split(&[b"abcdefghij\n"], 4);
        assert_eq!(lines, ["abcd", "efgh", "ij"]);
    }
}
