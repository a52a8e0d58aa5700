//! `canteen-trace`: replays the openb trace (or any in its format) through canteen's placement
//! policies, as the FGD paper's artifact does, and reports how full each keeps the GPUs.
//! `scripts/trace` builds and runs it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use canteen_benches::trace::{self, Protocol, Report};
use canteen_core::schedule::Policy;
use clap::Parser;

/// Replays a trace: DIR holds `nodes.csv` and `pods.csv` in the openb format.
#[derive(Parser, Debug)]
#[command(name = "canteen-trace")]
struct Args {
    /// The folder holding nodes.csv and pods.csv.
    dir: PathBuf,
    /// The placement policy: round-robin, binpack, spread, rendezvous, fgd; several joined by
    /// commas, or `all`.
    #[arg(long, default_value = "fgd")]
    policy: String,
    /// Seeds the shuffle and the draws: one, or a range `42-51` (a table of each policy's
    /// mean then).
    #[arg(long, default_value = "42")]
    seed: String,
    /// Tasks are drawn until they ask for this many times the GPUs; 0 replays the trace once
    /// in its order.
    #[arg(long, default_value_t = 1.3)]
    tune: f64,
    /// Every node, not only those with GPUs.
    #[arg(long)]
    all_nodes: bool,
    /// Prints each replay's report as a JSON line.
    #[arg(long)]
    json: bool,
    /// Writes one JSON line per arrived task, in arrival order, to FILE (one replay only).
    #[arg(long, value_name = "FILE")]
    plan_out: Option<PathBuf>,
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn policies(arg: &str) -> Result<Vec<Policy>, String> {
    if arg == "all" {
        return Ok(Policy::ALL.iter().map(|(_, p)| *p).collect());
    }
    arg.split(',').map(|p| p.trim().parse::<Policy>().map_err(|e| format!("--policy: {e}"))).collect()
}

fn seeds(arg: &str) -> Result<Vec<u64>, String> {
    let bad = || format!("--seed: {arg:?} is not a seed or a range of seeds such as 42-51");
    match arg.split_once('-') {
        Some((a, b)) => {
            let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
            if a > b || b - a >= 1000 {
                return Err(format!("--seed: {arg:?}: a range from low to high, at most 1,000 seeds"));
            }
            Ok((a..=b).collect())
        }
        None => Ok(vec![arg.parse().map_err(|_| bad())?]),
    }
}

fn run(args: &Args) -> Result<(), String> {
    if !(0.0..=100.0).contains(&args.tune) {
        return Err(format!("--tune: {} is not allowed: 0 (the trace once) or a ratio up to 100", args.tune));
    }
    let policies = policies(&args.policy)?;
    let seeds = seeds(&args.seed)?;
    if args.plan_out.is_some() && policies.len() * seeds.len() > 1 {
        return Err("--plan-out: one policy and one seed only".into());
    }
    let nodes_file = args.dir.join("nodes.csv");
    let pods_file = args.dir.join("pods.csv");
    let nodes =
        trace::parse_nodes(&nodes_file.display().to_string(), &read(&nodes_file)?).map_err(|e| e.to_string())?;
    let pods = trace::parse_pods(&pods_file.display().to_string(), &read(&pods_file)?).map_err(|e| e.to_string())?;
    let nodes = trace::replay_nodes(&nodes, args.all_nodes);
    if nodes.is_empty() {
        return Err(format!("{}: no node to replay on (no node has GPUs; try --all-nodes)", nodes_file.display()));
    }
    let capacity: u64 = nodes.iter().map(|n| u64::from(n.gpus) * 1000).sum();
    let mut reports: Vec<Report> = Vec::new();
    for &policy in &policies {
        for &seed in &seeds {
            let arrivals = trace::arrivals(&pods, capacity, args.tune, seed);
            let protocol = Protocol { policy, seed, tune: args.tune, all_nodes: args.all_nodes };
            let (report, placed) = trace::replay(&nodes, &pods, &arrivals, &protocol);
            if let Some(out) = &args.plan_out {
                let lines: Vec<String> = placed.iter().map(|p| trace::plan_line(&pods, &nodes, p)).collect();
                std::fs::write(out, lines.join("\n") + "\n").map_err(|e| format!("{}: {e}", out.display()))?;
            }
            if args.json {
                println!("{}", serde_json::to_string(&report).expect("reports encode"));
            } else {
                println!("{report}");
            }
            reports.push(report);
        }
    }
    if seeds.len() > 1 && !args.json {
        println!(
            "\n| policy | GPU allocated, mean | unallocated GPUs | at first failure | tasks placed | ms per replay |"
        );
        println!("|---|---|---|---|---|---|");
        for policy in &policies {
            let mine: Vec<&Report> = reports.iter().filter(|r| r.policy == policy.to_string()).collect();
            let mean = |f: &dyn Fn(&Report) -> f64| mine.iter().map(|r| f(r)).sum::<f64>() / mine.len() as f64;
            println!(
                "| {policy} | {:.2}% | {:.1} | {:.2}% | {:.0} of {:.0} | {:.0} |",
                mean(&|r| r.gpu_alloc_percent),
                mean(&|r| r.unallocated_gpus),
                mean(&|r| r.gpu_alloc_percent_at_first_failure),
                mean(&|r| r.pods_placed as f64),
                mean(&|r| r.pods_arrived as f64),
                mean(&|r| r.wall_ms),
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("canteen-trace: {e}");
            ExitCode::FAILURE
        }
    }
}
