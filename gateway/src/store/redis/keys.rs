//! Where a job lives in Redis, and its state as the meta hash holds it. Every key of a
//! job carries the hash tag `{<job>}`, so Redis Cluster keeps them on one slot and the
//! job's script may touch them all.

use super::super::{Progress, Tombstone};
use crate::job_id::JobId;
use crate::record::JobStatus;

/// One job's keys.
#[derive(Debug, Clone)]
pub(crate) struct JobKeys {
    /// The stream of records; entry ids are `<seq>-0`.
    pub(crate) log: String,
    /// The job's state: the fields of [`META_FIELDS`].
    pub(crate) meta: String,
    /// Capgo clients' last confirmed ids, by token hash.
    pub(crate) capgo: String,
    // `:gone`, the tombstone (`status|exit code|finished ms|deleted ms`, outliving the
    // rest after retention), is named by the job script alone.
}

impl JobKeys {
    pub(crate) fn new(job: &JobId) -> Self {
        let tag = format!("tailgate:{{{job}}}");
        Self {
            log: format!("{tag}:log"),
            meta: format!("{tag}:meta"),
            capgo: format!("{tag}:capgo"),
        }
    }
}

/// The meta hash's fields, in the order the script returns them.
pub(crate) const META_FIELDS: [&str; 15] = [
    "ep", "next", "st", "ec", "ln", "lines", "bytes", "sb", "dl", "tr", "cr", "sa", "fa", "ac",
    "done",
];

/// A job's state as the script returns it: its epoch (which changes when Redis lost the
/// job and it was created again) and its progress.
pub(crate) fn decode_meta<S: AsRef<str>>(values: &[S]) -> Result<(String, Progress), String> {
    if values.len() != META_FIELDS.len() {
        return Err(format!("meta has {} fields", values.len()));
    }
    let value = |i: usize| values[i].as_ref();
    let num = |i: usize| -> Result<u64, String> {
        value(i)
            .parse::<u64>()
            .map_err(|_| format!("meta field {} is {:?}", META_FIELDS[i], value(i)))
    };
    let opt = |i: usize| -> Result<Option<u64>, String> {
        match value(i) {
            "" => Ok(None),
            _ => num(i).map(Some),
        }
    };
    let status: JobStatus = value(2).parse()?;
    let exit_code = match value(3) {
        "" => None,
        raw => Some(raw.parse().map_err(|_| format!("exit code {raw:?}"))?),
    };
    let progress = Progress {
        next_seq: num(1)?.max(1),
        status,
        exit_code,
        last_n: opt(4)?,
        lines: num(5)?,
        bytes: num(6)?,
        stored_bytes: num(7)?,
        dropped_lines: num(8)?,
        truncated: num(9)? != 0,
        created_ms: num(10)?,
        started_ms: opt(11)?,
        finished_ms: opt(12)?,
        activity_ms: num(13)?,
    };
    Ok((value(0).to_string(), progress))
}

/// A tombstone as the script stores it.
pub(crate) fn decode_tombstone(raw: &str) -> Option<Tombstone> {
    let mut parts = raw.split('|');
    let status = parts.next()?.parse().ok()?;
    let exit_code = match parts.next()? {
        "" => None,
        v => Some(v.parse().ok()?),
    };
    let finished_ms = parts.next()?.parse().ok();
    let deleted_ms = parts.next()?.parse().ok()?;
    Some(Tombstone {
        status,
        exit_code,
        finished_ms,
        deleted_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_job_has_the_same_hash_tag() {
        let keys = JobKeys::new(&JobId::parse("build-7.a_b").unwrap());
        for key in [&keys.log, &keys.meta, &keys.capgo] {
            assert!(key.starts_with("tailgate:{build-7.a_b}:"), "{key}");
        }
    }

    #[test]
    fn the_script_names_the_other_keys_from_the_meta_key() {
        // job.lua: `tag = string.sub(meta_key, 1, -6)`, then `tag .. ':log'` and so on.
        let keys = JobKeys::new(&JobId::parse("build-7").unwrap());
        let tag = keys
            .meta
            .strip_suffix(":meta")
            .expect("meta ends with :meta");
        assert_eq!(format!("{tag}:log"), keys.log);
        assert_eq!(format!("{tag}:capgo"), keys.capgo);
        assert!(include_str!("job.lua").contains("string.sub(meta_key, 1, -6)"));
    }

    #[test]
    fn meta_round_trips_the_script_fields() {
        let values: Vec<String> = [
            "e1", "8", "failed", "2", "41", "5", "120", "136", "3", "1", "1000", "1001", "1009",
            "1009", "1",
        ]
        .map(String::from)
        .into();
        let (epoch, p) = decode_meta(&values).unwrap();
        assert_eq!(epoch, "e1");
        assert_eq!(p.last_seq(), 7);
        assert_eq!(p.status, JobStatus::Failed);
        assert_eq!(p.exit_code, Some(2));
        assert_eq!(p.last_n, Some(41));
        assert_eq!((p.lines, p.bytes, p.stored_bytes), (5, 120, 136));
        assert_eq!((p.dropped_lines, p.truncated), (3, true));
        assert_eq!(p.started_ms, Some(1001));
        assert_eq!(p.finished_ms, Some(1009));
        let mut short = values.clone();
        short.pop();
        assert!(decode_meta(&short).is_err());
        let mut bad = values;
        bad[2] = "sleeping".into();
        assert!(decode_meta(&bad).is_err());
    }

    #[test]
    fn tombstones_decode_or_are_ignored() {
        let t = decode_tombstone("lost||100|200").unwrap();
        assert_eq!(t.status, JobStatus::Lost);
        assert_eq!(
            (t.exit_code, t.finished_ms, t.deleted_ms),
            (None, Some(100), 200)
        );
        assert!(decode_tombstone("lost|x|100|200").is_none());
        assert!(decode_tombstone("garbage").is_none());
    }
}
