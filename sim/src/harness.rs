//! One simulated run: madsim nodes each running a driver loop around `core::node::Node`, a
//! traffic task, a fault timeline and checkers watching the world all the time.
//!
//! Only built under `--cfg madsim`: madsim's runtime, network and node control exist only there.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use canteen_core::membership::{MembershipMode, PeerAddr};
use canteen_core::model::AppName;
use canteen_core::node::{Command, NodeConfig};
use madsim::runtime::{Handle, Runtime};
use madsim::time::Instant;

use crate::driver::Driver;
use crate::faults::Faults;
use crate::report::{Report, Timeline};
use crate::scenario::{Membership, Scenario, Step};
use crate::traffic::poisson_arrivals;
use crate::world::{Input, World, gossip_addr_of, ip_of};
/// The tag of canteen's datagrams on madsim's endpoints.
pub(crate) const TAG: u64 = 0x63616e74;
/// With SWIM, every node joins through the first few nodes of the cluster.
const SWIM_SEEDS: usize = 3;

/// The world, shared by the drivers, the traffic, the faults and the checkers of a run, all
/// on madsim's one thread.
pub(crate) type Shared = Arc<Mutex<World>>;

/// Locks a shared value; the simulation runs on one thread, so this never waits.
pub(crate) fn lock<T>(shared: &Arc<Mutex<T>>) -> MutexGuard<'_, T> {
    shared.lock().expect("the simulation runs on one thread and never panics while holding a lock")
}

/// Runs `scenario` with `seed` to completion and returns its report. Deterministic: the same
/// scenario and seed give the same report, wall time aside.
pub fn run(scenario: &Scenario, seed: u64) -> (Report, Timeline) {
    let wall = std::time::Instant::now();
    let mut config = madsim::Config::default();
    let min = Duration::from_millis(scenario.sim.net_latency_ms_min);
    let max = Duration::from_millis(scenario.sim.net_latency_ms_max).max(min + Duration::from_micros(1));
    config.net.send_latency = min..max;
    let runtime = Runtime::with_seed_and_config(seed, config);
    let scenario_for_run = scenario.clone();
    let (mut report, timeline) = runtime.block_on(async move { supervise(scenario_for_run, seed).await });
    report.wall_ms = wall.elapsed().as_millis() as u64;
    (report, timeline)
}

/// Simulated milliseconds since the run began.
pub(crate) fn now_ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// The whole run: nodes, traffic, faults, checks, report.
async fn supervise(scenario: Scenario, seed: u64) -> (Report, Timeline) {
    let start = Instant::now();
    let world: Shared = Arc::new(Mutex::new(World::new(&scenario, seed)));
    let handle = Handle::current();
    let late: Vec<bool> = (0..scenario.cluster.nodes.len()).map(|i| scenario.sim.late_nodes.contains(&i)).collect();
    // SWIM seeds: the first few nodes that start at time 0.
    let seeds: Vec<PeerAddr> =
        (0..scenario.cluster.nodes.len()).filter(|i| !late[*i]).take(SWIM_SEEDS).map(gossip_addr_of).collect();
    let configs: Vec<NodeConfig> = scenario
        .cluster
        .nodes
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let mut config = NodeConfig::new(spec.id.clone(), &ip_of(i).to_string(), spec.capacity);
            config.gossip_addr = gossip_addr_of(i);
            config.labels = spec.labels.clone();
            config.gpus = spec.gpus;
            config.gpu_model = spec.gpu_model.clone();
            config.host_port_min = spec.host_ports.min;
            config.host_port_max = spec.host_ports.max;
            config.policy = scenario.cluster.policy;
            config.seed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i as u64;
            if scenario.sim.membership == Membership::Swim {
                config.membership = MembershipMode::Swim;
                config.seeds = seeds.clone();
            }
            config
        })
        .collect();
    let spawn = {
        let (world, handle, names) = (world.clone(), handle.clone(), scenario.cluster.nodes.clone());
        move |i: usize| {
            let w = world.clone();
            let config = configs[i].clone();
            handle
                .create_node()
                .name(names[i].id.as_str())
                .ip(ip_of(i))
                .init(move || {
                    let (w, config) = (w.clone(), config.clone());
                    async move { Driver::boot(w, i, config, start).await.run().await }
                })
                .build()
                .id()
        }
    };
    // Nodes boot in the order of their offsets within `boot_spread_ms` (all at time 0 when it
    // is 0): a node's periodic timers run from its boot, so equal boots put every node's in
    // phase with the others' and with the scenario's clock.
    let offsets: Vec<u64> = boot_offsets(&scenario, seed);
    let mut order: Vec<usize> = (0..late.len()).filter(|i| !late[*i]).collect();
    order.sort_by_key(|i| (offsets[*i], *i));
    let mut ids: Vec<Option<madsim::task::NodeId>> = vec![None; late.len()];
    for i in order {
        // No wait at all for a node booting at time 0: a wait yields to madsim's scheduler,
        // and a run without a spread stays the run it was.
        if offsets[i] > 0 {
            madsim::time::sleep_until(start + Duration::from_millis(offsets[i])).await;
        }
        ids[i] = Some(spawn(i));
    }
    let mut faults = Faults::new(world.clone(), handle, ids, Box::new(spawn));
    // Let every node boot, then apply the apps through the first node, as an operator would.
    while lock(&world).nodes.iter().zip(&late).any(|(n, late)| !late && n.inbox.is_none()) {
        madsim::time::sleep(Duration::from_millis(1)).await;
    }
    let first = late.iter().position(|l| !l).expect("checked: a node starts at time 0");
    for app in &scenario.cluster.apps {
        if scenario.app_sim.get(&app.name).is_none_or(|s| s.apply_at_start) {
            lock(&world).deliver(first, Input::Command(Command::Apply(Box::new(app.clone()))));
        }
    }

    let checker = crate::checker::Checker::new(&scenario);
    let checker = Arc::new(Mutex::new(checker));
    let traffic = madsim::task::spawn(traffic_loop(world.clone(), scenario.clone(), start));
    let checks = madsim::task::spawn(check_loop(world.clone(), checker.clone(), scenario.clone(), start));

    // The fault timeline, with the heal, then the end of the run.
    for (at, step) in scenario.timeline() {
        sleep_until_s(start, at).await;
        match step {
            Step::Heal => {
                faults.heal(now_ms(start));
                lock(&checker).healed_at(at);
            }
            Step::Begin(i) => faults.begin(&scenario.faults[i], now_ms(start), &scenario, &mut lock(&checker)),
            Step::End(i) => faults.end(&scenario.faults[i], now_ms(start)),
        }
    }
    sleep_until_s(start, scenario.duration_s).await;
    traffic.abort();
    checks.abort();
    let w = lock(&world);
    if std::env::var_os("CANTEEN_SIM_DEBUG").is_some() {
        for n in &w.nodes {
            eprintln!("{} up {} members {:?}", n.id, n.up, n.members);
        }
        for (id, c) in &w.containers {
            eprintln!(
                "{id} {} v{} on {} port {} ready {} exited {} stopping {:?}",
                c.slot, c.version, w.nodes[c.node].id, c.host_port, c.ready_at_ms, c.exited, c.stopping_at_ms
            );
        }
    }
    let checker = lock(&checker);
    checker.report(&scenario, seed, &w)
}

