//! Large archived objects go up in parts (multipart upload) and are published with a
//! conditional server-side copy, against a real SeaweedFS: the bucket keeps the first
//! writer, and kill -9 mid-upload leaves neither a half object nor a duplicate.

use std::net::SocketAddr;

use object_store::aws::S3CopyIfNotExists;
use object_store::path::Path as ObjectPath;
use object_store::{CopyMode, CopyOptions, ObjectStore, ObjectStoreExt, WriteMultipart};
use tailgate_tests::daemon::TempDir;
use tailgate_tests::proxy::{Budget, Proxy};
use tailgate_tests::s3::{self, S3Server};

use crate::archive::{
    archiving, bucket, bucket_builder, object, object_exists, publish_records, spool_exists, sse,
    until, until_archived, PREFIX,
};

/// A client of the bucket with the copy-if-not-exists the gateway uses.
fn client(s3: &S3Server) -> std::sync::Arc<dyn ObjectStore> {
    std::sync::Arc::new(
        bucket_builder(s3)
            .with_copy_if_not_exists(S3CopyIfNotExists::Multipart)
            .build()
            .expect("s3 client"),
    )
}

async fn upload(store: &std::sync::Arc<dyn ObjectStore>, path: &ObjectPath, fill: u8) {
    let upload = store.put_multipart(path).await.expect("create multipart");
    let mut w = WriteMultipart::new_with_chunk_size(upload, 5 * 1024 * 1024);
    w.write(&vec![fill; 6 * 1024 * 1024]);
    w.finish().await.expect("complete multipart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bucket_keeps_the_first_conditional_multipart_copy() {
    if !s3::available("archive_multipart::conditional") {
        return;
    }
    let s3 = S3Server::start();
    let store = client(&s3);
    let (one, two, fin) = (
        ObjectPath::from("probe/one.part"),
        ObjectPath::from("probe/two.part"),
        ObjectPath::from("probe/final"),
    );
    upload(&store, &one, b'1').await;
    upload(&store, &two, b'2').await;
    let create = || CopyOptions {
        mode: CopyMode::Create,
        ..CopyOptions::default()
    };
    store
        .copy_opts(&one, &fin, create())
        .await
        .expect("first copy");
    let second = store.copy_opts(&two, &fin, create()).await;
    assert!(
        matches!(second, Err(object_store::Error::AlreadyExists { .. })),
        "the second copy: {second:?}"
    );
    let got = store
        .get(&fin)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(got.len(), 6 * 1024 * 1024);
    assert!(
        got.iter().all(|b| *b == b'1'),
        "the second writer overwrote the first"
    );
}

/// A build of `mb` MB of lines of random hex (which compress to about half): an object
/// of several 5 MiB parts. Then `succeeded`.
async fn big_build(addr: SocketAddr, job: &str, mb: usize) {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut records, mut size, mut n) = (Vec::new(), 0, 0u64);
    while size < mb * 1_000_000 {
        n += 1;
        let line = format!(
            "{n:08} {:016x}{:016x}{:016x}{:016x}",
            next(),
            next(),
            next(),
            next()
        );
        let record = format!("{{\"n\":{n},\"line\":\"{line}\"}}\n");
        size += record.len();
        records.push(record);
    }
    records.push(format!(
        "{{\"n\":{},\"status\":\"succeeded\",\"exit_code\":0}}\n",
        n + 1
    ));
    publish_records(addr, job, records).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_multipart_upload_leaves_no_object_and_the_restart_publishes_it_once() {
    if !s3::available("archive_multipart::kill_9") {
        return;
    }
    let s3 = S3Server::start();
    let store = bucket(&s3);
    let data = TempDir::new("archive-mp-kill");
    let dir = data.path().display().to_string();
    // Every connection to S3 is cut after 1 MiB up: the multipart upload starts, and
    // each 5 MiB part breaks in the middle, until the gateway is killed.
    let target: SocketAddr = format!("127.0.0.1:{}", s3.port).parse().expect("addr");
    let proxy = Proxy::start(
        target,
        Budget {
            up: Some(1024 * 1024),
            down: None,
        },
    )
    .await;
    let spool = ["--data-dir", dir.as_str()];
    let mut gw = archiving(&spool, &format!("http://{}", proxy.addr), &s3, &[]);
    big_build(gw.addr, "big", 16).await;
    let live = sse(gw.addr, "big", None).await.body;
    until(120, "a part upload broke mid-way", || proxy.broken() > 0).await;
    gw.kill9();
    assert!(
        !object_exists(&store, "big").await,
        "no half-written object"
    );
    assert!(spool_exists(data.path(), "big"), "the job stayed local");

    // Restarted with a working path to S3: uploaded again in parts, published once.
    let gw = archiving(&spool, &s3.endpoint(), &s3, &[]);
    until_archived(&store, data.path(), "big", 120).await;
    let size = store.head(&object("big")).await.expect("head").size;
    assert!(size > 5 * 1024 * 1024, "more than one part: {size} bytes");
    // Only the job's object: the attempt's parts object was deleted after the copy,
    // and uploads never completed are not objects.
    let listed: Vec<_> =
        futures_util::StreamExt::collect::<Vec<_>>(store.list(Some(&ObjectPath::from(PREFIX))))
            .await;
    let names: Vec<String> = listed
        .into_iter()
        .map(|m| m.expect("list").location.to_string())
        .collect();
    assert_eq!(names, vec![object("big").to_string()]);
    assert!(sse(gw.addr, "big", None).await.body == live);
}
