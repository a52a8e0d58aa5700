//! `canteen-lab run`, `compare` and `clean`. Exit codes: 0 every expectation held, 1 one failed
//! (or the run failed before its report), 2 bad input or a lab that cannot run here; 130 on
//! Ctrl-C and 143 on SIGTERM, after everything is taken down.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::compare::{self, Figures};
use crate::run::{self, LabError, LabRun};

/// canteen's scenarios on a real cluster of agents in network namespaces.
#[derive(Debug, Parser)]
#[command(name = "canteen-lab", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one scenario on real agents and print its report, as `canteen-sim run` does (the
    /// seed draws the load's arrivals and entry nodes).
    Run {
        /// As the simulator's `run`.
        #[command(flatten)]
        run: canteen_sim::cli::RunArgs,
        /// The `canteen` binary the agents run; by default the one beside this binary.
        #[arg(long)]
        canteen: Option<PathBuf>,
    },
    /// The simulator's distributions over many seeds beside the lab's over a few real runs.
    Compare {
        /// The scenario file (TOML).
        file: PathBuf,
        /// Real runs (seeds 1..=N).
        #[arg(long, default_value_t = 3)]
        runs: u64,
        /// The simulator's seeds: `A..B` (B excluded) or `A..=B`.
        #[arg(long, default_value = "1..101", value_parser = canteen_sim::cli::parse_seeds)]
        seeds: (u64, u64),
        /// The simulator binary (built with `--cfg madsim`, as scripts/sim builds it).
        #[arg(long, default_value = "target/sim/release/canteen-sim")]
        sim: PathBuf,
        /// The `canteen` binary the agents run; by default the one beside this binary.
        #[arg(long)]
        canteen: Option<PathBuf>,
    },
    /// Remove whatever a lab run left behind: agents, namespaces, links, rules, containers.
    Clean,
}

/// Runs a command; returns the exit code.
pub fn main(cli: Cli) -> u8 {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("canteen-lab: cannot start the runtime: {e}");
            return 2;
        }
    };
    let code = runtime.block_on(async {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("canteen-lab: cannot watch for SIGTERM: {e}");
                return 2;
            }
        };
        tokio::select! {
            code = command(cli.command) => code,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("canteen-lab: interrupted; taking the lab down");
                130
            }
            _ = terminate.recv() => {
                eprintln!("canteen-lab: terminated; taking the lab down");
                143
            }
        }
    });
    // Whatever became of the run: its agents, network and containers go.
    run::teardown();
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

/// Reads and checks a scenario: it and its text, or exit code 2 after the error.
fn load(path: &Path) -> Result<(canteen_sim::scenario::Scenario, String), u8> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        eprintln!("canteen-lab: {name}: cannot read: {e}");
        2
    })?;
    let scenario = canteen_sim::scenario::parse(&name, &text).map_err(|e| {
        eprintln!("canteen-lab: {e}");
        2
    })?;
    if let Err(r) = crate::admit::check(&scenario) {
        eprintln!("canteen-lab: {name}: {r}");
        return Err(2);
    }
    Ok((scenario, text))
}

/// The `canteen` binary: as given, or beside this one.
fn canteen_bin(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("canteen")))
            .unwrap_or_else(|| PathBuf::from("canteen"))
    })
}

fn exit_code(e: &LabError) -> u8 {
    match e {
        LabError::Cannot(_) => 2,
        LabError::Failed(_) => 1,
    }
}

