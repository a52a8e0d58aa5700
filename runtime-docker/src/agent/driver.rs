//! The agent's task: the one owner of the [`Node`], the only caller of its `handle_*` and
//! `poll_*`. It takes one input at a time from the agent's channel, drains every action after
//! it and hands each effect to a Docker, probe, proxy or gossip job.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use canteen_core::limits;
use canteen_core::membership::PeerAddr;
use canteen_core::model::Cause;
use canteen_core::model::{AppName, NodeId, SlotId};
use canteen_core::node::{Action, ContainerEvent, Event, Node};
use canteen_core::rollout::{Outcome, Phase};
use canteen_core::schedule::{ContainerState, Unplaceable};
use canteen_core::seal::Sealer;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::{CommandFailure, Input, PERSIST_INTERVAL_MS, now, tasks};
use crate::api::{AppStatusJson, NodeStatusJson, SlotStatusJson, StatusJson, UpdateJson, VersionJson};
use crate::config::AgentConfig;
use crate::docker::Docker;
use crate::metrics::{AppLabel, InputLabel, Metrics, RolloutLabel};
use crate::plan::GpuJson;
use crate::proxy::Proxies;

/// Why the agent's task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// Asked to (Ctrl-C, SIGTERM, the handle dropped).
    Asked,
    /// Another live agent has this node's name: this one, the newer, stopped.
    NameTaken {
        /// The name.
        name: String,
        /// The other agent's gossip address.
        other: String,
        /// This agent's.
        mine: String,
    },
}

/// How long after its start an agent looks for another live agent with its name, and how
/// long such an agent must stay alive in its members before it gives up: a previous life of
/// this node at another address is declared down well within it (SWIM's detection time).
const NAME_WATCH_MS: u64 = 60_000;
const NAME_TAKEN_AFTER_MS: u64 = 10_000;

/// Watches, in an agent's first minute, for a live member with its name and an earlier life:
/// the agent that had the name first. Seen for `NAME_TAKEN_AFTER_MS` on end, this agent is the
/// second of that name and stops (the first keeps running: it ignores this one, see
/// `Node::name_conflicts`).
struct NameWatch {
    started: std::time::Instant,
    since: Option<std::time::Instant>,
    logged: bool,
}

impl NameWatch {
    fn new() -> NameWatch {
        NameWatch { started: std::time::Instant::now(), since: None, logged: false }
    }

    fn check(&mut self, node: &Node, config: &AgentConfig) -> Option<Stopped> {
        let conflicts = node.name_conflicts();
        let mine = node.own_generation();
        let older = conflicts.iter().find(|(_, generation)| *generation < mine);
        let young = self.started.elapsed() < Duration::from_millis(NAME_WATCH_MS);
        match older {
            Some((addr, _)) if young => {
                let since = *self.since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= Duration::from_millis(NAME_TAKEN_AFTER_MS) {
                    return Some(Stopped::NameTaken {
                        name: config.node_name.clone(),
                        other: addr.to_string(),
                        mine: config.gossip_advertised().to_string(),
                    });
                }
            }
            _ => self.since = None,
        }
        if let Some((addr, _)) = conflicts.iter().find(|(_, generation)| *generation > mine)
            && !self.logged
        {
            self.logged = true;
            tracing::error!(
                other = %addr,
                "another agent claims this node's name ({}); it gets no slots and no requests here, and stops \
                 once it sees this one",
                config.node_name
            );
        }
        None
    }
}

/// What the agent task owns.
pub(super) struct Driver {
    pub(super) node: Node,
    pub(super) config: AgentConfig,
    pub(super) gossip: Arc<UdpSocket>,
    /// [`Node::members_version`] when the members were last logged and counted.
    pub(super) members_version: u64,
    pub(super) docker: Docker,
    pub(super) proxies: Arc<Proxies>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) tx: mpsc::Sender<Input>,
    pub(super) restarts: BTreeMap<SlotId, u64>,
    pub(super) app_errors: BTreeMap<AppName, String>,
    /// [`Node::desired_version`] when the desired state was last written to `data_dir`.
    pub(super) persisted: u64,
    /// Seals every datagram sent, when the cluster is keyed.
    pub(super) sealer: Option<Sealer>,
    /// Limits the lines logged about a peer's refused inputs and unusable addresses.
    pub(super) rejections_logged: tasks::LogLimiter<String>,
    /// How many running containers this agent adopted when it started.
    pub(super) adopted: usize,
}

