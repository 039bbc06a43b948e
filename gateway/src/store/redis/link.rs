//! The connection to Redis (one server, or a Cluster) and the bridge from the store's
//! blocking interface to the async client. All Redis I/O runs on one dedicated thread
//! with its own runtime; a caller on the gateway's runtime hands its worker's other
//! tasks on (`block_in_place`) while it waits one round trip, bounded by a timeout.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, RedisResult, ScriptInvocation};
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::OnceCell;

use crate::store::StoreError;

/// A command connection, shared by every caller (requests are pipelined on it).
#[derive(Clone)]
pub(crate) enum Conn {
    /// One server: reconnects by itself after a failure.
    Single(ConnectionManager),
    /// A Cluster: connected on first use, then follows slot moves by itself.
    Cluster {
        client: Arc<ClusterClient>,
        conn: Arc<OnceCell<ClusterConnection>>,
    },
}

impl Conn {
    /// A connection to `url` (not yet connected: the gateway starts without Redis).
    pub(crate) fn new(url: &str, cluster: bool, timeout: Duration) -> RedisResult<Self> {
        if cluster {
            let client = ClusterClient::builder(vec![url])
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .build()?;
            return Ok(Self::Cluster {
                client: Arc::new(client),
                conn: Arc::new(OnceCell::new()),
            });
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let manager = ConnectionManager::new_lazy_with_config(redis::Client::open(url)?, config)?;
        Ok(Self::Single(manager))
    }

    async fn cluster(
        client: &ClusterClient,
        conn: &OnceCell<ClusterConnection>,
    ) -> RedisResult<ClusterConnection> {
        conn.get_or_try_init(|| client.get_async_connection())
            .await
            .cloned()
    }

    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        let command = super::metrics::command_label(cmd);
        super::metrics::get()
            .timed(command, async {
                match self {
                    Self::Single(m) => cmd.query_async(&mut m.clone()).await,
                    Self::Cluster { client, conn } => {
                        cmd.query_async(&mut Self::cluster(client, conn).await?)
                            .await
                    }
                }
            })
            .await
    }

    pub(crate) async fn invoke<T: FromRedisValue>(
        &self,
        inv: &ScriptInvocation<'_>,
    ) -> RedisResult<T> {
        super::metrics::get()
            .timed("evalsha", async {
                match self {
                    Self::Single(m) => inv.invoke_async(&mut m.clone()).await,
                    Self::Cluster { client, conn } => {
                        inv.invoke_async(&mut Self::cluster(client, conn).await?)
                            .await
                    }
                }
            })
            .await
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster { .. })
    }
}

/// The Redis thread's runtime, and how long a caller waits for it.
pub(crate) struct Bridge {
    rt: Handle,
    timeout: Duration,
    /// Dropped with the store: the Redis thread's runtime then stops.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Bridge {
    /// Starts the Redis thread.
    pub(crate) fn start(timeout: Duration) -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("tailgate-redis".into())
            .spawn(move || {
                let _ = rt.block_on(stop_rx);
            })?;
        Ok(Self {
            rt: handle,
            timeout,
            _stop: stop_tx,
        })
    }

    /// Makes the Redis thread's runtime current, so whatever a connection spawns (its
    /// driver, its reconnects) runs there, not on the caller's runtime.
    pub(crate) fn enter(&self) -> tokio::runtime::EnterGuard<'_> {
        self.rt.enter()
    }

    /// Runs `fut` on the Redis thread and waits for it, at most the timeout.
    pub(crate) fn block<T, F>(&self, fut: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = RedisResult<T>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let timeout = self.timeout;
        self.rt.spawn(async move {
            let result = tokio::time::timeout(timeout, fut).await;
            let _ = tx.send(result);
        });
        let wait = move || rx.recv_timeout(timeout + Duration::from_secs(1));
        let got = match Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
            _ => wait(),
        };
        match got {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(e))) => Err(unavailable(&e)),
            Ok(Err(_)) | Err(_) => Err(super::errors::timed_out(timeout)),
        }
    }

    /// Runs `fut` on the Redis thread without waiting for it.
    pub(crate) fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.rt.spawn(fut);
    }
}

/// A Redis error as the store reports it: the server cannot be used now.
pub(crate) fn unavailable(e: &redis::RedisError) -> StoreError {
    super::errors::unavailable(e)
}
