//! The writer over a real spool and a local-files bucket: two writers racing for one job
//! write it once (the loser verifies the winner), the object reads back byte-identical,
//! and dropping the local copy leaves the tombstone that sends reads to the archive.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::archive::tiered::Tiered;
use crate::archive::ArchiveConfig;
use crate::entry::Entry;
use crate::job_log::tests::TempDir;
use crate::memory::MemoryBudget;
use crate::record::{JobStatus, Record, RecordBody, Stream};
use crate::store::spool::{Spool, SpoolSettings};
use crate::store::{Batch, Fsync, Progress};

fn spool(dir: &TempDir) -> Arc<dyn Store> {
    Spool::open(SpoolSettings {
        dir: dir.0.join("data"),
        fsync: Fsync::Never,
        disk_retention: Duration::from_secs(3600),
        max_disk_bytes: u64::MAX,
        tombstone_ttl: Duration::from_secs(3600),
    })
    .unwrap()
}

/// A finished job of `lines` lines in `store`; its records.
fn finished_job(store: &Arc<dyn Store>, job: &JobId, lines: u64) -> Vec<Arc<Entry>> {
    let mut progress = Progress::new(1_000);
    store.create(job, &progress).unwrap();
    let mut entries = Vec::new();
    for seq in 1..=lines + 1 {
        let body = match seq {
            s if s > lines => RecordBody::Status {
                status: JobStatus::Succeeded,
                exit_code: Some(0),
            },
            s => RecordBody::Log {
                stream: Stream::Stdout,
                line: format!("step {s}: \u{1b}[1mok\u{1b}[0m"),
            },
        };
        let record = Record {
            seq,
            ts_ms: 1_000 + seq,
            body,
        };
        let entry = Arc::new(Entry::new(&record, Some(seq), Some(10)));
        progress.apply(&entry);
        entries.push(entry);
    }
    store
        .append(
            job,
            Batch {
                records: &entries,
                progress: &progress,
            },
        )
        .unwrap();
    entries
}

fn archive(dir: &TempDir) -> Arc<Archive> {
    let url = format!("file://{}", dir.0.join("bucket").display());
    let memory = Arc::new(MemoryBudget::new(64 << 20));
    Archive::open(ArchiveConfig::new(url), memory, 8 << 20).unwrap()
}

#[test]
fn two_writers_race_one_object_is_written_and_the_loser_verifies_it() {
    let dir = TempDir::new("archive-race");
    let store = spool(&dir);
    let job = JobId::parse("raced").unwrap();
    let entries = finished_job(&store, &job, 5_000);
    let archive = archive(&dir);
    let recovered = store.load(&job).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (a, b) = rt.block_on(async {
        tokio::join!(
            archive_job(&archive, &store, &recovered, None),
            archive_job(&archive, &store, &recovered, None)
        )
    });
    let mut outcomes = [a.unwrap(), b.unwrap()];
    outcomes.sort_by_key(|o| matches!(o, Uploaded::Verified));
    assert!(
        matches!(outcomes[0], Uploaded::Wrote { .. }),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[1], Uploaded::Verified);

    // The local copy goes; the tiered store then reads the job from the object.
    let tiered = Tiered::new(Arc::clone(&store), Arc::clone(&archive));
    tiered.drop_archived(&job);
    assert!(store.load(&job).is_none());
    assert!(store.read(&job, 1, 10, 1 << 20).unwrap().is_empty());
    let loaded = tiered.load(&job).expect("the archive holds it");
    assert_eq!(loaded.progress, recovered.progress);
    assert!(loaded.broken.is_none());
    let mut seq = 1;
    while seq <= entries.len() as u64 {
        let got = tiered
            .read(&job, seq, entries.len() as u64, 64 * 1024)
            .unwrap();
        assert!(!got.is_empty());
        for e in got {
            assert_eq!(e.sse, entries[(e.seq() - 1) as usize].sse);
            assert_eq!(e.seq(), seq);
            seq += 1;
        }
    }
    drop(rt);
}

#[test]
fn a_different_log_under_the_same_name_is_not_taken_for_ours() {
    let dir = TempDir::new("archive-mismatch");
    let store = spool(&dir);
    let job = JobId::parse("twice").unwrap();
    finished_job(&store, &job, 10);
    let archive = archive(&dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut recovered = store.load(&job).unwrap();
    let first = rt.block_on(archive_job(&archive, &store, &recovered, None));
    assert!(matches!(first, Ok(Uploaded::Wrote { .. })));
    // Another log of the same name (a job re-created after its tombstone expired).
    recovered.progress.status = JobStatus::Failed;
    let second = rt.block_on(archive_job(&archive, &store, &recovered, None));
    assert!(matches!(second, Err(UploadError::Mismatch)), "{second:?}");
}
