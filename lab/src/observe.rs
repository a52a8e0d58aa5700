//! What is true in the lab, sampled a few times a second: every running agent's `/status`
//! (its registry's root hash, its members, the slots it tracks, the replica counts it wants),
//! Docker's list of the nodes' containers, and a probe of each running container on its
//! published port. Each sample is written into the simulator's [`World`], the one structure the
//! simulator's checkers read, so the lab's verdicts are the simulator's own code judging real
//! facts.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::models::ContainerSummaryStateEnum;
use bollard::query_parameters::ListContainersOptionsBuilder;
use canteen_core::health::ProbeOutcome;
use canteen_core::model::{GpuShare, HealthKind, NodeId, SlotId};
use canteen_docker::api::StatusJson;
use canteen_docker::docker::{
    LABEL_APP, LABEL_GPUS, LABEL_HOST_PORT, LABEL_IDENTITY, LABEL_NODE, LABEL_SLOT, LABEL_VERSION, parse_gpus,
};
use canteen_sim::checker::Checker;
use canteen_sim::scenario::{AppSim, Scenario};
use canteen_sim::traffic::ReplicaQueue;
use canteen_sim::world::{ContainerId, ScaleEvent, SimContainer, World};

use crate::hosts::Agents;

/// A status not answered within this is skipped for the sample (the agent's previous one
/// stands).
const STATUS_TIMEOUT: Duration = Duration::from_millis(1500);
/// A container's probe not answered within this fails.
const PROBE_TIMEOUT_MS: u64 = 500;

/// One container as Docker lists it.
#[derive(Debug)]
struct Seen {
    docker_id: String,
    node: usize,
    app: String,
    slot: u32,
    host_port: u16,
    version: u64,
    gpus: Vec<GpuShare>,
    image: String,
    running: bool,
    paused: bool,
}

/// What a sample reads and writes, shared with the rest of the run.
#[derive(Clone)]
pub struct Sampled {
    /// What the checkers read.
    pub world: Arc<Mutex<World>>,
    /// The agents, for their APIs and process ids.
    pub agents: Arc<Mutex<Agents>>,
    /// The simulator's checkers.
    pub checker: Arc<Mutex<Checker>>,
    /// The network, for its gossip counters.
    pub net: Arc<crate::net::Net>,
    /// Bumped as each fault step starts and once it is done (odd while one is under way).
    pub epoch: Arc<std::sync::atomic::AtomicU64>,
}

/// An agent's resident memory over a run, in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rss {
    /// The highest sampled.
    pub peak_kib: u64,
    /// The sum of the samples, and how many.
    pub sum_kib: u64,
    /// How many samples.
    pub samples: u64,
}

/// The sampler's memory between samples.
#[derive(Debug)]
pub struct Observer {
    docker: Docker,
    index_of: HashMap<String, usize>,
    /// The world's number for each Docker container seen.
    ids: HashMap<String, ContainerId>,
    next_id: ContainerId,
    /// Containers their agent has listed at some point: once it no longer does while it runs,
    /// it is stopping them (draining), not serving.
    ever_listed: HashSet<ContainerId>,
    /// Resident memory of each node's agent.
    pub rss: Vec<Rss>,
    /// Samples taken: gossip counters are read every fourth (once a second).
    samples: u64,
}

impl Observer {
    /// Connects to the local Docker engine for a run of `scenario`.
    pub async fn connect(scenario: &Scenario) -> Result<Observer, String> {
        let docker = Docker::connect_with_local_defaults().map_err(|e| format!("docker: {e}"))?;
        let docker = docker.negotiate_version().await.map_err(|e| format!("docker is unreachable: {e}"))?;
        Ok(Observer {
            docker,
            index_of: scenario.cluster.nodes.iter().enumerate().map(|(i, n)| (n.id.to_string(), i)).collect(),
            ids: HashMap::new(),
            next_id: 0,
            ever_listed: HashSet::new(),
            rss: vec![Rss::default(); scenario.cluster.nodes.len()],
            samples: 0,
        })
    }

