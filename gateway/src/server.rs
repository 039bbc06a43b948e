//! The accept loop: one task per connection, HTTP/1.1 and HTTP/2 (h2c prior knowledge, or
//! ALPN over TLS), a cap on connections, a grace period, and a drain bounded by the config.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::app::App;
use crate::auth::{Authenticator, Jwks, JwksError, KeyError};
use crate::config::Config;
use crate::conn::Conn;
use crate::metrics::{self, ConnLabels};
use crate::refusal::JsonRefusals;
use crate::socket::{self, Outcome};
use crate::tls::{Tls, TlsError};
use crate::{probes, routes};

/// Why the server could not run; each is a configuration problem (exit 64).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot load token keys")]
    Keys(#[from] KeyError),
    #[error("config {}", .0.key())]
    Tls(#[from] TlsError),
    #[error("config {}", .0.key())]
    Jwks(#[from] JwksError),
    #[error("cannot listen on the metrics address {addr}")]
    MetricsListen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the store")]
    Store(#[from] crate::store::open::StoreOpenError),
}

/// The sockets the gateway serves on, bound before [`serve`].
pub struct Listeners {
    /// Every route (HTTPS when the config has a certificate).
    pub main: TcpListener,
    /// `/metrics` and the probes, when the config sets `metrics_listen`.
    pub metrics: Option<TcpListener>,
}

/// Checks, before anything binds, that the configured data directory can be used:
/// created private, writable, and not in use by another gateway. Recovery happens in
/// [`run`].
pub fn check_store(config: &Config) -> Result<(), crate::store::open::StoreOpenError> {
    crate::store::open::check(config)
}

/// Serves `listener` (and binds `metrics_listen` if set) until `shutdown` completes, then
/// drains for at most the configured drain timeout.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let metrics = match config.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::MetricsListen { addr, source })?,
        ),
        None => None,
    };
    let listeners = Listeners {
        main: listener,
        metrics,
    };
    serve(listeners, config, shutdown).await
}

/// Serves `listeners` until `shutdown` completes: `/readyz` turns 503 at once, serving
/// goes on for the shutdown grace, then the gateway drains for at most the drain timeout.
pub async fn serve(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let tls = config.tls.as_ref().map(Tls::load).transpose()?;
    let auth = match &config.jwks {
        None => Authenticator::new(&config.auth)?,
        Some(jwks) => Authenticator::with_jwks(&config.auth, Arc::new(Jwks::load(jwks).await?))?,
    };
    let drain_timeout = config.drain_timeout;
    let grace = config.shutdown_grace;
    let store = crate::store::open::open(&config).await?;
    let app = Arc::new(App::new(config, auth, store));
    if let Some(jwks) = app.auth.jwks() {
        tokio::spawn(Arc::clone(jwks).refresh_until(app.shutdown.clone()));
    }
    let every = app.hub.tick();
    tokio::spawn(Arc::clone(&app.hub).reap_until(every, app.shutdown.clone()));
    tokio::spawn(Arc::clone(&app.hub).shed_on_pressure(app.shutdown.clone()));
    if let Some((archive, hot)) = &app.archive {
        let writer =
            crate::archive::upload::run(Arc::clone(archive), Arc::clone(hot), app.shutdown.clone());
        tokio::spawn(writer);
    }
    if let Some(tls) = &tls {
        tokio::spawn(tls.clone().reload_on_sighup(app.shutdown.clone()));
    }
    if let Some(listener) = listeners.metrics {
        tokio::spawn(crate::admin::serve(listener, Arc::clone(&app)));
    }
    let listener = listeners.main;
    let unready = app.unready.clone();
    let shutdown = async move {
        shutdown.await;
        unready.cancel();
        if !grace.is_zero() {
            tracing::info!(
                grace_secs = grace.as_secs(),
                "not ready; serving through the grace period"
            );
            tokio::time::sleep(grace).await;
        }
    };

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
            tokio::spawn(probes::serve_over_cap(
                Arc::clone(&app),
                stream,
                over_cap,
                tls.clone(),
            ));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = Arc::clone(&app);
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let span = tracing::info_span!(
            "conn",
            client.addr = %addr,
            tls = tls.is_some(),
            http.protocol = tracing::field::Empty,
        );
        // A task's future is as large as its largest state, and an idle reader keeps its task
        // for hours: so every stage but the socket path's stream is boxed (the handshake, the
        // head, hyper's connection), and a reader pays for its stream's state alone. Inline,
        // the task was 6,016 bytes per connection (heaptrack, release build).
        connections.spawn(async move {
            let _slot = slot;
            let conn = match tls {
                None => Conn::Plain(stream),
                Some(tls) => match Box::pin(
                    handshake(&tls, stream, app.config.header_read_timeout)
                        .instrument(span.clone()),
                )
                .await
                {
                    Some(tls) => Conn::Tls(Box::new(tls)),
                    None => return,
                },
            };
            let transport = if conn.is_tls() { "tls" } else { "tcp" };
            let io = match Box::pin(socket::accept(&app, conn).instrument(span.clone())).await {
                // A stream runs outside the span: entering it on every event costs more
                // than the write.
                Outcome::Stream(sse) => {
                    let labels = ConnLabels {
                        protocol: "http1",
                        transport,
                    };
                    let _counted = metrics::get().connection(labels);
                    return sse.run().await;
                }
                Outcome::Dropped => return,
                Outcome::Hyper(io) => io,
            };
            let protocol = io.protocol();
            span.record("http.protocol", protocol);
            let _counted = metrics::get().connection(ConnLabels {
                protocol,
                transport,
            });
            let io = JsonRefusals::new(io, app.config.limits.max_header_bytes);
            Box::pin(
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
                .instrument(span),
            )
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
    app.hub.store().flush().await;
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

/// The TLS handshake, bounded like a request head; a failure is the client's (debug).
pub(crate) async fn handshake(
    tls: &Tls,
    stream: TcpStream,
    timeout: Duration,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, tls.acceptor().accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}

/// Errors of one incoming connection, which say nothing about the listener.
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
