//! Running the real `tailgate` binary's client commands from async tests.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// `tailgate ARGS` with a clean environment (only `PATH`), so no `TAILGATE_*` leaks in.
pub fn tailgate(args: &[&str]) -> Command {
    let mut cmd = Command::new(crate::tailgate_bin());
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// A finished process: exit code and output.
#[derive(Debug)]
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// Stderr without tailgate's own `tailgate: ...` messages.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.starts_with("tailgate: "))
            .collect()
    }
}

/// Runs `cmd` to its end within `timeout`.
pub async fn run(mut cmd: Command, timeout: Duration) -> Finished {
    let child = cmd.spawn().expect("spawn tailgate");
    wait(child, timeout).await
}

/// Waits for a spawned child within `timeout`, collecting its output.
pub async fn wait(child: Child, timeout: Duration) -> Finished {
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("tailgate did not finish within {timeout:?}"))
        .expect("wait for tailgate");
    Finished {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A child whose stdout is read line by line as it comes, and stderr collected.
pub struct Running {
    pub child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    stderr: tokio::task::JoinHandle<String>,
    /// Every stdout line received so far.
    pub seen: Vec<String>,
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd.spawn().expect("spawn tailgate");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = tokio::spawn(async move {
            let mut s = String::new();
            let _ =
                tokio::io::AsyncReadExt::read_to_string(&mut BufReader::new(stderr), &mut s).await;
            s
        });
        Self {
            child,
            lines,
            stderr,
            seen: Vec::new(),
        }
    }

    /// Waits until `n` stdout lines in all were received.
    pub async fn lines_until(&mut self, n: usize, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.seen.len() < n {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => self.seen.push(line),
                Ok(None) => panic!(
                    "stdout closed after {} of {n} lines: {:?}",
                    self.seen.len(),
                    self.seen
                ),
                Err(_) => panic!(
                    "only {} of {n} lines within {timeout:?}: {:?}",
                    self.seen.len(),
                    self.seen
                ),
            }
        }
    }

    /// Waits for the exit; returns every stdout line and stderr.
    pub async fn finish(mut self, timeout: Duration) -> Finished {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "tailgate did not finish within {timeout:?}; stdout so far: {:?}",
                    self.seen
                )
            })
            .expect("wait for tailgate");
        while let Some(line) = self.lines.recv().await {
            self.seen.push(line);
        }
        let stderr = self.stderr.await.unwrap_or_default();
        let mut stdout = self.seen.join("\n");
        if !self.seen.is_empty() {
            stdout.push('\n');
        }
        Finished {
            code: status.code(),
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running child")
    }
}
