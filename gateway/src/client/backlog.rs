//! The publisher's unacknowledged records: in memory up to a byte budget, then in a spool
//! file (mode 0600, in the temp dir, deleted on drop), so a long outage neither loses output
//! nor blocks the command producing it.
//!
//! Records get a dense local sequence from 1; the publisher adds its base to make `n`.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::PathBuf;

use bytes::Bytes;

/// Records held in memory before new ones go to the spool file.
pub const DEFAULT_MEMORY_BYTES: usize = 8 * 1024 * 1024;

/// Unacknowledged records, oldest first.
#[derive(Debug)]
pub struct Backlog {
    /// `(local seq, one JSON object without a line end)`, consecutive seqs.
    memory: VecDeque<(u64, Bytes)>,
    memory_bytes: usize,
    memory_limit: usize,
    /// Records after the last one in memory, once memory was full.
    spool: Option<Spool>,
    /// Local seq of the next record pushed.
    next: u64,
    /// Local seqs up to this one are acknowledged.
    acked: u64,
}

impl Backlog {
    pub fn new(memory_limit: usize) -> Self {
        Self {
            memory: VecDeque::new(),
            memory_bytes: 0,
            memory_limit,
            spool: None,
            next: 1,
            acked: 0,
        }
    }

    /// Appends one record (a JSON object); returns its local seq.
    pub fn push(&mut self, record: Bytes) -> io::Result<u64> {
        let seq = self.next;
        self.next += 1;
        let spooling = self.spool.as_ref().is_some_and(|s| s.pending > 0);
        if spooling
            || (self.memory_bytes + record.len() > self.memory_limit && !self.memory.is_empty())
        {
            let spool = match &mut self.spool {
                Some(s) => s,
                None => self.spool.insert(Spool::create()?),
            };
            spool.append(seq, &record)?;
        } else {
            self.memory_bytes += record.len();
            self.memory.push_back((seq, record));
        }
        Ok(seq)
    }

    /// Drops records up to local seq `upto` (acknowledged), then refills memory from the spool.
    pub fn ack(&mut self, upto: u64) -> io::Result<()> {
        let upto = upto.min(self.next - 1);
        if upto <= self.acked {
            return Ok(());
        }
        self.acked = upto;
        while let Some((seq, rec)) = self.memory.front() {
            if *seq > upto {
                break;
            }
            self.memory_bytes -= rec.len();
            self.memory.pop_front();
        }
        self.refill()
    }

    /// The record after local seq `after` if it is in memory.
    pub fn after(&self, after: u64) -> Option<(u64, Bytes)> {
        let first = self.memory.front()?.0;
        let index = after.checked_add(1)?.saturating_sub(first);
        self.memory.get(usize::try_from(index).ok()?).cloned()
    }

    /// Records wait in the spool: the sender should get an acknowledgement to make room.
    pub fn has_spooled(&self) -> bool {
        self.spool.as_ref().is_some_and(|s| s.pending > 0)
    }

    /// No unacknowledged record.
    pub fn is_empty(&self) -> bool {
        self.acked + 1 == self.next
    }

    /// Unacknowledged records.
    pub fn len(&self) -> u64 {
        self.next - 1 - self.acked
    }

    /// The last local seq acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The last local seq pushed.
    pub fn last(&self) -> u64 {
        self.next - 1
    }

    /// Where the spool file is, once there is one.
    pub fn spool_path(&self) -> Option<&std::path::Path> {
        self.spool.as_ref().map(|s| s.path.as_path())
    }

    fn refill(&mut self) -> io::Result<()> {
        let Some(spool) = &mut self.spool else {
            return Ok(());
        };
        while spool.pending > 0 && (self.memory_bytes < self.memory_limit || self.memory.is_empty())
        {
            let (seq, rec) = spool.read_next()?;
            if seq <= self.acked {
                continue;
            }
            self.memory_bytes += rec.len();
            self.memory.push_back((seq, rec));
        }
        if spool.pending == 0 {
            spool.clear()?;
        }
        Ok(())
    }
}