impl Driver {
    /// The loop: carry out the actions, persist the desired state once a second, fire due
    /// timers first, then take the next input or sleep until the next timer, until stopped.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Input>, mut stop: oneshot::Receiver<()>) -> Stopped {
        let mut persist_at = std::time::Instant::now();
        let mut names = NameWatch::new();
        let stopped = loop {
            self.drain();
            // The desired state may also change by gossip: looked at once a second.
            if persist_at.elapsed() >= Duration::from_millis(PERSIST_INTERVAL_MS) {
                self.persist();
                persist_at = std::time::Instant::now();
                if let Some(taken) = names.check(&self.node, &self.config) {
                    break taken;
                }
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
                _ = &mut stop => break Stopped::Asked,
                input = rx.recv() => match input {
                    Some(input) => self.handle(input),
                    None => break Stopped::Asked,
                },
                () = tokio::time::sleep(Duration::from_millis(wait_ms.min(PERSIST_INTERVAL_MS))) => {}
            }
        };
        self.persist();
        self.proxies.close_all();
        tracing::info!("agent stopped");
        stopped
    }

    /// One input for the node.
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
                // Durable before it is answered: the data directory is written first as it
                // is (a read-only or full disk refuses the command before anything changed),
                // then with the commands' effect, fsynced (`state::save`).
                if let Err(e) = self.persist_now() {
                    let _ = reply.send(Err(CommandFailure::NotPersisted(e)));
                    return;
                }
                let mut result = Ok(());
                for command in commands {
                    self.drain();
                    if let Err(e) = self.node.handle_command(now(), command) {
                        result = Err(CommandFailure::Refused(e.to_string()));
                        break;
                    }
                }
                self.drain();
                if let Err(e) = self.persist_now() {
                    result = Err(CommandFailure::NotPersisted(format!(
                        "{e}; the change is in this agent's memory and may spread to its peers, but would be lost \
                         if it restarted before the disk takes it"
                    )));
                }
                let _ = reply.send(result);
            }
            Input::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Input::Specs { reply } => {
                let _ = reply.send(self.node.applied_specs());
            }
        }
    }

    /// Carries out every queued action.
    pub(super) fn drain(&mut self) {
        while let Some(action) = self.node.poll_action() {
            self.dispatch(action);
        }
        if self.node.members_version() != self.members_version {
            self.members_version = self.node.members_version();
            let members = self.node.members();
            self.metrics.gossip_members.set(members.len() as i64 + 1);
            // The first few names: a cluster of hundreds would write a line of kilobytes at
            // each change.
            const NAMES_LOGGED: usize = 16;
            let names: Vec<&str> = members.iter().take(NAMES_LOGGED).map(NodeId::as_str).collect();
            let more = members.len().saturating_sub(NAMES_LOGGED);
            tracing::info!(count = members.len(), members = ?names, more, "cluster members (peers believed alive)");
        }
    }

    /// One gossip datagram to `to`; a failure loses it, which gossip and SWIM expect.
    fn send(&mut self, to: &PeerAddr, bytes: &[u8]) {
        let addr = match to.as_str().parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                // A member's address comes from the network: logged once a minute per address.
                if self.rejections_logged.allow(to.as_str()) {
                    tracing::warn!(peer = %to, "gossip address is not IP:PORT: packets to it dropped");
                }
                self.metrics.gossip_dropped.inc();
                return;
            }
        };
        if bytes.len() > limits::PACKET_BYTES_MAX {
            tracing::warn!(peer = %to, bytes = bytes.len(), "gossip packet larger than a datagram: dropped");
            self.metrics.gossip_dropped.inc();
            return;
        }
        let sealed;
        let bytes = match &mut self.sealer {
            Some(sealer) => {
                sealed = sealer.seal(bytes);
                &sealed[..]
            }
            None => bytes,
        };
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

    /// Carries out one action.
    fn dispatch(&mut self, action: Action) {
        match action {
            Action::Send { to, bytes } => self.send(&to, &bytes),
            Action::StartContainer { slot, app, host_port, gpus, generation } => {
                let (docker, tx, ip) = (self.docker.clone(), self.tx.clone(), self.config.container_ip);
                tasks::spawn_start(docker, tx, ip, (slot, app, host_port, gpus, generation));
            }
            Action::StopContainer { container, slot, drain_ms } => {
                tasks::spawn_stop(self.docker.clone(), container, slot, drain_ms);
            }
            Action::Probe { container, host_port, kind, path, timeout_ms } => {
                let check = (kind, path, timeout_ms);
                // Where the balancers reach the container: with `container_ip = 0.0.0.0`, the
                // advertised address. `0.0.0.0` itself means this host's loopback, which is
                // not where a port is published when the agent has a network of its own (a
                // namespace, as in the lab), and never what peers see.
                let ip = self.config.reachable_container_ip();
                tasks::spawn_probe(self.tx.clone(), ip, container, host_port, check);
            }
            Action::SetBackends { app, frontend, backends } => {
                tracing::info!(app = %app, port = frontend.port, backends = backends.len(), "balancer backends");
                if let Err(e) = self.proxies.set_backends(&app, frontend, &backends) {
                    tracing::error!("{e}");
                    self.app_errors.insert(app, e.to_string());
                }
            }
            Action::RemoveBalancer { app } => {
                self.proxies.remove(&app);
                self.metrics.forget_app(app.as_str());
                self.restarts.retain(|slot, _| slot.app != app);
                self.app_errors.remove(&app);
            }
            Action::Event(event) => self.on_event(event),
        }
    }

    /// Logs an event and counts it in the metrics.
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
            Event::TrialFailed { slot, version, reason } => {
                tracing::error!(slot = %slot, version, "the new version failed here: {reason}; its rollout fails");
            }
            Event::RolloutStarted { app, from, to } => {
                tracing::info!(app = %app, from, to, "rollout started");
                self.metrics.rollouts.get_or_create(&RolloutLabel::new(app.as_str(), "started")).inc();
            }
            Event::RolloutEnded { app, version, outcome, reverted_to } => {
                let result = match (&outcome, reverted_to) {
                    (Outcome::Completed, _) => "completed",
                    (Outcome::Failed { .. }, Some(_)) => "reverted",
                    (Outcome::Failed { .. }, None) => "failed",
                };
                match &outcome {
                    Outcome::Completed => tracing::info!(app = %app, version, "rollout completed"),
                    Outcome::Failed { reason } => {
                        tracing::error!(app = %app, version, ?reverted_to, "rollout failed: {reason}")
                    }
                }
                self.metrics.rollouts.get_or_create(&RolloutLabel::new(app.as_str(), result)).inc();
            }
            Event::Scaled { app, decision } => {
                tracing::info!(app = %app, ?decision, "scaled");
                self.metrics.scale_events.get_or_create(&AppLabel::new(app.as_str())).inc();
            }
            Event::BadMessage { from, error } => {
                self.metrics.gossip_rejected.get_or_create(&InputLabel { input: "undecodable" }).inc();
                if self.rejections_logged.allow(from.as_ref().map_or("", |n| n.as_str())) {
                    tracing::warn!(peer = ?from, "bad message: {error} (logged once a minute per peer)");
                }
            }
            Event::Refused { from, input, reason } => {
                self.metrics.gossip_rejected.get_or_create(&InputLabel { input }).inc();
                if self.rejections_logged.allow(from.as_ref().map_or("", |n| n.as_str())) {
                    tracing::warn!(peer = ?from, "{input} refused: {reason} (logged once a minute per peer)");
                }
            }
            Event::KeptUnconfirmed { containers } => tracing::warn!(
                containers,
                "found containers of this node for apps it does not know, and no desired state in {}: they are \
                 kept until an operator's command (apply, scale, rm) or a peer's registry says what should run",
                self.config.data_dir.display()
            ),
            Event::Unschedulable { slots } => {
                for (slot, reason) in slots {
                    tracing::warn!(slot = %slot, "unschedulable: {reason}");
                }
            }
        }
    }

    /// The cluster as this node sees it: its own slots (claims and back-offs included), every
    /// slot the statuses of its live peers list, and the desired slots running nowhere.
    fn status(&self) -> StatusJson {
        let apps = self.node.apps();
        let me = self.node.id();
        let local = self.node.local_statuses();
        let mut slots: Vec<SlotStatusJson> = local
            .iter()
            .map(|c| SlotStatusJson {
                app: c.slot.app.to_string(),
                slot: c.slot.index,
                node: me.to_string(),
                host_port: c.host_port,
                health: health_name(c.state).to_owned(),
                requests_per_s: self.proxies.rate(&c.slot),
                restarts: Some(self.restarts.get(&c.slot).copied().unwrap_or(0)),
                version: c.version,
                ready: c.ready,
                gpus: GpuJson::list(&c.gpus),
                reason: None,
            })
            .collect();
        let mut nodes = vec![NodeStatusJson {
            name: me.to_string(),
            state: "alive".to_owned(),
            addr: self.node.config().addr.clone(),
            slots: local.len(),
            gpus: self.node.config().gpus,
            gpu_model: self.node.config().gpu_model.clone(),
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
                gpus: status.spec.gpus,
                gpu_model: status.spec.gpu_model.clone(),
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
                    version: c.version,
                    ready: c.ready,
                    gpus: GpuJson::list(&c.gpus),
                    reason: None,
                });
            }
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let unschedulable: BTreeMap<&SlotId, &Unplaceable> =
            self.node.unschedulable().iter().map(|(s, r)| (s, r)).collect();
        for app in &apps {
            for slot in app.slots() {
                if !slots.iter().any(|s| s.app == slot.app.as_str() && s.slot == slot.index) {
                    slots.push(SlotStatusJson {
                        app: slot.app.to_string(),
                        slot: slot.index,
                        node: "-".to_owned(),
                        health: "unplaced".to_owned(),
                        reason: unschedulable.get(&slot).map(|r| r.to_string()),
                        ..Default::default()
                    });
                }
            }
        }
        slots.sort_by(|a, b| (&a.app, a.slot, &a.node, a.version).cmp(&(&b.app, b.slot, &b.node, b.version)));
        StatusJson {
            node: me.to_string(),
            generation: self.node.config().generation,
            registry_hash: format!("{:016x}", self.node.registry().root_hash()),
            adopted: self.adopted,
            apps: apps
                .iter()
                .map(|a| AppStatusJson {
                    name: a.name.to_string(),
                    image: a.image.clone(),
                    port: a.port,
                    replicas: a.replicas,
                    error: self.app_errors.get(&a.name).cloned(),
                    ..self.rollout_json(&a.name)
                })
                .collect(),
            slots,
            nodes,
        }
    }
}

