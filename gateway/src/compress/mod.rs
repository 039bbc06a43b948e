//! Compressed streams: `Content-Encoding` on SSE and the plain log, compressed once per job.
//!
//! [`encoder`] wraps the compressors (zlib-rs's deflate for gzip, zstd) and the framing
//! between their outputs; [`shared`] keeps one sync-flushed stream per job, encoding and
//! format that every caught-up reader writes as-is; [`reader`] is one reader's place in it;
//! [`whole`] compresses a response for one reader alone (the plain `/log`).
//! The scheme is described in the README ("How it works: compression").

pub mod decode;
pub(crate) mod encoder;
pub(crate) mod reader;
pub(crate) mod shared;
#[cfg(test)]
mod tests;
pub(crate) mod whole;

use std::fmt;
use std::str::FromStr;

use http::HeaderMap;

pub(crate) use reader::ReaderCoder;
pub(crate) use shared::Streams;
pub(crate) use whole::BodyCoder;

/// Raw bytes fed to one shared encoder between two dictionary resets, by default. Chosen on
/// the corpus (loadtest/README.md): 512 KiB saved 0.5 points with gzip and lost 0.3 with
/// zstd, while a joiner or a reader behind enters 8 times sooner at 64 KiB.
pub const DEFAULT_RESET_BYTES: usize = 64 * 1024;
/// The gzip level by default. Not zlib's 6: on the ci shape (300 jobs, one flushed event
/// at a time, each job's deflate tables cold in the cache) the match search is most of the
/// encoder's cost: 3 searches chains of 6 where 4 searches 24 and 6 searches 128, for 8 %
/// less of the gateway's CPU than 4 and the corpus at 12.2 % of the SSE bytes (4: 11.8 %,
/// 6: 11.3 %; 2, a different match finder, 12.7 %: over the 1/8);
/// loadtest/README.md has the runs.
pub const DEFAULT_GZIP_LEVEL: u32 = 3;
/// The zstd level by default (zstd's own default).
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// Readers compressing with an encoder of their own (catching up) at once, by default; past
/// it a reader behind writes its catch-up uncompressed (still valid framing) until it joins.
pub const DEFAULT_MAX_CATCHUP_ENCODERS: usize = 64;

/// A content coding the gateway can answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coding {
    Gzip,
    Zstd,
}

impl Coding {
    /// The `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }
}

/// `--compression`: the codings offered, in the gateway's order of preference, or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codings(pub Vec<Coding>);

impl Default for Codings {
    fn default() -> Self {
        Self(vec![Coding::Zstd, Coding::Gzip])
    }
}

impl FromStr for Codings {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim() == "off" {
            return Ok(Self(Vec::new()));
        }
        let mut out = Vec::new();
        for token in s.split(',').map(str::trim) {
            let coding = match token {
                "gzip" => Coding::Gzip,
                "zstd" => Coding::Zstd,
                other => return Err(format!("{other:?} is not off, gzip or zstd")),
            };
            if !out.contains(&coding) {
                out.push(coding);
            }
        }
        Ok(Self(out))
    }
}

impl fmt::Display for Codings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("off");
        }
        let names: Vec<_> = self.0.iter().map(|c| c.token()).collect();
        f.write_str(&names.join(","))
    }
}

/// How responses are compressed.
#[derive(Debug, Clone)]
pub struct CompressionConfig {
    /// The codings offered, best first; empty turns compression off.
    pub codings: Codings,
    pub gzip_level: u32,
    pub zstd_level: i32,
    /// Raw bytes between two resets of a shared encoder.
    pub reset_bytes: usize,
    /// Catch-up encoders alive at once across all readers.
    pub max_catchup_encoders: usize,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        Self {
            codings: Codings::default(),
            gzip_level: DEFAULT_GZIP_LEVEL,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            reset_bytes: DEFAULT_RESET_BYTES,
            max_catchup_encoders: DEFAULT_MAX_CATCHUP_ENCODERS,
        }
    }
}

/// The coding to answer a request with: the first of the gateway's order that its
/// `Accept-Encoding` accepts (q > 0), else `None` (identity).
pub(crate) fn negotiate(headers: &HeaderMap, codings: &Codings) -> Option<Coding> {
    let mut accepted = Vec::new();
    for value in headers.get_all(http::header::ACCEPT_ENCODING) {
        let Ok(text) = value.to_str() else { continue };
        for item in text.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            if !refused {
                accepted.push(name);
            }
        }
    }
    codings.0.iter().copied().find(|c| {
        accepted
            .iter()
            .any(|a| a == c.token() || (*c == Coding::Gzip && a == "x-gzip"))
    })
}