/// Each node's boot time, in ms from the start: drawn from the seed within `[sim]
/// boot_spread_ms`, all 0 when it is 0.
fn boot_offsets(scenario: &Scenario, seed: u64) -> Vec<u64> {
    let spread = scenario.sim.boot_spread_ms;
    let mut rng = crate::traffic::SimRng::new(seed ^ 0xb007_5b7e_ad00);
    (0..scenario.cluster.nodes.len()).map(|_| if spread == 0 { 0 } else { rng.below(spread) }).collect()
}

async fn sleep_until_s(start: Instant, at_s: f64) {
    let at = start + Duration::from_secs_f64(at_s);
    madsim::time::sleep_until(at).await;
}

/// Open-loop Poisson clients: each request enters a random node that is up and goes through
/// that node's balancer.
async fn traffic_loop(world: Shared, scenario: Scenario, start: Instant) {
    let tick_us = scenario.sim.tick_ms * 1000;
    let mut arrivals = Vec::new();
    let mut t_us = 0u64;
    let apps: Vec<AppName> = scenario.cluster.apps.iter().map(|a| a.name.clone()).collect();
    // Each app's load steps, in file order, read once instead of on every tick.
    let steps: Vec<Vec<(f64, f64)>> = apps
        .iter()
        .map(|app| scenario.load.iter().filter(|l| l.app == app.as_str()).map(|l| (l.at_s, l.rps)).collect())
        .collect();
    // The nodes that are up, listed again only when that may have changed (the world bumps
    // `membership_version` whenever a node goes up or down): a walk over a thousand nodes
    // every tick read a cache line each.
    let mut up: Vec<usize> = Vec::new();
    let mut up_version = None;
    loop {
        let next = t_us + tick_us;
        madsim::time::sleep_until(start + Duration::from_micros(next)).await;
        let mut w = lock(&world);
        w.finish_requests(next);
        if up_version != Some(w.membership_version) {
            up_version = Some(w.membership_version);
            up.clear();
            up.extend((0..w.nodes.len()).filter(|i| w.nodes[*i].up));
        }
        for (app_index, steps) in steps.iter().enumerate() {
            let rate = rate_at(steps, t_us as f64 / 1e6);
            if rate <= 0.0 {
                continue;
            }
            arrivals.clear();
            poisson_arrivals(&mut w.rng, rate, t_us, next, &mut arrivals);
            for &at in &arrivals {
                if up.is_empty() {
                    w.record(Err(crate::world::RequestError::NoBackend));
                    continue;
                }
                let entry = up[w.rng.below(up.len() as u64) as usize];
                let outcome = w.route(at, entry, app_index);
                w.record(outcome);
                w.record_second(at, outcome);
            }
        }
        t_us = next;
    }
}

/// The load timeline's rate for `app` at `t_s`.
/// The load timeline's rate at `t_s`, from one app's steps `(at_s, rps)` in file order: the last
/// step that has begun.
fn rate_at(steps: &[(f64, f64)], t_s: f64) -> f64 {
    steps.iter().rfind(|(at_s, _)| *at_s <= t_s).map_or(0.0, |(_, rps)| *rps)
}

async fn check_loop(world: Shared, checker: Arc<Mutex<crate::checker::Checker>>, scenario: Scenario, start: Instant) {
    let interval = scenario.sim.check_interval_ms;
    let mut t = 0;
    loop {
        t += interval;
        madsim::time::sleep_until(start + Duration::from_millis(t)).await;
        let mut w = lock(&world);
        w.purge(t);
        w.crash_due(t);
        lock(&checker).sample(t, &w, &scenario);
    }
}
