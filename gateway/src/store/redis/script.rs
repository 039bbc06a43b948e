//! The job script (`job.lua`): loaded once at start-up, run by its SHA. Here its
//! arguments are built and its replies decoded; the records' JSON is made once, in Rust,
//! and the script only puts the seq it assigns in front (`{"seq":N` + the rest).

use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::{Script, ScriptInvocation, Value};

use super::keys::{decode_meta, decode_tombstone, JobKeys, META_FIELDS};
use crate::entry::{decode_status, Entry, Kind};
use crate::job_id::JobId;
use crate::record::{JobStatus, Record, RecordBody, Stream};
use crate::rules::Incoming;
use crate::store::{Appended, Recovered, Tombstone};

/// Appends, loads, lifecycle ends and notes: one atomic step each.
pub(crate) static JOB_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("job.lua")));

/// Arguments every call carries.
#[derive(Debug, Clone)]
pub(crate) struct Common {
    /// This instance, for the lifecycle lease.
    pub(crate) instance: String,
    /// A finished job's keys expire this long after its terminal status.
    pub(crate) retention: Duration,
    /// Its tombstone lives this much longer.
    pub(crate) tombstone_ttl: Duration,
    /// How appends are announced to the instances that follow the job: `PUBLISH` on one
    /// server, `SPUBLISH` (the job's own slot) on a Cluster.
    pub(crate) announce: &'static str,
}

/// An invocation of `op` on `job` at `now_ms`.
pub(crate) fn invocation(
    job: &JobId,
    op: &str,
    now_ms: u64,
    common: &Common,
) -> ScriptInvocation<'static> {
    // The meta hash only: the script names the job's other keys from it (see job.lua's
    // KEYS), so a Cluster slot mid-move never refuses the call for naming several keys.
    let mut inv = JOB_SCRIPT.prepare_invoke();
    inv.key(JobKeys::new(job).meta);
    inv.arg(op)
        .arg(now_ms)
        .arg(new_epoch())
        .arg(common.retention.as_millis() as u64)
        .arg(common.tombstone_ttl.as_millis() as u64)
        .arg(common.announce);
    inv
}

/// The life of a job this call would create: fresh for every call, so a job Redis lost
/// and created again never has its earlier epoch.
fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A record ready for the script: what it decides on, and its JSON after the seq.
#[derive(Debug)]
pub(crate) struct Prepared {
    n: Option<u64>,
    kind: Kind,
    len: u64,
    /// The JSON from the `,` after `"seq":N` to its end.
    rest: String,
}

/// The JSON of `body` at `ts`, without its leading `{"seq":N`.
fn rest_of(body: RecordBody, ts: SystemTime) -> String {
    let json = Record::new(0, ts, body).to_json();
    json.strip_prefix("{\"seq\":0").unwrap_or(&json).to_string()
}

impl Prepared {
    pub(crate) fn rest(&self) -> &str {
        &self.rest
    }
}

pub(crate) fn prepare(incoming: Incoming, ts: SystemTime) -> Prepared {
    let kind = Kind::of(&incoming.body);
    let len = incoming.body.payload_len() as u64;
    Prepared {
        n: incoming.n,
        kind,
        len,
        rest: rest_of(incoming.body, ts),
    }
}

/// A lifecycle status record at `ts`.
pub(crate) fn prepare_status(status: JobStatus, ts: SystemTime) -> Prepared {
    prepare(
        Incoming {
            n: None,
            body: RecordBody::Status {
                status,
                exit_code: None,
            },
        },
        ts,
    )
}

fn kind_code(kind: Kind) -> &'static str {
    match kind {
        Kind::Log(stream) => stream.as_str(),
        Kind::Status(..) => "status",
        Kind::Custom => "custom",
    }
}

/// The size-limit notice's JSON around the stored size, as the script joins it.
fn truncation_parts(ts: SystemTime) -> (String, String) {
    const MARK: &str = "\u{1}size\u{1}";
    let body = RecordBody::Log {
        stream: Stream::System,
        line: format!(
            "tailgate: log truncated at {MARK} bytes; later records are counted, not stored"
        ),
    };
    // The mark is escaped the same way wherever it sits, so it splits the JSON cleanly.
    let rest = rest_of(body, ts);
    let mark = serde_json::to_string(MARK).unwrap_or_default();
    let mark = mark.trim_matches('"');
    match rest.split_once(mark) {
        Some((head, tail)) => (head.to_string(), tail.to_string()),
        None => (rest, String::new()),
    }
}

