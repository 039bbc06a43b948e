//! `--procs N`: the parent re-executes itself N times with the hidden `--child` flag and spreads
//! the readers over the children. Line protocol: the parent writes the task (JSON) and later
//! `end {published}` on a child's stdin; the child writes `progress {live}` lines and finally
//! `result {shard result}` on its stdout. Histograms travel V2-serialised, base64-encoded.

use std::io::{BufRead, Write};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;

use crate::cli::Settings;
use crate::fleet::LocalFleet;
use crate::plan::PhaseSpec;
use crate::tally::{Live, ShardResult};
use crate::target::TargetClient;

/// Why the child processes failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcsError {
    #[error("cannot find our own executable")]
    CurrentExe(#[source] std::io::Error),
    #[error("cannot start child process {0}")]
    Spawn(usize, #[source] std::io::Error),
    #[error("cannot talk to child process {0}")]
    Pipe(usize, #[source] std::io::Error),
    #[error("child process {0} ended without a result")]
    NoResult(usize),
}

/// What a child is asked to do.
#[derive(Debug, Serialize, Deserialize)]
struct ChildTask {
    settings: Settings,
    phase: PhaseSpec,
    shard: usize,
    shards: usize,
}

/// Readers running in child processes.
#[derive(Debug)]
pub struct ChildFleet {
    children: Vec<ChildHandle>,
}

#[derive(Debug)]
struct ChildHandle {
    process: Child,
    /// Where the parent writes `end`.
    stdin: ChildStdin,
    /// Latest `progress` line of this child.
    live: Arc<Mutex<Live>>,
    /// The child's `result`, once it arrives.
    result_rx: oneshot::Receiver<ShardResult>,
}

impl ChildFleet {
    pub async fn start(settings: &Settings, phase: &PhaseSpec) -> Result<Self, ProcsError> {
        let exe = std::env::current_exe().map_err(ProcsError::CurrentExe)?;
        let shards = settings.procs;
        let mut children = Vec::with_capacity(shards);
        for shard in 0..shards {
            let mut process = Command::new(&exe)
                .arg("--child")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| ProcsError::Spawn(shard, e))?;
            let (Some(mut stdin), Some(stdout)) = (process.stdin.take(), process.stdout.take())
            else {
                return Err(ProcsError::NoResult(shard));
            };
            let task = ChildTask {
                settings: settings.clone(),
                phase: phase.clone(),
                shard,
                shards,
            };
            let mut line = serde_json::to_vec(&task).unwrap_or_default();
            line.push(b'\n');
            stdin
                .write_all(&line)
                .await
                .map_err(|e| ProcsError::Pipe(shard, e))?;
            let live = Arc::new(Mutex::new(Live::default()));
            let (result_tx, result_rx) = oneshot::channel();
            tokio::spawn(read_child_stdout(stdout, live.clone(), result_tx));
            children.push(ChildHandle {
                process,
                stdin,
                live,
                result_rx,
            });
        }
        Ok(Self { children })
    }

    /// Reads the sum of the children's latest live counters.
    pub fn live_source(&self) -> impl Fn() -> Live + Send + Sync + 'static {
        let lives: Vec<Arc<Mutex<Live>>> = self.children.iter().map(|c| c.live.clone()).collect();
        move || {
            let mut total = Live::default();
            for live in &lives {
                total.add(&live.lock().unwrap_or_else(|p| p.into_inner()));
            }
            total
        }
    }

    /// Tells every child that publishing is over.
    pub async fn end(&mut self, published: &[u64]) -> Result<(), ProcsError> {
        let mut line = b"end ".to_vec();
        line.extend(serde_json::to_vec(published).unwrap_or_default());
        line.push(b'\n');
        for (i, c) in self.children.iter_mut().enumerate() {
            c.stdin
                .write_all(&line)
                .await
                .map_err(|e| ProcsError::Pipe(i, e))?;
        }
        Ok(())
    }

    /// Collects every child's result and reaps the children.
    pub async fn finish(self) -> Result<Vec<ShardResult>, ProcsError> {
        let mut results = Vec::with_capacity(self.children.len());
        for (i, mut c) in self.children.into_iter().enumerate() {
            let result = c.result_rx.await.map_err(|_| ProcsError::NoResult(i))?;
            results.push(result);
            drop(c.stdin);
            let _ = tokio::time::timeout(Duration::from_secs(5), c.process.wait()).await;
        }
        Ok(results)
    }
}

async fn read_child_stdout(
    stdout: tokio::process::ChildStdout,
    live: Arc<Mutex<Live>>,
    result_tx: oneshot::Sender<ShardResult>,
) {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(json) = line.strip_prefix("progress ") {
            if let Ok(now) = serde_json::from_str::<Live>(json) {
                *live.lock().unwrap_or_else(|p| p.into_inner()) = now;
            }
        } else if let Some(json) = line.strip_prefix("result ") {
            if let Ok(result) = serde_json::from_str::<ShardResult>(json) {
                let _ = result_tx.send(result);
            }
            return;
        }
    }
}

/// Entry point of a `--child` process: runs its share of the readers and reports on stdout.
pub fn child_main() -> ExitCode {
    let mut first = String::new();
    let stdin = std::io::stdin();
    if stdin.lock().read_line(&mut first).is_err() {
        eprintln!("tailgate-loadtest child: no task on stdin");
        return ExitCode::from(70);
    }
    let task: ChildTask = match serde_json::from_str(&first) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tailgate-loadtest child: bad task: {e}");
            return ExitCode::from(70);
        }
    };
    let threads = if task.settings.threads == 0 {
        1
    } else {
        task.settings.threads
    };
    let runtime = match runtime(threads, "tailgate-loadtest child") {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(run_child(task))
}

async fn run_child(task: ChildTask) -> ExitCode {
    let target = match TargetClient::new(&task.settings) {
        Ok(t) => Arc::new(t),
        Err(e) => {
            eprintln!("tailgate-loadtest child: {e}");
            return ExitCode::from(70);
        }
    };
    let fleet =
        match LocalFleet::start(&task.settings, target, &task.phase, task.shard, task.shards) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("tailgate-loadtest child: {e}");
                return ExitCode::from(70);
            }
        };
    let tally = fleet.tally.clone();
    let progress = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            emit("progress", &tally.live());
        }
    });
    let (end_tx, end_rx) = oneshot::channel::<Vec<u64>>();
    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(json) = line.strip_prefix("end ") {
                if let Ok(published) = serde_json::from_str::<Vec<u64>>(json) {
                    let _ = end_tx.send(published);
                    return;
                }
            }
        }
        // The parent went away: nothing left to report to.
        std::process::exit(2);
    });
    let Ok(published) = end_rx.await else {
        return ExitCode::from(2);
    };
    fleet.end(published);
    let result = fleet.finish().await;
    progress.abort();
    emit("result", &result);
    ExitCode::SUCCESS
}

/// Writes one protocol line to stdout, whole.
fn emit<T: Serialize>(tag: &str, value: &T) {
    let Ok(json) = serde_json::to_string(value) else {
        return;
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{tag} {json}");
    let _ = out.flush();
}

/// A runtime of `threads` workers, or exit code 70 (`EX_SOFTWARE`) after saying why not.
pub fn runtime(threads: usize, who: &str) -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("{who}: cannot start a runtime: {e}");
            ExitCode::from(70)
        })
}
