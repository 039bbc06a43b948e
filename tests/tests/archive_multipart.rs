//! Large archived objects go up in parts (multipart upload) and are published with a
//! conditional server-side copy, against a real SeaweedFS: the bucket keeps the first
//! writer, and kill -9 mid-upload leaves neither a half object nor a duplicate.

use object_store::aws::{AmazonS3Builder, S3CopyIfNotExists};
use object_store::path::Path as ObjectPath;
use object_store::{CopyMode, CopyOptions, ObjectStore, ObjectStoreExt, WriteMultipart};
use tailgate_tests::s3::{self, S3Server};

/// A client of the bucket with the copy-if-not-exists the gateway uses.
fn client(s3: &S3Server) -> std::sync::Arc<dyn ObjectStore> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    std::sync::Arc::new(
        AmazonS3Builder::new()
            .with_bucket_name(s3::BUCKET)
            .with_endpoint(s3.endpoint())
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id(s3::ACCESS_KEY)
            .with_secret_access_key(s3::SECRET_KEY)
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
