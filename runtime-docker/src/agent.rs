//! The agent: one tokio task owns the [`Node`] and is the only caller of its `handle_*` and
//! `poll_*`. Everything else (Docker, probes, the proxies' request counts, the API) reaches it
//! as an [`Input`] on one bounded channel; after every input the task drains every action and
//! hands each effect to a Docker, probe, proxy or gossip task. Time is Unix milliseconds.
//!
//! The cluster protocol runs on one UDP socket bound to `gossip_addr`: every
//! [`Action::Send`] is one datagram to the peer's gossip address, and every datagram received
//! goes to [`Node::handle_message`] (the packet names its sender: the source address is never
//! needed). Membership is SWIM ([`MembershipMode::Swim`]), joined through the seeds
//! (`join`, `--join`); a node alone is a cluster of one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use canteen_core::health::ProbeOutcome;
use canteen_core::limits;
use canteen_core::membership::PeerAddr;
use canteen_core::model::{AppName, NodeId, SlotId};
use canteen_core::node::{Action, Command, ContainerEvent, Event, Node};
use canteen_core::schedule::ContainerState;
use canteen_core::time::Time;
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::config::AgentConfig;
use crate::docker::{Docker, DockerError};
use crate::metrics::{AppLabel, Metrics};
use crate::proxy::Proxies;
use crate::state::{self, StateError};

/// Inputs waiting for the node; the senders wait when it is full.
const INPUT_QUEUE_MAX: usize = 4096;
/// How often the desired state is compared with the one on disk, and written when it changed.
const PERSIST_INTERVAL_MS: u64 = 1000;
/// The largest gossip datagram received; a larger one is cut short by the kernel and refused
/// by the node as undecodable. Core keeps every packet it sends under
/// [`limits::PACKET_BYTES_MAX`], less than this (and UDP over IPv4 carries 65,507 bytes at
/// most).
const DATAGRAM_BYTES_MAX: usize = 64 * 1024;

/// Why the agent could not start. Nothing was started.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Docker is unreachable or refused to list this node's containers.
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// The persisted desired state could not be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// The API address is taken.
    #[error("cannot listen for the API on {addr}: {error}")]
    Api {
        /// The configured `api_addr`.
        addr: std::net::SocketAddr,
        /// What the system said.
        error: std::io::Error,
    },
    /// The config gives the node something core refuses (checked when the file is read: only a
    /// config built in code can get here).
    #[error("the agent's config: {0}")]
    Config(String),
    /// The gossip address is taken or not this host's.
    #[error("cannot listen for gossip (UDP) on {addr}: {error}; check `gossip_addr` in the agent's config")]
    Gossip {
        /// The configured `gossip_addr`.
        addr: std::net::SocketAddr,
        /// What the system said.
        error: std::io::Error,
    },
}

/// What reaches the node's task.
#[derive(Debug)]
pub enum Input {
    /// A gossip datagram from a peer.
    Packet(Vec<u8>),
    /// A container started, failed to start, or exited.
    Container(ContainerEvent),
    /// A start's outcome, with the app it was for (a failure is kept as the app's error).
    StartDone {
        /// The slot.
        slot: SlotId,
        /// The generation of the start.
        generation: u64,
        /// Docker's id, or the error.
        result: Result<String, String>,
    },
    /// A probe's outcome.
    Probe {
        /// Docker's id.
        container: String,
        /// The outcome.
        outcome: ProbeOutcome,
    },
    /// Requests each app's balancer received since the last report.
    Traffic(Vec<(AppName, u64)>),
    /// An operator's commands, applied in order; the reply says which failed first.
    Commands {
        /// The commands.
        commands: Vec<Command>,
        /// What became of them.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// What `canteen status` shows.
    Status {
        /// Where to send it.
        reply: oneshot::Sender<StatusJson>,
    },
}

/// The agent's state as `GET /status` reports it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StatusJson {
    /// This node.
    pub node: String,
    /// This life of the node (its SWIM generation: the agent's start time in Unix ms).
    #[serde(default)]
    pub generation: u64,
    /// Every app applied.
    pub apps: Vec<AppStatusJson>,
    /// Every slot running on a node believed alive (this one included), as this node sees the
    /// cluster, and the desired slots running nowhere.
    pub slots: Vec<SlotStatusJson>,
    /// Every node this one knows of: itself, its live peers, and nodes it believes down.
    #[serde(default)]
    pub nodes: Vec<NodeStatusJson>,
}

