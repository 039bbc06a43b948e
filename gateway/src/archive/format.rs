//! The archived object's format (version 1): a finished job's records in independent zstd
//! frames, then an index of the frames and the job's final state, then a fixed trailer.
//! Any one frame decodes alone, so a resume from the middle is one ranged GET.
//!
//! ```text
//! object  = frame* index trailer
//! frame   = one zstd frame (content checksum on) whose content is
//!           u32 count | count x head | the records' texts, one after another
//! head    = u8 kind | u8 flags | varint ts_ms delta | [varint n delta] |
//!           [varint counted - text length] | varint text length   (deltas zigzag-encoded,
//!           each against the frame's previous record, or 0 for its first)
//! index   = "TGAI" | u32 meta_len | meta (JSON) | u32 count | count x frame_ref | u32 crc32
//! frame_ref = u64 first_seq | u64 offset | u32 len | u32 raw_len
//! trailer = u64 index_offset | u32 index_len | u32 version | "TGARCHIV"
//! ```
//! Integers are little-endian. Seqs are implicit: a frame's records follow its
//! `first_seq` without holes. A record's text is its log line when the gateway's JSON
//! for that line is byte-identical to the stored one (checked when writing), else the
//! JSON exactly as the SSE `data:` field carries it (flag 8): heads and text sit in
//! separate columns, so the text compresses like the raw log. The crc32 covers the
//! index before it.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::entry::{Entry, Kind};
use crate::record::{Record, RecordBody, Stream};
use crate::store::Progress;

/// The last 8 bytes of every archived object.
pub(crate) const MAGIC: &[u8; 8] = b"TGARCHIV";
/// The format this gateway writes; a reader refuses any other.
pub(crate) const VERSION: u32 = 1;
/// index offset, index length, version, magic.
pub(crate) const TRAILER: usize = 8 + 4 + 4 + 8;
/// Raw bytes a frame is closed at (the last record may take it past).
pub(crate) const DEFAULT_FRAME_BYTES: usize = 1024 * 1024;
/// zstd level by default (`--archive-zstd-level`): measured on the build-log corpus
/// (loadtest/README.md, "Archive"), level 9 makes objects about a tenth smaller than 3
/// (11.6 % of the text against 13.1 %) for several times zstd's CPU, and 300 jobs
/// finishing together on two cores were archived sooner at 3 (the lag line, <= 5 s).
pub(crate) const LEVEL: i32 = 3;

const INDEX_MAGIC: &[u8; 4] = b"TGAI";
const FRAME_REF: usize = 8 + 8 + 4 + 4;
/// A frame claiming more raw bytes than this is corruption (records are a few MiB).
const MAX_RAW: u32 = 96 * 1024 * 1024;
/// An index claiming more than this is corruption (24 bytes per frame of 256 KiB).
pub(crate) const MAX_INDEX: u32 = 16 * 1024 * 1024;

const KIND_LOG: u8 = 1;
const KIND_STATUS: u8 = 2;
const KIND_CUSTOM: u8 = 3;
const FLAG_N: u8 = 1;
const FLAG_COUNTED: u8 = 2;
/// The text is the record's JSON, not a log line to rebuild it from.
const FLAG_JSON: u8 = 8;
const STREAM_SHIFT: u8 = 4;

/// Why an object cannot be written or read.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub(crate) enum FormatError {
    /// The object does not end with a version-1 trailer.
    #[error("not an archived log (bad trailer)")]
    Trailer,
    /// Written by another version of the format.
    #[error("archived log format version {0} is not supported")]
    Version(u32),
    /// The index is damaged.
    #[error("the archived log's index is damaged: {0}")]
    Index(&'static str),
    /// A frame does not decode or holds records that are not the index's.
    #[error("the archived log is damaged in the frame starting at record {seq}: {why}")]
    Frame { seq: u64, why: String },
    /// Records must come in seq order without holes.
    #[error("record {got} follows record {after}")]
    Order { after: u64, got: u64 },
    #[error("compression failed: {0}")]
    Compress(String),
}

