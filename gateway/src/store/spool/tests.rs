//! The spool against a tiny model: the same random appends, crashes, torn writes and
//! range reads on both, compared after every step.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::entry::Entry;
use crate::job_log::tests::TempDir;
use crate::record::{Record, RecordBody, Stream};

#[derive(Debug, Clone)]
enum Action {
    /// Appends records with these line lengths as one batch.
    Append(Vec<usize>),
    /// The process dies and starts again on the same directory (the rest of the append
    /// window stays in the file as zeros).
    Crash,
    /// A crash mid-write: the records lose this many bytes from their end (within the
    /// last batch), zeros up to the file's length in their place (a copy into the
    /// append window cut short), then the process starts again.
    Torn(usize),
    /// The gateway shuts down (the window is trimmed) and starts again.
    Restart,
    /// Reads `from..=to` within `budget`.
    Read(u64, u64, usize),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => proptest::collection::vec(0usize..300, 1..6).prop_map(Action::Append),
        // Batches larger than an append window: written, not copied.
        1 => proptest::collection::vec(0usize..8000, 1..6).prop_map(Action::Append),
        1 => Just(Action::Crash),
        1 => Just(Action::Restart),
        1 => (1usize..400).prop_map(Action::Torn),
        3 => (1u64..40, 0u64..40, 1usize..2000).prop_map(|(a, b, c)| Action::Read(a, a + b, c)),
    ]
}

fn settings(dir: &TempDir) -> SpoolSettings {
    SpoolSettings {
        dir: dir.0.clone(),
        fsync: Fsync::Never,
        disk_retention: Duration::from_secs(3600),
        max_disk_bytes: u64::MAX,
        tombstone_ttl: Duration::from_secs(3600),
    }
}

/// The model: every record's frame, and the file length after it.
#[derive(Default)]
struct Model {
    frames: Vec<(bytes::Bytes, u64)>,
    progress: Option<Progress>,
}