/// One node of the cluster.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeStatusJson {
    /// Its name.
    pub name: String,
    /// `alive` (this node, or a peer SWIM holds alive or suspected) or `down`.
    pub state: String,
    /// The address its containers are reached at.
    pub addr: String,
    /// The slots its status lists.
    pub slots: usize,
}

/// One app.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AppStatusJson {
    /// Its name.
    pub name: String,
    /// Its image.
    pub image: String,
    /// Its published port.
    pub port: u16,
    /// The replica count wanted now (the autoscaler's for autoscaled apps).
    pub replicas: u32,
    /// The last start failure, until a start succeeds.
    pub error: Option<String>,
}

/// One slot.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SlotStatusJson {
    /// The app.
    pub app: String,
    /// The slot index.
    pub slot: u32,
    /// The node running it, `-` when none.
    pub node: String,
    /// Its host port, 0 when none.
    pub host_port: u16,
    /// starting, healthy, unhealthy, failed or unplaced.
    pub health: String,
    /// Requests per second this agent's balancer sent it over the last report period.
    pub requests_per_s: f64,
    /// Restarts after failures since its agent started: known for this agent's slots only
    /// (`None` for a peer's).
    pub restarts: Option<u64>,
}

/// What the agent task owns.
struct Driver {
    node: Node,
    config: AgentConfig,
    gossip: Arc<UdpSocket>,
    /// [`Node::members_version`] when the members were last logged and counted.
    members_version: u64,
    docker: Docker,
    proxies: Arc<Proxies>,
    metrics: Arc<Metrics>,
    tx: mpsc::Sender<Input>,
    restarts: BTreeMap<SlotId, u64>,
    app_errors: BTreeMap<AppName, String>,
    /// [`Node::desired_version`] when the desired state was last written to `data_dir`.
    persisted: u64,
}

/// The current time as the node sees it: Unix milliseconds.
pub fn now() -> Time {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    Time::from_millis(ms)
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// A running agent: its input channel and what the API needs.
#[derive(Clone, Debug)]
pub struct Handle {
    /// The node's inputs.
    pub tx: mpsc::Sender<Input>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The config it runs with.
    pub config: Arc<AgentConfig>,
    /// The Docker handle, for `canteen up`'s clean-up.
    pub docker: Docker,
    /// The proxies, to close on shutdown.
    pub proxies: Arc<Proxies>,
}

impl Handle {
    /// Applies `commands` in order through the node.
    pub async fn commands(&self, commands: Vec<Command>) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Input::Commands { commands, reply }).await.map_err(|_| "the agent stopped".to_owned())?;
        rx.await.map_err(|_| "the agent stopped".to_owned())?
    }

    /// The agent's status.
    pub async fn status(&self) -> Option<StatusJson> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Input::Status { reply }).await.ok()?;
        rx.await.ok()
    }
}

