//! deploy/ works: the documented nginx config in front of a gateway streams a line to an
//! SSE reader while the upload stays open; the Kubernetes kustomizations render and pass a
//! schema check; the systemd unit verifies clean; the sample configs load in the binary.
//!
//! Each check needs a tool (nginx, kubectl, kubernetes-validate, systemd-analyze). Outside
//! CI a missing tool skips the check with a message; with `CI=true` it fails (`.ci/run`
//! installs them).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tailgate_tests::{bearer, cli, read_token, SseStream, TestServer};

const WAIT: Duration = Duration::from_secs(10);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The tool at the first existing path, or `None` after saying why the check is skipped
/// (failing instead under `CI=true`).
fn tool(name: &str, candidates: &[PathBuf]) -> Option<PathBuf> {
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Some(found.clone());
    }
    let which = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if which.is_some() {
        return which;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{name} is missing; .ci/run installs it");
    }
    eprintln!("skipped: {name} is not installed");
    None
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tailgate-deploy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// nginx on `port`, with the upstream pointed at `gateway` and the documented location
/// block; stopped when dropped.
struct Nginx(std::process::Child);

impl Nginx {
    fn start(bin: &Path, dir: &Path, port: u16, gateway: std::net::SocketAddr) -> Self {
        let http = std::fs::read_to_string(root().join("deploy/nginx/tailgate-http.conf"))
            .expect("deploy/nginx/tailgate-http.conf")
            .replace("server 127.0.0.1:8080;", &format!("server {gateway};"));
        std::fs::write(dir.join("tailgate-http.conf"), http).expect("write");
        let locations = root().join("deploy/nginx/tailgate-locations.conf");
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log stderr warn;\nevents {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n\
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             include {d}/tailgate-http.conf;\n\
             server {{\n    listen 127.0.0.1:{port};\n    include {};\n  }}\n}}\n",
            locations.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).expect("write nginx.conf");
        let child = Command::new(bin)
            .args(["-p", &d.to_string(), "-e", "stderr", "-c"])
            .arg(dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .spawn()
            .expect("start nginx");
        Self(child)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn nginx_with_the_documented_config_streams_a_line_while_the_upload_is_open() {
    let candidates = [PathBuf::from("/usr/sbin/nginx")];
    let Some(bin) = tool("nginx", &candidates) else {
        return;
    };
    let server = TestServer::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = temp_dir("nginx");
    let _nginx = Nginx::start(&bin, &dir, port, server.addr);
    let proxy: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    // nginx is up once it accepts.
    let started = Instant::now();
    while tokio::net::TcpStream::connect(proxy).await.is_err() {
        assert!(started.elapsed() < WAIT, "nginx did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let job = "through-nginx";
    let auth = bearer(&read_token(job));
    let resp = tailgate_tests::http_client::open(
        proxy,
        "GET",
        &format!("/v1/jobs/{job}/logs"),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let mut reader = SseStream::new(resp.into_body());
    reader.wait_comments(1).await;
    // A compressed reader through the same nginx: the gateway's gzip passes through, flushed
    // per event (nginx's own gzip is off in the snippet).
    let mut gzip_reader = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "-N",
            "--compressed",
            "-H",
            "accept-encoding: gzip",
            "-H",
        ])
        .arg(format!("authorization: {auth}"))
        .arg(format!("http://{proxy}/v1/jobs/{job}/logs"))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("curl");
    let mut gzip_lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        gzip_reader.stdout.take().expect("stdout"),
    ));

    let upload = tailgate_tests::Upload::start(
        proxy,
        &format!("/v1/jobs/{job}/logs"),
        &[
            (
                "authorization",
                &bearer(&tailgate_tests::publish_token(job)),
            ),
            ("content-type", "text/plain"),
        ],
    )
    .await;
    for line in ["first line", "second line"] {
        let sent = Instant::now();
        upload.send(format!("{line}\n")).await;
        let event = reader.next_within(WAIT).await.expect("event through nginx");
        let took = sent.elapsed();
        assert_eq!(event.json()["line"], line);
        assert!(
            took < Duration::from_millis(500),
            "{line} took {took:?} through nginx"
        );
        let decoded = tokio::time::timeout(WAIT, async {
            while let Some(l) = gzip_lines.next_line().await.expect("curl output") {
                if l.contains(line) {
                    return sent.elapsed();
                }
            }
            panic!("the compressed stream ended before {line:?}");
        })
        .await
        .expect("the line decoded from gzip through nginx");
        assert!(
            decoded < Duration::from_millis(500),
            "{line} took {decoded:?} to decode from gzip through nginx"
        );
    }
    let reply = upload.finish().await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["accepted"], 2);
    server.stop().await;
}

