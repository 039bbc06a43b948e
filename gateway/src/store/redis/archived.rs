//! A Redis job's archived state (`--archive-url` behind Redis). A finished job is
//! queued in `tailgate:archive-queue` (scored by when it is due); any instance claims it
//! for a while, streams it from its stream into an object, and then marks it archived:
//! its stream goes and its small meta hash stays, with an `ar` field, as the marker. The
//! job script never reads `ar`, so a publish still gets 409 from the meta's `done`, and
//! the marker expires with retention like the rest. Every instance then serves the job
//! from the archive: reads of a stream that is gone fall through to the object.
//!
//! A job whose marker expired too (its tombstone, or nothing, left) is found in the
//! archive again when a request names it: [`RedisStore::open_tiered`] looks there before
//! a new job is kept, and puts the marker back.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::{Script, Value};

use super::keys::{decode_meta, JobKeys, META_FIELDS};
use super::script::{text, Loaded};
use super::RedisStore;
use crate::archive::format::{Index, RecordRef};
use crate::archive::{tiered, Archive};
use crate::entry::{Entry, Kind};
use crate::job_id::JobId;
use crate::store::{now_ms, Opened, Progress, Recovered, StoreError, Tombstone};

/// Finished jobs waiting to be archived, scored by the ms their local copy may go (the
/// terminal status plus the quiet period; or, claimed, by when the claim runs out). A
/// writer claims a job up to the quiet period before that, so it encodes and uploads
/// while the quiet period runs and drops the local copy when it ends.
pub(crate) const QUEUE_KEY: &str = "tailgate:archive-queue";
/// The meta hash's field that marks a job archived (ms it was marked).
const MARK_FIELD: &str = "ar";
/// An instance that claimed a job and died lets another take it after this long.
pub(crate) const CLAIM: Duration = Duration::from_secs(120);
/// A new job waits at most this long for the archive to say it never held it before.
const CREATE_LOOKUP: Duration = Duration::from_secs(2);

/// Takes up to `ARGV[3]` jobs scored up to `ARGV[1]`, each claimed until `ARGV[2]`.
static CLAIM_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, job in ipairs(due) do redis.call('ZADD', KEYS[1], 'XX', ARGV[2], job) end
return due
",
    )
});

/// Marks the job archived in life `ARGV[1]` (finished there) and drops its stream.
static MARK_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[2], 'ep') ~= ARGV[1] or redis.call('HGET', KEYS[2], 'done') ~= '1' then
  return 0
end
redis.call('HSET', KEYS[2], 'ar', ARGV[2])
redis.call('DEL', KEYS[1])
return 1
",
    )
});

/// Replaces a job created just now in life `ARGV[1]` (nothing appended) with the archived
/// job's marker: `ARGV[3]` meta values follow `ARGV[2]` (its TTL), then Capgo pairs.
static RESTORE_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[2], 'ep') ~= ARGV[1] or redis.call('HGET', KEYS[2], 'next') ~= '1' then
  return 0
end
local n = tonumber(ARGV[3])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('HSET', KEYS[2], unpack(ARGV, 4, 3 + n))
redis.call('PEXPIRE', KEYS[2], ARGV[2])
if #ARGV > 3 + n then
  redis.call('HSET', KEYS[3], unpack(ARGV, 4 + n))
  redis.call('PEXPIRE', KEYS[3], ARGV[2])
end
return 1
",
    )
});

/// The meta hash's fields and values for `progress` in life `life`, as `job.lua`'s
/// `write_meta` writes them (the mirror of [`decode_meta`]), plus the archived mark.
fn encode_meta(life: &str, p: &Progress, marked_ms: u64) -> Vec<String> {
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    let values = [
        life.to_string(),
        p.next_seq.to_string(),
        p.status.as_str().to_string(),
        p.exit_code.map(|c| c.to_string()).unwrap_or_default(),
        opt(p.last_n),
        p.lines.to_string(),
        p.bytes.to_string(),
        p.stored_bytes.to_string(),
        p.dropped_lines.to_string(),
        u8::from(p.truncated).to_string(),
        p.created_ms.to_string(),
        opt(p.started_ms),
        opt(p.finished_ms),
        p.activity_ms.to_string(),
        u8::from(p.status.is_terminal()).to_string(),
    ];
    let mut out = Vec::with_capacity(2 * values.len() + 2);
    for (field, value) in META_FIELDS.iter().zip(values) {
        out.push((*field).to_string());
        out.push(value);
    }
    out.extend([MARK_FIELD.to_string(), marked_ms.to_string()]);
    out
}

