//! The client side: a response body's `Content-Encoding` undone chunk by chunk, each chunk's
//! bytes given out as soon as they decode (the gateway flushes every event).

use bytes::Bytes;
use zlib_rs::{InflateFlush, Status};
use zstd::stream::raw::{DParameter, Decoder as ZstdDecoder, InBuffer, Operation, OutBuffer};

/// What `tailgate tail` asks for.
pub const ACCEPT: &str = "zstd, gzip";

/// The most one received chunk may decode to: the spool's largest frame (64 MiB) plus its SSE
/// framing. More is a decompression bomb, not a log, and ends the stream instead of the
/// client's memory.
const MAX_DECODED_PER_CHUNK: usize = 80 << 20;

/// The largest zstd window accepted (16 MiB): the gateway's levels use far less, and a bigger
/// window is memory a hostile server would make the client allocate.
const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// A decoder's output space per call, zeroed once per decoder: one event decodes to a few
/// hundred bytes; a bigger chunk takes several calls, the bound checked after each.
const SCRATCH: usize = 16 * 1024;

/// zlib's `windowBits` for a gzip wrapper (16 + a 32 KiB window): header and CRC checked.
const GZIP_WINDOW_BITS: u8 = 16 + 15;

/// A streaming decoder for one response body.
pub enum BodyDecoder {
    Gzip(Box<Gunzip>),
    Zstd(Box<Unzstd>),
}

/// One gzip member (what the gateway sends per response), inflated by zlib-rs (flate2's
/// backend) directly into a scratch buffer zeroed once. Not `flate2::write::GzDecoder`:
/// its writer zeroes the free part of a 32 KiB buffer on every call into inflate, three or
/// more per received chunk, which a load generator decoding 1,000 streams paid on every event.
pub struct Gunzip {
    z: zlib_rs::Inflate,
    scratch: Vec<u8>,
    /// The member's trailer was read (and its CRC checked): nothing may follow.
    ended: bool,
}

impl Gunzip {
    fn new() -> Self {
        Self {
            z: zlib_rs::Inflate::new(true, GZIP_WINDOW_BITS),
            scratch: vec![0; SCRATCH],
            ended: false,
        }
    }

    fn feed(&mut self, mut input: &[u8]) -> std::io::Result<Bytes> {
        let mut out = Vec::new();
        loop {
            if self.ended {
                if input.is_empty() {
                    break;
                }
                return Err(invalid("bytes after the end of the gzip stream".into()));
            }
            let (in_before, out_before) = (self.z.total_in(), self.z.total_out());
            let status = self
                .z
                .decompress(input, &mut self.scratch, InflateFlush::NoFlush)
                .map_err(|e| invalid(format!("gzip: {}", e.as_str())))?;
            let used = (self.z.total_in() - in_before) as usize;
            let made = (self.z.total_out() - out_before) as usize;
            if out.len() + made > MAX_DECODED_PER_CHUNK {
                return Err(too_much());
            }
            out.extend_from_slice(self.scratch.get(..made).unwrap_or_default());
            input = input.get(used..).unwrap_or_default();
            if status == Status::StreamEnd {
                self.ended = true;
                continue;
            }
            // Done when the input is taken and the scratch was not filled (nothing waits);
            // or when inflate made no progress at all (it needs more input than there is).
            if (input.is_empty() && made < self.scratch.len()) || (used == 0 && made == 0) {
                break;
            }
        }
        Ok(Bytes::from(out))
    }
}

/// zstd frames (the gateway writes a run of them), decompressed by zstd's streaming
/// decoder directly into a scratch buffer, for the same reason as [`Gunzip`]: not through
/// `zstd::stream::write::Decoder`, which took a 256-byte slice per call and a fresh output
/// `Vec` per received chunk.
pub struct Unzstd {
    z: ZstdDecoder<'static>,
    scratch: Vec<u8>,
}

impl Unzstd {
    fn new() -> std::io::Result<Self> {
        let mut z = ZstdDecoder::new()?;
        z.set_parameter(DParameter::WindowLogMax(ZSTD_WINDOW_LOG_MAX))?;
        Ok(Self {
            z,
            scratch: vec![0; SCRATCH],
        })
    }

    fn feed(&mut self, input: &[u8]) -> std::io::Result<Bytes> {
        let mut out = Vec::new();
        let mut src = InBuffer::around(input);
        loop {
            let before = src.pos();
            let mut dst = OutBuffer::around(&mut self.scratch[..]);
            // Ok(0) ends a frame; the next call starts the next frame from the input left.
            self.z.run(&mut src, &mut dst)?;
            let made = dst.pos();
            if out.len() + made > MAX_DECODED_PER_CHUNK {
                return Err(too_much());
            }
            out.extend_from_slice(self.scratch.get(..made).unwrap_or_default());
            let taken = src.pos() == input.len();
            if (taken && made < self.scratch.len()) || (src.pos() == before && made == 0) {
                break;
            }
        }
        Ok(Bytes::from(out))
    }
}

