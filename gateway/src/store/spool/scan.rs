//! Recovery: one forward scan of a spool that checks every frame and rebuilds the job's
//! progress and the sparse seq -> offset index. At a torn tail (a crash mid-write) the
//! scan ends: that write was never acknowledged whole, and the file is cut there. At
//! damage (a frame that fails its checks with intact frames after it) the scan finds
//! the next frame the gateway wrote ([`frame::plausible`], then the CRC) and carries on,
//! noting the seqs lost, so intact data after a bad byte is never thrown away.

use std::fs::File;
use std::io::Read as _;
use std::ops::Range;

use bytes::BytesMut;

use super::frame::{self, Decoded};
use super::index::SparseIndex;
use super::reader::{read_exact_at, FrameReader};
use crate::store::Progress;

/// Bytes read from the file at once while scanning.
const CHUNK: usize = 1024 * 1024;

/// Capgo confirmations kept per job at most (the newest win).
pub(crate) const MAX_CONFIRMATIONS: usize = 64;

/// What a scan found.
#[derive(Debug)]
pub(crate) struct Scanned {
    pub(crate) progress: Progress,
    pub(crate) index: SparseIndex,
    /// Bytes of whole, checked frames (the magic included) before the first damage or
    /// torn tail: without [`Scanned::damage`], the file's true length.
    pub(crate) good_len: u64,
    /// The file's length on disk before any cut.
    pub(crate) file_len: u64,
    pub(crate) confirmations: Vec<(u64, u64)>,
    /// Bytes that are not frames the gateway wrote, with intact frames after them, or
    /// not all zero at the end: the file must be rebuilt from [`Damage::pieces`].
    pub(crate) damage: Option<Damage>,
}

/// Where a spool is damaged, and what of it is intact.
#[derive(Debug, Default)]
pub(crate) struct Damage {
    /// What a clean copy of the spool holds, in order, after the magic.
    pub(crate) pieces: Vec<Piece>,
    /// The seqs lost, each range inclusive.
    pub(crate) lost: Vec<(u64, u64)>,
    /// Bytes skipped as damaged.
    pub(crate) skipped: u64,
    /// The damage runs to the end of the file: how many records it held is unknown, so
    /// readers may have seen seqs the job will give again.
    pub(crate) tail: bool,
}

/// A part of a clean copy of a damaged spool.
#[derive(Debug)]
pub(crate) enum Piece {
    /// Intact frames: this byte range of the damaged file.
    Frames(Range<u64>),
    /// A meta frame marking lost seqs, so the next scan expects the seq after them.
    Frame(Vec<u8>),
}

/// A meta frame's payload.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Meta {
    pub(crate) progress: Progress,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) confirm: Option<(u64, u64)>,
    /// Seqs lost to damage just before this frame (inclusive), when recovery rebuilt
    /// the spool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) lost: Option<(u64, u64)>,
}

/// Why a spool cannot be recovered at all.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ScanError {
    #[error("cannot read the spool: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a tailgate spool (bad magic)")]
    Magic,
    #[error("the spool has no job header")]
    NoHeader,
    #[error("{0}")]
    Payload(#[from] crate::entry::BadPayload),
}

/// Scans `file` from its start.
pub(crate) fn scan(mut file: File) -> Result<Scanned, ScanError> {
    let file_len = file.metadata()?.len();
    let mut magic = [0u8; 8];
    if file.read_exact(&mut magic).is_err() || &magic != frame::MAGIC {
        return Err(ScanError::Magic);
    }
    let mut progress: Option<Progress> = None;
    let mut index = SparseIndex::default();
    let mut confirmations: Vec<(u64, u64)> = Vec::new();
    let mut damage = Damage::default();
    let mut good_len = None;
    let mut run = frame::MAGIC.len() as u64;
    loop {
        let mut frames = FrameReader::new(file.try_clone()?, run, file_len, CHUNK);
        // Right after damage: the first frame found may skip lost seqs.
        let mut resumed = run > frame::MAGIC.len() as u64;
        let mut end = frames.offset();
        while let Some((offset, decoded)) = frames.next()? {
            match decoded {
                Decoded::Meta(payload) => {
                    let Ok(meta) = serde_json::from_slice::<Meta>(payload) else {
                        break;
                    };
                    if let (true, Some(p)) = (resumed, &progress) {
                        if meta.progress.next_seq > p.next_seq {
                            damage.lost.push((p.next_seq, meta.progress.next_seq - 1));
                        }
                    }
                    if let Some((hash, id)) = meta.confirm {
                        confirmations.retain(|(h, _)| *h != hash);
                        confirmations.push((hash, id));
                        if confirmations.len() > MAX_CONFIRMATIONS {
                            confirmations.remove(0);
                        }
                    }
                    progress = Some(meta.progress);
                }
                Decoded::Record {
                    seq,
                    ts_ms,
                    kind,
                    n,
                    counted,
                    payload,
                } => {
                    let Some(p) = progress.as_mut() else {
                        return Err(ScanError::NoHeader);
                    };
                    if resumed && seq > p.next_seq {
                        let lost = (p.next_seq, seq - 1);
                        damage.lost.push(lost);
                        p.next_seq = seq;
                        damage.pieces.push(Piece::Frame(lost_marker(p, lost)));
                    }
                    if seq != p.next_seq {
                        // Out of order: not something we wrote; the log ends here.
                        break;
                    }
                    let entry = frame::entry(seq, ts_ms, kind, n, counted, payload)?;
                    index.note(seq, offset);
                    p.apply(&entry);
                }
            }
            resumed = false;
            end = frames.offset();
        }
        let stopped_bad = frames.bad().is_some();
        drop(frames);
        if end >= file_len {
            if !damage.pieces.is_empty() {
                damage.pieces.push(Piece::Frames(run..end));
            }
            break;
        }
        good_len.get_or_insert(end);
        let next_seq = progress.as_ref().map_or(1, |p| p.next_seq);
        match find_frame(&file, end + 1, file_len, next_seq)? {
            Some(next) => {
                damage.pieces.push(Piece::Frames(run..end));
                damage.skipped += next - end;
                run = next;
            }
            None => {
                // A torn tail: the file ends inside the last write, or zeros follow
                // (the rest of the append window), or a frame copied into the window
                // only in part. Anything else (a bad frame followed by bytes that are
                // not all zero) is damage whose extent is unknown.
                let torn = !stopped_bad
                    || all_zero(&file, end, file_len)?
                    || cut_short(&file, end, file_len)?;
                if !torn {
                    damage.skipped += file_len - end;
                    damage.tail = true;
                }
                if !torn || !damage.pieces.is_empty() {
                    damage.pieces.push(Piece::Frames(run..end));
                }
                if let (false, Some(p)) = (torn, progress.as_mut()) {
                    // Readers may have seen seqs past the damage: the job starts a new
                    // life (a job's local life is its creation time), so a resuming
                    // reader is told to start over instead of meeting reused seqs.
                    p.created_ms = (p.created_ms + 1).max(crate::store::now_ms());
                    damage.pieces.push(Piece::Frame(new_life(p)));
                }
                break;
            }
        }
    }
    let progress = progress.ok_or(ScanError::NoHeader)?;
    let good_len = good_len.unwrap_or(file_len);
    Ok(Scanned {
        progress,
        index,
        good_len,
        file_len,
        confirmations,
        damage: (!damage.pieces.is_empty()).then_some(damage),
    })
}

