//! The node's inputs and outputs besides packets: the actions a driver carries out, the
//! events it logs, what the container runtime reports and what an operator commands.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::autoscale::ScaleDecision;
use crate::health::HealthState;
use crate::membership::PeerAddr;
use crate::model::{AppName, AppSpec, Frontend, GpuShare, HealthKind, NodeId, SlotId};
use crate::registry::RegistryError;
use crate::rollout::Outcome;
use crate::schedule::Unplaceable;
use crate::time::Time;

use super::timers::{Timer, Timers};

/// A replica a balancer may send requests to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Backend {
    /// The node running it.
    pub node: NodeId,
    /// The host to connect to (shared by every backend of its node: cheap to clone).
    pub addr: Arc<str>,
    /// The port to connect to.
    pub host_port: u16,
    /// The slot it serves.
    pub slot: SlotId,
}

/// What the node asks its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send `bytes` to the peer at `to`; losing them is allowed. The driver hands them to that
    /// peer's [`super::Node::handle_message`].
    Send {
        /// The peer's gossip address ([`super::NodeConfig::gossip_addr`]).
        to: PeerAddr,
        /// An encoded [`super::Packet`].
        bytes: Vec<u8>,
    },
    /// Start a container for `slot` listening on `host_port`; answer with
    /// [`ContainerEvent::Started`] or [`ContainerEvent::StartFailed`] carrying `generation`.
    StartContainer {
        /// The slot.
        slot: SlotId,
        /// The app's spec: image, command, env, resources, volume.
        app: Box<AppSpec>,
        /// The host port, from the node's range; the same on every restart of the slot.
        host_port: u16,
        /// The GPUs it holds, by index on this node; the same on every restart.
        gpus: Vec<GpuShare>,
        /// Identifies this start; a late answer to an older one is ignored.
        generation: u64,
    },
    /// Stop and remove a container, after letting it finish what it serves for `drain_ms`.
    StopContainer {
        /// The runtime's id.
        container: String,
        /// The slot it served.
        slot: SlotId,
        /// How long to let in-flight requests finish first.
        drain_ms: u64,
    },
    /// Probe a container's health; answer with [`super::Node::handle_probe_result`].
    Probe {
        /// The runtime's id.
        container: String,
        /// The host port it listens on.
        host_port: u16,
        /// An HTTP GET of `path`, or a TCP connect (never `None`: the node answers those).
        kind: HealthKind,
        /// The HTTP path.
        path: String,
        /// A probe not answered by then is a [`crate::health::ProbeOutcome::Timeout`].
        timeout_ms: u64,
    },
    /// The balancer for `app` must send requests to exactly these backends from now on.
    SetBackends {
        /// The app.
        app: AppName,
        /// Where the balancer listens, how it picks, what it speaks.
        frontend: Frontend,
        /// The healthy replicas, on every live node.
        backends: Vec<Backend>,
    },
    /// The app was removed: close its balancer.
    RemoveBalancer {
        /// The app.
        app: AppName,
    },
    /// Something worth a log line or a metric.
    Event(Event),
}