/// The job as its archived index describes it.
pub(crate) fn recovered_of(job: &JobId, index: &Index) -> Recovered {
    Recovered {
        id: job.clone(),
        life: index.meta.life.clone().unwrap_or_default(),
        progress: index.meta.progress,
        confirmations: index.meta.confirmations.clone(),
        broken: None,
    }
}

/// A finished job's tombstone, made from its state when its object went away.
fn tombstone_of(progress: &Progress) -> Tombstone {
    Tombstone {
        status: progress.status,
        exit_code: progress.exit_code,
        finished_ms: progress.finished_ms,
        deleted_ms: now_ms(),
    }
}

/// Where one page of a job's stream starts (its first seq) and how many records it holds;
/// `None` when it is empty or not an `XRANGE` reply.
pub(crate) fn stream_span(reply: &Value) -> Option<(u64, usize)> {
    let Value::Array(items) = reply else {
        return None;
    };
    let Value::Array(pair) = items.first()? else {
        return None;
    };
    Some((stream_seq(pair.first()?)?, items.len()))
}

/// A stream entry id `<seq>-0` as the job script writes it.
fn stream_seq(id: &Value) -> Option<u64> {
    let Value::BulkString(id) = id else {
        return None;
    };
    std::str::from_utf8(id.strip_suffix(b"-0")?)
        .ok()?
        .parse()
        .ok()
}

/// The records of one `XRANGE` page, borrowed from the reply: the fields
/// [`script::decode_entries`] reads, without the `String`s and the SSE frame an entry
/// would build for each (the archive's cost per record). Anything this gateway does not
/// write (a field that is not a UTF-8 bulk string) is an error here; the caller then
/// reads that page with [`stream_entries`], the way every other read does.
pub(crate) fn stream_records(reply: &Value) -> Result<Vec<RecordRef<'_>>, String> {
    let Value::Array(items) = reply else {
        return Ok(Vec::new());
    };
    let bad = |what: &str| format!("redis answered an unexpected {what}");
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(pair) = item else {
            return Err(bad("stream entry"));
        };
        let (Some(id), Some(Value::Array(fields))) = (pair.first(), pair.get(1)) else {
            return Err(bad("stream entry"));
        };
        let seq = stream_seq(id).ok_or_else(|| bad("stream entry id"))?;
        let (mut json, mut ts, mut kind, mut n, mut counted) = (None, 0, None, None, None);
        for kv in fields.chunks_exact(2) {
            let (Value::BulkString(k), Value::BulkString(v)) = (&kv[0], &kv[1]) else {
                return Err(bad("stream entry field"));
            };
            let number = || {
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
            };
            match k.as_slice() {
                b"j" => json = Some(v),
                b"t" => ts = number().unwrap_or(0),
                b"k" => kind = Some(v.as_slice()),
                b"n" => n = number(),
                b"c" => counted = number().map(|c| c.min(u64::from(u32::MAX)) as u32),
                _ => {}
            }
        }
        let json = json.ok_or_else(|| bad("stream entry without json"))?;
        let json = std::str::from_utf8(json).map_err(|_| bad("stream entry json"))?;
        let kind = match kind {
            Some(b"status") => {
                crate::entry::decode_status(seq, json.as_bytes()).map_err(|e| e.to_string())?
            }
            Some(b"custom") => Kind::Custom,
            Some(stream) => Kind::Log(
                std::str::from_utf8(stream)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad("stream entry kind"))?,
            ),
            None => return Err(bad("stream entry without kind")),
        };
        out.push(RecordRef {
            seq,
            ts_ms: ts,
            kind,
            n,
            counted,
            json,
        });
    }
    Ok(out)
}

/// The entries of one `XRANGE` page, decoded as every read decodes them.
pub(crate) fn stream_entries(reply: &Value) -> Result<Vec<Arc<Entry>>, String> {
    super::script::decode_entries(reply)
}