/// An append-only file of `seq record\n` lines, read back from the front.
#[derive(Debug)]
struct Spool {
    file: File,
    path: PathBuf,
    write_pos: u64,
    read_pos: u64,
    /// Records written and not yet read back.
    pending: u64,
}

impl Spool {
    fn create() -> io::Result<Self> {
        let dir = std::env::temp_dir();
        let mut last_err = None;
        for _ in 0..16 {
            let name = format!(
                "tailgate-push-{}-{:016x}.spool",
                std::process::id(),
                rand::random::<u64>()
            );
            let path = dir.join(name);
            let mut options = std::fs::OpenOptions::new();
            options.read(true).write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(&path) {
                Ok(file) => {
                    return Ok(Self {
                        file,
                        path,
                        write_pos: 0,
                        read_pos: 0,
                        pending: 0,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("no spool file name free")))
    }

    fn append(&mut self, seq: u64, record: &[u8]) -> io::Result<()> {
        let mut line = Vec::with_capacity(record.len() + 24);
        line.extend_from_slice(seq.to_string().as_bytes());
        line.push(b' ');
        line.extend_from_slice(record);
        line.push(b'\n');
        self.file.seek(SeekFrom::Start(self.write_pos))?;
        self.file.write_all(&line)?;
        self.write_pos += line.len() as u64;
        self.pending += 1;
        Ok(())
    }

    fn read_next(&mut self) -> io::Result<(u64, Bytes)> {
        self.file.seek(SeekFrom::Start(self.read_pos))?;
        let mut line = Vec::new();
        BufReader::new(&self.file).read_until(b'\n', &mut line)?;
        self.read_pos += line.len() as u64;
        self.pending -= 1;
        let corrupt = || io::Error::new(io::ErrorKind::InvalidData, "spool file is corrupt");
        if line.pop() != Some(b'\n') {
            return Err(corrupt());
        }
        let space = line.iter().position(|&b| b == b' ').ok_or_else(corrupt)?;
        let seq = std::str::from_utf8(&line[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(corrupt)?;
        Ok((seq, Bytes::copy_from_slice(&line[space + 1..])))
    }

    /// Empties the file once everything in it was read back.
    fn clear(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.write_pos = 0;
        self.read_pos = 0;
        Ok(())
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u64) -> Bytes {
        Bytes::from(format!("{{\"line\":\"record {i:04}\"}}"))
    }

    #[test]
    fn overflow_goes_to_a_private_spool_and_comes_back_in_order() {
        let mut b = Backlog::new(100);
        for i in 1..=50 {
            assert_eq!(b.push(rec(i)).unwrap(), i);
        }
        let path = b.spool_path().expect("spooled").to_path_buf();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(b.has_spooled());
        let mut seen = Vec::new();
        let mut cursor = 0;
        while !b.is_empty() {
            while let Some((seq, r)) = b.after(cursor) {
                assert_eq!(r, rec(seq));
                seen.push(seq);
                cursor = seq;
            }
            b.ack(cursor).unwrap();
            if cursor >= 20 && b.last() == 50 {
                b.push(rec(51)).unwrap();
            }
        }
        assert_eq!(seen, (1..=51).collect::<Vec<_>>());
        assert!(!b.has_spooled());
        drop(b);
        assert!(!path.exists(), "spool removed on drop");
    }

    #[test]
    fn resend_starts_after_the_ack() {
        let mut b = Backlog::new(1 << 20);
        for i in 1..=5 {
            b.push(rec(i)).unwrap();
        }
        b.ack(2).unwrap();
        assert_eq!(b.after(0).map(|r| r.0), Some(3), "acked records are gone");
        assert_eq!(b.after(4).map(|r| r.0), Some(5));
        assert_eq!(b.after(5), None);
        assert_eq!(b.len(), 3);
        b.ack(99).unwrap();
        assert!(b.is_empty());
        assert_eq!(b.acked(), 5);
    }
}
