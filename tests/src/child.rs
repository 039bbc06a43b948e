//! A server process the tests start, stop and start again (`redis-server`, SeaweedFS):
//! killed (SIGKILL) and reaped when stopped or dropped, so no test leaves one behind.

use std::process::{Child, Command, ExitStatus};

/// A server process, or none while it is stopped.
#[derive(Default)]
pub struct ChildServer {
    child: Option<Child>,
}

impl ChildServer {
    /// Runs `cmd` (after stopping the process this guard held, if any).
    pub fn spawn(&mut self, cmd: &mut Command, what: &str) {
        self.stop();
        self.child = Some(cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}")));
    }

    /// Kills the process (SIGKILL) and reaps it; nothing when it is stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// How it ended, when it exited by itself.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Its pid while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        self.stop();
    }
}