fn run(actions: Vec<Action>) {
    let dir = TempDir::new("spool-model");
    let job = JobId::parse("model").unwrap();
    let path = files::spool_path(&dir.0.join(files::JOBS), &job);
    let mut spool = Spool::open(settings(&dir)).unwrap();
    let mut model = Model::default();
    let mut progress = Progress::new(1_000);
    spool.create(&job, &progress).unwrap();
    // Where the records end: the file may hold the rest of the append window past them.
    let records = |spool: &Spool| spool.jobs.get(&job).unwrap().lock().len;
    let mut last_batch_start = records(&spool);
    let mut text = 0u64;
    for action in actions {
        match action {
            Action::Append(lens) => {
                last_batch_start = records(&spool);
                let mut batch = Vec::new();
                let mut draft = progress;
                for len in lens {
                    text += 1;
                    let line = format!("{text}:{}\r\u{1b}", "é".repeat(len / 2));
                    let record = Record {
                        seq: draft.next_seq,
                        ts_ms: 2_000 + text,
                        body: RecordBody::Log {
                            stream: Stream::Stderr,
                            line,
                        },
                    };
                    let entry = Entry::new(&record, Some(text), Some(len as u32));
                    draft.apply(&entry);
                    batch.push(Arc::new(entry));
                }
                spool
                    .write(
                        &job,
                        Batch {
                            records: &batch,
                            progress: &draft,
                        },
                    )
                    .unwrap();
                progress = draft;
                let mut end = last_batch_start;
                for e in &batch {
                    end += (frame::HEAD + 30 + e.json().len()) as u64;
                    model.frames.push((e.sse.clone(), end));
                }
                model.progress = Some(progress);
            }
            Action::Crash | Action::Torn(_) | Action::Restart => {
                let len = records(&spool);
                if let Action::Restart = action {
                    spool.flush();
                    assert_eq!(std::fs::metadata(&path).unwrap().len(), len, "trimmed");
                }
                drop(spool);
                if let Action::Torn(cut) = action {
                    let size = std::fs::metadata(&path).unwrap().len();
                    let keep = len.saturating_sub(cut as u64).max(last_batch_start);
                    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                    f.set_len(keep).unwrap();
                    f.set_len(size).unwrap();
                    // Records whose frame was cut are gone; whole ones before them stay.
                    model.frames.retain(|(_, end)| *end <= keep);
                }
                spool = Spool::open(settings(&dir)).unwrap();
                assert_eq!(
                    std::fs::metadata(&path).unwrap().len(),
                    records(&spool),
                    "recovery leaves the records alone in the file"
                );
                let recovered = spool.load(&job).unwrap();
                assert_eq!(recovered.broken, None);
                assert_eq!(recovered.progress.last_seq(), model.frames.len() as u64);
                assert_eq!(
                    recovered.progress.created_ms, 1_000,
                    "a torn tail is not damage: the job keeps its life"
                );
                if model.frames.len() as u64 == progress.last_seq() {
                    assert_eq!(recovered.progress, progress, "progress survives");
                }
                progress = recovered.progress;
                last_batch_start = records(&spool);
            }
            Action::Read(from, to, budget) => {
                let got = spool.read(&job, from, to, budget).unwrap();
                let want: Vec<_> = model
                    .frames
                    .iter()
                    .enumerate()
                    .map(|(i, (f, _))| (i as u64 + 1, f))
                    .filter(|(seq, _)| (from..=to).contains(seq))
                    .collect();
                assert_eq!(got.is_empty(), want.is_empty(), "read {from}..={to}");
                assert!(got.len() <= want.len());
                for (entry, (seq, frame)) in got.iter().zip(&want) {
                    assert_eq!(entry.seq(), *seq);
                    assert_eq!(&entry.sse, *frame, "byte-identical");
                }
                if got.len() < want.len() {
                    let bytes: usize = got.iter().map(|e| e.sse.len()).sum();
                    assert!(
                        bytes + want[got.len()].1.len() > budget.saturating_sub(64)
                            || got.len() == 1
                    );
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn spool_matches_the_model(actions in proptest::collection::vec(action(), 1..40)) {
        run(actions);
    }
}

#[test]
fn a_torn_tail_is_cut_at_every_byte_of_the_last_record() {
    let dir = TempDir::new("spool-torn");
    let job = JobId::parse("torn").unwrap();
    let path = files::spool_path(&dir.0.join(files::JOBS), &job);
    let mut progress = Progress::new(1);
    {
        let spool = Spool::open(settings(&dir)).unwrap();
        spool.create(&job, &progress).unwrap();
        for i in 1..=3u64 {
            let record = Record {
                seq: i,
                ts_ms: 5,
                body: RecordBody::Log {
                    stream: Stream::Stdout,
                    line: format!("line {i}"),
                },
            };
            let entry = Arc::new(Entry::new(&record, None, Some(6)));
            progress.apply(&entry);
            let batch = Batch {
                records: std::slice::from_ref(&entry),
                progress: &progress,
            };
            spool.write(&job, batch).unwrap();
        }
        spool.flush();
    }
    let whole = std::fs::read(&path).unwrap();
    let spool = Spool::open(settings(&dir)).unwrap();
    let last = spool.read(&job, 3, 3, 1 << 20).unwrap();
    let last_len = frame::HEAD + 30 + last[0].json().len();
    drop(spool);
    for cut in 1..=last_len {
        std::fs::write(&path, &whole[..whole.len() - cut]).unwrap();
        let spool = Spool::open(settings(&dir)).unwrap();
        let recovered = spool.load(&job).unwrap();
        assert_eq!(recovered.progress.last_seq(), 2, "cut {cut}");
        assert_eq!(
            std::fs::metadata(&path).unwrap().len() as usize,
            whole.len() - last_len,
            "the torn tail is cut off"
        );
        assert!(spool.read(&job, 3, 3, 1 << 20).unwrap().is_empty());
    }
}

#[test]
fn an_unreadable_spool_marks_its_job_and_the_rest_recover() {
    let dir = TempDir::new("spool-bad");
    {
        let spool = Spool::open(settings(&dir)).unwrap();
        spool
            .create(&JobId::parse("good").unwrap(), &Progress::new(1))
            .unwrap();
    }
    let jobs = dir.0.join(files::JOBS);
    std::fs::write(jobs.join("bad.spool"), b"not a spool at all").unwrap();
    std::fs::write(jobs.join("..spool"), b"ignored: not a job name").unwrap();
    let spool = Spool::open(settings(&dir)).unwrap();
    let bad = spool.load(&JobId::parse("bad").unwrap()).unwrap();
    assert!(bad.broken.as_deref().unwrap().contains("magic"), "{bad:?}");
    assert!(bad.progress.status.is_terminal());
    assert!(spool
        .load(&JobId::parse("good").unwrap())
        .unwrap()
        .broken
        .is_none());
    assert_eq!(spool.recover().len(), 2);
}

#[test]
fn a_second_gateway_cannot_share_the_directory() {
    let dir = TempDir::new("spool-lock");
    let _first = Spool::open(settings(&dir)).unwrap();
    let err = Spool::open(settings(&dir)).err().unwrap();
    assert!(err.source.to_string().contains("another tailgate"), "{err}");
}

/// Creates `name` with `lines` lines of 100 bytes, finished at `finished_ms` if given.
fn add(
    spool: &Spool,
    name: &str,
    finished_ms: Option<u64>,
    lines: usize,
) -> Result<JobId, StoreError> {
    let job = JobId::parse(name).unwrap();
    let mut p = Progress::new(1);
    spool.create(&job, &p)?;
    let mut batch = Vec::new();
    let mut push = |p: &mut Progress, ts_ms: u64, body: RecordBody, counted: u32| {
        let r = Record {
            seq: p.next_seq,
            ts_ms,
            body,
        };
        let e = Arc::new(Entry::new(&r, None, Some(counted)));
        p.apply(&e);
        batch.push(e);
    };
    for _ in 0..lines {
        let body = RecordBody::Log {
            stream: Stream::Stdout,
            line: "x".repeat(100),
        };
        push(&mut p, 2, body, 100);
    }
    if let Some(t) = finished_ms {
        let body = RecordBody::Status {
            status: crate::record::JobStatus::Succeeded,
            exit_code: Some(0),
        };
        push(&mut p, t, body, 16);
    }
    spool.write(
        &job,
        Batch {
            records: &batch,
            progress: &p,
        },
    )?;
    Ok(job)
}

#[test]
fn retention_and_the_disk_budget_delete_finished_jobs_only() {
    let dir = TempDir::new("spool-retention");
    let total = {
        let spool = Spool::open(settings(&dir)).unwrap();
        add(&spool, "old", Some(1_000), 5).unwrap();
        add(&spool, "newer", Some(500_000), 5).unwrap();
        add(&spool, "running", None, 5).unwrap();
        spool.total.load(Ordering::Relaxed)
    };
    let mut s = settings(&dir);
    s.max_disk_bytes = total + 1000;
    s.disk_retention = Duration::from_secs(100);
    let spool = Spool::open(s).unwrap();
    assert_eq!(
        spool.total.load(Ordering::Relaxed),
        total,
        "sizes recovered"
    );
    let (old, newer, running) = (
        JobId::parse("old").unwrap(),
        JobId::parse("newer").unwrap(),
        JobId::parse("running").unwrap(),
    );
    // Disk retention: `old` finished 100 s before `now`; `newer` did not.
    assert_eq!(spool.sweep(101_000), vec![old.clone()]);
    assert!(spool.load(&old).is_none());
    assert_eq!(
        spool.tombstone(&old).map(|t| t.finished_ms),
        Some(Some(1_000))
    );
    // The budget: a running job's append deletes the oldest finished job...
    let big = add(&spool, "big", None, 15);
    assert!(big.is_ok(), "room made by deleting `newer`: {big:?}");
    assert!(spool.load(&newer).is_none());
    assert!(spool.tombstone(&newer).is_some());
    assert_eq!(spool.sweep(101_001), vec![newer], "reported to memory once");
    // ...but never a running one: then the append is refused, and nothing is lost.
    let refused = add(&spool, "more", None, 30);
    assert!(
        matches!(refused, Err(StoreError::Full { .. })),
        "{refused:?}"
    );
    assert!(spool.load(&running).is_some());
    assert_eq!(spool.read(&running, 1, 5, 1 << 20).unwrap().len(), 5);
    assert!(spool.total.load(Ordering::Relaxed) <= total + 1000);
}

/// Appends `count` log lines `line <seq> ...` to `job` in batches of 10, then a
/// terminal status when `finish`; returns the progress after them.
fn lines(spool: &Spool, job: &JobId, mut p: Progress, count: u64, finish: bool) -> Progress {
    let mut batch = Vec::new();
    for i in 0..count + u64::from(finish) {
        let body = if i < count {
            RecordBody::Log {
                stream: Stream::Stdout,
                line: format!("line {} {}", p.next_seq, "y".repeat(40)),
            }
        } else {
            RecordBody::Status {
                status: crate::record::JobStatus::Succeeded,
                exit_code: Some(0),
            }
        };
        let r = Record {
            seq: p.next_seq,
            ts_ms: 10 + i,
            body,
        };
        let e = Arc::new(Entry::new(&r, None, Some(50)));
        p.apply(&e);
        batch.push(e);
        if batch.len() == 10 || i + 1 == count + u64::from(finish) {
            let records = std::mem::take(&mut batch);
            spool
                .write(
                    job,
                    Batch {
                        records: &records,
                        progress: &p,
                    },
                )
                .unwrap();
        }
    }
    p
}

fn seqs(entries: &[Arc<Entry>]) -> Vec<u64> {
    entries.iter().map(|e| e.seq()).collect()
}

/// Flips one byte inside the frame of `line <seq> ` in the spool at `path`.
fn flip_in_line(path: &std::path::Path, seq: u64) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    let needle = format!("line {seq} ");
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .unwrap();
    bytes[at + 2] ^= 0x01;
    std::fs::write(path, &bytes).unwrap();
    bytes
}

#[test]
fn one_flipped_byte_costs_one_record_and_the_damaged_file_is_kept() {
    for finish in [true, false] {
        let dir = TempDir::new("spool-flip");
        let job = JobId::parse("flip").unwrap();
        let jobs = dir.0.join(files::JOBS);
        let path = files::spool_path(&jobs, &job);
        let before = {
            let spool = Spool::open(settings(&dir)).unwrap();
            spool.create(&job, &Progress::new(1)).unwrap();
            lines(&spool, &job, Progress::new(1), 1000, finish)
        };
        let damaged = flip_in_line(&path, 500);
        for restart in 0..2 {
            let spool = Spool::open(settings(&dir)).unwrap();
            let got = spool.load(&job).unwrap();
            assert_eq!(got.broken, None);
            let p = got.progress;
            assert_eq!(
                (p.next_seq, p.status, p.exit_code, p.finished_ms),
                (
                    before.next_seq,
                    before.status,
                    before.exit_code,
                    before.finished_ms
                ),
                "the status and the last seq survive ({restart})"
            );
            assert_eq!(p.lines, before.lines - 1, "the lost line is not counted");
            let all = spool.read(&job, 1, 2000, usize::MAX).unwrap();
            assert_eq!(
                seqs(&all),
                (1..=499).collect::<Vec<_>>(),
                "up to the damage"
            );
            assert!(spool.read(&job, 500, 500, 1 << 20).unwrap().is_empty());
            let after = spool.read(&job, 500, 2000, usize::MAX).unwrap();
            assert_eq!(
                seqs(&after),
                (501..before.next_seq).collect::<Vec<_>>(),
                "everything after the damage"
            );
            assert_eq!(after.last().unwrap().is_terminal(), finish);
            let aside: Vec<_> = std::fs::read_dir(&jobs)
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().contains(".damaged-"))
                .collect();
            assert_eq!(aside.len(), 1, "set aside once ({restart})");
            assert_eq!(std::fs::read(aside[0].path()).unwrap(), damaged);
            if !finish && restart == 1 {
                // The job goes on after its last seq: none a reader saw is given again.
                let p = lines(&spool, &job, got.progress, 1, false);
                assert_eq!(p.last_seq(), 1001);
                let tail = spool.read(&job, 1000, 1001, usize::MAX).unwrap();
                assert_eq!(seqs(&tail), vec![1000, 1001]);
            }
        }
    }
}

#[test]
fn a_damaged_length_field_is_not_taken_for_a_torn_tail() {
    let dir = TempDir::new("spool-len");
    let job = JobId::parse("len").unwrap();
    let path = files::spool_path(&dir.0.join(files::JOBS), &job);
    let before = {
        let spool = Spool::open(settings(&dir)).unwrap();
        spool.create(&job, &Progress::new(1)).unwrap();
        lines(&spool, &job, Progress::new(1), 100, true)
    };
    // The length of line 50's frame now reaches past the end of the file.
    let mut bytes = std::fs::read(&path).unwrap();
    let needle = b"line 50 ";
    let payload = bytes.windows(8).position(|w| w == needle).unwrap();
    let len_at = (0..payload).rev().find(|&i| bytes[i] == b'{').unwrap() - 38;
    bytes[len_at + 3] = 0x03;
    std::fs::write(&path, &bytes).unwrap();
    let spool = Spool::open(settings(&dir)).unwrap();
    let p = spool.load(&job).unwrap().progress;
    assert_eq!((p.next_seq, p.status), (before.next_seq, before.status));
    let after = spool.read(&job, 50, 200, usize::MAX).unwrap();
    assert_eq!(seqs(&after), (51..=101).collect::<Vec<_>>());
}

#[test]
fn damage_at_a_read_is_an_error_that_names_no_path() {
    let dir = TempDir::new("spool-read-damage");
    let job = JobId::parse("rd").unwrap();
    let path = files::spool_path(&dir.0.join(files::JOBS), &job);
    let spool = Spool::open(settings(&dir)).unwrap();
    spool.create(&job, &Progress::new(1)).unwrap();
    lines(&spool, &job, Progress::new(1), 20, false);
    flip_in_line(&path, 5);
    let err = spool.read(&job, 1, 20, usize::MAX).unwrap_err().to_string();
    assert!(err.contains("damaged"), "{err}");
    assert!(!err.contains(&*dir.0.to_string_lossy()), "{err}");
    assert!(!err.contains("/"), "no path at all: {err}");
}

#[cfg(unix)]
#[test]
fn fifos_and_symlinks_in_the_data_dir_do_not_hang_or_leak_start_up() {
    let dir = TempDir::new("spool-fifo");
    drop(Spool::open(settings(&dir)).unwrap());
    let jobs = dir.0.join(files::JOBS);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        jobs.join("fifo.spool"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let outside = dir.0.join("outside");
    std::fs::write(&outside, b"not yours").unwrap();
    std::os::unix::fs::symlink(&outside, jobs.join("link.spool")).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let s = settings(&dir);
    std::thread::spawn(move || {
        let _ = tx.send(Spool::open(s).map(|spool| {
            ["fifo", "link"].map(|id| spool.load(&JobId::parse(id).unwrap()).unwrap())
        }));
    });
    let jobs_seen = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("start-up must not block on a FIFO")
        .unwrap();
    for job in jobs_seen {
        assert!(
            job.broken.as_deref().unwrap().contains("regular file")
                || job.broken.as_deref().unwrap().contains("symbolic link"),
            "{job:?}"
        );
        assert!(job.progress.status.is_terminal());
    }
    assert_eq!(std::fs::read(&outside).unwrap(), b"not yours");
}

/// Counts the fsyncs of spool files under `dir` and holds the first one: the receiver
/// hears when it began, and it ends once the sender sends (or is dropped).
fn hold_first_spool_fsync(
    dir: &TempDir,
) -> (
    Arc<std::sync::atomic::AtomicUsize>,
    std::sync::mpsc::Receiver<()>,
    std::sync::mpsc::Sender<()>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let fsyncs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&fsyncs);
    files::hooks::on_fsync(&dir.0, move |path| {
        if path.extension().is_some_and(|e| e == "spool")
            && counted.fetch_add(1, Ordering::SeqCst) == 0
        {
            let _ = entered_tx.send(());
            let _ = release_rx.lock().unwrap().recv();
        }
    });
    (fsyncs, entered_rx, release_tx)
}

#[test]
fn an_fsync_returns_only_after_one_that_covers_the_callers_write() {
    use std::sync::atomic::Ordering;
    use std::sync::mpsc;
    let dir = TempDir::new("spool-fsync");
    let mut s = settings(&dir);
    s.fsync = Fsync::Always;
    let spool = Spool::open(s).unwrap();
    let job = JobId::parse("two").unwrap();
    spool.create(&job, &Progress::new(1)).unwrap();
    // The first fsync of the spool is held until the test lets it go.
    let (fsyncs, entered_rx, release_tx) = hold_first_spool_fsync(&dir);
    // Two uploads (stdout and stderr) each wrote, then each asks for its fsync.
    let p = lines(&spool, &job, Progress::new(1), 1, false);
    let p = lines(&spool, &job, p, 1, false);
    let a = {
        let (spool, job) = (Arc::clone(&spool), job.clone());
        std::thread::spawn(move || spool.sync(&job))
    };
    entered_rx.recv().unwrap();
    let (b_tx, b_rx) = mpsc::channel();
    {
        let (spool, job) = (Arc::clone(&spool), job.clone());
        std::thread::spawn(move || b_tx.send(spool.sync(&job)));
    }
    assert!(
        matches!(
            b_rx.recv_timeout(Duration::from_millis(500)),
            Err(mpsc::RecvTimeoutError::Timeout)
        ),
        "the second upload was acknowledged while the fsync covering its write was in flight"
    );
    release_tx.send(()).unwrap();
    a.join().unwrap().unwrap();
    b_rx.recv().unwrap().unwrap();
    assert_eq!(spool.jobs.get(&job).unwrap().unsynced(), None);
    assert_eq!(fsyncs.load(Ordering::SeqCst), 1, "one fsync covered both");

    // A write after an fsync began is covered only by a later fsync.
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let counted = Arc::clone(&fsyncs);
    files::hooks::on_fsync(&dir.0, move |path| {
        if path.extension().is_some_and(|e| e == "spool") && counted.load(Ordering::SeqCst) == 2 {
            let _ = entered_tx.send(());
            let _ = release_rx.lock().unwrap().recv();
        }
    });
    let p = lines(&spool, &job, p, 1, false);
    let a = {
        let (spool, job) = (Arc::clone(&spool), job.clone());
        std::thread::spawn(move || spool.sync(&job))
    };
    entered_rx.recv().unwrap();
    lines(&spool, &job, p, 1, false);
    let (b_tx, b_rx) = mpsc::channel();
    {
        let (spool, job) = (Arc::clone(&spool), job.clone());
        std::thread::spawn(move || b_tx.send(spool.sync(&job)));
    }
    assert!(b_rx.recv_timeout(Duration::from_millis(300)).is_err());
    release_tx.send(()).unwrap();
    a.join().unwrap().unwrap();
    b_rx.recv().unwrap().unwrap();
    assert_eq!(spool.jobs.get(&job).unwrap().unsynced(), None);
    assert_eq!(
        fsyncs.load(Ordering::SeqCst),
        3,
        "the later write got its own fsync"
    );
}

#[test]
fn garbage_at_the_end_is_set_aside_and_zeros_are_cut() {
    for (tail, damaged) in [
        (b"\x07 not a frame at all ".repeat(4), true),
        (vec![0u8; 100], false),
    ] {
        let dir = TempDir::new("spool-tail");
        let job = JobId::parse("tail").unwrap();
        let jobs = dir.0.join(files::JOBS);
        let path = files::spool_path(&jobs, &job);
        {
            let spool = Spool::open(settings(&dir)).unwrap();
            spool.create(&job, &Progress::new(1)).unwrap();
            lines(&spool, &job, Progress::new(1), 20, false);
            spool.flush();
        }
        let whole = std::fs::read(&path).unwrap();
        let mut bytes = whole.clone();
        bytes.extend_from_slice(&tail);
        std::fs::write(&path, &bytes).unwrap();
        let spool = Spool::open(settings(&dir)).unwrap();
        let got = spool.load(&job).unwrap().progress;
        assert_eq!(got.last_seq(), 20);
        assert_eq!(
            got.created_ms > 1,
            damaged,
            "damage of unknown extent starts a new life (a new creation time)"
        );
        assert_eq!(
            seqs(&spool.read(&job, 1, 20, usize::MAX).unwrap()).len(),
            20
        );
        let now = std::fs::read(&path).unwrap();
        assert!(now.starts_with(&whole), "the spool is its intact frames");
        assert_eq!(
            now.len() > whole.len(),
            damaged,
            "and the new life's meta frame"
        );
        let aside = std::fs::read_dir(&jobs)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".damaged-"))
            .count();
        assert_eq!(
            aside,
            usize::from(damaged),
            "garbage is kept aside, zeros are not"
        );
    }
}

