//! The real `tailgate serve` binary as a child process: its address from stdout, its log
//! lines from stderr as they come, and signals (SIGTERM, SIGHUP).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// A running gateway process; killed when dropped.
pub struct Gateway {
    pub child: Child,
    pub addr: SocketAddr,
    /// The metrics listener's address, when `--metrics-listen` was given.
    pub metrics_addr: Option<SocketAddr>,
    stderr: mpsc::UnboundedReceiver<String>,
    /// Every stderr line read so far.
    pub log: Vec<String>,
}

impl Gateway {
    /// `tailgate serve --listen 127.0.0.1:0 ARGS` with `TAILGATE_LOG=info` (plus `env`),
    /// memory only unless ARGS has `--data-dir`, once it prints its address.
    pub async fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(crate::tailgate_bin());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TAILGATE_LOG", "info")
            .envs(env.iter().copied())
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            // No data directory in the test's working directory unless a test names one.
            .args((!args.contains(&"--data-dir")).then_some("--memory-only"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn tailgate serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(line);
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut addr = None;
        let mut metrics_addr = None;
        let want_metrics = args.contains(&"--metrics-listen");
        let read = async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.strip_prefix("tailgate metrics on http://") {
                    metrics_addr = rest.trim_end_matches("/metrics").parse().ok();
                }
                let rest = line
                    .strip_prefix("tailgate listening on http://")
                    .or_else(|| line.strip_prefix("tailgate listening on https://"));
                if let Some(rest) = rest {
                    addr = rest.parse().ok();
                }
                if addr.is_some() && (!want_metrics || metrics_addr.is_some()) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(20), read).await;
        let mut gateway = Self {
            child,
            addr: addr.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            metrics_addr,
            stderr: rx,
            log: Vec::new(),
        };
        if addr.is_none() {
            let status = gateway.child.try_wait().ok().flatten();
            gateway.drain_log();
            panic!(
                "tailgate did not start ({status:?}):\n{}",
                gateway.log.join("\n")
            );
        }
        // Drain stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        gateway
    }

    /// Sends `signal` (`TERM`, `HUP`...) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal}");
    }

    fn drain_log(&mut self) {
        while let Ok(line) = self.stderr.try_recv() {
            self.log.push(line);
        }
    }

    /// Waits for a stderr line containing `needle`; returns it.
    pub async fn wait_log(&mut self, needle: &str, timeout: Duration) -> String {
        let found = tokio::time::timeout(timeout, async {
            while let Some(line) = self.stderr.recv().await {
                self.log.push(line.clone());
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => {
                self.drain_log();
                panic!("no log line with {needle:?}:\n{}", self.log.join("\n"))
            }
        }
    }

    /// SIGTERM, then the exit code (within `timeout`).
    pub async fn stop(mut self, timeout: Duration) -> Option<i32> {
        self.signal("TERM");
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .expect("tailgate exited in time")
            .expect("wait");
        status.code()
    }
}
