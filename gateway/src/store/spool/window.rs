//! A running job's append window: the [`WINDOW`] bytes of its spool file where the next
//! appends go, allocated on disk and mapped shared, so an append that fits is a copy into
//! the page cache instead of a `write`. A `write` to a spool cost 2.6-3 us of kernel time
//! (half of it marking the inode dirty for the new mtime), the largest part of what the
//! spool added per append; a copy into the mapping costs nothing per append beyond the copy,
//! and a page fault once per page and per writeback.
//!
//! It keeps the spool's promises: a copy into a shared mapping is in the page cache at once,
//! as a `write` would be, so it survives the process (`kill -9`); `fdatasync` and `syncfs`
//! write mapped pages back like written ones. The window is allocated (`fallocate`) before it
//! is mapped, so a write to it never finds the disk full (which would be `SIGBUS`, not an
//! error); a file that cannot be allocated or mapped (a full disk, a filesystem without
//! `fallocate`) falls back to `write` with its errors. Past the records, the file holds the
//! rest of the window as zeros: recovery reads an all-zero tail as the end of the log, and
//! the job trims it when it finishes or the gateway shuts down. The one thing `write` would
//! survive and this does not is the file being cut short under the running gateway by
//! someone else (the data directory is private and locked): that is `SIGBUS`.
//!
//! The only `unsafe` in the crate: mapping, copying and unmapping, here.
#![allow(unsafe_code)]

use std::fs::File;

/// Bytes mapped at a time, at an offset that is a multiple of it: a multiple of the page
/// size (4 KiB or 16 KiB). A bound on what a running job holds mapped (its RSS) and
/// allocated past its records.
pub(crate) const WINDOW: u64 = 16 * 1024;

/// The largest append copied into a window; larger ones are written. Mapping a window
/// costs three syscalls (`fallocate`, `mmap`, `munmap`, whose TLB flush interrupts the
/// other CPUs) and a fault per page, which a window of small appends (the ci shape's one
/// line each, about 80 a window) spreads thin; one upload at full speed appends batches of
/// many KiB, which a window would hold one or two of (measured on `--rate max`: the writer
/// thread's CPU 1.12 -> 1.89 s with every fitting append copied, 23,000 page faults).
pub(crate) const SMALL: u64 = WINDOW / 8;

/// A window that took fewer appends than this is not worth mapping: the job's small
/// appends come between large ones.
pub(crate) const MIN_COPIES: u32 = 8;

/// After such a window, the job's appends are written until its records are this many
/// windows further.
pub(crate) const BACK_OFF: u64 = 8;

/// One mapped window of a spool file.
pub(crate) struct Window {
    /// The mapping's first byte; nothing else holds this address.
    ptr: std::ptr::NonNull<u8>,
    /// The file offset `ptr` maps: a multiple of [`WINDOW`].
    start: u64,
}

// SAFETY: the mapping is owned by this value alone (its address is never handed out), so
// moving it to another thread moves the only access to it.
unsafe impl Send for Window {}

impl Window {
    /// Where the window holding offset `at` starts.
    pub(crate) fn start_of(at: u64) -> u64 {
        at - at % WINDOW
    }

    /// The offset of the first byte it maps.
    pub(crate) fn start(&self) -> u64 {
        self.start
    }

    /// Maps the window holding offset `at` of `file` (open for reading and writing),
    /// first allocating the file up to the window's end; `size`, the file's length, is
    /// updated (also when allocating failed part way).
    #[cfg(target_os = "linux")]
    pub(crate) fn open(file: &File, at: u64, size: &mut u64) -> std::io::Result<Self> {
        use rustix::fs::FallocateFlags;
        use rustix::mm::{MapFlags, ProtFlags};

        let start = Self::start_of(at);
        let end = start + WINDOW;
        if end > *size {
            // Allocates blocks and extends the file: writes to the mapping below `end`
            // neither fault past the end of the file nor need space at writeback.
            if let Err(e) = rustix::fs::fallocate(file, FallocateFlags::empty(), *size, end - *size)
            {
                *size = file.metadata().map_or(*size, |m| m.len());
                return Err(e.into());
            }
            *size = end;
        }
        // SAFETY: a new mapping at an address the kernel chooses (nothing else is
        // affected), of a range of `file` that exists and is allocated (above); the
        // offset is a multiple of the page size (WINDOW is).
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                WINDOW as usize,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                file,
                start,
            )
        }?;
        let ptr = std::ptr::NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| std::io::Error::other("mmap returned a null mapping"))?;
        Ok(Self { ptr, start })
    }

    /// Mapping is Linux-only here: elsewhere every append is a `write`.
    #[cfg(not(target_os = "linux"))]
    pub(crate) fn open(_file: &File, _at: u64, _size: &mut u64) -> std::io::Result<Self> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "append windows are Linux-only",
        ))
    }

    /// Copies `bytes` to file offset `at` when they fit the window whole; `false` (and
    /// nothing copied) when they do not.
    pub(crate) fn put(&mut self, at: u64, bytes: &[u8]) -> bool {
        let fits = at >= self.start && at + bytes.len() as u64 <= self.start + WINDOW;
        if !fits {
            return false;
        }
        let offset = (at - self.start) as usize;
        // SAFETY: `offset + bytes.len() <= WINDOW` (checked above), so the destination is
        // inside the mapping, which lives as long as `self`; the source is a slice that
        // cannot overlap it (no reference into the mapping is ever made).
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.as_ptr().add(offset),
                bytes.len(),
            );
        }
        true
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: `ptr` is the start of a mapping of WINDOW bytes this value made and
        // nothing else refers to.
        #[cfg(target_os = "linux")]
        if let Err(e) = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), WINDOW as usize) } {
            tracing::warn!(error = %e, "cannot unmap a spool's append window");
        }
    }
}
