use std::time::Duration;

use super::*;
use crate::record::{RecordBody, Stream};
use crate::store::memory::MemoryStore;
use crate::store::spool::{Spool, SpoolSettings};

fn limits(memory_bytes: usize, max_log_bytes: u64) -> JobLimits {
    JobLimits {
        memory_bytes,
        max_log_bytes,
        max_subscribers: 2,
        gather: Duration::ZERO,
    }
}

fn fresh(id: &str) -> Recovered {
    Recovered::new(JobId::parse(id).unwrap(), Progress::new(now_ms()))
}

fn log(memory_bytes: usize, max_log_bytes: u64) -> Arc<JobLog> {
    Arc::new(JobLog::new(
        fresh("j"),
        limits(memory_bytes, max_log_bytes),
        Arc::new(MemoryBudget::new(usize::MAX)),
        Arc::new(Store::from(MemoryStore::new(60_000))),
    ))
}

/// A temporary data directory, removed on drop.
pub(crate) struct TempDir(pub(crate) std::path::PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tailgate-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn spool(dir: &TempDir) -> Arc<Spool> {
    Spool::open(SpoolSettings {
        dir: dir.0.clone(),
        fsync: Fsync::Never,
        disk_retention: Duration::from_secs(3600),
        max_disk_bytes: u64::MAX,
        tombstone_ttl: Duration::from_secs(3600),
    })
    .unwrap()
}

fn spooled(store: &Arc<Spool>, id: &str, memory_bytes: usize) -> Arc<JobLog> {
    let recovered = fresh(id);
    store.create(&recovered.id, &recovered.progress).unwrap();
    Arc::new(JobLog::new(
        recovered,
        limits(memory_bytes, u64::MAX),
        Arc::new(MemoryBudget::new(usize::MAX)),
        Arc::new(Store::from(Arc::clone(store))),
    ))
}

fn line(n: Option<u64>, text: &str) -> Incoming {
    Incoming {
        n,
        body: RecordBody::Log {
            stream: Stream::Stdout,
            line: text.into(),
        },
    }
}

fn seqs(read: Read) -> Vec<u64> {
    match read {
        Read::Entries(v) => v.iter().map(|e| e.seq()).collect(),
        other => panic!("expected entries, got {other:?}"),
    }
}

#[tokio::test]
async fn appends_dense_seqs_and_drops_duplicate_n() {
    let job = log(1 << 20, u64::MAX);
    let mut tally = Tally::default();
    job.append(
        [
            line(Some(1), "a"),
            line(Some(2), "b"),
            line(Some(2), "b"),
            line(None, "c"),
        ],
        &mut tally,
    )
    .await
    .unwrap();
    job.append([line(Some(1), "a"), line(Some(3), "d")], &mut tally)
        .await
        .unwrap();
    assert_eq!(
        (
            tally.accepted,
            tally.duplicates,
            tally.last_seq,
            tally.last_n
        ),
        (4, 2, 4, Some(3))
    );
    assert_eq!(
        seqs(job.read_any(1, usize::MAX, None).await),
        vec![1, 2, 3, 4]
    );
    assert_eq!(
        seqs(job.read_any(3, 1, None).await),
        vec![3],
        "a budget still yields one record"
    );
    assert!(matches!(job.read_any(5, 100, None).await, Read::Idle));
    assert_eq!(job.snapshot().status, JobStatus::Running);
}

#[tokio::test]
async fn terminal_status_closes_the_log() {
    let job = log(1 << 20, u64::MAX);
    let mut tally = Tally::default();
    let done = Incoming {
        n: None,
        body: RecordBody::Status {
            status: JobStatus::Failed,
            exit_code: Some(3),
        },
    };
    let res = job
        .append([line(None, "a"), done, line(None, "late")], &mut tally)
        .await;
    assert!(matches!(res, Err(AppendError::Finished)));
    assert_eq!(tally.accepted, 2);
    assert!(matches!(job.read_any(3, 100, None).await, Read::End));
    let snap = job.snapshot();
    assert_eq!(
        (snap.status, snap.exit_code, snap.lines),
        (JobStatus::Failed, Some(3), 1)
    );
}

#[tokio::test]
async fn eviction_without_a_spool_turns_into_a_gap() {
    let job = log(3 * 300, u64::MAX);
    let mut tally = Tally::default();
    job.append(
        (0..10).map(|i| line(None, &format!("line {i}"))),
        &mut tally,
    )
    .await
    .unwrap();
    let first = job.snapshot().first_seq;
    assert!(first > 1 && first < 10, "first held {first}");
    match job.read_any(1, 1000, None).await {
        Read::Gap { from, to } => assert_eq!((from, to), (1, first - 1)),
        other => panic!("expected a gap, got {other:?}"),
    }
    assert_eq!(
        seqs(job.read_any(first, usize::MAX, None).await).last(),
        Some(&10)
    );
}

#[tokio::test]
async fn with_a_spool_evicted_records_are_read_back_byte_identical() {
    let dir = TempDir::new("joblog");
    let store = spool(&dir);
    let job = spooled(&store, "j", 3 * 300);
    let mut tally = Tally::default();
    let mut sent = Vec::new();
    for i in 0..50 {
        job.append([line(None, &format!("line {i} \u{1b}[1m\r"))], &mut tally)
            .await
            .unwrap();
        if let Read::Entries(e) = job.read_any(i + 1, usize::MAX, None).await {
            sent.push(e[0].sse.clone());
        }
    }
    assert_eq!(job.snapshot().first_seq, 1, "everything is readable");
    let mut cursor = 1;
    let mut got = Vec::new();
    while let Read::Entries(entries) = job.read_any(cursor, 200, None).await {
        cursor = entries.last().unwrap().seq() + 1;
        got.extend(entries.iter().map(|e| e.sse.clone()));
    }
    assert_eq!(got, sent, "every frame once, in order, as first sent");
}

#[tokio::test]
async fn size_limit_counts_every_record_and_truncates_with_one_notice() {
    let job = log(1 << 20, 10);
    let mut tally = Tally::default();
    let custom = Incoming {
        n: None,
        body: RecordBody::Custom {
            kind: "k".into(),
            data: serde_json::json!("0123456789"),
        },
    };
    job.append([line(None, "abcd"), custom, line(None, "abcd")], &mut tally)
        .await
        .unwrap();
    let done = Incoming {
        n: None,
        body: RecordBody::Status {
            status: JobStatus::Succeeded,
            exit_code: Some(0),
        },
    };
    job.append([line(None, "ab"), done], &mut tally)
        .await
        .unwrap();
    let snap = job.snapshot();
    assert_eq!((snap.lines, snap.bytes, snap.dropped_lines), (1, 4, 3));
    let entries = match job.read_any(1, usize::MAX, None).await {
        Read::Entries(v) => v,
        other => panic!("{other:?}"),
    };
    let kinds: Vec<Kind> = entries.iter().map(|e| e.kind()).collect();
    assert_eq!(entries.len(), 3, "{kinds:?}");
    assert!(entries[1].line().unwrap().contains("truncated at 4 bytes"));
    assert_eq!(snap.status, JobStatus::Succeeded, "a status still fits");
}

#[tokio::test]
async fn subscriber_limit_and_reaping() {
    let job = log(1 << 20, u64::MAX);
    let a = job.attach_subscriber().unwrap();
    let b = job.attach_subscriber().unwrap();
    assert!(job.attach_subscriber().is_none());
    let zero = Duration::ZERO;
    assert!(!job.is_expired(Instant::now(), zero, Some(zero)));
    drop(a);
    assert!(job.attach_subscriber().is_some());
    drop(b);
    assert!(job.is_expired(Instant::now() + Duration::from_secs(1), zero, Some(zero)));
    assert!(!job.is_expired(Instant::now() + Duration::from_secs(1), zero, None));
}

#[tokio::test]
async fn lifecycle_ends_running_and_queued_jobs_by_wall_clock() {
    let grace = Duration::from_secs(600);
    let ttl = Duration::from_secs(3600);
    let queued = log(1 << 20, u64::MAX);
    let created = queued.snapshot();
    let t0 = now_ms();
    assert_eq!(
        queued.check_lifecycle(t0 + 3_599_000, grace, ttl).await,
        None
    );
    assert!(!created.status.is_terminal());
    assert_eq!(
        queued.check_lifecycle(t0 + 3_601_000, grace, ttl).await,
        Some(JobStatus::Expired)
    );
    assert!(matches!(
        queued.read_any(1, 100, None).await,
        Read::Entries(_)
    ));
    assert!(queued.is_finished());

    let running = log(1 << 20, u64::MAX);
    let upload = running.attach_publisher();
    running
        .append([line(None, "x")], &mut Tally::default())
        .await
        .unwrap();
    assert_eq!(
        running.check_lifecycle(t0 + 10_000_000, grace, ttl).await,
        None,
        "never lost while its upload is open"
    );
    drop(upload);
    let left = now_ms();
    assert_eq!(
        running.check_lifecycle(left + 599_000, grace, ttl).await,
        None
    );
    assert_eq!(
        running.check_lifecycle(left + 601_000, grace, ttl).await,
        Some(JobStatus::Lost)
    );
    assert_eq!(running.snapshot().status, JobStatus::Lost);
}

#[tokio::test]
async fn tail_start_counts_line_bytes_from_the_end() {
    let dir = TempDir::new("tail");
    let store = spool(&dir);
    let job = spooled(&store, "t", 400);
    let mut tally = Tally::default();
    for i in 0..1000 {
        job.append([line(None, &format!("{i:04}"))], &mut tally)
            .await
            .unwrap();
    }
    assert_eq!(job.tail_start(0).await, 1001);
    assert_eq!(job.tail_start(5).await, 1000);
    assert_eq!(job.tail_start(9).await, 1000);
    assert_eq!(job.tail_start(10).await, 999);
    assert_eq!(job.tail_start(5 * 900).await, 101);
    assert_eq!(job.tail_start(usize::MAX / 2).await, 1);
}

#[tokio::test]
async fn a_job_whose_spool_cannot_be_read_says_why() {
    let mut recovered = fresh("broken");
    recovered.progress.status = JobStatus::Lost;
    recovered.broken = Some("not a tailgate spool (bad magic)".into());
    let job = JobLog::new(
        recovered,
        limits(1 << 20, u64::MAX),
        Arc::new(MemoryBudget::new(usize::MAX)),
        Arc::new(Store::from(MemoryStore::new(60_000))),
    );
    assert!(matches!(job.read_any(1, 100, None).await, Read::Failed(why) if why.contains("magic")));
    let snap = job.snapshot();
    assert_eq!(snap.status, JobStatus::Lost);
    assert!(snap.error.unwrap().contains("magic"));
}

#[test]
fn an_open_upload_is_noted_between_a_quarter_and_half_of_the_grace_spread_over_jobs() {
    let grace = Duration::from_secs(600);
    let points: std::collections::HashSet<u64> = (0..100)
        .map(|i| {
            let at = note_after(&JobId::parse(&format!("job-{i}")).unwrap(), grace);
            assert!((150_000..300_000).contains(&at), "{at}");
            at
        })
        .collect();
    assert!(
        points.len() > 90,
        "jobs started together note apart: {points:?}"
    );
    let again = note_after(&JobId::parse("job-7").unwrap(), grace);
    assert_eq!(again, note_after(&JobId::parse("job-7").unwrap(), grace));
    assert!(note_after(&JobId::parse("j").unwrap(), Duration::from_millis(1)) >= 1);
}
