//! The compressors and the framing that joins their outputs into one valid stream.
//!
//! Every chunk an [`Encoder`] returns is sync-flushed: it decodes at once and ends on a
//! byte boundary, so the next bytes of a reader's stream may come from another encoder
//! started fresh (no back-reference crosses the join). gzip: one member per response
//! (header, raw deflate blocks from any number of encoders, then an empty final block and
//! the reader's own CRC). zstd: one frame per encoder, ended by an empty last raw block.

use std::io::{self, Write};

use bytes::{BufMut, Bytes, BytesMut};
use flate2::write::DeflateEncoder;
use flate2::Compression;

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
    Gzip(DeflateEncoder<Vec<u8>>),
    Zstd(Box<zstd::stream::write::Encoder<'static, Vec<u8>>>),
}

impl Encoder {
    pub(crate) fn new(coding: Coding, levels: Levels) -> io::Result<Self> {
        Ok(match coding {
            Coding::Gzip => Self::Gzip(DeflateEncoder::new(
                Vec::new(),
                Compression::new(levels.gzip.min(9)),
            )),
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
            Self::Gzip(z) => {
                for part in parts {
                    z.write_all(part)?;
                }
                z.flush()?;
                Ok(Bytes::from(std::mem::take(z.get_mut())))
            }
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