fn incoming(line: String) -> crate::rules::Incoming {
    crate::rules::Incoming {
        n: None,
        body: RecordBody::Log {
            stream: Stream::Stdout,
            line,
        },
    }
}

/// Appends from several jobs that land in one batch of the writer thread: the one that
/// overflows the disk budget fails alone, the others are acknowledged, in order, and
/// still there after a restart.
#[tokio::test(flavor = "current_thread")]
async fn appends_of_several_jobs_in_one_batch_fail_and_succeed_alone() {
    use crate::store::spool::writer::tests::{hold, until_queued};
    use crate::store::{Opened, Store};

    let dir = TempDir::new("spool-batch");
    let mut s = settings(&dir);
    s.max_disk_bytes = 4_000;
    let spool = Spool::open(s.clone()).unwrap();
    let store = Arc::new(Store::from(Arc::clone(&spool)));
    let ids: Vec<JobId> = ["a", "big", "c"]
        .iter()
        .map(|n| JobId::parse(n).unwrap())
        .collect();
    for id in &ids {
        assert!(matches!(store.open(id, None).await, Ok(Opened::Job(_))));
    }
    for round in 1..=2u64 {
        let release = hold(&spool.writer).await;
        let answers: Vec<_> = ids
            .iter()
            .map(|id| {
                let (store, id) = (Arc::clone(&store), id.clone());
                // `big` is over the budget; the others are small.
                let len = if id.as_str() == "big" { 5_000 } else { 10 };
                let line = format!("{id} {round} {}", "x".repeat(len));
                tokio::spawn(async move {
                    let from = Progress::new(1);
                    store
                        .append(&id, &from, vec![incoming(line)], u64::MAX)
                        .await
                })
            })
            .collect();
        until_queued(&spool.writer, ids.len()).await;
        drop(release);
        let mut got = Vec::new();
        for answer in answers {
            got.push(answer.await.unwrap());
        }
        assert!(
            matches!(got[1], Err(StoreError::Full { .. })),
            "{:?}",
            got[1]
        );
        for i in [0, 2] {
            let appended = got[i].as_ref().expect("acknowledged");
            assert_eq!(seqs(&appended.entries), vec![round], "{}", ids[i]);
        }
    }
    drop(store);
    drop(spool);
    let spool = Spool::open(s).unwrap();
    for (name, want) in [("a", 2usize), ("big", 0), ("c", 2)] {
        let id = JobId::parse(name).unwrap();
        let read = spool.read(&id, 1, 10, 1 << 20).unwrap();
        assert_eq!(seqs(&read), (1..=want as u64).collect::<Vec<_>>(), "{name}");
        for (i, entry) in read.iter().enumerate() {
            let text = String::from_utf8_lossy(entry.json()).into_owned();
            assert!(text.contains(&format!("{name} {} x", i + 1)), "{text}");
        }
    }
}

