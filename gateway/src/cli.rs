//! The `tailgate` command line: one binary for the gateway and its clients.

use clap::{Arg, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::client::exit::EXIT_USAGE;

use crate::client::push::PushArgs;
use crate::client::tail::TailArgs;
use crate::client::token_cmd::TokenCommand;
use crate::config::ServeArgs;

/// Tailgate: live build-log streaming gateway.
#[derive(Debug, Parser)]
#[command(name = "tailgate", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve(Box<ServeArgs>),
    // `tail` and `push` take their help text from their argument structs.
    Tail(TailArgs),
    Push(PushArgs),
    /// Mint or inspect job tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

/// The command line, with each `serve` setting's environment variable in its help. The
/// config loader reads those variables itself (so its errors name them), hence not clap's
/// `env`.
pub fn command() -> clap::Command {
    Cli::command().mut_subcommand("serve", |serve| serve.mut_args(with_env_name))
}

fn with_env_name(arg: Arg) -> Arg {
    let Some(long) = arg.get_long().filter(|l| *l != "help") else {
        return arg;
    };
    let env = crate::config::env_name(long);
    let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
    arg.help(format!("{help} [env: {env}]"))
}

/// Parses the process arguments; a usage error exits 64 (`EX_USAGE`) rather than clap's 2,
/// which a build may exit with too. `--help` and `--version` exit 0.
pub fn parse() -> Cli {
    command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
        .unwrap_or_else(|e| {
            let code = if e.use_stderr() {
                i32::from(EXIT_USAGE)
            } else {
                0
            };
            let _ = e.print();
            std::process::exit(code)
        })
}
