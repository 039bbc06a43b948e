//! One response compressed for one reader alone (the plain `/log`): nothing to share, so it
//! holds one of the catch-up encoders (bounded by `max_catchup_encoders`, counted in the
//! memory budget) for the response's life, and frames its output as a reader's would.

use bytes::{Bytes, BytesMut};

use super::encoder::{self, GZIP_HEADER};
use super::shared::{Catchup, Streams};
use super::Coding;

/// A whole body's compressor: the coding's opening, one sync-flushed chunk per piece of
/// text (a slow store read never holds back what was read before it), then the end.
pub(crate) struct BodyCoder {
    own: Catchup,
    coding: Coding,
    /// The opening (gzip's header) went out.
    started: bool,
    /// The encoder failed once: the rest goes out uncompressed, in the coding's framing.
    failed: bool,
    /// zstd: a frame is open that ends at the start of the next write (see
    /// [`encoder::stored`] on why not at the end of this one).
    frame_open: bool,
    /// The encoder wrote a chunk (zstd: its frame is open until the end).
    encoded: bool,
    /// gzip: CRC-32 and length of every byte the client decodes, for the trailer.
    crc: crc32fast::Hasher,
    len: u64,
}

impl BodyCoder {
    /// A compressor in `coding`, or `None` when every catch-up encoder is taken (the
    /// response then goes out uncompressed).
    pub(crate) fn new(streams: &Streams, coding: Coding) -> Option<Self> {
        Some(Self {
            own: streams.catchup(coding)?,
            coding,
            started: false,
            failed: false,
            frame_open: false,
            encoded: false,
            crc: crc32fast::Hasher::new(),
            len: 0,
        })
    }

    pub(crate) fn coding(&self) -> Coding {
        self.coding
    }

    /// `raw` compressed and flushed.
    pub(crate) fn chunk(&mut self, raw: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        self.start(&mut out);
        if raw.is_empty() {
            return out.freeze();
        }
        if self.coding == Coding::Gzip {
            self.crc.update(raw);
            self.len += raw.len() as u64;
        }
        if !self.failed {
            match self.own.encoder.chunk([raw]) {
                Ok(bytes) => {
                    self.encoded = true;
                    out.extend_from_slice(&bytes);
                    return out.freeze();
                }
                // The encoder's stream is whole up to its last flush: end it there.
                Err(_) => {
                    self.failed = true;
                    out.extend_from_slice(encoder::segment_end(self.coding));
                }
            }
        }
        encoder::stored(self.coding, raw, &mut out);
        self.frame_open = self.coding == Coding::Zstd;
        out.freeze()
    }

    /// What ends the body: zstd's frame end, gzip's final block and trailer.
    pub(crate) fn finish(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        self.start(&mut out);
        if self.coding == Coding::Zstd && !self.failed {
            if !self.encoded {
                // An empty body is still one (empty) frame.
                encoder::stored(self.coding, &[], &mut out);
            }
            out.extend_from_slice(encoder::segment_end(self.coding));
        }
        let crc = self.crc.clone().finalize();
        out.extend_from_slice(&encoder::stream_end(self.coding, crc, self.len));
        out.freeze()
    }

    /// The opening first of all; the end of a zstd frame left open by the last write.
    fn start(&mut self, out: &mut BytesMut) {
        if !self.started {
            self.started = true;
            if self.coding == Coding::Gzip {
                out.extend_from_slice(GZIP_HEADER);
            }
        }
        if std::mem::take(&mut self.frame_open) {
            out.extend_from_slice(encoder::segment_end(self.coding));
        }
    }
}
