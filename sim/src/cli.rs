//! `canteen-sim run` and `canteen-sim sweep`. Exit codes: 0 every expectation held, 1 one
//! failed (the output names the check, the simulated time and the command that replays it),
//! 2 bad input.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::scenario::{self, Scenario};

/// canteen's deterministic simulator.
#[derive(Debug, Parser)]
#[command(name = "canteen-sim", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one scenario with one seed and print its report.
    Run(RunArgs),
    /// Run scenarios over a range of seeds; print each failing seed's replay command.
    Sweep {
        /// The scenario files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Seeds: `A..B` (B excluded) or `A..=B`.
        #[arg(long, value_parser = parse_seeds)]
        seeds: (u64, u64),
        /// Runs at once; by default one per core.
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Measure the simulator: run each scenario once at its own seed, check that its
    /// expectations hold, and print simulated seconds per wall second, wall time and gossip
    /// bytes per node per second.
    Bench {
        /// The scenario files.
        #[arg(default_values = ["scenarios/bench/speed-50-nodes-1h.toml", "scenarios/bench/scale-1000-nodes.toml"])]
        files: Vec<PathBuf>,
    },
}

/// What `run` takes, here and in the lab (`canteen-lab run`).
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The scenario file (TOML).
    pub file: PathBuf,
    /// Overrides the file's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write an SVG timeline of replicas, request rate, errors and latency.
    #[arg(long, value_name = "OUT.svg")]
    pub plot: Option<PathBuf>,
}

/// Parses `A..B` or `A..=B` into a half-open range.
pub fn parse_seeds(text: &str) -> Result<(u64, u64), String> {
    let bad = || format!("{text:?} is not a seed range; write A..B (B excluded) or A..=B, e.g. 1..101");
    let (a, b, inclusive) = if let Some((a, b)) = text.split_once("..=") {
        (a, b, true)
    } else if let Some((a, b)) = text.split_once("..") {
        (a, b, false)
    } else {
        return Err(bad());
    };
    let a: u64 = a.trim().parse().map_err(|_| bad())?;
    let b: u64 = b.trim().parse().map_err(|_| bad())?;
    let b = if inclusive { b.checked_add(1).ok_or_else(bad)? } else { b };
    if b <= a {
        return Err(format!("{text:?} is an empty seed range"));
    }
    Ok((a, b))
}

/// Reads and checks a scenario; on error prints it and gives exit code 2.
pub fn load(path: &Path) -> Result<Scenario, u8> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        eprintln!("canteen-sim: {name}: cannot read: {e}");
        2
    })?;
    scenario::parse(&name, &text).map_err(|e| {
        eprintln!("canteen-sim: {e}");
        2
    })
}

/// The randomized options of a run, printed before anything else so a run can be replayed.
pub fn options_line(s: &Scenario, seed: u64) -> String {
    let spread =
        if s.sim.boot_spread_ms > 0 { format!(" boot_spread_ms={}", s.sim.boot_spread_ms) } else { String::new() };
    format!(
        "seed={seed} file={} policy={} membership={} nodes={} apps={} duration_s={} start_latency_ms={}+-{} net_latency_ms={}..{} tick_ms={}",
        s.file,
        s.cluster.policy,
        s.sim.membership.name(),
        s.cluster.nodes.len(),
        s.cluster.apps.len(),
        s.duration_s,
        s.sim.start_latency_ms,
        s.sim.start_jitter_ms,
        s.sim.net_latency_ms_min,
        s.sim.net_latency_ms_max,
        s.sim.tick_ms
    ) + &spread
}

/// Runs a command; returns the exit code.
#[cfg(not(madsim))]
pub fn run(_cli: Cli) -> u8 {
    eprintln!(
        "canteen-sim: this binary was built without the simulator; run it through scripts/sim, which builds it with RUSTFLAGS=\"--cfg madsim\""
    );
    2
}

