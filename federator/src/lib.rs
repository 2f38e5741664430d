//! # federator (the hub)
//!
//! The library behind the `federator` binary. `main.rs` only parses arguments and calls
//! [`run`].
//!
//! | module | what it holds |
//! |---|---|
//! | [`cli`] | the command line (clap) |
//! | [`commands`] | one module per command group |
//! | [`fsutil`] | atomic, permission-aware file writes |
//! | [`output`] | `-o table|json|yaml` rendering |

#![forbid(unsafe_code)]

pub mod cli;
pub mod commands;
mod error;
pub mod fsutil;
pub mod output;

pub use error::{Error, Result};

/// Runs a parsed command line.
pub fn run(cli: cli::Cli) -> Result<()> {
    match cli.command {
        cli::Command::Ca(ca) => commands::ca::run(ca),
    }
}
