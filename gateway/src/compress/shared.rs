//! One job's compressed stream per coding and format, shared by its caught-up readers.
//!
//! The stream is encoded lazily, by the first joined reader that needs the next events:
//! the events it has that are not encoded yet become one sync-flushed chunk (they are all
//! there already, so none waits for another; one flush per burst instead of one per event
//! saves the flush marker and the restarted Huffman coding of every event). Every other
//! joined reader writes the same chunks, whole, even past its own batch. The
//! encoder is replaced by a fresh one (a segment starts) every `reset_bytes` of input and
//! whenever a reader asks to join at the head, so a reader can enter at a segment start.
//! Recent chunks are kept in a window bounded in bytes, counted in the memory budget.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;

use super::encoder::{self, Encoder, Levels};
use super::{Coding, Codings, CompressionConfig};
use crate::entry::Entry;
use crate::job_log::JobLog;
use crate::memory::MemoryBudget;
use crate::subscription::{frame_with_life, Format};

/// Compressed bytes a shared stream keeps for readers slightly behind.
const WINDOW_BYTES: usize = 128 * 1024;
/// Chunks a shared stream keeps at most.
const WINDOW_CHUNKS: usize = 4096;
/// Bookkeeping per kept chunk, for the memory budget.
const CHUNK_OVERHEAD: usize = 64;

/// The shared streams of every job, and the count of catch-up encoders.
pub(crate) struct Streams {
    config: CompressionConfig,
    /// Live shared streams by job (its address: the stream keeps the job alive), coding and
    /// format; dead entries are swept as the map grows.
    map: Mutex<HashMap<(usize, Coding, Format), Weak<SharedStream>>>,
    /// Catch-up encoders alive now, against `max_catchup_encoders`.
    catchup: Arc<AtomicUsize>,
    memory: Arc<MemoryBudget>,
}

impl Streams {
    pub(crate) fn new(config: CompressionConfig, memory: Arc<MemoryBudget>) -> Self {
        Self {
            config,
            map: Mutex::new(HashMap::new()),
            catchup: Arc::new(AtomicUsize::new(0)),
            memory,
        }
    }

    pub(crate) fn codings(&self) -> &Codings {
        &self.config.codings
    }

    pub(crate) fn levels(&self) -> Levels {
        Levels {
            gzip: self.config.gzip_level,
            zstd: self.config.zstd_level,
        }
    }

    /// The shared stream of `job` in `coding` and `format`, made on first use.
    pub(crate) fn get(
        &self,
        job: &Arc<JobLog>,
        coding: Coding,
        format: Format,
    ) -> Arc<SharedStream> {
        self.get_with(job.clone(), job.life().to_string(), coding, format)
    }

    /// [`Streams::get`] for whatever `owner` is (a job; anything in tests): the stream
    /// keeps it alive, so its address names one owner for the stream's life.
    #[cfg(test)]
    pub(crate) fn get_for(
        &self,
        owner: Arc<dyn Any + Send + Sync>,
        coding: Coding,
        format: Format,
    ) -> Arc<SharedStream> {
        self.get_with(owner, String::new(), coding, format)
    }