/// Fsyncs that many jobs wait for at once (300 builds finishing together) run on the one
/// fsync thread, not a thread each: one `syncfs` covers the jobs that queued together,
/// and no caller is answered before an fsync that started after its write.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_jobs_waiting_for_fsyncs_share_one_syncfs_on_the_fsync_thread() {
    use std::sync::atomic::Ordering;
    let dir = TempDir::new("spool-syncer");
    let mut s = settings(&dir);
    s.fsync = Fsync::Always;
    let spool = Spool::open(s).unwrap();
    let ids: Vec<JobId> = (0..12)
        .map(|i| JobId::parse(&format!("job{i}")).unwrap())
        .collect();
    for id in &ids {
        spool.create(id, &Progress::new(1)).unwrap();
        lines(&spool, id, Progress::new(1), 3, false);
    }
    // The first job's fsync is held until the other jobs' requests are queued.
    let (fsyncs, entered_rx, release_tx) = hold_first_spool_fsync(&dir);
    let sync = |id: &JobId| {
        let (spool, id) = (Arc::clone(&spool), id.clone());
        tokio::spawn(async move { spool.sync_off_runtime(&id).await })
    };
    let first = sync(&ids[0]);
    tokio::task::spawn_blocking(move || entered_rx.recv())
        .await
        .unwrap()
        .expect("the first fsync started");
    let rest: Vec<_> = ids[1..].iter().map(sync).collect();
    for _ in 0..100_000 {
        if spool.syncer.queued() == rest.len() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(spool.syncer.queued(), rest.len(), "queued behind the first");
    for id in &ids[1..] {
        assert!(spool.jobs.get(id).unwrap().unsynced().is_some());
    }
    release_tx.send(()).unwrap();
    first.await.unwrap().unwrap();
    for answer in rest {
        answer.await.unwrap().unwrap();
    }
    assert_eq!(
        fsyncs.load(Ordering::SeqCst),
        1,
        "the jobs that queued together were covered by one syncfs, not an fsync each"
    );
    for id in &ids {
        assert_eq!(spool.jobs.get(id).unwrap().unsynced(), None, "{id}");
    }
}

