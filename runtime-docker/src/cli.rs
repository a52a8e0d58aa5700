//! The `canteen` command line. Exit codes: 0 done, 1 a runtime failure, 2 bad input (a file,
//! a key or an argument), with a message that names what to fix.

use std::path::PathBuf;

use canteen_core::cluster_file::{self, Cluster};
use canteen_core::schedule::Policy;
use clap::{Parser, Subcommand};

use crate::plan;

/// canteen: a container orchestrator with no control plane.
#[derive(Debug, Parser)]
#[command(name = "canteen", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Place every app of a cluster file and print where each slot lands.
    Plan {
        /// The cluster file (TOML).
        file: PathBuf,
        /// Overrides the file's placement policy: round-robin, binpack, spread or rendezvous.
        #[arg(long)]
        policy: Option<Policy>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// A failure with the exit code it deserves.
#[derive(Debug)]
pub struct Failure {
    /// 1 for a runtime failure, 2 for bad input.
    pub code: u8,
    /// What went wrong and what to do about it.
    pub message: String,
}

impl Failure {
    fn bad_input(message: impl Into<String>) -> Failure {
        Failure { code: 2, message: message.into() }
    }
}

/// Reads and checks a cluster file; any problem is bad input.
pub fn read_cluster_file(path: &std::path::Path) -> Result<Cluster, Failure> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Failure::bad_input(format!("{name}: cannot read: {e}")))?;
    cluster_file::parse(&name, &text).map_err(|e| Failure::bad_input(e.to_string()))
}

/// Runs one command, printing its output on stdout.
pub fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Plan { file, policy, json } => {
            let cluster = read_cluster_file(&file)?;
            let plan = plan::plan(&cluster, policy);
            if json {
                let text = serde_json::to_string_pretty(&plan::to_json(&plan))
                    .map_err(|e| Failure { code: 1, message: format!("cannot encode the plan: {e}") })?;
                println!("{text}");
            } else {
                print!("{}", plan::to_table(&plan));
            }
            Ok(())
        }
    }
}
