//! One reader's compressed output: its place in the job's shared stream, or its own
//! catch-up encoder until it can enter the shared stream at a segment start.
//!
//! A caught-up reader holds only its state word, the shared stream's `Arc` and (gzip) its
//! running CRC. Bytes of its own (the opening, keep-alives, gaps) are written between
//! segments in the coding's uncompressed framing, so they need no encoder.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::encoder::{self, GZIP_HEADER};
use super::shared::{Catchup, Chunk, SharedStream, Streams, Taken};
use super::Coding;
use crate::entry::Entry;
use crate::subscription::frame_with_life;

/// The last event a reader's write holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    pub(crate) seq: u64,
    /// It is the terminal status: the stream ends after it.
    pub(crate) terminal: bool,
}

impl Written {
    /// Moves `written` to the end of `chunks` when they reach further.
    fn past(written: &mut Option<Written>, chunks: &[Chunk]) {
        if let Some(last) = chunks.last() {
            if written.is_none_or(|w| last.last > w.seq) {
                *written = Some(Written {
                    seq: last.last,
                    terminal: last.terminal,
                });
            }
        }
    }
}

/// gzip: the part of a shared segment a reader wrote, from the segment's first chunk on.
#[derive(Clone, Copy)]
struct Run {
    segment: u64,
    /// Seq of the event after the last chunk written.
    next: u64,
    /// CRC-32 and length of the raw bytes from the segment's start through that chunk.
    crc: u32,
    len: u32,
}

/// Where the reader's next bytes come from.
enum Place {
    /// Between segments: the next bytes may start anything.
    Between,
    /// Its own encoder, until it reaches a segment start or the head.
    Own(Box<Catchup>),
    /// Inside the shared stream: the next event's chunk is written as-is.
    Joined,
}

/// A reader's compressor side.
pub(crate) struct ReaderCoder {
    shared: Arc<SharedStream>,
    streams: Arc<Streams>,
    place: Place,
    /// The gzip header went out.
    started: bool,
    /// zstd: a frame of this reader's is open and ends at the start of its next write.
    frame_open: bool,
    /// gzip: CRC-32 of every byte this reader's client decodes, for the trailer.
    crc: crc32fast::Hasher,
    /// gzip: bytes this reader's client decodes.
    len: u64,
    /// gzip: the shared segment being written, not yet in `crc` and `len`.
    run: Option<Run>,
}

impl ReaderCoder {
    pub(crate) fn new(shared: Arc<SharedStream>, streams: Arc<Streams>) -> Self {
        Self {
            shared,
            streams,
            place: Place::Between,
            started: false,
            frame_open: false,
            crc: crc32fast::Hasher::new(),
            len: 0,
            run: None,
        }
    }

    pub(crate) fn coding(&self) -> Coding {
        self.shared.coding
    }

    /// Bytes of this reader only (opening, keep-alive, gap, error), compressed or framed.
    pub(crate) fn own(&mut self, raw: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        self.start(&mut out);
        self.count(raw);
        match &mut self.place {
            Place::Own(own) => match own.encoder.chunk([raw]) {
                Ok(bytes) => out.extend_from_slice(&bytes),
                Err(_) => {
                    self.place = Place::Between;
                    self.stored(raw, &mut out);
                }
            },
            Place::Joined => {
                self.leave(&mut out);
                self.stored(raw, &mut out);
            }
            Place::Between => self.stored(raw, &mut out),
        }
        out.freeze()
    }

    /// The frames of `entries` (contiguous, as read from the log) in this reader's stream,
    /// and the seq of the last event written, with whether it is the terminal status: a
    /// shared chunk is written whole, so that may be past the last of `entries`.
    pub(crate) fn entries(&mut self, entries: &[Arc<Entry>]) -> (Bytes, Option<Written>) {
        let mut out = BytesMut::new();
        let mut written = entries.last().map(|e| Written {
            seq: e.seq(),
            terminal: e.is_terminal(),
        });
        self.start(&mut out);
        let mut rest = entries;
        while !rest.is_empty() {
            if matches!(self.place, Place::Joined) {
                match self.shared.take(rest, false) {
                    Taken::Chunks(chunks) => {
                        Written::past(&mut written, &chunks);
                        if let [one] = &chunks[..] {
                            if out.is_empty() && !one.starts {
                                // A lone shared chunk goes out without a copy.
                                self.write_chunks(&chunks, false, &mut BytesMut::new());
                                return (one.bytes.clone(), written);
                            }
                        }
                        self.write_chunks(&chunks, false, &mut out);
                        break;
                    }
                    Taken::Not => {
                        self.leave(&mut out);
                        continue;
                    }
                }
            }
            if let Taken::Chunks(chunks) = self.shared.take(rest, true) {
                Written::past(&mut written, &chunks);
                self.end_own(&mut out);
                self.end_frame(&mut out);
                self.place = Place::Joined;
                self.write_chunks(&chunks, true, &mut out);
                break;
            }
            // Behind: own bytes up to the next segment start, where it may join.
            let cut = self.shared.next_start(rest);
            let (now, later) = rest.split_at(cut);
            self.own_frames(now, &mut out);
            rest = later;
            if let Some(last) = now.last() {
                if rest.is_empty() && self.shared.is_head(last.seq() + 1) {
                    // At the head: its next event joins; no encoder kept while it waits.
                    self.end_own(&mut out);
                }
            }
        }
        (out.freeze(), written)
    }

