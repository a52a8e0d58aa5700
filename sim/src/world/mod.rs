//! The simulated world: what is physically true, as opposed to what nodes believe. Simulated
//! Docker (containers with start latency, crashes, hangs, slowness), the partition map, each
//! node's balancers, the request path and the ground truth the checkers read.
//!
//! Everything here is plain data behind one lock; madsim runs every task on one thread, so the
//! lock is never contended and the order of operations is the simulator's, seeded.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr};

use canteen_core::balance::Balancer;
use canteen_core::health::ProbeOutcome;
use canteen_core::membership::PeerAddr;
use canteen_core::model::{AppName, AppSpec, GpuShare, NodeId, Resources, SlotId};
use canteen_core::node::{Backend, Command, ContainerEvent, Found, Value};
use canteen_core::registry::{Entry, Key};

mod requests;
mod truth;

pub use requests::RequestPath;
pub use truth::Truth;

use crate::scenario::{AppSim, ImageSim, Scenario};
use crate::traffic::{LatencyHistogram, ReplicaQueue, SimRng};

/// The UDP port every simulated node gossips on.
pub const GOSSIP_PORT: u16 = 7946;

/// Node `index`'s address on the simulated network: 10.0.0.1 for node 0, and so on.
pub fn ip_of(index: usize) -> IpAddr {
    let n = index as u32 + 1;
    IpAddr::V4(Ipv4Addr::new(10, (n >> 16) as u8, (n >> 8) as u8, n as u8))
}

/// The node whose address is `ip`, if it is one of [`ip_of`]'s.
pub fn index_of_ip(ip: IpAddr) -> Option<usize> {
    match ip {
        IpAddr::V4(v4) => {
            let [_, a, b, c] = v4.octets();
            let n = (u32::from(a) << 16) | (u32::from(b) << 8) | u32::from(c);
            n.checked_sub(1).map(|i| i as usize)
        }
        IpAddr::V6(_) => None,
    }
}

/// Node `index`'s gossip address, as its `Node` and its peers know it: `10.0.0.1:7946`.
pub fn gossip_addr_of(index: usize) -> PeerAddr {
    PeerAddr::new(&format!("{}:{GOSSIP_PORT}", ip_of(index)))
}

/// An input waiting for a node's driver.
#[derive(Debug)]
pub enum Input {
    /// A datagram from a peer (the sender's name is inside).
    Message(Vec<u8>),
    /// The container runtime reports.
    Container(ContainerEvent),
    /// A probe answered (or timed out).
    Probe(String, ProbeOutcome),
    /// An operator's command.
    Command(Command),
    /// The desired state the node's previous agent persisted, given back as its agent starts.
    Restore(Vec<(Key, Entry<Value>)>),
}

/// A node driver's inbox: the inputs its socket task, the simulated Docker and the scenario
/// hand it, in arrival order, and the driver's waker while it waits. The whole simulation runs
/// on one thread, so a queue behind an uncontended lock does what a channel built for threads
/// did (its sends, receives and listeners were about 6% of a quiet simulated second).
#[derive(Debug, Default)]
pub struct Inbox {
    queue: std::collections::VecDeque<Input>,
    waker: Option<std::task::Waker>,
}

/// An [`Inbox`], shared by the driver and whoever hands it inputs.
pub type InboxHandle = std::sync::Arc<std::sync::Mutex<Inbox>>;

impl Inbox {
    /// Queues `input` for the driver behind `inbox` and wakes it if it waits.
    pub fn push(inbox: &InboxHandle, input: Input) {
        let mut inbox = inbox.lock().expect("the simulation never panics while holding a lock");
        inbox.queue.push_back(input);
        if let Some(waker) = inbox.waker.take() {
            waker.wake();
        }
    }

