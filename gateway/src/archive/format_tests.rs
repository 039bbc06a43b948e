//! The object format: round trips byte-identical, every frame decodes alone, and damage
//! is reported, never served.

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::record::{JobStatus, Record, RecordBody};

fn body(i: usize, line: &str) -> RecordBody {
    match i % 7 {
        3 => RecordBody::Custom {
            kind: "qr".into(),
            data: serde_json::json!({ "url": line }),
        },
        5 => RecordBody::Log {
            stream: Stream::Stderr,
            line: line.into(),
        },
        _ => RecordBody::Log {
            stream: Stream::Stdout,
            line: line.into(),
        },
    }
}

/// A finished job of `lines` records (the last is the terminal status).
fn job(lines: &[String]) -> (Vec<Arc<Entry>>, Meta) {
    let mut progress = Progress::new(1_000);
    let mut entries = Vec::new();
    let last = lines.len() + 1;
    for seq in 1..=last {
        let body = if seq == last {
            RecordBody::Status {
                status: JobStatus::Failed,
                exit_code: Some(2),
            }
        } else {
            body(seq, &lines[seq - 1])
        };
        let record = Record {
            seq: seq as u64,
            ts_ms: 1_000 + seq as u64,
            body,
        };
        let entry = Entry::new(&record, (seq % 2 == 0).then_some(seq as u64), Some(3));
        progress.apply(&entry);
        entries.push(Arc::new(entry));
    }
    let meta = Meta {
        job_id: "job-1".into(),
        progress,
        confirmations: vec![(7, 3)],
        life: Some("life-a".into()),
        archived_ms: 5_000,
    };
    (entries, meta)
}

fn encode(entries: &[Arc<Entry>], meta: &Meta, frame_bytes: usize) -> Vec<u8> {
    let mut encoder = Encoder::new(frame_bytes, LEVEL).unwrap();
    for e in entries {
        encoder.push(e).unwrap();
    }
    let parts: Vec<Bytes> = encoder.finish(meta).unwrap();
    parts.concat()
}

fn open(object: &[u8]) -> Result<Index, FormatError> {
    let t = trailer(object, object.len() as u64)?;
    let start = t.index_offset as usize;
    Index::parse(&object[start..start + t.index_len as usize], t.index_offset)
}

fn frame_bytes<'a>(object: &'a [u8], index: &Index, i: usize) -> &'a [u8] {
    let f = index.frames[i];
    &object[f.offset as usize..f.offset as usize + f.len as usize]
}

fn assert_same(got: &Entry, want: &Entry) {
    assert_eq!(got.sse, want.sse, "record {}", want.seq());
    assert_eq!(got.kind(), want.kind());
    assert_eq!(
        (got.n(), got.counted(), got.ts_ms()),
        (want.n(), want.counted(), want.ts_ms())
    );
}

#[test]
fn a_job_round_trips_byte_identical_with_its_meta() {
    let lines: Vec<String> = (0..500)
        .map(|i| format!("line {i} \u{1b}[32mok\r50%"))
        .collect();
    let (entries, meta) = job(&lines);
    let object = encode(&entries, &meta, 4096);
    let index = open(&object).unwrap();
    assert_eq!(index.meta, meta);
    assert!(index.frames.len() > 3, "small frames make several");
    let mut got = Vec::new();
    for i in 0..index.frames.len() {
        got.extend(decode_frame(&index, i, frame_bytes(&object, &index, i)).unwrap());
    }
    assert_eq!(got.len(), entries.len());
    for (g, w) in got.iter().zip(&entries) {
        assert_same(g, w);
    }
}

