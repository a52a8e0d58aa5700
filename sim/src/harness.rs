//! One simulated run: madsim nodes each running a driver loop around `core::node::Node`, a
//! traffic task, a fault timeline and checkers watching the world all the time.
//!
//! Only built under `--cfg madsim`: madsim's runtime, network and node control exist only there.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use canteen_core::balance::Balancer;
use canteen_core::health::ProbeOutcome;
use canteen_core::membership::{MembershipMode, PeerAddr};
use canteen_core::model::AppName;
use canteen_core::node::{Action, Command, ContainerEvent, Event, Node, NodeConfig};
use canteen_core::time::Time;
use madsim::net::{Endpoint, NetSim};
use madsim::runtime::{Handle, Runtime};
use madsim::time::Instant;

use crate::report::{Check, Recovery, Report, Requests, Timeline};
use crate::scenario::{FaultKind, Membership, Scenario};
use crate::traffic::poisson_arrivals;
use crate::world::{
    GOSSIP_PORT, Inbox, InboxHandle, Input, ScaleEvent, World, container_id, container_name, gossip_addr_of,
    index_of_ip, ip_of,
};
const TAG: u64 = 0x63616e74;
/// With SWIM, every node joins through the first few nodes of the cluster.
const SWIM_SEEDS: usize = 3;

type Shared = Arc<Mutex<World>>;

fn lock<T>(shared: &Arc<Mutex<T>>) -> MutexGuard<'_, T> {
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

fn now_ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// The madsim timers a driver has armed and that have not fired yet. madsim's `Sleep` adds a
/// timer every time it is polled while pending and cannot take one back: a driver that awaited
/// `timeout(wait, inbox.recv())` anew after every input left a timer behind whenever an input
/// came first, and each of them woke the node again later for nothing, and armed another.
/// A driver arms a timer only when none of its own is due at or before its deadline.
#[derive(Default)]
struct Alarms {
    armed: std::collections::BTreeSet<Instant>,
}

impl Alarms {
    /// The next input, or `None` at `deadline` if none came first.
    async fn next_input(&mut self, inbox: &InboxHandle, deadline: Instant) -> Option<Input> {
        std::future::poll_fn(|cx| {
            if let Some(input) = lock(inbox).pop_or_wait(cx.waker()) {
                return Poll::Ready(Some(input));
            }
            let now = Instant::now();
            if now >= deadline {
                lock(inbox).stop_waiting();
                return Poll::Ready(None);
            }
            while self.armed.first().is_some_and(|at| *at <= now) {
                self.armed.pop_first();
            }
            if self.armed.first().is_none_or(|at| *at > deadline) {
                // As madsim does: a timer fires a millisecond from now at the soonest.
                let at = deadline.max(now + Duration::from_millis(1));
                let mut sleep = std::pin::pin!(madsim::time::sleep_until(at));
                // Polled once, the sleep arms a timer that wakes this task at `at`; dropping
                // it leaves the timer armed.
                let _ = sleep.as_mut().poll(cx);
                self.armed.insert(at);
            }
            Poll::Pending
        })
        .await
    }
}

