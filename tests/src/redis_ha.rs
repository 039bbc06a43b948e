//! Redis topologies beyond one server, made of real `redis-server` processes on free
//! loopback ports: a primary with its replica (promoted by `REPLICAOF NO ONE` or
//! `FAILOVER`), a Cluster of primaries whose slots can be moved one at a time, and a
//! switchable TCP front that plays the operator's DNS name or VIP during a failover.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::redis::{free_port, Persistence, RedisServer};

/// How long a topology may take to form or change.
const FORM_WITHIN: Duration = Duration::from_secs(20);

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + FORM_WITHIN;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A primary and one replica following it.
pub struct Replicated {
    pub primary: RedisServer,
    pub replica: RedisServer,
}

impl Replicated {
    /// Both servers, the replica in sync with the primary.
    pub fn start() -> Self {
        let primary = RedisServer::start(Persistence::Off);
        let port = primary.port.to_string();
        let replica = RedisServer::start_on(
            free_port(),
            Persistence::Off,
            &["--replicaof", "127.0.0.1", &port],
        );
        let pair = Self { primary, replica };
        pair.wait_in_sync();
        pair
    }

    /// Waits until the replica's link is up and the primary counts it.
    pub fn wait_in_sync(&self) {
        wait_until("the replica never synced", || {
            self.replica
                .cli(&["INFO", "replication"])
                .contains("master_link_status:up")
                && self
                    .primary
                    .cli(&["INFO", "replication"])
                    .contains("connected_slaves:1")
        });
    }

    /// Loses the primary (SIGKILL) and promotes the replica; `between` runs after the
    /// promotion (e.g. to move the clients' front). The old primary then comes back, empty,
    /// as the new primary's replica.
    pub fn fail_over(&mut self, between: impl FnOnce(u16)) {
        self.primary.stop();
        self.promote_replica();
        between(self.replica.port);
        std::mem::swap(&mut self.primary, &mut self.replica);
        let port = self.primary.port.to_string();
        self.replica
            .restart_as(&["--replicaof", "127.0.0.1", &port]);
        self.wait_in_sync();
    }

    /// Promotes the replica the way an operator does after losing the primary.
    pub fn promote_replica(&self) {
        let out = self.replica.cli(&["REPLICAOF", "NO", "ONE"]);
        assert_eq!(out.trim(), "OK", "{out}");
        wait_until("the replica never became a primary", || {
            self.replica
                .cli(&["INFO", "replication"])
                .contains("role:master")
        });
    }
}

/// A Redis Cluster of primaries on loopback, slots split evenly.
pub struct Cluster {
    pub nodes: Vec<RedisServer>,
}