/// What the object says about the job besides its records: enough to answer its status
/// and to rebuild its `JobLog` without reading a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub(crate) job_id: String,
    pub(crate) progress: Progress,
    /// Capgo clients' last confirmed ids, by the stable hash of their token.
    #[serde(default)]
    pub(crate) confirmations: Vec<(u64, u64)>,
    /// The job's life id, so a resume across archiving stays in the same life.
    #[serde(default)]
    pub(crate) life: Option<String>,
    /// When the object was written (ms since the epoch).
    pub(crate) archived_ms: u64,
}

/// Where one frame lies in the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameRef {
    pub(crate) first_seq: u64,
    pub(crate) offset: u64,
    pub(crate) len: u32,
    pub(crate) raw_len: u32,
}

/// One record as the encoder takes it: an [`Entry`]'s fields and its JSON, without the
/// SSE frame an entry carries (building one per record was most of the archive's cost
/// when reading from Redis).
#[derive(Debug, Clone)]
pub(crate) struct RecordRef<'a> {
    pub(crate) seq: u64,
    pub(crate) ts_ms: u64,
    pub(crate) kind: Kind,
    pub(crate) n: Option<u64>,
    pub(crate) counted: Option<u32>,
    /// The record's JSON, as the SSE `data:` field carries it (UTF-8).
    pub(crate) json: &'a str,
}

impl<'a> RecordRef<'a> {
    pub(crate) fn of(entry: &'a Entry) -> Self {
        Self {
            seq: entry.seq(),
            ts_ms: entry.ts_ms(),
            kind: entry.kind(),
            n: entry.n(),
            counted: entry.counted(),
            // An entry's JSON was a `str` when its frame was built.
            json: std::str::from_utf8(entry.json()).unwrap_or_default(),
        }
    }
}

/// Builds an object record by record, closing a frame every `frame_bytes` raw bytes, so
/// only one frame's raw records are held at a time.
pub(crate) struct Encoder {
    compressor: zstd::bulk::Compressor<'static>,
    frame_bytes: usize,
    /// The open frame's heads and texts (its two columns), and its record count.
    heads: Vec<u8>,
    texts: Vec<u8>,
    count: u32,
    /// The previous record's ts and n, which the next one's are stored against.
    prev: (u64, u64),
    /// The last ts checked, formatted (records of one batch share it).
    ts: (u64, String),
    first_seq: u64,
    last_seq: u64,
    /// The compressed frames not taken yet.
    out: Vec<Bytes>,
    offset: u64,
    frames: Vec<FrameRef>,
}

impl Encoder {
    /// An encoder closing frames at `frame_bytes`, compressing at zstd `level`.
    pub(crate) fn new(frame_bytes: usize, level: i32) -> Result<Self, FormatError> {
        let mut compressor =
            zstd::bulk::Compressor::new(level).map_err(|e| FormatError::Compress(e.to_string()))?;
        compressor
            .include_checksum(true)
            .map_err(|e| FormatError::Compress(e.to_string()))?;
        Ok(Self {
            compressor,
            frame_bytes: frame_bytes.max(1),
            heads: Vec::new(),
            texts: Vec::new(),
            count: 0,
            prev: (0, 0),
            ts: (0, String::new()),
            first_seq: 1,
            last_seq: 0,
            out: Vec::new(),
            offset: 0,
            frames: Vec::new(),
        })
    }

    /// Adds the next record (seqs continue without holes from 1).
    pub(crate) fn push(&mut self, entry: &Entry) -> Result<(), FormatError> {
        self.push_ref(&RecordRef::of(entry))
    }

    /// [`Encoder::push`] for a record read straight from a store, with no SSE frame
    /// built for it (the archive's way from Redis).
    pub(crate) fn push_ref(&mut self, record: &RecordRef<'_>) -> Result<(), FormatError> {
        if record.seq != self.last_seq + 1 {
            return Err(FormatError::Order {
                after: self.last_seq,
                got: record.seq,
            });
        }
        if self.count == 0 {
            self.first_seq = record.seq;
            self.prev = (0, 0);
        }
        put_record(
            &mut self.heads,
            &mut self.texts,
            self.prev,
            &mut self.ts,
            record,
        );
        self.prev = (record.ts_ms, record.n.unwrap_or(self.prev.1));
        self.count += 1;
        self.last_seq = record.seq;
        if self.heads.len() + self.texts.len() >= self.frame_bytes {
            self.close_frame()?;
        }
        Ok(())
    }