/// A meta frame starting the job's new life, carrying `p`.
fn new_life(p: &Progress) -> Vec<u8> {
    let meta = Meta {
        progress: *p,
        confirm: None,
        lost: None,
    };
    let mut out = BytesMut::new();
    frame::put_meta(&mut out, &serde_json::to_vec(&meta).unwrap_or_default());
    out.to_vec()
}

/// A meta frame saying that the seqs `lost` are gone, carrying `p`.
fn lost_marker(p: &Progress, lost: (u64, u64)) -> Vec<u8> {
    let meta = Meta {
        progress: *p,
        confirm: None,
        lost: Some(lost),
    };
    let mut out = BytesMut::new();
    frame::put_meta(&mut out, &serde_json::to_vec(&meta).unwrap_or_default());
    out.to_vec()
}

/// The offset of the first intact frame at or after `from` that could follow a record
/// `next_seq - 1`, if any.
fn find_frame(file: &File, from: u64, end: u64, next_seq: u64) -> std::io::Result<Option<u64>> {
    let mut base = from;
    let mut buf = vec![0u8; CHUNK + frame::PREFIX];
    while base + frame::PREFIX as u64 <= end {
        let n = (buf.len() as u64).min(end - base) as usize;
        read_exact_at(file, &mut buf[..n], base)?;
        let last = n.saturating_sub(frame::PREFIX);
        for i in 0..=last {
            let Some(len) = frame::plausible(&buf[i..n], next_seq) else {
                continue;
            };
            let at = base + i as u64;
            if at + len as u64 > end {
                continue;
            }
            let mut whole = vec![0u8; len];
            read_exact_at(file, &mut whole, at)?;
            if frame::check(&whole) == frame::Check::Whole(len) && frame::decode(&whole).is_ok() {
                return Ok(Some(at));
            }
        }
        base += last as u64 + 1;
    }
    Ok(None)
}

/// Whether the bytes from `at` are one frame cut short, then zeros: what a crash in the
/// middle of a copy into the append window ([`super::window`]) leaves. The copy may have
/// stored any of the frame's bytes (a `memcpy` stores in no set order), but not all: the
/// frame's last byte (its payload's closing `}`, never zero) is still zero. A frame with
/// a byte flipped and all of its bytes there is damage, not this. The frame must fit a
/// window; a length field stored in part reads short, which still ends in zeros when the
/// copy stopped in order, and otherwise is taken for damage (the job starts a new life).
fn cut_short(file: &File, at: u64, end: u64) -> std::io::Result<bool> {
    if at + 4 > end {
        return Ok(false);
    }
    let mut len = [0u8; 4];
    read_exact_at(file, &mut len, at)?;
    let frame_end = at + frame::HEAD as u64 + u64::from(u32::from_le_bytes(len));
    if frame_end - at > super::window::WINDOW || frame_end > end {
        return Ok(false);
    }
    let mut last = [0u8; 1];
    read_exact_at(file, &mut last, frame_end - 1)?;
    Ok(last[0] == 0 && all_zero(file, frame_end, end)?)
}

/// Whether the bytes `from..end` are all zero (space a crash left unwritten).
fn all_zero(file: &File, from: u64, end: u64) -> std::io::Result<bool> {
    let mut at = from;
    let mut buf = vec![0u8; CHUNK];
    while at < end {
        let n = (buf.len() as u64).min(end - at) as usize;
        read_exact_at(file, &mut buf[..n], at)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}
