//! One job's spool file: the writer (held open while the job runs), what has been
//! written whole (`len`), what is known to be on disk (`synced`), the sparse index, and
//! the job's progress as last written. Readers read only below `len`, so they never see
//! a frame still being written.
//!
//! Small appends are copied into the job's append window ([`Window`]) rather than written;
//! larger ones, and any the window cannot take, are written at `len` (`pwrite`).
//!
//! Errors handed to callers (and so to clients) name the job's spool, never its path;
//! the path goes to the operator's log.

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::BytesMut;

use super::files;
use super::frame;
use super::index::SparseIndex;
use super::reader::FrameReader;
use super::scan::{Meta, MAX_CONFIRMATIONS};
use super::window::{Window, BACK_OFF, MIN_COPIES, SMALL, WINDOW};
use crate::entry::Entry;
use crate::store::{Progress, StoreError};

/// One job's spool.
pub(crate) struct SpoolJob {
    pub(crate) path: PathBuf,
    state: Mutex<State>,
    /// Held across one fsync of this spool: a caller whose write an fsync in flight may
    /// not cover waits here for it, then runs its own if it still must.
    syncing: Mutex<()>,
}

pub(crate) struct State {
    /// Open while the job can still be appended to; closed at its terminal status.
    writer: Option<Arc<File>>,
    /// Where appends that fit it are copied, while the job runs.
    window: Option<Window>,
    /// No window is mapped below this offset: after one that could not be mapped (each
    /// try is a syscall), or one that took few appends ([`MIN_COPIES`]).
    write_until: u64,
    /// Appends copied into the current window.
    copies: u32,
    /// Bytes of whole frames: where the next append goes, and where reads stop.
    pub(crate) len: u64,
    /// The file's length: `len`, and past it the rest of the window (zeros), if any.
    size: u64,
    /// Bytes known to be on disk: an fsync that started after they were written ended.
    synced: u64,
    /// The directory entry of the file is known to be on disk.
    entry_synced: bool,
    pub(crate) index: SparseIndex,
    pub(crate) progress: Progress,
    pub(crate) confirmations: Vec<(u64, u64)>,
    /// Why the spool cannot be used, once it cannot.
    pub(crate) broken: Option<String>,
}

