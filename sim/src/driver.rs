//! One simulated server's driver: the loop around its `Node`, as the real agent's.
//!
//! Each turn of the loop, in this order:
//! 1. carry out every action the node queued (its queue is empty before the next input);
//! 2. with the perfect failure detector, tell the node who is alive when that changed;
//! 3. hand the node a simulated Docker answer that is due;
//! 4. hand it the requests its balancers counted, once a second;
//! 5. publish to the world what the checkers read (members, registry root, tracked
//!    containers) and persist the desired state when it changed;
//! 6. fire the node's timers that are due;
//! 7. otherwise take the next input, waiting for it until the next timer or Docker answer.
//!
//! Steps 2, 3, 6 and 7 each feed one input, then the loop starts over at step 1.

use std::future::Future;
use std::net::SocketAddr;
use std::task::Poll;
use std::time::Duration;

use canteen_core::balance::Balancer;
use canteen_core::membership::MembershipMode;
use canteen_core::model::AppName;
use canteen_core::node::{Action, ContainerEvent, Node, NodeConfig};
use canteen_core::seal::{Opener, Sealer};
use canteen_core::time::Time;
use madsim::net::Endpoint;
use madsim::time::Instant;

use crate::docker::SimDocker;
use crate::harness::{Shared, TAG, lock, now_ms};
use crate::world::{GOSSIP_PORT, Inbox, InboxHandle, Input, index_of_ip, ip_of};

/// How often a driver compares the desired state with the one persisted, as the real agent's
/// `PERSIST_INTERVAL_MS`.
const PERSIST_INTERVAL_MS: u64 = 1000;

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

/// Hands every datagram node `index` receives to its inbox, opened first with keys on; a
/// datagram no key opens, or a replay, is dropped and counted.
fn spawn_receiver(
    (world, start): (Shared, Instant),
    index: usize,
    endpoint: Endpoint,
    inbox: InboxHandle,
    mut opener: Option<Opener>,
) {
    madsim::task::spawn(async move {
        while let Ok((payload, from)) = endpoint.recv_from_raw(TAG).await {
            let (Some(_), Ok(bytes)) = (index_of_ip(from.ip()), payload.downcast::<Vec<u8>>()) else { continue };
            let bytes = match &mut opener {
                Some(opener) => match opener.open(*bytes, now_ms(start)) {
                    Ok(packet) => packet,
                    Err(_) => {
                        lock(&world).nodes[index].datagrams_refused += 1;
                        continue;
                    }
                },
                None => *bytes,
            };
            Inbox::push(&inbox, Input::Message(bytes));
        }
    });
}

/// The driver of node `index`.
pub struct Driver {
    world: Shared,
    index: usize,
    start: Instant,
    node: Node,
    endpoint: Endpoint,
    inbox: InboxHandle,
    docker: SimDocker,
    /// Whether the node runs SWIM (else the perfect failure detector tells it who is alive).
    swim: bool,
    /// The world's membership version last told to the node.
    membership_seen: u64,
    /// When the balancers' request counts go to the node next.
    next_traffic_ms: u64,
    /// The registry root last published to the world.
    published_root: Option<u64>,
    /// `Node::members_version` when the members were last published.
    published_members: u64,
    /// `Node::desired_version` when the desired state was last persisted.
    persisted_version: u64,
    /// When the desired state is compared with the one persisted next, as the real agent does
    /// once a second (and after its own commands).
    next_persist_ms: u64,
    /// Whether the last input was an operator's command.
    commanded: bool,
    alarms: Alarms,
    /// Seals what the node sends, with keys on (`[sim] gossip_keys`).
    sealer: Option<Sealer>,
}

impl Driver {
    /// Boots node `index`'s agent: binds its socket, hands its datagrams to its inbox, starts
    /// the node in its next life, and queues, ahead of any peer's message, the desired state
    /// its previous agent persisted and then the containers running on the node, as the real
    /// agent starts (runtime-docker's agent): adopted containers meet their app's health check,
    /// and both come before the first placement pass.
    pub async fn boot(world: Shared, index: usize, mut config: NodeConfig, start: Instant) -> Driver {
        let inbox = InboxHandle::default();
        let endpoint =
            Endpoint::bind(SocketAddr::new(ip_of(index), GOSSIP_PORT)).await.expect("each node binds its own address");
        let boot_ms = now_ms(start);
        let (generation, running, persisted, keyring) = {
            let mut w = lock(&world);
            let (generation, running) = w.node_started(index, inbox.clone(), boot_ms);
            (generation, running, w.nodes[index].persisted.clone(), w.keyring.clone())
        };
        spawn_receiver(
            (world.clone(), start),
            index,
            endpoint.clone(),
            inbox.clone(),
            keyring.clone().map(Opener::new),
        );
        // SWIM: each life of the node's agent is a new generation, so its peers take it back.
        config.generation = generation;
        let swim = config.membership == MembershipMode::Swim;
        // The nonces' prefix is the node's index: unique in the run, and replayable.
        let sender = canteen_core::seal::sender_of(config.id.as_str());
        let sealer = keyring.map(|keys| Sealer::new(keys, sender, generation, (index as u64).to_le_bytes()));
        let node = Node::new(Time::from_millis(boot_ms), config);
        lock(&world).agent_generation(index, node.config().generation);
        Inbox::push(&inbox, Input::Restore(persisted));
        Inbox::push(&inbox, Input::Container(ContainerEvent::Adopted { containers: running }));
        let persisted_version = node.desired_version();
        Driver {
            world,
            index,
            start,
            node,
            endpoint,
            inbox,
            docker: SimDocker::default(),
            swim,
            membership_seen: 0,
            next_traffic_ms: now_ms(start) + 1000,
            published_root: None,
            published_members: u64::MAX,
            persisted_version,
            next_persist_ms: boot_ms + PERSIST_INTERVAL_MS,
            commanded: false,
            alarms: Alarms::default(),
            sealer,
        }
    }

