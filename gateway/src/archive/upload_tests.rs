//! The writer over a real spool and a local-files bucket: two writers racing for one job
//! write it once (the loser verifies the winner), the object reads back byte-identical,
//! and dropping the local copy leaves the tombstone that sends reads to the archive.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::archive::ArchiveConfig;
use crate::entry::Entry;
use crate::job_log::tests::TempDir;
use crate::memory::MemoryBudget;
use crate::record::{JobStatus, RecordBody, Stream};
use crate::rules::Incoming;
use crate::store::spool::{Spool, SpoolSettings};
use crate::store::{Fsync, Opened, Progress};

fn spool(dir: &TempDir) -> Arc<Store> {
    let spool = Spool::open(SpoolSettings {
        dir: dir.0.join("data"),
        fsync: Fsync::Never,
        disk_retention: Duration::from_secs(3600),
        max_disk_bytes: u64::MAX,
        tombstone_ttl: Duration::from_secs(3600),
    })
    .unwrap();
    Arc::new(Store::from(spool))
}

/// The spool with `archive` behind it, as `--archive-url` sets it up.
fn tier(store: &Arc<Store>, archive: &Arc<Archive>) {
    let Store::Spool(spool) = &**store else {
        panic!("a spool");
    };
    assert!(spool.archive.set(Arc::clone(archive)).is_ok());
}

/// A finished job of `lines` lines in `store`; its records.
async fn finished_job(store: &Arc<Store>, job: &JobId, lines: u64) -> Vec<Arc<Entry>> {
    assert!(matches!(
        store.open(job, None).await.unwrap(),
        Opened::Job(_)
    ));
    let mut batch: Vec<Incoming> = (1..=lines)
        .map(|s| Incoming {
            n: Some(s),
            body: RecordBody::Log {
                stream: Stream::Stdout,
                line: format!("step {s}: \u{1b}[1mok\u{1b}[0m"),
            },
        })
        .collect();
    batch.push(Incoming {
        n: Some(lines + 1),
        body: RecordBody::Status {
            status: JobStatus::Succeeded,
            exit_code: Some(0),
        },
    });
    let appended = store
        .append(job, &Progress::new(0), batch, u64::MAX)
        .await
        .unwrap();
    assert_eq!(appended.entries.len() as u64, lines + 1);
    appended.entries
}

/// The finished job as the store holds it.
async fn held(store: &Arc<Store>, job: &JobId) -> Option<Recovered> {
    store.finished().await.into_iter().find(|r| &r.id == job)
}

fn archive(dir: &TempDir) -> Arc<Archive> {
    archive_in_parts(dir, crate::archive::DEFAULT_ARCHIVE_PART_BYTES)
}

/// An archive whose objects above `part_bytes` go up in parts.
fn archive_in_parts(dir: &TempDir, part_bytes: usize) -> Arc<Archive> {
    let url = format!("file://{}", dir.0.join("bucket").display());
    let memory = Arc::new(MemoryBudget::new(64 << 20));
    let mut config = ArchiveConfig::new(url);
    config.part_bytes = part_bytes;
    Archive::open(config, memory, 8 << 20).unwrap()
}

/// Two writers archiving the same job at once: their outcomes, a write before a
/// verification.
async fn race(archive: &Arc<Archive>, store: &Arc<Store>, recovered: &Recovered) -> [Uploaded; 2] {
    let (a, b) = tokio::join!(
        archive_job(archive, store, recovered, None),
        archive_job(archive, store, recovered, None)
    );
    let mut outcomes = [a.unwrap(), b.unwrap()];
    outcomes.sort_by_key(|o| matches!(o, Uploaded::Verified));
    outcomes
}

/// Every file under `dir`, recursively.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn a_large_object_goes_up_in_parts_is_published_once_and_reads_back() {
    let dir = TempDir::new("archive-parts");
    let store = spool(&dir);
    let job = JobId::parse("parts").unwrap();
    let archive = archive_in_parts(&dir, 4096);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let entries = finished_job(&store, &job, 50_000).await;
        let recovered = held(&store, &job).await.unwrap();
        let outcomes = race(&archive, &store, &recovered).await;
        let Uploaded::Wrote { bytes, .. } = outcomes[0] else {
            panic!("{outcomes:?}");
        };
        assert!(bytes > 4 * 4096, "in several parts: {bytes}");
        assert_eq!(outcomes[1], Uploaded::Verified);
        // Only the published object stays: each attempt's parts object is deleted.
        let left = files(&dir.0.join("bucket"));
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(std::fs::metadata(&left[0]).unwrap().len(), bytes);

        store.drop_archived(&job, &recovered.life).await;
        tier(&store, &archive);
        let mut seq = 1;
        while seq <= entries.len() as u64 {
            let got = store
                .read(&job, seq, entries.len() as u64, 64 * 1024)
                .await
                .unwrap();
            assert!(!got.is_empty());
            for e in got {
                assert_eq!(e.sse, entries[(e.seq() - 1) as usize].sse);
                seq += 1;
            }
        }
    });
    drop(rt);
}

#[test]
fn two_writers_race_one_object_is_written_and_the_loser_verifies_it() {
    let dir = TempDir::new("archive-race");
    let store = spool(&dir);
    let job = JobId::parse("raced").unwrap();
    let archive = archive(&dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let entries = finished_job(&store, &job, 5_000).await;
        let recovered = held(&store, &job).await.unwrap();
        let outcomes = race(&archive, &store, &recovered).await;
        assert!(
            matches!(outcomes[0], Uploaded::Wrote { .. }),
            "{outcomes:?}"
        );
        assert_eq!(outcomes[1], Uploaded::Verified);

        // The local copy goes; with the archive behind the spool, the job reads from the
        // object.
        store.drop_archived(&job, &recovered.life).await;
        assert!(held(&store, &job).await.is_none());
        assert!(!matches!(store.read(&job, 1, 10, 1 << 20).await, Ok(held) if !held.is_empty()));
        tier(&store, &archive);
        let Ok(Opened::Job(loaded)) = store.open(&job, None).await else {
            panic!("the archive holds it");
        };
        assert_eq!(loaded.progress, recovered.progress);
        assert!(loaded.broken.is_none());
        let mut seq = 1;
        while seq <= entries.len() as u64 {
            let got = store
                .read(&job, seq, entries.len() as u64, 64 * 1024)
                .await
                .unwrap();
            assert!(!got.is_empty());
            for e in got {
                assert_eq!(e.sse, entries[(e.seq() - 1) as usize].sse);
                assert_eq!(e.seq(), seq);
                seq += 1;
            }
        }
    });
    drop(rt);
}

#[test]
fn a_different_log_under_the_same_name_is_not_taken_for_ours() {
    let dir = TempDir::new("archive-mismatch");
    let store = spool(&dir);
    let job = JobId::parse("twice").unwrap();
    let archive = archive(&dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        finished_job(&store, &job, 10).await;
        let mut recovered = held(&store, &job).await.unwrap();
        let first = archive_job(&archive, &store, &recovered, None).await;
        assert!(matches!(first, Ok(Uploaded::Wrote { .. })));
        // Another log of the same name (a job re-created after its tombstone expired).
        recovered.progress.status = JobStatus::Failed;
        let second = archive_job(&archive, &store, &recovered, None).await;
        assert!(matches!(second, Err(UploadError::Mismatch)), "{second:?}");
    });
}