/// Starts the agent: connects to Docker, restores the persisted apps, adopts the containers
/// this node already runs, opens the API and the gossip socket, joins the cluster through
/// `seeds` (none: a cluster of one, that others may join), and runs the node's task until
/// `shutdown` resolves. Returns once the API listens; the returned future ends when the agent
/// stops.
pub async fn start(
    config: AgentConfig,
    seeds: Vec<SocketAddr>,
) -> Result<(Handle, impl std::future::Future<Output = ()> + Send + 'static, oneshot::Sender<()>), AgentError> {
    let docker = Docker::connect(config.node_id()).await?;
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|error| StateError::Io { path: config.data_dir.clone(), error })?;
    let persisted = state::load(&config.data_dir)?;
    let own = docker.list_own().await?;
    let api = tokio::net::TcpListener::bind(config.api_addr)
        .await
        .map_err(|error| AgentError::Api { addr: config.api_addr, error })?;
    let gossip = Arc::new(
        UdpSocket::bind(config.gossip_addr)
            .await
            .map_err(|error| AgentError::Gossip { addr: config.gossip_addr, error })?,
    );
    let advertised = config.gossip_advertised();
    if advertised.ip().is_loopback() && seeds.iter().any(|s| !s.ip().is_loopback()) {
        tracing::warn!(
            gossip = %advertised,
            "gossip_addr is a loopback address but a seed is not: peers on other machines cannot reach this \
             node (set gossip_addr, or advertise_ip, to an address they can reach)"
        );
    }
    if config.reachable_container_ip().is_loopback() && seeds.iter().any(|s| !s.ip().is_loopback()) {
        tracing::warn!(
            container_ip = %config.reachable_container_ip(),
            "containers are published on a loopback address but a seed is not: balancers on other machines \
             cannot reach them (set container_ip, or advertise_ip, to an address they can reach)"
        );
    }

    let metrics = Arc::new(Metrics::new());
    let seed = seed();
    let proxies = Arc::new(Proxies::new(config.proxy_ip, metrics.clone(), seed));
    let (tx, rx) = mpsc::channel(INPUT_QUEUE_MAX);
    let t = now();
    let mut node_config = config.node_config();
    node_config.seeds = seeds.iter().map(|s| PeerAddr::new(&s.to_string())).collect();
    // Higher in every life of the agent, so peers that declared the last one down take it back.
    node_config.generation = t.as_millis();
    node_config.seed = seed;
    node_config.check().map_err(AgentError::Config)?;
    let node = Node::new(t, node_config);
    let mut driver = Driver {
        node,
        config: config.clone(),
        gossip: gossip.clone(),
        members_version: u64::MAX,
        docker: docker.clone(),
        proxies: proxies.clone(),
        metrics: metrics.clone(),
        tx: tx.clone(),
        restarts: BTreeMap::new(),
        app_errors: BTreeMap::new(),
        persisted: u64::MAX,
    };
    driver.drain();
    // The desired state first, so adopted containers meet their app's health check.
    driver.restore(persisted);
    driver.persisted = driver.node.desired_version();
    let mut adopted = Vec::new();
    for c in own {
        if c.running {
            tracing::info!(slot = %c.slot, container = %short(&c.id), host_port = c.host_port, "adopting container");
            adopted.push((c.slot, c.id, c.host_port));
        } else {
            tracing::info!(slot = %c.slot, container = %short(&c.id), "removing exited container");
            let _ = docker.remove(&c.id).await;
        }
    }
    driver.node.handle_container_event(now(), ContainerEvent::Adopted { containers: adopted });
    driver.drain();
    tokio::spawn(receive_gossip(gossip, tx.clone(), metrics.clone()));

    let (exits_tx, mut exits_rx) = mpsc::channel::<String>(256);
    tokio::spawn(docker.clone().watch_exits(exits_tx));
    let forward = tx.clone();
    tokio::spawn(async move {
        while let Some(container) = exits_rx.recv().await {
            if forward.send(Input::Container(ContainerEvent::Exited { container })).await.is_err() {
                return;
            }
        }
    });
    let counts_tx = tx.clone();
    let counts_proxies = proxies.clone();
    let interval = Duration::from_millis(config.scaling_interval_ms);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let counts = counts_proxies.take_counts();
            if counts_tx.send(Input::Traffic(counts)).await.is_err() {
                return;
            }
        }
    });
    let handle = Handle {
        tx,
        metrics: metrics.clone(),
        config: Arc::new(config.clone()),
        docker: docker.clone(),
        proxies: proxies.clone(),
    };
    tokio::spawn(crate::api::serve(api, handle.clone()));
    tracing::info!(
        node = %config.node_name,
        api = %config.api_addr,
        gossip = %advertised,
        seeds = ?seeds,
        generation = t.as_millis(),
        "agent started"
    );
    let (stop_tx, stop_rx) = oneshot::channel();
    Ok((handle, driver.run(rx, stop_rx), stop_tx))
}

