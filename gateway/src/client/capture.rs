//! How `push` reads a command's output: by default one pipe for stdout and stderr, so lines
//! arrive in the order the command wrote them (as a terminal shows them); `--tty` a
//! pseudo-terminal (line-buffered output and colours, as in an interactive shell);
//! `--separate-streams` two pipes, keeping which stream a line came from.

use std::io;
use std::process::Stdio;
use std::str::FromStr;

use tokio::io::AsyncRead;

/// Which of the three ways the output is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    /// One pipe for both: the command's own order; every line is `stdout`.
    Merged,
    /// A pseudo-terminal for both: the command's order, and it sees a terminal.
    Tty,
    /// Two pipes: `stdout` and `stderr` lines, in the order tailgate reads them.
    Separate,
}

impl FromStr for Capture {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "merged" => Ok(Self::Merged),
            "tty" => Ok(Self::Tty),
            "separate" => Ok(Self::Separate),
            other => Err(format!("{other:?}: expected merged, tty or separate")),
        }
    }
}

/// A reader of the command's output and the stream its lines are sent as.
pub type Output = (Box<dyn AsyncRead + Unpin + Send>, &'static str);

/// The parent's read end, made before the command is spawned.
pub enum ReadEnd {
    Pipe(tokio::net::unix::pipe::Receiver),
    Tty(tokio::fs::File),
    /// Taken from the child after the spawn.
    Separate,
}

/// Points the command's stdout and stderr at a new pipe or terminal and returns the read
/// end. The command must be dropped after the spawn, so that the write ends close.
pub fn prepare(cmd: &mut tokio::process::Command, mode: Capture) -> io::Result<ReadEnd> {
    match mode {
        Capture::Separate => {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            Ok(ReadEnd::Separate)
        }
        Capture::Merged => {
            let (tx, rx) = tokio::net::unix::pipe::pipe()?;
            let write = tx.into_blocking_fd()?;
            cmd.stdout(Stdio::from(write.try_clone()?))
                .stderr(Stdio::from(write));
            Ok(ReadEnd::Pipe(rx))
        }
        Capture::Tty => {
            let (master, slave) = open_pty()?;
            cmd.stdout(Stdio::from(slave.try_clone()?))
                .stderr(Stdio::from(slave));
            Ok(ReadEnd::Tty(tokio::fs::File::from_std(
                std::fs::File::from(master),
            )))
        }
    }
}

/// The readers of a spawned command's output.
pub fn outputs(end: ReadEnd, child: &mut tokio::process::Child) -> Vec<Output> {
    match end {
        ReadEnd::Pipe(rx) => vec![(Box::new(rx), "stdout")],
        ReadEnd::Tty(file) => vec![(Box::new(file), "stdout")],
        ReadEnd::Separate => {
            let mut out: Vec<Output> = Vec::new();
            if let Some(s) = child.stdout.take() {
                out.push((Box::new(s), "stdout"));
            }
            if let Some(s) = child.stderr.take() {
                out.push((Box::new(s), "stderr"));
            }
            out
        }
    }
}

/// Whether a read error only means the command's side closed (a pseudo-terminal's master
/// reads `EIO` once every slave end is closed).
pub fn is_end(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error())
}

/// Terminal size the command sees under `--tty`.
const TTY_COLUMNS: u16 = 160;
const TTY_ROWS: u16 = 50;

/// A new pseudo-terminal: (master, slave).
fn open_pty() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use rustix::fs::{Mode, OFlags};
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let size = rustix::termios::Winsize {
        ws_row: TTY_ROWS,
        ws_col: TTY_COLUMNS,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let _ = rustix::termios::tcsetwinsize(&slave, size);
    Ok((master, slave))
}