    /// What ends the body: gzip's trailer, zstd's open frame's end.
    pub(crate) fn finish(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        self.start(&mut out);
        if matches!(self.place, Place::Joined) {
            self.shared.leave();
        }
        if !matches!(self.place, Place::Between) {
            self.frame_open = true;
        }
        self.place = Place::Between;
        self.end_frame(&mut out);
        self.fold();
        let crc = self.crc.clone().finalize();
        out.extend_from_slice(&encoder::stream_end(self.coding(), crc, self.len));
        out.freeze()
    }

    /// What every write starts with: the gzip header first of all; the end of a zstd frame
    /// left open by the previous write.
    fn start(&mut self, out: &mut BytesMut) {
        if !self.started {
            self.started = true;
            if self.coding() == Coding::Gzip {
                out.extend_from_slice(GZIP_HEADER);
            }
        }
        self.end_frame(out);
    }

    fn end_frame(&mut self, out: &mut BytesMut) {
        if self.frame_open {
            self.frame_open = false;
            out.extend_from_slice(encoder::segment_end(self.coding()));
        }
    }

    fn stored(&mut self, raw: &[u8], out: &mut BytesMut) {
        self.end_frame(out);
        encoder::stored(self.coding(), raw, out);
        self.frame_open = self.coding() == Coding::Zstd;
    }

    fn count(&mut self, raw: &[u8]) {
        if self.coding() == Coding::Gzip {
            self.fold();
            self.crc.update(raw);
            self.len += raw.len() as u64;
        }
    }

    fn write_chunks(&mut self, chunks: &[Chunk], joining: bool, out: &mut BytesMut) {
        for (i, chunk) in chunks.iter().enumerate() {
            if chunk.starts && !(joining && i == 0) {
                out.extend_from_slice(encoder::segment_end(self.coding()));
            }
            out.extend_from_slice(&chunk.bytes);
            if self.coding() == Coding::Gzip {
                let continues = self
                    .run
                    .is_some_and(|r| r.segment == chunk.segment && r.next == chunk.seq);
                if chunk.starts || continues {
                    if chunk.starts {
                        self.fold();
                    }
                    self.run = Some(Run {
                        segment: chunk.segment,
                        next: chunk.last + 1,
                        crc: chunk.segment_crc,
                        len: chunk.segment_len,
                    });
                } else {
                    self.fold();
                    self.combine(chunk.crc, chunk.len);
                }
            }
        }
    }

    /// Adds the segment written so far to the trailer's CRC and length.
    fn fold(&mut self) {
        if let Some(run) = self.run.take() {
            self.combine(run.crc, run.len);
        }
    }

    fn combine(&mut self, crc: u32, len: u32) {
        let part = crc32fast::Hasher::new_with_initial_len(crc, u64::from(len));
        self.crc.combine(&part);
        self.len += u64::from(len);
    }

    /// `entries` with this reader's own encoder (made if it has none), or framed
    /// uncompressed when every catch-up encoder is taken.
    fn own_frames(&mut self, entries: &[Arc<Entry>], out: &mut BytesMut) {
        let format = self.shared.format();
        let life = self.shared.life.clone();
        let frames: Vec<Bytes> = entries
            .iter()
            .map(|e| frame_with_life(format, e, &life))
            .collect();
        for f in &frames {
            self.count(f);
        }
        if matches!(self.place, Place::Between) {
            if let Some(own) = self.streams.catchup(self.coding()) {
                self.place = Place::Own(Box::new(own));
            }
        }
        self.end_frame(out);
        if let Place::Own(own) = &mut self.place {
            if let Ok(bytes) = own.encoder.chunk(frames.iter().map(|f| &f[..])) {
                out.extend_from_slice(&bytes);
                return;
            }
            // A failed encoder's stream is cut at its last flush: end it there.
            self.end_own(out);
        }
        for f in &frames {
            self.stored(f, out);
        }
    }

    /// Drops the own encoder; its segment ends at the start of the next write (or now,
    /// when more follows in this one: see [`ReaderCoder::end_frame`]).
    fn end_own(&mut self, _out: &mut BytesMut) {
        if matches!(self.place, Place::Own(_)) {
            self.frame_open = self.coding() == Coding::Zstd;
            self.place = Place::Between;
        }
    }

    /// Leaves the shared stream; its segment ends for this reader as in `end_own`.
    fn leave(&mut self, _out: &mut BytesMut) {
        if matches!(self.place, Place::Joined) {
            self.frame_open = self.coding() == Coding::Zstd;
            self.shared.leave();
            self.place = Place::Between;
        }
    }
}

impl Drop for ReaderCoder {
    fn drop(&mut self) {
        if matches!(self.place, Place::Joined) {
            self.shared.leave();
        }
    }
}
