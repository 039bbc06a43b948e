//! A store call never blocks a runtime worker: with Redis behind a proxy that stalls for
//! 2 s, dozens of requests wait on it at once while probes keep answering within 50 ms
//! and the process starts no thread per waiting request (a blocking call would hand
//! each one's worker to a new thread, and freeze its whole connection). The machine
//! running the tests is shared, so 9 probes in 10 must answer within 50 ms and every one
//! well within the stall: a probe behind a blocked worker would wait the whole 2 s.

use std::time::{Duration, Instant};

use tailgate_tests::daemon::{test_args, Daemon};
use tailgate_tests::http_client;
use tailgate_tests::proxy::{Budget, Proxy};
use tailgate_tests::publish_ndjson;
use tailgate_tests::redis::{available, Persistence, RedisServer};

/// How long Redis hangs.
const STALL: Duration = Duration::from_secs(2);
/// Requests waiting on Redis at once.
const WAITING: usize = 40;

fn threads(gw: &Daemon) -> usize {
    std::fs::read_dir(format!("/proc/{}/task", gw.child.id())).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_blocks_no_worker_and_no_probe() {
    if !available() {
        return;
    }
    let redis = RedisServer::start(Persistence::Off);
    let target = redis.url();
    let port: u16 = target
        .trim_end_matches("/0")
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("redis port");
    let proxy = Proxy::start(([127, 0, 0, 1], port).into(), Budget::default()).await;
    let mut args = test_args();
    args.extend([
        "--redis-url".to_string(),
        format!("redis://{}/0", proxy.addr),
        "--redis-timeout-ms".to_string(),
        "5000".to_string(),
    ]);
    let gw = Daemon::start(&args);
    let line = "{\"line\":\"warm\"}\n".to_string();
    let mut ready = false;
    for _ in 0..100 {
        if publish_ndjson(gw.addr, "warm", line.clone()).await.status == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "redis never became usable through the proxy");
    let idle_threads = threads(&gw);

    proxy.stall(true);
    let started = Instant::now();
    let waiting: Vec<_> = (0..WAITING)
        .map(|i| {
            let addr = gw.addr;
            tokio::spawn(async move {
                publish_ndjson(addr, &format!("stalled-{i}"), "{\"line\":\"x\"}\n").await
            })
        })
        .collect();
    // Throughout the stall, probes answer at once and no thread is started per waiter.
    let (mut took, mut most_threads) = (Vec::new(), idle_threads);
    while started.elapsed() < STALL {
        let asked = Instant::now();
        let reply =
            http_client::request(gw.addr, "GET", "/healthz", &[], bytes::Bytes::new()).await;
        assert_eq!(reply.status, 200);
        took.push(asked.elapsed());
        most_threads = most_threads.max(threads(&gw));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(took.len() >= 20, "only {} probes in the stall", took.len());
    took.sort();
    let (p90, slowest) = (took[took.len() * 9 / 10], took[took.len() - 1]);
    assert!(
        p90 <= Duration::from_millis(50) && slowest < Duration::from_millis(500),
        "probes took {p90:?} (p90) and {slowest:?} (slowest) while redis stalled"
    );
    assert!(
        most_threads <= idle_threads + 16,
        "threads grew from {idle_threads} to {most_threads} with {WAITING} requests waiting on redis"
    );
    proxy.stall(false);
    for w in waiting {
        let reply = w.await.expect("request task");
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
}
