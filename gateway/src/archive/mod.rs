//! The archive: a cold tier behind the spool or Redis (`--archive-url s3://bucket/prefix`). A
//! finished job's log becomes one immutable object after a quiet period, then its local
//! copy is dropped; every route reads it back from the archive like a live job.
//!
//! - [`format`]: the object, independent zstd frames plus an index (versioned).
//! - `bucket`: the `object_store` client and object names.
//! - `upload`: the writer: quiet period, conditional put, verify a race, drop local.
//! - `cache`: indexes and frames read recently, under the memory budget.
//! - `misses`: a bounded negative cache of jobs the bucket does not hold.
//! - `tiered`: the store decorator that reads the archive where the store has nothing.
//! - `metrics`: objects and bytes archived, lag, ranged-read latency, failures.

pub(crate) mod bucket;
pub(crate) mod cache;
pub(crate) mod format;
pub(crate) mod metrics;
pub(crate) mod misses;
pub(crate) mod tiered;
pub(crate) mod upload;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};

use self::bucket::{Bucket, BucketError};
use self::cache::{Cache, Key, Value};
use self::format::{FormatError, Index};
use self::misses::{Misses, MAX_MISSES, MISS_TTL};
use crate::entry::Entry;
use crate::job_id::JobId;
use crate::memory::MemoryBudget;

/// Default quiet period between a job's terminal status and its upload.
pub const DEFAULT_ARCHIVE_QUIET: Duration = Duration::from_secs(2);
/// Default number of uploads at once. Encoding is CPU work: on the 2-core machine, 300
/// jobs finishing together were archived sooner with 2 uploads per instance than with 4
/// or 8, which only contend for the cores (loadtest/README.md, "Archive").
pub const DEFAULT_ARCHIVE_UPLOADS: usize = 2;
/// Default zstd level of archived frames.
pub const DEFAULT_ARCHIVE_ZSTD_LEVEL: i32 = format::LEVEL;
/// An object larger than this goes up in parts of this size (S3's smallest part), so an
/// upload holds about two parts of it, never the whole log; a smaller one in one put.
pub(crate) const DEFAULT_ARCHIVE_PART_BYTES: usize = 5 * 1024 * 1024;
/// Default time a request to the archive may take.
pub const DEFAULT_ARCHIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// One GET from the object's end fetches its trailer and, nearly always, its index.
const TAIL_GET: u64 = 64 * 1024;

/// Where finished logs go (`--archive-url`), and how.
#[derive(Clone, PartialEq, Eq)]
pub struct ArchiveConfig {
    /// `s3://bucket/prefix`, or `file:///dir`.
    pub url: String,
    /// An S3-compatible endpoint (`--archive-endpoint`, or `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// A finished job is archived this long after its terminal status.
    pub quiet: Duration,
    /// Uploads at once, at most.
    pub uploads: usize,
    /// zstd level of the frames (`--archive-zstd-level`).
    pub level: i32,
    /// Objects above this go up in parts of this size (multipart); not a flag (S3's
    /// parts are at least 5 MiB), smaller in tests of a local-files bucket.
    pub part_bytes: usize,
    /// Each request to the archive at most.
    pub timeout: Duration,
}

impl std::fmt::Debug for ArchiveConfig {
    // The URL or endpoint may carry credentials in their userinfo: never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveConfig")
            .field("quiet", &self.quiet)
            .field("uploads", &self.uploads)
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

impl ArchiveConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            endpoint: None,
            quiet: DEFAULT_ARCHIVE_QUIET,
            uploads: DEFAULT_ARCHIVE_UPLOADS,
            level: DEFAULT_ARCHIVE_ZSTD_LEVEL,
            part_bytes: DEFAULT_ARCHIVE_PART_BYTES,
            timeout: DEFAULT_ARCHIVE_TIMEOUT,
        }
    }
}

