//! A short fanout against the real gateway, in-process on an ephemeral port: the accounting
//! must find every line delivered to every reader, once and in order.

use clap::Parser;
use tailgate_loadtest::Settings;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const SECRET: &str = "loadtest-integration-secret";
const ISSUER: &str = "loadtest-iss";
const AUDIENCE: &str = "loadtest-aud";

/// Starts the gateway; dropping the returned sender shuts it down.
async fn start_gateway() -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let mut config = tailgate::Config::new_hmac(SECRET, ISSUER, AUDIENCE);
    // Every reader of the load test shares one token subject.
    config.limits.max_streams_per_subject = usize::MAX;
    let server = tokio::spawn(async move {
        let shutdown = async move {
            let _ = shutdown_rx.await;
        };
        tailgate::run(listener, config, shutdown)
            .await
            .expect("gateway runs");
    });
    (format!("http://{addr}"), shutdown_tx, server)
}

fn settings(url: &str, scenario: &str, extra: &[&str]) -> Settings {
    let mut args = vec![
        "tailgate-loadtest",
        scenario,
        "--url",
        url,
        "--jwt-secret",
        SECRET,
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        AUDIENCE,
        "--no-progress",
    ];
    args.extend_from_slice(extra);
    let s = Settings::parse_from(args);
    s.validate().expect("valid settings");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_delivers_every_line_to_every_reader() {
    let (url, shutdown_tx, server) = start_gateway().await;
    let s = settings(
        &url,
        "fanout",
        &[
            "--jobs",
            "2",
            "--readers",
            "150",
            "--rate",
            "200",
            "--duration",
            "2s",
            "--line-bytes",
            "80",
        ],
    );
    let report = tailgate_loadtest::run(&s).await.expect("run completes");
    println!("{}", report.table());
    assert!(
        report.published >= 2 * 300,
        "published {}",
        report.published
    );
    assert_eq!(report.readers, 300);
    assert_eq!(
        (report.lost, report.duplicated, report.reordered),
        (0, 0, 0)
    );
    assert_eq!(report.delivered, report.published * 150);
    assert_eq!(report.expected_delivered, Some(report.published * 150));
    assert_eq!(report.completed_readers, 300);
    assert_eq!(report.errors, 0, "{:?}", report.errors_by_kind);
    assert!(report.latency_us.count > 0 && report.latency_us.p50 > 0);
    assert_eq!(report.exit_code(), 0);
    drop(shutdown_tx);
    let _ = server.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_loses_nothing_across_reconnects() {
    let (url, shutdown_tx, server) = start_gateway().await;
    let s = settings(
        &url,
        "resume",
        &[
            "--jobs",
            "1",
            "--readers",
            "40",
            "--rate",
            "300",
            "--duration",
            "2s",
            "--hold",
            "300ms",
        ],
    );
    let report = tailgate_loadtest::run(&s).await.expect("run completes");
    println!("{}", report.table());
    assert_eq!(
        (report.lost, report.duplicated, report.reordered),
        (0, 0, 0)
    );
    assert_eq!(report.delivered, report.published * 40);
    assert!(
        report.connects > 40,
        "readers reconnected: {}",
        report.connects
    );
    assert_eq!(report.errors, 0, "{:?}", report.errors_by_kind);
    drop(shutdown_tx);
    let _ = server.await;
}
