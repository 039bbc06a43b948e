//! The server's cost from Linux `/proc`: CPU time (utime + stime of `/proc/PID/stat`) and
//! resident memory (`VmRSS` of `/proc/PID/status`).

use std::path::PathBuf;

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
}

/// Reads the counters of process `pid`.
pub fn sample(pid: u32) -> Result<Sample, StatsError> {
    let stat_path = PathBuf::from(format!("/proc/{pid}/stat"));
    let stat = read(&stat_path)?;
    let status_path = PathBuf::from(format!("/proc/{pid}/status"));
    let status = read(&status_path)?;
    Ok(Sample {
        cpu_seconds: parse_cpu_seconds(&stat).ok_or(StatsError::Format(stat_path))?,
        rss_bytes: parse_rss_bytes(&status).ok_or(StatsError::Format(status_path))?,
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
        });
        acc.cpu_seconds += s.cpu_seconds;
        acc.rss_bytes += s.rss_bytes;
    }
    Ok(sum)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_status() {
        let stat = "1234 (tail gate) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0 4 0 100 200 300";
        assert_eq!(parse_cpu_seconds(stat), Some(4.0));
        let status = "Name:\ttailgate\nVmPeak:\t  9000 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(parse_rss_bytes(status), Some(2 * 1024 * 1024));
    }

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_bytes > 0);
        assert!(s.cpu_seconds >= 0.0);
    }
}
