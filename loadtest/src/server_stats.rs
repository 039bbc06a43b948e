//! The server's cost from Linux `/proc`: CPU time (utime + stime of `/proc/PID/stat`),
//! resident memory (`VmRSS` of `/proc/PID/status`) and threads (`Threads:` of the same file,
//! sampled through the run by [`ThreadWatch`] to catch the peak).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Clock ticks per second of `/proc/PID/stat` times (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// Why the server's numbers could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} has an unexpected format")]
    Format(PathBuf),
}

/// One reading of the server's counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// User plus system CPU seconds since the process started.
    pub cpu_seconds: f64,
    /// Resident set size.
    pub rss_bytes: u64,
    /// Threads of the process (its tasks in `/proc/PID/task`).
    pub threads: u64,
}

/// Reads the counters of process `pid`.
pub fn sample(pid: u32) -> Result<Sample, StatsError> {
    let stat_path = PathBuf::from(format!("/proc/{pid}/stat"));
    let stat = read(&stat_path)?;
    let status_path = PathBuf::from(format!("/proc/{pid}/status"));
    let status = read(&status_path)?;
    Ok(Sample {
        cpu_seconds: parse_cpu_seconds(&stat).ok_or(StatsError::Format(stat_path))?,
        rss_bytes: parse_rss_bytes(&status).ok_or(StatsError::Format(status_path.clone()))?,
        threads: parse_threads(&status).ok_or(StatsError::Format(status_path))?,
    })
}

/// The counters of every process in `pids`, summed (`None` for none).
pub fn sample_sum(pids: &[u32]) -> Result<Option<Sample>, StatsError> {
    let mut sum: Option<Sample> = None;
    for &pid in pids {
        let s = sample(pid)?;
        let acc = sum.get_or_insert(Sample {
            cpu_seconds: 0.0,
            rss_bytes: 0,
            threads: 0,
        });
        acc.cpu_seconds += s.cpu_seconds;
        acc.rss_bytes += s.rss_bytes;
        acc.threads += s.threads;
    }
    Ok(sum)
}

/// The CPU seconds of each process in `pids`, in order.
pub fn cpu_each(pids: &[u32]) -> Result<Vec<f64>, StatsError> {
    pids.iter()
        .map(|&pid| sample(pid).map(|s| s.cpu_seconds))
        .collect()
}

/// How often [`ThreadWatch`] reads the thread counts: often enough to catch a burst of
/// blocking threads (Tokio keeps an idle one 10 s), cheap enough (one small file per process).
const THREAD_SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// The highest thread count of each process seen while the watch runs (a background task
/// reading `/proc/PID/status` every [`THREAD_SAMPLE_EVERY`]).
#[derive(Debug)]
pub struct ThreadWatch {
    /// Peak per process, in the order of the pids given.
    peaks: Arc<Vec<AtomicU64>>,
    task: tokio::task::JoinHandle<()>,
}

impl ThreadWatch {
    /// Starts watching `pids` (nothing to watch: the peaks stay empty).
    pub fn start(pids: &[u32]) -> Self {
        let peaks: Arc<Vec<AtomicU64>> = Arc::new(pids.iter().map(|_| AtomicU64::new(0)).collect());
        let pids = pids.to_vec();
        let watched = peaks.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(THREAD_SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                for (pid, peak) in pids.iter().zip(watched.iter()) {
                    if let Some(n) = threads(*pid) {
                        peak.fetch_max(n, Ordering::Relaxed);
                    }
                }
            }
        });
        Self { peaks, task }
    }

    /// Stops the watch and gives the peak thread count per process.
    pub fn finish(self) -> Vec<u64> {
        self.task.abort();
        self.peaks
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .collect()
    }
}

impl Drop for ThreadWatch {
    /// A run that fails half-way stops the watch too.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The thread count of `pid`, if it can be read.
fn threads(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_threads(&status)
}

fn read(path: &PathBuf) -> Result<String, StatsError> {
    std::fs::read_to_string(path).map_err(|source| StatsError::Read {
        path: path.clone(),
        source,
    })
}

/// utime + stime (fields 14 and 15) in seconds. The command name (field 2) may contain spaces
/// and parentheses, so fields are counted after its last `)`.
fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    // After `)`: field 3 (state) is first, so utime (14) is the 12th, stime (15) the 13th.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / CLOCK_TICKS_PER_SEC)
}

fn parse_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn parse_threads(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("Threads:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_status() {
        let stat = "1234 (tail gate) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0 4 0 100 200 300";
        assert_eq!(parse_cpu_seconds(stat), Some(4.0));
        let status = "Name:\ttailgate\nVmPeak:\t  9000 kB\nVmRSS:\t    2048 kB\nThreads:\t7\n";
        assert_eq!(parse_rss_bytes(status), Some(2 * 1024 * 1024));
        assert_eq!(parse_threads(status), Some(7));
        assert_eq!(parse_threads("Name:\tx\n"), None);
    }

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_bytes > 0);
        assert!(s.cpu_seconds >= 0.0);
        assert!(s.threads >= 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn thread_watch_sees_a_thread_that_came_and_went() {
        let watch = ThreadWatch::start(&[std::process::id()]);
        let before = threads(std::process::id()).unwrap();
        // A thread that lives until the watch has seen it, then ends.
        let (seen_tx, seen_rx) = std::sync::mpsc::channel::<()>();
        let extra = std::thread::spawn(move || seen_rx.recv().ok());
        let seen = tokio::time::timeout(Duration::from_secs(10), async {
            while watch.peaks[0].load(Ordering::Relaxed) <= before {
                tokio::time::sleep(THREAD_SAMPLE_EVERY).await;
            }
        })
        .await;
        assert!(seen.is_ok(), "the watch never saw the extra thread");
        seen_tx.send(()).unwrap();
        extra.join().unwrap();
        let peaks = watch.finish();
        assert_eq!(peaks.len(), 1);
        assert!(peaks[0] > before, "peak {} not above {before}", peaks[0]);
    }
}