impl Driver {
    /// What the status says of `app`'s versions and rollout.
    fn rollout_json(&self, app: &AppName) -> AppStatusJson {
        let Some(view) = self.node.rollout_view(app) else { return AppStatusJson::default() };
        let spec = &view.spec;
        let outcome = |version: u64| match view.record.as_ref().and_then(|r| r.outcome(version)) {
            Some(Outcome::Completed) => "completed".to_owned(),
            Some(Outcome::Failed { reason }) => format!("failed: {reason}"),
            None => String::new(),
        };
        let cause = |c: Cause| match c {
            Cause::Apply => "apply".to_owned(),
            Cause::Restart => "restart".to_owned(),
            Cause::Undo { to } => format!("undo to {to}"),
        };
        let mut versions: Vec<VersionJson> = spec
            .history
            .iter()
            .map(|r| VersionJson {
                version: r.version,
                image: r.template.image.clone(),
                cause: cause(r.cause),
                outcome: outcome(r.version),
            })
            .collect();
        versions.push(VersionJson {
            version: spec.version,
            image: spec.image.clone(),
            cause: cause(spec.cause),
            outcome: outcome(spec.version),
        });
        let u = &spec.update;
        let rollout = match view.phase {
            Phase::Steady => "steady",
            Phase::Rolling if u.canary > 0 && !spec.promoted => "canary",
            Phase::Rolling => "rolling",
            Phase::Paused => "paused",
            Phase::Reverting { .. } => "reverting",
        };
        AppStatusJson {
            version: spec.version,
            running_version: view.running,
            rollout: rollout.to_owned(),
            versions,
            update: Some(UpdateJson {
                max_surge: u.max_surge,
                max_unavailable: u.max_unavailable,
                min_healthy_ms: u.min_healthy_ms,
                healthy_deadline_ms: u.healthy_deadline_ms,
                canary: u.canary,
                promoted: spec.promoted,
            }),
            ..Default::default()
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
