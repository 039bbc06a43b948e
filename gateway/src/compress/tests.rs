//! Readers joining, leaving and falling behind one shared stream: every reader's bytes
//! decode, chunk by chunk as they are written, to exactly its plain SSE.

use std::io::Read as _;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use proptest::prelude::*;

use super::*;
use crate::entry::{Entry, Kind};
use crate::memory::MemoryBudget;
use crate::record::Stream;
use crate::subscription::{frame_of, Format};

fn entry(seq: u64) -> Arc<Entry> {
    // Build-log-like lines: repetitive, with colours and a CR progress line now and then.
    let line = match seq % 4 {
        0 => format!(
            "\\u001b[1m\\u001b[32m   Compiling\\u001b[0m crate-{} v0.{}.0",
            seq % 17,
            seq % 5
        ),
        1 => format!(
            "npm http fetch GET 200 https://registry.example/pkg-{} {}ms",
            seq % 23,
            seq % 90
        ),
        2 => format!(
            "[{seq}/400] gcc -O2 -Wall -c src/file{}.c -o obj/file{}.o",
            seq % 31,
            seq % 31
        ),
        _ => format!("Downloading pkg-{}.whl (1.{} MB)\\r 45%", seq % 11, seq % 9),
    };
    let json = format!(
        "{{\"seq\":{seq},\"ts\":\"2026-12-02T03:00:00.000Z\",\"stream\":\"stdout\",\"line\":\"{line}\"}}"
    );
    Arc::new(Entry::from_json(
        seq,
        0,
        Kind::Log(Stream::Stdout),
        None,
        None,
        &json,
    ))
}

fn streams(reset_bytes: usize, max_catchup: usize) -> Arc<Streams> {
    let config = CompressionConfig {
        reset_bytes,
        max_catchup_encoders: max_catchup,
        ..CompressionConfig::default()
    };
    Arc::new(Streams::new(
        config,
        Arc::new(MemoryBudget::new(usize::MAX)),
    ))
}

/// Decodes a reader's chunks as they come, checking each decodes at once.
enum Live {
    Gzip(flate2::Decompress, usize),
    Zstd(Box<zstd::stream::raw::Decoder<'static>>),
}

impl Live {
    fn new(coding: Coding) -> Self {
        match coding {
            Coding::Gzip => Live::Gzip(flate2::Decompress::new(false), 0),
            Coding::Zstd => Live::Zstd(Box::new(zstd::stream::raw::Decoder::new().unwrap())),
        }
    }

    /// The bytes `chunk` decodes to right away.
    fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Live::Gzip(d, header) => {
                // The 10-byte member header is skipped; the trailer is checked by `whole`.
                let skip = (encoder::GZIP_HEADER.len() - *header).min(chunk.len());
                *header += skip;
                let mut input = &chunk[skip..];
                loop {
                    let mut buf = vec![0u8; 64 * 1024];
                    let (before_in, before_out) = (d.total_in(), d.total_out());
                    let status = d
                        .decompress(input, &mut buf, flate2::FlushDecompress::Sync)
                        .unwrap();
                    let used = (d.total_in() - before_in) as usize;
                    let made = (d.total_out() - before_out) as usize;
                    out.extend_from_slice(&buf[..made]);
                    input = &input[used..];
                    if status == flate2::Status::StreamEnd || (input.is_empty() && made < buf.len())
                    {
                        break;
                    }
                }
            }
            Live::Zstd(d) => {
                use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
                let mut input = InBuffer::around(chunk);
                loop {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut output = OutBuffer::around(&mut buf[..]);
                    let hint = d.run(&mut input, &mut output).unwrap();
                    let made = output.pos();
                    out.extend_from_slice(&buf[..made]);
                    if input.pos() == chunk.len() && made < buf.len() {
                        // httpx 0.28's zstd decoder fails on a chunk that ends a frame
                        // exactly: only the body's last write may.
                        assert!(
                            hint != 0 || chunk.is_empty(),
                            "a write ends at a frame's end"
                        );
                        break;
                    }
                }
            }
        }
        out
    }
}

/// A whole body decoded by the stock decoders (gzip: CRC and length checked).
fn whole(coding: Coding, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        Coding::Gzip => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
        }
        Coding::Zstd => out = zstd::stream::decode_all(body).unwrap(),
    }
    out
}

/// One reader in the model: its coder, its cursor, what it should decode to.
struct Model {
    coder: ReaderCoder,
    cursor: u64,
    plain: Vec<u8>,
    body: Vec<u8>,
    live: Live,
}

impl Model {
    fn write(&mut self, raw: &[u8], coded: Bytes) {
        self.plain.extend_from_slice(raw);
        self.body.extend_from_slice(&coded);
        let decoded = self.live.feed(&coded);
        assert_eq!(decoded, raw, "a chunk decodes to its plain bytes at once");
    }
}

#[derive(Debug, Clone)]
enum Action {
    /// The publisher appends this many events.
    Publish(u8),
    /// Reader `i` reads up to `n` events.
    Read(usize, u8),
    /// Reader `i` sends a keep-alive.
    Keepalive(usize),
    /// Reader `i` skips `n` events (a gap).
    Gap(usize, u8),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (1u8..40).prop_map(Action::Publish),
        6 => (0usize..4, 1u8..60).prop_map(|(i, n)| Action::Read(i, n)),
        1 => (0usize..4).prop_map(Action::Keepalive),
        1 => (0usize..4, 1u8..80).prop_map(|(i, n)| Action::Gap(i, n)),
    ]
}