    /// The oldest input, if any; otherwise the driver waits, to be woken by the next push.
    pub fn pop_or_wait(&mut self, waker: &std::task::Waker) -> Option<Input> {
        let input = self.queue.pop_front();
        if input.is_none() && !self.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            self.waker = Some(waker.clone());
        }
        input
    }

    /// The oldest input, if any.
    pub fn pop(&mut self) -> Option<Input> {
        self.queue.pop_front()
    }

    /// The driver stopped waiting (its deadline came first): pushes no longer wake it.
    pub fn stop_waiting(&mut self) {
        self.waker = None;
    }
}

/// An index by name, hashed with core's FNV-based hasher: looked up for every backend of every
/// balancer update (tens of millions in a thousand-node cold start), where the standard
/// library's keyed SipHash of a short name costs several times FNV's.
pub type NameMap<K> = HashMap<K, usize, std::hash::BuildHasherDefault<canteen_core::hash::StableHasher>>;

/// A simulated container's id: the world's own number; nodes see it as `c000042`.
pub type ContainerId = u64;

/// The id string a node sees for container `id`.
pub fn container_name(id: ContainerId) -> String {
    format!("c{id:06}")
}

/// The container a node's id string names, if it names one of the world's.
pub fn container_id(name: &str) -> Option<ContainerId> {
    name.strip_prefix('c')?.parse().ok()
}

/// A balancer's backend in the simulated world: a node's [`Backend`] turned into indexes once,
/// when the node sets its backends, so the request path compares and copies integers, not names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SimBackend {
    /// Index of the node running the replica.
    pub node: u32,
    /// The host port it listens on.
    pub host_port: u16,
    /// The slot's index within its app.
    pub slot: u32,
}

/// One simulated server.
#[derive(Debug)]
pub struct SimNode {
    /// Its name.
    pub id: NodeId,
    /// Its gossip address ([`gossip_addr_of`]).
    pub gossip_addr: PeerAddr,
    /// What it offers.
    pub capacity: Resources,
    /// Its GPUs.
    pub gpus: u32,
    /// Whether it is running.
    pub up: bool,
    /// How many times it booted: the generation of its current life, for SWIM.
    pub starts: u64,
    /// Service time multiplier of its containers (slow-node).
    pub slow_factor: f64,
    /// Where its driver takes inputs, while it runs.
    pub inbox: Option<InboxHandle>,
    /// Its registry's root hash, as last published by its driver.
    pub digest: Option<u64>,
    /// The peers its node believes alive, as last published by its driver (for the
    /// detection time of a crash and for wrong down declarations).
    pub members: BTreeSet<NodeId>,
    /// The containers its agent tracks, as last published by its driver: (app index, slot
    /// index, host port), for the orphan check.
    pub listed: BTreeSet<(usize, u32, u16)>,
    /// The desired state its agent persisted (`Node::desired_entries`, whenever it changed,
    /// as the real agent does), restored when the agent restarts; a crash loses it with the
    /// machine.
    pub persisted: Vec<(Key, Entry<Value>)>,
    /// The SWIM generation its current agent runs under, as the node itself reports it.
    pub generation: u64,
    /// When its current agent started.
    pub agent_started_ms: u64,
    /// How many running containers its current agent adopted at start.
    pub adopted: usize,
    /// Requests that entered its balancers since its driver last took the counts, by app index.
    pub entered: Vec<u64>,
    /// Its balancers, by app index.
    pub balancers: Vec<Option<Balancer<SimBackend>>>,
    /// Bytes its agent sent to peers.
    pub bytes_sent: u64,
    /// Datagrams its agent sent to peers.
    pub messages_sent: u64,
    /// Datagrams its agent dropped unopened: forged, or replayed (`core::seal::OpenError`).
    pub datagrams_refused: u64,
}