/// What happened, for logs, metrics and the simulator's checkers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// This node asked for a slot to be started.
    Starting {
        /// The slot.
        slot: SlotId,
        /// On this host port.
        host_port: u16,
    },
    /// A container turned healthy or unhealthy.
    Health {
        /// The slot.
        slot: SlotId,
        /// The new state.
        state: HealthState,
    },
    /// A container failed (unhealthy or exited) and will be started again.
    Restarting {
        /// The slot.
        slot: SlotId,
        /// When.
        at: Time,
    },
    /// A slot failed past its restart budget here; it will be placed elsewhere.
    GaveUp {
        /// The slot.
        slot: SlotId,
    },
    /// A new version's replica on trial failed here: its rollout fails.
    TrialFailed {
        /// The slot.
        slot: SlotId,
        /// The version it ran.
        version: u64,
        /// What happened.
        reason: String,
    },
    /// An operator's command made a new version of an app: a rollout starts.
    RolloutStarted {
        /// The app.
        app: AppName,
        /// The version its containers ran.
        from: u64,
        /// The new one.
        to: u64,
    },
    /// The app's coordinator gave its verdict on a version's rollout.
    RolloutEnded {
        /// The app.
        app: AppName,
        /// The version.
        version: u64,
        /// How it ended.
        outcome: Outcome,
        /// The version the app goes back to, when it failed and auto-reverts.
        reverted_to: Option<u64>,
    },
    /// The coordinator changed an app's replica count.
    Scaled {
        /// The app.
        app: AppName,
        /// What it decided.
        decision: ScaleDecision,
    },
    /// A peer sent bytes that do not decode; they were dropped.
    BadMessage {
        /// The peer, when the packet said who it was from.
        from: Option<NodeId>,
        /// What the decoder said.
        error: String,
    },
    /// A peer's input that decodes but is refused: an entry or a load report that would break
    /// what this node derives, or grow it past its bounds (`node::admission`). (Members are
    /// refused as they decode: a `BadMessage`.) Nothing changed. A driver counts these by `input` and logs them
    /// with a rate limit: a peer may send many.
    Refused {
        /// The peer the packet names.
        from: Option<NodeId>,
        /// What was refused: `entry` or `load`.
        input: &'static str,
        /// Why.
        reason: String,
    },
    /// The node started with no desired state but found `containers` of its own for apps it
    /// does not know: it keeps them, rather than stop what a lost data directory forgot, until
    /// the operator issues a command or a peer's registry is found equal to this node's.
    KeptUnconfirmed {
        /// How many.
        containers: usize,
    },
    /// Slots that fit nowhere, reported whenever the set changes (empty when all fit again).
    Unschedulable {
        /// Each slot with the reason.
        slots: Vec<(SlotId, Unplaceable)>,
    },
}

/// What the container runtime reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerEvent {
    /// A start asked for by [`Action::StartContainer`] succeeded.
    Started {
        /// The slot.
        slot: SlotId,
        /// The generation of the start.
        generation: u64,
        /// The runtime's id.
        container: String,
    },
    /// A start failed (image missing, port taken, ...).
    StartFailed {
        /// The slot.
        slot: SlotId,
        /// The generation of the start.
        generation: u64,
        /// What the runtime said.
        error: String,
    },
    /// A container exited on its own.
    Exited {
        /// The runtime's id.
        container: String,
    },
    /// At start-up: the containers this node already runs (found by their labels).
    Adopted {
        /// Each one found.
        containers: Vec<Found>,
    },
}

/// A container found running at start-up, as its labels describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The slot it serves.
    pub slot: SlotId,
    /// The runtime's id.
    pub container: String,
    /// The host port it is published on.
    pub host_port: u16,
    /// The version of its app it runs (0 when unknown).
    pub version: u64,
    /// The GPUs it was given.
    pub gpus: Vec<GpuShare>,
}

/// What an operator asks of the cluster, through any node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Create or replace an app.
    Apply(Box<AppSpec>),
    /// Remove an app and all its replicas.
    Remove(AppName),
    /// Set an app's replica count.
    Scale(AppName, u32),
    /// A rolling restart: a new version with the same spec, fresh containers.
    Restart(AppName),
    /// A new version with the spec of an earlier one (the one before the current, when
    /// `None`).
    Undo(AppName, Option<u64>),
    /// The version's canaries are good: the rollout goes on to every slot.
    Promote(AppName),
}

/// Why a command was refused. The registry is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The spec is invalid, alone or next to the apps already applied.
    #[error("app {app}: {problem}")]
    Invalid {
        /// The app.
        app: String,
        /// What is wrong.
        problem: String,
    },
    /// No such app.
    #[error("no app named {0:?}")]
    UnknownApp(String),
    /// The command does not apply to the app as it is.
    #[error("app {app}: {problem}")]
    NotApplicable {
        /// The app.
        app: String,
        /// Why.
        problem: String,
    },
    /// The registry refused the write.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Where the node's parts put what they want done: actions for the driver, drained after every
/// input, and timers for the node itself. One sink, so that effects leave in the order they
/// were decided.
#[derive(Debug, Default)]
pub(super) struct Effects {
    /// What the driver is to carry out, in order.
    pub(super) actions: VecDeque<Action>,
    /// When the node is to be woken, and for what.
    pub(super) timers: Timers,
}

impl Effects {
    /// Queues an action for the driver.
    pub(super) fn push(&mut self, action: Action) {
        self.actions.push_back(action);
    }

    /// Queues an event for the driver's logs and metrics.
    pub(super) fn event(&mut self, event: Event) {
        self.actions.push_back(Action::Event(event));
    }

    /// Sets `timer` to fire at `at`.
    pub(super) fn schedule(&mut self, at: Time, timer: Timer) {
        self.timers.schedule(at, timer);
    }
}
