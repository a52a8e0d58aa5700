//! The `canteen` binary: parses the command line and exits with the code the command chose.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // A panic anywhere, in any task, ends the process with 101 after the usual message: tokio
    // would otherwise catch it in the task and leave a zombie agent (its API answering 503,
    // its balancers frozen) that no supervisor restarts.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::exit(101);
    }));
    let cli = canteen_docker::cli::Cli::parse();
    match canteen_docker::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("canteen: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
