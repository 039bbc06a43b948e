//! The `tailgate` command line: one binary for the gateway and its clients.

use clap::{Parser, Subcommand};

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
    Serve(ServeArgs),
    /// Follow a job's log live until the job ends; exit with the job's result.
    Tail(TailArgs),
    /// Run a command (or read stdin) and stream its output to a job.
    Push(PushArgs),
    /// Mint or inspect job tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}