    /// [`Streams::get_for`] with the job's life, which every frame's id names.
    fn get_with(
        &self,
        owner: Arc<dyn Any + Send + Sync>,
        life: String,
        coding: Coding,
        format: Format,
    ) -> Arc<SharedStream> {
        let key = (Arc::as_ptr(&owner) as *const () as usize, coding, format);
        let mut map = lock(&self.map);
        if let Some(live) = map.get(&key).and_then(Weak::upgrade) {
            return live;
        }
        if map.len() >= 64 && map.len().is_power_of_two() {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let stream = Arc::new(SharedStream {
            _owner: owner,
            life,
            coding,
            format,
            levels: self.levels(),
            reset_bytes: self.config.reset_bytes.max(1),
            memory: self.memory.clone(),
            state: Mutex::new(State::default()),
        });
        map.insert(key, Arc::downgrade(&stream));
        stream
    }

    /// A catch-up encoder for one reader, unless `max_catchup_encoders` are alive.
    pub(crate) fn catchup(&self, coding: Coding) -> Option<Catchup> {
        let max = self.config.max_catchup_encoders;
        self.catchup
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        let slot = Slot(self.catchup.clone());
        let encoder = Encoder::new(coding, self.levels()).ok()?;
        self.memory.add(encoder::footprint(coding));
        Some(Catchup {
            encoder,
            _slot: slot,
            coding,
            memory: self.memory.clone(),
        })
    }

    /// Catch-up encoders alive now.
    #[cfg(test)]
    pub(crate) fn catchup_count(&self) -> usize {
        self.catchup.load(Ordering::Acquire)
    }
}

/// A reader's own encoder while it catches up; counted until dropped.
pub(crate) struct Catchup {
    pub(crate) encoder: Encoder,
    _slot: Slot,
    coding: Coding,
    memory: Arc<MemoryBudget>,
}

impl Drop for Catchup {
    fn drop(&mut self) {
        self.memory.sub(encoder::footprint(self.coding));
    }
}

/// One place among `max_catchup_encoders`.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The compressed bytes of one or more consecutive events in the shared stream.
#[derive(Clone)]
pub(crate) struct Chunk {
    /// Seq of its first event: a reader enters a chunk only there.
    pub(crate) seq: u64,
    /// Seq of its last event.
    pub(crate) last: u64,
    /// Its last event is the terminal status.
    pub(crate) terminal: bool,
    pub(crate) bytes: Bytes,
    /// The first chunk of a fresh encoder: a reader may enter here.
    pub(crate) starts: bool,
    /// CRC-32 and length of the raw frames, for gzip readers' trailers.
    pub(crate) crc: u32,
    pub(crate) len: u32,
    /// The segment it belongs to (a count of the stream's segments).
    pub(crate) segment: u64,
    /// CRC-32 and length of the raw frames from its segment's start through this chunk: a
    /// reader that wrote the whole segment so far folds these into its trailer's CRC once,
    /// when it leaves the segment, instead of combining every chunk's (a combine is a few
    /// 32x32 bit-matrix products, per reader and event: 0.6 % of the ci shape's CPU).
    pub(crate) segment_crc: u32,
    pub(crate) segment_len: u32,
}

#[derive(Default)]
struct State {
    encoder: Option<Encoder>,
    /// Seq of the next event to encode (0: none encoded yet).
    next_seq: u64,
    /// Raw bytes fed to the current encoder.
    segment_bytes: usize,
    /// Segments started so far; the current one's number.
    segment: u64,
    /// CRC-32 of the raw bytes fed to the current encoder.
    segment_crc: crc32fast::Hasher,
    /// The next event starts a segment (a reader asked to join at the head).
    reset_pending: bool,
    chunks: VecDeque<Chunk>,
    window_bytes: usize,
    /// Readers writing this stream now.
    joined: usize,
}

/// What [`SharedStream::take`] found.
pub(crate) enum Taken {
    /// The chunks of the entries, in order.
    Chunks(Vec<Chunk>),
    /// The reader cannot enter at the first entry (not a segment start), or its chunk left
    /// the window: it goes on with bytes of its own.
    Not,
}

/// One job's stream in one coding and format.
pub(crate) struct SharedStream {
    /// Keeps the job (whose address keys [`Streams`]) alive as long as this stream.
    _owner: Arc<dyn Any + Send + Sync>,
    /// The job's life, named in every frame's id (`<seq>-<life>`).
    pub(crate) life: String,
    pub(crate) coding: Coding,
    format: Format,
    levels: Levels,
    reset_bytes: usize,
    memory: Arc<MemoryBudget>,
    state: Mutex<State>,
}

impl SharedStream {
    /// The chunks of `entries` (contiguous, as read from the log), encoding those not yet
    /// encoded. With `joining`, the reader enters the stream at the first entry: allowed at
    /// a segment start, at or past the head (the next event then starts a segment), or
    /// anywhere when nobody else is joined (the stream restarts there).
    pub(crate) fn take(&self, entries: &[Arc<Entry>], joining: bool) -> Taken {
        let Some(first) = entries.first() else {
            return Taken::Chunks(Vec::new());
        };
        let mut st = lock(&self.state);
        let seq = first.seq();
        if joining {
            let at_start = st.find(seq).is_some_and(|c| c.starts);
            if !at_start {
                if seq >= st.next_seq {
                    st.reset_pending = true;
                } else if st.joined == 0 {
                    self.restart(&mut st, seq);
                } else {
                    return Taken::Not;
                }
            }
        }
        let mut out = Vec::new();
        let mut i = 0;
        while let Some(entry) = entries.get(i) {
            let seq = entry.seq();
            if seq >= st.next_seq && self.encode(&mut st, &entries[i..]).is_err() {
                return Taken::Not;
            }
            let Some(chunk) = st.find(seq) else {
                return Taken::Not;
            };
            while entries.get(i).is_some_and(|e| e.seq() <= chunk.last) {
                i += 1;
            }
            out.push(chunk.clone());
        }
        self.trim(&mut st);
        if joining {
            st.joined += 1;
        }
        Taken::Chunks(out)
    }