/// Small appends are copied into the job's append window: the file runs ahead of the
/// records by the rest of the window, readers read the copies (`pread` sees the page
/// cache), the terminal status's fsync gives the rest back, and a crash leaves zeros
/// (and at worst a frame copied in part) that recovery cuts without calling it damage.
#[test]
fn appends_go_through_the_window_and_a_crash_leaves_only_zeros_to_cut() {
    let dir = TempDir::new("spool-window");
    let jobs = dir.0.join(files::JOBS);
    let (done, running) = (
        JobId::parse("done").unwrap(),
        JobId::parse("running").unwrap(),
    );
    let size = |job: &JobId| {
        std::fs::metadata(files::spool_path(&jobs, job))
            .unwrap()
            .len()
    };
    let records = |spool: &Spool, job: &JobId| spool.jobs.get(job).unwrap().lock().len;
    let (finished, p) = {
        let spool = Spool::open(settings(&dir)).unwrap();
        for job in [&done, &running] {
            spool.create(job, &Progress::new(1)).unwrap();
        }
        lines(&spool, &done, Progress::new(1), 20, false);
        assert_eq!(
            size(&done) % window::WINDOW,
            0,
            "allocated a window at a time"
        );
        assert!(size(&done) > records(&spool, &done));
        assert_eq!(
            seqs(&spool.read(&done, 1, 20, usize::MAX).unwrap()),
            (1..=20).collect::<Vec<_>>()
        );
        let finished = lines(
            &spool,
            &done,
            spool.job_for_append(&done).unwrap().1,
            5,
            true,
        );
        spool.sync(&done).unwrap();
        assert_eq!(size(&done), records(&spool, &done), "finished: trimmed");
        (
            finished,
            lines(&spool, &running, Progress::new(1), 30, false),
        )
    };
    // The process died: the running job's file still holds the rest of its window.
    let path = files::spool_path(&jobs, &running);
    let whole = std::fs::read(&path).unwrap();
    let spool = Spool::open(settings(&dir)).unwrap();
    let len = records(&spool, &running);
    assert!((len as usize) < whole.len());
    assert_eq!(size(&running), len, "the zeros are cut");
    assert_eq!(spool.load(&running).unwrap().progress, p);
    assert_eq!(spool.load(&done).unwrap().progress, finished);
    // The last frame copied in part (its second half still zero), then a crash.
    let last = spool.read(&running, 30, 30, usize::MAX).unwrap();
    let frame_len = frame::HEAD + 30 + last[0].json().len();
    drop(spool);
    let mut torn = whole.clone();
    torn[len as usize - frame_len / 2..].fill(0);
    std::fs::write(&path, &torn).unwrap();
    let spool = Spool::open(settings(&dir)).unwrap();
    let got = spool.load(&running).unwrap().progress;
    assert_eq!(
        (got.last_seq(), got.created_ms),
        (29, 1),
        "torn, not damage: same life"
    );
    assert_eq!(size(&running), len - frame_len as u64);
    let aside = std::fs::read_dir(&jobs)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".damaged-"))
        .count();
    assert_eq!(aside, 0);
    // The job goes on where its records end.
    let p = lines(&spool, &running, got, 3, false);
    assert_eq!(
        seqs(&spool.read(&running, 28, 40, usize::MAX).unwrap()),
        vec![28, 29, 30, 31, 32]
    );
    assert_eq!(p.last_seq(), 32);
}

