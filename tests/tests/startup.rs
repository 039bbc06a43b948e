//! Start-up truths of `tailgate serve`: `--print-config` when something is missing, its
//! defaults and redacted URLs (awkward passwords included), exit 64 for a port in use and
//! for a bad TLS pair (before "listening"), SIGHUP that never kills the gateway, and
//! `/metrics` kept off the main listener unless `--metrics-public`.

use std::time::Duration;

use tailgate_tests::gateway::Gateway;
use tailgate_tests::tls::TestPki;
use tailgate_tests::{bearer, cli, http_client, read_token, AUDIENCE, ISSUER, SECRET};

const WAIT: Duration = Duration::from_secs(10);

fn token_args() -> Vec<&'static str> {
    vec![
        "--jwt-secret",
        SECRET,
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        AUDIENCE,
    ]
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tailgate-startup-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The printed line of `key` (`key = ...` or `# key is not set ...`).
fn line<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find(|l| {
            l.starts_with(&format!("{key} = ")) || l.starts_with(&format!("# {key} is not set"))
        })
        .unwrap_or_else(|| panic!("{key} not printed:\n{text}"))
}

#[tokio::test]
async fn print_config_prints_with_the_secret_missing_and_shows_defaults() {
    let done = cli::run(cli::tailgate(&["serve", "--print-config"]), WAIT).await;
    assert_eq!(done.code, Some(64), "{}", done.stderr);
    assert!(
        done.stderr.contains("config jwt-secret: missing"),
        "{}",
        done.stderr
    );
    let text = &done.stdout;
    let parsed: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("not TOML ({e}):\n{text}"));
    assert!(
        text.starts_with("# Cannot start as it is: config jwt-secret"),
        "{text}"
    );
    assert_eq!(
        line(text, "jwt_secret"),
        "# jwt_secret is not set # default"
    );
    assert_eq!(
        line(text, "jwt_issuer"),
        "# jwt_issuer is not set # default"
    );
    // Keys with defaults show them, even where the feature is off.
    for (key, want) in [
        ("jwks_refresh_secs", "jwks_refresh_secs = 300 # default"),
        ("redis_timeout_ms", "redis_timeout_ms = 2000 # default"),
        ("data_dir", "data_dir = \"./tailgate-data\" # default"),
        ("metrics_public", "metrics_public = false # default"),
        ("job_memory_bytes", "job_memory_bytes = 4194304 # default"),
        ("shutdown_grace_secs", "shutdown_grace_secs = 0 # default"),
    ] {
        assert_eq!(line(text, key), want);
    }
    assert_eq!(parsed["keepalive_secs"].as_integer(), Some(15));
}

#[tokio::test]
async fn print_config_never_shows_url_secrets_however_awkward() {
    let https = "https://jwks.example.com/keys.json?api_key=SECRET_API_KEY";
    for password in [
        "SECRET@1",
        "SECRET:2:x",
        "SECRET%40%3A3",
        "SECRET@4:/x%",
        "SECRET?5#x",
    ] {
        let url = format!("redis://SECRET_USER:{password}@cache.internal:6379/0?timeout=SECRET_Q");
        let mut cmd = cli::tailgate(&["serve", "--print-config"]);
        cmd.env("TAILGATE_REDIS_URL", &url)
            .env("TAILGATE_JWKS_URL", https)
            .env("TAILGATE_JWT_SECRET", SECRET)
            .env("TAILGATE_JWT_ISSUER", ISSUER)
            .env("TAILGATE_JWT_AUDIENCE", AUDIENCE);
        let done = cli::run(cmd, WAIT).await;
        let all = format!("{}{}", done.stdout, done.stderr);
        assert!(!all.contains("SECRET"), "{password}: {all}");
        if done.code == Some(0) {
            assert_eq!(
                line(&done.stdout, "redis_url"),
                "redis_url = \"redis://<redacted>@cache.internal:6379/0?<redacted>\" # env",
                "{password}"
            );
            assert_eq!(
                line(&done.stdout, "jwks_url"),
                "jwks_url = \"https://jwks.example.com/keys.json?<redacted>\" # env"
            );
        } else {
            // A URL the Redis client cannot parse is refused, naming the key only.
            assert_eq!(done.code, Some(64), "{password}: {all}");
            assert!(done.stderr.contains("config redis-url"), "{all}");
        }
    }
}

#[tokio::test]
async fn a_port_in_use_exits_64() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let mut args = vec!["serve", "--memory-only", "--listen", &addr];
    args.extend(token_args());
    let done = cli::run(cli::tailgate(&args), WAIT).await;
    assert_eq!(done.code, Some(64), "{}", done.stderr);
    assert!(done.stderr.contains("config listen"), "{}", done.stderr);

    let mut args = vec![
        "serve",
        "--memory-only",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        &addr,
    ];
    args.extend(token_args());
    let done = cli::run(cli::tailgate(&args), WAIT).await;
    assert_eq!(done.code, Some(64), "{}", done.stderr);
    assert!(
        done.stderr.contains("config metrics-listen"),
        "{}",
        done.stderr
    );
}

#[tokio::test]
async fn a_mismatched_tls_pair_exits_64_before_listening() {
    let dir = temp_dir("tls");
    let a = TestPki::new(&dir, "a");
    let b = TestPki::new(&dir, "b");
    let cert = a.files.cert.display().to_string();
    let key = b.files.key.display().to_string();
    let mut args = vec![
        "serve",
        "--memory-only",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ];
    args.extend(token_args());
    let done = cli::run(cli::tailgate(&args), WAIT).await;
    assert_eq!(done.code, Some(64), "{}", done.stderr);
    assert!(done.stderr.contains("config tls-key"), "{}", done.stderr);
    assert!(!done.stdout.contains("listening"), "{}", done.stdout);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sighup_without_tls_is_logged_and_serving_goes_on() {
    let mut gw = Gateway::start(&token_args(), &[]).await;
    for _ in 0..2 {
        gw.signal("HUP");
        gw.wait_log("nothing to reload without TLS", WAIT).await;
    }
    let auth = bearer(&read_token("after-hup"));
    let status = http_client::request(
        gw.addr,
        "GET",
        "/v1/jobs/after-hup",
        &[("authorization", &auth)],
        Default::default(),
    )
    .await;
    assert_eq!(status.status, 200, "{}", status.text());
    assert_eq!(
        gw.stop(WAIT).await,
        Some(0),
        "SIGTERM still drains and exits 0"
    );
}

#[tokio::test]
async fn metrics_stay_off_the_main_listener_unless_public() {
    let gw = Gateway::start(&token_args(), &[]).await;
    let refused = http_client::request(gw.addr, "GET", "/metrics", &[], Default::default()).await;
    refused.assert_error(404, "not_found");
    assert!(!refused.text().contains("tailgate_"), "{}", refused.text());
    assert_eq!(gw.stop(WAIT).await, Some(0));

    let mut args = token_args();
    args.push("--metrics-public");
    let gw = Gateway::start(&args, &[]).await;
    let scrape = http_client::request(gw.addr, "GET", "/metrics", &[], Default::default()).await;
    assert_eq!(scrape.status, 200);
    assert!(scrape.text().contains("tailgate_connections_open"));
    assert_eq!(gw.stop(WAIT).await, Some(0));
}