impl Cluster {
    /// `n` primaries, formed with `CLUSTER ADDSLOTSRANGE` and `CLUSTER MEET`; each node's
    /// bus port is a free port of its own (`--cluster-port`), so no port + 10000 clash.
    pub fn start(n: usize) -> Self {
        let nodes: Vec<RedisServer> = (0..n)
            .map(|_| {
                let bus = free_port().to_string();
                RedisServer::start_on(
                    free_port(),
                    Persistence::Off,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-port",
                        &bus,
                        "--cluster-node-timeout",
                        "2000",
                    ],
                )
            })
            .collect();
        let per = 16384 / n;
        for (i, node) in nodes.iter().enumerate() {
            let (from, to) = (i * per, if i + 1 == n { 16383 } else { (i + 1) * per - 1 });
            let out = node.cli(&[
                "CLUSTER",
                "ADDSLOTSRANGE",
                &from.to_string(),
                &to.to_string(),
            ]);
            assert_eq!(out.trim(), "OK", "{out}");
        }
        for node in &nodes[1..] {
            let bus = node.cli(&["CONFIG", "GET", "cluster-port"]);
            let bus = bus.lines().nth(1).unwrap_or("0").trim().to_string();
            let out = nodes[0].cli(&["CLUSTER", "MEET", "127.0.0.1", &node.port.to_string(), &bus]);
            assert_eq!(out.trim(), "OK", "{out}");
        }
        let cluster = Self { nodes };
        for node in &cluster.nodes {
            wait_until("the cluster never formed", || {
                node.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok")
            });
        }
        cluster
    }

    /// `redis+cluster://` at the first node (the client discovers the others).
    pub fn url(&self) -> String {
        format!("redis+cluster://127.0.0.1:{}", self.nodes[0].port)
    }

    /// The hash slot of `key`.
    pub fn slot(&self, key: &str) -> u16 {
        let out = self.nodes[0].cli(&["CLUSTER", "KEYSLOT", key]);
        out.trim().parse().expect("CLUSTER KEYSLOT")
    }

    /// The index of the node that serves `slot` now.
    pub fn owner(&self, slot: u16) -> usize {
        let myids: Vec<String> = self
            .nodes
            .iter()
            .map(|n| n.cli(&["CLUSTER", "MYID"]))
            .collect();
        let nodes = self.nodes[0].cli(&["CLUSTER", "NODES"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let owns = fields.iter().skip(8).any(|range| {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                match (a.parse::<u16>(), b.parse::<u16>()) {
                    (Ok(a), Ok(b)) => (a..=b).contains(&slot),
                    _ => false,
                }
            });
            if owns {
                if let Some(i) = myids.iter().position(|id| id.trim() == fields[0]) {
                    return i;
                }
            }
        }
        panic!("no node serves slot {slot}");
    }

    /// Moves `slot` with its keys from the node that has it to node `to`, as
    /// `redis-cli --cluster reshard` does: [`migrate_slot`](Self::migrate_slot), then
    /// [`settle_slot`](Self::settle_slot).
    pub fn move_slot(&self, slot: u16, to: usize) {
        self.migrate_slot(slot, to);
        self.settle_slot(slot, to);
    }

    /// The first half of a slot move: [`open_move`](Self::open_move), then
    /// [`migrate_keys`](Self::migrate_keys). Until [`settle_slot`](Self::settle_slot) the
    /// old owner answers `ASK` for its keys.
    pub fn migrate_slot(&self, slot: u16, to: usize) {
        self.open_move(slot, to);
        self.migrate_keys(slot, to);
    }

    /// Marks `slot` IMPORTING on node `to` and MIGRATING on its owner, its keys not yet
    /// sent: the owner serves a command whose keys it all holds and refuses the others.
    pub fn open_move(&self, slot: u16, to: usize) {
        let from = self.owner(slot);
        assert_ne!(from, to, "node {to} already serves slot {slot}");
        let (src, dst) = (&self.nodes[from], &self.nodes[to]);
        let (src_id, dst_id) = (src.cli(&["CLUSTER", "MYID"]), dst.cli(&["CLUSTER", "MYID"]));
        let (src_id, dst_id) = (src_id.trim(), dst_id.trim());
        let slot = slot.to_string();
        assert_eq!(
            dst.cli(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", src_id])
                .trim(),
            "OK"
        );
        assert_eq!(
            src.cli(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", dst_id])
                .trim(),
            "OK"
        );
    }

    /// `MIGRATE`s every key of `slot` from its owner to node `to` (after
    /// [`open_move`](Self::open_move)).
    pub fn migrate_keys(&self, slot: u16, to: usize) {
        let (src, dst) = (&self.nodes[self.owner(slot)], &self.nodes[to]);
        let slot = slot.to_string();
        loop {
            let keys = src.cli(&["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
            let keys: Vec<&str> = keys
                .lines()
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .collect();
            if keys.is_empty() {
                break;
            }
            let port = dst.port.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys);
            let out = src.cli(&args);
            assert_eq!(out.trim(), "OK", "MIGRATE: {out}");
        }
    }

    /// The second half of a slot move: node `to` serves `slot`, every node says so.
    pub fn settle_slot(&self, slot: u16, to: usize) {
        let dst_id = self.nodes[to].cli(&["CLUSTER", "MYID"]);
        let dst_id = dst_id.trim();
        let slot = slot.to_string();
        let mut order: Vec<&RedisServer> = vec![&self.nodes[to]];
        order.extend(
            self.nodes
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != to)
                .map(|(_, n)| n),
        );
        for node in order {
            let out = node.cli(&["CLUSTER", "SETSLOT", &slot, "NODE", dst_id]);
            assert_eq!(out.trim(), "OK", "{out}");
        }
    }

    /// How many times node `i` answered the error `code` (`INFO errorstats`) since the
    /// last [`reset_stats`](Self::reset_stats).
    pub fn errors(&self, i: usize, code: &str) -> u64 {
        let prefix = format!("errorstat_{code}:count=");
        self.nodes[i]
            .cli(&["INFO", "errorstats"])
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix.as_str())?.parse().ok())
            .unwrap_or(0)
    }

    /// Calls of `command` on every node together since the last [`reset_stats`](Self::reset_stats).
    pub fn calls(&self, command: &str) -> u64 {
        self.nodes.iter().map(|n| n.calls(command)).sum()
    }

    /// Every command each node served since the last reset, summed.
    pub fn all_calls(&self) -> u64 {
        self.nodes
            .iter()
            .flat_map(|n| {
                n.cli(&["INFO", "commandstats"])
                    .lines()
                    .filter_map(|l| {
                        l.split_once(":calls=")?
                            .1
                            .split(',')
                            .next()?
                            .parse::<u64>()
                            .ok()
                    })
                    .collect::<Vec<_>>()
            })
            .sum()
    }

    pub fn reset_stats(&self) {
        for node in &self.nodes {
            node.cli(&["CONFIG", "RESETSTAT"]);
        }
    }
}

/// A loopback TCP front for Redis whose target can be switched: what a gateway's
/// `--redis-url` names during a failover (a DNS name or a VIP moved to the new primary).
/// Switching drops every open connection, as a moved VIP does.
pub struct Front {
    pub addr: SocketAddr,
    target: Arc<watch::Sender<SocketAddr>>,
}

impl Front {
    pub async fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind front");
        let addr = listener.local_addr().expect("front addr");
        let (tx, rx) = watch::channel(SocketAddr::from(([127, 0, 0, 1], target)));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut rx = rx.clone();
                let to = *rx.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(to).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = rx.changed() => {}
                    }
                });
            }
        });
        Self {
            addr,
            target: Arc::new(tx),
        }
    }

    /// `redis://<front>/0`
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    /// Points new connections at `port` and drops the open ones.
    pub fn switch(&self, port: u16) {
        self.target
            .send_replace(SocketAddr::from(([127, 0, 0, 1], port)));
    }
}
