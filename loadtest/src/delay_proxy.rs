//! A loopback TCP relay that holds every byte for a fixed delay in each direction: Redis (or
//! anything else) as if it were across a network, without root or `tc netem`. Each direction
//! is a reader that stamps every chunk with its due time and a writer that sends it then, so
//! the delay adds latency without cutting throughput (chunks in flight overlap), and bytes stay
//! in order.
//!
//! Tokio's timer ticks in milliseconds and rounds a sleep up to the next tick, so a 1 ms delay
//! is 1 to 2 ms in practice: never less than asked.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{sleep_until, Instant};

/// Connections relayed at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 1024;
/// Chunks held per direction of a connection; a full queue stops reading (backpressure).
const CHUNKS_IN_FLIGHT: usize = 256;
/// Largest chunk read at once.
const READ_CHUNK: usize = 64 * 1024;

/// Relays every connection accepted on `listener` to `upstream`, `delay` each way, until the
/// listener fails.
pub async fn serve(listener: TcpListener, upstream: SocketAddr, delay: Duration) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let (client, _) = listener.accept().await?;
        tokio::spawn(async move {
            // A refused upstream just closes the client: it sees what it would see directly.
            let _ = relay(client, upstream, delay).await;
            drop(permit);
        });
    }
}

/// One connection, both directions, until both ends closed.
async fn relay(client: TcpStream, upstream: SocketAddr, delay: Duration) -> io::Result<()> {
    let server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (client_rx, client_tx) = client.into_split();
    let (server_rx, server_tx) = server.into_split();
    tokio::join!(
        pipe(client_rx, server_tx, delay),
        pipe(server_rx, client_tx, delay)
    );
    Ok(())
}

/// One direction: bytes read from `from` are written to `to` `delay` later, in order. EOF or
/// an error on either side ends it and half-closes `to`.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(CHUNKS_IN_FLIGHT);
    let read = async move {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = Bytes::copy_from_slice(&buf[..n]);
            if tx.send((Instant::now() + delay, chunk)).await.is_err() {
                break;
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = rx.recv().await {
            sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server behind the proxy: every reply comes back intact, in order, and no
    /// sooner than twice the delay.
    #[tokio::test]
    async fn echoes_in_order_after_the_delay_each_way() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                s.write_all(&buf[..n]).await.unwrap();
            }
        });
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = proxy.local_addr().unwrap();
        let delay = Duration::from_millis(20);
        tokio::spawn(serve(proxy, echo_addr, delay));

        let mut c = TcpStream::connect(proxy_addr).await.unwrap();
        let sent: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let start = Instant::now();
        let (mut rx, mut tx) = c.split();
        let send = async {
            tx.write_all(&sent).await.unwrap();
        };
        let mut got = vec![0u8; sent.len()];
        let recv = async {
            rx.read_exact(&mut got).await.unwrap();
        };
        tokio::join!(send, recv);
        assert!(
            start.elapsed() >= delay * 2,
            "round trip {:?}",
            start.elapsed()
        );
        assert_eq!(got, sent);
    }
}
