use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = canteen_lab::cli::Cli::parse();
    std::process::ExitCode::from(canteen_lab::cli::main(cli))
}
