//! The README's shell examples run as written: every block fenced as `sh` is executed with
//! `sh -e`, in order, after the export lines a real `tailgate serve --dev` prints, with
//! `tailgate` on the `PATH`; each must exit 0. (`shell` blocks need hosts or files of the
//! reader's own and are not run.)

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

const README: &str = include_str!("../../README.md");

/// The `sh` blocks of `markdown`, with the line each starts on.
fn sh_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String, usize)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match (&mut current, trimmed.strip_prefix("```")) {
            (None, Some(info)) if info.trim() == "sh" => {
                current = Some((i + 1, String::new(), indent))
            }
            (Some(_), Some("")) => {
                let (start, text, _) = current.take().unwrap_or_default();
                blocks.push((start, text));
            }
            (Some((_, text, indent)), _) => {
                text.push_str(line.get(*indent..).unwrap_or(line.trim_start()));
                text.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

/// Kills the gateway however the test ends.
struct Gateway(std::process::Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sh_blocks_are_found() {
    let blocks = sh_blocks("a\n```sh\necho 1\n```\n```shell\nno\n```\n  ```sh\n  echo 2\n  ```\n");
    assert_eq!(
        blocks,
        vec![(2, "echo 1\n".to_string()), (8, "echo 2\n".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sh_block_runs_in_order_after_the_dev_banner() {
    if !tailgate_tests::programs_present("the README examples", &["curl"]) {
        return;
    }
    let blocks = sh_blocks(README);
    assert!(
        blocks.len() >= 9,
        "the README's examples are `sh` blocks: {}",
        blocks.len()
    );

    let work = std::env::temp_dir().join(format!("tailgate-readme-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let bin = tailgate_tests::tailgate_bin();
    let path = format!(
        "{}:{}",
        bin.parent().expect("bin dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Twice, across a restart on the same data directory: the examples hold no state of
    // their own (job ids come from each start's $JOB), so a second pass passes too.
    for pass in 1..=2 {
        let mut child = std::process::Command::new(&bin)
            .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
            .current_dir(&work)
            .env_clear()
            .env("PATH", &path)
            .env("TAILGATE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tailgate");
        let stdout = child.stdout.take().expect("stdout");
        let _gateway = Gateway(child);
        // Read stdout to its end in the background, so the gateway never writes to a closed pipe.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let exports: Vec<String> = rx
            .iter()
            .filter(|l| l.starts_with("export "))
            .take(3)
            .collect();
        assert_eq!(exports.len(), 3, "{exports:?}");
        let prelude = exports.join("\n");

        for (line, block) in &blocks {
            let script = format!("{prelude}\n{block}");
            let run = Command::new("sh")
                .args(["-e", "-c", &script])
                .current_dir(&work)
                .env_clear()
                .env("PATH", &path)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output();
            let out = tokio::time::timeout(Duration::from_secs(60), run)
                .await
                .unwrap_or_else(|_| {
                    panic!("pass {pass}, README.md:{line} did not finish:\n{block}")
                })
                .expect("run sh");
            assert!(
                out.status.success(),
                "pass {pass}, README.md:{line} exited {:?}:\n{block}\nstdout: {}\nstderr: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    // The tail block wrote the log so far: the examples really ran against the gateway.
    let so_far = std::fs::read_to_string(work.join("so-far.log")).unwrap_or_default();
    assert!(so_far.contains("compiling"), "{so_far}");
    let _ = std::fs::remove_dir_all(&work);
}
