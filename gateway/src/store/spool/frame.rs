//! A record on disk: framed with its length and a CRC-32 of the rest, so a reader never
//! trusts bytes it has not checked, and a torn tail (a crash mid-write) reads as the end.
//!
//! ```text
//! u32 len | u32 crc32(body) | body = u8 kind | u8 flags | u64 seq | u64 ts_ms | u64 n |
//!                                    u32 counted | payload (len - 30 bytes)
//! ```
//! Integers are little-endian. A record's payload is its JSON exactly as the SSE `data:`
//! field carries it, so the frame read back is byte-identical; a meta frame's payload is
//! the job's [`Progress`](crate::store::Progress) as JSON.
//!
//! Finding frames again after damage ([`plausible`]): a length is at most [`MAX_BODY`],
//! so its top byte is 0x00 to 0x04, and JSON text never holds those bytes raw. No frame
//! header can therefore hide inside a payload, and a search that checks the header's
//! shape, then the CRC, finds only frames the gateway wrote.

use bytes::{BufMut, BytesMut};

use crate::entry::{Entry, Kind};
use crate::record::Stream;

/// Every spool file starts with this; a file without it is not ours (or a newer format).
pub(crate) const MAGIC: &[u8; 8] = b"TGSPOOL1";

/// Length and checksum.
pub(crate) const HEAD: usize = 8;
/// kind, flags, seq, ts, n, counted.
const FIXED: usize = 1 + 1 + 8 + 8 + 8 + 4;

/// A frame larger than this is corruption, not a record. Publishing refuses a record
/// whose frame would be larger, and the configuration refuses line limits that could
/// make one (see [`max_payload`]).
pub(crate) const MAX_BODY: usize = 64 * 1024 * 1024;

/// The largest record JSON (SSE `data:` payload) a frame can hold.
pub(crate) const fn max_payload() -> usize {
    MAX_BODY - FIXED
}

/// A record's JSON besides its text: seq, timestamp, stream, `n` and the quotes.
pub(crate) const RECORD_OVERHEAD: usize = 256;

/// The most bytes a log line of `line_bytes` bytes can take as record JSON: every byte a
/// control character escaped as `\u00XX`.
pub(crate) const fn worst_json(line_bytes: usize) -> usize {
    line_bytes.saturating_mul(6).saturating_add(RECORD_OVERHEAD)
}

/// The longest line limit whose lines always fit a frame.
pub(crate) const fn max_line_bytes() -> usize {
    (max_payload() - RECORD_OVERHEAD) / 6
}

/// Bytes of a frame's head and fixed fields: what [`plausible`] looks at.
pub(crate) const PREFIX: usize = HEAD + FIXED;

const KIND_LOG: u8 = 1;
const KIND_STATUS: u8 = 2;
const KIND_CUSTOM: u8 = 3;
const KIND_META: u8 = 8;

const FLAG_N: u8 = 1;
const FLAG_COUNTED: u8 = 2;
/// Two bits for a log record's stream.
const STREAM_SHIFT: u8 = 4;

/// A checked frame's contents, borrowing its payload.
#[derive(Debug, PartialEq)]
pub(crate) enum Decoded<'a> {
    Record {
        seq: u64,
        ts_ms: u64,
        kind: RecordKind,
        n: Option<u64>,
        counted: Option<u32>,
        payload: &'a [u8],
    },
    Meta(&'a [u8]),
}

/// A record's kind as framed; a status record's status is in its JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordKind {
    Log(Stream),
    Status,
    Custom,
}

