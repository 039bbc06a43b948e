//! The compressors and the framing that joins their outputs into one valid stream.
//!
//! Every chunk an [`Encoder`] returns is sync-flushed: it decodes at once and ends on a
//! byte boundary, so the next bytes of a reader's stream may come from another encoder
//! started fresh (no back-reference crosses the join). gzip: one member per response
//! (header, raw deflate blocks from any number of encoders, then an empty final block and
//! the reader's own CRC). zstd: one frame per encoder, ended by an empty last raw block.

use std::io::{self, Write};

use bytes::{BufMut, Bytes, BytesMut};
use zlib_rs::DeflateFlush;

use super::Coding;

/// The gzip member header: deflate, no name, no mtime, unknown OS.
pub(crate) const GZIP_HEADER: &[u8] = &[0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff];
/// An empty final deflate block (fixed Huffman, end-of-block only).
const DEFLATE_END: &[u8] = &[0x03, 0x00];
/// An empty zstd raw block with the last-block bit: ends the frame it is written into.
const ZSTD_FRAME_END: &[u8] = &[0x01, 0x00, 0x00];
/// The zstd frame magic.
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
/// A zstd window of 128 KiB (descriptor exponent 7): shared segments are shorter.
pub(crate) const ZSTD_WINDOW_LOG: u32 = 17;
/// Largest deflate stored block.
const STORED_MAX: usize = 65_535;
/// Largest zstd raw block in a frame with a 128 KiB window.
const RAW_MAX: usize = 128 * 1024;
/// A gzip encoder's output buffer when made: a chunk of a few events compresses to less.
const DEFLATE_OUT_INITIAL: usize = 4 * 1024;
/// A gzip encoder keeps an output buffer grown by a large chunk only up to this.
const DEFLATE_OUT_KEPT: usize = 32 * 1024;

/// Memory one encoder holds, for the memory budget: deflate's window and hash chains;
/// zstd's window and tables at the window above.
pub(crate) fn footprint(coding: Coding) -> usize {
    match coding {
        Coding::Gzip => 320 * 1024,
        Coding::Zstd => 1024 * 1024,
    }
}

/// Levels per coding.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Levels {
    pub(crate) gzip: u32,
    pub(crate) zstd: i32,
}

/// One compressor, flushed after every chunk.
pub(crate) enum Encoder {
    Gzip(Box<Deflate>),
    Zstd(Box<zstd::stream::write::Encoder<'static, Vec<u8>>>),
}

/// Raw deflate (zlib-rs, the backend flate2 runs on here) driven directly, not through
/// `flate2::write::DeflateEncoder`, for two costs measured on the ci shape (perf, 300 jobs
/// flushing one event at a time): that writer zeroes the free part of its 32 KiB buffer on
/// every call into the compressor, three or four per chunk (10 % of the gateway's CPU); and
/// every flushed block clears the symbol buffer, whose size `memLevel` sets (48 KiB at
/// zlib's default 8, 7 % of the CPU). A flushed chunk here holds one burst of events, at
/// most a reader's batch (64 KiB), so [`DEFLATE_MEM_LEVEL`] keeps it smaller.
pub(crate) struct Deflate {
    z: zlib_rs::Deflate,
    /// Output space, initialised (`len` is the usable size); the chunk is copied out of it.
    out: Vec<u8>,
}

/// zlib's `memLevel` for the shared and catch-up encoders: 4,096 symbols per block (a 12 KiB
/// symbol buffer, cleared at every flush), where zlib's default 8 has 16,384. A one-event
/// chunk is a few hundred symbols; a 64 KiB burst of build log is split into a few blocks
/// instead of one or two (loadtest/README.md has the bytes on the corpus).
pub(crate) const DEFLATE_MEM_LEVEL: i32 = 6;

impl Deflate {
    fn new(level: u32) -> Self {
        let config = zlib_rs::DeflateConfig {
            level: level.clamp(1, 9) as i32,
            // Negative: raw deflate, the gzip member's header and trailer are written here.
            window_bits: -15,
            mem_level: DEFLATE_MEM_LEVEL,
            ..zlib_rs::DeflateConfig::default()
        };
        Self {
            z: zlib_rs::Deflate::new_with_config(config),
            out: vec![0; DEFLATE_OUT_INITIAL],
        }
    }

    /// `parts` deflated and sync-flushed, as one exactly sized buffer.
    fn chunk<'a>(&mut self, parts: impl IntoIterator<Item = &'a [u8]>) -> io::Result<Bytes> {
        let mut pos = 0;
        for part in parts {
            self.run(part, DeflateFlush::NoFlush, &mut pos)?;
        }
        self.run(&[], DeflateFlush::SyncFlush, &mut pos)?;
        let chunk = Bytes::copy_from_slice(&self.out[..pos]);
        if self.out.len() > DEFLATE_OUT_KEPT {
            self.out = vec![0; DEFLATE_OUT_INITIAL];
        }
        Ok(chunk)
    }