    /// The docker engine, for the faults that act on containers.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The containers of the lab's agents (those carrying one of `identities`), as Docker lists
    /// them.
    async fn list(&self, identities: &HashSet<String>) -> Result<Vec<Seen>, String> {
        let filters = HashMap::from([("label", vec![LABEL_NODE.to_owned()])]);
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        let list = self.docker.list_containers(Some(options)).await.map_err(|e| format!("docker: list: {e}"))?;
        let mut seen = Vec::new();
        for c in list {
            let labels = c.labels.unwrap_or_default();
            if !labels.get(LABEL_IDENTITY).is_some_and(|id| identities.contains(id)) {
                continue;
            }
            let (Some(id), Some(node), Some(app), Some(slot), Some(host_port)) = (
                c.id,
                labels.get(LABEL_NODE).and_then(|n| self.index_of.get(n)).copied(),
                labels.get(LABEL_APP),
                labels.get(LABEL_SLOT).and_then(|s| s.parse().ok()),
                labels.get(LABEL_HOST_PORT).and_then(|s| s.parse().ok()),
            ) else {
                continue;
            };
            seen.push(Seen {
                docker_id: id,
                node,
                app: app.clone(),
                slot,
                host_port,
                version: labels.get(LABEL_VERSION).and_then(|v| v.parse().ok()).unwrap_or(0),
                gpus: labels.get(LABEL_GPUS).and_then(|g| parse_gpus(g)).unwrap_or_default(),
                image: c.image.unwrap_or_default(),
                running: c.state == Some(ContainerSummaryStateEnum::RUNNING),
                paused: c.state == Some(ContainerSummaryStateEnum::PAUSED),
            });
        }
        seen.sort_by(|a, b| a.docker_id.cmp(&b.docker_id));
        Ok(seen)
    }

    /// The Docker ids of the containers of `app`'s slot `slot`, running first.
    pub async fn containers_of(&self, identities: &HashSet<String>, app: &str, slot: u32) -> Vec<String> {
        let mut seen = self.list(identities).await.unwrap_or_default();
        seen.retain(|s| s.app == app && s.slot == slot && (s.running || s.paused));
        seen.sort_by_key(|s| !s.running);
        seen.into_iter().map(|s| s.docker_id).collect()
    }

    /// The Docker ids of every container on node `node`, running or not.
    pub async fn containers_on(&self, identities: &HashSet<String>, node: usize) -> Vec<String> {
        let seen = self.list(identities).await.unwrap_or_default();
        seen.into_iter().filter(|s| s.node == node).map(|s| s.docker_id).collect()
    }

    /// One sample at `now_ms`: every running agent's status, Docker's containers and their
    /// probes, into `world`, then the checkers.
    pub async fn sample(&mut self, now_ms: u64, run: &Sampled, scenario: &Scenario) {
        use std::sync::atomic::Ordering;
        let Sampled { world, agents, checker, net, epoch } = run;
        // Even: no fault step under way. A sample begun during a step, or across one, may
        // mix what was before it with what came after: it is dropped.
        let began = epoch.load(Ordering::SeqCst);
        let nodes = scenario.cluster.nodes.len();
        let (apis, pids, identities) = {
            let mut agents = agents.lock().expect("never poisoned");
            let apis: Vec<_> = (0..nodes).map(|i| agents.running(i).then(|| agents.api(i))).collect();
            let pids: Vec<_> = (0..nodes).map(|i| agents.pid(i)).collect();
            (apis, pids, agents.identities())
        };
        let mut fetches = tokio::task::JoinSet::new();
        for (i, api) in apis.iter().enumerate() {
            if let Some(api) = api.clone() {
                fetches.spawn(async move {
                    let status = tokio::time::timeout(STATUS_TIMEOUT, canteen_docker::api::status(&api)).await;
                    (i, status.ok().and_then(Result::ok))
                });
            }
        }
        let mut statuses: Vec<Option<StatusJson>> = vec![None; nodes];
        while let Some(Ok((i, status))) = fetches.join_next().await {
            statuses[i] = status;
        }
        let Ok(seen) = self.list(&identities).await else { return };
        let specs = world.lock().expect("never poisoned").truth.specs.clone();
        let mut probes = tokio::task::JoinSet::new();
        for (k, s) in seen.iter().enumerate() {
            if !s.running {
                continue;
            }
            let (kind, path) = specs
                .get(&canteen_core::model::AppName::new(&s.app))
                .map_or((HealthKind::Tcp, String::new()), |a| (a.health.kind, a.health.path.clone()));
            let port = s.host_port;
            probes.spawn(async move {
                if kind == HealthKind::None {
                    return (k, true);
                }
                let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
                let outcome = canteen_docker::probe::probe(kind, ip, port, &path, PROBE_TIMEOUT_MS).await;
                (k, outcome == ProbeOutcome::Success)
            });
        }
        let mut healthy = vec![false; seen.len()];
        while let Some(Ok((k, ok))) = probes.join_next().await {
            healthy[k] = ok;
        }
        for (i, pid) in pids.iter().enumerate() {
            if let Some(kib) = pid.and_then(rss_kib) {
                let r = &mut self.rss[i];
                r.peak_kib = r.peak_kib.max(kib);
                r.sum_kib += kib;
                r.samples += 1;
            }
        }
        self.samples += 1;
        let gossip: Vec<Option<u64>> =
            if self.samples % 4 == 1 { (0..nodes).map(|i| net.gossip_bytes(i)).collect() } else { vec![None; nodes] };
        let mut w = world.lock().expect("never poisoned");
        if began % 2 == 1 || epoch.load(Ordering::SeqCst) != began {
            return;
        }
        for (i, bytes) in gossip.into_iter().enumerate() {
            if let Some(bytes) = bytes {
                w.nodes[i].bytes_sent = bytes;
            }
        }
        self.record(now_ms, &mut w, &statuses, &seen, &healthy);
        checker.lock().expect("never poisoned").sample(now_ms, &w, scenario);
    }