/// The driver loop of one node: inputs in, actions out, drained after every input.
async fn drive(world: Shared, index: usize, mut config: NodeConfig, start: Instant) {
    let inbox_handle = InboxHandle::default();
    let endpoint =
        Endpoint::bind(SocketAddr::new(ip_of(index), GOSSIP_PORT)).await.expect("each node binds its own address");
    let receiver = endpoint.clone();
    let inbox = inbox_handle.clone();
    madsim::task::spawn(async move {
        while let Ok((payload, from)) = receiver.recv_from_raw(TAG).await {
            let (Some(_), Ok(bytes)) = (index_of_ip(from.ip()), payload.downcast::<Vec<u8>>()) else { continue };
            Inbox::push(&inbox, Input::Message(*bytes));
        }
    });
    let boot_ms = now_ms(start);
    let (generation, running, persisted) = {
        let mut w = lock(&world);
        let (generation, running) = w.node_started(index, inbox_handle.clone(), boot_ms);
        (generation, running, w.nodes[index].persisted.clone())
    };
    // SWIM: each life of the node's agent is a new generation, so its peers take it back.
    config.generation = generation;
    let swim = config.membership == MembershipMode::Swim;
    let mut node = Node::new(Time::from_millis(boot_ms), config);
    lock(&world).agent_generation(index, node.config().generation);
    // As the real agent starts (runtime-docker's agent.rs): the persisted desired state first,
    // so adopted containers meet their app's health check, then the containers found running
    // on the node, before the first placement pass. Queued ahead of any peer's message.
    Inbox::push(&inbox_handle, Input::Restore(persisted));
    Inbox::push(&inbox_handle, Input::Container(ContainerEvent::Adopted { containers: running }));
    // Inputs the simulated Docker answers later: container starts and probe results.
    let mut later: BinaryHeap<Reverse<(u64, u64, usize)>> = BinaryHeap::new();
    let mut later_inputs: BTreeMap<usize, Input> = BTreeMap::new();
    let mut later_seq = 0u64;
    let mut membership_seen = 0u64;
    let mut next_traffic_ms = now_ms(start) + 1000;
    let mut published_root: Option<u64> = None;
    let mut published_members = u64::MAX;
    let mut persisted_version = node.desired_version();
    let mut alarms = Alarms::default();
    loop {
        // 1. Carry out every action, so the node's queue is empty before the next input.
        // The time is read once for all of them, though madsim holds each datagram sent for
        // its sender's rand_delay, a millisecond once rounded up by its timers.
        let now = now_ms(start);
        let mut sent = false;
        while let Some(action) = node.poll_action() {
            match action {
                Action::Send { to, bytes } => {
                    let to = {
                        let mut w = lock(&world);
                        w.nodes[index].bytes_sent += bytes.len() as u64;
                        w.nodes[index].messages_sent += 1;
                        w.socket_addr(&to)
                    };
                    // Lost datagrams are part of the model: errors are ignored.
                    let _ = endpoint.send_to_raw(to, TAG, Box::new(bytes)).await;
                    sent = true;
                }
                Action::StartContainer { slot, app, host_port, generation } => {
                    let mut w = lock(&world);
                    let sim = w.app_sim(&app.name);
                    let (latency, jitter) = w.start_latency;
                    let offset = if jitter == 0 { 0 } else { w.rng.below(2 * jitter + 1) };
                    let ready = now + latency - jitter + offset;
                    let input = match w.create_container(index, slot.clone(), host_port, app.resources, ready, sim) {
                        Some(id) => {
                            let container = container_name(id);
                            Input::Container(ContainerEvent::Started { slot, generation, container })
                        }
                        None => Input::Container(ContainerEvent::StartFailed {
                            slot,
                            generation,
                            error: format!("host port {host_port} is taken"),
                        }),
                    };
                    drop(w);
                    later_seq += 1;
                    later.push(Reverse((ready, later_seq, later_seq as usize)));
                    later_inputs.insert(later_seq as usize, input);
                }
                Action::StopContainer { container, drain_ms, .. } => {
                    if let Some(id) = container_id(&container) {
                        lock(&world).stop_container(id, now, drain_ms)
                    }
                }
                Action::Probe { container, timeout_ms, .. } => {
                    let w = lock(&world);
                    let (outcome, after_ms) = match container_id(&container).and_then(|id| w.containers.get(&id)) {
                        Some(c) if c.removed_at_ms.is_none() && c.hung => (ProbeOutcome::Timeout, timeout_ms),
                        // Answered at once: the node takes the answer before it sleeps again.
                        Some(c) if c.removed_at_ms.is_none() && c.healthy_at(now) => (ProbeOutcome::Success, 0),
                        _ => (ProbeOutcome::Failure, 0),
                    };
                    drop(w);
                    later_seq += 1;
                    later.push(Reverse((now + after_ms, later_seq, later_seq as usize)));
                    later_inputs.insert(later_seq as usize, Input::Probe(container, outcome));
                }
                Action::SetBackends { app, picker, backends, .. } => {
                    let mut w = lock(&world);
                    let seed = w.rng.next_u64();
                    let Some(&app) = w.app_index.get(&app) else { continue };
                    let backends = w.sim_backends(&backends);
                    let balancer = w.nodes[index].balancers[app].get_or_insert_with(|| Balancer::new(picker, seed));
                    if balancer.kind() != picker {
                        *balancer = Balancer::new(picker, seed);
                    }
                    balancer.set_backends(backends.into_iter().map(|b| (b, 1)));
                }
                Action::RemoveBalancer { app } => {
                    let mut w = lock(&world);
                    if let Some(&app) = w.app_index.get(&app) {
                        w.nodes[index].balancers[app] = None;
                    }
                }
                Action::Event(event) => lock(&world).record_event(now, event),
            }
        }
        // Only a send waits (madsim's rand_delay); without one the time read above still
        // holds, and reading madsim's clock is a few percent of a quiet cluster's time.
        let now = if sent { now_ms(start) } else { now };
        // 2. The perfect failure detector tells the node who is up and reachable; with SWIM
        // the node learns it from its peers.
        let membership = (!swim)
            .then(|| {
                let w = lock(&world);
                (w.membership_version != membership_seen).then(|| (w.membership_version, w.alive_seen_by(index)))
            })
            .flatten();
        if let Some((version, alive)) = membership {
            membership_seen = version;
            node.handle_membership(Time::from_millis(now), alive);
            continue;
        }
        if let Some(Reverse((at, _, key))) = later.peek().copied()
            && at <= now
        {
            later.pop();
            let input = later_inputs.remove(&key).expect("scheduled");
            feed(&mut node, now, input);
            continue;
        }
        if now >= next_traffic_ms {
            next_traffic_ms = now + 1000;
            let entered: Vec<(AppName, u64)> = {
                let mut w = lock(&world);
                let w = &mut *w;
                w.nodes[index]
                    .entered
                    .iter_mut()
                    .enumerate()
                    .filter(|(_, count)| **count > 0)
                    .map(|(app, count)| (w.apps[app].clone(), std::mem::take(count)))
                    .collect()
            };
            for (app, count) in entered {
                node.handle_traffic(Time::from_millis(now), &app, count);
                assert!(node.poll_action().is_none(), "a traffic sample causes no action at once");
            }
        }
        // The checkers compare registries by their root hashes and read members and the
        // containers each agent tracks, all kept current after every input. What an agent
        // tracks is in its status, so it changes only with the registry's root.
        // As the real agent does: the desired state is persisted whenever it changed, however
        // it changed (a command, a peer's news).
        if persisted_version != node.desired_version() {
            persisted_version = node.desired_version();
            lock(&world).nodes[index].persisted = node.desired_entries();
        }
        if published_members != node.members_version() {
            published_members = node.members_version();
            lock(&world).publish_members(index, node.members(), now);
        }
        let root = node.registry().root_hash();
        if published_root != Some(root) {
            published_root = Some(root);
            let mut w = lock(&world);
            let listed = node
                .local_slots()
                .into_iter()
                .map(|(slot, port, _)| (w.app_index.get(&slot.app).copied().unwrap_or(usize::MAX), slot.index, port))
                .collect();
            let n = &mut w.nodes[index];
            n.digest = Some(root);
            n.listed = listed;
        }
        if node.poll_timeout().is_some_and(|t| t.as_millis() <= now) {
            node.handle_timeout(Time::from_millis(now));
            continue;
        }
        // 3. Sleep until the next timer or the next input. Traffic counts wait for the next
        // wake-up after they are due: the node's own load report timer is one every second.
        let mut deadline = node.poll_timeout().map_or(now + 1000, |t| t.as_millis());
        if let Some(Reverse((at, _, _))) = later.peek() {
            deadline = deadline.min(*at);
        }
        // An input already waiting is taken at once, without arming a timer for it.
        let waiting = lock(&inbox_handle).pop();
        if let Some(input) = waiting {
            feed(&mut node, now, input);
            continue;
        }
        if let Some(input) = alarms.next_input(&inbox_handle, start + Duration::from_millis(deadline)).await {
            feed(&mut node, now_ms(start), input);
        }
    }
}