    fn close_frame(&mut self) -> Result<(), FormatError> {
        if self.count == 0 {
            return Ok(());
        }
        let mut raw = Vec::with_capacity(4 + self.heads.len() + self.texts.len());
        raw.put_u32_le(self.count);
        raw.extend_from_slice(&self.heads);
        raw.extend_from_slice(&self.texts);
        let frame = self
            .compressor
            .compress(&raw)
            .map_err(|e| FormatError::Compress(e.to_string()))?;
        self.frames.push(FrameRef {
            first_seq: self.first_seq,
            offset: self.offset,
            len: frame.len() as u32,
            raw_len: raw.len() as u32,
        });
        self.offset += frame.len() as u64;
        self.out.push(Bytes::from(frame));
        self.heads.clear();
        self.texts.clear();
        self.count = 0;
        Ok(())
    }

    /// The frames compressed since the last call, in order, to write out now: the
    /// encoder keeps only their places for the index.
    pub(crate) fn take_frames(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.out)
    }

    /// Closes the last frame and appends the index and trailer: the rest of the object
    /// (the frames not taken yet, then the index), in order. `meta.progress` must end where the records did.
    pub(crate) fn finish(mut self, meta: &Meta) -> Result<Vec<Bytes>, FormatError> {
        if meta.progress.last_seq() != self.last_seq {
            return Err(FormatError::Order {
                after: self.last_seq,
                got: meta.progress.last_seq(),
            });
        }
        self.close_frame()?;
        let meta = serde_json::to_vec(meta).map_err(|e| FormatError::Compress(e.to_string()))?;
        let mut index = BytesMut::with_capacity(16 + meta.len() + self.frames.len() * FRAME_REF);
        index.put_slice(INDEX_MAGIC);
        index.put_u32_le(meta.len() as u32);
        index.put_slice(&meta);
        index.put_u32_le(self.frames.len() as u32);
        for f in &self.frames {
            index.put_u64_le(f.first_seq);
            index.put_u64_le(f.offset);
            index.put_u32_le(f.len);
            index.put_u32_le(f.raw_len);
        }
        index.put_u32_le(crc32fast::hash(&index));
        let index_len = index.len() as u32;
        index.put_u64_le(self.offset);
        index.put_u32_le(index_len);
        index.put_u32_le(VERSION);
        index.put_slice(MAGIC);
        self.out.push(index.freeze());
        Ok(self.out)
    }
}

fn put_record(
    heads: &mut Vec<u8>,
    texts: &mut Vec<u8>,
    prev: (u64, u64),
    ts: &mut (u64, String),
    record: &RecordRef<'_>,
) {
    let (kind, stream) = match record.kind {
        Kind::Log(stream) => (KIND_LOG, stream),
        Kind::Status(..) => (KIND_STATUS, Stream::Stdout),
        Kind::Custom => (KIND_CUSTOM, Stream::Stdout),
    };
    let stream_bits = match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
        Stream::System => 2,
    };
    let mut flags = stream_bits << STREAM_SHIFT;
    if record.n.is_some() {
        flags |= FLAG_N;
    }
    if record.counted.is_some() {
        flags |= FLAG_COUNTED;
    }
    // A log line the gateway's encoder turns back into the same bytes is stored as the
    // line alone; anything else keeps its JSON. The JSON alone is compared (the frame
    // around it follows from the seq and kind), with the timestamp formatted once per
    // run of records that share it.
    let text_at = texts.len();
    let mut as_line = false;
    if let Kind::Log(stream) = record.kind {
        if ts.0 != record.ts_ms || ts.1.is_empty() {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(record.ts_ms);
            *ts = (record.ts_ms, crate::record::rfc3339_millis(at));
        }
        as_line = line_of(texts, record.json.as_bytes(), record.seq, &ts.1, stream);
        if !as_line {
            texts.truncate(text_at);
            as_line = rebuilt_line(texts, record, &ts.1, stream);
        }
    }
    if !as_line {
        flags |= FLAG_JSON;
        texts.extend_from_slice(record.json.as_bytes());
    }
    let text_len = (texts.len() - text_at) as u64;
    heads.put_u8(kind);
    heads.put_u8(flags);
    let delta = |now: u64, before: u64| zigzag(now.wrapping_sub(before) as i64);
    put_varint(heads, delta(record.ts_ms, prev.0));
    if let Some(n) = record.n {
        put_varint(heads, delta(n, prev.1));
    }
    if let Some(counted) = record.counted {
        put_varint(heads, delta(u64::from(counted), text_len));
    }
    put_varint(heads, text_len);
}