/// Hands every gossip datagram received to the node, until the agent stops.
async fn receive_gossip(socket: Arc<UdpSocket>, tx: mpsc::Sender<Input>, metrics: Arc<Metrics>) {
    let mut buffer = vec![0u8; DATAGRAM_BYTES_MAX];
    loop {
        match socket.recv_from(&mut buffer).await {
            Ok((n, _source)) => {
                metrics.gossip_received.inc();
                if tx.send(Input::Packet(buffer[..n].to_vec())).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                // An ICMP error reported on the socket, or an interrupted call: nothing to keep.
                tracing::debug!("gossip receive: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

impl Driver {
    async fn run(mut self, mut rx: mpsc::Receiver<Input>, mut stop: oneshot::Receiver<()>) {
        let mut persist_at = std::time::Instant::now();
        loop {
            self.drain();
            // The desired state may also change by gossip: looked at once a second.
            if persist_at.elapsed() >= Duration::from_millis(PERSIST_INTERVAL_MS) {
                self.persist();
                persist_at = std::time::Instant::now();
            }
            // Due timers first, so a steady stream of inputs never starves them.
            let t = now();
            if self.node.poll_timeout().is_some_and(|due| due <= t) {
                self.node.handle_timeout(t);
                continue;
            }
            let wait_ms = self.node.poll_timeout().map_or(1000, |due| due.as_millis().saturating_sub(t.as_millis()));
            tokio::select! {
                biased;
                _ = &mut stop => break,
                input = rx.recv() => match input {
                    Some(input) => self.handle(input),
                    None => break,
                },
                () = tokio::time::sleep(Duration::from_millis(wait_ms)) => {}
            }
        }
        self.persist();
        self.proxies.close_all();
        tracing::info!("agent stopped");
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Packet(bytes) => self.node.handle_message(now(), &bytes),
            Input::Container(event) => self.node.handle_container_event(now(), event),
            Input::StartDone { slot, generation, result } => {
                let event = match result {
                    Ok(container) => {
                        self.app_errors.remove(&slot.app);
                        ContainerEvent::Started { slot, generation, container }
                    }
                    Err(error) => {
                        tracing::error!(slot = %slot, "start failed: {error}");
                        self.app_errors.insert(slot.app.clone(), error.clone());
                        ContainerEvent::StartFailed { slot, generation, error }
                    }
                };
                self.node.handle_container_event(now(), event);
            }
            Input::Probe { container, outcome } => self.node.handle_probe_result(now(), &container, outcome),
            Input::Traffic(counts) => {
                for (app, requests) in counts {
                    if requests > 0 {
                        self.drain();
                        self.node.handle_traffic(now(), &app, requests);
                    }
                }
            }
            Input::Commands { commands, reply } => {
                let mut result = Ok(());
                for command in commands {
                    self.drain();
                    if let Err(e) = self.node.handle_command(now(), command) {
                        result = Err(e.to_string());
                        break;
                    }
                }
                self.drain();
                self.persist();
                let _ = reply.send(result);
            }
            Input::Status { reply } => {
                let _ = reply.send(self.status());
            }
        }
    }

    /// Carries out every queued action.
    fn drain(&mut self) {
        while let Some(action) = self.node.poll_action() {
            self.dispatch(action);
        }
        if self.node.members_version() != self.members_version {
            self.members_version = self.node.members_version();
            let members = self.node.members();
            self.metrics.gossip_members.set(members.len() as i64 + 1);
            let names: Vec<&str> = members.iter().map(NodeId::as_str).collect();
            tracing::info!(members = ?names, "cluster members (peers believed alive)");
        }
    }

    /// One gossip datagram to `to`; a failure loses it, which gossip and SWIM expect.
    fn send(&self, to: &PeerAddr, bytes: &[u8]) {
        let addr = match to.as_str().parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                tracing::warn!(peer = %to, "gossip address is not IP:PORT: packet dropped");
                self.metrics.gossip_dropped.inc();
                return;
            }
        };
        if bytes.len() > limits::PACKET_BYTES_MAX {
            tracing::warn!(peer = %to, bytes = bytes.len(), "gossip packet larger than a datagram: dropped");
            self.metrics.gossip_dropped.inc();
            return;
        }
        match self.gossip.try_send_to(bytes, addr) {
            Ok(_) => {
                self.metrics.gossip_sent.inc();
            }
            Err(e) => {
                tracing::debug!(peer = %to, "gossip send: {e}");
                self.metrics.gossip_dropped.inc();
            }
        }
    }

    fn dispatch(&mut self, action: Action) {
        match action {
            Action::Send { to, bytes } => self.send(&to, &bytes),
            Action::StartContainer { slot, app, host_port, generation } => {
                let (docker, tx, ip) = (self.docker.clone(), self.tx.clone(), self.config.container_ip);
                tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    let result = docker.start(&slot, &app, ip, host_port).await.map_err(|e| e.to_string());
                    if let Ok(id) = &result {
                        let start_ms = started.elapsed().as_millis() as u64;
                        tracing::info!(slot = %slot, container = %short(id), host_port, start_ms, "container started");
                    }
                    let _ = tx.send(Input::StartDone { slot, generation, result }).await;
                });
            }
            Action::StopContainer { container, slot, drain_ms } => {
                let docker = self.docker.clone();
                tokio::spawn(async move {
                    // The balancers already dropped it; let what it serves finish.
                    tokio::time::sleep(Duration::from_millis(drain_ms)).await;
                    match docker.remove(&container).await {
                        Ok(()) => tracing::info!(slot = %slot, container = %short(&container), "container removed"),
                        Err(e) => tracing::error!(slot = %slot, "{e}"),
                    }
                });
            }
            Action::Probe { container, host_port, path, timeout_ms } => {
                let (tx, ip) = (self.tx.clone(), self.config.container_ip);
                tokio::spawn(async move {
                    let outcome = crate::probe::probe(ip, host_port, &path, timeout_ms).await;
                    let _ = tx.send(Input::Probe { container, outcome }).await;
                });
            }
            Action::SetBackends { app, port, picker, backends } => {
                tracing::info!(app = %app, port, backends = backends.len(), "balancer backends");
                if let Err(e) = self.proxies.set_backends(&app, port, picker, &backends) {
                    tracing::error!("{e}");
                    self.app_errors.insert(app, e.to_string());
                }
            }
            Action::RemoveBalancer { app } => self.proxies.remove(&app),
            Action::Event(event) => self.on_event(event),
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Starting { slot, host_port } => tracing::info!(slot = %slot, host_port, "starting"),
            Event::Health { slot, state } => tracing::info!(slot = %slot, ?state, "health"),
            Event::Restarting { slot, at } => {
                tracing::warn!(slot = %slot, at = %at, "restarting after a failure");
                self.metrics.restarts.get_or_create(&AppLabel::new(slot.app.as_str())).inc();
                *self.restarts.entry(slot).or_default() += 1;
            }
            Event::GaveUp { slot } => tracing::error!(slot = %slot, "failed past its restart budget"),
            Event::Scaled { app, decision } => {
                tracing::info!(app = %app, ?decision, "scaled");
                self.metrics.scale_events.get_or_create(&AppLabel::new(app.as_str())).inc();
            }
            Event::BadMessage { from, error } => tracing::warn!(peer = ?from, "bad message: {error}"),
            Event::Unschedulable { slots } => {
                for (slot, reason) in slots {
                    tracing::warn!(slot = %slot, "unschedulable: {reason}");
                }
            }
        }
    }

    /// Brings back the desired state persisted by an earlier life of this agent, through the
    /// node's own input for it ([`Node::handle_restore`]): what the cluster changed since (a
    /// removal, a scale through another agent) is newer and wins, here or when the news
    /// arrives. Specs of the first file format are applied again.
    fn restore(&mut self, persisted: state::Persisted) {
        for spec in persisted.apps {
            let name = spec.name.clone();
            if let Err(e) = self.node.handle_command(now(), Command::Apply(Box::new(spec))) {
                tracing::error!(app = %name, "persisted app refused: {e}");
            }
            self.drain();
        }
        self.node.handle_restore(now(), persisted.entries);
        self.drain();
        let apps = self.node.apps().len();
        if apps > 0 {
            tracing::info!(apps, "desired state restored from {}", self.config.data_dir.display());
        }
    }

    /// Writes the desired state to `data_dir` when it changed, however it changed (through this
    /// agent's API or by gossip).
    fn persist(&mut self) {
        let version = self.node.desired_version();
        if version == self.persisted {
            return;
        }
        match state::save(&self.config.data_dir, &self.node.desired_entries()) {
            Ok(()) => self.persisted = version,
            Err(e) => tracing::error!("cannot persist the desired state: {e}"),
        }
    }

    /// The cluster as this node sees it: its own slots (claims and back-offs included), every
    /// slot the statuses of its live peers list, and the desired slots running nowhere.
    fn status(&self) -> StatusJson {
        let apps = self.node.apps();
        let me = self.node.id();
        let local = self.node.local_slots();
        let mut slots: Vec<SlotStatusJson> = local
            .iter()
            .map(|(slot, host_port, state)| SlotStatusJson {
                app: slot.app.to_string(),
                slot: slot.index,
                node: me.to_string(),
                host_port: *host_port,
                health: health_name(*state).to_owned(),
                requests_per_s: self.proxies.rate(slot),
                restarts: Some(self.restarts.get(slot).copied().unwrap_or(0)),
            })
            .collect();
        let mut nodes = vec![NodeStatusJson {
            name: me.to_string(),
            state: "alive".to_owned(),
            addr: self.node.config().addr.clone(),
            slots: local.len(),
        }];
        for view in self.node.cluster_view() {
            let node = view.node;
            if node == me {
                continue;
            }
            let Some(status) = view.status else {
                // A live peer whose status has not arrived yet (or only one of an earlier
                // life), or a node down whose last status is of an earlier life.
                let state = if view.alive { "alive" } else { "down" }.to_owned();
                nodes.push(NodeStatusJson { name: node.to_string(), state, ..Default::default() });
                continue;
            };
            nodes.push(NodeStatusJson {
                name: node.to_string(),
                state: if view.alive { "alive" } else { "down" }.to_owned(),
                addr: status.addr.clone(),
                slots: status.containers.len(),
            });
            if !view.alive {
                continue;
            }
            for c in &status.containers {
                slots.push(SlotStatusJson {
                    app: c.slot.app.to_string(),
                    slot: c.slot.index,
                    node: node.to_string(),
                    host_port: c.host_port,
                    health: health_name(c.state).to_owned(),
                    requests_per_s: self.proxies.rate(&c.slot),
                    restarts: None,
                });
            }
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        for app in &apps {
            for slot in app.slots() {
                if !slots.iter().any(|s| s.app == slot.app.as_str() && s.slot == slot.index) {
                    slots.push(SlotStatusJson {
                        app: slot.app.to_string(),
                        slot: slot.index,
                        node: "-".to_owned(),
                        health: "unplaced".to_owned(),
                        ..Default::default()
                    });
                }
            }
        }
        slots.sort_by(|a, b| (&a.app, a.slot, &a.node).cmp(&(&b.app, b.slot, &b.node)));
        StatusJson {
            node: me.to_string(),
            generation: self.node.config().generation,
            apps: apps
                .iter()
                .map(|a| AppStatusJson {
                    name: a.name.to_string(),
                    image: a.image.clone(),
                    port: a.port,
                    replicas: a.replicas,
                    error: self.app_errors.get(&a.name).cloned(),
                })
                .collect(),
            slots,
            nodes,
        }
    }
}

fn health_name(state: ContainerState) -> &'static str {
    match state {
        ContainerState::Starting => "starting",
        ContainerState::Healthy => "healthy",
        ContainerState::Unhealthy => "unhealthy",
        ContainerState::Failed => "failed",
    }
}

/// Removes every container this node runs (labelled with its name), for `canteen up`'s exit.
pub async fn remove_all(docker: &Docker) -> Result<usize, DockerError> {
    let own = docker.list_own().await?;
    let n = own.len();
    for c in own {
        docker.remove(&c.id).await?;
    }
    Ok(n)
}
