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
    store: Arc<RedisStore>,
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
    Some(Server { child, store })
}

fn limits() -> JobLimits {
    JobLimits {
        memory_bytes: usize::MAX,
        max_log_bytes: 300,
        max_subscribers: 2,
        gather: Duration::ZERO,
    }
}

fn job_log(recovered: Recovered, store: Arc<dyn Store>) -> JobLog {
    JobLog::new(
        recovered,
        String::new(),
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
            let Ok(Opened::Job { recovered, .. }) = server.store.open(&id, None) else {
                panic!("cannot load a new job");
            };
            let store: Arc<dyn Store> = server.store.clone();
            let shared = job_log(recovered, store);
            let local = job_log(
                Recovered {
                    id: id.clone(),
                    progress: Progress::new(0),
                    confirmations: Vec::new(),
                    broken: None,
                },
                Arc::new(MemoryStore::new(60_000)),
            );
            for batch in batches {
                let (mut a, mut b) = (Tally::default(), Tally::default());
                let ra = local.append(batch.clone(), &mut a);
                let rb = shared.append(batch, &mut b);
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
