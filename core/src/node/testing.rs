//! A test harness (quinn's `Pair`, for more than two): a few nodes told who is alive by the
//! perfect failure detector, a network that delivers every packet 1 ms after it is sent (or
//! drops those a test says), a fake container runtime that runs a container `start_ms` after
//! it is asked to, and a prober that answers from each container's health as the test sets
//! it. Time moves a millisecond at a time, up to a bound; every action is drained after every
//! input and logged for the test to look at.

use std::collections::{BTreeMap, VecDeque};

use crate::health::ProbeOutcome;
use crate::membership::PeerAddr;
use crate::model::{AppName, AppSpec, NodeId, Resources, SlotId};
use crate::time::Time;

use super::{Action, Command, ContainerEvent, Event, Found, Node, NodeConfig};

/// The most simulated milliseconds one `run_until` may cover: a test that needs more is
/// waiting for something that does not happen.
const RUN_MS_MAX: u64 = 3_600_000;

/// A container of the fake runtime.
#[derive(Clone, Debug)]
pub(super) struct FakeContainer {
    /// The node it runs on.
    pub(super) node: usize,
    /// The slot it serves.
    pub(super) slot: SlotId,
    /// Its host port.
    pub(super) host_port: u16,
    /// Its image.
    pub(super) image: String,
    /// Whether its probes succeed.
    pub(super) healthy: bool,
    /// Stopped and removed.
    pub(super) removed: bool,
}

/// An answer of the fake runtime or prober to a node.
#[derive(Debug)]
enum Answer {
    Container(ContainerEvent),
    Probe(String, ProbeOutcome),
}

/// What one node did, as the harness saw it.
#[derive(Clone, Debug)]
pub(super) struct Logged {
    /// When, in ms.
    pub(super) at: u64,
    /// Which node.
    pub(super) node: usize,
    /// What it asked for.
    pub(super) action: Action,
}

/// Nodes, a network, a runtime and a prober, driven together.
pub(super) struct Cluster {
    pub(super) nodes: Vec<Node>,
    /// The simulated time, in ms.
    pub(super) now: u64,
    /// How long the fake runtime takes to start a container.
    pub(super) start_ms: u64,
    /// Whether a new container's probes succeed.
    pub(super) born_healthy: bool,
    /// Images whose containers never pass a probe.
    pub(super) bad_images: Vec<String>,
    /// Images the runtime does not have: their starts fail.
    pub(super) missing_images: Vec<String>,
    /// Every container ever started, by id.
    pub(super) containers: BTreeMap<String, FakeContainer>,
    /// Every action every node asked for, in order.
    pub(super) log: Vec<Logged>,
    /// Packets on their way: (due ms, to node, bytes).
    in_flight: VecDeque<(u64, usize, Vec<u8>)>,
    /// Runtime and prober answers on their way: (due ms, to node, answer).
    answers: Vec<(u64, usize, Answer)>,
    /// Pairs of nodes that cannot reach each other.
    cut: Vec<(usize, usize)>,
    next_container: u64,
}

impl Cluster {
    /// `n` nodes named `n0`, `n1`, ... with 4 CPUs and 4 GiB each, all alive.
    pub(super) fn new(n: usize) -> Cluster {
        Cluster::with(n, |_, _| {})
    }

    /// `n` nodes as [`Cluster::new`] makes them, each config changed by `configure` first.
    pub(super) fn with(n: usize, configure: impl Fn(usize, &mut NodeConfig)) -> Cluster {
        let nodes = (0..n)
            .map(|i| {
                let name = format!("n{i}");
                let mut config =
                    NodeConfig::new(NodeId::new(&name), &format!("10.0.0.{i}"), Resources::new(4000, 4096));
                config.gossip_addr = PeerAddr::new(&name);
                config.seed = i as u64;
                configure(i, &mut config);
                Node::new(Time::ZERO, config)
            })
            .collect();
        let mut cluster = Cluster {
            nodes,
            now: 0,
            start_ms: 100,
            born_healthy: true,
            bad_images: Vec::new(),
            missing_images: Vec::new(),
            containers: BTreeMap::new(),
            log: Vec::new(),
            in_flight: VecDeque::new(),
            answers: Vec::new(),
            cut: Vec::new(),
            next_container: 0,
        };
        for i in 0..n {
            cluster.drain(i);
        }
        cluster.tell_membership();
        cluster
    }

