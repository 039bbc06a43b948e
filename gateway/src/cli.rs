//! The `tailgate` command line: one binary for the gateway and its clients.

use clap::{Parser, Subcommand};

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
}