impl RedisStore {
    /// Records `from..=to` of the job's stream, at most `count`, as Redis answered them:
    /// the archive reads them with [`stream_records`] off the runtime, `read` decodes them
    /// into entries.
    pub(crate) async fn stream_page(
        &self,
        job: &JobId,
        from: u64,
        to: u64,
        count: usize,
    ) -> Result<Value, StoreError> {
        let cmd = redis::cmd("XRANGE")
            .arg(JobKeys::new(job).log)
            .arg(format!("{from}-0"))
            .arg(format!("{to}-0"))
            .arg("COUNT")
            .arg(count)
            .to_owned();
        self.round_trip(self.conn.query::<Value>(&cmd)).await
    }

    /// The archive behind this store, when there is one.
    pub(crate) fn archive(&self) -> Option<&Arc<Archive>> {
        self.archive.get()
    }

    /// The job a request names, with the archive behind Redis: the job as the script
    /// loads it, unless the archive says otherwise (a job created just now that was
    /// archived in an earlier life of its keys; a finished one whose object the bucket's
    /// lifecycle deleted; one whose keys are gone but whose object is not).
    pub(crate) async fn open_tiered(
        &self,
        job: &JobId,
        held: Option<&str>,
    ) -> Result<Opened, StoreError> {
        let Some(archive) = self.archive() else {
            return self.open_job(job).await;
        };
        match self.load_job(job).await? {
            Loaded::Gone(tombstone) => tiered::open(archive, job, held, tombstone).await,
            Loaded::Job {
                recovered,
                created: true,
            } => self.created(archive, job, recovered).await,
            Loaded::Job { recovered, .. } if recovered.progress.status.is_terminal() => {
                self.finished(archive, job, recovered).await
            }
            Loaded::Job { recovered, .. } => Ok(Opened::Job(recovered)),
        }
    }

    /// A job the script created just now: unless the archive holds it (the negative
    /// cache answers most of these), it is a new job.
    async fn created(
        &self,
        archive: &Arc<Archive>,
        job: &JobId,
        recovered: Recovered,
    ) -> Result<Opened, StoreError> {
        let (inner, id) = (Arc::clone(archive), job.clone());
        let looked = tokio::time::timeout(
            CREATE_LOOKUP,
            archive.run(async move { inner.lookup(&id).await }),
        )
        .await;
        let index = match looked {
            Ok(Ok(Some(index))) => index,
            Ok(Ok(None)) => return Ok(Opened::Job(recovered)),
            // Live traffic does not wait on an unreachable archive: the job is new.
            Ok(Err(e)) => {
                tracing::debug!(job.id = %job, error = %e, "cannot look for a new job in the archive");
                return Ok(Opened::Job(recovered));
            }
            Err(_) => {
                tracing::debug!(job.id = %job, "the archive did not say in time whether it holds a new job");
                return Ok(Opened::Job(recovered));
            }
        };
        let archived = recovered_of(job, &index);
        if self.restore(job, &recovered.life, &archived).await? {
            return Ok(Opened::Job(archived));
        }
        // Someone published to the new job meanwhile: it is a new life after all.
        self.open_job(job).await
    }

    /// A finished job: the object is checked only when the job was archived and its
    /// index is not cached, and answers 410 when the bucket deleted it.
    async fn finished(
        &self,
        archive: &Arc<Archive>,
        job: &JobId,
        recovered: Recovered,
    ) -> Result<Opened, StoreError> {
        if archive.cached_index(job).is_some() || !self.is_archived(job).await? {
            return Ok(Opened::Job(recovered));
        }
        let tombstone = tombstone_of(&recovered.progress);
        match tiered::open(archive, job, None, tombstone).await? {
            Opened::Gone(tombstone) => Ok(Opened::Gone(tombstone)),
            // The marker is the job in its life; a damaged object keeps its state too.
            Opened::Job(archived) if archived.broken.is_some() => Ok(Opened::Job(Recovered {
                broken: archived.broken,
                ..recovered
            })),
            _ => Ok(Opened::Job(recovered)),
        }
    }

    pub(super) async fn is_archived(&self, job: &JobId) -> Result<bool, StoreError> {
        let cmd = redis::cmd("HEXISTS")
            .arg(JobKeys::new(job).meta)
            .arg(MARK_FIELD)
            .to_owned();
        let marked: i64 = self.round_trip(self.conn.query(&cmd)).await?;
        Ok(marked == 1)
    }

