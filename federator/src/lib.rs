//! # federator (the hub)
//!
//! The library behind the `federator` binary. `main.rs` only parses arguments and calls
//! [`run`].
//!
//! | module | what it holds |
//! |---|---|
//! | [`cli`] | the command line (clap) |
//! | [`commands`] | one module per command group |
//! | [`doctor`] | `federator doctor`: a cluster's Istio checked against istiod's per-version rules |
//! | [`fsutil`] | atomic, permission-aware file writes |
//! | [`hub`] | the hub: init, join/leave, status and the `serve` reconciler |
//! | [`output`] | `-o table|json|yaml` rendering |

#![forbid(unsafe_code)]

pub mod cli;
pub mod commands;
pub mod doctor;
mod error;
pub mod fsutil;
pub mod hub;
pub mod output;

pub use error::{Error, Result};

/// Runs a parsed command line.
pub async fn run(cli: cli::Cli) -> Result<()> {
    let hub = hub::kube::ClientSource {
        kubeconfig: cli.hub_kubeconfig.clone(),
        context: cli.hub_context.clone(),
    };
    match cli.command {
        cli::Command::Ca(ca) => commands::ca::run(ca),
        cli::Command::Init(args) => commands::hub::init(&hub, args).await,
        cli::Command::Join(cli::JoinCommand::Cluster(args)) => {
            commands::hub::join(&hub, args).await
        }
        cli::Command::Leave(cli::LeaveCommand::Cluster(args)) => {
            commands::hub::leave(&hub, args).await
        }
        cli::Command::Status(args) => commands::hub::status(&hub, args).await,
        cli::Command::Doctor(args) => commands::hub::doctor(args).await,
        cli::Command::Serve(args) => commands::hub::serve(&hub, args).await,
        cli::Command::Bundle(args) => commands::hub::bundle(&hub, args).await,
        cli::Command::RotateRoot(args) => commands::hub::rotate_root(&hub, args).await,
        cli::Command::Trust(cmd) => commands::hub::trust(&hub, cmd).await,
        cli::Command::Renew(cli::RenewCommand::Cluster(args)) => {
            commands::hub::renew(&hub, args).await
        }
        cli::Command::Crds => {
            print!(
                "{}",
                federator_api::crds_yaml().map_err(Error::encode("the CRDs"))?
            );
            Ok(())
        }
        cli::Command::Completion(args) => {
            print!("{}", cli::completion(args.shell));
            Ok(())
        }
    }
}