/// Adds the `append` op's arguments for `records` at `ts`.
pub(crate) fn append_args(
    inv: &mut ScriptInvocation<'static>,
    records: &[Prepared],
    ts: SystemTime,
    max_log_bytes: u64,
) {
    let (head, tail) = truncation_parts(ts);
    inv.arg(ms(ts)).arg(max_log_bytes).arg(head).arg(tail);
    for r in records {
        let (status, exit, fin) = match r.kind {
            Kind::Status(status, exit) => (
                status.as_str(),
                exit.map(|c| c.to_string()).unwrap_or_default(),
                status.is_terminal(),
            ),
            _ => ("", String::new(), false),
        };
        inv.arg(r.n.map(|n| n.to_string()).unwrap_or_default())
            .arg(kind_code(r.kind))
            .arg(r.len)
            .arg(status)
            .arg(exit)
            .arg(if fin { "1" } else { "0" })
            .arg(&r.rest);
    }
}

pub(crate) fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A reply the script could not have sent.
fn bad(what: &str) -> String {
    format!("unexpected reply from the job script: {what}")
}

pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Okay => Some("OK".into()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<u64> {
    text(v)?.parse().ok()
}

fn texts(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(items) => items.iter().map(text).collect(),
        _ => None,
    }
}

/// What `load` found: the job (created when new), or its tombstone.
pub(crate) enum Loaded {
    /// `created`: this call created it.
    Job {
        recovered: Recovered,
        created: bool,
    },
    Gone(Tombstone),
}

pub(crate) fn decode_load(job: &JobId, reply: &Value) -> Result<Loaded, String> {
    let Value::Array(items) = reply else {
        return Err(bad("not an array"));
    };
    match items.first().and_then(text).as_deref() {
        // A tombstone that does not decode still says the job is gone.
        Some("gone") => Ok(Loaded::Gone(
            items
                .get(1)
                .and_then(text)
                .and_then(|t| decode_tombstone(&t))
                .unwrap_or(Tombstone {
                    status: JobStatus::Lost,
                    exit_code: None,
                    finished_ms: None,
                    deleted_ms: crate::store::now_ms(),
                }),
        )),
        Some("ok") => {
            let meta = items.get(1).and_then(texts).ok_or_else(|| bad("meta"))?;
            let (epoch, progress) = decode_meta(&meta)?;
            let flat = items.get(2).and_then(texts).unwrap_or_default();
            let confirmations = flat
                .chunks_exact(2)
                .filter_map(|p| Some((p[0].parse().ok()?, p[1].parse().ok()?)))
                .collect();
            Ok(Loaded::Job {
                recovered: Recovered {
                    id: job.clone(),
                    life: epoch,
                    progress,
                    confirmations,
                    broken: None,
                },
                created: items.get(3).and_then(int) == Some(1),
            })
        }
        _ => Err(bad("no status")),
    }
}

/// Decodes an `append` or `end` reply into the stored entries, rebuilt byte for byte
/// from `records` and the seqs the script gave them. The script answers one string,
/// `ok|accepted|duplicates|finished|<meta fields>|<seq>,<index>,<aux>|...`, or
/// `{'gone', tombstone}` when retention deleted the job.
pub(crate) fn decode_append(
    reply: &Value,
    records: &[Prepared],
    ts: SystemTime,
) -> Result<Appended, String> {
    let raw = match reply {
        Value::BulkString(raw) => raw,
        // Retention deleted the job: it had finished.
        Value::Array(items) if items.first().and_then(text).as_deref() == Some("gone") => {
            return Ok(Appended {
                finished: true,
                ..Appended::default()
            })
        }
        _ => return Err(bad("neither a string nor gone")),
    };
    let raw = std::str::from_utf8(raw).map_err(|_| bad("not UTF-8"))?;
    let mut parts = raw.split('|');
    if parts.next() != Some("ok") {
        return Err(bad("no status"));
    }
    let mut num = || {
        parts
            .next()
            .and_then(|p| p.parse::<u64>().ok())
            .ok_or_else(|| bad("counts"))
    };
    let (accepted, duplicates, finished) = (num()?, num()?, num()? != 0);
    let meta: Vec<&str> = parts.by_ref().take(META_FIELDS.len()).collect();
    let (_, progress) = decode_meta(&meta)?;
    let ts_ms = ms(ts);
    let mut entries = Vec::new();
    for stored in parts {
        let mut t = stored.split(',').map(|v| v.parse::<u64>().ok());
        let (Some(Some(seq)), Some(Some(idx)), Some(Some(aux)), None) =
            (t.next(), t.next(), t.next(), t.next())
        else {
            return Err(bad("entry"));
        };
        let entry = if idx == 0 {
            let (head, tail) = truncation_parts(ts);
            let json = format!("{{\"seq\":{seq}{head}{aux}{tail}");
            Entry::from_json(seq, ts_ms, Kind::Log(Stream::System), None, None, &json)
        } else {
            let r = records
                .get(idx as usize - 1)
                .ok_or_else(|| bad("record index"))?;
            let json = format!("{{\"seq\":{seq}{}", r.rest);
            let counted = Some(r.len.min(u64::from(u32::MAX)) as u32);
            Entry::from_json(seq, ts_ms, r.kind, r.n, counted, &json)
        };
        entries.push(Arc::new(entry));
    }
    Ok(Appended {
        entries,
        progress,
        accepted,
        duplicates,
        finished,
    })
}