fn feed(node: &mut Node, now: u64, input: Input) {
    let now = Time::from_millis(now);
    match input {
        Input::Message(bytes) => node.handle_message(now, &bytes),
        Input::Container(event) => node.handle_container_event(now, event),
        Input::Probe(container, outcome) => node.handle_probe_result(now, &container, outcome),
        // The scenario's own commands are valid: the file was checked.
        Input::Command(command) => node.handle_command(now, command).expect("scenario commands are valid"),
        Input::Restore(entries) => node.handle_restore(now, entries),
    }
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
            config.policy = scenario.cluster.policy;
            config.seed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i as u64;
            if scenario.sim.membership == Membership::Swim {
                config.membership = MembershipMode::Swim;
                config.seeds = seeds.clone();
            }
            config
        })
        .collect();
    let spawn = |i: usize| {
        let w = world.clone();
        let config = configs[i].clone();
        handle
            .create_node()
            .name(scenario.cluster.nodes[i].id.as_str())
            .ip(ip_of(i))
            .init(move || drive(w.clone(), i, config.clone(), start))
            .build()
            .id()
    };
    let mut madsim_ids: Vec<Option<madsim::task::NodeId>> =
        (0..configs.len()).map(|i| (!late[i]).then(|| spawn(i))).collect();
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

    let checker = Checker::new(&scenario);
    let checker = Arc::new(Mutex::new(checker));
    let traffic = madsim::task::spawn(traffic_loop(world.clone(), scenario.clone(), start));
    let checks = madsim::task::spawn(check_loop(world.clone(), checker.clone(), scenario.clone(), start));

    // The fault timeline, then the heal, then the end of the run.
    let mut events: Vec<(f64, usize, bool)> = Vec::new(); // (at, fault index, is_end)
    for (i, f) in scenario.faults.iter().enumerate() {
        events.push((f.at_s, i, false));
        if let Some(end) = f.end_s() {
            events.push((end, i, true));
        }
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let heal_at = scenario.heal_at_s();
    let mut healed = false;
    let mut partitioned: Vec<(madsim::task::NodeId, madsim::task::NodeId)> = Vec::new();
    for (at, i, is_end) in events {
        if !healed && at > heal_at {
            sleep_until_s(start, heal_at).await;
            heal(&world, &mut partitioned, now_ms(start));
            lock(&checker).healed_at(heal_at);
            healed = true;
        }
        sleep_until_s(start, at).await;
        let fault = &scenario.faults[i];
        let now = now_ms(start);
        let mut w = lock(&world);
        if is_end {
            match &fault.kind {
                FaultKind::SlowNode { node, .. } => w.nodes[*node].slow_factor = 1.0,
                FaultKind::Partition { .. } | FaultKind::PacketLoss { .. } => {
                    drop(w);
                    heal(&world, &mut partitioned, now);
                    w = lock(&world);
                }
                _ => {}
            }
            continue;
        }
        let crashed = match &fault.kind {
            FaultKind::CrashNode { node } if w.nodes[*node].up => Some(*node),
            _ => None,
        };
        lock(&checker).fault_started(fault.describe(), fault.at_s, fault.end_s(), crashed);
        match &fault.kind {
            FaultKind::CrashNode { node } => {
                if w.nodes[*node].up {
                    w.node_crashed(*node, now);
                    drop(w);
                    handle.kill(madsim_ids[*node].expect("an up node was spawned"));
                }
            }
            FaultKind::RestartNode { node } => {
                if !w.nodes[*node].up
                    && let Some(id) = madsim_ids[*node]
                {
                    drop(w);
                    handle.restart(id);
                }
            }
            FaultKind::RestartAgent { node } => {
                if w.nodes[*node].up {
                    w.agent_stopped(*node, now);
                    drop(w);
                    let id = madsim_ids[*node].expect("an up node was spawned");
                    handle.kill(id);
                    handle.restart(id);
                }
            }
            FaultKind::StartNode { node } => {
                drop(w);
                if madsim_ids[*node].is_none() {
                    let id = spawn(*node);
                    madsim_ids[*node] = Some(id);
                    // Cut off from the nodes of other groups if a partition is on.
                    let group = lock(&world).group.clone();
                    let net = NetSim::current();
                    for (other, other_id) in madsim_ids.iter().enumerate() {
                        if let Some(other_id) = *other_id
                            && group[other] != group[*node]
                        {
                            net.clog_link(id, other_id);
                            net.clog_link(other_id, id);
                            partitioned.push((id, other_id));
                            partitioned.push((other_id, id));
                        }
                    }
                }
            }
            FaultKind::Apply { node, app } => {
                let spec = scenario.cluster.apps.iter().find(|a| a.name == *app).expect("checked: an app of the file");
                if w.nodes[*node].inbox.is_some() {
                    w.desired.insert(app.clone(), spec.replicas);
                    w.deliver(*node, Input::Command(Command::Apply(Box::new(spec.clone()))));
                } else {
                    drop(w);
                    lock(&checker).lost_apply(fault.describe());
                }
            }
            FaultKind::KillContainer { app, slot } => {
                if let Some(id) = w.container_of(app, *slot) {
                    let c = w.containers.get_mut(&id).expect("found");
                    c.exited = true;
                    let node = c.node;
                    w.deliver(node, Input::Container(ContainerEvent::Exited { container: container_name(id) }));
                }
            }
            FaultKind::HangContainer { app, slot } => {
                if let Some(id) = w.container_of(app, *slot) {
                    w.containers.get_mut(&id).expect("found").hung = true;
                }
            }
            FaultKind::FlapContainer { app, slot, period_ms } => {
                let until = fault.end_s().map_or(u64::MAX, |e| (e * 1000.0) as u64);
                if let Some(id) = w.container_of(app, *slot) {
                    w.containers.get_mut(&id).expect("found").flap = Some((now, *period_ms, until));
                }
            }
            FaultKind::SlowNode { node, factor } => w.nodes[*node].slow_factor = *factor,
            FaultKind::Partition { groups } => {
                let n = w.nodes.len();
                let mut group = vec![groups.len(); n];
                for (g, members) in groups.iter().enumerate() {
                    for &m in members {
                        group[m] = g;
                    }
                }
                w.set_groups(group.clone(), now);
                drop(w);
                let net = NetSim::current();
                for a in 0..n {
                    for b in 0..n {
                        if let (Some(ida), Some(idb)) = (madsim_ids[a], madsim_ids[b])
                            && group[a] != group[b]
                        {
                            net.clog_link(ida, idb);
                            partitioned.push((ida, idb));
                        }
                    }
                }
            }
            FaultKind::Heal => {
                drop(w);
                heal(&world, &mut partitioned, now);
            }
            FaultKind::PacketLoss { ratio } => {
                let ratio = *ratio;
                drop(w);
                NetSim::current().update_config(|c| c.packet_loss_rate = ratio);
            }
        }
    }
    if !healed {
        sleep_until_s(start, heal_at).await;
        heal(&world, &mut partitioned, now_ms(start));
        lock(&checker).healed_at(heal_at);
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
                "{id} {} on {} port {} ready {} exited {} stopping {:?}",
                c.slot, w.nodes[c.node].id, c.host_port, c.ready_at_ms, c.exited, c.stopping_at_ms
            );
        }
    }
    let checker = lock(&checker);
    checker.report(&scenario, seed, &w)
}

