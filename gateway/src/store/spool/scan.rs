//! Recovery: one forward scan of a spool that checks every frame, rebuilds the job's
//! progress and the sparse seq -> offset index, and stops at the first bad or torn frame.
//! Whatever follows that point was never acknowledged whole; it is cut off, never served.

use std::fs::File;
use std::io::Read as _;

use super::frame::{self, Decoded};
use super::index::SparseIndex;
use super::reader::FrameReader;
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
    /// Bytes of whole, checked frames (the magic included): the file's true length.
    pub(crate) good_len: u64,
    /// The file's length on disk before any cut.
    pub(crate) file_len: u64,
    pub(crate) confirmations: Vec<(u64, u64)>,
}

/// A meta frame's payload.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Meta {
    pub(crate) progress: Progress,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) confirm: Option<(u64, u64)>,
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
    let mut frames = FrameReader::new(file, frame::MAGIC.len() as u64, file_len, CHUNK);
    let mut good_len = frames.offset();
    while let Some((offset, decoded)) = frames.next()? {
        match decoded {
            Decoded::Meta(payload) => {
                let Ok(meta) = serde_json::from_slice::<Meta>(payload) else {
                    break;
                };
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
                if seq != p.next_seq {
                    // Out of order: not something we wrote; the log ends here.
                    break;
                }
                let entry = frame::entry(seq, ts_ms, kind, n, counted, payload)?;
                index.note(seq, offset);
                p.apply(&entry);
            }
        }
        good_len = frames.offset();
    }
    let progress = progress.ok_or(ScanError::NoHeader)?;
    Ok(Scanned {
        progress,
        index,
        good_len,
        file_len,
        confirmations,
    })
}
