//! The `canteen-sim` binary.

use std::process::ExitCode;

use clap::Parser;

/// A thousand simulated nodes each hold a registry of a thousand entries, built and torn down
/// piece by piece as gossip arrives: mimalloc's per-size free lists serve that churn faster than
/// glibc's allocator and keep the heap compact. The simulator only; the agent keeps the system's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = canteen_sim::cli::Cli::parse();
    ExitCode::from(canteen_sim::cli::run(cli))
}