    /// Feeds `input` with `flush`, appending the output at `pos`; grows the buffer until a
    /// call ends with room left (all input taken and, for a flush, the flush complete).
    fn run(&mut self, mut input: &[u8], flush: DeflateFlush, pos: &mut usize) -> io::Result<()> {
        loop {
            if self.out.len() - *pos < 64 {
                let len = self.out.len();
                self.out.resize(len * 2, 0);
            }
            let (in_before, out_before) = (self.z.total_in(), self.z.total_out());
            let out = self.out.get_mut(*pos..).unwrap_or_default();
            self.z
                .compress(input, out, flush)
                .map_err(|e| io::Error::other(format!("deflate: {e:?}")))?;
            let used = (self.z.total_in() - in_before) as usize;
            *pos += (self.z.total_out() - out_before) as usize;
            input = input.get(used..).unwrap_or_default();
            if input.is_empty() && *pos < self.out.len() {
                return Ok(());
            }
        }
    }
}

impl Encoder {
    /// Starts a fresh segment: gzip reuses its deflate state (zlib's `deflateReset`: the
    /// window and tables stay allocated, the hash heads are cleared); zstd starts a new one.
    pub(crate) fn reset(&mut self, coding: Coding, levels: Levels) -> io::Result<()> {
        match self {
            Self::Gzip(z) => {
                z.z.reset();
                Ok(())
            }
            Self::Zstd(_) => {
                *self = Self::new(coding, levels)?;
                Ok(())
            }
        }
    }

    pub(crate) fn new(coding: Coding, levels: Levels) -> io::Result<Self> {
        Ok(match coding {
            Coding::Gzip => Self::Gzip(Box::new(Deflate::new(levels.gzip))),
            Coding::Zstd => {
                let mut z = zstd::stream::write::Encoder::new(Vec::new(), levels.zstd)?;
                z.window_log(ZSTD_WINDOW_LOG)?;
                z.include_checksum(false)?;
                z.include_contentsize(false)?;
                Self::Zstd(Box::new(z))
            }
        })
    }

    /// `parts` compressed as one sync-flushed chunk.
    pub(crate) fn chunk<'a>(
        &mut self,
        parts: impl IntoIterator<Item = &'a [u8]>,
    ) -> io::Result<Bytes> {
        match self {
            Self::Gzip(z) => z.chunk(parts),
            Self::Zstd(z) => {
                for part in parts {
                    z.write_all(part)?;
                }
                z.flush()?;
                Ok(Bytes::from(std::mem::take(z.get_mut())))
            }
        }
    }
}

/// Bytes that end whatever encoder's output came before, so a fresh one may follow
/// (zstd: the frame's end; gzip: nothing, sync-flushed deflate is already a clean cut).
pub(crate) fn segment_end(coding: Coding) -> &'static [u8] {
    match coding {
        Coding::Gzip => &[],
        Coding::Zstd => ZSTD_FRAME_END,
    }
}

/// `data` uncompressed in the coding's framing (deflate stored blocks; zstd raw blocks in a
/// frame left open, to be ended by [`segment_end`] at the start of the reader's next write),
/// for small reader-own bytes written between segments: keep-alives, gaps.
///
/// A zstd frame never ends at the end of a write, only at the start of the next one:
/// httpx's zstd decoder (0.28) fails when a chunk ends exactly at a frame's end.
pub(crate) fn stored(coding: Coding, data: &[u8], out: &mut BytesMut) {
    match coding {
        Coding::Gzip => {
            for block in data.chunks(STORED_MAX) {
                let len = block.len() as u16;
                out.put_u8(0x00); // not final, stored
                out.put_u16_le(len);
                out.put_u16_le(!len);
                out.put_slice(block);
            }
        }
        Coding::Zstd => {
            out.put_slice(ZSTD_MAGIC);
            out.put_u8(0x00); // no single segment, no checksum, no content size
            out.put_u8((ZSTD_WINDOW_LOG as u8 - 10) << 3);
            for block in data.chunks(RAW_MAX) {
                let header = (block.len() as u32) << 3; // raw, not last
                out.put_slice(&header.to_le_bytes()[..3]);
                out.put_slice(block);
            }
        }
    }
}

/// What ends a whole response body: gzip's final block and trailer (CRC-32 and length of
/// everything this reader decoded); zstd needs nothing more (its open frame was ended).
pub(crate) fn stream_end(coding: Coding, crc: u32, len: u64) -> Bytes {
    match coding {
        Coding::Gzip => {
            let mut out = BytesMut::with_capacity(10);
            out.put_slice(DEFLATE_END);
            out.put_u32_le(crc);
            out.put_u32_le(len as u32);
            out.freeze()
        }
        Coding::Zstd => Bytes::new(),
    }
}