    /// Tells every node which peers are alive: all, less the ones cut off from it.
    pub(super) fn tell_membership(&mut self) {
        let now = Time::from_millis(self.now);
        for i in 0..self.nodes.len() {
            let alive: Vec<(NodeId, PeerAddr)> = (0..self.nodes.len())
                .filter(|&j| j != i && !self.is_cut(i, j))
                .map(|j| (self.nodes[j].id().clone(), self.nodes[j].config().gossip_addr.clone()))
                .collect();
            self.nodes[i].handle_membership(now, alive);
            self.drain(i);
        }
    }

    fn is_cut(&self, a: usize, b: usize) -> bool {
        self.cut.contains(&(a.min(b), a.max(b)))
    }

    /// Cuts the network between `a` and `b` (each believes the other down), or heals it.
    pub(super) fn set_cut(&mut self, a: usize, b: usize, cut: bool) {
        let pair = (a.min(b), a.max(b));
        self.cut.retain(|p| *p != pair);
        if cut {
            self.cut.push(pair);
        }
        self.tell_membership();
    }

    /// An operator's command through node `at`.
    pub(super) fn command(&mut self, at: usize, command: Command) {
        self.nodes[at].handle_command(Time::from_millis(self.now), command).expect("a valid command");
        self.drain(at);
    }

    /// Applies `spec` through node `at`.
    pub(super) fn apply(&mut self, at: usize, spec: AppSpec) {
        self.command(at, Command::Apply(Box::new(spec)));
    }

    /// Requests that entered node `at`'s balancer for `app`.
    pub(super) fn traffic(&mut self, at: usize, app: &str, requests: u64) {
        self.nodes[at].handle_traffic(Time::from_millis(self.now), &AppName::new(app), requests);
        self.drain(at);
    }

    /// Node `at` reports the containers it found running at its start.
    pub(super) fn adopt(&mut self, at: usize, containers: Vec<(SlotId, String, u16)>) {
        // Labels from before versions: version 0, which every spec runs as.
        let containers = containers
            .into_iter()
            .map(|(slot, container, host_port)| Found { slot, container, host_port, version: 0, gpus: Vec::new() })
            .collect();
        self.nodes[at].handle_container_event(Time::from_millis(self.now), ContainerEvent::Adopted { containers });
        self.drain(at);
    }

    /// The container `id` exits on its own.
    pub(super) fn exit(&mut self, id: &str) {
        let c = self.containers.get_mut(id).expect("a container of the test");
        c.removed = true;
        let node = c.node;
        let event = ContainerEvent::Exited { container: id.to_owned() };
        self.nodes[node].handle_container_event(Time::from_millis(self.now), event);
        self.drain(node);
    }

    /// Carries out every action node `i` queued.
    fn drain(&mut self, i: usize) {
        while let Some(action) = self.nodes[i].poll_action() {
            self.log.push(Logged { at: self.now, node: i, action: action.clone() });
            match action {
                Action::Send { to, bytes } => {
                    let j = self.nodes.iter().position(|n| n.config().gossip_addr == to).expect("sent to a node");
                    if !self.is_cut(i, j) {
                        self.in_flight.push_back((self.now + 1, j, bytes));
                    }
                }
                Action::StartContainer { slot, host_port, generation, app, .. } => {
                    if self.missing_images.contains(&app.image) {
                        let error = format!("no such image: {}", app.image);
                        let event = ContainerEvent::StartFailed { slot, generation, error };
                        self.answers.push((self.now + self.start_ms, i, Answer::Container(event)));
                        continue;
                    }
                    self.next_container += 1;
                    let id = format!("c{}", self.next_container);
                    let c = FakeContainer {
                        node: i,
                        slot: slot.clone(),
                        host_port,
                        image: app.image.clone(),
                        healthy: self.born_healthy && !self.bad_images.contains(&app.image),
                        removed: false,
                    };
                    self.containers.insert(id.clone(), c);
                    let event = ContainerEvent::Started { slot, generation, container: id };
                    self.answers.push((self.now + self.start_ms, i, Answer::Container(event)));
                }
                Action::StopContainer { container, .. } => {
                    if let Some(c) = self.containers.get_mut(&container) {
                        c.removed = true;
                    }
                }
                Action::Probe { container, .. } => {
                    let healthy = self.containers.get(&container).is_some_and(|c| c.healthy && !c.removed);
                    let outcome = if healthy { ProbeOutcome::Success } else { ProbeOutcome::Failure };
                    // Answered within the next millisecond.
                    self.answers.push((self.now + 1, i, Answer::Probe(container, outcome)));
                }
                Action::SetBackends { .. } | Action::RemoveBalancer { .. } | Action::Event(_) => {}
            }
        }
    }