/// Runs a command; returns the exit code.
#[cfg(madsim)]
pub fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Run(RunArgs { file, seed, json, plot }) => {
            let scenario = match load(&file) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let seed = seed.unwrap_or(scenario.seed);
            println!("{}", options_line(&scenario, seed));
            let (report, timeline) = crate::harness::run(&scenario, seed);
            if let Some(out) = plot
                && let Err(e) = std::fs::write(&out, timeline.to_svg())
            {
                eprintln!("canteen-sim: {}: cannot write the plot: {e}", out.display());
                return 2;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report).expect("reports encode"));
            } else {
                print!("{}", report.to_table());
                eprintln!("wall time {} ms for {} simulated s", report.wall_ms, report.sim_s);
            }
            if report.passed {
                0
            } else {
                for c in report.checks.iter().filter(|c| !c.passed) {
                    eprintln!("canteen-sim: check {:?} failed: {}; replay: {}", c.name, c.detail, report.replay);
                }
                1
            }
        }
        Command::Sweep { files, seeds, jobs } => sweep(&files, seeds, jobs),
        Command::Bench { files } => bench(&files),
    }
}

/// Runs each scenario once and prints its speed; a run whose expectations fail measured
/// nothing worth printing, so it is reported as a failure instead (exit 1).
#[cfg(madsim)]
fn bench(files: &[PathBuf]) -> u8 {
    let mut failed = 0;
    println!(
        "{:<44} {:>6} {:>8} {:>10} {:>12} {:>16} {:>16}",
        "SCENARIO", "NODES", "SIM S", "WALL S", "SIM S/WALL S", "GOSSIP B/NODE/S", "LAST MINUTE"
    );
    for f in files {
        let scenario = match load(f) {
            Ok(s) => s,
            Err(code) => return code,
        };
        let (report, _) = crate::harness::run(&scenario, scenario.seed);
        if !report.passed {
            failed += 1;
            for c in report.checks.iter().filter(|c| !c.passed) {
                println!("{}: check {:?} failed: {}; replay: {}", scenario.file, c.name, c.detail, report.replay);
            }
            continue;
        }
        let wall_s = report.wall_ms as f64 / 1000.0;
        println!(
            "{:<44} {:>6} {:>8.0} {:>10.2} {:>12.0} {:>16.0} {:>16.0}",
            scenario.file,
            report.nodes,
            report.sim_s,
            wall_s,
            report.sim_s / wall_s.max(1e-3),
            report.gossip_bytes_per_node_s,
            report.gossip_bytes_per_node_s_last_minute
        );
    }
    u8::from(failed > 0)
}

#[cfg(madsim)]
fn sweep(files: &[PathBuf], (from, to): (u64, u64), jobs: Option<usize>) -> u8 {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let mut scenarios = Vec::new();
    for f in files {
        match load(f) {
            Ok(s) => scenarios.push(s),
            Err(code) => return code,
        }
    }
    let runs: Vec<(usize, u64)> = (0..scenarios.len()).flat_map(|i| (from..to).map(move |seed| (i, seed))).collect();
    let bar = indicatif::ProgressBar::new(runs.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} runs, {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let next = AtomicUsize::new(0);
    let failures: Mutex<Vec<(usize, u64, String)>> = Mutex::new(Vec::new());
    // Each run's recoveries and convergence, by (scenario, seed) so the summary does not
    // depend on which thread finished first.
    let figures: Mutex<std::collections::BTreeMap<(usize, u64), Figures>> = Mutex::default();
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(s, seed)) = runs.get(i) else { break };
                    let (report, _) = crate::harness::run(&scenarios[s], seed);
                    figures.lock().expect("no panic while held").insert((s, seed), Figures::of(&report));
                    if !report.passed {
                        let failed: Vec<String> = report
                            .checks
                            .iter()
                            .filter(|c| !c.passed)
                            .map(|c| format!("{}: {}", c.name, c.detail))
                            .collect();
                        failures.lock().expect("no panic while held").push((s, seed, failed.join("; ")));
                    }
                    let failed = failures.lock().expect("no panic while held").len();
                    bar.set_message(format!("{failed} failed"));
                    bar.inc(1);
                }
            });
        }
    });
    bar.finish_and_clear();
    let mut failures = failures.into_inner().expect("threads joined");
    failures.sort();
    println!(
        "sweep: {} scenarios x {} seeds = {} runs in {:.1} s, {} failed",
        scenarios.len(),
        to - from,
        runs.len(),
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    for (s, seed, why) in &failures {
        println!("FAILED {why}\n  replay: canteen-sim run {} --seed {seed}", scenarios[*s].file);
    }
    print!("{}", distributions(&scenarios, &figures.into_inner().expect("threads joined")));
    println!("sweep: {} passed, {} failed", runs.len() - failures.len(), failures.len());
    u8::from(!failures.is_empty())
}