    /// Writes one sample into the world.
    fn record(&mut self, now_ms: u64, w: &mut World, statuses: &[Option<StatusJson>], seen: &[Seen], healthy: &[bool]) {
        for (i, status) in statuses.iter().enumerate() {
            let Some(status) = status else { continue };
            self.record_status(now_ms, w, i, status);
        }
        self.record_scale(now_ms, w, statuses);
        let mut containers = BTreeMap::new();
        for (s, &healthy) in seen.iter().zip(healthy) {
            let slot = SlotId::new(s.app.as_str(), s.slot);
            let id = match self.ids.get(&s.docker_id) {
                Some(id) => *id,
                None => {
                    self.next_id += 1;
                    self.ids.insert(s.docker_id.clone(), self.next_id);
                    // A slot started on another node than its last: a move, as the
                    // simulator counts them.
                    if w.truth.last_node_of_slot.insert(slot.clone(), s.node).is_some_and(|last| last != s.node) {
                        w.truth.moves += 1;
                    }
                    self.next_id
                }
            };
            let app = w.app_index.get(&slot.app).copied().unwrap_or(usize::MAX);
            let listed = w.nodes[s.node].listed.contains(&(app, s.slot, s.host_port));
            if listed {
                self.ever_listed.insert(id);
            }
            let agent_answers = statuses[s.node].is_some();
            let stopping = agent_answers && !listed && self.ever_listed.contains(&id);
            let resources = w.truth.specs.get(&slot.app).map_or(canteen_core::model::Resources::ZERO, |a| a.resources);
            containers.insert(
                id,
                SimContainer {
                    node: s.node,
                    slot,
                    app,
                    host_port: s.host_port,
                    resources,
                    gpus: s.gpus.clone(),
                    image: s.image.clone(),
                    version: s.version,
                    never_healthy: false,
                    ready_at_ms: if healthy { 0 } else { u64::MAX },
                    exited: !s.running && !s.paused,
                    hung: s.paused,
                    flap: None,
                    stopping_at_ms: stopping.then_some(now_ms),
                    removed_at_ms: None,
                    queue: ReplicaQueue::new(1, 1),
                    sim: AppSim::default(),
                },
            );
        }
        w.containers = containers;
    }