    /// Puts the archived job's marker in place of the job created in life `created`.
    async fn restore(
        &self,
        job: &JobId,
        created: &str,
        archived: &Recovered,
    ) -> Result<bool, StoreError> {
        let keys = JobKeys::new(job);
        let meta = encode_meta(&archived.life, &archived.progress, now_ms());
        let mut inv = RESTORE_SCRIPT.prepare_invoke();
        inv.key(&keys.log).key(&keys.meta).key(&keys.capgo);
        inv.arg(created)
            .arg(self.common.retention.as_millis() as u64)
            .arg(meta.len())
            .arg(meta);
        for (hash, id) in &archived.confirmations {
            inv.arg(hash).arg(id);
        }
        let restored: i64 = self.round_trip(self.conn.invoke(&inv)).await?;
        Ok(restored == 1)
    }

    /// Queues a job that finished for the archive, due at `due_ms`.
    pub(crate) async fn queue_archive(&self, job: &JobId, due_ms: u64) {
        let cmd = redis::cmd("ZADD")
            .arg(QUEUE_KEY)
            .arg("NX")
            .arg(due_ms)
            .arg(job.as_str())
            .to_owned();
        if let Err(e) = self.round_trip(self.conn.query::<i64>(&cmd)).await {
            tracing::warn!(job.id = %job, error = %e.report(), "cannot queue a finished job for the archive; it stays in redis");
        }
    }

    /// Claims up to `max` jobs due within `ahead` from now, for [`CLAIM`].
    pub(crate) async fn claim_archive(
        &self,
        max: usize,
        ahead: Duration,
    ) -> Result<Vec<JobId>, StoreError> {
        let now = now_ms();
        let mut inv = CLAIM_SCRIPT.prepare_invoke();
        inv.key(QUEUE_KEY)
            .arg(now + ahead.as_millis() as u64)
            .arg(now + CLAIM.as_millis() as u64)
            .arg(max);
        let due: Value = self.round_trip(self.conn.invoke(&inv)).await?;
        Ok(match due {
            Value::Array(items) => items
                .iter()
                .filter_map(text)
                .filter_map(|id| JobId::parse(&id).ok())
                .collect(),
            _ => Vec::new(),
        })
    }

    /// Jobs in the queue (due, claimed, or waiting for their quiet period or a retry).
    pub(crate) async fn queued_archive(&self) -> Result<usize, StoreError> {
        let cmd = redis::cmd("ZCARD").arg(QUEUE_KEY).to_owned();
        self.round_trip(self.conn.query(&cmd)).await
    }

    /// Due again at `due_ms` (after a failure).
    pub(crate) async fn requeue_archive(&self, job: &JobId, due_ms: u64) {
        let cmd = redis::cmd("ZADD")
            .arg(QUEUE_KEY)
            .arg(due_ms)
            .arg(job.as_str())
            .to_owned();
        let _ = self.round_trip(self.conn.query::<i64>(&cmd)).await;
    }

    /// Leaves the queue: archived, or nothing left to archive.
    pub(crate) async fn unqueue_archive(&self, job: &JobId) {
        let cmd = redis::cmd("ZREM")
            .arg(QUEUE_KEY)
            .arg(job.as_str())
            .to_owned();
        let _ = self.round_trip(self.conn.query::<i64>(&cmd)).await;
    }

    /// The job as Redis holds it and whether it is marked archived, without creating
    /// it; `None` when its keys are gone.
    pub(crate) async fn archive_state(
        &self,
        job: &JobId,
    ) -> Result<Option<(Recovered, bool)>, StoreError> {
        let keys = JobKeys::new(job);
        let cmd = redis::cmd("HMGET")
            .arg(&keys.meta)
            .arg(&META_FIELDS[..])
            .arg(MARK_FIELD)
            .to_owned();
        let values: Vec<Option<String>> = self.round_trip(self.conn.query(&cmd)).await?;
        let Some((mark, fields)) = values.split_last() else {
            return Ok(None);
        };
        if fields.get(1).is_none_or(Option::is_none) {
            return Ok(None);
        }
        let fields: Vec<String> = fields
            .iter()
            .map(|v| v.clone().unwrap_or_default())
            .collect();
        let (life, progress) = decode_meta(&fields).map_err(StoreError::failed)?;
        let cmd = redis::cmd("HGETALL").arg(&keys.capgo).to_owned();
        let flat: Vec<String> = self.round_trip(self.conn.query(&cmd)).await?;
        let confirmations = flat
            .chunks_exact(2)
            .filter_map(|p| Some((p[0].parse().ok()?, p[1].parse().ok()?)))
            .collect();
        let recovered = Recovered {
            id: job.clone(),
            life,
            progress,
            confirmations,
            broken: None,
        };
        Ok(Some((recovered, mark.is_some())))
    }

