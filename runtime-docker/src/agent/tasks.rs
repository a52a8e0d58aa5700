//! The agent's background jobs, one `spawn_*` each: each runs on its own tokio task and reaches
//! the node only as an [`Input`] on the agent's channel.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use canteen_core::model::HealthKind;
use canteen_core::model::{AppSpec, GpuShare, SlotId};
use canteen_core::node::ContainerEvent;
use canteen_core::seal::{OpenError, Opener};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::{DATAGRAM_BYTES_MAX, Input, short};
use crate::docker::Docker;
use crate::metrics::{Metrics, ReasonLabel};
use crate::proxy::Proxies;

/// Hands every gossip datagram received to the node, opened first when the cluster is keyed,
/// until the agent stops. A datagram that does not open is counted and dropped, and logged at
/// most once a minute per source address: a flood of forgeries must not fill the disk.
pub fn spawn_gossip_receiver(
    socket: Arc<UdpSocket>,
    tx: mpsc::Sender<Input>,
    metrics: Arc<Metrics>,
    mut opener: Option<Opener>,
) {
    tokio::spawn(async move {
        let mut buffer = vec![0u8; DATAGRAM_BYTES_MAX];
        let mut logged = LogLimiter::<IpAddr>::default();
        loop {
            match socket.recv_from(&mut buffer).await {
                Ok((n, source)) => {
                    metrics.gossip_received.inc();
                    let packet = match &mut opener {
                        None => buffer[..n].to_vec(),
                        Some(opener) => match opener.open(buffer[..n].to_vec(), super::now().as_millis()) {
                            Ok(packet) => packet,
                            Err(e) => {
                                metrics.gossip_refused.get_or_create(&ReasonLabel { reason: reason(e) }).inc();
                                if logged.allow(&source.ip()) {
                                    tracing::warn!(%source, "gossip datagram refused: {e} (logged once a minute per source)");
                                }
                                continue;
                            }
                        },
                    };
                    if tx.send(Input::Packet(packet)).await.is_err() {
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
    });
}

fn reason(e: OpenError) -> &'static str {
    match e {
        OpenError::Malformed => "malformed",
        OpenError::Unauthentic => "unauthentic",
        OpenError::Replayed => "replayed",
        OpenError::FutureLife => "future_life",
    }
}

/// At most one log line a minute per source (an address, a peer's name), remembering at most
/// [`LogLimiter::SOURCES_MAX`] sources: past that, those not logged in the last minute are
/// forgotten, and while every one was, nothing more is logged.
pub struct LogLimiter<S> {
    last: std::collections::HashMap<S, std::time::Instant>,
    /// When the sources not logged in the last minute may next be swept out: a full table
    /// is swept once a second at most, not at every datagram from a new (spoofed) address.
    next_sweep: std::time::Instant,
}

impl<S> Default for LogLimiter<S> {
    fn default() -> Self {
        LogLimiter { last: std::collections::HashMap::new(), next_sweep: std::time::Instant::now() }
    }
}

impl<S: std::hash::Hash + Eq> LogLimiter<S> {
    const SOURCES_MAX: usize = 4096;
    const EVERY: Duration = Duration::from_secs(60);

    /// Whether a line about `source` may be logged now.
    pub fn allow<Q>(&mut self, source: &Q) -> bool
    where
        S: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ToOwned<Owned = S> + ?Sized,
    {
        let now = std::time::Instant::now();
        if self.last.get(source).is_some_and(|at| now.duration_since(*at) < Self::EVERY) {
            return false;
        }
        if self.last.len() >= Self::SOURCES_MAX && now >= self.next_sweep {
            self.last.retain(|_, at| now.duration_since(*at) < Self::EVERY);
            self.next_sweep = now + Duration::from_secs(1);
        }
        if self.last.len() < Self::SOURCES_MAX {
            self.last.insert(source.to_owned(), now);
            return true;
        }
        false
    }
}

/// Warns once a minute, while the agent runs, that gossip is not keyed on an address others
/// can reach (`gossip_insecure`).
pub fn spawn_insecure_warning(advertised: SocketAddr) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            tracing::warn!(
                gossip = %advertised,
                "gossip_insecure: gossip is not keyed, so anyone who can send a datagram to this address can \
                 command the cluster; give cluster_keys"
            );
        }
    });
}

/// Tells the node of every container of its own that exits, from Docker's event stream.
pub fn spawn_exit_watcher(docker: Docker, tx: mpsc::Sender<Input>) {
    let (exits_tx, mut exits_rx) = mpsc::channel::<String>(256);
    tokio::spawn(docker.watch_exits(exits_tx));
    tokio::spawn(async move {
        while let Some(container) = exits_rx.recv().await {
            if tx.send(Input::Container(ContainerEvent::Exited { container })).await.is_err() {
                return;
            }
        }
    });
}

/// Every `interval`, the requests each balancer received since the last report.
pub fn spawn_traffic_reports(proxies: Arc<Proxies>, tx: mpsc::Sender<Input>, interval: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let counts = proxies.take_counts();
            if tx.send(Input::Traffic(counts)).await.is_err() {
                return;
            }
        }
    });
}

/// Starts a container for `slot` on `host_port`; the outcome goes back as
/// [`Input::StartDone`].
pub fn spawn_start(
    docker: Docker,
    tx: mpsc::Sender<Input>,
    ip: IpAddr,
    (slot, app, host_port, gpus, generation): (SlotId, Box<AppSpec>, u16, Vec<GpuShare>, u64),
) {
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        let result = docker.start(&slot, &app, ip, host_port, &gpus).await.map_err(|e| e.to_string());
        if let Ok(id) = &result {
            let start_ms = started.elapsed().as_millis() as u64;
            tracing::info!(slot = %slot, container = %short(id), host_port, start_ms, "container started");
        }
        let _ = tx.send(Input::StartDone { slot, generation, result }).await;
    });
}

/// Removes `container` after `drain_ms`: the balancers already dropped it, so what it serves
/// finishes first.
pub fn spawn_stop(docker: Docker, container: String, slot: SlotId, drain_ms: u64) {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(drain_ms)).await;
        match docker.remove(&container).await {
            Ok(()) => tracing::info!(slot = %slot, container = %short(&container), "container removed"),
            Err(e) => tracing::error!(slot = %slot, "{e}"),
        }
    });
}

/// Probes `container` on `ip:host_port` at `path`; the outcome goes back as [`Input::Probe`].
pub fn spawn_probe(
    tx: mpsc::Sender<Input>,
    ip: IpAddr,
    container: String,
    host_port: u16,
    (kind, path, timeout_ms): (HealthKind, String, u64),
) {
    tokio::spawn(async move {
        let outcome = crate::probe::probe(kind, ip, host_port, &path, timeout_ms).await;
        let _ = tx.send(Input::Probe { container, outcome }).await;
    });
}
