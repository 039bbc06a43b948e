//! The data directory's files: created private (directories 0700, files 0600), named
//! only from validated job ids, and locked so two gateways never share one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

use crate::job_id::JobId;

/// `<data-dir>/jobs`: one spool per job.
pub(crate) const JOBS: &str = "jobs";
/// `<data-dir>/tombstones`: one small file per deleted job.
pub(crate) const TOMBSTONES: &str = "tombstones";
/// Held locked while a gateway uses the directory.
const LOCK: &str = "LOCK";
/// A spool's suffix.
const SPOOL_SUFFIX: &str = ".spool";

/// Creates `dir` (and parents) private to this user, or checks that it exists.
pub(crate) fn create_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(dir)
}

fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    options.mode(0o600);
    options
}

/// Writes a new file (replacing any) with `bytes`.
pub(crate) fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(bytes)
}

/// Opens a spool for appending, creating it if missing.
pub(crate) fn open_append(path: &Path) -> std::io::Result<File> {
    options().append(true).create(true).open(path)
}

/// The spool file of `job`. The name is the validated id (DESIGN's alphabet, never `.`
/// or `..`), so it cannot leave the directory.
pub(crate) fn spool_path(jobs_dir: &Path, job: &JobId) -> PathBuf {
    jobs_dir.join(format!("{job}{SPOOL_SUFFIX}"))
}

/// The job a spool file name belongs to, if it is one of ours.
pub(crate) fn job_of(name: &str) -> Option<JobId> {
    JobId::parse(name.strip_suffix(SPOOL_SUFFIX)?).ok()
}

/// Locks taken before the server ran ([`keep_lock`]), waiting for the spool to take
/// them over, so no other gateway can slip in between the check and the start.
static HELD: std::sync::Mutex<Vec<(PathBuf, File)>> = std::sync::Mutex::new(Vec::new());

/// Keeps `dir`'s lock for this process until [`lock`] takes it over.
pub(crate) fn keep_lock(dir: &Path, lock: File) {
    HELD.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((dir.to_path_buf(), lock));
}

/// Locks the data directory for this process (or takes over a lock [`keep_lock`]
/// kept); the lock ends with the returned file.
pub(crate) fn lock(dir: &Path) -> std::io::Result<File> {
    {
        let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = held.iter().position(|(d, _)| d == dir) {
            return Ok(held.swap_remove(i).1);
        }
    }
    let file = options()
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOCK))?;
    #[cfg(unix)]
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
        |_| {
            std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                "another tailgate process is using this data directory",
            )
        },
    )?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spool_names_stay_inside_the_directory() {
        let dir = Path::new("/data/jobs");
        for id in ["a", "..a", "a..", ".hidden", "x.spool", "A-b_c.9"] {
            let job = JobId::parse(id).unwrap();
            let path = spool_path(dir, &job);
            assert_eq!(path.parent(), Some(dir), "{id}");
            assert_eq!(
                job_of(path.file_name().unwrap().to_str().unwrap()),
                Some(job)
            );
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a\\b",
            "%2e%2e",
            "a\0b",
            "/etc/passwd",
        ] {
            assert!(JobId::parse(bad).is_err(), "{bad:?} must not name a file");
        }
        assert_eq!(job_of("LOCK"), None);
        assert_eq!(job_of("...spool"), None, "`..` is not a job");
    }
}
