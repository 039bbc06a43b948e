//! The real `tailgate serve` process, for what only a process shows: kill -9 and restart
//! on the same data directory, exit codes, resident memory.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("tailgate-it-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `tailgate serve` on an ephemeral loopback port.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    /// Everything it printed on stdout so far.
    pub stdout: Arc<Mutex<Vec<String>>>,
    args: Vec<String>,
}

/// The flags every test daemon gets: the test keys, and room for the many streams and
/// uploads one test subject opens.
pub fn test_args() -> Vec<String> {
    [
        "--jwt-secret",
        crate::SECRET,
        "--jwt-issuer",
        crate::ISSUER,
        "--jwt-audience",
        crate::AUDIENCE,
        "--max-streams-per-subject",
        "100000",
        "--max-uploads-per-subject",
        "100000",
        // Tests scrape the main listener; off by default (tests/tests/ops.rs checks that).
        "--metrics-public",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl Daemon {
    /// Starts `tailgate serve --listen 127.0.0.1:0 ARGS` and waits until it listens.
    pub fn start(args: &[String]) -> Self {
        Self::try_start(args).unwrap_or_else(|(code, _)| panic!("tailgate exited early: {code:?}"))
    }

    /// Like [`Daemon::start`], or the exit code and stderr of a process that refused to
    /// start.
    pub fn try_start(args: &[String]) -> Result<Self, (Option<i32>, String)> {
        Self::try_start_with_env(args, &[])
    }

    /// Like [`Daemon::try_start`], with extra environment variables.
    pub fn try_start_with_env(
        args: &[String],
        env: &[(&str, &str)],
    ) -> Result<Self, (Option<i32>, String)> {
        let mut child = Command::new(crate::tailgate_bin())
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env(
                "TAILGATE_LOG",
                std::env::var("TAILGATE_LOG").unwrap_or("warn".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tailgate");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let mut line = String::new();
        let addr = loop {
            line.clear();
            if out.read_line(&mut line).unwrap_or(0) == 0 {
                let status = child.wait().expect("wait");
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Err((status.code(), err));
            }
            stdout.lock().unwrap().push(line.trim_end().to_string());
            if let Some(rest) = line.trim().strip_prefix("tailgate listening on http://") {
                break rest.parse().expect("address");
            }
        };
        let sink = Arc::clone(&stdout);
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        // Drain stderr so the child never blocks on a full pipe.
        if let Some(err) = child.stderr.take() {
            std::thread::spawn(move || {
                for l in BufReader::new(err).lines().map_while(Result::ok) {
                    eprintln!("[tailgate] {l}");
                }
            });
        }
        Ok(Self {
            child,
            addr,
            stdout,
            args: args.to_vec(),
        })
    }

    /// Kills the process with SIGKILL: no drain, no flush.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills it with SIGKILL and starts it again with the same flags (a new port).
    pub fn crash_and_restart(&mut self) {
        self.kill9();
        *self = Self::start(&self.args);
    }

    /// Resident memory of the process, from `/proc`.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// Peak resident memory of the process so far (`VmHWM`), from `/proc`.
    pub fn peak_rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}
