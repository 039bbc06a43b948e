//! Capgo compatibility support: a gateway configured as Capgo's (issuer `capgo`, audience
//! `build-logs`), Capgo-shaped tokens, and a WebSocket client that behaves like the
//! published `@capgo/cli`: heartbeats every 2 s with `lastId`, `confirmed_received` after
//! each frame or batch with a new numeric id, reconnects to the same URL, and keeps every
//! frame it gets (no de-duplication).

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tailgate::auth::{capgo_claims, job_claims, CAPGO_AUDIENCE, CAPGO_ISSUER};
use tailgate::Config;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::{bearer, http_client, mint, Reply, SECRET};

pub const PREFIX: &str = "/build_logs_direct";

/// Statuses the CLI treats as final.
pub const FINAL: &[&str] = &["succeeded", "failed", "expired", "released", "cancelled"];

/// A gateway config that verifies Capgo's tokens.
pub fn capgo_config() -> Config {
    let mut c = Config::new_hmac(SECRET, CAPGO_ISSUER, CAPGO_AUDIENCE);
    c.drain_timeout = Duration::from_secs(5);
    c
}

/// A log token as Capgo's `/build/start` mints it (no scope: read only).
pub fn capgo_token(job: &str) -> String {
    mint(&capgo_claims("user-1", job, "com.example.app"))
}

/// A publish token accepted by a gateway with [`capgo_config`].
pub fn capgo_publish_token(job: &str) -> String {
    mint(&job_claims(
        CAPGO_ISSUER,
        CAPGO_AUDIENCE,
        "builder",
        "job_id",
        job,
        Duration::from_secs(600),
        true,
    ))
}

/// Publishes NDJSON records to `job` on the gateway at `addr`, with a Capgo-issuer
/// publish token.
pub async fn publish(addr: SocketAddr, job: &str, records: &[Value]) -> Reply {
    let body: String = records.iter().map(|r| format!("{r}\n")).collect();
    let auth = bearer(&capgo_publish_token(job));
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/x-ndjson"),
    ];
    let path = format!("/v1/jobs/{job}/logs");
    let reply = http_client::request(addr, "POST", &path, &headers, body.into()).await;
    assert_eq!(reply.status, 200, "publish: {}", reply.text());
    reply
}

/// Publishes `lines` as log records.
pub async fn publish_lines(addr: SocketAddr, job: &str, lines: impl IntoIterator<Item = String>) {
    let records: Vec<Value> = lines.into_iter().map(|l| json!({ "line": l })).collect();
    publish(addr, job, &records).await;
}

/// Publishes a status record.
pub async fn publish_status(addr: SocketAddr, job: &str, status: &str) {
    publish(addr, job, &[json!({ "status": status })]).await;
}

/// `ws://addr{prefix}/{job}/stream?token=...`, as the CLI builds it from `logs_url`.
pub fn stream_url(addr: SocketAddr, prefix: &str, job: &str, token: &str) -> String {
    let token: String = form_urlencode(token);
    format!("ws://{addr}{prefix}/{job}/stream?token={token}")
}

fn form_urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How one connection of a [`CliClient`] ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    /// A final status arrived (and the client closed, as the CLI does).
    Final(String),
    /// The server closed the socket with this close frame.
    ServerClosed(Option<CloseFrame>),
    /// The test cut the connection.
    Cut,
    /// The connection failed.
    Error(String),
}

/// A client that follows one job like the published CLI.
pub struct CliClient {
    url: String,
    /// Highest numeric id seen, over every connection (the CLI's `lastId`).
    pub last_id: u64,
    /// Every log message shown, in arrival order, duplicates included.
    pub lines: Vec<String>,
    /// Every frame received except heartbeat responses, batches as they came.
    pub frames: Vec<Value>,
    /// Every record frame, batches flattened, in arrival order.
    pub records: Vec<Value>,
    pub heartbeat_responses: usize,
    pub pings: usize,
    pub connections: usize,
    pub final_status: Option<String>,
    /// Cut the connection after this many log lines in total (once each).
    pub cut_after_lines: Vec<usize>,
    /// Close the socket on a final status, as the CLI does; `false` waits for the server.
    pub close_on_final: bool,
    /// Heartbeat interval (the CLI's is 2 s).
    pub heartbeat_every: Duration,
    /// Wait before reconnecting (the CLI waits 1 to 10 s).
    pub reconnect_delay: Duration,
}

impl CliClient {
    pub fn new(url: String) -> Self {
        Self {
            url,
            last_id: 0,
            lines: Vec::new(),
            frames: Vec::new(),
            records: Vec::new(),
            heartbeat_responses: 0,
            pings: 0,
            connections: 0,
            final_status: None,
            cut_after_lines: Vec::new(),
            close_on_final: true,
            heartbeat_every: Duration::from_secs(2),
            reconnect_delay: Duration::from_millis(200),
        }
    }