/// Appends one log line of `len` bytes to `job` at `p`; returns the progress after it.
fn append_line(spool: &Spool, job: &JobId, mut p: Progress, len: usize) -> Progress {
    let r = Record {
        seq: p.next_seq,
        ts_ms: 10,
        body: RecordBody::Log {
            stream: Stream::Stdout,
            line: "w".repeat(len),
        },
    };
    let e = Arc::new(Entry::new(&r, None, Some(len as u32)));
    p.apply(&e);
    let batch = Batch {
        records: std::slice::from_ref(&e),
        progress: &p,
    };
    spool.write(job, batch).unwrap();
    p
}

/// Large appends are written, not copied; a window that took only a few appends (small
/// ones between large ones) makes the job write for a while before it maps again.
#[test]
fn large_appends_are_written_and_a_window_of_few_appends_backs_off() {
    let dir = TempDir::new("spool-backoff");
    let job = JobId::parse("mixed").unwrap();
    let path = files::spool_path(&dir.0.join(files::JOBS), &job);
    let spool = Spool::open(settings(&dir)).unwrap();
    spool.create(&job, &Progress::new(1)).unwrap();
    let records = || spool.jobs.get(&job).unwrap().lock().len;
    let size = || std::fs::metadata(&path).unwrap().len();
    let big = window::SMALL as usize + 1;
    let mut p = append_line(&spool, &job, Progress::new(1), big);
    assert_eq!(
        size(),
        records(),
        "a large append is written: nothing mapped"
    );
    p = append_line(&spool, &job, p, 100);
    assert_eq!(size(), window::WINDOW, "a small one maps the window");
    // Past the window after one copy: the next small append is written.
    while records() < window::WINDOW {
        p = append_line(&spool, &job, p, big);
    }
    p = append_line(&spool, &job, p, 100);
    assert_eq!(size(), records(), "backed off: written");
    // Some windows further, a small append maps again.
    while records() < window::WINDOW * (window::BACK_OFF + 2) {
        p = append_line(&spool, &job, p, big);
    }
    p = append_line(&spool, &job, p, 100);
    assert!(
        size() > records() && size() % window::WINDOW == 0,
        "mapped again"
    );
    assert_eq!(
        seqs(&spool.read(&job, 1, p.last_seq(), usize::MAX).unwrap()),
        (1..=p.last_seq()).collect::<Vec<_>>()
    );
}