#[test]
fn the_object_is_little_more_than_the_compressed_log_text() {
    // Build output, log lines only (as most of a real log is): the heads (seq, ts, n)
    // and the JSON around each line must cost next to nothing next to the text.
    let lines: Vec<String> = (0..20_000)
        .map(|i| {
            format!(
                "   Compiling crate-{} v0.{}.{} (/build/src)",
                i % 300,
                i % 9,
                i % 17
            )
        })
        .collect();
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let mut progress = Progress::new(0);
    let mut entries = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let record = Record {
            seq: i as u64 + 1,
            ts_ms: 1_700_000_000_000 + i as u64 * 3,
            body: RecordBody::Log {
                stream: Stream::Stdout,
                line: line.clone(),
            },
        };
        let entry = Entry::new(&record, Some(i as u64 + 1), Some(line.len() as u32));
        progress.apply(&entry);
        entries.push(Arc::new(entry));
    }
    let meta = Meta {
        job_id: "big".into(),
        progress,
        confirmations: Vec::new(),
        life: None,
        archived_ms: 0,
    };
    let object = encode(&entries, &meta, DEFAULT_FRAME_BYTES);
    let text_alone = zstd::bulk::compress(text.as_bytes(), LEVEL).unwrap().len();
    assert!(
        object.len() < text_alone * 5 / 4 + 4096,
        "object {} bytes, the text alone compressed {text_alone}, raw {}",
        object.len(),
        text.len()
    );
}

#[test]
fn every_seq_maps_to_the_frame_that_holds_it() {
    let lines: Vec<String> = (0..300).map(|i| "x".repeat(i % 50)).collect();
    let (entries, meta) = job(&lines);
    let object = encode(&entries, &meta, 1000);
    let index = open(&object).unwrap();
    assert_eq!(index.frame_of(0), None);
    assert_eq!(index.frame_of(index.last_seq() + 1), None);
    for seq in 1..=index.last_seq() {
        let i = index.frame_of(seq).unwrap();
        let got = decode_frame(&index, i, frame_bytes(&object, &index, i)).unwrap();
        assert!(got.iter().any(|e| e.seq() == seq));
    }
}

#[test]
fn damage_anywhere_is_reported_not_served() {
    let lines: Vec<String> = (0..200).map(|i| format!("line {i}")).collect();
    let (entries, meta) = job(&lines);
    let object = encode(&entries, &meta, 512);
    let index = open(&object).unwrap();
    // A flipped byte inside a frame: that frame fails (zstd's checksum), others decode.
    let mut bad = object.clone();
    let f = index.frames[1];
    bad[f.offset as usize + f.len as usize / 2] ^= 0x55;
    assert!(matches!(
        decode_frame(&index, 1, frame_bytes(&bad, &index, 1)),
        Err(FormatError::Frame { .. })
    ));
    assert!(decode_frame(&index, 0, frame_bytes(&bad, &index, 0)).is_ok());
    // A flipped byte in the index, a cut object, another version.
    let mut bad = object.clone();
    let at = object.len() - TRAILER - 10;
    bad[at] ^= 1;
    assert!(matches!(open(&bad), Err(FormatError::Index(_))));
    assert_eq!(open(&object[..object.len() - 1]), Err(FormatError::Trailer));
    let mut bad = object.clone();
    let v = object.len() - 12;
    bad[v..v + 4].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(open(&bad), Err(FormatError::Version(2)));
    // A frame read short (a truncated ranged GET).
    assert!(decode_frame(&index, 0, &frame_bytes(&object, &index, 0)[1..]).is_err());
}