/// One simulated container.
#[derive(Debug)]
pub struct SimContainer {
    /// The node running it.
    pub node: usize,
    /// The slot it serves.
    pub slot: SlotId,
    /// Index of the slot's app in [`World::apps`] (`usize::MAX` for an app the scenario does
    /// not name).
    pub app: usize,
    /// The host port it listens on.
    pub host_port: u16,
    /// Reserved resources.
    pub resources: Resources,
    /// The GPUs it was given.
    pub gpus: Vec<GpuShare>,
    /// Its image.
    pub image: String,
    /// The version of its app it runs.
    pub version: u64,
    /// Its image never passes a health check (`[sim.images."NAME"] healthy = false`).
    pub never_healthy: bool,
    /// When its process is up and answering.
    pub ready_at_ms: u64,
    /// Its process exited (crash or kill).
    pub exited: bool,
    /// It answers nothing: probes time out, requests never finish.
    pub hung: bool,
    /// Health flapping: from `.0` on, failing for `.1` ms, passing for `.1` ms, until `.2`.
    pub flap: Option<(u64, u64, u64)>,
    /// When its node asked for it to stop: it serves nothing from then, and is gone after
    /// its drain.
    pub stopping_at_ms: Option<u64>,
    /// When it is removed.
    pub removed_at_ms: Option<u64>,
    /// Its request queue.
    pub queue: ReplicaQueue,
    /// How it serves.
    pub sim: AppSim,
}

impl SimContainer {
    /// Whether its health check would pass at `now_ms`: the ground truth the checkers use.
    pub fn healthy_at(&self, now_ms: u64) -> bool {
        if self.exited || self.hung || self.never_healthy || now_ms < self.ready_at_ms {
            return false;
        }
        match self.flap {
            Some((from, period, until)) if now_ms >= from && now_ms < until => ((now_ms - from) / period) % 2 == 1,
            _ => true,
        }
    }

    /// Whether it is a replica that serves: healthy, on a live node, not being stopped.
    pub fn serving_at(&self, now_ms: u64, nodes: &[SimNode]) -> bool {
        self.stopping_at_ms.is_none() && nodes[self.node].up && self.healthy_at(now_ms)
    }
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RequestError {
    /// The node it entered has no balancer for the app yet, or no backend.
    NoBackend,
    /// Both tries failed to connect (dead node, partition, stopped container).
    ConnectFailed,
    /// The replica queue was full.
    Overloaded,
    /// The replica never answered.
    Timeout,
}

/// A scale decision, as the report lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleEvent {
    /// Simulated seconds.
    pub at_s: f64,
    /// The app.
    pub app: AppName,
    /// From.
    pub from: u32,
    /// To.
    pub to: u32,
}

/// Everything that is true in the simulation.
#[derive(Debug)]
pub struct World {
    /// The servers, by index.
    pub nodes: Vec<SimNode>,
    /// Node index by name: looked up for every backend of every balancer update, and never
    /// walked (so its order cannot reach a run's outcome).
    pub index_of: NameMap<NodeId>,
    /// Every node's gossip address as its peers know it, by the address's hash, with the
    /// socket address it stands for: one table for the whole cluster, where each driver kept
    /// its own map (a cache miss on every datagram sent).
    socket_addrs: canteen_core::hash::KeyHashMap<(PeerAddr, std::net::SocketAddr)>,
    /// Every container that exists or existed recently, by id.
    pub containers: BTreeMap<ContainerId, SimContainer>,
    /// When each container given a removal time is due to go, soonest first (`purge`).
    removals: BinaryHeap<Reverse<(u64, ContainerId)>>,
    /// When containers of images that crash (`[sim.images."NAME"] crash_after_s`) exit,
    /// soonest first (`crash_due`).
    crashes: BinaryHeap<Reverse<(u64, ContainerId)>>,
    /// The images that behave otherwise, by name.
    images: BTreeMap<String, ImageSim>,
    /// Container id by (node, host port), for the request path.
    pub by_port: BTreeMap<(usize, u16), ContainerId>,
    /// The scenario's apps; the request path names an app by its index here.
    pub apps: Vec<AppName>,
    /// App index by name; never walked either.
    pub app_index: NameMap<AppName>,
    /// The partition group of each node; all equal when the network is whole.
    pub group: Vec<usize>,
    /// Bumped whenever who-is-up or the partition map changes: drivers then ask the
    /// perfect failure detector again.
    pub membership_version: u64,
    /// The world's randomness (container start jitter, service times, client choices).
    pub rng: SimRng,
    next_container: u64,
    /// Container start time and its jitter, in ms.
    pub start_latency: (u64, u64),
    /// Whether a starting agent adopts the containers running on its node (`[sim] adopt`).
    adopt: bool,
    /// The cluster's keyring when nodes seal their datagrams (`[sim] gossip_keys`): one key,
    /// drawn from the run's seed.
    pub keyring: Option<std::sync::Arc<canteen_core::seal::Keyring>>,
    /// The request path: requests in service and their outcomes.
    pub requests: RequestPath,
    /// Ground truth for the checkers: what the nodes should run and what went wrong.
    pub truth: Truth,
}