/// Appends the log line of `json` to `out` when `json` is exactly what the gateway's
/// encoder writes for that line (`Record::to_json_at`): the fixed fields in their order,
/// then the line escaped as serde_json escapes it (`\"`, `\\`, the short escapes of
/// backspace, tab, line feed, form feed and carriage return, `\u00xx` for the other
/// control characters, nothing else). One pass over the bytes, no allocation: the
/// archive's per-record cost. `false` (with `out` partly written: the caller cuts it
/// back) for anything else, which [`rebuilt_line`] then checks the slow way.
fn line_of(out: &mut Vec<u8>, json: &[u8], seq: u64, ts: &str, stream: Stream) -> bool {
    fn strip<'a>(rest: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
        rest.strip_prefix(prefix)
    }
    let mut digits = [0u8; 20];
    let seq = {
        let (mut at, mut v) = (digits.len(), seq);
        loop {
            at -= 1;
            digits[at] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        &digits[at..]
    };
    let body = strip(json, b"{\"seq\":")
        .and_then(|r| strip(r, seq))
        .and_then(|r| strip(r, b",\"ts\":\""))
        .and_then(|r| strip(r, ts.as_bytes()))
        .and_then(|r| strip(r, b"\",\"stream\":\""))
        .and_then(|r| strip(r, stream.as_str().as_bytes()))
        .and_then(|r| strip(r, b"\",\"line\":\""))
        .and_then(|r| r.strip_suffix(b"\"}"));
    let Some(mut body) = body else {
        return false;
    };
    while !body.is_empty() {
        let run = body
            .iter()
            .position(|&b| b == b'\\' || b == b'"' || b < 0x20)
            .unwrap_or(body.len());
        out.extend_from_slice(&body[..run]);
        body = &body[run..];
        let [b'\\', escape, rest @ ..] = body else {
            // The end, or a bare quote or control character: not serde_json's output.
            return body.is_empty();
        };
        let (byte, rest) = match escape {
            b'"' => (b'"', rest),
            b'\\' => (b'\\', rest),
            b'b' => (0x08, rest),
            b't' => (b'\t', rest),
            b'n' => (b'\n', rest),
            b'f' => (0x0c, rest),
            b'r' => (b'\r', rest),
            b'u' => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let [b'0', b'0', hi @ (b'0' | b'1'), lo, rest @ ..] = rest else {
                    return false;
                };
                let Some(lo) = HEX.iter().position(|h| h == lo) else {
                    return false;
                };
                let byte = ((hi - b'0') << 4) | lo as u8;
                // The short escapes are the only form serde_json writes for these.
                if matches!(byte, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d) {
                    return false;
                }
                (byte, rest)
            }
            _ => return false,
        };
        out.push(byte);
        body = rest;
    }
    true
}

