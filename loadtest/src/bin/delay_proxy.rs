//! `tailgate-delay-proxy`: a loopback TCP relay adding a fixed delay each way (default 1 ms),
//! to measure Tailgate against a Redis "across the network" (see `loadtest/scale.sh`).
//!
//! ```text
//! tailgate-delay-proxy --listen 127.0.0.1:18300 --upstream 127.0.0.1:18179 --delay-ms 1
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// A loopback TCP relay that delays every byte by a fixed time in each direction.
#[derive(Debug, Parser)]
#[command(name = "tailgate-delay-proxy", version, about)]
struct Args {
    /// Where to accept connections (loopback only).
    #[arg(long)]
    listen: SocketAddr,
    /// Where to relay them (loopback only).
    #[arg(long)]
    upstream: SocketAddr,
    /// Delay in each direction, in milliseconds.
    #[arg(long, default_value_t = 1)]
    delay_ms: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.listen.ip().is_loopback() || !args.upstream.ip().is_loopback() {
        eprintln!("tailgate-delay-proxy: --listen and --upstream must be loopback addresses");
        return ExitCode::from(64);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tailgate-delay-proxy: cannot start a runtime: {e}");
            return ExitCode::from(70);
        }
    };
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "tailgate-delay-proxy: cannot listen on {}: {e}",
                    args.listen
                );
                return ExitCode::from(70);
            }
        };
        println!(
            "tailgate-delay-proxy: {} -> {}, {} ms each way",
            args.listen, args.upstream, args.delay_ms
        );
        let delay = Duration::from_millis(args.delay_ms);
        match tailgate_loadtest::delay_proxy::serve(listener, args.upstream, delay).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tailgate-delay-proxy: {e}");
                ExitCode::from(70)
            }
        }
    })
}
