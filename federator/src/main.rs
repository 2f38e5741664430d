//! `federator`: parses the command line and hands it to the library.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    // kube and (for the vault backend) reqwest share rustls; pick its crypto provider once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = federator::cli::Cli::parse();
    if let Err(e) = federator_api::logging::init(&cli.log_level, cli.log_format) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    match federator::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}