/// The slow way to the same answer as [`line_of`]: the record decoded from its JSON and
/// encoded again; appends the line to `out` when the two JSONs are byte-identical.
fn rebuilt_line(out: &mut Vec<u8>, record: &RecordRef<'_>, ts: &str, stream: Stream) -> bool {
    let entry = Entry::from_json(
        record.seq,
        record.ts_ms,
        record.kind,
        record.n,
        record.counted,
        record.json,
    );
    let Some(line) = entry.line() else {
        return false;
    };
    let record = Record {
        seq: entry.seq(),
        ts_ms: entry.ts_ms(),
        body: RecordBody::Log { stream, line },
    };
    if record.to_json_at(ts).as_bytes() != entry.json() {
        return false;
    }
    if let RecordBody::Log { line, .. } = record.body {
        out.extend_from_slice(line.as_bytes());
    }
    true
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A varint from the start of `buf`, and the bytes it took.
fn varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Where the index lies, from the trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Trailer {
    pub(crate) index_offset: u64,
    pub(crate) index_len: u32,
}

/// Reads the trailer from the object's last [`TRAILER`] bytes (`tail` ends the object).
pub(crate) fn trailer(tail: &[u8], object_size: u64) -> Result<Trailer, FormatError> {
    if tail.len() < TRAILER {
        return Err(FormatError::Trailer);
    }
    let t = &tail[tail.len() - TRAILER..];
    if &t[16..24] != MAGIC {
        return Err(FormatError::Trailer);
    }
    let version = u32_at(t, 12);
    if version != VERSION {
        return Err(FormatError::Version(version));
    }
    let trailer = Trailer {
        index_offset: u64_at(t, 0),
        index_len: u32_at(t, 8),
    };
    let end = trailer.index_offset + u64::from(trailer.index_len) + TRAILER as u64;
    if trailer.index_len > MAX_INDEX || end != object_size {
        return Err(FormatError::Index(
            "the trailer does not match the object's size",
        ));
    }
    Ok(trailer)
}

/// A parsed index: the job's state and where each frame lies.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Index {
    pub(crate) meta: Meta,
    pub(crate) frames: Vec<FrameRef>,
}

