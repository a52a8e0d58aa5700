//! The agent: one tokio task owns the [`Node`] and is the only caller of its `handle_*` and
//! `poll_*`. Everything else (Docker, probes, the proxies' request counts, the API) reaches it
//! as an [`Input`] on one bounded channel; after every input the task drains every action and
//! hands each effect to a Docker, probe or proxy task. Time is Unix milliseconds.
//!
//! Single server for now: the cluster protocol (gossip, `--join`) is not built, so the node is
//! told once that it has no peers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use canteen_core::health::ProbeOutcome;
use canteen_core::model::{AppName, AppSpec, SlotId};
use canteen_core::node::{Action, Command, ContainerEvent, Event, Node, NodeConfig};
use canteen_core::registry::Key;
use canteen_core::schedule::ContainerState;
use canteen_core::time::Time;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::config::AgentConfig;
use crate::docker::{Docker, DockerError};
use crate::metrics::{AppLabel, Metrics};
use crate::proxy::Proxies;
use crate::state::{self, StateError};

/// Inputs waiting for the node; the senders wait when it is full.
const INPUT_QUEUE_MAX: usize = 4096;

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
}

/// What reaches the node's task.
#[derive(Debug)]
pub enum Input {
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
    /// Every app applied.
    pub apps: Vec<AppStatusJson>,
    /// Every slot of this node, and the desired slots placed nowhere.
    pub slots: Vec<SlotStatusJson>,
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
    /// Requests per second it received over the last report period.
    pub requests_per_s: f64,
    /// Restarts after failures since this agent started.
    pub restarts: u64,
}

/// What the agent task owns.
struct Driver {
    node: Node,
    config: AgentConfig,
    docker: Docker,
    proxies: Arc<Proxies>,
    metrics: Arc<Metrics>,
    tx: mpsc::Sender<Input>,
    restarts: BTreeMap<SlotId, u64>,
    app_errors: BTreeMap<AppName, String>,
    persisted: Vec<AppSpec>,
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
/// this node already runs, opens the API, and runs the node's task until `shutdown` resolves.
/// Returns once the API listens; the returned future ends when the agent stops.
pub async fn start(
    config: AgentConfig,
) -> Result<(Handle, impl std::future::Future<Output = ()> + Send + 'static, oneshot::Sender<()>), AgentError> {
    let docker = Docker::connect(config.node_id()).await?;
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|error| StateError::Io { path: config.data_dir.clone(), error })?;
    let persisted = state::load(&config.data_dir)?;
    let own = docker.list_own().await?;
    let api = tokio::net::TcpListener::bind(config.api_addr)
        .await
        .map_err(|error| AgentError::Api { addr: config.api_addr, error })?;

    let metrics = Arc::new(Metrics::new());
    let seed = seed();
    let proxies = Arc::new(Proxies::new(config.proxy_ip, metrics.clone(), seed));
    let (tx, rx) = mpsc::channel(INPUT_QUEUE_MAX);
    let t = now();
    let mut node_config = NodeConfig::new(config.node_id(), &config.container_ip.to_string(), config.resources());
    node_config.labels = config.labels.clone();
    node_config.policy = config.policy;
    node_config.host_port_min = config.host_port_min;
    node_config.host_port_max = config.host_port_max;
    node_config.load_report_interval_ms = config.scaling_interval_ms;
    node_config.autoscale_interval_ms = config.scaling_interval_ms;
    node_config.drain_ms = config.drain_ms;
    node_config.seed = seed;
    let node = Node::new(t, node_config);
    let mut driver = Driver {
        node,
        config: config.clone(),
        docker: docker.clone(),
        proxies: proxies.clone(),
        metrics: metrics.clone(),
        tx: tx.clone(),
        restarts: BTreeMap::new(),
        app_errors: BTreeMap::new(),
        persisted: Vec::new(),
    };
    driver.drain();
    // The desired state first, so adopted containers meet their app's health check.
    for spec in persisted {
        let name = spec.name.clone();
        if let Err(e) = driver.node.handle_command(now(), Command::Apply(Box::new(spec))) {
            tracing::error!(app = %name, "persisted app refused: {e}");
        }
        driver.drain();
    }
    driver.persisted = driver.desired_specs();
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
    // No peers: the cluster protocol is not built yet.
    driver.node.handle_membership(now(), []);
    driver.drain();
    metrics.gossip_members.set(1);

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
    tracing::info!(node = %config.node_name, api = %config.api_addr, "agent started");
    let (stop_tx, stop_rx) = oneshot::channel();
    Ok((handle, driver.run(rx, stop_rx), stop_tx))
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

impl Driver {
    async fn run(mut self, mut rx: mpsc::Receiver<Input>, mut stop: oneshot::Receiver<()>) {
        loop {
            self.drain();
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
        self.proxies.close_all();
        tracing::info!("agent stopped");
    }

    fn handle(&mut self, input: Input) {
        match input {
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
    }

    fn dispatch(&mut self, action: Action) {
        match action {
            Action::Send { to, .. } => {
                tracing::debug!(peer = %to, "no cluster protocol yet: message dropped");
            }
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

    /// The apps as the operator gave them (not the autoscaler's counts).
    fn desired_specs(&self) -> Vec<AppSpec> {
        self.node
            .registry()
            .iter()
            .filter_map(|(key, entry)| match (key, &entry.value) {
                (Key::App(_), Some(canteen_core::node::Value::App(spec))) => Some((**spec).clone()),
                _ => None,
            })
            .collect()
    }

    fn persist(&mut self) {
        let desired = self.desired_specs();
        if desired == self.persisted {
            return;
        }
        match state::save(&self.config.data_dir, &desired) {
            Ok(()) => self.persisted = desired,
            Err(e) => tracing::error!("cannot persist the desired state: {e}"),
        }
    }

    fn status(&self) -> StatusJson {
        let apps = self.node.apps();
        let mut slots: Vec<SlotStatusJson> = self
            .node
            .local_slots()
            .into_iter()
            .map(|(slot, host_port, state)| SlotStatusJson {
                app: slot.app.to_string(),
                slot: slot.index,
                node: self.config.node_name.clone(),
                host_port,
                health: health_name(state).to_owned(),
                requests_per_s: self.proxies.rate(&slot),
                restarts: self.restarts.get(&slot).copied().unwrap_or(0),
            })
            .collect();
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
        slots.sort_by(|a, b| (&a.app, a.slot).cmp(&(&b.app, b.slot)));
        StatusJson {
            node: self.config.node_name.clone(),
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
