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
    if args.print_config {
        return print_config(args);
    }
    // Before any thread starts: may start the process again with fewer malloc arenas.
    tailgate::limit_malloc_arenas();
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
    // A bad certificate pair stops start-up before "listening" is printed.
    if let Err(e) = tailgate::check_tls(&config) {
        eprintln!(
            "tailgate: config {}: {}",
            e.key(),
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
        // An address in use or not ours is a configuration problem: exit 64 like the rest.
        let listener = match bind(config.listen) {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "tailgate: config listen: cannot listen on {} (set by --listen or TAILGATE_LISTEN): {e}",
                    config.listen
                );
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        let metrics = match config.metrics_listen.map(bind).transpose() {
            Ok(l) => l,
            Err(e) => {
                eprintln!("tailgate: config metrics-listen: cannot listen on the metrics address: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        let shutdown = shutdown_signal();
        // SIGHUP's default action ends the process, and `systemctl reload` sends it: take it
        // over before anyone can send it, with or without TLS.
        #[cfg(unix)]
        if let Err(e) = watch_sighup(config.tls.is_some()) {
            eprintln!("tailgate: cannot handle SIGHUP: {e}");
            return ExitCode::FAILURE;
        }
        let addr = listener.local_addr().unwrap_or(config.listen);
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        println!("tailgate listening on {scheme}://{addr}");
        if let Some(metrics) = metrics.as_ref().and_then(|l| l.local_addr().ok()) {
            println!("tailgate metrics on http://{metrics}/metrics");
        }
        if config.dev {
            let job = tailgate::dev::fresh_job();
            if let Some(banner) = tailgate::dev::banner(addr, &config, &job) {
                println!("{banner}");
            }
        }
        let listeners = tailgate::Listeners {
            main: listener,
            metrics,
        };
        match tailgate::serve(listeners, config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tailgate: {}", tailgate::client::error_chain(&e));
                ExitCode::from(EXIT_CONFIG)
            }
        }
    })
}

/// `--print-config`: the effective configuration, even when a required token setting is
/// missing (then also the error, and exit 64), since that is when an operator needs it.
fn print_config(args: &ServeArgs) -> ExitCode {
    match Config::load_for_print(args, &ProcessEnv) {
        Ok((config, missing)) => {
            if let Some(e) = &missing {
                println!("# Cannot start as it is: {e}");
            }
            print!("{}", config.to_toml());
            match missing {
                None => ExitCode::SUCCESS,
                Some(e) => {
                    eprintln!("tailgate: {e}");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
        Err(e) => {
            eprintln!("tailgate: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Logs each SIGHUP with what it reloads: with TLS the certificate pair (reloaded by the
/// server's own watcher); every other setting is read once, at start.
#[cfg(unix)]
fn watch_sighup(tls: bool) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            if tls {
                tracing::info!(
                    signal = "SIGHUP",
                    "reloading the TLS certificate; other settings take effect on restart"
                );
            } else {
                tracing::info!(
                    signal = "SIGHUP",
                    "nothing to reload without TLS; settings take effect on restart"
                );
            }
        }
    });
    Ok(())
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

/// Completes on SIGTERM or SIGINT. The handlers are installed before this returns, so a
/// signal sent once the address is printed is never the default (fatal) one.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
            tracing::info!("shutdown signal received");
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown signal received");
    }
}
