//! `--redis-wait-replicas N`: an append is acknowledged only after `N` replicas have it
//! (Redis `WAIT` on the connection that ran the job script, which covers every write
//! sent on it before). Without it Redis replicates asynchronously, and the primary's last
//! acknowledged writes may be missing on the replica a failover promotes.

use std::time::Duration;

use super::link::Conn;
use crate::store::StoreError;

/// How many replicas an append waits for, and how long.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Replicas {
    /// Replicas that must confirm (0: no wait).
    pub(crate) wanted: u32,
    /// The `WAIT` timeout: part of the store's round-trip timeout, so the connection's
    /// own timeout never fires first.
    pub(crate) wait: Duration,
}

impl Replicas {
    pub(crate) fn new(wanted: u32, timeout: Duration) -> Self {
        Self {
            wanted,
            wait: (timeout * 3 / 4).max(Duration::from_millis(1)),
        }
    }

    pub(crate) fn is_off(&self) -> bool {
        self.wanted == 0
    }

    /// Waits for the replicas; how many confirmed.
    pub(crate) async fn wait(self, conn: &Conn) -> redis::RedisResult<i64> {
        conn.query(
            redis::cmd("WAIT")
                .arg(self.wanted)
                .arg(self.wait.as_millis() as u64),
        )
        .await
    }

    /// Passes an append when enough replicas confirmed it.
    pub(crate) fn check(&self, confirmed: i64) -> Result<(), StoreError> {
        if confirmed >= i64::from(self.wanted) {
            return Ok(());
        }
        Err(StoreError::Unavailable(format!(
            "only {confirmed} of {} redis replicas confirmed the publish within {} ms; it is \
             on the primary and may be lost at a failover; {}",
            self.wanted,
            self.wait.as_millis(),
            super::errors::MAY_BE_STORED
        )))
    }
}