/// One `restart-agent` fault, as the checks see it.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentRestart {
    /// The node.
    pub node: usize,
    /// When its agent died, in simulated ms.
    pub at_ms: u64,
    /// The SWIM generation of the agent that died.
    pub old_generation: u64,
    /// The containers running on the node when it died.
    pub running: usize,
    /// The SWIM generation the new agent reported, once it booted.
    pub new_generation: Option<u64>,
    /// How many running containers the new agent adopted.
    pub adopted: Option<usize>,
}

/// A peer dropped from a node's members counts as wrongly declared down only if it was up and
/// reachable from that node for this long before: a SWIM suspicion begun before a partition
/// healed or an agent restarted, and the news of it, end within about this (probe period 0.5 s,
/// suspicion 1.5 s, a few gossip rounds; crash detection took at most 5.1 s over 100 seeds).
pub const FALSE_DOWN_GRACE_MS: u64 = 5000;

/// The keyring of a run: one key, from the seed (a simulated cluster has nothing to hide; what
/// matters is that every datagram is sealed and opened as the real agent's are).
fn sim_keyring(cluster: &str, seed: u64) -> canteen_core::seal::Keyring {
    let mut key = [0u8; canteen_core::seal::KEY_BYTES];
    for (i, chunk) in key.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&canteen_core::hash::mix(seed ^ i as u64).to_le_bytes());
    }
    canteen_core::seal::Keyring::new(cluster, &[key]).expect("one key")
}

/// How many wrong down declarations the report describes one by one.
pub(crate) const FALSE_DOWN_EXAMPLES_MAX: usize = 5;

