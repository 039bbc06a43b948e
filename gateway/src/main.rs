//! `tailgate`: init tracing, load and validate config, bind, run until a signal, drain.

use std::process::ExitCode;

use tailgate::cli::Command;
use tailgate::config::{Config, LogFormat, ProcessEnv, ServeArgs};

/// Exit code for a bad configuration (BSD `EX_USAGE`).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    match tailgate::cli::parse().command {
        Command::Serve(args) => serve(&args),
        Command::Tail(args) => tailgate::client::tail::run(args),
        Command::Push(args) => tailgate::client::push::run(args),
        Command::Token(command) => tailgate::client::token_cmd::run(command),
    }
}

fn serve(args: &ServeArgs) -> ExitCode {
    let config = match Config::load(args, &ProcessEnv) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("tailgate: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_tracing(config.log_format);
    if let Err(e) = tailgate::check_store(&config) {
        eprintln!(
            "tailgate: config data-dir: {}",
            tailgate::client::error_chain(&e)
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tailgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let listener = match bind(config.listen) {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "tailgate: config listen: cannot listen on {} (set by --listen or TAILGATE_LISTEN): {e}",
                    config.listen
                );
                return ExitCode::FAILURE;
            }
        };
        let addr = listener.local_addr().unwrap_or(config.listen);
        println!("tailgate listening on http://{addr}");
        if config.dev {
            let job = tailgate::dev::fresh_job();
            if let Some(banner) = tailgate::dev::banner(addr, &config, &job) {
                println!("{banner}");
            }
        }
        match tailgate::run(listener, config, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tailgate: {}", tailgate::client::error_chain(&e));
                ExitCode::from(EXIT_CONFIG)
            }
        }
    })
}

/// Pending connections the kernel queues for us: readers arrive in bursts (a deploy,
/// a reconnect storm), and a full queue costs each a 1 s SYN retry.
const LISTEN_BACKLOG: u32 = 4096;

fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TAILGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let filter = tailgate::logging::quiet_codecs(filter);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown signal received");
}
