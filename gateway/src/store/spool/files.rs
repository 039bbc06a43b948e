//! The data directory's files: created private (directories 0700, files 0600), named
//! only from validated job ids, opened without following symlinks and refused unless
//! regular (a FIFO planted in the directory cannot hang start-up), and the directory
//! locked through its own descriptor so two gateways never share it.

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
/// A spool's suffix.
const SPOOL_SUFFIX: &str = ".spool";
/// What a damaged spool is renamed to (after the job id and a timestamp) when its intact
/// frames are copied into a clean one; recovery never reads it again.
pub(crate) const DAMAGED_SUFFIX: &str = ".damaged";

/// Creates `dir` (and parents) private to this user, or checks that it exists.
pub(crate) fn create_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(dir)
}

/// Options every data file is opened with: private when created, never through a
/// symlink, and non-blocking so that opening a FIFO fails or returns at once.
fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use rustix::fs::OFlags;
        options
            .mode(0o600)
            .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32);
    }
    options
}

/// `file` if it is a regular file; anything else (a FIFO, a device, a directory) is
/// refused before a byte is read or written.
fn regular(file: File) -> std::io::Result<File> {
    if file.metadata()?.is_file() {
        Ok(file)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ))
    }
}

/// Opens a data file for reading.
pub(crate) fn open_read(path: &Path) -> std::io::Result<File> {
    regular(options().read(true).open(path)?)
}

/// Reads a whole small data file (a tombstone); a larger one is refused, not read.
pub(crate) fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    const MAX: u64 = 64 * 1024;
    let mut out = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(open_read(path)?, MAX + 1),
        &mut out,
    )?;
    if out.len() as u64 > MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "larger than a tombstone can be",
        ));
    }
    Ok(out)
}

/// Writes a new file (replacing any) with `bytes`.
pub(crate) fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    create(path)?.write_all(bytes)
}

/// Creates (or empties) a data file for writing.
pub(crate) fn create(path: &Path) -> std::io::Result<File> {
    let file = regular(
        options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?,
    )?;
    file.set_len(0)?;
    Ok(file)
}

/// Opens an existing spool for appending, which writes at offsets the spool keeps
/// ([`write_at`]) or maps it (its append window), so it is opened for reading and writing,
/// not `O_APPEND`. A deleted spool is not created again.
pub(crate) fn open_write(path: &Path) -> std::io::Result<File> {
    regular(options().read(true).write(true).open(path)?)
}

/// Writes all of `bytes` at offset `at` of `file` (`pwrite`).
#[cfg(unix)]
pub(crate) fn write_at(file: &File, bytes: &[u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, at)
}

/// Writes all of `bytes` at offset `at` of `file`.
#[cfg(not(unix))]
pub(crate) fn write_at(mut file: &File, bytes: &[u8], at: u64) -> std::io::Result<()> {
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(at))?;
    file.write_all(bytes)
}

/// Opens a spool for reading and writing in place (cutting a torn tail).
pub(crate) fn open_rw(path: &Path) -> std::io::Result<File> {
    regular(options().read(true).write(true).open(path)?)
}

/// Forces `file`'s data to disk (`fdatasync`). Tests can slow it ([`hooks`]).
pub(crate) fn sync_data(file: &File, path: &Path) -> std::io::Result<()> {
    #[cfg(test)]
    hooks::before_fsync(path);
    #[cfg(not(test))]
    let _ = path;
    file.sync_data()
}

/// Forces `dir`'s entries to disk, so a file created, renamed or removed in it stays so
/// after a power loss.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(test)]
    hooks::before_fsync(dir);
    File::open(dir)?.sync_all()
}

/// A data directory anyone but its owner may write to: others could plant or replace
/// files in it.
#[cfg(unix)]
pub(crate) fn is_shared_writable(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o022 != 0)
}

#[cfg(not(unix))]
pub(crate) fn is_shared_writable(_dir: &Path) -> bool {
    false
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
/// kept); the lock ends with the returned file. The lock is on the directory itself,
/// not on a file in it, so nothing can be unlinked to break it.
pub(crate) fn lock(dir: &Path) -> std::io::Result<File> {
    {
        let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = held.iter().position(|(d, _)| d == dir) {
            return Ok(held.swap_remove(i).1);
        }
    }
    let file = File::open(dir)?;
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
pub(crate) mod hooks {
    //! Fault injection for tests: a hook runs before each fsync of a path under a
    //! directory, so a test can hold an fsync in flight.

    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex};

    type Hook = Arc<dyn Fn(&Path) + Send + Sync>;

    static HOOKS: Mutex<Vec<(PathBuf, Hook)>> = Mutex::new(Vec::new());

    /// Runs `hook` before every fsync of a path under `dir` (until the test ends).
    pub(crate) fn on_fsync(dir: &Path, hook: impl Fn(&Path) + Send + Sync + 'static) {
        HOOKS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((dir.to_path_buf(), Arc::new(hook)));
    }

    pub(super) fn before_fsync(path: &Path) {
        let hooks: Vec<Hook> = HOOKS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(dir, _)| path.starts_with(dir))
            .map(|(_, hook)| Arc::clone(hook))
            .collect();
        for hook in hooks {
            hook(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job_log::tests::TempDir;

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
        assert_eq!(job_of("a.spool.damaged-17"), None, "set aside, not a job");
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_and_fifos_are_refused_without_blocking() {
        let dir = TempDir::new("files-nofollow");
        std::fs::create_dir_all(&dir.0).unwrap();
        let target = dir.0.join("target");
        std::fs::write(&target, b"secret").unwrap();
        let link = dir.0.join("link.spool");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(open_read(&link).is_err(), "read through a symlink");
        assert!(open_write(&link).is_err(), "append through a symlink");
        assert!(write_new(&link, b"x").is_err(), "write through a symlink");
        assert_eq!(std::fs::read(&target).unwrap(), b"secret");

        let fifo = dir.0.join("fifo.spool");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        // Each of these would block forever on a FIFO with no other end.
        assert!(open_read(&fifo).is_err());
        assert!(read(&fifo).is_err());
        assert!(open_write(&fifo).is_err());
        assert!(write_new(&fifo, b"x").is_err());
    }

    #[test]
    fn the_lock_survives_its_file_being_deleted() {
        let dir = TempDir::new("files-lock");
        std::fs::create_dir_all(&dir.0).unwrap();
        let held = lock(&dir.0).unwrap();
        for name in ["LOCK", ".lock"] {
            let _ = std::fs::remove_file(dir.0.join(name));
        }
        assert_eq!(
            lock(&dir.0).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock,
            "a second user of the directory"
        );
        drop(held);
        lock(&dir.0).expect("free again once the first lock ends");
    }
}