impl SpoolJob {
    pub(crate) fn new(
        path: PathBuf,
        len: u64,
        index: SparseIndex,
        progress: Progress,
        confirmations: Vec<(u64, u64)>,
        broken: Option<String>,
    ) -> Self {
        Self {
            path,
            state: Mutex::new(State {
                writer: None,
                window: None,
                write_until: 0,
                copies: 0,
                len,
                size: len,
                // Nothing is assumed on disk: a crash may have left it in the page cache.
                // A broken spool is never written, so never synced.
                synced: if broken.is_some() { len } else { 0 },
                entry_synced: false,
                index,
                progress,
                confirmations,
                broken,
            }),
            syncing: Mutex::new(()),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent (the file is cut back on error).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `records` and, when the progress says more than they do, a meta frame.
    /// Returns the bytes added. On error the file is cut back to where it was.
    pub(crate) fn append(
        &self,
        records: &[Arc<Entry>],
        progress: &Progress,
        confirm: Option<(u64, u64)>,
    ) -> Result<u64, StoreError> {
        let mut st = self.lock();
        self.write(&mut st, records, progress, confirm)
    }

    /// Notes a sign of the publisher (its activity only moves forward) and a Capgo
    /// confirmation: a meta frame with the state as written. Returns the bytes added.
    pub(crate) fn note(
        &self,
        activity_ms: u64,
        confirm: Option<(u64, u64)>,
    ) -> Result<u64, StoreError> {
        let mut st = self.lock();
        let mut progress = st.progress;
        progress.activity_ms = progress.activity_ms.max(activity_ms);
        self.write(&mut st, &[], &progress, confirm)
    }

    fn write(
        &self,
        st: &mut State,
        records: &[Arc<Entry>],
        progress: &Progress,
        confirm: Option<(u64, u64)>,
    ) -> Result<u64, StoreError> {
        if let Some(why) = &st.broken {
            return Err(StoreError::failed(why.clone()));
        }
        // Publishing refuses these first; a frame too large would read back as damage.
        if let Some(big) = records
            .iter()
            .find(|e| e.json().len() > frame::max_payload())
        {
            return Err(StoreError::failed(format!(
                "a record of {} bytes is over the spool's frame limit of {} bytes",
                big.json().len(),
                frame::max_payload()
            )));
        }
        let mut buf = BytesMut::new();
        let mut implied = st.progress;
        let mut offsets = Vec::with_capacity(records.len());
        for entry in records {
            offsets.push((entry.seq(), st.len + buf.len() as u64));
            frame::put_record(&mut buf, entry);
            implied.apply(entry);
        }
        if implied != *progress || confirm.is_some() {
            let meta = Meta {
                progress: *progress,
                confirm,
                lost: None,
            };
            frame::put_meta(&mut buf, &serde_json::to_vec(&meta).unwrap_or_default());
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let writer = st.writer(&self.path)?;
        if !st.put_mapped(&writer, &buf, &self.path) {
            if let Err(e) = files::write_at(&writer, &buf, st.len) {
                let err = failed(&self.path, "cannot write the job's spool", &e);
                // Cut back to the records (and away from the window, now unmapped).
                st.window = None;
                match writer.set_len(st.len) {
                    Ok(()) => st.size = st.len,
                    Err(cut) => {
                        tracing::warn!(spool.path = %self.path.display(), error = %cut, "cannot cut a spool back after a failed write");
                        st.broken = Some(format!(
                            "cannot cut the job's spool back after a failed write: {cut}"
                        ));
                    }
                }
                return Err(err);
            }
            st.size = st.size.max(st.len + buf.len() as u64);
        }
        st.len += buf.len() as u64;
        for (seq, offset) in offsets {
            st.index.note(seq, offset);
        }
        st.progress = *progress;
        if let Some((hash, id)) = confirm {
            st.confirmations.retain(|(h, _)| *h != hash);
            st.confirmations.push((hash, id));
            if st.confirmations.len() > MAX_CONFIRMATIONS {
                st.confirmations.remove(0);
            }
        }
        Ok(buf.len() as u64)
    }

    /// Forces written frames to disk, returning only once an fsync that started after
    /// every frame written before this call has ended: a caller never returns on the
    /// strength of an fsync another caller began before its write. The first fsync of a
    /// new file also syncs its directory entry. At the terminal status the writer closes.
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        let target = {
            let mut st = self.lock();
            if st.synced >= st.len {
                st.close_if_finished(&self.path);
                return Ok(());
            }
            st.len
        };
        let _turn = self.syncing.lock().unwrap_or_else(|e| e.into_inner());
        let (writer, upto, entry) = {
            let mut st = self.lock();
            if st.synced >= target {
                // The fsync this caller waited for covered its write.
                st.close_if_finished(&self.path);
                return Ok(());
            }
            if let Some(why) = &st.broken {
                return Err(StoreError::failed(why.clone()));
            }
            (st.writer(&self.path)?, st.len, !st.entry_synced)
        };
        if entry {
            if let Some(dir) = self.path.parent() {
                files::sync_dir(dir)
                    .map_err(|e| failed(dir, "cannot fsync the jobs directory", &e))?;
            }
            self.lock().entry_synced = true;
        }
        let started = std::time::Instant::now();
        let synced = files::sync_data(&writer, &self.path);
        crate::metrics::get().fsynced(started.elapsed());
        synced.map_err(|e| failed(&self.path, "cannot fsync the job's spool", &e))?;
        self.mark_synced(upto);
        Ok(())
    }

    /// The bytes written but not known to be on disk, if any: where an fsync that
    /// starts now would cover up to.
    pub(crate) fn unsynced(&self) -> Option<u64> {
        let st = self.lock();
        (st.synced < st.len).then_some(st.len)
    }

    /// Notes that the first `upto` bytes, and the file's directory entry, are on disk
    /// (an fsync or a `syncfs` that started after they were written has ended).
    pub(crate) fn mark_synced(&self, upto: u64) {
        let mut st = self.lock();
        st.synced = st.synced.max(upto);
        st.entry_synced = true;
        if st.synced >= st.len {
            st.close_if_finished(&self.path);
        }
    }

    /// Gives back the part of the append window past the records (at shutdown: a clean
    /// restart then finds no zeros to cut).
    pub(crate) fn trim(&self) {
        self.lock().trim(&self.path);
    }

    /// Records `from..=to` (a prefix within `budget` bytes, at least one).
    pub(crate) fn read(
        &self,
        from: u64,
        to: u64,
        budget: usize,
    ) -> Result<Vec<Arc<Entry>>, StoreError> {
        let (start, end) = {
            let st = self.lock();
            if st.broken.is_some() || from >= st.progress.next_seq {
                return Ok(Vec::new());
            }
            let start = st
                .index
                .seek(from)
                .map_or(frame::MAGIC.len() as u64, |(_, offset)| offset);
            (start, st.len)
        };
        let file = files::open_read(&self.path)
            .map_err(|e| failed(&self.path, "cannot open the job's spool", &e))?;
        let mut frames = FrameReader::new(file, start, end, budget.min(1 << 20));
        let mut out: Vec<Arc<Entry>> = Vec::new();
        let mut bytes = 0usize;
        let read_err = |e: std::io::Error| failed(&self.path, "cannot read the job's spool", &e);
        while let Some((_, decoded)) = frames.next().map_err(read_err)? {
            let frame::Decoded::Record {
                seq,
                ts_ms,
                kind,
                n,
                counted,
                payload,
            } = decoded
            else {
                continue;
            };
            if seq < from {
                continue;
            }
            if seq > to || (!out.is_empty() && bytes + payload.len() > budget) {
                break;
            }
            if out.last().is_some_and(|last| last.seq() + 1 != seq) {
                // Records lost to damage: what follows comes in the next read, after
                // the caller's `gap`.
                break;
            }
            let entry = frame::entry(seq, ts_ms, kind, n, counted, payload)
                .map_err(|e| StoreError::failed(e.to_string()))?;
            bytes += entry.sse.len();
            out.push(Arc::new(entry));
        }
        if let Some(why) = frames.bad() {
            tracing::warn!(spool.path = %self.path.display(), spool.offset = frames.offset(), error = why, "a spool is damaged");
            return Err(StoreError::failed(format!(
                "the job's spool is damaged at offset {}: {why}",
                frames.offset()
            )));
        }
        Ok(out)
    }
}

impl State {
    fn writer(&mut self, path: &std::path::Path) -> Result<Arc<File>, StoreError> {
        if let Some(w) = &self.writer {
            return Ok(Arc::clone(w));
        }
        let file =
            files::open_write(path).map_err(|e| failed(path, "cannot open the job's spool", &e))?;
        let file = Arc::new(file);
        self.writer = Some(Arc::clone(&file));
        Ok(file)
    }

    /// Copies `buf` to the end of the records through the append window, mapping the
    /// window first when the end moved into the next one; `false` when `buf` is not small
    /// ([`SMALL`]), does not fit the window whole, or no window is mapped there (the
    /// caller writes it instead).
    fn put_mapped(&mut self, file: &File, buf: &[u8], path: &std::path::Path) -> bool {
        let at = self.len;
        let start = Window::start_of(at);
        if buf.len() as u64 > SMALL || at - start + buf.len() as u64 > WINDOW {
            return false;
        }
        if self.window.as_ref().map(Window::start) != Some(start) {
            if self.window.take().is_some() && self.copies < MIN_COPIES {
                // Mostly large appends (one upload at full speed): mapping costs more
                // than it saves; written until the records are past a few more windows.
                self.write_until = start + BACK_OFF * WINDOW;
            }
            if at < self.write_until {
                return false;
            }
            self.copies = 0;
            match Window::open(file, at, &mut self.size) {
                Ok(window) => self.window = Some(window),
                Err(e) => {
                    tracing::debug!(spool.path = %path.display(), error = %e, "cannot map a spool's append window: writing instead");
                    self.write_until = start + WINDOW;
                    return false;
                }
            }
        }
        let copied = self.window.as_mut().is_some_and(|w| w.put(at, buf));
        self.copies += u32::from(copied);
        copied
    }

    /// Unmaps the append window and cuts the file back to its records.
    fn trim(&mut self, path: &std::path::Path) {
        self.window = None;
        if self.size <= self.len {
            return;
        }
        let Some(file) = &self.writer else {
            return;
        };
        match file.set_len(self.len) {
            Ok(()) => self.size = self.len,
            // Recovery cuts the zeros instead.
            Err(e) => {
                tracing::warn!(spool.path = %path.display(), error = %e, "cannot trim a spool's append window")
            }
        }
    }

    /// Closes the writer of a finished job (nothing more will be appended), giving back
    /// the rest of its append window.
    fn close_if_finished(&mut self, path: &std::path::Path) {
        if self.progress.status.is_terminal() {
            self.trim(path);
            self.writer = None;
        }
    }
}

/// An I/O failure on a data file: the path goes to the operator's log, the caller gets
/// `what` and the reason.
fn failed(path: &std::path::Path, what: &'static str, e: &std::io::Error) -> StoreError {
    tracing::warn!(spool.path = %path.display(), error = %e, "{what}");
    StoreError::io(what, e)
}
