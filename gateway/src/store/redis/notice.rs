//! The notice the job script publishes after each append, on the job's channel: the
//! records it stored, so an instance following the job takes them without reading the
//! stream back. `T1 <first seq> <last seq>\n`, then a line per record,
//! `<seq> <ts ms> <kind> <n> <counted> <json>\n` (`n`, `counted` may be empty; a
//! record's JSON is one line, serde escapes every control character). The header alone
//! says whether the records are new here, so the instance that appended them skips its
//! own notice without decoding it.

use std::sync::Arc;

use crate::entry::{decode_status, Entry, Kind};

/// The first line's tag; a payload without it (an older gateway's `<last seq>`) only
/// says the job moved on, and is read from the stream instead.
const TAG: &[u8] = b"T1 ";

/// A notice's first line: the seqs of the records it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) first: u64,
    pub(crate) last: u64,
}

/// Why a notice's records could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("a job notice is not valid: {0}")]
pub(crate) struct BadNotice(&'static str);

/// The seqs `payload` carries, or `None` when it carries no records.
pub(crate) fn header(payload: &[u8]) -> Option<Header> {
    let rest = payload.strip_prefix(TAG)?;
    let line = &rest[..rest.iter().position(|&b| b == b'\n')?];
    let mut parts = line.split(|&b| b == b' ');
    let first = number(parts.next()?)?;
    let last = number(parts.next()?)?;
    (first <= last && parts.next().is_none()).then_some(Header { first, last })
}

fn text(field: &[u8]) -> Result<&str, BadNotice> {
    std::str::from_utf8(field).map_err(|_| BadNotice("not UTF-8"))
}

fn number(field: &[u8]) -> Option<u64> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// The records of `payload` from seq `from` on (those before it are skipped undecoded).
pub(crate) fn records(payload: &[u8], from: u64) -> Result<Vec<Arc<Entry>>, BadNotice> {
    let rest = payload.strip_prefix(TAG).ok_or(BadNotice("no tag"))?;
    let mut at = rest
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(BadNotice("no header"))?
        + 1;
    let mut out = Vec::new();
    while at < rest.len() {
        let end = at
            + rest[at..]
                .iter()
                .position(|&b| b == b'\n')
                .ok_or(BadNotice("a record line is cut short"))?;
        let line = &rest[at..end];
        at = end + 1;
        let mut f = line.splitn(6, |&b| b == b' ');
        let mut field = || f.next().ok_or(BadNotice("a record line is short"));
        let (seq, ts, kind, n, counted, json) =
            (field()?, field()?, field()?, field()?, field()?, field()?);
        let seq = number(seq).ok_or(BadNotice("seq"))?;
        if seq < from {
            continue;
        }
        let (json, kind, n, counted) = (text(json)?, text(kind)?, text(n)?, text(counted)?);
        let kind = match kind {
            "status" => decode_status(seq, json.as_bytes()).map_err(|_| BadNotice("status"))?,
            "custom" => Kind::Custom,
            stream => Kind::Log(stream.parse().map_err(|_| BadNotice("kind"))?),
        };
        let ts = number(ts).ok_or(BadNotice("ts"))?;
        let n = match n {
            "" => None,
            n => Some(n.parse().map_err(|_| BadNotice("n"))?),
        };
        let counted = match counted {
            "" => None,
            c => Some(
                c.parse::<u64>()
                    .map_err(|_| BadNotice("counted"))?
                    .min(u64::from(u32::MAX)) as u32,
            ),
        };
        out.push(Arc::new(Entry::from_json(seq, ts, kind, n, counted, json)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two() -> Vec<u8> {
        let a = r#"{"seq":4,"ts":"1970-01-01T00:00:01.000Z","stream":"stdout","line":"a b"}"#;
        let b = r#"{"seq":5,"ts":"1970-01-01T00:00:01.001Z","status":"failed","exit_code":3,"final":true}"#;
        format!("T1 4 5\n4 1000 stdout 7 3 {a}\n5 1001 status   {b}\n").into_bytes()
    }

    #[test]
    fn the_header_names_the_seqs_and_records_from_a_seq_on_decode() {
        let two = two();
        assert_eq!(header(&two), Some(Header { first: 4, last: 5 }));
        let all = records(&two, 0).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(
            (all[0].seq(), all[0].n(), all[0].counted()),
            (4, Some(7), Some(3))
        );
        assert_eq!(all[0].ts_ms(), 1000);
        assert_eq!(
            all[1].kind(),
            Kind::Status(crate::record::JobStatus::Failed, Some(3))
        );
        assert_eq!((all[1].n(), all[1].counted()), (None, None));
        let later = records(&two, 5).unwrap();
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].seq(), 5);
    }

    #[test]
    fn anything_else_is_refused_not_guessed() {
        // An older gateway's notice: only the last seq.
        assert_eq!(header(b"17"), None);
        assert_eq!(header(b"T1 5 4\n"), None);
        assert_eq!(header(b"T1 4\n"), None);
        // Cut short anywhere, it is an error, never a panic.
        let two = two();
        for cut in 0..two.len() {
            let _ = header(&two[..cut]);
            let decoded = records(&two[..cut], 0);
            assert!(decoded.map_or(true, |r| r.len() < 2), "cut at {cut}");
        }
        assert!(records(b"T1 1 1\n1 0 nope   {}\n", 0).is_err());
        assert!(
            records(b"T1 1 1\n1 0 stdout  {}\n", 0).is_err(),
            "a field short"
        );
    }
}
