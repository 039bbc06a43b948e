//! The connection to Redis (one server, or a Cluster): one multiplexed async connection
//! shared by every caller, whose commands are pipelined on it and awaited directly on
//! the gateway's runtime (no thread of its own, nothing blocks a worker).

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, RedisResult, ScriptInvocation};
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
            let client = retrying(ClusterClient::builder(vec![url]))
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

/// Tries a Cluster command again after a redirect (`MOVED`, or `ASK`: `ASKING` and the
/// command on the node the slot is moving to, which the client does by itself), and after
/// `TRYAGAIN` (a slot mid-move, see `job.lua`) or a node reconnecting, waiting 10 ms
/// doubling up to 250 ms. The client's own waits start at 1.28 s, longer than a round
/// trip may take at defaults, so a call caught by a slot move timed out (503) instead.
pub(crate) fn retrying(builder: ClusterClientBuilder) -> ClusterClientBuilder {
    builder
        .retries(16)
        .min_retry_wait(10)
        .max_retry_wait(250)
        .retry_wait_formula(10, 2)
}

/// A Redis error as the store reports it: the server cannot be used now.
pub(crate) fn unavailable(e: redis::RedisError) -> StoreError {
    super::errors::unavailable(&e)
}
