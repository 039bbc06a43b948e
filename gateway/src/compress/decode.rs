//! The client side: a response body's `Content-Encoding` undone chunk by chunk, each chunk's
//! bytes given out as soon as they decode (the gateway flushes every event).

use std::io::Write;

use bytes::Bytes;
use flate2::write::GzDecoder;

/// What `tailgate tail` asks for.
pub const ACCEPT: &str = "zstd, gzip";

/// The most one received chunk may decode to: the spool's largest frame (64 MiB) plus its SSE
/// framing. More is a decompression bomb, not a log, and ends the stream instead of the
/// client's memory.
const MAX_DECODED_PER_CHUNK: usize = 80 << 20;

/// Input is fed in slices this small, so the bound is checked before a slice can expand far
/// past it (deflate expands at most ~1,032x; zstd's buffered output is flushed as it fills).
const FEED_SLICE: usize = 256;

/// The largest zstd window accepted (16 MiB): the gateway's levels use far less, and a bigger
/// window is memory a hostile server would make the client allocate.
const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// A streaming decoder for one response body.
pub enum BodyDecoder {
    Gzip(Box<GzDecoder<Vec<u8>>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, Vec<u8>>>),
}

impl BodyDecoder {
    /// The decoder for a `Content-Encoding` value; `Ok(None)` for identity, an error naming
    /// a coding this client cannot read.
    pub fn for_encoding(value: Option<&str>) -> Result<Option<Self>, String> {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("identity") => Ok(None),
            Some("gzip") | Some("x-gzip") => {
                Ok(Some(Self::Gzip(Box::new(GzDecoder::new(Vec::new())))))
            }
            Some("zstd") => zstd::stream::write::Decoder::new(Vec::new())
                .and_then(|mut d| {
                    d.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
                    Ok(d)
                })
                .map(|d| Some(Self::Zstd(Box::new(d))))
                .map_err(|e| format!("zstd: {e}")),
            Some(other) => Err(format!(
                "the gateway answered with content-encoding {other:?}"
            )),
        }
    }

    /// The bytes `chunk` decodes to now; an error once they pass `MAX_DECODED_PER_CHUNK`.
    pub fn feed(&mut self, chunk: &[u8]) -> std::io::Result<Bytes> {
        for slice in chunk.chunks(FEED_SLICE) {
            let decoded = match self {
                Self::Gzip(d) => {
                    d.write_all(slice)?;
                    d.get_ref().len()
                }
                Self::Zstd(d) => {
                    d.write_all(slice)?;
                    d.get_ref().len()
                }
            };
            if decoded > MAX_DECODED_PER_CHUNK {
                return Err(too_much());
            }
        }
        let out = match self {
            Self::Gzip(d) => {
                d.flush()?;
                std::mem::take(d.get_mut())
            }
            Self::Zstd(d) => {
                d.flush()?;
                std::mem::take(d.get_mut())
            }
        };
        if out.len() > MAX_DECODED_PER_CHUNK {
            return Err(too_much());
        }
        Ok(Bytes::from(out))
    }
}

fn too_much() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!(
            "the stream decodes to more than {} MiB at once (a decompression bomb?)",
            MAX_DECODED_PER_CHUNK >> 20
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 96 MiB of zeros compressed into one small chunk: refused, not allocated whole.
    fn bomb(coding: &str) -> Vec<u8> {
        let zeros = vec![0u8; 1 << 20];
        match coding {
            "gzip" => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                for _ in 0..96 {
                    e.write_all(&zeros).expect("gzip");
                }
                e.finish().expect("gzip")
            }
            _ => {
                let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("zstd");
                for _ in 0..96 {
                    e.write_all(&zeros).expect("zstd");
                }
                e.finish().expect("zstd")
            }
        }
    }

    #[test]
    fn a_decompression_bomb_is_an_error_not_an_allocation() {
        for coding in ["gzip", "zstd"] {
            let chunk = bomb(coding);
            assert!(chunk.len() < 1 << 20, "{coding}: {} bytes", chunk.len());
            let mut d = BodyDecoder::for_encoding(Some(coding))
                .expect("coding")
                .expect("a decoder");
            let err = d.feed(&chunk).expect_err(coding);
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{coding}");
        }
    }

    #[test]
    fn an_ordinary_chunk_decodes_whole() {
        let text = b"id: 1-a\nevent: log\ndata: {}\n\n".repeat(1000);
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&text).expect("gzip");
        let mut d = BodyDecoder::for_encoding(Some("gzip"))
            .expect("coding")
            .expect("a decoder");
        let mut out = d
            .feed(&e.finish().expect("gzip"))
            .expect("decodes")
            .to_vec();
        out.extend_from_slice(&d.feed(&[]).expect("decodes"));
        assert_eq!(out, text);
    }
}