    /// Node `i`'s status: its registry's hash, its members, the containers it tracks, the life
    /// of its agent.
    fn record_status(&mut self, now_ms: u64, w: &mut World, i: usize, status: &StatusJson) {
        let digest = u64::from_str_radix(&status.registry_hash, 16).ok();
        let members: BTreeSet<NodeId> = status
            .nodes
            .iter()
            .filter(|n| n.state == "alive" && n.name != status.node)
            .map(|n| NodeId::new(&n.name))
            .collect();
        let listed = status
            .slots
            .iter()
            .filter(|s| s.node == status.node)
            .map(|s| {
                let app = w.app_index.get(&canteen_core::model::AppName::new(&s.app)).copied().unwrap_or(usize::MAX);
                (app, s.slot, s.host_port)
            })
            .collect();
        w.publish_members(i, &members, now_ms);
        let n = &mut w.nodes[i];
        n.digest = digest;
        n.listed = listed;
        if n.generation != status.generation {
            n.generation = status.generation;
            n.adopted = status.adopted;
            if let Some(r) = w.truth.agent_restarts.iter_mut().rev().find(|r| r.node == i)
                && r.new_generation.is_none()
                && r.old_generation != status.generation
            {
                r.new_generation = Some(status.generation);
                r.adopted = Some(status.adopted);
            }
        }
    }

    /// A replica count every answering agent agrees on and that differs from the last known:
    /// an autoscaler's decision, as the simulator records it from the coordinator's event.
    fn record_scale(&mut self, now_ms: u64, w: &mut World, statuses: &[Option<StatusJson>]) {
        let apps: Vec<_> = w.truth.desired.keys().cloned().collect();
        for app in apps {
            let counts: BTreeSet<u32> = statuses
                .iter()
                .flatten()
                .filter_map(|s| s.apps.iter().find(|a| a.name == app.as_str()).map(|a| a.replicas))
                .collect();
            let desired = w.truth.desired[&app];
            if counts.len() == 1
                && let Some(&to) = counts.first()
                && to != desired
            {
                w.truth.desired.insert(app.clone(), to);
                w.truth.scale_events.push(ScaleEvent { at_s: now_ms as f64 / 1000.0, app, from: desired, to });
            }
        }
    }
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use canteen_docker::api::{AppStatusJson, NodeStatusJson, SlotStatusJson};

    use super::*;

    fn scenario() -> Scenario {
        let text = "name = \"t\"\nduration_s = 60\n[cluster]\nnodes = 3\ncpu_millis = 2000\nmem_mb = 2048\n\
                    [[app]]\nname = \"web\"\nimage = \"canteen-demo:latest\"\nreplicas = 2\ncpu_millis = 100\n\
                    mem_mb = 64\nport = 8080\n";
        canteen_sim::scenario::parse("t.toml", text).expect("valid")
    }

    fn observer(s: &Scenario) -> Observer {
        Observer {
            // A client only: nothing here talks to the engine.
            docker: Docker::connect_with_local_defaults().expect("a client"),
            index_of: s.cluster.nodes.iter().enumerate().map(|(i, n)| (n.id.to_string(), i)).collect(),
            ids: HashMap::new(),
            next_id: 0,
            ever_listed: HashSet::new(),
            rss: Vec::new(),
            samples: 0,
        }
    }

    /// Node `i`'s status: its own slots (slot, host port), its live peers, web's replicas.
    fn status(i: usize, generation: u64, slots: &[(u32, u16)], peers: &[usize], replicas: u32) -> StatusJson {
        let name = |n: usize| format!("node-{n}");
        let mut nodes = vec![NodeStatusJson { name: name(i), state: "alive".into(), ..Default::default() }];
        nodes.extend(peers.iter().map(|p| NodeStatusJson {
            name: name(*p),
            state: "alive".into(),
            ..Default::default()
        }));
        StatusJson {
            node: name(i),
            generation,
            registry_hash: format!("{:016x}", 0xabcu64),
            adopted: slots.len(),
            apps: vec![AppStatusJson { name: "web".into(), replicas, ..Default::default() }],
            slots: slots
                .iter()
                .map(|(slot, port)| SlotStatusJson {
                    app: "web".into(),
                    slot: *slot,
                    node: name(i),
                    host_port: *port,
                    health: "healthy".into(),
                    ..Default::default()
                })
                .collect(),
            nodes,
        }
    }

    fn seen(id: &str, node: usize, slot: u32, host_port: u16) -> Seen {
        Seen {
            docker_id: id.into(),
            node,
            app: "web".into(),
            slot,
            host_port,
            version: 1,
            gpus: Vec::new(),
            image: "canteen-demo:latest".into(),
            running: true,
            paused: false,
        }
    }

