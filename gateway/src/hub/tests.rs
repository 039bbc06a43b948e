use super::*;
use crate::job_log::{Incoming, Tally};
use crate::record::{JobStatus, RecordBody, Stream};
use crate::store::memory::MemoryStore;

fn settings(max_jobs: usize) -> HubSettings {
    HubSettings {
        max_jobs,
        retention: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(600),
        publisher_grace: Duration::from_secs(600),
        queued_ttl: Duration::from_secs(3600),
        job: JobLimits {
            memory_bytes: 1 << 20,
            max_log_bytes: 1 << 20,
            max_subscribers: 10,
            gather: Duration::ZERO,
        },
    }
}

fn hub(max_jobs: usize, budget: usize) -> Hub {
    Hub::new(
        settings(max_jobs),
        Arc::new(MemoryBudget::new(budget)),
        Arc::new(MemoryStore::new(3_600_000)),
    )
}

fn id(s: &str) -> JobId {
    JobId::parse(s).unwrap()
}

fn finish(job: &JobLog) {
    let done = Incoming {
        n: None,
        body: RecordBody::Status {
            status: JobStatus::Succeeded,
            exit_code: Some(0),
        },
    };
    job.append([done], &mut Tally::default()).unwrap();
}

fn lines(job: &JobLog, count: usize, len: usize) {
    let batch = (0..count).map(|_| Incoming {
        n: None,
        body: RecordBody::Log {
            stream: Stream::Stdout,
            line: "x".repeat(len),
        },
    });
    job.append(batch, &mut Tally::default()).unwrap();
}

#[test]
fn same_id_same_job_and_a_bound_on_jobs() {
    let hub = hub(2, usize::MAX);
    let a = hub.job(&id("a")).unwrap();
    assert!(Arc::ptr_eq(&a, &hub.job(&id("a")).unwrap()));
    hub.job(&id("b")).unwrap();
    assert!(matches!(hub.job(&id("c")), Err(JobError::TooMany(2))));
}

#[test]
fn reaps_finished_jobs_after_retention_unless_watched_and_leaves_a_tombstone() {
    let hub = hub(10, usize::MAX);
    let job = hub.job(&id("a")).unwrap();
    finish(&job);
    let watcher = job.attach_subscriber().unwrap();
    let later = Instant::now() + Duration::from_secs(61);
    assert_eq!(hub.reap(later), 0);
    drop(watcher);
    assert_eq!(hub.reap(Instant::now()), 0, "still within retention");
    assert_eq!(hub.reap(later), 1);
    assert_eq!(hub.len(), 0);
    match hub.job(&id("a")) {
        Err(JobError::Expired(t)) => assert_eq!(t.status, JobStatus::Succeeded),
        other => panic!("expected a tombstone, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn shedding_takes_finished_unwatched_jobs_first() {
    let hub = hub(10, usize::MAX);
    let running = hub.job(&id("running")).unwrap();
    let finished = hub.job(&id("finished")).unwrap();
    let watched = hub.job(&id("watched")).unwrap();
    for job in [&running, &finished, &watched] {
        lines(job, 10, 1000);
    }
    finish(&finished);
    finish(&watched);
    let _reader = watched.attach_subscriber().unwrap();
    let held = finished.held_bytes();
    let freed = hub.shed(held);
    assert!(freed >= held, "{freed} < {held}");
    assert_eq!(finished.held_bytes(), 0);
    assert!(running.held_bytes() > 0 && watched.held_bytes() > 0);
    hub.shed(usize::MAX);
    assert_eq!(running.held_bytes() + watched.held_bytes(), 0);
    assert_eq!(hub.memory().used(), 0);
}

#[test]
fn lifecycle_runs_over_every_job() {
    let hub = hub(10, usize::MAX);
    let queued = hub.job(&id("q")).unwrap();
    let ended = hub.run_lifecycle(now_ms() + 3_601_000);
    assert_eq!(ended.len(), 1);
    assert_eq!(queued.snapshot().status, JobStatus::Expired);
    assert!(hub.tick() <= Duration::from_secs(10));
}

#[test]
fn a_finished_job_the_disk_budget_deleted_answers_from_its_tombstone() {
    use crate::store::spool::{Spool, SpoolSettings};
    let dir = crate::job_log::tests::TempDir::new("hub-budget");
    let spool = Spool::open(SpoolSettings {
        dir: dir.0.clone(),
        fsync: crate::store::Fsync::Never,
        disk_retention: Duration::from_secs(3600),
        max_disk_bytes: 40 * 1024,
        tombstone_ttl: Duration::from_secs(3600),
    })
    .unwrap();
    let hub = Hub::new(settings(10), Arc::new(MemoryBudget::new(usize::MAX)), spool);
    let old = hub.job(&id("old")).unwrap();
    lines(&old, 100, 200);
    finish(&old);
    // A running job's appends make room by deleting the finished one, under its
    // memory copy (the hub hears of it at its next sweep).
    let new = hub.job(&id("new")).unwrap();
    for _ in 0..10 {
        lines(&new, 10, 200);
    }
    assert!(!dir.0.join("jobs/old.spool").exists(), "deleted from disk");
    assert!(
        matches!(hub.job(&id("old")), Err(JobError::Expired(_))),
        "410 from the tombstone, not the ring's tail after a gap"
    );
}
