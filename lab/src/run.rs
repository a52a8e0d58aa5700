//! One lab run, as an outline: the checks that it can run here, the leftovers of an earlier run
//! removed, the network and the agents up, the apps applied, the load, the fault timeline, the
//! samples, the report; and everything taken down again, whatever happens.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use canteen_sim::checker::Checker;
use canteen_sim::report::{Report, Timeline};
use canteen_sim::scenario::{Scenario, Step};
use canteen_sim::world::World;
use tokio::time::Instant;

use crate::faults::{Faults, apply_at_start};
use crate::hosts::{self, Agents};
use crate::net::{self, Net};
use crate::observe::{Observer, Rss, Sampled};

/// How often the lab samples every agent and Docker: a few times a second, as the issue of
/// the lab asks, where the simulator samples every 100 ms of simulated time.
pub const SAMPLE_MS: u64 = 250;
/// How long the agents have to find each other before the run's clock starts.
const FORM_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a run did not give a report.
#[derive(Debug)]
pub enum LabError {
    /// The lab cannot run here or cannot run this (exit 2): not root, a tool or an image
    /// missing, a refused scenario.
    Cannot(String),
    /// The run failed before its report (exit 1): the cluster did not form, an agent died.
    Failed(String),
}

impl std::fmt::Display for LabError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LabError::Cannot(m) | LabError::Failed(m) => f.write_str(m),
        }
    }
}

/// A run's report, timeline, and the lab's own figures.
#[derive(Debug)]
pub struct LabRun {
    /// The simulator's report, judged by the simulator's checkers.
    pub report: Report,
    /// The timeline for `--plot`.
    pub timeline: Timeline,
    /// Each agent's resident memory.
    pub rss: Vec<Rss>,
    /// Seconds from the start to the first sample of the formed cluster.
    pub setup_s: f64,
}

impl LabRun {
    /// The lab's figures as JSON, added to the report's under `lab`.
    pub fn lab_json(&self) -> serde_json::Value {
        let peak = self.rss.iter().map(|r| r.peak_kib).max().unwrap_or(0);
        let (sum, n) = self.rss.iter().fold((0, 0), |(s, n), r| (s + r.sum_kib, n + r.samples));
        serde_json::json!({
            "setup_s": (self.setup_s * 10.0).round() / 10.0,
            "agent_rss_peak_mib": peak as f64 / 1024.0,
            "agent_rss_mean_mib": if n == 0 { 0.0 } else { sum as f64 / n as f64 / 1024.0 },
            "sample_ms": SAMPLE_MS,
        })
    }
}

/// Whether this process runs as root (network namespaces and nftables need it).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .is_some_and(|uid| uid == "0")
}

/// Whether `program` is on the PATH.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// What the lab needs of this machine: root, the tools, Docker, the scenario's images.
async fn preflight(scenario: &Scenario, observer: &Observer) -> Result<(), LabError> {
    if !is_root() {
        return Err(LabError::Cannot(
            "the lab needs root: it creates network namespaces, links and nftables rules (run it as root, e.g. \
             with sudo)"
                .into(),
        ));
    }
    let missing: Vec<&str> = ["ip", "nft", "iptables"].into_iter().filter(|p| !on_path(p)).collect();
    if !missing.is_empty() {
        return Err(LabError::Cannot(format!(
            "missing {}: install Debian's iproute2, nftables and iptables (scripts/lab does)",
            missing.join(", ")
        )));
    }
    let mut images: Vec<String> = scenario.cluster.apps.iter().map(|a| a.image.clone()).collect();
    for f in &scenario.faults {
        if let canteen_sim::scenario::FaultKind::Update { image: Some(image), .. } = &f.kind {
            images.push(image.clone());
        }
    }
    images.sort();
    images.dedup();
    for image in images {
        if observer.docker().inspect_image(&image).await.is_err() {
            return Err(LabError::Cannot(format!(
                "image {image:?} is not on this machine and there is no registry to pull it from: build it (for \
                 canteen-demo:latest, scripts/demo-image)"
            )));
        }
    }
    Ok(())
}

