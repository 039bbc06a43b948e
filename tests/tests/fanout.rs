//! Fan-out: many readers get every line once and in order; a stalled reader slows nobody.

use std::time::Duration;

use tailgate_tests::{bearer, read_token, Event, SseStream, TestServer};
use tokio::io::AsyncWriteExt;

fn assert_all_lines(events: &[Event], total: u64) {
    let logs: Vec<&Event> = events.iter().filter(|e| e.event == "log").collect();
    assert_eq!(logs.len() as u64, total, "every line once");
    for (i, e) in logs.iter().enumerate() {
        let n = i as u64 + 1;
        assert_eq!(e.seq(), n, "in order");
        assert_eq!(
            e.json()["line"].as_str(),
            Some(format!("line {n}").as_str())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_readers_each_get_every_line_in_order() {
    let server = TestServer::start().await;
    let readers = 1000;
    let mut streams: Vec<SseStream> = Vec::with_capacity(readers);
    // Half the readers join before anything is published, half while it is.
    for _ in 0..readers / 2 {
        streams.push(server.subscribe("many", "", &[]).await);
    }
    let upload = server.start_upload("many", "text/plain").await;
    let total = 300u64;
    for i in 1..=total / 2 {
        upload.send(format!("line {i}\n")).await;
    }
    for _ in readers / 2..readers {
        streams.push(server.subscribe("many", "", &[]).await);
    }
    for i in total / 2 + 1..=total {
        upload.send(format!("line {i}\n")).await;
    }
    assert_eq!(upload.finish().await.status, 200);
    server.set_status("many", "succeeded", Some(0)).await;
    let mut tasks = tokio::task::JoinSet::new();
    for mut sse in streams {
        tasks.spawn(async move { sse.collect(Duration::from_secs(60)).await });
    }
    let mut done = 0;
    while let Some(events) = tasks.join_next().await {
        let events = events.expect("reader task");
        assert_all_lines(&events, total);
        assert_eq!(events.last().map(|e| e.event.as_str()), Some("status"));
        done += 1;
    }
    assert_eq!(done, readers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_never_reads_slows_nobody() {
    let server = TestServer::start().await;
    // A reader that sends its request and then never reads a byte.
    let mut stalled = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let req = format!(
        "GET /v1/jobs/stall/logs HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\n\r\n",
        bearer(&read_token("stall"))
    );
    stalled.write_all(req.as_bytes()).await.unwrap();
    let mut good = server.subscribe("stall", "", &[]).await;
    // Far more than the loopback socket buffers hold: ~24 MB.
    let total = 24_000u64;
    let pad = "p".repeat(1000);
    let upload = server.start_upload("stall", "text/plain").await;
    let reader = tokio::spawn(async move { good.collect(Duration::from_secs(120)).await });
    let publish = async {
        for chunk in 0..total / 100 {
            let body: String = (chunk * 100 + 1..=chunk * 100 + 100)
                .map(|i| format!("line {i} {pad}\n"))
                .collect();
            upload.send(body).await;
        }
        upload.finish().await
    };
    let reply = tokio::time::timeout(Duration::from_secs(120), publish)
        .await
        .expect("publisher was held back");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["accepted"], total);
    let status = server
        .get(
            "/v1/jobs/stall",
            &[("authorization", &bearer(&read_token("stall")))],
        )
        .await
        .json();
    assert_eq!(
        status["subscribers"], 2,
        "the stalled reader is still attached"
    );
    server.set_status("stall", "succeeded", Some(0)).await;
    let events = reader.await.unwrap();
    let logs: Vec<&Event> = events.iter().filter(|e| e.event == "log").collect();
    assert_eq!(logs.len() as u64, total);
    assert!(logs
        .iter()
        .enumerate()
        .all(|(i, e)| e.seq() == i as u64 + 1));
    drop(stalled);
}