/// What a frame at some offset turned out to be (tests read frames this way).
#[cfg(test)]
#[derive(Debug, PartialEq)]
pub(crate) enum Read<'a> {
    /// A whole, checked frame and the bytes it took.
    Frame(Decoded<'a>, usize),
    /// Not enough bytes for the frame (a torn tail, or more to read).
    Short { need: usize },
    /// The bytes are not a valid frame: the log ends before them.
    Bad(&'static str),
}

/// Appends a record frame for `entry` to `out`.
pub(crate) fn put_record(out: &mut BytesMut, entry: &Entry) {
    let (kind, stream) = match entry.kind() {
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
    if entry.n().is_some() {
        flags |= FLAG_N;
    }
    if entry.counted().is_some() {
        flags |= FLAG_COUNTED;
    }
    put(
        out,
        kind,
        flags,
        entry.seq(),
        entry.ts_ms(),
        entry.n().unwrap_or(0),
        entry.counted().unwrap_or(0),
        entry.json(),
    );
}

/// Appends a meta frame holding `payload` to `out`.
pub(crate) fn put_meta(out: &mut BytesMut, payload: &[u8]) {
    put(out, KIND_META, 0, 0, 0, 0, 0, payload);
}

#[allow(clippy::too_many_arguments)]
fn put(
    out: &mut BytesMut,
    kind: u8,
    flags: u8,
    seq: u64,
    ts_ms: u64,
    n: u64,
    counted: u32,
    payload: &[u8],
) {
    let len = FIXED + payload.len();
    out.reserve(HEAD + len);
    let start = out.len();
    out.put_u32_le(len as u32);
    out.put_u32_le(0);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u64_le(seq);
    out.put_u64_le(ts_ms);
    out.put_u64_le(n);
    out.put_u32_le(counted);
    out.put_slice(payload);
    let crc = crc32fast::hash(&out[start + HEAD..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Whether a whole, intact frame starts `buf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// A frame of this many bytes whose checksum matches.
    Whole(usize),
    /// Not enough bytes for the frame (a torn tail, or more to read).
    Short { need: usize },
    /// The bytes are not a valid frame: the log ends before them.
    Bad(&'static str),
}

/// Checks the length and checksum of the frame at the start of `buf`.
pub(crate) fn check(buf: &[u8]) -> Check {
    let Some(head) = buf.get(..HEAD) else {
        return Check::Short { need: HEAD };
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if !(FIXED..=MAX_BODY).contains(&len) {
        return Check::Bad("frame length out of range");
    }
    let Some(body) = buf.get(HEAD..HEAD + len) else {
        return Check::Short { need: HEAD + len };
    };
    if crc32fast::hash(body) != crc {
        return Check::Bad("checksum mismatch");
    }
    Check::Whole(HEAD + len)
}

/// Whether `prefix` (at least [`PREFIX`] bytes) looks like the start of a frame the
/// gateway wrote after a record `next_seq - 1`: a record of a later seq, or a meta frame.
/// Returns the whole frame's length, for [`check`] to confirm with the CRC.
pub(crate) fn plausible(prefix: &[u8], next_seq: u64) -> Option<usize> {
    let prefix = prefix.get(..PREFIX)?;
    let u64_at = |i: usize| {
        let mut b = [0; 8];
        b.copy_from_slice(&prefix[i..i + 8]);
        u64::from_le_bytes(b)
    };
    let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if !(FIXED..=MAX_BODY).contains(&len) {
        return None;
    }
    let (kind, flags) = (prefix[HEAD], prefix[HEAD + 1]);
    let (seq, ts_ms, n) = (u64_at(HEAD + 2), u64_at(HEAD + 10), u64_at(HEAD + 18));
    let counted = &prefix[HEAD + 26..HEAD + 30];
    let fits = match kind {
        KIND_META => flags == 0 && seq == 0 && ts_ms == 0 && n == 0 && counted == [0; 4],
        KIND_LOG | KIND_STATUS | KIND_CUSTOM => {
            flags & !(FLAG_N | FLAG_COUNTED | (3 << STREAM_SHIFT)) == 0
                && seq >= next_seq.max(1)
                && seq - next_seq.max(1) < 1 << 32
        }
        _ => false,
    };
    fits.then_some(HEAD + len)
}

/// The contents of a frame [`check`] found whole (`frame` is exactly that frame).
pub(crate) fn decode(frame: &[u8]) -> Result<Decoded<'_>, &'static str> {
    let body = &frame[HEAD..];
    let u64_at = |i: usize| {
        let mut b = [0; 8];
        b.copy_from_slice(&body[i..i + 8]);
        u64::from_le_bytes(b)
    };
    let (kind, flags) = (body[0], body[1]);
    let (seq, ts_ms, n) = (u64_at(2), u64_at(10), u64_at(18));
    let counted = u32::from_le_bytes([body[26], body[27], body[28], body[29]]);
    let payload = &body[FIXED..];
    let kind = match kind {
        KIND_META => return Ok(Decoded::Meta(payload)),
        KIND_LOG => RecordKind::Log(match (flags >> STREAM_SHIFT) & 3 {
            0 => Stream::Stdout,
            1 => Stream::Stderr,
            _ => Stream::System,
        }),
        KIND_STATUS => RecordKind::Status,
        KIND_CUSTOM => RecordKind::Custom,
        _ => return Err("unknown frame kind"),
    };
    if seq == 0 {
        return Err("record with seq 0");
    }
    Ok(Decoded::Record {
        seq,
        ts_ms,
        kind,
        n: (flags & FLAG_N != 0).then_some(n),
        counted: (flags & FLAG_COUNTED != 0).then_some(counted),
        payload,
    })
}

/// Reads the frame at the start of `buf`: [`check`], then [`decode`].
#[cfg(test)]
pub(crate) fn read(buf: &[u8]) -> Read<'_> {
    match check(buf) {
        Check::Whole(len) => match decode(&buf[..len]) {
            Ok(decoded) => Read::Frame(decoded, len),
            Err(why) => Read::Bad(why),
        },
        Check::Short { need } => Read::Short { need },
        Check::Bad(why) => Read::Bad(why),
    }
}

/// The entry a checked record frame holds.
pub(crate) fn entry(
    seq: u64,
    ts_ms: u64,
    kind: RecordKind,
    n: Option<u64>,
    counted: Option<u32>,
    payload: &[u8],
) -> Result<Entry, crate::entry::BadPayload> {
    let json = std::str::from_utf8(payload).map_err(|e| crate::entry::BadPayload {
        seq,
        why: e.to_string(),
    })?;
    let kind = match kind {
        RecordKind::Log(stream) => Kind::Log(stream),
        RecordKind::Custom => Kind::Custom,
        RecordKind::Status => crate::entry::decode_status(seq, payload)?,
    };
    Ok(Entry::from_json(seq, ts_ms, kind, n, counted, json))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{JobStatus, Record, RecordBody};

    fn sample() -> Vec<Entry> {
        let bodies = [
            RecordBody::Log {
                stream: Stream::Stderr,
                line: "héllo\r\n".into(),
            },
            RecordBody::Custom {
                kind: "k".into(),
                data: serde_json::json!([1, 2]),
            },
            RecordBody::Status {
                status: JobStatus::Succeeded,
                exit_code: Some(0),
            },
        ];
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| {
                let r = Record {
                    seq: i as u64 + 1,
                    ts_ms: 99,
                    body,
                };
                Entry::new(&r, (i == 0).then_some(5), (i < 2).then_some(3))
            })
            .collect()
    }

    #[test]
    fn frames_round_trip_byte_identical() {
        let mut buf = BytesMut::new();
        for e in sample() {
            put_record(&mut buf, &e);
        }
        put_meta(&mut buf, b"{}");
        let mut at = 0;
        for want in sample() {
            let Read::Frame(
                Decoded::Record {
                    seq,
                    ts_ms,
                    kind,
                    n,
                    counted,
                    payload,
                },
                used,
            ) = read(&buf[at..])
            else {
                panic!("expected a record at {at}");
            };
            let got = entry(seq, ts_ms, kind, n, counted, payload).unwrap();
            assert_eq!(got.sse, want.sse);
            assert_eq!((got.n(), got.counted()), (want.n(), want.counted()));
            assert_eq!(got.kind(), want.kind());
            at += used;
        }
        assert!(matches!(
            read(&buf[at..]),
            Read::Frame(Decoded::Meta(b"{}"), _)
        ));
    }

    #[test]
    fn frames_are_found_again_only_where_they_start() {
        let mut buf = BytesMut::new();
        let mut starts = Vec::new();
        for e in sample() {
            starts.push(buf.len());
            put_record(&mut buf, &e);
        }
        starts.push(buf.len());
        put_meta(&mut buf, br#"{"a":1}"#);
        let found: Vec<usize> = (0..buf.len())
            .filter(|&i| {
                plausible(&buf[i..], 1)
                    .is_some_and(|len| matches!(check(&buf[i..]), Check::Whole(l) if l == len))
            })
            .collect();
        assert_eq!(found, starts);
        assert_eq!(
            plausible(&buf[..], 2),
            None,
            "seq 1 is before the seq expected"
        );
    }

    #[test]
    fn every_torn_or_flipped_frame_is_refused() {
        let mut buf = BytesMut::new();
        put_record(&mut buf, &sample()[0]);
        for cut in 0..buf.len() {
            assert!(
                matches!(read(&buf[..cut]), Read::Short { .. }),
                "cut at {cut}"
            );
        }
        for i in 0..buf.len() {
            let mut bad = buf.to_vec();
            bad[i] ^= 0x40;
            assert!(
                !matches!(read(&bad), Read::Frame(..)),
                "flip at {i} still read as a frame"
            );
        }
    }
}