impl Index {
    /// Parses `bytes` (exactly the index); `frames_end` is where the frames stop.
    pub(crate) fn parse(bytes: &[u8], frames_end: u64) -> Result<Self, FormatError> {
        let bad = FormatError::Index;
        if bytes.len() < 16 || &bytes[..4] != INDEX_MAGIC {
            return Err(bad("no index header"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(body) != u32_at(crc, 0) {
            return Err(bad("checksum mismatch"));
        }
        let meta_len = u32_at(body, 4) as usize;
        let meta_end = 8usize.checked_add(meta_len).ok_or(bad("meta length"))?;
        let meta = body.get(8..meta_end).ok_or(bad("meta length"))?;
        let meta: Meta = serde_json::from_slice(meta).map_err(|_| bad("meta is not valid"))?;
        let count = body.get(meta_end..meta_end + 4).ok_or(bad("frame count"))?;
        let count = u32_at(count, 0) as usize;
        let refs = &body[meta_end + 4..];
        if refs.len() != count * FRAME_REF {
            return Err(bad("frame count does not match"));
        }
        let frames: Vec<FrameRef> = refs
            .chunks_exact(FRAME_REF)
            .map(|r| FrameRef {
                first_seq: u64_at(r, 0),
                offset: u64_at(r, 8),
                len: u32_at(r, 16),
                raw_len: u32_at(r, 20),
            })
            .collect();
        let (mut offset, mut seq) = (0, 1);
        for f in &frames {
            if f.offset != offset || f.first_seq < seq || f.raw_len > MAX_RAW || f.len == 0 {
                return Err(bad("frames out of order"));
            }
            offset += u64::from(f.len);
            seq = f.first_seq + 1;
        }
        if offset != frames_end || frames.first().is_some_and(|f| f.first_seq != 1) {
            return Err(bad("frames do not fill the object"));
        }
        if frames
            .last()
            .is_some_and(|f| f.first_seq > meta.progress.last_seq())
        {
            return Err(bad("frames past the last record"));
        }
        Ok(Self { meta, frames })
    }

    pub(crate) fn last_seq(&self) -> u64 {
        self.meta.progress.last_seq()
    }

    /// The position of the frame holding record `seq`.
    pub(crate) fn frame_of(&self, seq: u64) -> Option<usize> {
        if seq == 0 || seq > self.last_seq() {
            return None;
        }
        let after = self.frames.partition_point(|f| f.first_seq <= seq);
        after.checked_sub(1)
    }

    /// The last seq frame `i` holds.
    pub(crate) fn frame_last_seq(&self, i: usize) -> u64 {
        self.frames
            .get(i + 1)
            .map_or(self.last_seq(), |next| next.first_seq - 1)
    }

    /// What this index weighs in a cache.
    pub(crate) fn cost(&self) -> usize {
        256 + self.meta.job_id.len() + self.frames.len() * std::mem::size_of::<FrameRef>()
    }
}

/// Decodes frame `i` of `index` from its compressed bytes: its records, checked against
/// the index (first seq, no holes, the frame's last seq).
pub(crate) fn decode_frame(
    index: &Index,
    i: usize,
    compressed: &[u8],
) -> Result<Vec<Arc<Entry>>, FormatError> {
    let Some(f) = index.frames.get(i) else {
        return Err(FormatError::Index("no such frame"));
    };
    let bad = |why: String| FormatError::Frame {
        seq: f.first_seq,
        why,
    };
    if compressed.len() != f.len as usize {
        return Err(bad("the frame is cut short".into()));
    }
    let raw =
        zstd::bulk::decompress(compressed, f.raw_len as usize).map_err(|e| bad(e.to_string()))?;
    if raw.len() != f.raw_len as usize {
        return Err(bad("the frame's size does not match the index".into()));
    }
    let entries = read_records(&raw, f.first_seq).map_err(|why| bad(why.into()))?;
    if f.first_seq + entries.len() as u64 != index.frame_last_seq(i) + 1 {
        return Err(bad("the frame's records do not match the index".into()));
    }
    Ok(entries)
}

/// The records of a frame's raw content, the first being `first_seq`.
fn read_records(raw: &[u8], first_seq: u64) -> Result<Vec<Arc<Entry>>, &'static str> {
    let count = raw.get(..4).ok_or("a frame cut short")?;
    let count = u32_at(count, 0) as usize;
    let mut heads = &raw[4..];
    let take = |heads: &mut &[u8]| -> Result<u64, &'static str> {
        let (v, used) = varint(heads).ok_or("a record head cut short")?;
        *heads = &heads[used..];
        Ok(v)
    };
    let mut parsed = Vec::with_capacity(count.min(raw.len() / 3));
    let (mut ts_ms, mut last_n) = (0u64, 0u64);
    for _ in 0..count {
        let [kind, flags, ..] = *heads else {
            return Err("a record head cut short");
        };
        heads = &heads[2..];
        let undelta = |v: u64, before: u64| before.wrapping_add(unzigzag(v) as u64);
        ts_ms = undelta(take(&mut heads)?, ts_ms);
        let n = match flags & FLAG_N != 0 {
            true => {
                last_n = undelta(take(&mut heads)?, last_n);
                Some(last_n)
            }
            false => None,
        };
        let counted = match flags & FLAG_COUNTED != 0 {
            true => Some(take(&mut heads)?),
            false => None,
        };
        let len = take(&mut heads)? as usize;
        let counted = counted
            .map(|c| u32::try_from(undelta(c, len as u64)).map_err(|_| "a count out of range"))
            .transpose()?;
        parsed.push((kind, flags, ts_ms, n, counted, len));
    }
    let mut texts = heads;
    let mut entries = Vec::with_capacity(parsed.len());
    for (i, (kind, flags, ts_ms, n, counted, len)) in parsed.into_iter().enumerate() {
        let seq = first_seq + i as u64;
        let text = texts.get(..len).ok_or("a record's text cut short")?;
        texts = &texts[len..];
        let text = std::str::from_utf8(text).map_err(|_| "a record that is not UTF-8")?;
        let stream = match (flags >> STREAM_SHIFT) & 3 {
            0 => Stream::Stdout,
            1 => Stream::Stderr,
            _ => Stream::System,
        };
        let entry = if flags & FLAG_JSON == 0 {
            if kind != KIND_LOG {
                return Err("a line stored for a record that is not a log line");
            }
            let record = Record {
                seq,
                ts_ms,
                body: RecordBody::Log {
                    stream,
                    line: text.to_string(),
                },
            };
            Entry::new_at(&record, n, counted, &record.ts())
        } else {
            if text.contains(['\r', '\n']) {
                return Err("a record with a line break");
            }
            let kind = match kind {
                KIND_LOG => Kind::Log(stream),
                KIND_STATUS => crate::entry::decode_status(seq, text.as_bytes())
                    .map_err(|_| "a status record that does not decode")?,
                KIND_CUSTOM => Kind::Custom,
                _ => return Err("an unknown record kind"),
            };
            Entry::from_json(seq, ts_ms, kind, n, counted, text)
        };
        entries.push(Arc::new(entry));
    }
    if !texts.is_empty() {
        return Err("bytes after the frame's last record");
    }
    Ok(entries)
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[i..i + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;