impl BodyDecoder {
    /// The decoder for a `Content-Encoding` value; `Ok(None)` for identity, an error naming
    /// a coding this client cannot read.
    pub fn for_encoding(value: Option<&str>) -> Result<Option<Self>, String> {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("identity") => Ok(None),
            Some("gzip") | Some("x-gzip") => Ok(Some(Self::Gzip(Box::new(Gunzip::new())))),
            Some("zstd") => Unzstd::new()
                .map(|d| Some(Self::Zstd(Box::new(d))))
                .map_err(|e| format!("zstd: {e}")),
            Some(other) => Err(format!(
                "the gateway answered with content-encoding {other:?}"
            )),
        }
    }

    /// The bytes `chunk` decodes to now; an error once they pass `MAX_DECODED_PER_CHUNK`.
    pub fn feed(&mut self, chunk: &[u8]) -> std::io::Result<Bytes> {
        match self {
            Self::Gzip(d) => d.feed(chunk),
            Self::Zstd(d) => d.feed(chunk),
        }
    }
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

fn too_much() -> std::io::Error {
    invalid(format!(
        "the stream decodes to more than {} MiB at once (a decompression bomb?)",
        MAX_DECODED_PER_CHUNK >> 20
    ))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

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
            let mut d = decoder(coding);
            let err = d.feed(&chunk).expect_err(coding);
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{coding}");
        }
    }

    #[test]
    fn an_ordinary_chunk_decodes_whole() {
        let text = b"id: 1-a\nevent: log\ndata: {}\n\n".repeat(1000);
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&text).expect("gzip");
        let mut d = decoder("gzip");
        let mut out = d
            .feed(&e.finish().expect("gzip"))
            .expect("decodes")
            .to_vec();
        out.extend_from_slice(&d.feed(&[]).expect("decodes"));
        assert_eq!(out, text);
    }

    /// A gzip member of `parts`, sync-flushed after each (as the gateway writes events).
    fn flushed_member(parts: &[Vec<u8>]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        for p in parts {
            e.write_all(p).expect("gzip");
            e.flush().expect("gzip");
        }
        e.finish().expect("gzip")
    }

    fn decoder(coding: &str) -> BodyDecoder {
        BodyDecoder::for_encoding(Some(coding))
            .expect("coding")
            .expect("a decoder")
    }

    /// `body` decoded by a fresh decoder fed `step` bytes at a time.
    fn decoded_in_steps(coding: &str, body: &[u8], step: usize) -> Vec<u8> {
        let mut d = decoder(coding);
        let mut got = Vec::new();
        for piece in body.chunks(step) {
            got.extend_from_slice(&d.feed(piece).expect("decodes"));
        }
        got
    }

    #[test]
    fn a_gzip_stream_split_anywhere_decodes_to_its_bytes() {
        let parts: Vec<Vec<u8>> = (0..200)
            .map(|i| {
                format!("id: {i}-a\nevent: log\ndata: {{\"line\":\"step {i} of 200\"}}\n\n")
                    .into_bytes()
            })
            .collect();
        let want = parts.concat();
        let body = flushed_member(&parts);
        for step in [1, 7, 64, 1000, body.len()] {
            let got = decoded_in_steps("gzip", &body, step);
            assert_eq!(got, want, "fed {step} bytes at a time");
        }
    }

    #[test]
    fn a_chunk_larger_than_the_scratch_decodes_whole_at_once() {
        let text: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
        let body = flushed_member(std::slice::from_ref(&text));
        let mut d = decoder("gzip");
        assert_eq!(d.feed(&body).expect("decodes"), text);
    }

    #[test]
    fn a_corrupt_gzip_stream_or_bytes_after_its_end_are_errors() {
        let body = flushed_member(&[b"data: x\n\n".to_vec()]);
        let mut bad_crc = body.clone();
        let at = bad_crc.len() - 8;
        bad_crc[at] ^= 0xff;
        let mut d = decoder("gzip");
        assert_eq!(
            d.feed(&bad_crc).expect_err("crc").kind(),
            std::io::ErrorKind::InvalidData
        );
        let mut d = decoder("gzip");
        let mut twice = body.clone();
        twice.extend_from_slice(b"more");
        assert_eq!(
            d.feed(&twice).expect_err("trailing").kind(),
            std::io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn a_run_of_zstd_frames_split_anywhere_decodes_to_its_bytes() {
        // The gateway's zstd stream: one frame per segment, each flushed per event.
        let mut body = Vec::new();
        let mut want = Vec::new();
        for frame in 0..3 {
            let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("zstd");
            for i in 0..100 {
                let event = format!("id: {frame}.{i}\nevent: log\ndata: step {i}\n\n");
                e.write_all(event.as_bytes()).expect("zstd");
                e.flush().expect("zstd");
                want.extend_from_slice(event.as_bytes());
            }
            body.extend_from_slice(&e.finish().expect("zstd"));
        }
        for step in [1, 5, 333, body.len()] {
            let got = decoded_in_steps("zstd", &body, step);
            assert_eq!(got, want, "fed {step} bytes at a time");
        }
    }
}