#[test]
fn records_must_come_in_order_and_end_where_the_meta_says() {
    let (entries, meta) = job(&["a".into(), "b".into()]);
    let mut encoder = Encoder::new(100, LEVEL).unwrap();
    assert!(encoder.push(&entries[1]).is_err());
    encoder.push(&entries[0]).unwrap();
    assert!(matches!(
        encoder.finish(&meta),
        Err(FormatError::Order { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any lines, any frame size: each frame decodes alone to exactly the records the
    /// index says it holds, byte-identical to what was written.
    #[test]
    fn any_frame_decodes_alone(
        lines in proptest::collection::vec(".{0,120}", 1..150),
        frame_bytes_at in 1usize..3000,
    ) {
        let (entries, meta) = job(&lines);
        let object = encode(&entries, &meta, frame_bytes_at);
        let index = open(&object).unwrap();
        for i in 0..index.frames.len() {
            let f = index.frames[i];
            let part = object[f.offset as usize..(f.offset + u64::from(f.len)) as usize].to_vec();
            let got = decode_frame(&index, i, &part).unwrap();
            let want = &entries[(f.first_seq - 1) as usize..index.frame_last_seq(i) as usize];
            prop_assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(want) {
                prop_assert_eq!(&g.sse, &w.sse);
            }
        }
    }
}

/// What the one-pass check stores for `json` (seq 42, the entry's ts), and what the
/// decode-and-rebuild check stores: the line, or `None` when the JSON must be kept.
fn both_ways(entry: &Entry) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let Kind::Log(stream) = entry.kind() else {
        panic!("a log entry");
    };
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(entry.ts_ms());
    let ts = crate::record::rfc3339_millis(at);
    let (mut fast, mut slow) = (Vec::new(), Vec::new());
    let fast = line_of(&mut fast, entry.json(), entry.seq(), &ts, stream).then_some(fast);
    let slow = rebuilt_line(&mut slow, &RecordRef::of(entry), &ts, stream).then_some(slow);
    (fast, slow)
}

fn log_entry(seq: u64, stream: Stream, line: &str) -> Entry {
    let record = Record {
        seq,
        ts_ms: 1_764_000_000_123 + seq % 1000,
        body: RecordBody::Log {
            stream,
            line: line.into(),
        },
    };
    Entry::new(&record, Some(seq), None)
}

#[test]
fn the_one_pass_line_check_agrees_with_the_rebuilt_json() {
    let lines = [
        "",
        "plain",
        "quote \" and backslash \\ and slash /",
        "tab\there, cr\r, lf\n, bs\u{8}, ff\u{c}, nul\u{0}, esc\u{1b}, us\u{1f}, del\u{7f}",
        "héllo wörld ✓ 🦀",
        "\\u0041 is not an escape here",
    ];
    for (i, line) in lines.iter().enumerate() {
        for stream in [Stream::Stdout, Stream::Stderr, Stream::System] {
            let entry = log_entry(i as u64 + 1, stream, line);
            let (fast, slow) = both_ways(&entry);
            assert_eq!(fast.as_deref(), Some(line.as_bytes()), "{line:?}");
            assert_eq!(fast, slow, "{line:?}");
        }
    }
    // JSON the gateway would not write: both keep it as JSON.
    let ts = "2025-11-24T16:00:00.124Z";
    for json in [
        format!(r#"{{"seq":1,"ts":"{ts}","stream":"stdout","line":"\u0041"}}"#),
        format!(r#"{{"seq":1,"ts":"{ts}","stream":"stdout","line":"\u000a"}}"#),
        format!(r#"{{"seq":1,"ts":"{ts}","stream":"stdout","line":"\u001B"}}"#),
        format!(r#"{{"seq":1,"ts":"{ts}","stream":"stdout","line":"a\/b"}}"#),
        format!(r#"{{"seq":1,"ts":"{ts}","stream":"stdout","line":"x","extra":1}}"#),
        format!(r#"{{"seq":1,"ts":"{ts}","line":"x","stream":"stdout"}}"#),
        format!(r#"{{"seq":01,"ts":"{ts}","stream":"stdout","line":"x"}}"#),
        format!(r#"{{"seq":1,"ts":"{ts}","stream":"stderr","line":"x"}}"#),
        format!(r#"{{"seq":1, "ts":"{ts}","stream":"stdout","line":"x"}}"#),
        format!(r#"{{"seq":1,"ts":"{ts}","stream":"stdout","line":"x\"}}"#),
    ] {
        let entry = Entry::from_json(
            1,
            1_764_000_000_124,
            Kind::Log(Stream::Stdout),
            None,
            None,
            &json,
        );
        let (fast, slow) = both_ways(&entry);
        assert_eq!(fast, None, "{json}");
        assert_eq!(slow, None, "{json}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The one-pass check stores exactly what decoding and rebuilding the JSON stores,
    /// for any line, with or without control characters.
    #[test]
    fn the_one_pass_line_check_stores_what_the_rebuild_would(
        line in "(\\PC|[\\x00-\\x1f\\x7f\"\\\\])*",
        seq in 1u64..u64::MAX / 2,
    ) {
        let entry = log_entry(seq, Stream::Stderr, &line);
        let (fast, slow) = both_ways(&entry);
        prop_assert_eq!(fast.as_deref(), Some(line.as_bytes()));
        prop_assert_eq!(fast, slow);
    }
}
