//! The accept loop: one task per connection, HTTP/1.1 and HTTP/2 (h2c prior knowledge),
//! a cap on connections, and a graceful drain bounded by the config.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::app::App;
use crate::auth::{Authenticator, KeyError};
use crate::config::Config;
use crate::socket::{self, Outcome};
use crate::{probes, routes};

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot load token keys")]
    Keys(#[from] KeyError),
    #[error("cannot open the store")]
    Store(#[from] crate::store::spool::OpenError),
}

/// Checks, before anything binds, that the configured data directory can be used:
/// created private, writable, and not in use by another gateway. Recovery happens in
/// [`run`].
pub fn check_store(config: &Config) -> Result<(), crate::store::spool::OpenError> {
    if let Some(dir) = &config.store.data_dir {
        crate::store::spool::Spool::prepare(dir)?;
    }
    Ok(())
}

/// Serves `listener` until `shutdown` completes, then drains for at most the configured
/// drain timeout.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let auth = Authenticator::new(&config.auth)?;
    let drain_timeout = config.drain_timeout;
    let store = App::open_store(&config)?;
    let app = Arc::new(App::new(config, auth, store));
    let every = app.hub.tick();
    tokio::spawn(Arc::clone(&app.hub).reap_until(every, app.shutdown.clone()));

    let builder = Arc::new(connection_builder(&app.config));
    // Every connection task, both paths, so the drain can wait for them.
    let connections = TaskTracker::new();
    let graceful = GracefulShutdown::new();
    let over_cap = probes::over_cap_slots();
    tokio::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&app.connection_slots).try_acquire_owned() else {
            let over_cap = Arc::clone(&over_cap);
            tokio::spawn(probes::serve_over_cap(Arc::clone(&app), stream, over_cap));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = Arc::clone(&app);
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        let span = tracing::info_span!("conn", client.addr = %addr);
        connections.spawn(async move {
            let _slot = slot;
            let io = match socket::accept(&app, stream).instrument(span.clone()).await {
                // A stream runs outside the span: entering it on every event costs more
                // than the write.
                Outcome::Stream(sse) => return sse.run().await,
                Outcome::Dropped => return,
                Outcome::Hyper(io) => io,
            };
            async move {
                let service = service_fn(move |req| {
                    // Boxed, so an idle connection does not carry a handler's state inline.
                    let handling = Box::pin(routes::handle(Arc::clone(&app), req));
                    async move { Ok::<_, Infallible>(handling.await) }
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                if let Err(e) = watcher.watch(conn.into_owned()).await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            }
            .instrument(span)
            .await
        });
    }

    let started = Instant::now();
    tracing::info!("draining");
    app.shutdown.cancel();
    app.hub.close_all();
    drop(listener);
    connections.close();
    let drained = async {
        graceful.shutdown().await;
        app.capgo.drain().await;
        // Readers served on the socket path are not hyper's to track.
        connections.wait().await;
    };
    if tokio::time::timeout(drain_timeout, drained).await.is_err() {
        tracing::warn!(
            timeout_secs = drain_timeout.as_secs(),
            "drain timed out; closing the rest"
        );
    }
    let store = Arc::clone(app.hub.store());
    let _ = tokio::task::spawn_blocking(move || store.flush()).await;
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "drained");
    Ok(())
}

fn connection_builder(config: &Config) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(config.limits.max_header_bytes as u32)
        .keep_alive_interval(Some(config.keepalive));
    builder
}

/// Errors of one incoming connection, which say nothing about the listener.
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
