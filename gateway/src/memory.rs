//! The process-wide budget for log bytes held in memory, across all jobs, and for what
//! readers hold on their way to a slow socket ([`Charge`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Bytes of records held in every job's ring, against a limit.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    used: AtomicUsize,
    limit: usize,
    /// Woken when records are freed, so a publisher held back by the budget retries.
    pub(crate) freed: Notify,
    /// Woken when an addition leaves the budget over its limit, so the hub sheds rings
    /// even when no upload is running (readers' frames and buffers grow it too).
    pub(crate) pressure: Notify,
}

/// Bytes held outside the rings (a reader's chunk waiting for its socket), counted in
/// the budget until dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Charge {
    /// The bytes counted.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.sub(self.bytes);
    }
}

impl MemoryBudget {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            used: AtomicUsize::new(0),
            limit,
            freed: Notify::new(),
            pressure: Notify::new(),
        }
    }

    pub(crate) fn add(&self, n: usize) {
        let used = self.used.fetch_add(n, Ordering::Relaxed) + n;
        if n > 0 && used > self.limit {
            self.pressure.notify_one();
        }
    }

    /// Counts `bytes` until the returned guard is dropped.
    pub(crate) fn charge(self: &Arc<Self>, bytes: usize) -> Charge {
        self.add(bytes);
        Charge {
            budget: Arc::clone(self),
            bytes,
        }
    }

    pub(crate) fn sub(&self, n: usize) {
        if n > 0 {
            self.used.fetch_sub(n, Ordering::Relaxed);
            self.freed.notify_waiters();
        }
    }

    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Bytes above the limit (0 when under it).
    pub(crate) fn excess(&self) -> usize {
        self.used().saturating_sub(self.limit)
    }

    pub(crate) fn is_over(&self) -> bool {
        self.used() > self.limit
    }
}

/// The environment variable that caps glibc's malloc arenas; read before `main`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENA_VAR: &str = "MALLOC_ARENA_MAX";
/// Its value unless the operator chose one (see [`limit_malloc_arenas`]).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: &str = "1";
/// glibc's tunables, also read before `main`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TUNABLES_VAR: &str = "GLIBC_TUNABLES";
/// Their value unless the operator chose some: transparent huge pages for the heap.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TUNABLES: &str = "glibc.malloc.hugetlb=1";

/// Gives glibc's malloc one arena, unless the operator set `MALLOC_ARENA_MAX`. glibc
/// gives threads their own arenas (up to 8 per core), and memory freed in one arena
/// serves only the threads allocating from it: records appended on one tokio thread and
/// shed on another left free space in one arena while the other grew. In #17's scenario
/// (a 256 MiB budget, 100 jobs x 5 MB, a text and a Capgo reader each; release build)
/// peak RSS over idle was 1.35x the budget with the default arenas, 1.08-1.34x with two
/// (`malloc_stats`: 60-80 MiB free in one arena at the peak), 1.07-1.08x with one. Small
/// allocations mostly stay in each thread's cache (tcache), so the one arena's lock is
/// rarely taken (`loadtest/arenas.sh` measures the CPU side).
///
/// It also asks malloc for transparent huge pages (`glibc.malloc.hugetlb=1`: `madvise`
/// on the heap, for kernels in THP's `madvise` mode), unless `GLIBC_TUNABLES` is set.
/// Hundreds of jobs taking turns touch hundreds of cold per-job states (a deflate window
/// and hash table of ~290 KiB per compressed job, rings, maps): with 4 KiB pages nearly
/// every such touch also misses the TLB. Measured on the ci shape (loadtest/README.md):
/// +13 % events per CPU-second with gzip readers, +6 % uncompressed.
///
/// glibc reads both variables before `main`, so the gateway starts itself again once with
/// them set (same pid, same arguments); if that fails it goes on as it is.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn limit_malloc_arenas() {
    use std::os::unix::process::CommandExt;
    let set_arenas = std::env::var_os(ARENA_VAR).is_none();
    let set_tunables = std::env::var_os(TUNABLES_VAR).is_none();
    if !set_arenas && !set_tunables {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut cmd = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        cmd.arg0(arg0);
    }
    cmd.args(args);
    if set_arenas {
        cmd.env(ARENA_VAR, ARENAS);
    }
    if set_tunables {
        cmd.env(TUNABLES_VAR, TUNABLES);
    }
    let err = cmd.exec();
    eprintln!(
        "tailgate: cannot start again with {ARENA_VAR}={ARENAS} {TUNABLES_VAR}={TUNABLES} ({err}); going on without them"
    );
}

/// Elsewhere the allocator is left as it is.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn limit_malloc_arenas() {}