async fn command(command: Command) -> u8 {
    match command {
        Command::Run { run: canteen_sim::cli::RunArgs { file, seed, json, plot }, canteen } => {
            let (scenario, text) = match load(&file) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let seed = seed.unwrap_or(scenario.seed);
            println!(
                "lab seed={seed} file={} policy={} nodes={} apps={} duration_s={} sample_ms={}",
                scenario.file,
                scenario.cluster.policy,
                scenario.cluster.nodes.len(),
                scenario.cluster.apps.len(),
                scenario.duration_s,
                run::SAMPLE_MS
            );
            let lab = match run::run(&scenario, &text, seed, &canteen_bin(canteen)).await {
                Ok(lab) => lab,
                Err(e) => {
                    eprintln!("canteen-lab: {e}");
                    return exit_code(&e);
                }
            };
            if let Some(out) = plot
                && let Err(e) = std::fs::write(&out, lab.timeline.to_svg())
            {
                eprintln!("canteen-lab: {}: cannot write the plot: {e}", out.display());
                return 2;
            }
            print_run(&lab, json);
            if lab.report.passed {
                0
            } else {
                for c in lab.report.checks.iter().filter(|c| !c.passed) {
                    eprintln!("canteen-lab: check {:?} failed: {}; again: {}", c.name, c.detail, lab.report.replay);
                }
                1
            }
        }
        Command::Compare { file, runs, seeds, sim, canteen } => {
            let (scenario, text) = match load(&file) {
                Ok(s) => s,
                Err(code) => return code,
            };
            compare_runs(&file, &scenario, &text, runs, seeds, &sim, &canteen_bin(canteen)).await
        }
        Command::Clean => {
            run::teardown();
            let _ = std::fs::remove_dir_all(crate::hosts::LAB_DIR);
            println!("canteen-lab: nothing of a lab run is left");
            0
        }
    }
}

/// The report as the simulator prints it, and the lab's own figures.
fn print_run(lab: &LabRun, json: bool) {
    if json {
        let mut value = serde_json::to_value(&lab.report).expect("reports encode");
        value["lab"] = lab.lab_json();
        println!("{}", serde_json::to_string_pretty(&value).expect("values encode"));
        return;
    }
    print!("{}", lab.report.to_table());
    let figures = lab.lab_json();
    println!(
        "lab: cluster formed in {} s; agents' RSS peak {:.1} MiB, mean {:.1} MiB; sampled every {} ms",
        figures["setup_s"],
        figures["agent_rss_peak_mib"].as_f64().unwrap_or(0.0),
        figures["agent_rss_mean_mib"].as_f64().unwrap_or(0.0),
        run::SAMPLE_MS
    );
    eprintln!("wall time {} ms for {} s of scenario", lab.report.wall_ms, lab.report.sim_s);
}

async fn compare_runs(
    file: &Path,
    scenario: &canteen_sim::scenario::Scenario,
    text: &str,
    runs: u64,
    (from, to): (u64, u64),
    sim: &Path,
    bin: &Path,
) -> u8 {
    if !sim.is_file() {
        eprintln!("canteen-lab: {}: no simulator there; build it with scripts/sim, or give --sim", sim.display());
        return 2;
    }
    // The simulator's seeds, two at a time (this machine's cores).
    let seeds: Vec<u64> = (from..to).collect();
    let chunks: Vec<Vec<u64>> = seeds.chunks(seeds.len().div_ceil(2).max(1)).map(<[u64]>::to_vec).collect();
    let sim_runs = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                scope.spawn(move || chunk.iter().map(|&s| compare::sim_report(sim, file, s)).collect::<Vec<_>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("no panic")).collect::<Vec<_>>()
    });
    let mut sim_figures = Vec::new();
    for r in sim_runs {
        match r {
            Ok(v) => sim_figures.push(Figures::of(&v)),
            Err(e) => {
                eprintln!("canteen-lab: {e}");
                return 2;
            }
        }
    }
    let mut lab_figures = Vec::new();
    let mut code = 0;
    for seed in 1..=runs {
        match run::run(scenario, text, seed, bin).await {
            Ok(lab) => {
                let value = serde_json::to_value(&lab.report).expect("reports encode");
                let f = Figures::of(&value);
                println!(
                    "lab run {seed}: {} in {:.0} s; agents' RSS peak {:.1} MiB; {}",
                    if lab.report.passed { "passed" } else { "FAILED" },
                    lab.report.wall_ms as f64 / 1000.0,
                    lab.lab_json()["agent_rss_peak_mib"].as_f64().unwrap_or(0.0),
                    lab.report
                        .checks
                        .iter()
                        .filter(|c| !c.passed)
                        .map(|c| format!("{}: {}", c.name, c.detail))
                        .collect::<Vec<_>>()
                        .join("; ")
                );
                if !lab.report.passed {
                    code = 1;
                }
                lab_figures.push(f);
            }
            Err(e) => {
                eprintln!("canteen-lab: run {seed}: {e}");
                return exit_code(&e);
            }
        }
    }
    print!("{}", compare::table(&scenario.file, &sim_figures, &lab_figures));
    code
}