    /// The loop, until madsim kills the node (see the module documentation for its steps).
    pub async fn run(mut self) {
        loop {
            let now = self.carry_out_actions().await;
            if self.tell_membership(now) || self.take_docker_answer(now) {
                continue;
            }
            self.count_traffic(now);
            self.publish(now);
            if self.take_timers(now) {
                continue;
            }
            self.wait_for_input(now).await;
        }
    }

    /// Step 1: every action the node queued. The time is read once for all of them, though
    /// madsim holds each datagram sent for its sender's `rand_delay`, a millisecond once
    /// rounded up by its timers; only a send waits, so without one the time read still holds
    /// after (reading madsim's clock is a few percent of a quiet cluster's time). Returns the
    /// time after.
    async fn carry_out_actions(&mut self) -> u64 {
        let now = now_ms(self.start);
        let mut sent = false;
        while let Some(action) = self.node.poll_action() {
            match action {
                Action::Send { to, bytes } => {
                    let bytes = match &mut self.sealer {
                        Some(sealer) => sealer.seal(&bytes),
                        None => bytes,
                    };
                    let to = {
                        let mut w = lock(&self.world);
                        w.nodes[self.index].bytes_sent += bytes.len() as u64;
                        w.nodes[self.index].messages_sent += 1;
                        w.socket_addr(&to)
                    };
                    // Lost datagrams are part of the model: errors are ignored.
                    let _ = self.endpoint.send_to_raw(to, TAG, Box::new(bytes)).await;
                    sent = true;
                }
                Action::StartContainer { slot, app, host_port, gpus, generation } => {
                    let mut w = lock(&self.world);
                    self.docker.start(&mut w, self.index, now, slot, &app, (host_port, gpus), generation);
                }
                Action::StopContainer { container, drain_ms, slot } => {
                    if std::env::var_os("CANTEEN_SIM_DEBUG").is_some() {
                        eprintln!("{:.1}s node {} stops {slot} ({container})", now as f64 / 1000.0, self.index);
                    }
                    SimDocker::stop(&mut lock(&self.world), &container, now, drain_ms);
                }
                Action::Probe { container, timeout_ms, .. } => {
                    self.docker.probe(&lock(&self.world), now, container, timeout_ms);
                }
                Action::SetBackends { app, frontend, backends } => {
                    let picker = frontend.picker;
                    let mut w = lock(&self.world);
                    let seed = w.rng.next_u64();
                    let Some(&app) = w.app_index.get(&app) else { continue };
                    let backends = w.sim_backends(&backends);
                    let balancer =
                        w.nodes[self.index].balancers[app].get_or_insert_with(|| Balancer::new(picker, seed));
                    if balancer.kind() != picker {
                        *balancer = Balancer::new(picker, seed);
                    }
                    balancer.set_backends(backends.into_iter().map(|b| (b, 1)));
                }
                Action::RemoveBalancer { app } => {
                    let mut w = lock(&self.world);
                    if let Some(&app) = w.app_index.get(&app) {
                        w.nodes[self.index].balancers[app] = None;
                    }
                }
                Action::Event(event) => {
                    if std::env::var_os("CANTEEN_SIM_EVENTS").is_some() {
                        eprintln!("{:.1}s node {}: {event:?}", now as f64 / 1000.0, self.index);
                    }
                    lock(&self.world).record_event(now, event)
                }
            }
        }
        if sent { now_ms(self.start) } else { now }
    }