    fn world(s: &Scenario) -> World {
        let mut w = World::new(s, 1);
        w.nodes.iter_mut().for_each(|n| n.up = true);
        w
    }

    #[test]
    fn a_container_its_agent_stops_listing_is_draining_and_no_duplicate() {
        let s = scenario();
        let (mut o, mut w) = (observer(&s), world(&s));
        let both = [Some(status(0, 1, &[(0, 28000)], &[1, 2], 2)), Some(status(1, 1, &[(1, 28100)], &[0, 2], 2)), None];
        o.record(1000, &mut w, &both, &[seen("a", 0, 0, 28000), seen("b", 1, 1, 28100)], &[true, true]);
        assert!(w.containers.values().all(|c| c.serving_at(1000, &w.nodes)), "both serve");
        assert_eq!(w.nodes[0].digest, Some(0xabc));
        assert!(w.nodes[0].members.contains(&NodeId::new("node-1")));
        // Node 1 dropped slot 1's container (moved to node 0): still running, being drained.
        let moved =
            [Some(status(0, 1, &[(0, 28000), (1, 28001)], &[1, 2], 2)), Some(status(1, 1, &[], &[0, 2], 2)), None];
        let containers = [seen("a", 0, 0, 28000), seen("b", 1, 1, 28100), seen("c", 0, 1, 28001)];
        o.record(1250, &mut w, &moved, &containers, &[true, true, true]);
        let serving: Vec<_> = w.containers.values().filter(|c| c.serving_at(1250, &w.nodes)).map(|c| c.node).collect();
        assert_eq!(serving, vec![0, 0], "the drained one does not count as a duplicate");
        assert_eq!(w.truth.moves, 1, "slot 1 started on another node: a move");
        // A container that never answered its probe does not serve.
        o.record(1500, &mut w, &moved, &containers, &[true, true, false]);
        assert_eq!(w.containers.values().filter(|c| c.serving_at(1500, &w.nodes)).count(), 1);
    }

    #[test]
    fn a_new_generation_completes_the_agent_restart_record() {
        let s = scenario();
        let (mut o, mut w) = (observer(&s), world(&s));
        let before = [Some(status(0, 5, &[(0, 28000)], &[1, 2], 2)), None, None];
        let containers = [seen("a", 0, 0, 28000)];
        o.record(1000, &mut w, &before, &containers, &[true]);
        w.agent_stopped(0, 2000);
        assert_eq!(w.truth.agent_restarts[0].running, 1);
        assert_eq!(w.truth.agent_restarts[0].old_generation, 5);
        // The old agent's status (a late answer) changes nothing; the new one's completes it.
        o.record(2100, &mut w, &before, &containers, &[true]);
        assert_eq!(w.truth.agent_restarts[0].new_generation, None);
        let after = [Some(status(0, 9, &[(0, 28000)], &[1, 2], 2)), None, None];
        o.record(2500, &mut w, &after, &containers, &[true]);
        assert_eq!(w.truth.agent_restarts[0].new_generation, Some(9));
        assert_eq!(w.truth.agent_restarts[0].adopted, Some(1));
    }

    #[test]
    fn a_replica_count_every_answering_agent_agrees_on_is_one_scale_event() {
        let s = scenario();
        let (mut o, mut w) = (observer(&s), world(&s));
        let split = [Some(status(0, 1, &[], &[1], 4)), Some(status(1, 1, &[], &[0], 2)), None];
        o.record(1000, &mut w, &split, &[], &[]);
        assert!(w.truth.scale_events.is_empty(), "not yet agreed");
        let agreed = [Some(status(0, 1, &[], &[1], 4)), Some(status(1, 1, &[], &[0], 4)), None];
        o.record(2000, &mut w, &agreed, &[], &[]);
        o.record(3000, &mut w, &agreed, &[], &[]);
        assert_eq!(w.truth.scale_events.len(), 1);
        assert_eq!((w.truth.scale_events[0].from, w.truth.scale_events[0].to), (2, 4));
        assert_eq!(w.truth.desired[&canteen_core::model::AppName::new("web")], 4);
    }
}