/// Removes everything a lab run makes: its agents (the processes in its namespaces), its
/// namespaces, links, bridge and rules, and the containers of its agents. Synchronous, so it
/// runs from `Drop` and after Ctrl-C alike; quiet when there is nothing to remove.
pub fn teardown() {
    net::clean();
    for identity in hosts::leftover_identities() {
        let label = format!("label={}={identity}", canteen_docker::docker::LABEL_IDENTITY);
        let ids = net::sh(&["docker", "ps", "-aq", "--filter", &label]).unwrap_or_default();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["docker", "rm", "-f"];
            args.extend(ids);
            let _ = net::sh(&args);
        }
    }
}

/// Tears the lab down when dropped: at the end of a run, on an error, on a panic.
struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        teardown();
    }
}

/// Runs `scenario` (its file's text is `text`) with `seed` on real agents from the `canteen`
/// binary `bin`.
pub async fn run(scenario: &Scenario, text: &str, seed: u64, bin: &Path) -> Result<LabRun, LabError> {
    crate::admit::check(scenario).map_err(|r| LabError::Cannot(format!("{}: {r}", scenario.file)))?;
    if !bin.is_file() {
        return Err(LabError::Cannot(format!(
            "{}: no canteen binary there (build it, or give --canteen)",
            bin.display()
        )));
    }
    let wall = std::time::Instant::now();
    let observer = Observer::connect(scenario).await.map_err(LabError::Cannot)?;
    preflight(scenario, &observer).await?;
    // Leftovers of a run that was killed, then a clean slate.
    teardown();
    let _ = std::fs::remove_dir_all(hosts::LAB_DIR);
    let _guard = Guard;

    // The lab samples less often than the simulator: the checkers count time by this.
    let mut lab = scenario.clone();
    lab.sim.check_interval_ms = SAMPLE_MS;
    let lab = Arc::new(lab);
    let nodes = scenario.cluster.nodes.len();
    let net = Net::create(nodes).map_err(|e| LabError::Cannot(format!("the lab's network: {e}")))?;
    let net = Arc::new(net);
    let agents = Agents::new(bin, scenario).map_err(|e| LabError::Cannot(format!("{}: {e}", hosts::LAB_DIR)))?;
    let agents = Arc::new(Mutex::new(agents));
    let world = Arc::new(Mutex::new(World::new(&lab, seed)));
    let late: Vec<bool> = (0..nodes).map(|i| scenario.sim.late_nodes.contains(&i)).collect();
    let first = late.iter().position(|l| !l).expect("checked: a node starts at time 0");
    for i in (0..nodes).filter(|i| !late[*i]) {
        agents.lock().expect("never poisoned").start(i).map_err(LabError::Failed)?;
        world.lock().expect("never poisoned").nodes[i].up = true;
    }
    form(&agents, &late).await?;
    let setup_s = wall.elapsed().as_secs_f64();

    let start = Instant::now();
    let apps = Faults::app_tables(text);
    let api = agents.lock().expect("never poisoned").api(first);
    apply_at_start(&api, scenario, &apps).await.map_err(LabError::Failed)?;
    let live = Arc::new(Mutex::new((0..nodes).map(|i| !late[i]).collect::<Vec<bool>>()));
    let checker = Arc::new(Mutex::new(Checker::new(&lab)));
    let load = tokio::spawn(crate::load::run(world.clone(), live.clone(), (*lab).clone(), seed, start));
    let rss = Arc::new(Mutex::new(Vec::new()));
    // Bumped as each step of the fault timeline starts and again once it is done.
    let epoch = Arc::new(AtomicU64::new(0));
    let sampler = {
        let sampled = Sampled {
            world: world.clone(),
            agents: agents.clone(),
            checker: checker.clone(),
            net: net.clone(),
            epoch: epoch.clone(),
        };
        let (lab, rss) = (lab.clone(), rss.clone());
        let mut observer = observer;
        tokio::spawn(async move {
            let mut next = start + Duration::from_millis(SAMPLE_MS);
            loop {
                tokio::time::sleep_until(next).await;
                let now_ms = start.elapsed().as_millis() as u64;
                observer.sample(now_ms, &sampled, &lab).await;
                *rss.lock().expect("never poisoned") = observer.rss.clone();
                next = (next + Duration::from_millis(SAMPLE_MS)).max(Instant::now());
            }
        })
    };
    let lister = Observer::connect(scenario).await.map_err(LabError::Cannot)?;
    let mut faults = Faults { net: net.clone(), agents: agents.clone(), world: world.clone(), live, lister, apps };

    // The fault timeline, with the heal, then the end of the run: in the simulator's order.
    let now_ms = || start.elapsed().as_millis() as u64;
    for (at, step) in scenario.timeline() {
        sleep_until_s(start, at).await;
        // A sample taken while a fault is being done may predate its effect (a `docker kill`
        // takes a while): it is dropped, so no sample says "recovered" before the fault bit.
        epoch.fetch_add(1, Ordering::SeqCst);
        match step {
            Step::Heal => {
                if let Err(e) = faults.heal(now_ms()) {
                    eprintln!("canteen-lab: heal: {e}");
                }
                checker.lock().expect("never poisoned").healed_at(at);
            }
            Step::Begin(i) => faults.begin(&scenario.faults[i], now_ms(), scenario, &checker).await,
            Step::End(i) => faults.end(&scenario.faults[i], now_ms()),
        }
        epoch.fetch_add(1, Ordering::SeqCst);
    }
    sleep_until_s(start, scenario.duration_s).await;
    load.abort();
    sampler.abort();
    let _ = sampler.await;
    let dead: Vec<usize> = {
        let mut agents = agents.lock().expect("never poisoned");
        let w = world.lock().expect("never poisoned");
        (0..nodes).filter(|i| w.nodes[*i].up && !agents.running(*i)).collect()
    };
    let (mut report, timeline) = {
        let w = world.lock().expect("never poisoned");
        checker.lock().expect("never poisoned").report(&lab, seed, &w)
    };
    for i in dead {
        let tail = agents.lock().expect("never poisoned").log_tail(i);
        report.checks.push(canteen_sim::report::Check::fail(
            "agents",
            format!("{}'s agent exited on its own; its log ends:\n{tail}", scenario.cluster.nodes[i].id),
        ));
        report.passed = false;
    }
    report.replay = format!("scripts/lab run {} --seed {seed}", scenario.file);
    report.wall_ms = wall.elapsed().as_millis() as u64;
    let rss = rss.lock().expect("never poisoned").clone();
    Ok(LabRun { report, timeline, rss, setup_s })
}