    /// The job's object is written: marks it archived in life `life` (when it still is
    /// in that life and finished) and drops its stream. Whether it marked it.
    pub(crate) async fn mark_archived(&self, job: &JobId, life: &str) -> Result<bool, StoreError> {
        let keys = JobKeys::new(job);
        let mut inv = MARK_SCRIPT.prepare_invoke();
        inv.key(&keys.log).key(&keys.meta).arg(life).arg(now_ms());
        let marked: i64 = self.round_trip(self.conn.invoke(&inv)).await?;
        Ok(marked == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::JobStatus;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// An `XRANGE` entry as the job script writes it.
    fn stream_entry(seq: u64, fields: &[(&str, &str)]) -> Value {
        let fields = fields
            .iter()
            .flat_map(|(k, v)| [bulk(k), bulk(v)])
            .collect();
        Value::Array(vec![bulk(&format!("{seq}-0")), Value::Array(fields)])
    }

    #[test]
    fn stream_records_read_what_every_read_decodes_without_building_entries() {
        let log = r#"{"seq":1,"ts":"2025-11-24T16:00:00.123Z","stream":"stderr","line":"a "b""}"#;
        let custom = r#"{"seq":2,"ts":"2025-11-24T16:00:00.124Z","kind":"qr","data":{"u":1}}"#;
        let status = r#"{"seq":3,"ts":"2025-11-24T16:00:00.125Z","status":"failed","exit_code":3,"final":true}"#;
        let reply = Value::Array(vec![
            stream_entry(
                1,
                &[
                    ("j", log),
                    ("t", "1764000000123"),
                    ("k", "stderr"),
                    ("n", "7"),
                    ("c", "6"),
                ],
            ),
            stream_entry(2, &[("j", custom), ("t", "1764000000124"), ("k", "custom")]),
            stream_entry(3, &[("j", status), ("t", "1764000000125"), ("k", "status")]),
        ]);
        assert_eq!(stream_span(&reply), Some((1, 3)));
        let records = stream_records(&reply).unwrap();
        let entries = stream_entries(&reply).unwrap();
        assert_eq!(records.len(), entries.len());
        for (r, e) in records.iter().zip(&entries) {
            assert_eq!(r.seq, e.seq());
            assert_eq!(r.ts_ms, e.ts_ms());
            assert_eq!(r.kind, e.kind());
            assert_eq!(r.n, e.n());
            assert_eq!(r.counted, e.counted());
            assert_eq!(r.json.as_bytes(), e.json());
        }
        assert_eq!(records[0].n, Some(7));
        assert_eq!(records[2].kind, Kind::Status(JobStatus::Failed, Some(3)));

        // A field this gateway never writes (not a bulk string) is left to the usual
        // decoder, which reads it as before.
        let odd = Value::Array(vec![Value::Array(vec![
            bulk("1-0"),
            Value::Array(vec![
                bulk("j"),
                bulk(log),
                bulk("t"),
                Value::Int(5),
                bulk("k"),
                bulk("stderr"),
            ]),
        ])]);
        assert!(stream_records(&odd).is_err());
        assert_eq!(stream_entries(&odd).unwrap()[0].ts_ms(), 5);
        // Not a page at all.
        assert_eq!(stream_span(&Value::Nil), None);
        assert!(stream_records(&Value::Nil).unwrap().is_empty());
    }

    #[test]
    fn the_marker_decodes_to_the_archived_progress() {
        let mut p = Progress::new(1000);
        p.next_seq = 42;
        p.status = JobStatus::Failed;
        p.exit_code = Some(3);
        p.last_n = Some(40);
        p.lines = 39;
        p.bytes = 1234;
        p.stored_bytes = 1300;
        p.started_ms = Some(1001);
        p.finished_ms = Some(2000);
        p.activity_ms = 2000;
        let flat = encode_meta("life-1", &p, 3000);
        let values: Vec<String> = flat.chunks(2).map(|kv| kv[1].clone()).collect();
        assert_eq!(flat[flat.len() - 2], MARK_FIELD);
        let (life, back) = decode_meta(&values[..META_FIELDS.len()]).unwrap();
        assert_eq!(life, "life-1");
        assert_eq!(back, p);
        // `done` is set: the job script answers 409 to a publish.
        assert_eq!(values[14], "1");
    }
}
