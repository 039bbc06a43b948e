//! Tailgate: a live build-log streaming gateway. Workers publish a job's log lines;
//! readers follow them over server-sent events, each with a JWT scoped to one job.
//!
//! Where a record travels:
//! - [`server`]: accept loop, connection cap, grace and drain; `run(listener, config, shutdown)`.
//!   `probes`: connections over the cap, where only the probes answer.
//! - `tls`: HTTPS with a certificate reloaded on SIGHUP; `conn`: a TCP or TLS connection.
//! - `socket`: SSE readers over HTTP/1.1 served straight on their socket; the rest goes to hyper.
//! - `refusal`: JSON bodies for the refusals hyper writes itself (400, 414, 431).
//! - `metrics`: the Prometheus registry (`process_metrics`: `process_*` from `/proc`);
//!   `admin`: the `--metrics-listen` listener.
//! - `routes`: request shape, method, job id, then token; `handlers`: what each route does.
//! - [`auth`]: job-scoped JWTs: where a token comes from, which keys verify it, minting.
//! - `publish`: a worker's upload split into lines (`lines`) or NDJSON records (`ndjson`).
//! - `job_log`: one job's log, the fan-out point: a byte-bounded ring over the store.
//! - `entry`: one record as readers share it, its text stored once inside its SSE frame.
//! - `store`: where records live beyond the ring and the truth about each job: one
//!   async seam over `memory`, the durable `spool` and the shared `redis`; opened in
//!   `store::open`; tombstones of deleted jobs.
//! - `archive`: finished logs as objects in S3 (a cold tier behind the spool), read back
//!   by ranged GETs.
//! - `hub`: every job by id, loaded or created on first use; lifecycle, retention,
//!   shedding memory across jobs.
//! - `subscription`: one reader's cursor, written out as SSE in batches.
//! - [`compress`]: `Content-Encoding` on streams, one shared sync-flushed stream per job.
//! - `wakeups`: when a job's readers hear of appends (at most once per gather window).
//! - `capgo`: Capgo's `logs_url` routes: its WebSocket frames, resume by confirmed id.
//! - `streams`: concurrent streams per token subject, capped.
//! - `view`: the live log page for browsers (HTML, CSS and JS embedded at build time).
//! - `wire`: the bytes a record becomes on a Capgo socket. `sse`: injection-proof SSE
//!   encoding. [`record`]: records and statuses.
//! - `memory`: the process-wide budget for held records.
//! - `redact`: what of a request may be logged (paths with tokens masked); [`logging`]:
//!   the libraries silenced because they would log frames and headers.
//! - [`report`]: an error and its sources in one line, for logs, bodies and the CLI.
//! - `rules`: the append rules every store obeys (dedupe by `n`, truncation, the end).
//! - [`config`]: typed config from flags, `TAILGATE_*` env and a TOML file.
//! - [`job_id`]: the validated job name, a security boundary.
//! - [`client`]: the gateway's clients (`tail`, `push`, `token`), usable from Rust too.
//! - [`net`]: outbound HTTP below both: endpoints from URLs, one request per connection,
//!   client TLS roots.

pub mod auth;
pub mod cli;
pub mod client;
pub mod compress;
pub mod config;
pub mod dev;
#[doc(hidden)]
pub mod fuzz;
pub mod job_id;
pub mod logging;
pub mod net;
pub mod record;
pub mod report;
pub mod server;

pub(crate) mod admin;
pub(crate) mod app;
pub(crate) mod archive;
pub(crate) mod body;
pub(crate) mod capgo;
pub(crate) mod conn;
pub(crate) mod entry;
pub(crate) mod error;
pub(crate) mod handlers;
pub(crate) mod hub;
pub(crate) mod job_log;
pub(crate) mod memory;
pub(crate) mod metrics;
pub(crate) mod probes;
pub(crate) mod process_metrics;
pub(crate) mod publish;
pub(crate) mod redact;
pub(crate) mod refusal;
pub(crate) mod routes;
pub(crate) mod rules;
pub(crate) mod socket;
pub(crate) mod sse;
pub(crate) mod store;
pub(crate) mod streams;
pub(crate) mod subscription;
pub(crate) mod tls;
pub(crate) mod view;
pub(crate) mod wakeups;
pub(crate) mod wire;

pub use config::Config;
pub use memory::limit_malloc_arenas;
pub use server::{check_store, run, serve, Listeners, ServerError};
pub use store::open::StoreOpenError;
pub use tls::{check as check_tls, TlsError};