#[test]
fn the_tls_http2_server_example_passes_nginx_t() {
    let Some(bin) = tool("nginx", &[PathBuf::from("/usr/sbin/nginx")]) else {
        return;
    };
    let dir = temp_dir("nginx-t");
    let pki = tailgate_tests::tls::TestPki::new(&dir, "proxy");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let server = std::fs::read_to_string(root().join("deploy/nginx/tailgate-server.conf"))
        .expect("deploy/nginx/tailgate-server.conf")
        .replace("listen 443 ", &format!("listen 127.0.0.1:{port} "))
        .replace(
            "/etc/nginx/tls/logs.example.com.crt",
            &pki.files.cert.display().to_string(),
        )
        .replace(
            "/etc/nginx/tls/logs.example.com.key",
            &pki.files.key.display().to_string(),
        )
        .replace(
            "/etc/nginx/tailgate-locations.conf",
            &root()
                .join("deploy/nginx/tailgate-locations.conf")
                .display()
                .to_string(),
        );
    std::fs::write(dir.join("tailgate-server.conf"), server).expect("write");
    let http = std::fs::read_to_string(root().join("deploy/nginx/tailgate-http.conf"))
        .expect("deploy/nginx/tailgate-http.conf");
    std::fs::write(dir.join("tailgate-http.conf"), http).expect("write");
    let d = dir.display();
    let conf = format!(
        "pid {d}/nginx.pid;\nerror_log stderr warn;\nevents {{ worker_connections 16; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n\
         proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
         uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         include {d}/tailgate-http.conf;\n  include {d}/tailgate-server.conf;\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).expect("write nginx.conf");
    let out = Command::new(bin)
        .args(["-t", "-p", &d.to_string(), "-e", "stderr", "-c"])
        .arg(dir.join("nginx.conf"))
        .output()
        .expect("nginx -t");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nginx -t: {stderr}");
    assert!(stderr.contains("test is successful"), "{stderr}");
}

#[test]
fn kustomizations_render_and_pass_the_schema_check() {
    let Some(kubectl) = tool("kubectl", &[]) else {
        return;
    };
    let validator = tool(
        "kubernetes-validate",
        &[root().join("target/ci-venv/bin/kubernetes-validate")],
    );
    let dir = temp_dir("k8s");
    for (overlay, kinds) in [
        (
            "deploy/k8s",
            &[
                "ConfigMap",
                "Secret",
                "Service",
                "Deployment",
                "PodDisruptionBudget",
                "PersistentVolumeClaim",
            ][..],
        ),
        (
            "deploy/k8s/multi-instance",
            &["HorizontalPodAutoscaler", "Deployment"][..],
        ),
    ] {
        let out = Command::new(&kubectl)
            .args(["kustomize"])
            .arg(root().join(overlay))
            .output()
            .expect("kubectl kustomize");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{overlay}: {stderr}");
        let yaml = String::from_utf8_lossy(&out.stdout).into_owned();
        for kind in kinds {
            assert!(
                yaml.contains(&format!("kind: {kind}\n")),
                "{overlay} lacks {kind}"
            );
        }
        // The preStop hook plus the gateway's grace and drain fit the termination period.
        assert!(yaml.contains("terminationGracePeriodSeconds: 30"), "{yaml}");
        if overlay == "deploy/k8s" {
            // One instance keeps its spool on a claim, and a rollout replaces the pod: a
            // surge pod could never take the data directory's lock (nor the RWO volume).
            assert!(yaml.contains("claimName: tailgate-data"), "{yaml}");
            assert!(yaml.contains("type: Recreate"), "{yaml}");
            assert!(!yaml.contains("emptyDir"), "{yaml}");
            assert!(!yaml.contains("maxSurge"), "{yaml}");
        } else {
            // Several instances share jobs through Redis, hold none on a volume, and roll.
            assert!(yaml.contains("name: TAILGATE_REDIS_URL"), "{yaml}");
            assert!(yaml.contains("type: RollingUpdate"), "{yaml}");
            assert!(!yaml.contains("kind: PersistentVolumeClaim"), "{yaml}");
        }
        let rendered = dir.join(overlay.replace('/', "-") + ".yaml");
        std::fs::write(&rendered, &yaml).expect("write");
        if let Some(validator) = &validator {
            let out = Command::new(validator)
                .args(["--strict", "--quiet"])
                .arg(&rendered)
                .output()
                .expect("kubernetes-validate");
            assert!(
                out.status.success(),
                "{overlay}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn the_systemd_unit_verifies_clean() {
    let Some(analyze) = tool("systemd-analyze", &[]) else {
        return;
    };
    let dir = temp_dir("systemd");
    // verify checks that ExecStart exists: point it at the binary under test.
    let unit = std::fs::read_to_string(root().join("deploy/tailgate.service"))
        .expect("deploy/tailgate.service")
        .replace(
            "/usr/local/bin/tailgate",
            &tailgate_tests::tailgate_bin().display().to_string(),
        );
    let path = dir.join("tailgate.service");
    std::fs::write(&path, unit).expect("write unit");
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

#[tokio::test]
async fn the_kubernetes_config_loads_in_the_binary() {
    let secret_file = temp_dir("k8s-config").join("jwt-secret");
    std::fs::write(&secret_file, "k8s-sample-secret-k8s-sample-secret\n").expect("secret");
    let config = root()
        .join("deploy/k8s/base/tailgate.toml")
        .display()
        .to_string();
    let mut cmd = cli::tailgate(&["serve", "--print-config", "--config", &config]);
    cmd.env("TAILGATE_JWT_SECRET_FILE", &secret_file);
    let done = cli::run(cmd, WAIT).await;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert!(
        done.stdout
            .lines()
            .any(|l| l == "metrics_listen = \"0.0.0.0:9090\" # file"),
        "{}",
        done.stdout
    );
}