    /// Step 2: the perfect failure detector tells the node who is up and reachable, when that
    /// changed; with SWIM the node learns it from its peers. Returns whether it fed an input.
    fn tell_membership(&mut self, now: u64) -> bool {
        if self.swim {
            return false;
        }
        let change = {
            let w = lock(&self.world);
            (w.membership_version != self.membership_seen).then(|| (w.membership_version, w.alive_seen_by(self.index)))
        };
        let Some((version, alive)) = change else { return false };
        self.membership_seen = version;
        self.node.handle_membership(Time::from_millis(now), alive);
        true
    }

    /// Step 3: a simulated Docker answer that is due. Returns whether it fed one.
    fn take_docker_answer(&mut self, now: u64) -> bool {
        let Some(input) = self.docker.pop_due(now) else { return false };
        self.feed(now, input);
        true
    }

    /// Step 4: once a second, the requests that entered the node's balancers.
    fn count_traffic(&mut self, now: u64) {
        if now < self.next_traffic_ms {
            return;
        }
        self.next_traffic_ms = now + 1000;
        let entered: Vec<(AppName, u64)> = {
            let mut w = lock(&self.world);
            let w = &mut *w;
            w.nodes[self.index]
                .entered
                .iter_mut()
                .enumerate()
                .filter(|(_, count)| **count > 0)
                .map(|(app, count)| (w.apps[app].clone(), std::mem::take(count)))
                .collect()
        };
        for (app, count) in entered {
            self.node.handle_traffic(Time::from_millis(now), &app, count);
            assert!(self.node.poll_action().is_none(), "a traffic sample causes no action at once");
        }
    }

    /// Step 5: what the checkers read, kept current after every input: the node's members,
    /// its registry's root hash and the containers its agent tracks (in its status, so they
    /// change only with the root). And, as the real agent does, the desired state persisted
    /// when it changed, however it changed (a command, a peer's news): looked at once a
    /// second, and after a command.
    fn publish(&mut self, now: u64) {
        if std::mem::take(&mut self.commanded) || now >= self.next_persist_ms {
            if now >= self.next_persist_ms {
                self.next_persist_ms = now + PERSIST_INTERVAL_MS;
            }
            if self.persisted_version != self.node.desired_version() {
                self.persisted_version = self.node.desired_version();
                lock(&self.world).nodes[self.index].persisted = self.node.desired_entries();
            }
        }
        if self.published_members != self.node.members_version() {
            self.published_members = self.node.members_version();
            lock(&self.world).publish_members(self.index, self.node.members(), now);
        }
        let root = self.node.registry().root_hash();
        if self.published_root != Some(root) {
            self.published_root = Some(root);
            let mut w = lock(&self.world);
            let listed = self
                .node
                .local_slots()
                .into_iter()
                .map(|(slot, port, _)| (w.app_index.get(&slot.app).copied().unwrap_or(usize::MAX), slot.index, port))
                .collect();
            let n = &mut w.nodes[self.index];
            n.digest = Some(root);
            n.listed = listed;
        }
    }

    /// Step 6: the node's timers that are due. Returns whether any were.
    fn take_timers(&mut self, now: u64) -> bool {
        if self.node.poll_timeout().is_none_or(|t| t.as_millis() > now) {
            return false;
        }
        self.node.handle_timeout(Time::from_millis(now));
        true
    }

    /// Step 7: the next input: one already waiting at once, else the first to come before the
    /// next timer or Docker answer. Traffic counts wait for the next wake-up after they are
    /// due: the node's own load report timer is one every second.
    async fn wait_for_input(&mut self, now: u64) {
        let mut deadline = self.node.poll_timeout().map_or(now + 1000, |t| t.as_millis());
        if let Some(at) = self.docker.next_due() {
            deadline = deadline.min(at);
        }
        // An input already waiting is taken at once, without arming a timer for it.
        let waiting = lock(&self.inbox).pop();
        if let Some(input) = waiting {
            self.feed(now, input);
            return;
        }
        let deadline = self.start + Duration::from_millis(deadline);
        if let Some(input) = self.alarms.next_input(&self.inbox, deadline).await {
            self.feed(now_ms(self.start), input);
        }
    }

    /// Hands one input to the node.
    fn feed(&mut self, now: u64, input: Input) {
        let now = Time::from_millis(now);
        match input {
            Input::Message(bytes) => self.node.handle_message(now, &bytes),
            Input::Container(event) => self.node.handle_container_event(now, event),
            Input::Probe(container, outcome) => self.node.handle_probe_result(now, &container, outcome),
            // The scenario's applies and updates are valid (the file was checked); a promote
            // may not be (no canary waits): a refused command fails the run's `commands` check.
            Input::Command(command) => {
                let describe = format!("{command:?}");
                match self.node.handle_command(now, command) {
                    Ok(()) => self.commanded = true,
                    Err(e) => lock(&self.world).truth.refused_commands.push(format!("{describe}: {e}")),
                }
            }
            Input::Restore(entries) => self.node.handle_restore(now, entries),
        }
    }
}