async fn sleep_until_s(start: Instant, at_s: f64) {
    let at = start + Duration::from_secs_f64(at_s);
    madsim::time::sleep_until(at).await;
}

/// Ends every partition and packet loss; slow nodes stay slow until their fault ends.
fn heal(world: &Shared, partitioned: &mut Vec<(madsim::task::NodeId, madsim::task::NodeId)>, now: u64) {
    let net = NetSim::current();
    for (a, b) in partitioned.drain(..) {
        net.unclog_link(a, b);
    }
    net.update_config(|c| c.packet_loss_rate = 0.0);
    let mut w = lock(world);
    if w.group.iter().any(|g| *g != 0) {
        let whole = vec![0; w.group.len()];
        w.set_groups(whole, now);
    }
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

async fn check_loop(world: Shared, checker: Arc<Mutex<Checker>>, scenario: Scenario, start: Instant) {
    let interval = scenario.sim.check_interval_ms;
    let mut t = 0;
    loop {
        t += interval;
        madsim::time::sleep_until(start + Duration::from_millis(t)).await;
        let mut w = lock(&world);
        w.purge(t);
        lock(&checker).sample(t, &w, &scenario);
    }
}

/// What the checkers track over a run.
#[derive(Debug)]
struct Checker {
    /// When the last minute of the run began (the second half, for shorter runs), and the
    /// bytes every node had sent by then: the steady state's gossip, after start-up and faults.
    bytes_at_last_minute: Option<(f64, u64)>,
    over_capacity: Option<(f64, String)>,
    duplicate_replica_s: f64,
    faults: Vec<OpenFault>,
    heal_at: Option<f64>,
    converged_at: Option<f64>,
    good_now: bool,
    timeline: Timeline,
    last_second: u64,
    peak_replicas: u32,
    /// Since when each registry-identical, duplicate-free stretch after the heal began.
    settled_since: Option<f64>,
    /// Containers orphaned now, with since when (simulated ms).
    orphaned: BTreeMap<crate::world::ContainerId, u64>,
    /// The longest time one container stayed orphaned, and which, so far.
    orphan_longest: (f64, String),
    /// Container-seconds of orphans.
    orphan_container_s: f64,
    /// Apply faults whose node was not running.
    lost_applies: Vec<String>,
}

#[derive(Debug)]
struct OpenFault {
    describe: String,
    at_s: f64,
    measure_from_s: f64,
    recovered_s: Option<f64>,
    /// The node a crash-node fault killed.
    crashed: Option<usize>,
    /// See `Recovery::detected_s`.
    detected_s: Option<f64>,
}

impl Checker {
    fn new(scenario: &Scenario) -> Checker {
        Checker {
            over_capacity: None,
            duplicate_replica_s: 0.0,
            faults: Vec::new(),
            heal_at: None,
            converged_at: None,
            good_now: false,
            timeline: Timeline::new(scenario),
            last_second: 0,
            bytes_at_last_minute: None,
            peak_replicas: 0,
            settled_since: None,
            orphaned: BTreeMap::new(),
            orphan_longest: (0.0, String::new()),
            orphan_container_s: 0.0,
            lost_applies: Vec::new(),
        }
    }

    fn lost_apply(&mut self, describe: String) {
        self.lost_applies.push(describe);
    }

    /// Containers running on a live node that no agent tracks or whose slot is not desired.
    /// Accounts for `c` (container `id`) if it is an orphan: running on a node that is up but
    /// serving no desired slot, or not tracked by its agent. Returns since when it is one, for
    /// the caller's list of this sample's orphans (which then replaces `orphaned`). Called
    /// for every container in id order.
    fn sample_orphan(
        &mut self,
        now_ms: u64,
        dt_s: f64,
        w: &World,
        desired: &[u32],
        id: crate::world::ContainerId,
        c: &crate::world::SimContainer,
    ) -> Option<u64> {
        if c.removed_at_ms.is_some() || c.stopping_at_ms.is_some() || c.exited || !w.nodes[c.node].up {
            return None;
        }
        let desired = desired.get(c.app).copied().unwrap_or(0);
        let tracked = w.nodes[c.node].listed.contains(&(c.app, c.slot.index, c.host_port));
        if c.slot.index < desired && tracked {
            return None;
        }
        let since = self.orphaned.get(&id).copied().unwrap_or(now_ms);
        self.orphan_container_s += dt_s;
        let for_s = (now_ms - since) as f64 / 1000.0;
        if for_s > self.orphan_longest.0 {
            let why = if tracked { "its slot is not desired" } else { "its agent does not track it" };
            self.orphan_longest =
                (for_s, format!("{} on {} since {:.1}s: {why}", c.slot, w.nodes[c.node].id, since as f64 / 1000.0));
        }
        Some(since)
    }

    fn fault_started(&mut self, describe: String, at_s: f64, end_s: Option<f64>, crashed: Option<usize>) {
        let measure_from_s = end_s.unwrap_or(at_s);
        self.faults.push(OpenFault { describe, at_s, measure_from_s, recovered_s: None, crashed, detected_s: None });
    }

    fn healed_at(&mut self, at_s: f64) {
        self.heal_at = Some(at_s);
    }

    fn sample(&mut self, now_ms: u64, w: &World, scenario: &Scenario) {
        let now_s = now_ms as f64 / 1000.0;
        let last_minute_from_s = (scenario.duration_s - 60.0).max(scenario.duration_s / 2.0);
        if self.bytes_at_last_minute.is_none() && now_s >= last_minute_from_s {
            self.bytes_at_last_minute = Some((now_s, w.nodes.iter().map(|n| n.bytes_sent).sum()));
        }
        let dt_s = scenario.sim.check_interval_ms as f64 / 1000.0;
        let desired: Vec<u32> = w.apps.iter().map(|a| w.desired.get(a).copied().unwrap_or(0)).collect();
        // One walk over the containers for three checks (each its own walk was a few percent
        // of a quiet thousand-node run). No node over capacity: what its containers reserve,
        // against what it offers. Every desired slot served, no duplicates: serving replicas
        // counted by app index and slot index (containers of apps the scenario does not name
        // are not counted). No orphans.
        let mut used = vec![canteen_core::model::Resources::ZERO; w.nodes.len()];
        let mut serving: Vec<Vec<u32>> = vec![Vec::new(); w.apps.len()];
        let mut still = BTreeMap::new();
        for (&id, c) in &w.containers {
            if c.removed_at_ms.is_none() {
                used[c.node] = used[c.node].saturating_add(c.resources);
            }
            if c.app < w.apps.len() && c.serving_at(now_ms, &w.nodes) {
                let counts = &mut serving[c.app];
                let i = c.slot.index as usize;
                if counts.len() <= i {
                    counts.resize(i + 1, 0);
                }
                counts[i] += 1;
            }
            if let Some(since) = self.sample_orphan(now_ms, dt_s, w, &desired, id, c) {
                still.insert(id, since);
            }
        }
        self.orphaned = still;
        for (i, n) in w.nodes.iter().enumerate() {
            if n.up && !used[i].fits_in(n.capacity) && self.over_capacity.is_none() {
                self.over_capacity = Some((now_s, format!("{} reserves {:?} of {:?}", n.id, used[i], n.capacity)));
            }
        }
        let duplicates: u32 = serving.iter().flatten().map(|n| n.saturating_sub(1)).sum();
        self.duplicate_replica_s += f64::from(duplicates) * dt_s;
        let mut missing = 0usize;
        for (counts, &replicas) in serving.iter().zip(&desired) {
            missing += (0..replicas as usize).filter(|&i| counts.get(i).is_none_or(|n| *n == 0)).count();
        }
        let unschedulable = w.unschedulable;
        let good = missing <= unschedulable && duplicates == 0;
        if good != self.good_now && std::env::var_os("CANTEEN_SIM_DEBUG").is_some() {
            eprintln!(
                "{now_s:.1}s good={good} missing={missing} unschedulable={unschedulable} duplicates={duplicates}"
            );
        }
        self.good_now = good;
        for f in &mut self.faults {
            if f.recovered_s.is_none() && now_s > f.measure_from_s && good {
                f.recovered_s = Some(now_s - f.measure_from_s);
            }
            if let Some(crashed) = f.crashed
                && f.detected_s.is_none()
                && now_s >= f.at_s
                && !w.nodes[crashed].up
            {
                let id = &w.nodes[crashed].id;
                if w.nodes.iter().all(|n| !n.up || !n.members.contains(id)) {
                    f.detected_s = Some(now_s - f.at_s);
                } else if now_ms.is_multiple_of(5000) && std::env::var_os("CANTEEN_SIM_DEBUG").is_some() {
                    let listing: Vec<_> =
                        w.nodes.iter().filter(|n| n.up && n.members.contains(id)).map(|n| n.id.to_string()).collect();
                    eprintln!(
                        "{now_s:.1}s {id} still listed by {} nodes: {:?}",
                        listing.len(),
                        &listing[..listing.len().min(10)]
                    );
                }
            }
        }
        if let Some(heal) = self.heal_at {
            let digests: Vec<_> = w.nodes.iter().filter(|n| n.up).map(|n| n.digest).collect();
            let agree = digests.windows(2).all(|d| d[0] == d[1]) && digests.iter().all(|d| d.is_some());
            if good && agree && now_s >= heal {
                self.converged_at.get_or_insert(now_s);
            } else {
                self.converged_at = None;
            }
            if agree && duplicates == 0 && now_s >= heal {
                self.settled_since.get_or_insert(now_s);
            } else {
                self.settled_since = None;
            }
        }
        // Once a second: the plot's series.
        let second = now_ms / 1000;
        if second != self.last_second {
            self.last_second = second;
            for ((app, counts), &desired) in w.apps.iter().zip(&serving).zip(&desired) {
                self.peak_replicas = self.peak_replicas.max(desired);
                let running = counts.iter().filter(|n| **n > 0).count() as u32;
                self.timeline.replicas(app, now_s, running, desired);
            }
        }
    }

    fn report(&self, scenario: &Scenario, seed: u64, w: &World) -> (Report, Timeline) {
        let e = &scenario.expect;
        let replay = format!("canteen-sim run {} --seed {seed}", scenario.file);
        let mut checks = Vec::new();
        checks.push(match &self.over_capacity {
            None => {
                Check::pass("no node over capacity", "every node's containers fit its capacity at every check".into())
            }
            Some((at, what)) => Check::fail("no node over capacity", format!("at {at:.1}s: {what}")),
        });
        checks.push(if w.bad_messages == 0 {
            Check::pass("wire format", "every gossip message decoded".into())
        } else {
            Check::fail("wire format", format!("{} messages did not decode", w.bad_messages))
        });
        let end_ms = (scenario.duration_s * 1000.0) as u64;
        // The slots that run healthy at the end, read once for the checks below.
        let serving_at_end: std::collections::BTreeSet<(&AppName, u32)> = w
            .containers
            .values()
            .filter(|c| c.serving_at(end_ms, &w.nodes))
            .map(|c| (&c.slot.app, c.slot.index))
            .collect();
        let mut lost = Vec::new();
        for (app, &replicas) in &w.desired {
            for i in 0..replicas {
                if !serving_at_end.contains(&(app, i)) {
                    lost.push(format!("{app}/{i}"));
                }
            }
        }
        checks.push(if lost.len() <= w.unschedulable {
            Check::pass(
                "no slot lost",
                format!("every desired slot runs healthy at the end ({} reported unschedulable)", w.unschedulable),
            )
        } else {
            Check::fail("no slot lost", format!("at {:.1}s not running: {}", scenario.duration_s, lost.join(", ")))
        });
        let recoveries: Vec<Recovery> = self
            .faults
            .iter()
            .map(|f| Recovery {
                fault: f.describe.clone(),
                at_s: f.at_s,
                recovery_s: f.recovered_s,
                detected_s: f.crashed.and(f.detected_s),
            })
            .collect();
        if let Some(max) = e.recovery_s_max {
            let slow: Vec<String> = recoveries
                .iter()
                .filter(|r| r.recovery_s.is_none_or(|s| s > max))
                .map(|r| match r.recovery_s {
                    Some(s) => format!("{} at {:.1}s took {s:.1}s", r.fault, r.at_s),
                    None => format!("{} at {:.1}s never recovered", r.fault, r.at_s),
                })
                .collect();
            checks.push(if slow.is_empty() {
                Check::pass("recovery", format!("every fault recovered within {max}s"))
            } else {
                Check::fail("recovery", format!("over {max}s: {}", slow.join("; ")))
            });
        }
        let requests = Requests::from_world(w);
        if let Some(min) = e.success_ratio_min {
            let ok = requests.success_ratio >= min;
            let detail = format!("{:.5} of {} requests succeeded (min {min})", requests.success_ratio, requests.total);
            checks.push(Check::new("success ratio", ok, detail));
        }
        if let Some(max) = e.duplicate_replica_s_max {
            let detail = format!("{:.1} replica-seconds of duplicates (max {max})", self.duplicate_replica_s);
            checks.push(Check::new("duplicates", self.duplicate_replica_s <= max, detail));
        }
        if e.converged {
            let heal = self.heal_at.unwrap_or(0.0);
            // Convergence includes spreading the new statuses to every registry: it may take
            // longer than a fault's recovery, so a scenario can bound it on its own.
            let bound = e.converge_s_max.or(e.recovery_s_max).unwrap_or(scenario.duration_s);
            checks.push(match self.converged_at {
                Some(at) if at - heal <= bound => Check::pass(
                    "converged",
                    format!(
                        "{:.1}s after the heal at {heal:.1}s: every slot healthy, no duplicates, registries identical",
                        at - heal
                    ),
                ),
                Some(at) => Check::fail(
                    "converged",
                    format!("only {:.1}s after the heal at {heal:.1}s (max {bound}s)", at - heal),
                ),
                None => Check::fail(
                    "converged",
                    format!("not converged at the end ({:.1}s); heal at {heal:.1}s", scenario.duration_s),
                ),
            });
        }
        if let Some(max) = e.latency_ms_p99_max {
            let detail = format!("p99 {:.1} ms (max {max})", requests.latency_ms_p99);
            checks.push(Check::new("latency p99", requests.latency_ms_p99 <= max, detail));
        }
        let ups = w.scale_events.iter().filter(|s| s.to > s.from).count() as u32;
        let downs = w.scale_events.iter().filter(|s| s.to < s.from).count() as u32;
        if let Some(min) = e.replicas_peak_min {
            let detail = format!("peak desired replicas {} (min {min})", self.peak_replicas);
            checks.push(Check::new("scaled up", self.peak_replicas >= min, detail));
        }
        if let Some(min) = e.scale_ups_min {
            let detail = format!("{ups} scale-ups (min {min})");
            checks.push(Check::new("scale-ups", ups >= min, detail));
        }
        if let Some(max) = e.scale_downs_max {
            let detail = format!("{downs} scale-downs (max {max})");
            checks.push(Check::new("no flapping", downs <= max, detail));
        }
        if let Some(min) = e.unschedulable_min {
            let detail = format!("{} slots reported unschedulable (min {min})", w.unschedulable);
            checks.push(Check::new("unschedulable reported", w.unschedulable as u32 >= min, detail));
        }
        for app in &e.fully_placed {
            let name = AppName::new(app);
            let want = w.desired.get(&name).copied().unwrap_or(0);
            let have = (0..want).filter(|i| serving_at_end.contains(&(&name, *i))).count() as u32;
            let detail = format!("{app}: {have} of {want} slots run healthy at the end");
            checks.push(Check::new("fully placed", have == want, detail));
        }
        if let Some(max) = e.moves_max {
            let detail = format!("{} slots moved (max {max})", w.moves);
            checks.push(Check::new("moves", w.moves <= max, detail));
        }
        let converge_s = self.settled_since.and_then(|at| self.heal_at.map(|heal| at - heal));
        if let Some(max) = e.converge_s_max {
            let heal = self.heal_at.unwrap_or(0.0);
            checks.push(match converge_s {
                Some(s) => Check::new(
                    "converge time",
                    s <= max,
                    format!("registries identical and no duplicate {s:.1}s after the heal at {heal:.1}s (max {max}s)"),
                ),
                None => Check::fail(
                    "converge time",
                    format!("registries differ or a slot runs twice at the end ({:.1}s)", scenario.duration_s),
                ),
            });
        }
        let false_down_node_s = w.false_down_node_s(end_ms);
        let false_down_detail = || {
            let mut d = format!("{} wrong down declarations, {false_down_node_s:.1} node-s", w.false_down_events);
            if !w.false_down_examples.is_empty() {
                d.push_str(&format!(": {}", w.false_down_examples.join("; ")));
            }
            d
        };
        if let Some(max) = e.false_down_max {
            let detail = format!("{} (max {max})", false_down_detail());
            checks.push(Check::new("wrongly declared down", w.false_down_events <= max, detail));
        }
        if let Some(max) = e.false_down_node_s_max {
            let detail = format!("{} (max {max} node-s)", false_down_detail());
            checks.push(Check::new("wrongly down node-s", false_down_node_s <= max, detail));
        }
        if let Some(max) = e.orphan_s_max {
            let (longest, what) = &self.orphan_longest;
            let detail = if *longest > 0.0 {
                format!("longest orphan {longest:.1}s (max {max}s): {what}")
            } else {
                format!("no container orphaned for a whole check interval (max {max}s)")
            };
            checks.push(Check::new("no orphans", *longest <= max, detail));
        }
        for r in &w.agent_restarts {
            let id = &w.nodes[r.node].id;
            let at = r.at_ms as f64 / 1000.0;
            let ok = r.new_generation.is_some_and(|g| g > r.old_generation) && r.adopted == Some(r.running);
            let detail = format!(
                "{id} at {at:.1}s: generation {} -> {}, adopted {} of the {} containers running",
                r.old_generation,
                r.new_generation.map_or("none (never booted)".to_owned(), |g| g.to_string()),
                r.adopted.map_or("none".to_owned(), |n| n.to_string()),
                r.running
            );
            checks.push(Check::new("agent restart", ok, detail));
        }
        for lost in &self.lost_applies {
            checks.push(Check::fail("apply", format!("{lost}: the node was not running, the command was lost")));
        }
        let up = w.nodes.iter().filter(|n| n.up).count().max(1);
        let bytes: u64 = w.nodes.iter().map(|n| n.bytes_sent).sum();
        let report = Report {
            scenario: scenario.name.clone(),
            file: scenario.file.clone(),
            seed,
            passed: checks.iter().all(|c| c.passed),
            membership: scenario.sim.membership.name().to_owned(),
            policy: scenario.cluster.policy.to_string(),
            nodes: w.nodes.len(),
            checks,
            requests,
            recoveries,
            moves: w.moves,
            duplicate_replica_s: self.duplicate_replica_s,
            scale_events: w.scale_events.iter().cloned().map(Into::into).collect(),
            sim_s: scenario.duration_s,
            wall_ms: 0,
            gossip_bytes_per_node_s: bytes as f64 / scenario.duration_s / up as f64,
            gossip_bytes_per_node_s_last_minute: self.bytes_at_last_minute.map_or(0.0, |(at_s, at_bytes)| {
                (bytes - at_bytes) as f64 / (scenario.duration_s - at_s).max(1e-3) / up as f64
            }),
            heal_at_s: scenario.heal_at_s(),
            converge_s,
            false_down_events: w.false_down_events,
            false_down_node_s,
            orphan_s_longest: self.orphan_longest.0,
            orphan_container_s: self.orphan_container_s,
            replay,
        };
        let mut timeline = self.timeline.clone();
        timeline.finish(w, scenario);
        (report, timeline)
    }
}

impl World {
    /// Keeps what the checkers need from a node's event.
    fn record_event(&mut self, now_ms: u64, event: Event) {
        match event {
            Event::Scaled { app, decision } => {
                self.desired.insert(app.clone(), decision.to);
                self.scale_events.push(ScaleEvent {
                    at_s: now_ms as f64 / 1000.0,
                    app,
                    from: decision.from,
                    to: decision.to,
                });
            }
            Event::Unschedulable { slots } => self.unschedulable = slots.len(),
            Event::BadMessage { from, error } => {
                if std::env::var_os("CANTEEN_SIM_BAD").is_some() {
                    eprintln!("bad message from {from:?}: {error}");
                }
                self.bad_messages += 1
            }
            _ => {}
        }
    }
}
