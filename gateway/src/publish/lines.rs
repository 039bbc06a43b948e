//! Splitting an upload into lines: at LF, a trailing CR dropped, a bare CR kept, over-long
//! lines cut at a character boundary, a line written across chunks kept whole.

/// What to do with a line longer than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overflow {
    /// Cut it into pieces of at most the limit (plain-text log lines).
    Split,
    /// Refuse it (NDJSON records, which cannot be cut).
    Refuse,
}

/// A line longer than the limit under [`Overflow::Refuse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LineTooLong;

/// Carries the partial last line of one chunk over to the next.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    /// Bytes of the line not yet ended by LF; never longer than `max`.
    partial: Vec<u8>,
    max: usize,
    overflow: Overflow,
    /// Under `Refuse`: the current line already overflowed; skip to its LF.
    refusing: bool,
}

impl LineSplitter {
    pub(crate) fn new(max: usize, overflow: Overflow) -> Self {
        Self {
            partial: Vec::new(),
            max: max.max(4),
            overflow,
            refusing: false,
        }
    }

    /// Feeds one chunk; `emit` gets each completed line (without LF or trailing CR).
    pub(crate) fn push(
        &mut self,
        mut chunk: &[u8],
        emit: &mut dyn FnMut(&[u8]),
    ) -> Result<(), LineTooLong> {
        while !chunk.is_empty() {
            let (piece, ended) = match memchr_lf(chunk) {
                Some(i) => (&chunk[..i], true),
                None => (chunk, false),
            };
            chunk = if ended {
                &chunk[piece.len() + 1..]
            } else {
                &[]
            };
            self.extend(piece, emit)?;
            if ended {
                let line = std::mem::take(&mut self.partial);
                self.refusing = false;
                emit(strip_cr(&line));
                self.partial = line;
                self.partial.clear();
            }
        }
        Ok(())
    }

    /// Ends the body: a partial last line is a line too.
    pub(crate) fn finish(&mut self, emit: &mut dyn FnMut(&[u8])) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            emit(strip_cr(&line));
        }
    }

    fn extend(&mut self, mut piece: &[u8], emit: &mut dyn FnMut(&[u8])) -> Result<(), LineTooLong> {
        if self.refusing {
            return Err(LineTooLong);
        }
        while self.partial.len() + piece.len() > self.max {
            if self.overflow == Overflow::Refuse {
                self.refusing = true;
                return Err(LineTooLong);
            }
            let room = self.max - self.partial.len();
            self.partial.extend_from_slice(&piece[..room]);
            piece = &piece[room..];
            // Cut at a UTF-8 boundary; keep the tail of a split character for the next piece.
            let cut = char_boundary(&self.partial, self.partial.len());
            let tail = self.partial.split_off(cut);
            emit(&self.partial);
            self.partial.clear();
            self.partial.extend_from_slice(&tail);
        }
        self.partial.extend_from_slice(piece);
        Ok(())
    }
}

/// `line` in pieces of at most `max` bytes (at least 4), each cut at a character boundary.
pub(crate) fn split_str(line: &str, max: usize) -> impl Iterator<Item = &str> {
    let max = max.max(4);
    let mut rest = line;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut cut = rest.len().min(max);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (piece, tail) = rest.split_at(cut);
        rest = tail;
        Some(piece)
    })
}

fn memchr_lf(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The last index at or before `at` that does not split a UTF-8 sequence (invalid bytes
/// count as their own characters). Never 0 for a non-empty buffer of at least 4 bytes.
fn char_boundary(buf: &[u8], at: usize) -> usize {
    let mut i = at;
    // A cut is bad only if the bytes after it are continuation bytes of a lead before it.
    for back in 1..=3.min(at) {
        let b = buf[at - back];
        if b & 0xC0 == 0x80 {
            continue;
        }
        let width = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        if width > back {
            i = at - back;
        }
        break;
    }
    if i == 0 {
        at
    } else {
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split_all(chunks: &[&[u8]], max: usize) -> Vec<Vec<u8>> {
        let mut s = LineSplitter::new(max, Overflow::Split);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut |l| out.push(l.to_vec())).unwrap();
        }
        s.finish(&mut |l| out.push(l.to_vec()));
        out
    }

    #[test]
    fn lf_crlf_and_bare_cr() {
        let got = split_all(&[b"a\nb\r\nc\rd\n\nlast"], 100);
        let want: Vec<&[u8]> = vec![b"a", b"b", b"c\rd", b"", b"last"];
        assert_eq!(got, want);
    }

    #[test]
    fn a_line_across_chunks_stays_one() {
        let got = split_all(&[b"hel", b"lo wo", b"rld\r", b"\nnext\n"], 100);
        let want: Vec<&[u8]> = vec![b"hello world", b"next"];
        assert_eq!(got, want);
    }

    #[test]
    fn long_lines_split_at_char_boundaries() {
        let line = "é".repeat(10); // 20 bytes
        let got = split_all(&[line.as_bytes(), b"\n"], 7);
        assert!(
            got.iter()
                .all(|l| l.len() <= 7 && std::str::from_utf8(l).is_ok()),
            "{got:?}"
        );
        assert_eq!(got.concat(), line.as_bytes());
    }

    #[test]
    fn refuse_mode_reports_overflow() {
        let mut s = LineSplitter::new(8, Overflow::Refuse);
        let mut out = Vec::new();
        assert!(s.push(b"short\n", &mut |l| out.push(l.to_vec())).is_ok());
        assert_eq!(
            s.push(b"much too long", &mut |l| out.push(l.to_vec())),
            Err(LineTooLong)
        );
        assert_eq!(out, vec![b"short".to_vec()]);
    }

    proptest! {
        #[test]
        fn chunking_never_changes_the_lines(
            body in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), any::<u8>()], 0..300),
            max in 4usize..40,
            cut in 0usize..300,
        ) {
            let cut = cut.min(body.len());
            let whole = split_all(&[&body], max);
            let pieces = split_all(&[&body[..cut], &body[cut..]], max);
            prop_assert_eq!(&whole, &pieces);
            prop_assert!(whole.iter().all(|l| l.len() <= max));
        }
    }
}
