//! Where archived logs live: the `object_store` crate's client for `--archive-url`
//! (`s3://bucket/prefix`, or `file:///dir` for a shared filesystem and the unit tests),
//! and each job's object name under the prefix.
//!
//! `object_store` signs S3 requests itself (no hand-written SigV4), reads the standard
//! `AWS_*` variables, files and roles, and puts S3, GCS, Azure and local files behind one
//! API with conditional puts and ranged reads: what the archive needs, and well kept.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3CopyIfNotExists};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, RetryConfig};

use super::ArchiveConfig;
use crate::job_id::JobId;

/// What every archived object's name ends with.
pub(crate) const SUFFIX: &str = ".tglog";
/// Under the prefix, where large objects go up in parts before a conditional copy
/// publishes them (a lifecycle rule should expire it after a day: a writer killed
/// between the two leaves its attempt there).
pub(crate) const UPLOADS: &str = ".uploads";

/// Why the archive cannot be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BucketError {
    #[error("archive-url must be s3://bucket[/prefix] or file:///dir")]
    Url,
    #[error("cannot open the archive: {0}")]
    Open(#[from] object_store::Error),
}

/// The bucket and the prefix every object name starts with.
pub(crate) struct Bucket {
    pub(crate) store: Arc<dyn ObjectStore>,
    prefix: String,
}

impl Bucket {
    pub(crate) fn open(config: &ArchiveConfig) -> Result<Self, BucketError> {
        let (scheme, rest) = config.url.split_once("://").ok_or(BucketError::Url)?;
        let (root, prefix) = match rest.split_once('/') {
            Some((root, prefix)) => (root, prefix.trim_matches('/')),
            None => (rest, ""),
        };
        let store: Arc<dyn ObjectStore> = match scheme {
            "s3" if !root.is_empty() && !root.contains('@') => {
                // The client's own retries stay short: the archiver retries whole
                // uploads with its own backoff, and a reader must not hang.
                let retry = RetryConfig {
                    max_retries: 2,
                    retry_timeout: Duration::from_secs(10),
                    ..RetryConfig::default()
                };
                let options = ClientOptions::new()
                    .with_timeout(config.timeout)
                    .with_connect_timeout(config.timeout);
                let mut builder = AmazonS3Builder::from_env();
                // A large object is published by a copy that must not replace another
                // writer's: a multipart copy completed with `If-None-Match: *` (S3,
                // SeaweedFS), unless AWS_COPY_IF_NOT_EXISTS names another way (R2's
                // header, for one).
                if builder
                    .get_config_value(&AmazonS3ConfigKey::CopyIfNotExists)
                    .is_none()
                {
                    builder = builder.with_copy_if_not_exists(S3CopyIfNotExists::Multipart);
                }
                let mut builder = builder
                    .with_bucket_name(root)
                    .with_retry(retry)
                    .with_client_options(options);
                if let Some(endpoint) = &config.endpoint {
                    // A custom endpoint (MinIO, SeaweedFS, R2...) uses path-style names;
                    // http:// is allowed for an in-cluster or test server.
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_virtual_hosted_style_request(false)
                        .with_allow_http(endpoint.starts_with("http://"));
                }
                Arc::new(builder.build()?)
            }
            "file" if root.is_empty() => {
                let dir = format!("/{prefix}");
                std::fs::create_dir_all(&dir).map_err(|e| {
                    BucketError::Open(object_store::Error::Generic {
                        store: "file",
                        source: Box::new(e),
                    })
                })?;
                return Ok(Self {
                    store: Arc::new(LocalFileSystem::new_with_prefix(dir)?),
                    prefix: String::new(),
                });
            }
            _ => return Err(BucketError::Url),
        };
        Ok(Self {
            store,
            prefix: prefix.to_string(),
        })
    }

    /// The object that holds `job`'s log.
    pub(crate) fn path(&self, job: &JobId) -> Path {
        self.under(format!("{}{SUFFIX}", job.as_str()))
    }

    /// A name no other attempt uses, for one upload of `job`'s object in parts.
    pub(crate) fn upload_path(&self, job: &JobId) -> Path {
        let nonce: u64 = rand::random();
        self.under(format!("{UPLOADS}/{}.{nonce:016x}", job.as_str()))
    }

    fn under(&self, name: String) -> Path {
        if self.prefix.is_empty() {
            Path::from(name)
        } else {
            Path::from(format!("{}/{name}", self.prefix))
        }
    }
}