impl World {
    /// The world at the start of a run.
    pub fn new(scenario: &Scenario, seed: u64) -> World {
        let apps: Vec<AppName> = scenario.cluster.apps.iter().map(|a| a.name.clone()).collect();
        let nodes: Vec<SimNode> = scenario
            .cluster
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| SimNode {
                id: n.id.clone(),
                gossip_addr: gossip_addr_of(i),
                capacity: n.capacity,
                gpus: n.gpus,
                up: false,
                starts: 0,
                slow_factor: 1.0,
                inbox: None,
                digest: None,
                members: BTreeSet::new(),
                listed: BTreeSet::new(),
                persisted: Vec::new(),
                generation: 0,
                agent_started_ms: 0,
                adopted: 0,
                entered: vec![0; apps.len()],
                balancers: (0..apps.len()).map(|_| None).collect(),
                bytes_sent: 0,
                messages_sent: 0,
                datagrams_refused: 0,
            })
            .collect();
        let socket_addrs = (0..nodes.len())
            .map(|i| {
                let addr = gossip_addr_of(i);
                (addr.hash64(), (addr, std::net::SocketAddr::new(ip_of(i), GOSSIP_PORT)))
            })
            .collect();
        let app_sims = apps.iter().map(|a| scenario.app_sim.get(a).cloned().unwrap_or_default()).collect();
        World {
            socket_addrs,
            index_of: nodes.iter().enumerate().map(|(i, n)| (n.id.clone(), i)).collect(),
            group: vec![0; nodes.len()],
            nodes,
            containers: BTreeMap::new(),
            removals: BinaryHeap::new(),
            crashes: BinaryHeap::new(),
            images: scenario.sim.images.clone(),
            by_port: BTreeMap::new(),
            app_index: apps.iter().enumerate().map(|(i, a)| (a.clone(), i)).collect(),
            apps,
            membership_version: 1,
            rng: SimRng::new(seed ^ 0x05ee_d0f3_071d),
            next_container: 0,
            start_latency: (scenario.sim.start_latency_ms, scenario.sim.start_jitter_ms),
            adopt: scenario.sim.adopt,
            keyring: scenario.sim.gossip_keys.then(|| std::sync::Arc::new(sim_keyring(&scenario.name, seed))),
            requests: RequestPath {
                app_sims,
                in_flight: BinaryHeap::new(),
                latency: LatencyHistogram::new(),
                latency_second: LatencyHistogram::new(),
                ok: 0,
                failed: BTreeMap::new(),
                hop_us: scenario.sim.net_latency_ms_min * 1000,
                request_timeout_us: scenario.sim.request_timeout_ms * 1000,
                seconds: Vec::new(),
            },
            truth: Truth {
                desired: scenario
                    .cluster
                    .apps
                    .iter()
                    .filter(|a| scenario.app_sim.get(&a.name).is_none_or(|s| s.apply_at_start))
                    .map(|a| (a.name.clone(), a.replicas))
                    .collect(),
                scale_events: Vec::new(),
                last_node_of_slot: BTreeMap::new(),
                moves: 0,
                unschedulable: 0,
                bad_messages: 0,
                partition_changed_ms: 0,
                false_down_open: BTreeMap::new(),
                false_down_events: 0,
                false_down_closed_ms: 0,
                false_down_examples: Vec::new(),
                agent_restarts: Vec::new(),
                specs: scenario.cluster.apps.iter().map(|a| (a.name.clone(), a.clone())).collect(),
                rollouts: Vec::new(),
                changes_s: Vec::new(),
                refused_commands: Vec::new(),
            },
        }
    }

    /// The perfect failure detector: the peers node `index` can reach and that are up.
    pub fn alive_seen_by(&self, index: usize) -> Vec<(NodeId, PeerAddr)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| n.up && self.group[*i] == self.group[index])
            .map(|(_, n)| (n.id.clone(), n.gossip_addr.clone()))
            .collect()
    }

    /// Node `index`'s agent booted: its driver takes inputs from `inbox`. Returns the number
    /// of this life (the first boot is 1), and the containers it finds running on the node,
    /// to adopt: (slot, container id, host port, version). Exited containers it finds are removed, as
    /// the real agent does at start-up.
    pub fn node_started(&mut self, index: usize, inbox: InboxHandle, now_ms: u64) -> (u64, Vec<Found>) {
        let was_up = self.nodes[index].up;
        let n = &mut self.nodes[index];
        n.up = true;
        n.starts += 1;
        n.inbox = Some(inbox);
        n.agent_started_ms = now_ms;
        if !was_up {
            n.slow_factor = 1.0;
        }
        self.membership_version += 1;
        let starts = n.starts;
        let mut running = Vec::new();
        for (id, c) in self.containers.iter_mut().filter(|(_, c)| c.node == index && c.removed_at_ms.is_none()) {
            if c.stopping_at_ms.is_some() {
                continue; // the stop reached Docker before the agent died
            }
            if c.exited {
                c.removed_at_ms = Some(now_ms);
                self.removals.push(Reverse((now_ms, *id)));
                continue;
            }
            if self.adopt {
                running.push(Found {
                    slot: c.slot.clone(),
                    container: container_name(*id),
                    host_port: c.host_port,
                    version: c.version,
                    gpus: c.gpus.clone(),
                });
            }
        }
        let containers = &self.containers;
        self.by_port.retain(|(node, _), id| {
            *node != index || containers.get(id).is_none_or(|c| !(c.exited && c.removed_at_ms == Some(now_ms)))
        });
        self.nodes[index].adopted = running.len();
        if let Some(r) = self.truth.agent_restarts.iter_mut().rev().find(|r| r.node == index)
            && r.adopted.is_none()
        {
            r.adopted = Some(running.len());
        }
        (starts, running)
    }

    /// The driver of node `index` reports the SWIM generation its new agent runs under.
    pub fn agent_generation(&mut self, index: usize, generation: u64) {
        self.nodes[index].generation = generation;
        if let Some(r) = self.truth.agent_restarts.iter_mut().rev().find(|r| r.node == index)
            && r.new_generation.is_none()
        {
            r.new_generation = Some(generation);
        }
    }

    /// Node `index`'s agent process died; the machine and its containers run on. Its
    /// balancers (in the agent's process) and its view are gone.
    pub fn agent_stopped(&mut self, index: usize, now_ms: u64) {
        let running = self
            .containers
            .values()
            .filter(|c| c.node == index && c.removed_at_ms.is_none() && c.stopping_at_ms.is_none() && !c.exited)
            .count();
        self.truth.agent_restarts.push(AgentRestart {
            node: index,
            at_ms: now_ms,
            old_generation: self.nodes[index].generation,
            running,
            new_generation: None,
            adopted: None,
        });
        self.forget_agent(index, now_ms);
    }

    /// What dies with an agent's process: its inbox, balancers and view.
    fn forget_agent(&mut self, index: usize, now_ms: u64) {
        let n = &mut self.nodes[index];
        n.inbox = None;
        n.digest = None;
        n.listed.clear();
        n.entered.iter_mut().for_each(|e| *e = 0);
        n.balancers.iter_mut().for_each(|b| *b = None);
        n.members.clear();
        self.close_false_downs(now_ms, |observer, _| observer == index);
    }

    /// Node `index` crashed: its agent, its containers and its balancers are gone, and the
    /// apps its agent had saved (a crash is a lost machine).
    pub fn node_crashed(&mut self, index: usize, now_ms: u64) {
        self.forget_agent(index, now_ms);
        let n = &mut self.nodes[index];
        n.up = false;
        n.persisted.clear();
        for (id, c) in self.containers.iter_mut().filter(|(_, c)| c.node == index && c.removed_at_ms.is_none()) {
            c.exited = true;
            c.removed_at_ms = Some(now_ms);
            self.removals.push(Reverse((now_ms, *id)));
        }
        self.by_port.retain(|(node, _), _| *node != index);
        self.membership_version += 1;
        self.close_false_downs(now_ms, |_, peer| peer == index);
    }

    /// The partition map changed to `group` at `now_ms`. A wrong down declaration between two
    /// nodes now apart is over: they cannot reach each other any more.
    pub fn set_groups(&mut self, group: Vec<usize>, now_ms: u64) {
        self.group = group;
        self.truth.partition_changed_ms = now_ms;
        self.membership_version += 1;
        let group = self.group.clone();
        self.close_false_downs(now_ms, |a, b| group[a] != group[b]);
    }

    /// Creates a container of `app` that answers after the start latency, and behaves as its
    /// image does. Returns its id, or `None` when the host port is taken.
    pub fn create_container(
        &mut self,
        node: usize,
        slot: SlotId,
        (host_port, gpus): (u16, Vec<GpuShare>),
        app: &AppSpec,
        ready_at_ms: u64,
        sim: AppSim,
    ) -> Option<ContainerId> {
        if self.by_port.contains_key(&(node, host_port)) {
            return None;
        }
        self.next_container += 1;
        let id = self.next_container;
        let image = self.images.get(&app.image);
        let never_healthy = image.is_some_and(|i| !i.healthy);
        if let Some(after_s) = image.and_then(|i| i.crash_after_s) {
            self.crashes.push(Reverse((ready_at_ms + (after_s * 1000.0) as u64, id)));
        }
        if self.truth.last_node_of_slot.insert(slot.clone(), node).is_some_and(|previous| previous != node) {
            self.truth.moves += 1;
        }
        self.by_port.insert((node, host_port), id);
        let queue = ReplicaQueue::new(sim.concurrency, sim.queue_max);
        self.containers.insert(
            id,
            SimContainer {
                node,
                app: self.app_index.get(&slot.app).copied().unwrap_or(usize::MAX),
                slot,
                host_port,
                resources: app.resources,
                gpus,
                image: app.image.clone(),
                version: app.version,
                never_healthy,
                ready_at_ms,
                exited: false,
                hung: false,
                flap: None,
                stopping_at_ms: None,
                removed_at_ms: None,
                queue,
                sim,
            },
        );
        Some(id)
    }

    /// A node asked for a container to stop: it serves nothing from now on and is removed after
    /// `drain_ms` (in-flight requests finish meanwhile).
    pub fn stop_container(&mut self, id: ContainerId, now_ms: u64, drain_ms: u64) {
        if let Some(c) = self.containers.get_mut(&id)
            && c.removed_at_ms.is_none()
        {
            c.stopping_at_ms.get_or_insert(now_ms);
            c.removed_at_ms = Some(now_ms + drain_ms);
            self.removals.push(Reverse((now_ms + drain_ms, id)));
            if drain_ms == 0 {
                self.by_port.remove(&(c.node, c.host_port));
            }
        }
    }

    /// The containers of crashing images whose time came by `now_ms` exit; their agents hear
    /// of it.
    pub fn crash_due(&mut self, now_ms: u64) {
        while let Some(&Reverse((at, id))) = self.crashes.peek() {
            if at > now_ms {
                break;
            }
            self.crashes.pop();
            let Some(c) = self.containers.get_mut(&id) else { continue };
            if c.exited || c.removed_at_ms.is_some() || c.stopping_at_ms.is_some() {
                continue;
            }
            c.exited = true;
            let node = c.node;
            self.deliver(node, Input::Container(ContainerEvent::Exited { container: container_name(id) }));
        }
    }

    /// Forgets containers removed before `now_ms`, freeing their ports.
    pub fn purge(&mut self, now_ms: u64) {
        // From the removals due, not a walk over every container (which ran ten times a
        // simulated second).
        while let Some(&Reverse((at, id))) = self.removals.peek() {
            if at > now_ms {
                break;
            }
            self.removals.pop();
            let due = self.containers.get(&id).is_some_and(|c| c.removed_at_ms.is_some_and(|t| t <= now_ms));
            if !due {
                continue; // purged already
            }
            let c = self.containers.remove(&id).expect("present");
            if self.by_port.get(&(c.node, c.host_port)) == Some(&id) {
                self.by_port.remove(&(c.node, c.host_port));
            }
        }
    }

    /// The live container serving `slot` index `slot` of `app`, the first one if several.
    pub fn container_of(&self, app: &AppName, slot: u32) -> Option<ContainerId> {
        self.containers
            .iter()
            .find(|(_, c)| c.slot.app == *app && c.slot.index == slot && c.removed_at_ms.is_none() && !c.exited)
            .map(|(id, _)| *id)
    }

    /// Turns a node's backend list into the world's indexes. A backend on a node the world does
    /// not know is dropped (no such node can be reached).
    pub fn sim_backends(&self, backends: &[Backend]) -> Vec<SimBackend> {
        backends
            .iter()
            .filter_map(|b| {
                let node = *self.index_of.get(&b.node)?;
                Some(SimBackend { node: node as u32, host_port: b.host_port, slot: b.slot.index })
            })
            .collect()
    }

    /// The socket address of `to`, a gossip address a node learnt: every one is a simulated
    /// node's own ([`gossip_addr_of`]).
    pub fn socket_addr(&self, to: &PeerAddr) -> std::net::SocketAddr {
        match self.socket_addrs.get(&to.hash64()) {
            Some((addr, socket)) if addr == to => *socket,
            _ => to.as_str().parse().expect("a simulated node's gossip address"),
        }
    }

    /// Sends an input to a node's driver, if the node runs.
    pub fn deliver(&self, index: usize, input: Input) {
        if let Some(inbox) = &self.nodes[index].inbox {
            Inbox::push(inbox, input);
        }
    }
}