async fn sleep_until_s(start: Instant, at_s: f64) {
    tokio::time::sleep_until(start + Duration::from_secs_f64(at_s)).await;
}

/// Waits until every agent started answers and holds every other one alive.
async fn form(agents: &Mutex<Agents>, late: &[bool]) -> Result<(), LabError> {
    let deadline = Instant::now() + FORM_TIMEOUT;
    let started: Vec<usize> = (0..late.len()).filter(|i| !late[*i]).collect();
    loop {
        let apis: Vec<_> = {
            let mut a = agents.lock().expect("never poisoned");
            for &i in &started {
                if !a.running(i) {
                    return Err(LabError::Failed(format!(
                        "node {i}'s agent exited at start; its log ends:\n{}",
                        a.log_tail(i)
                    )));
                }
            }
            started.iter().map(|&i| a.api(i)).collect()
        };
        let mut formed = true;
        for api in &apis {
            match canteen_docker::api::status(api).await {
                Ok(status) => {
                    let alive: HashSet<&str> =
                        status.nodes.iter().filter(|n| n.state == "alive").map(|n| n.name.as_str()).collect();
                    formed &= alive.len() >= started.len();
                }
                Err(_) => formed = false,
            }
        }
        if formed {
            return Ok(());
        }
        if Instant::now() > deadline {
            let tail = agents.lock().expect("never poisoned").log_tail(started[0]);
            return Err(LabError::Failed(format!(
                "the agents did not form one cluster within {} s; node {}'s log ends:\n{tail}",
                FORM_TIMEOUT.as_secs(),
                started[0]
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
