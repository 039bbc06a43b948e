//! Opening the store the config names, in one place: Redis shared with other instances,
//! the spool under its data directory (recovering every job in it, off the runtime's
//! threads), or memory only. Done before the hub is built, so the hub never opens it.

use std::path::PathBuf;
use std::sync::Arc;

use super::memory::MemoryStore;
use super::redis::{RedisSettings, RedisStore};
use super::spool::{Spool, SpoolSettings};
use super::Store;
use crate::config::Config;

/// The store the config names cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreOpenError {
    /// The data directory cannot be created, written, locked or read.
    #[error("cannot use data directory {}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The Redis URL or its client settings are not usable.
    #[error("cannot use redis")]
    Redis(#[source] ::redis::RedisError),
    /// The recovery task itself failed.
    #[error("the spool's recovery did not finish")]
    Recovery(#[source] tokio::task::JoinError),
}

impl From<super::spool::OpenError> for StoreOpenError {
    fn from(e: super::spool::OpenError) -> Self {
        Self::DataDir {
            path: e.path,
            source: e.source,
        }
    }
}

/// Before the server runs: checks the data directory (creates, probes and locks it; no
/// job is read), so a bad one exits with the config's code.
pub(crate) fn check(config: &Config) -> Result<(), StoreOpenError> {
    if let Some(dir) = &config.store.data_dir {
        Spool::check(dir)?;
    }
    Ok(())
}

/// Opens the store the config names. Runs on the runtime: Redis's tasks start on it.
pub(crate) async fn open(config: &Config) -> Result<Arc<Store>, StoreOpenError> {
    let store = &config.store;
    if let Some(redis) = &store.redis {
        let settings = RedisSettings {
            url: redis.url.clone(),
            cluster: redis.cluster,
            timeout: redis.timeout,
            wait_replicas: redis.wait_replicas,
            retention: store.disk_retention,
            tombstone_ttl: store.tombstone_ttl,
        };
        let redis = RedisStore::open(settings).map_err(StoreOpenError::Redis)?;
        return Ok(Arc::new(Store::Redis(redis)));
    }
    let Some(dir) = &store.data_dir else {
        tracing::warn!("memory-only: jobs are not kept across restarts, and a reader behind the ring gets a gap");
        let memory = MemoryStore::new(store.tombstone_ttl.as_millis() as u64);
        return Ok(Arc::new(Store::Memory(memory)));
    };
    let settings = SpoolSettings {
        dir: dir.clone(),
        fsync: store.fsync,
        disk_retention: store.disk_retention,
        max_disk_bytes: store.max_disk_bytes,
        tombstone_ttl: store.tombstone_ttl,
    };
    // Recovery reads every spool file: off the runtime's worker threads.
    let spool = tokio::task::spawn_blocking(move || Spool::open(settings))
        .await
        .map_err(StoreOpenError::Recovery)??;
    Ok(Arc::new(Store::Spool(spool)))
}
