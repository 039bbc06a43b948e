//! The client side: a response body's `Content-Encoding` undone chunk by chunk, each chunk's
//! bytes given out as soon as they decode (the gateway flushes every event).

use std::io::Write;

use bytes::Bytes;
use flate2::write::GzDecoder;

/// What `tailgate tail` asks for.
pub const ACCEPT: &str = "zstd, gzip";

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
                .map(|d| Some(Self::Zstd(Box::new(d))))
                .map_err(|e| format!("zstd: {e}")),
            Some(other) => Err(format!(
                "the gateway answered with content-encoding {other:?}"
            )),
        }
    }

    /// The bytes `chunk` decodes to now.
    pub fn feed(&mut self, chunk: &[u8]) -> std::io::Result<Bytes> {
        match self {
            Self::Gzip(d) => {
                d.write_all(chunk)?;
                d.flush()?;
                Ok(Bytes::from(std::mem::take(d.get_mut())))
            }
            Self::Zstd(d) => {
                d.write_all(chunk)?;
                d.flush()?;
                Ok(Bytes::from(std::mem::take(d.get_mut())))
            }
        }
    }
}