/// What the sweep's summary keeps of one run.
#[derive(Debug, Clone)]
pub struct Figures {
    /// Per fault, in timeline order: its description, when, recovery and detection times.
    faults: Vec<(String, f64, Option<f64>, Option<f64>)>,
    /// When the run had a heal: when, and how long convergence took.
    converge: Option<(f64, Option<f64>)>,
    /// Wrong down declarations, and their node-seconds.
    false_down: (u64, f64),
}

impl Figures {
    /// The figures of `report`.
    pub fn of(report: &crate::report::Report) -> Figures {
        Figures {
            faults: report.recoveries.iter().map(|r| (r.fault.clone(), r.at_s, r.recovery_s, r.detected_s)).collect(),
            converge: (!report.recoveries.is_empty()).then_some((report.heal_at_s, report.converge_s)),
            false_down: (report.false_down_events, report.false_down_node_s),
        }
    }
}

/// Per scenario, the distribution over the sweep's seeds of each fault's recovery time (and
/// detection time for a crash) and of the convergence time after the heal.
pub fn distributions(scenarios: &[Scenario], figures: &std::collections::BTreeMap<(usize, u64), Figures>) -> String {
    use std::fmt::Write as _;

    use crate::report::Distribution;

    let mut out = String::new();
    let _ = writeln!(out, "distributions over the seeds: median / p90 / p99 / max");
    for (i, scenario) in scenarios.iter().enumerate() {
        let (seeds, runs): (Vec<u64>, Vec<&Figures>) =
            figures.range((i, 0)..=(i, u64::MAX)).map(|((_, seed), f)| (*seed, f)).unzip();
        let Some(first) = runs.first() else { continue };
        let false_downs = runs.iter().any(|r| r.false_down.0 > 0) || scenario.expect.false_down_max.is_some();
        if first.faults.is_empty() && !false_downs {
            continue;
        }
        let _ = writeln!(out, "{} ({} runs, membership {})", scenario.file, runs.len(), scenario.sim.membership.name());
        for (k, (fault, at_s, _, _)) in first.faults.iter().enumerate() {
            let recovery: Vec<Option<f64>> = runs.iter().map(|r| r.faults.get(k).and_then(|f| f.2)).collect();
            let detected: Vec<Option<f64>> = runs.iter().map(|r| r.faults.get(k).and_then(|f| f.3)).collect();
            let mut line = format!("  {fault} at {at_s:.1}s: recovery ");
            line.push_str(&Distribution::of(&recovery).map_or("never".to_owned(), |d| d.describe()));
            if let Some(d) = Distribution::of(&detected) {
                let _ = write!(line, "; detected {}", d.describe());
            }
            let _ = writeln!(out, "{line}");
        }
        if let Some((heal_at_s, _)) = first.converge {
            let converge: Vec<Option<f64>> = runs.iter().map(|r| r.converge.and_then(|c| c.1)).collect();
            let d = Distribution::of(&converge).map_or("never".to_owned(), |d| d.describe());
            let _ = writeln!(out, "  converged after the heal at {heal_at_s:.1}s: {d}");
        }
        if false_downs {
            let events: Vec<u64> = runs.iter().map(|r| r.false_down.0).collect();
            let node_s: f64 = runs.iter().map(|r| r.false_down.1).sum();
            let with = events.iter().filter(|e| **e > 0).count();
            // The seeds to replay, the first few.
            let mut which: Vec<String> =
                seeds.iter().zip(&events).filter(|(_, e)| **e > 0).map(|(s, _)| s.to_string()).take(6).collect();
            if with > which.len() {
                which.push("...".to_owned());
            }
            let which = if which.is_empty() { String::new() } else { format!(" (seeds {})", which.join(", ")) };
            let as_s: Vec<Option<f64>> = events.iter().map(|e| Some(*e as f64)).collect();
            let d = Distribution::of(&as_s).expect("at least one run");
            let _ = writeln!(
                out,
                "  wrongly declared down: in {with} of {} runs{which}; per run {:.0} / {:.0} / {:.0} / {:.0} events; {node_s:.1} node-s in all",
                runs.len(),
                d.p50,
                d.p90,
                d.p99,
                d.max
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges_parse_both_ways_and_reject_nonsense() {
        assert_eq!(parse_seeds("1..101"), Ok((1, 101)));
        assert_eq!(parse_seeds("1..=100"), Ok((1, 101)));
        assert!(parse_seeds("5..5").is_err());
        assert!(parse_seeds("a..b").is_err());
        assert!(parse_seeds("7").is_err());
    }
}
