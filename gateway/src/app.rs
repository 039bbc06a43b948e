//! What every request handler shares: config, the hub, the verifier, the shutdown signal.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::archive::Archive;

/// The archive and the store its writer reads finished jobs from.
pub(crate) type ArchiveWriter = (Arc<Archive>, Arc<Store>);
use crate::auth::Authenticator;
use crate::capgo::CapgoState;
use crate::compress::Streams;
use crate::config::Config;
use crate::hub::{Hub, HubSettings};
use crate::job_log::JobLimits;
use crate::memory::MemoryBudget;
use crate::publish::UploadLimits;
use crate::store::Store;
use crate::streams::SubjectStreams;
use crate::subscription::Pacing;

/// Shared state of one running gateway.
pub(crate) struct App {
    pub(crate) config: Config,
    pub(crate) hub: Arc<Hub>,
    pub(crate) auth: Authenticator,
    /// Cancelled when the gateway starts draining: readiness turns false, and the hub
    /// closes every job so each stream ends itself (an SSE body never ends on its own).
    pub(crate) shutdown: CancellationToken,
    /// The Capgo routes' confirmations and WebSocket sessions.
    pub(crate) capgo: CapgoState,
    /// One permit per open connection (`--max-connections`); an upgraded WebSocket holds
    /// its own, since hyper lets go of the connection's at the upgrade.
    pub(crate) connection_slots: Arc<Semaphore>,
    /// Long-lived reads per token subject (`--max-streams-per-subject`): SSE, Capgo
    /// WebSocket, `?wait=`, `/log` downloads.
    pub(crate) streams: Arc<SubjectStreams>,
    /// Uploads in progress per token subject (`--max-uploads-per-subject`, at most half
    /// of `--max-connections`).
    pub(crate) uploads: Arc<SubjectStreams>,
    /// Cancelled on the shutdown signal, before the grace period: `/readyz` turns 503
    /// while everything else is still served.
    pub(crate) unready: CancellationToken,
    /// Every job's shared compressed streams, and the catch-up encoders' count.
    pub(crate) compress: Arc<Streams>,
    /// The archive (`--archive-url`) and the store it archives from, for its writer.
    pub(crate) archive: Option<ArchiveWriter>,
}

impl App {
    /// The gateway's state over `store`, holding every job the store recovered.
    pub(crate) fn new(config: Config, auth: Authenticator, store: Arc<Store>) -> Self {
        let limits = &config.limits;
        let settings = HubSettings {
            max_jobs: limits.max_jobs,
            retention: config.retention,
            idle_timeout: config.idle_timeout,
            publisher_grace: config.publisher_grace,
            queued_ttl: config.queued_ttl,
            job: JobLimits {
                memory_bytes: limits.job_memory_bytes,
                max_log_bytes: limits.max_log_bytes,
                max_subscribers: limits.max_subscribers_per_job,
                gather: config.gather,
            },
        };
        let memory = Arc::new(MemoryBudget::new(limits.memory_budget_bytes));
        let compress = Arc::new(Streams::new(config.compression.clone(), memory.clone()));
        let (store, archive) = Self::tier(&config, store, &memory);
        let capgo = CapgoState::new(&config, memory.clone());
        let hub = Arc::new(Hub::new(settings, memory, store));
        let connection_slots = Arc::new(Semaphore::new(limits.max_connections));
        let streams = Arc::new(SubjectStreams::new(limits.max_streams_per_subject));
        // A publish subject often serves a whole build fleet, so its cap is high; but never
        // above half the connections, so that fleet cannot take them all.
        let uploads_cap = limits
            .max_uploads_per_subject
            .min((limits.max_connections / 2).max(1));
        let uploads = Arc::new(SubjectStreams::new(uploads_cap));
        Self {
            config,
            hub,
            auth,
            shutdown: CancellationToken::new(),
            capgo,
            connection_slots,
            streams,
            uploads,
            unready: CancellationToken::new(),
            compress,
            archive,
        }
    }

    /// `store` with the archive behind it, when one is configured (config allows it with
    /// the spool or Redis); its read cache takes an eighth of the memory budget at most.
    fn tier(
        config: &Config,
        store: Arc<Store>,
        memory: &Arc<MemoryBudget>,
    ) -> (Arc<Store>, Option<ArchiveWriter>) {
        let Some(archive) = &config.store.archive else {
            return (store, None);
        };
        if matches!(&*store, Store::Memory(_)) {
            tracing::error!(
                "the archive needs the spool or redis; finished jobs stay where they are"
            );
            return (store, None);
        }
        let cache = config.limits.memory_budget_bytes / 8;
        match Archive::open(archive.clone(), Arc::clone(memory), cache) {
            Ok(archive) => {
                let _ = match &*store {
                    Store::Spool(spool) => spool.archive.set(Arc::clone(&archive)),
                    Store::Redis(redis) => redis.archive.set(Arc::clone(&archive)),
                    Store::Memory(_) => Ok(()),
                };
                let writer = (archive, Arc::clone(&store));
                (store, Some(writer))
            }
            Err(e) => {
                tracing::error!(error = %e, "the archive cannot be opened; finished jobs stay local");
                (store, None)
            }
        }
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// What `/readyz` says: false from the shutdown signal on.
    pub(crate) fn is_ready(&self) -> bool {
        !self.unready.is_cancelled() && !self.is_draining()
    }

    pub(crate) fn pacing(&self) -> Pacing {
        Pacing {
            keepalive: self.config.keepalive,
            batch_bytes: self.config.limits.batch_bytes,
        }
    }

    pub(crate) fn upload_limits(&self) -> UploadLimits {
        UploadLimits {
            max_line_bytes: self.config.limits.max_line_bytes,
            max_record_bytes: self.config.limits.max_record_bytes,
        }
    }
}
