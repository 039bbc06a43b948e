//! Rebuilding one job from its spool at start-up. A torn tail is cut. A damaged spool is
//! never cut at the damage: it is kept, renamed aside (`<job>.spool.damaged-<ms>`), and
//! its intact frames are copied into a clean spool, with a marker where seqs were lost,
//! so readers get everything intact and a `gap` for the lost range.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::files;
use super::job::SpoolJob;
use super::reader::read_exact_at;
use super::scan::{self, Damage, Piece, ScanError, Scanned};
use crate::record::JobStatus;
use crate::store::Progress;

/// Rebuilds one job from its file, cutting a torn tail and setting damage aside; a file
/// that cannot be read becomes a broken job that says why (the path goes to the log).
pub(crate) fn recover_one(path: PathBuf) -> SpoolJob {
    let scanned = match files::open_read(&path)
        .map_err(ScanError::from)
        .and_then(scan::scan)
    {
        Ok(s) => s,
        Err(e) => return broken(e.to_string(), path),
    };
    let scanned = match scanned.damage {
        Some(ref damage) => match rebuild(&path, damage) {
            Ok(()) => match files::open_read(&path)
                .map_err(ScanError::from)
                .and_then(scan::scan)
            {
                Ok(clean) => clean,
                Err(e) => return broken(e.to_string(), path),
            },
            Err(e) => {
                tracing::warn!(spool.path = %path.display(), error = %e, "cannot set a damaged spool aside");
                return broken(
                    format!("the spool is damaged and cannot be rebuilt: {e}"),
                    path,
                );
            }
        },
        None => scanned,
    };
    if scanned.good_len < scanned.file_len {
        tracing::info!(
            spool.path = %path.display(),
            spool.cut_bytes = scanned.file_len - scanned.good_len,
            "cut a torn tail"
        );
        let cut = files::open_rw(&path)
            .and_then(|f| f.set_len(scanned.good_len).and_then(|()| f.sync_all()));
        if let Err(e) = cut {
            tracing::warn!(spool.path = %path.display(), error = %e, "cannot cut a torn tail");
            return broken(format!("cannot cut its torn tail: {e}"), path);
        }
    }
    let Scanned {
        progress,
        index,
        good_len,
        confirmations,
        ..
    } = scanned;
    SpoolJob::new(path, good_len, index, progress, confirmations, None)
}

/// A job whose spool cannot be used: status `lost`, and readers get an `error`.
fn broken(why: String, path: PathBuf) -> SpoolJob {
    let meta = std::fs::symlink_metadata(&path).ok();
    let created = meta
        .as_ref()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64);
    let mut progress = Progress::new(created);
    progress.status = JobStatus::Lost;
    progress.finished_ms = Some(created);
    let len = meta.filter(|m| m.is_file()).map_or(0, |m| m.len());
    tracing::warn!(spool.path = %path.display(), error = %why, "spool cannot be recovered");
    SpoolJob::new(
        path,
        len,
        Default::default(),
        progress,
        Vec::new(),
        Some(why),
    )
}

/// Keeps the damaged spool at `path` under another name and puts a clean copy of its
/// intact frames in its place. At every moment `path` names either the damaged file or
/// the whole clean copy.
fn rebuild(path: &Path, damage: &Damage) -> std::io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("spool");
    let dir = path.parent().unwrap_or(Path::new("."));
    let aside = dir.join(format!(
        "{name}{}-{}",
        files::DAMAGED_SUFFIX,
        crate::store::now_ms()
    ));
    let tmp = dir.join(format!("{name}.tmp"));
    let damaged = files::open_read(path)?;
    let mut clean = files::create(&tmp)?;
    copy_pieces(&damaged, &mut clean, &damage.pieces)?;
    files::sync_data(&clean, &tmp)?;
    drop(clean);
    std::fs::hard_link(path, &aside)?;
    std::fs::rename(&tmp, path)?;
    files::sync_dir(dir)?;
    let lost: u64 = damage.lost.iter().map(|(a, b)| b - a + 1).sum();
    tracing::warn!(
        spool.path = %path.display(),
        spool.damaged = %aside.display(),
        spool.skipped_bytes = damage.skipped,
        spool.lost_records = lost,
        spool.tail_lost = damage.tail,
        "a spool was damaged: its intact records were kept, the damaged file set aside"
    );
    // With `damage.tail` the scan moved the job's creation time, from which its life
    // is derived ([`crate::store`]'s local life), so resuming readers get `reset`.
    Ok(())
}

/// Writes the magic and `pieces` (ranges copied from `from`) to `to`.
fn copy_pieces(from: &File, to: &mut File, pieces: &[Piece]) -> std::io::Result<()> {
    use std::io::Write;
    to.write_all(super::frame::MAGIC)?;
    let mut buf = vec![0u8; 1 << 20];
    for piece in pieces {
        match piece {
            Piece::Frame(bytes) => to.write_all(bytes)?,
            Piece::Frames(range) => {
                let mut at = range.start;
                while at < range.end {
                    let n = (buf.len() as u64).min(range.end - at) as usize;
                    read_exact_at(from, &mut buf[..n], at)?;
                    to.write_all(&buf[..n])?;
                    at += n as u64;
                }
            }
        }
    }
    Ok(())
}
