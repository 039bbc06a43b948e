//! One job's spool file: the writer (held open while the job runs), what has been
//! written whole (`len`), the sparse index, and the job's progress as last written.
//! Readers read only below `len`, so they never see a frame still being written.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::BytesMut;

use super::frame;
use super::index::SparseIndex;
use super::reader::FrameReader;
use super::scan::{Meta, MAX_CONFIRMATIONS};
use crate::entry::Entry;
use crate::store::{Progress, StoreError};

/// One job's spool.
pub(crate) struct SpoolJob {
    pub(crate) path: PathBuf,
    state: Mutex<State>,
}

pub(crate) struct State {
    /// Open while the job can still be appended to; closed at its terminal status.
    writer: Option<Arc<File>>,
    /// Bytes of whole frames: where the next append goes, and where reads stop.
    pub(crate) len: u64,
    pub(crate) index: SparseIndex,
    pub(crate) progress: Progress,
    pub(crate) confirmations: Vec<(u64, u64)>,
    /// Appended since the last fsync.
    pub(crate) dirty: bool,
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
                len,
                index,
                progress,
                confirmations,
                dirty: false,
                broken,
            }),
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
            return Err(StoreError::Io(why.clone()));
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
            };
            frame::put_meta(&mut buf, &serde_json::to_vec(&meta).unwrap_or_default());
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let writer = st.writer(&self.path)?;
        if let Err(e) = (&*writer).write_all(&buf) {
            let err = StoreError::io(format!("cannot write {}", self.path.display()), &e);
            if let Err(cut) = writer.set_len(st.len) {
                st.broken = Some(format!(
                    "cannot cut {} back after a failed write: {cut}",
                    self.path.display()
                ));
            }
            return Err(err);
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
        st.dirty = true;
        Ok(buf.len() as u64)
    }

    /// Forces written frames to disk; at the terminal status also closes the writer.
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        let (writer, finished) = {
            let mut st = self.lock();
            if !st.dirty {
                if st.progress.status.is_terminal() {
                    st.writer = None;
                }
                return Ok(());
            }
            st.dirty = false;
            (st.writer.clone(), st.progress.status.is_terminal())
        };
        if let Some(writer) = writer {
            let started = std::time::Instant::now();
            let synced = writer.sync_data();
            crate::metrics::get().fsynced(started.elapsed());
            if let Err(e) = synced {
                self.lock().dirty = true;
                return Err(StoreError::io(
                    format!("cannot fsync {}", self.path.display()),
                    &e,
                ));
            }
        }
        if finished {
            self.lock().writer = None;
        }
        Ok(())
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
        let file = File::open(&self.path)
            .map_err(|e| StoreError::io(format!("cannot open {}", self.path.display()), &e))?;
        let mut frames = FrameReader::new(file, start, end, budget.min(1 << 20));
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let read_err =
            |e: std::io::Error| StoreError::io(format!("cannot read {}", self.path.display()), &e);
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
            let entry = frame::entry(seq, ts_ms, kind, n, counted, payload)
                .map_err(|e| StoreError::Io(e.to_string()))?;
            bytes += entry.sse.len();
            out.push(Arc::new(entry));
        }
        if let Some(why) = frames.bad() {
            return Err(StoreError::Io(format!(
                "{} is damaged at offset {}: {why}",
                self.path.display(),
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
        let file = super::files::open_append(path)
            .map_err(|e| StoreError::io(format!("cannot open {}", path.display()), &e))?;
        let file = Arc::new(file);
        self.writer = Some(Arc::clone(&file));
        Ok(file)
    }
}
