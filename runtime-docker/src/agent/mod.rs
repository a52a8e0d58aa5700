//! The agent: one tokio task owns the `Node` and is the only caller of its `handle_*` and
//! `poll_*`. Everything else (Docker, probes, the proxies' request counts, the API) reaches it
//! as an [`Input`] on one bounded channel; after every input the task drains every action and
//! hands each effect to a Docker, probe, proxy or gossip job. Time is Unix milliseconds.
//!
//! The cluster protocol runs on one UDP socket bound to `gossip_addr`: every `Action::Send` is
//! one datagram to the peer's gossip address, and every datagram received goes to
//! `Node::handle_message` (the packet names its sender: the source address is never needed).
//! Membership is SWIM, joined through the seeds (`join`, `--join`); a node alone is a cluster
//! of one.
//!
//! # Layout
//!
//! - `setup`: [`start`]: Docker, the persisted state, the sockets, the node, adoption.
//! - `driver`: the task that owns the node: its loop, the actions carried out, the status.
//! - `tasks`: the background jobs, one `spawn_*` each (gossip receiver, exit watcher, traffic
//!   reports, container starts and stops, probes).
//! - `persist`: the desired state restored at start and persisted when it changed.

use std::sync::Arc;

use canteen_core::health::ProbeOutcome;
use canteen_core::model::{AppName, AppSpec, SlotId};
use canteen_core::node::{Command, ContainerEvent};
use canteen_core::time::Time;
use tokio::sync::{mpsc, oneshot};

mod driver;
mod persist;
mod setup;
mod tasks;

pub use driver::Stopped;
pub use setup::start;

use crate::api::StatusJson;
use crate::config::AgentConfig;
use crate::docker::{Docker, DockerError};
use crate::metrics::Metrics;
use crate::proxy::Proxies;
use crate::state::StateError;

/// Inputs waiting for the node; the senders wait when it is full.
const INPUT_QUEUE_MAX: usize = 4096;
/// How often the desired state is compared with the one on disk, and written when it changed.
const PERSIST_INTERVAL_MS: u64 = 1000;
/// The largest gossip datagram received; a larger one is cut short by the kernel and refused
/// by the node as undecodable. Core keeps every packet it sends under
/// `limits::PACKET_BYTES_MAX`, less than this (and UDP over IPv4 carries 65,507 bytes at
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
    /// The balancers' threads could not be started.
    #[error("cannot start the balancers' threads: {0}")]
    Proxies(std::io::Error),
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
        reply: oneshot::Sender<Result<(), CommandFailure>>,
    },
    /// What `canteen status` shows.
    Status {
        /// Where to send it.
        reply: oneshot::Sender<StatusJson>,
    },
    /// Every app's spec as last applied (`canteen apply --dry-run`).
    Specs {
        /// Where to send them.
        reply: oneshot::Sender<Vec<AppSpec>>,
    },
}

/// Why an operator's commands failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandFailure {
    /// The node refused one (bad input); the ones before it took effect.
    Refused(String),
    /// The desired state could not be written to the data directory.
    NotPersisted(String),
    /// The agent is stopping.
    Stopped,
}

impl std::fmt::Display for CommandFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandFailure::Refused(e) | CommandFailure::NotPersisted(e) => f.write_str(e),
            CommandFailure::Stopped => f.write_str("the agent stopped"),
        }
    }
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
    /// The API token every request must carry (`api_token`), if any.
    pub token: Option<Arc<str>>,
}

impl Handle {
    /// Applies `commands` in order through the node.
    pub async fn commands(&self, commands: Vec<Command>) -> Result<(), CommandFailure> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Input::Commands { commands, reply }).await.map_err(|_| CommandFailure::Stopped)?;
        rx.await.map_err(|_| CommandFailure::Stopped)?
    }

    /// The agent's status.
    pub async fn status(&self) -> Option<StatusJson> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Input::Status { reply }).await.ok()?;
        rx.await.ok()
    }

    /// Every app's spec as last applied, with its version: what a dry run compares a file to.
    pub async fn specs(&self) -> Option<Vec<AppSpec>> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Input::Specs { reply }).await.ok()?;
        rx.await.ok()
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
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
