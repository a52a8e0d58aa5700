//! The `canteen-sim` binary.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = canteen_sim::cli::Cli::parse();
    ExitCode::from(canteen_sim::cli::run(cli))
}