/// Why the archive could not answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ArchiveError {
    /// The object is damaged or not ours: its readers get an `error` event.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The archive did not answer (or answered an error): retry later.
    #[error("the archive is unavailable: {0}")]
    Unavailable(String),
}

impl From<object_store::Error> for ArchiveError {
    fn from(e: object_store::Error) -> Self {
        Self::Unavailable(crate::client::error_chain(&e))
    }
}

/// The archive of one gateway: its bucket, read cache, and the runtime its requests run
/// on (so the store's blocking callers wait on a channel, not on a worker's runtime).
pub(crate) struct Archive {
    bucket: Bucket,
    cache: Cache,
    /// Jobs the bucket did not hold a moment ago.
    misses: Misses,
    pub(crate) config: ArchiveConfig,
    handle: tokio::runtime::Handle,
    /// Owned here, shut down in the background on drop (never dropped inside a runtime).
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
}

impl Archive {
    /// Opens the bucket (no request is made) with a cache of `cache_bytes`.
    pub(crate) fn open(
        config: ArchiveConfig,
        memory: Arc<MemoryBudget>,
        cache_bytes: usize,
    ) -> Result<Arc<Self>, BucketError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tailgate-archive")
            .enable_all()
            .build()
            .map_err(|e| {
                BucketError::Open(object_store::Error::Generic {
                    store: "runtime",
                    source: Box::new(e),
                })
            })?;
        // reqwest's rustls without a built-in provider: the gateway's ring one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let bucket = {
            let _guard = runtime.enter();
            Bucket::open(&config)?
        };
        Ok(Arc::new(Self {
            bucket,
            cache: Cache::new(cache_bytes, memory),
            misses: Misses::new(MAX_MISSES, MISS_TTL),
            config,
            handle: runtime.handle().clone(),
            runtime: Mutex::new(Some(runtime)),
        }))
    }

    pub(crate) fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.bucket.store
    }

    pub(crate) fn path(&self, job: &JobId) -> object_store::path::Path {
        self.bucket.path(job)
    }

    /// Where one attempt at `job`'s object goes up in parts before it is published.
    pub(crate) fn upload_path(&self, job: &JobId) -> object_store::path::Path {
        self.bucket.upload_path(job)
    }

    /// Runs `fut` on the archive's runtime and awaits it, at most the timeout.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, ArchiveError>> + Send + 'static,
    ) -> Result<T, ArchiveError> {
        let task = self.handle.spawn(fut);
        match tokio::time::timeout(self.config.timeout + Duration::from_secs(1), task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(ArchiveError::Unavailable(format!(
                "the archive task failed: {e}"
            ))),
            Err(_) => Err(ArchiveError::Unavailable(
                "the archive did not answer in time".into(),
            )),
        }
    }

    pub(crate) fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        self.handle.spawn(fut);
    }

    /// The job's index read from the bucket now (never from the cache), and cached;
    /// `None` when there is no object.
    pub(crate) async fn fetch_index(
        &self,
        job: &JobId,
    ) -> Result<Option<Arc<Index>>, ArchiveError> {
        let path = self.path(job);
        let started = Instant::now();
        let options = GetOptions {
            range: Some(GetRange::Suffix(TAIL_GET)),
            ..GetOptions::default()
        };
        let got = match self.store().get_opts(&path, options).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => {
                self.cache.forget(job);
                self.misses.insert(job);
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        self.misses.remove(job);
        let size = got.meta.size;
        let start = got.range.start;
        let tail = got.bytes().await?;
        let trailer = format::trailer(&tail, size)?;
        let index_end = trailer.index_offset + u64::from(trailer.index_len);
        let index_bytes: Bytes = if trailer.index_offset >= start {
            let at = (trailer.index_offset - start) as usize;
            tail.slice(at..at + trailer.index_len as usize)
        } else {
            self.store()
                .get_range(&path, trailer.index_offset..index_end)
                .await?
        };
        let index = Arc::new(Index::parse(&index_bytes, trailer.index_offset)?);
        metrics::get().observe_read(started.elapsed());
        self.cache
            .put(Key::Index(job.clone()), Value::Index(Arc::clone(&index)));
        Ok(Some(index))
    }

    /// The job's index, from the cache when there.
    pub(crate) async fn index(&self, job: &JobId) -> Result<Option<Arc<Index>>, ArchiveError> {
        if let Some(Value::Index(index)) = self.cache.get(&Key::Index(job.clone())) {
            return Ok(Some(index));
        }
        self.fetch_index(job).await
    }

    /// The job's index when cached: no request.
    pub(crate) fn cached_index(&self, job: &JobId) -> Option<Arc<Index>> {
        match self.cache.get(&Key::Index(job.clone())) {
            Some(Value::Index(index)) => Some(index),
            _ => None,
        }
    }

    /// The job's index, from the cache when there; `None` without a request when the
    /// bucket did not hold it a moment ago. For a job nobody here knows, where most
    /// lookups miss (a new job, a deleted one).
    pub(crate) async fn lookup(&self, job: &JobId) -> Result<Option<Arc<Index>>, ArchiveError> {
        if let Some(index) = self.cached_index(job) {
            return Ok(Some(index));
        }
        if self.misses.contains(job) {
            return Ok(None);
        }
        self.fetch_index(job).await
    }

    /// This instance just wrote (or verified) the job's object.
    pub(crate) fn wrote(&self, job: &JobId) {
        self.misses.remove(job);
    }

    /// Frame `i` of the job's object, decoded: one ranged GET unless cached.
    async fn frame(
        &self,
        job: &JobId,
        index: &Index,
        i: usize,
    ) -> Result<Arc<Vec<Arc<Entry>>>, ArchiveError> {
        let key = Key::Frame(job.clone(), i);
        if let Some(Value::Frame(entries)) = self.cache.get(&key) {
            return Ok(entries);
        }
        let Some(f) = index.frames.get(i) else {
            return Err(FormatError::Index("no such frame").into());
        };
        let started = Instant::now();
        let range = f.offset..f.offset + u64::from(f.len);
        let bytes = match self.store().get_range(&self.path(job), range).await {
            Ok(bytes) => bytes,
            Err(object_store::Error::NotFound { .. }) => {
                self.cache.forget(job);
                return Err(FormatError::Frame {
                    seq: f.first_seq,
                    why: "the object was deleted".into(),
                }
                .into());
            }
            Err(e) => return Err(e.into()),
        };
        metrics::get().observe_read(started.elapsed());
        let entries = Arc::new(format::decode_frame(index, i, &bytes)?);
        self.cache.put(key, Value::Frame(Arc::clone(&entries)));
        Ok(entries)
    }

    /// Records `from..=to` of an archived job, or a prefix within about `budget` bytes
    /// (at least one); empty when the job has no object or not those records.
    pub(crate) async fn read(
        &self,
        job: &JobId,
        from: u64,
        to: u64,
        budget: usize,
    ) -> Result<Vec<Arc<Entry>>, ArchiveError> {
        let Some(index) = self.index(job).await? else {
            return Ok(Vec::new());
        };
        let mut out: Vec<Arc<Entry>> = Vec::new();
        let mut bytes = 0;
        let mut seq = from;
        while seq <= to {
            let Some(i) = index.frame_of(seq) else {
                break;
            };
            let entries = self.frame(job, &index, i).await?;
            for e in entries.iter().filter(|e| e.seq() >= seq && e.seq() <= to) {
                if !out.is_empty() && bytes + e.sse.len() > budget {
                    return Ok(out);
                }
                bytes += e.sse.len();
                out.push(Arc::clone(e));
            }
            seq = index.frame_last_seq(i) + 1;
        }
        Ok(out)
    }
}

impl Drop for Archive {
    fn drop(&mut self) {
        if let Some(runtime) = self
            .runtime
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            runtime.shutdown_background();
        }
    }
}
