//! The job script against the local append it stands in for: the same random batches
//! (resent `n`s, the size limit, statuses, records after the end) go into a memory-only
//! `JobLog` and one over a real `redis-server`; records, tallies and counters must agree
//! (timestamps aside). Skipped with a message where `redis-server` is missing; with
//! `CI=true` it fails instead.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::Value;

use super::{RedisSettings, RedisStore};
use crate::job_id::JobId;
use crate::job_log::{Incoming, JobLimits, JobLog, Read, Tally};
use crate::memory::MemoryBudget;
use crate::record::{JobStatus, RecordBody, Stream};
use crate::store::memory::MemoryStore;
use crate::store::{Opened, Progress, Recovered, Store};

struct Server {
    child: Child,
    port: u16,
    store: Arc<RedisStore>,
    /// Runs the store's tasks (health check, tailer) and the appends.
    rt: tokio::runtime::Runtime,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server() -> Option<Server> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(child) = child else {
        let why = "redis-server is not installed: the script model test did not run";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("skipped: {why}");
        return None;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let entered = rt.enter();
    let store = RedisStore::open(RedisSettings {
        url: format!("redis://127.0.0.1:{port}/0"),
        cluster: false,
        timeout: Duration::from_secs(2),
        wait_replicas: 0,
        retention: Duration::from_secs(60),
        tombstone_ttl: Duration::from_secs(60),
    })
    .expect("open");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.unready().is_some() {
        assert!(std::time::Instant::now() < deadline, "redis never ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(entered);
    Some(Server {
        child,
        port,
        store,
        rt,
    })
}

fn limits() -> JobLimits {
    JobLimits {
        memory_bytes: usize::MAX,
        max_log_bytes: 300,
        max_subscribers: 2,
        gather: Duration::ZERO,
    }
}

fn job_log(recovered: Recovered, store: Arc<Store>) -> JobLog {
    JobLog::new(
        recovered,
        limits(),
        Arc::new(MemoryBudget::new(usize::MAX)),
        store,
    )
}

fn incoming() -> impl Strategy<Value = Incoming> {
    let n = proptest::option::weighted(0.7, 0u64..30);
    let body = prop_oneof![
        6 => ("[a-z é\\r]{0,40}", prop::bool::ANY).prop_map(|(line, err)| RecordBody::Log {
            stream: if err { Stream::Stderr } else { Stream::Stdout },
            line,
        }),
        1 => (0usize..3, proptest::option::of(-2i32..3)).prop_map(|(s, exit_code)| {
            let status = [JobStatus::Running, JobStatus::Succeeded, JobStatus::Failed][s];
            RecordBody::Status { status, exit_code }
        }),
        1 => ("[a-z]{1,8}", 0u32..1000).prop_map(|(kind, v)| RecordBody::Custom {
            kind,
            data: Value::from(v),
        }),
    ];
    (n, body).prop_map(|(n, body)| Incoming { n, body })
}

/// A held record as both must agree on: everything but its timestamp.
fn view(job: &JobLog) -> Vec<(u64, Option<u64>, Option<u32>, Value)> {
    let Read::Entries(entries) = job.read(1, usize::MAX, None) else {
        return Vec::new();
    };
    entries
        .iter()
        .map(|e| {
            let mut json: Value = serde_json::from_slice(e.json()).unwrap_or(Value::Null);
            json.as_object_mut().map(|o| o.remove("ts"));
            (e.seq(), e.n(), e.counted(), json)
        })
        .collect()
}

fn counters(job: &JobLog) -> Value {
    let mut s = serde_json::to_value(job.snapshot()).unwrap_or(Value::Null);
    if let Some(o) = s.as_object_mut() {
        for time in ["created_at", "started_at", "finished_at", "subscribers"] {
            o.remove(time);
        }
    }
    s
}

static JOBS: AtomicUsize = AtomicUsize::new(0);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn the_script_appends_as_the_local_log_does(
        batches in proptest::collection::vec(proptest::collection::vec(incoming(), 0..8), 1..8)
    ) {
        thread_local! { static SERVER: Option<Server> = server(); }
        SERVER.with(|server| {
            let Some(server) = server else { return Ok(()) };
            let id = JobId::parse(&format!("model-{}", JOBS.fetch_add(1, Ordering::Relaxed))).unwrap();
            let Ok(Opened::Job(recovered)) = server.rt.block_on(server.store.open_job(&id)) else {
                panic!("cannot load a new job");
            };
            let store = Arc::new(Store::from(Arc::clone(&server.store)));
            let shared = job_log(recovered, store);
            let local = job_log(
                Recovered::new(id.clone(), Progress::new(0)),
                Arc::new(Store::from(MemoryStore::new(60_000))),
            );
            for batch in batches {
                let (mut a, mut b) = (Tally::default(), Tally::default());
                let ra = server.rt.block_on(local.append(batch.clone(), &mut a));
                let rb = server.rt.block_on(shared.append(batch, &mut b));
                prop_assert_eq!(format!("{ra:?}"), format!("{rb:?}"));
                prop_assert_eq!(
                    (a.accepted, a.duplicates, a.last_seq, a.last_n),
                    (b.accepted, b.duplicates, b.last_seq, b.last_n)
                );
                prop_assert_eq!(view(&local), view(&shared));
                prop_assert_eq!(counters(&local), counters(&shared));
            }
            Ok(())
        })?;
    }
}

/// The records an append's notice carries are the records the append stored, byte for
/// byte (the SSE frame, `n`, what each counts), truncation line and status included; a
/// resend that stores nothing announces nothing.
#[test]
fn a_notice_carries_the_records_the_append_stored() {
    let Some(server) = server() else { return };
    let id = JobId::parse("notice-1").unwrap();
    let (push_tx, mut push_rx) = tokio::sync::mpsc::unbounded_channel();
    let url = format!("redis://127.0.0.1:{}/0?protocol=resp3", server.port);
    let _sub = server.rt.block_on(async {
        let config = redis::AsyncConnectionConfig::new().set_push_sender(push_tx);
        let mut sub = redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .unwrap();
        sub.subscribe(super::keys::JobKeys::new(&id).log)
            .await
            .unwrap();
        sub
    });
    let Ok(Opened::Job(recovered)) = server.rt.block_on(server.store.open_job(&id)) else {
        panic!("cannot load a new job");
    };
    let shared = job_log(recovered, Arc::new(Store::from(Arc::clone(&server.store))));
    let line = |n: u64, stream: Stream, line: &str| Incoming {
        n: Some(n),
        body: RecordBody::Log {
            stream,
            line: line.into(),
        },
    };
    let batches = vec![
        vec![
            line(1, Stream::Stdout, "héllo \"x\"\r\nid: 9"),
            line(2, Stream::Stderr, "second"),
            Incoming {
                n: None,
                body: RecordBody::Custom {
                    kind: "progress".into(),
                    data: serde_json::json!({"pct": 40, "s": "a b\n"}),
                },
            },
        ],
        // A resend: nothing stored, nothing announced.
        vec![line(2, Stream::Stderr, "second")],
        // Past the size limit (300 bytes): one truncation line, then counted only.
        (3..12)
            .map(|n| line(n, Stream::Stdout, &"y".repeat(60)))
            .collect(),
        vec![Incoming {
            n: None,
            body: RecordBody::Status {
                status: JobStatus::Failed,
                exit_code: Some(3),
            },
        }],
    ];
    for batch in batches {
        let _ = server
            .rt
            .block_on(shared.append(batch, &mut Tally::default()));
    }
    let Read::Entries(stored) = shared.read(1, usize::MAX, None) else {
        panic!("nothing stored");
    };
    let mut announced = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while announced.len() < stored.len() {
        assert!(std::time::Instant::now() < deadline, "notices missing");
        match push_rx.try_recv() {
            Ok(info) if info.kind == redis::PushKind::Message => {
                let Some(redis::Value::BulkString(payload)) = info.data.get(1) else {
                    panic!("a notice without payload");
                };
                let header = super::notice::header(payload).expect("a header");
                let records = super::notice::records(payload, 0).expect("records");
                assert_eq!(header.first, records[0].seq());
                assert_eq!(header.last, records[records.len() - 1].seq());
                announced.extend(records);
            }
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    let summary = |e: &crate::entry::Entry| (e.seq(), e.n(), e.counted(), e.kind(), e.sse.clone());
    assert_eq!(
        announced.iter().map(|e| summary(e)).collect::<Vec<_>>(),
        stored.iter().map(|e| summary(e)).collect::<Vec<_>>()
    );
    assert!(
        stored.iter().any(|e| e.counted().is_none()),
        "the batch crossed the size limit"
    );
    assert!(push_rx.try_recv().is_err(), "a notice for nothing stored");
}
