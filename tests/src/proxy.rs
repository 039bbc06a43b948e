//! A loopback TCP proxy that tests can cut: every connection at once ([`Proxy::cut`]), or
//! each one after a byte budget per direction, so a client sees its connection break
//! mid-stream (mid-event, mid-record) again and again. It can also stall: hold every
//! byte, both ways, until told to go on ([`Proxy::stall`]), like a network that hangs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Bytes a connection may carry each way before the proxy drops it (`None`: no limit).
#[derive(Debug, Clone, Copy, Default)]
pub struct Budget {
    /// Client to server.
    pub up: Option<usize>,
    /// Server to client.
    pub down: Option<usize>,
}

/// A running proxy in front of `target`.
pub struct Proxy {
    pub addr: SocketAddr,
    /// Bumped by [`cut`](Self::cut); every connection task watches it.
    cut_tx: watch::Sender<u64>,
    /// While true, no byte goes through ([`stall`](Self::stall)).
    stall_tx: watch::Sender<bool>,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    /// Connections dropped by a budget or a cut.
    broken: Arc<AtomicUsize>,
}

impl Proxy {
    pub async fn start(target: SocketAddr, budget: Budget) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (cut_tx, cut_rx) = watch::channel(0u64);
        let (stall_tx, stall_rx) = watch::channel(false);
        let accepted = Arc::new(AtomicUsize::new(0));
        let broken = Arc::new(AtomicUsize::new(0));
        let (acc, brk) = (Arc::clone(&accepted), Arc::clone(&broken));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                acc.fetch_add(1, Ordering::Relaxed);
                let cut_rx = cut_rx.clone();
                let stall_rx = stall_rx.clone();
                let brk = Arc::clone(&brk);
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    if relay(client, server, budget, cut_rx, stall_rx).await {
                        brk.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        Self {
            addr,
            cut_tx,
            stall_tx,
            accepted,
            broken,
        }
    }

    /// Drops every open connection now.
    pub fn cut(&self) {
        self.cut_tx.send_modify(|g| *g += 1);
    }

    /// Holds every byte of every connection (`true`) or lets them go on (`false`).
    pub fn stall(&self, on: bool) {
        self.stall_tx.send_replace(on);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections the proxy broke (budget spent or cut).
    pub fn broken(&self) -> usize {
        self.broken.load(Ordering::Relaxed)
    }
}

/// Relays until both sides finish (false) or a budget runs out or a cut comes (true).
async fn relay(
    client: TcpStream,
    server: TcpStream,
    budget: Budget,
    mut cut_rx: watch::Receiver<u64>,
    stall_rx: watch::Receiver<bool>,
) -> bool {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let mut up = std::pin::pin!(pipe(cr, sw, budget.up, stall_rx.clone()));
    let mut down = std::pin::pin!(pipe(sr, cw, budget.down, stall_rx));
    let (mut up_done, mut down_done) = (false, false);
    cut_rx.borrow_and_update();
    while !(up_done && down_done) {
        tokio::select! {
            spent = &mut up, if !up_done => { if spent { return true; } up_done = true; }
            spent = &mut down, if !down_done => { if spent { return true; } down_done = true; }
            _ = cut_rx.changed() => return true,
        }
    }
    false
}

/// Copies until EOF (false) or until `budget` bytes went through (true).
async fn pipe(
    mut r: OwnedReadHalf,
    mut w: OwnedWriteHalf,
    mut budget: Option<usize>,
    mut stall_rx: watch::Receiver<bool>,
) -> bool {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = w.shutdown().await;
                return false;
            }
            Ok(n) => n,
        };
        // A stall holds the bytes read, whichever way they go, until it ends.
        while *stall_rx.borrow_and_update() {
            if stall_rx.changed().await.is_err() {
                break;
            }
        }
        let n = budget.map_or(n, |b| n.min(b));
        if w.write_all(&buf[..n]).await.is_err() {
            return false;
        }
        if let Some(b) = &mut budget {
            *b -= n;
            if *b == 0 {
                return true;
            }
        }
    }
}
