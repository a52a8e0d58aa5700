//! The `canteen` binary: parses the command line and exits with the code the command chose.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = canteen_docker::cli::Cli::parse();
    match canteen_docker::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("canteen: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