fn run(coding: Coding, actions: &[Action], reset_bytes: usize, max_catchup: usize) {
    let streams = streams(reset_bytes, max_catchup);
    let owner: Arc<dyn std::any::Any + Send + Sync> = Arc::new(());
    let mut log: Vec<Arc<Entry>> = Vec::new();
    let mut readers: Vec<Model> = (0..4)
        .map(|_| Model {
            coder: ReaderCoder::new(
                streams.get_for(owner.clone(), coding, Format::Json),
                streams.clone(),
            ),
            cursor: 1,
            plain: Vec::new(),
            body: Vec::new(),
            live: Live::new(coding),
        })
        .collect();
    for r in readers.iter_mut() {
        let opening = Bytes::from_static(crate::sse::PRELUDE);
        let coded = r.coder.own(&opening);
        r.write(&opening, coded);
    }
    for a in actions {
        match *a {
            Action::Publish(n) => {
                for _ in 0..n {
                    log.push(entry(log.len() as u64 + 1));
                }
            }
            Action::Read(i, n) => {
                let r = &mut readers[i];
                let from = (r.cursor - 1) as usize;
                let to = (from + n as usize).min(log.len());
                if from >= to {
                    continue;
                }
                let (coded, written) = r.coder.entries(&log[from..to]);
                // A shared chunk is written whole: it may hold events past the batch.
                let written = written.expect("events written");
                assert!(written.seq as usize >= to, "the whole batch is written");
                let raw: Vec<u8> = log[from..written.seq as usize]
                    .iter()
                    .flat_map(|e| frame_of(Format::Json, e).to_vec())
                    .collect();
                r.write(&raw, coded);
                r.cursor = written.seq + 1;
            }
            Action::Keepalive(i) => {
                let r = &mut readers[i];
                let coded = r.coder.own(crate::sse::KEEPALIVE);
                r.write(crate::sse::KEEPALIVE, coded);
            }
            Action::Gap(i, n) => {
                let r = &mut readers[i];
                r.cursor = (r.cursor + u64::from(n)).min(log.len() as u64 + 1);
                let gap = b"event: gap\ndata: {}\n\n";
                let coded = r.coder.own(gap);
                r.write(gap, coded);
            }
        }
    }
    for mut r in readers {
        let end = r.coder.finish();
        r.body.extend_from_slice(&end);
        assert_eq!(whole(coding, &r.body), r.plain, "the whole body decodes");
    }
    assert_eq!(streams.catchup_count(), 0, "catch-up encoders are freed");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn gzip_readers_decode_their_plain_stream(actions in prop::collection::vec(action(), 1..80)) {
        run(Coding::Gzip, &actions, 2048, 64);
    }

    #[test]
    fn zstd_readers_decode_their_plain_stream(actions in prop::collection::vec(action(), 1..80)) {
        run(Coding::Zstd, &actions, 2048, 64);
    }

    #[test]
    fn readers_without_a_catchup_encoder_still_decode(actions in prop::collection::vec(action(), 1..60)) {
        run(Coding::Gzip, &actions, 1024, 0);
        run(Coding::Zstd, &actions, 1024, 0);
    }
}

#[test]
fn caught_up_readers_write_the_same_bytes() {
    for coding in [Coding::Gzip, Coding::Zstd] {
        let streams = streams(64 * 1024, 64);
        let owner: Arc<dyn std::any::Any + Send + Sync> = Arc::new(());
        let mut a = ReaderCoder::new(
            streams.get_for(owner.clone(), coding, Format::Json),
            streams.clone(),
        );
        let mut b = ReaderCoder::new(
            streams.get_for(owner.clone(), coding, Format::Json),
            streams.clone(),
        );
        let _ = (a.own(b"x"), b.own(b"x"));
        let first = [entry(1)];
        let _ = (a.entries(&first), b.entries(&first));
        for seq in 2..50 {
            let e = [entry(seq)];
            let (ca, cb) = (a.entries(&e).0, b.entries(&e).0);
            assert_eq!(ca, cb);
            assert_eq!(ca.as_ptr(), cb.as_ptr(), "one allocation, shared");
        }
        assert_eq!(streams.catchup_count(), 0);
    }
}

#[test]
fn accept_encoding_picks_the_gateways_order() {
    let pick = |value: &str, codings: &str| {
        let mut h = HeaderMap::new();
        h.insert(http::header::ACCEPT_ENCODING, value.parse().unwrap());
        negotiate(&h, &codings.parse().unwrap())
    };
    assert_eq!(
        pick("gzip, deflate, br, zstd", "zstd,gzip"),
        Some(Coding::Zstd)
    );
    assert_eq!(
        pick("gzip, deflate, br, zstd", "gzip,zstd"),
        Some(Coding::Gzip)
    );
    assert_eq!(pick("gzip, deflate", "zstd,gzip"), Some(Coding::Gzip));
    assert_eq!(
        pick("zstd;q=0, gzip;q=0.5", "zstd,gzip"),
        Some(Coding::Gzip)
    );
    assert_eq!(pick("br, deflate", "zstd,gzip"), None);
    assert_eq!(pick("gzip", "off"), None);
    assert_eq!(negotiate(&HeaderMap::new(), &Codings::default()), None);
    assert!("gzip,lz4".parse::<Codings>().is_err());
}
