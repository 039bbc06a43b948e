//! Real `redis-server` processes on free loopback ports, for the shared-store tests.
//! Where `redis-server` is missing the tests skip with a message; with `CI=true` they
//! fail instead.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::child::ChildServer;
use crate::daemon::TempDir;

/// Whether Redis tests can run here; panics under `CI=true` when they cannot.
pub fn available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        let why = "redis-server is not installed (apt-get install -y redis-server)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("skipped: {why}");
    }
    found
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// How a server keeps its data across a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Append-only file, fsynced on every write: a restart keeps everything.
    Always,
    /// Nothing: a restart loses every key.
    Off,
}

/// A `redis-server` on a loopback port, stopped on drop.
pub struct RedisServer {
    child: ChildServer,
    pub port: u16,
    dir: TempDir,
    persistence: Persistence,
    extra: Vec<String>,
    /// The CA `redis-cli` trusts when the server speaks TLS only.
    tls_ca: Option<String>,
}

impl RedisServer {
    /// Starts a server on a free port.
    pub fn start(persistence: Persistence) -> Self {
        Self::start_on(free_port(), persistence, &[])
    }

    /// Starts a server on `port` with extra `--flag value` arguments.
    pub fn start_on(port: u16, persistence: Persistence, extra: &[&str]) -> Self {
        let mut server = Self {
            child: ChildServer::default(),
            port,
            dir: TempDir::new(&format!("redis-{port}")),
            persistence,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            tls_ca: None,
        };
        std::fs::create_dir_all(server.dir.path()).expect("redis dir");
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--dir", &self.dir.path().display().to_string()])
            .args(["--save", ""])
            .args(["--protected-mode", "no", "--daemonize", "no"]);
        match self.persistence {
            Persistence::Always => cmd.args(["--appendonly", "yes", "--appendfsync", "always"]),
            Persistence::Off => cmd.args(["--appendonly", "no"]),
        };
        cmd.args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child.spawn(&mut cmd, "redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]).trim() != "PONG" {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a server that speaks only TLS on a free port, with `cert` and `key` (signed
    /// by `ca`); `redis-cli` trusts `ca`.
    pub fn start_tls(ca: &str, cert: &str, key: &str) -> Self {
        let port = free_port();
        let tls = [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            cert,
            "--tls-key-file",
            key,
            "--tls-ca-cert-file",
            ca,
            "--tls-auth-clients",
            "no",
        ];
        let mut server = Self {
            child: ChildServer::default(),
            port,
            dir: TempDir::new(&format!("redis-tls-{port}")),
            persistence: Persistence::Off,
            extra: tls.iter().map(|s| s.to_string()).collect(),
            tls_ca: Some(ca.to_string()),
        };
        std::fs::create_dir_all(server.dir.path()).expect("redis dir");
        server.spawn();
        server
    }

    /// `redis://127.0.0.1:<port>/0`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Runs `redis-cli` against the server; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(ca) = &self.tls_ca {
            cmd.args(["--tls", "--cacert", ca]);
        }
        let out = cmd.args(args).output().expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Kills the server (SIGKILL); with [`Persistence::Always`] nothing written is lost.
    pub fn stop(&mut self) {
        self.child.stop();
    }

    /// Starts it again on the same port and directory.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts it again on the same port with `extra` flags instead of the earlier ones
    /// (e.g. `--replicaof`).
    pub fn restart_as(&mut self, extra: &[&str]) {
        self.stop();
        self.extra = extra.iter().map(|s| s.to_string()).collect();
        self.spawn();
    }

    /// Sends `signal` (`STOP`: frozen like a hung host, `CONT`: running again).
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.child.id() {
            let status = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(pid.to_string())
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -{signal}");
        }
    }

    /// Calls of `command` since the last `CONFIG RESETSTAT`, from `INFO commandstats`.
    pub fn calls(&self, command: &str) -> u64 {
        let want = format!("cmdstat_{}:calls=", command.to_lowercase());
        self.cli(&["INFO", "commandstats"])
            .lines()
            .find_map(|l| l.strip_prefix(&want))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

// Dropped, its `ChildServer` stops it before its directory goes (field order).
