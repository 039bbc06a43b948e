//! Every black-box integration test, in one binary so `cargo test` links it once
//! (one module per area; `cargo test -p tailgate-tests --test it -- redis::` runs one).

mod abuse;
mod archive;
mod archive_shared;
mod auth;
mod capgo_cli;
mod capgo_deflate;
mod capgo_routes;
mod capgo_ws;
mod cli_edges;
mod cli_push;
mod cli_tail;
mod cli_token;
mod compression;
mod deploy;
mod durability;
mod fanout;
mod jwks;
mod jwt_attacks;
mod limits;
mod lives;
mod log_hygiene;
mod memory;
mod ops;
mod process;
mod publish;
mod readme;
mod redis;
mod redis_ha;
mod slots;
mod sse_clients;
mod stall;
mod startup;
mod stream;
mod tls;
mod view;