/// The entries of an `XRANGE` or one stream of an `XREAD` reply.
pub(crate) fn decode_entries(reply: &Value) -> Result<Vec<Arc<Entry>>, String> {
    let Value::Array(items) = reply else {
        return Ok(Vec::new());
    };
    items.iter().map(decode_entry).collect()
}

fn decode_entry(item: &Value) -> Result<Arc<Entry>, String> {
    let Value::Array(pair) = item else {
        return Err(bad("stream entry"));
    };
    let (Some(id), Some(Value::Array(fields))) = (pair.first().and_then(text), pair.get(1)) else {
        return Err(bad("stream entry"));
    };
    let seq: u64 = id
        .strip_suffix("-0")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("stream entry id"))?;
    let (mut json, mut ts, mut kind, mut n, mut counted) = (None, 0, None, None, None);
    for kv in fields.chunks_exact(2) {
        let (Some(k), Some(v)) = (text(&kv[0]), text(&kv[1])) else {
            continue;
        };
        match k.as_str() {
            "j" => json = Some(v),
            "t" => ts = v.parse().unwrap_or(0),
            "k" => kind = Some(v),
            "n" => n = v.parse().ok(),
            "c" => {
                counted = v
                    .parse::<u64>()
                    .ok()
                    .map(|c| c.min(u64::from(u32::MAX)) as u32)
            }
            _ => {}
        }
    }
    let json = json.ok_or_else(|| bad("stream entry without json"))?;
    let kind = match kind.as_deref() {
        Some("status") => decode_status(seq, json.as_bytes()).map_err(|e| e.to_string())?,
        Some("custom") => Kind::Custom,
        Some(stream) => Kind::Log(stream.parse().map_err(|_| bad("stream entry kind"))?),
        None => return Err(bad("stream entry without kind")),
    };
    Ok(Arc::new(Entry::from_json(seq, ts, kind, n, counted, &json)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rebuilt_entry_is_the_frame_a_local_append_encodes() {
        let ts = UNIX_EPOCH + Duration::from_millis(1_764_000_000_123);
        let body = RecordBody::Log {
            stream: Stream::Stderr,
            line: "héllo \"x\"\r\nid: 9".into(),
        };
        let local = Entry::new(&Record::new(42, ts, body.clone()), Some(7), Some(13));
        let p = prepare(Incoming { n: Some(7), body }, ts);
        let json = format!("{{\"seq\":42{}", p.rest);
        let remote = Entry::from_json(42, ms(ts), p.kind, p.n, Some(13), &json);
        assert_eq!(local.sse, remote.sse);
    }

    #[test]
    fn the_truncation_notice_splits_around_its_size() {
        let ts = UNIX_EPOCH + Duration::from_millis(5);
        let (head, tail) = truncation_parts(ts);
        let body = RecordBody::Log {
            stream: Stream::System,
            line: "tailgate: log truncated at 1234 bytes; later records are counted, not stored"
                .into(),
        };
        let want = Record::new(3, ts, body).to_json();
        assert_eq!(format!("{{\"seq\":3{head}1234{tail}"), want);
    }
}