    pub async fn connect(&self) -> Ws {
        let (ws, resp) = tokio_tungstenite::connect_async(self.url.as_str())
            .await
            .unwrap_or_else(|e| panic!("websocket connect: {e}"));
        assert_eq!(resp.status().as_u16(), 101);
        ws
    }

    /// Follows the job, reconnecting after each close or cut, until a final status;
    /// fails after `within` or 10 failed connections.
    pub async fn follow(&mut self, within: Duration) -> Vec<Ended> {
        let run = async {
            let mut ends = Vec::new();
            let mut errors = 0;
            loop {
                let end = self.session().await;
                ends.push(end.clone());
                match end {
                    Ended::Final(_) => return ends,
                    Ended::ServerClosed(_) if self.final_status.is_some() => return ends,
                    Ended::Error(_) => errors += 1,
                    _ => {}
                }
                assert!(errors < 10, "gave up after 10 errors: {ends:?}");
                tokio::time::sleep(self.reconnect_delay).await;
            }
        };
        tokio::time::timeout(within, run)
            .await
            .unwrap_or_else(|_| panic!("no final status within {within:?}; lines {:?}", self.lines))
    }

    /// One connection, until it ends.
    pub async fn session(&mut self) -> Ended {
        let (mut ws, _) = match tokio_tungstenite::connect_async(self.url.as_str()).await {
            Ok(pair) => pair,
            Err(e) => return Ended::Error(e.to_string()),
        };
        self.connections += 1;
        let mut heartbeat = tokio::time::interval(self.heartbeat_every);
        heartbeat.tick().await;
        loop {
            tokio::select! {
                _ = heartbeat.tick() => {
                    let hb = json!({ "type": "heartbeat", "lastId": self.last_id }).to_string();
                    if let Err(e) = ws.send(Message::text(hb)).await {
                        return Ended::Error(e.to_string());
                    }
                }
                msg = ws.next() => match msg {
                    None => return Ended::ServerClosed(None),
                    Some(Err(e)) => return Ended::Error(e.to_string()),
                    Some(Ok(Message::Close(frame))) => {
                        // Let the codec answer the close, then report it.
                        while let Some(Ok(_)) = ws.next().await {}
                        return Ended::ServerClosed(frame);
                    }
                    Some(Ok(Message::Ping(_))) => self.pings += 1,
                    Some(Ok(Message::Text(text))) => {
                        if let Some(end) = self.on_text(&mut ws, &text).await {
                            return end;
                        }
                    }
                    Some(Ok(_)) => {}
                },
            }
        }
    }

    /// Handles a text frame as the CLI does; `Some` when the connection ends here.
    async fn on_text(&mut self, ws: &mut Ws, text: &str) -> Option<Ended> {
        let v: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(_) => {
                self.lines.push(text.to_string());
                return None;
            }
        };
        if v["type"] == "heartbeat_response" {
            self.heartbeat_responses += 1;
            return None;
        }
        self.frames.push(v.clone());
        let mut confirm = None;
        if v["type"] == "batch_messages" {
            let mut top = self.last_id;
            for m in v["messages"].as_array().into_iter().flatten() {
                self.record(m);
                if let Some(id) = m["id"].as_u64() {
                    top = top.max(id);
                }
            }
            if top > self.last_id {
                self.last_id = top;
                confirm = Some(top);
            }
        } else {
            self.record(&v);
            if let Some(id) = v["id"].as_u64().filter(|id| *id > self.last_id) {
                self.last_id = id;
                confirm = Some(id);
            }
        }
        if let Some(id) = confirm {
            let msg = json!({ "type": "confirmed_received", "lastId": id }).to_string();
            if let Err(e) = ws.send(Message::text(msg)).await {
                return Some(Ended::Error(e.to_string()));
            }
        }
        if let Some(status) = &self.final_status {
            if self.close_on_final {
                let _ = ws.close(None).await;
                while let Some(Ok(_)) = ws.next().await {}
                return Some(Ended::Final(status.clone()));
            }
        }
        if let Some(pos) = self
            .cut_after_lines
            .iter()
            .position(|n| self.lines.len() >= *n)
        {
            self.cut_after_lines.remove(pos);
            // Give the confirmation time to arrive, then drop the TCP connection
            // without a close frame, like a network failure.
            tokio::time::sleep(Duration::from_millis(100)).await;
            return Some(Ended::Cut);
        }
        None
    }

    fn record(&mut self, m: &Value) {
        self.records.push(m.clone());
        match m["type"].as_str() {
            // The CLI shows no line after the final status.
            Some("log") if self.final_status.is_none() => {
                if let Some(line) = m["message"].as_str() {
                    self.lines.push(line.to_string());
                }
            }
            Some("status") => {
                let s = m["status"].as_str().unwrap_or_default().to_lowercase();
                if FINAL.contains(&s.as_str()) {
                    self.final_status = Some(s);
                }
            }
            _ => {}
        }
    }
}