    /// The index in `entries` (past the first) of the first one whose chunk starts a
    /// segment, where a reader catching up may enter; `entries.len()` when none does.
    pub(crate) fn next_start(&self, entries: &[Arc<Entry>]) -> usize {
        let st = lock(&self.state);
        entries
            .iter()
            .enumerate()
            .skip(1)
            .find(|(_, e)| st.find(e.seq()).is_some_and(|c| c.starts))
            .map_or(entries.len(), |(i, _)| i)
    }

    pub(crate) fn format(&self) -> Format {
        self.format
    }

    /// Whether `seq` is at or past the events encoded so far.
    pub(crate) fn is_head(&self, seq: u64) -> bool {
        seq >= lock(&self.state).next_seq
    }

    /// A joined reader leaves.
    pub(crate) fn leave(&self) {
        let mut st = lock(&self.state);
        st.joined = st.joined.saturating_sub(1);
    }

    fn restart(&self, st: &mut State, seq: u64) {
        let freed: usize = st
            .chunks
            .iter()
            .map(|c| c.bytes.len() + CHUNK_OVERHEAD)
            .sum();
        st.chunks.clear();
        st.window_bytes = 0;
        self.memory.sub(freed);
        st.next_seq = seq;
        st.reset_pending = true;
    }

    /// Encodes the first of `entries` and the ones after it as one chunk, up to the end of
    /// the segment (the next chunk then starts one).
    fn encode(&self, st: &mut State, entries: &[Arc<Entry>]) -> std::io::Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let starts =
            st.encoder.is_none() || st.reset_pending || st.segment_bytes >= self.reset_bytes;
        if starts {
            match st.encoder.as_mut() {
                Some(enc) => enc.reset(self.coding, self.levels)?,
                None => {
                    st.encoder = Some(Encoder::new(self.coding, self.levels)?);
                    self.memory.add(encoder::footprint(self.coding));
                }
            }
            st.segment_bytes = 0;
            st.segment += 1;
            st.segment_crc = crc32fast::Hasher::new();
            st.reset_pending = false;
        }
        let mut frames = Vec::new();
        let mut crc = crc32fast::Hasher::new();
        let mut segment_crc = st.segment_crc.clone();
        let mut last = first;
        for entry in entries {
            if !frames.is_empty() && st.segment_bytes >= self.reset_bytes {
                break;
            }
            let frame = frame_with_life(self.format, entry, &self.life);
            crc.update(&frame);
            segment_crc.update(&frame);
            st.segment_bytes += frame.len();
            frames.push(frame);
            last = entry;
        }
        let Some(enc) = st.encoder.as_mut() else {
            return Err(std::io::Error::other("no encoder"));
        };
        let bytes = enc.chunk(frames.iter().map(|f| &f[..]))?;
        st.next_seq = last.seq() + 1;
        st.segment_crc = segment_crc;
        st.window_bytes += bytes.len();
        self.memory.add(bytes.len() + CHUNK_OVERHEAD);
        st.chunks.push_back(Chunk {
            seq: first.seq(),
            last: last.seq(),
            terminal: last.is_terminal(),
            bytes,
            starts,
            crc: crc.finalize(),
            len: frames.iter().map(|f| f.len() as u32).sum(),
            segment: st.segment,
            segment_crc: st.segment_crc.clone().finalize(),
            segment_len: st.segment_bytes as u32,
        });
        Ok(())
    }

    fn trim(&self, st: &mut State) {
        let mut freed = 0;
        while st.chunks.len() > 1
            && (st.window_bytes > WINDOW_BYTES || st.chunks.len() > WINDOW_CHUNKS)
        {
            if let Some(old) = st.chunks.pop_front() {
                st.window_bytes -= old.bytes.len();
                freed += old.bytes.len() + CHUNK_OVERHEAD;
            }
        }
        self.memory.sub(freed);
    }
}

impl State {
    /// The chunk that starts at `seq`. Caught-up readers ask for the newest one, which is
    /// checked first (the search showed in the ci shape's profile).
    fn find(&self, seq: u64) -> Option<&Chunk> {
        if let Some(last) = self.chunks.back() {
            if last.seq <= seq {
                return (last.seq == seq).then_some(last);
            }
        }
        let i = self.chunks.binary_search_by_key(&seq, |c| c.seq).ok()?;
        self.chunks.get(i)
    }
}

impl Drop for SharedStream {
    fn drop(&mut self) {
        let st = lock(&self.state);
        let mut freed: usize = st
            .chunks
            .iter()
            .map(|c| c.bytes.len() + CHUNK_OVERHEAD)
            .sum();
        if st.encoder.is_some() {
            freed += encoder::footprint(self.coding);
        }
        self.memory.sub(freed);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
