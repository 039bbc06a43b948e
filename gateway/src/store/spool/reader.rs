//! Reading a spool: frames one after another from an offset, each checked before it is
//! trusted. Recovery and range reads both go through it; the first bad or incomplete
//! frame ends the read (recovery looks for intact frames after it).

use std::fs::File;

use super::frame::{self, Check, Decoded};

/// Frames of one file between two offsets.
pub(crate) struct FrameReader {
    file: File,
    buf: Vec<u8>,
    /// Where in `buf` the next frame starts.
    at: usize,
    /// File offset of `buf[0]`.
    base: u64,
    /// Bytes are read from the file up to here.
    end: u64,
    /// Bytes read from the file at once, at least.
    chunk: usize,
    /// Why reading stopped before `end`, when a frame was bad.
    bad: Option<&'static str>,
}

impl FrameReader {
    pub(crate) fn new(file: File, start: u64, end: u64, chunk: usize) -> Self {
        Self {
            file,
            buf: Vec::new(),
            at: 0,
            base: start,
            end,
            chunk: chunk.max(4096),
            bad: None,
        }
    }

    /// The next whole, checked frame and its offset; `None` at the end, at a torn
    /// frame, or at a bad one ([`FrameReader::bad`] tells).
    pub(crate) fn next(&mut self) -> std::io::Result<Option<(u64, Decoded<'_>)>> {
        loop {
            match frame::check(&self.buf[self.at..]) {
                Check::Whole(len) => {
                    let offset = self.offset();
                    let start = self.at;
                    self.at += len;
                    return match frame::decode(&self.buf[start..start + len]) {
                        Ok(decoded) => Ok(Some((offset, decoded))),
                        Err(why) => {
                            self.at = start;
                            self.bad = Some(why);
                            Ok(None)
                        }
                    };
                }
                Check::Short { need } => {
                    let read_to = self.base + self.buf.len() as u64;
                    if read_to >= self.end {
                        return Ok(None);
                    }
                    self.buf.drain(..self.at);
                    self.base += self.at as u64;
                    self.at = 0;
                    let want = (need.max(self.chunk) as u64).min(self.end - read_to) as usize;
                    let old = self.buf.len();
                    self.buf.resize(old + want, 0);
                    read_exact_at(&self.file, &mut self.buf[old..], read_to)?;
                }
                Check::Bad(why) => {
                    self.bad = Some(why);
                    return Ok(None);
                }
            }
        }
    }

    /// The offset just after the last frame handed out.
    pub(crate) fn offset(&self) -> u64 {
        self.base + self.at as u64
    }

    /// Why the read stopped early, if a frame was bad (not merely torn).
    pub(crate) fn bad(&self) -> Option<&'static str> {
        self.bad
    }
}

#[cfg(unix)]
pub(crate) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
}