    /// Runs every node until `until_ms`: packets, runtime answers and timers due each
    /// millisecond, in that order.
    pub(super) fn run_until(&mut self, until_ms: u64) {
        assert!(until_ms <= self.now + RUN_MS_MAX, "a bounded run");
        while self.now < until_ms {
            self.now += 1;
            let now = Time::from_millis(self.now);
            while self.in_flight.front().is_some_and(|(at, _, _)| *at <= self.now) {
                let (_, to, bytes) = self.in_flight.pop_front().expect("peeked");
                self.nodes[to].handle_message(now, &bytes);
                self.drain(to);
            }
            let (due, later): (Vec<_>, Vec<_>) =
                std::mem::take(&mut self.answers).into_iter().partition(|(at, _, _)| *at <= self.now);
            self.answers = later;
            for (_, i, answer) in due {
                match answer {
                    Answer::Container(event) => self.nodes[i].handle_container_event(now, event),
                    Answer::Probe(container, outcome) => self.nodes[i].handle_probe_result(now, &container, outcome),
                }
                self.drain(i);
            }
            for i in 0..self.nodes.len() {
                if self.nodes[i].poll_timeout().is_some_and(|t| t <= now) {
                    self.nodes[i].handle_timeout(now);
                    self.drain(i);
                }
            }
        }
    }

    /// Runs until `done` holds (checked every millisecond), at most `for_ms`; returns whether
    /// it held.
    pub(super) fn run_until_true(&mut self, for_ms: u64, mut done: impl FnMut(&Cluster) -> bool) -> bool {
        let until = self.now + for_ms;
        while self.now < until {
            if done(self) {
                return true;
            }
            self.run_until(self.now + 1);
        }
        done(self)
    }

    /// The containers running `slot` (not removed), by id.
    pub(super) fn running(&self, slot: &SlotId) -> Vec<(&str, &FakeContainer)> {
        self.containers.iter().filter(|(_, c)| c.slot == *slot && !c.removed).map(|(id, c)| (id.as_str(), c)).collect()
    }

    /// The events node `i` reported since `from_ms`.
    pub(super) fn events(&self, i: usize, from_ms: u64) -> Vec<&Event> {
        self.log
            .iter()
            .filter(|l| l.node == i && l.at >= from_ms)
            .filter_map(|l| match &l.action {
                Action::Event(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    /// The last backend list node `i` sent `app`'s balancer, as (node, slot index) pairs.
    pub(super) fn backends(&self, i: usize, app: &str) -> Option<Vec<(String, u32)>> {
        self.log.iter().rev().filter(|l| l.node == i).find_map(|l| match &l.action {
            Action::SetBackends { app: a, backends, .. } if a.as_str() == app => {
                Some(backends.iter().map(|b| (b.node.to_string(), b.slot.index)).collect())
            }
            Action::RemoveBalancer { app: a } if a.as_str() == app => Some(Vec::new()),
            _ => None,
        })
    }
}

/// An app of `replicas` small replicas probed every 100 ms, one failure making a replica
/// unhealthy, with no start grace.
pub(super) fn quick_app(name: &str, replicas: u32, port: u16) -> AppSpec {
    let mut spec = AppSpec::new(name, "canteen-demo:latest", replicas, Resources::new(100, 64));
    spec.port = port;
    spec.health.interval_ms = 100;
    spec.health.timeout_ms = 50;
    spec.health.start_grace_ms = 0;
    spec.health.failures = 1;
    spec.health.successes = 1;
    spec
}
