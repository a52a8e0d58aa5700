//! The agent's background jobs, one `spawn_*` each: each runs on its own tokio task and reaches
//! the node only as an [`Input`] on the agent's channel.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use canteen_core::model::{AppSpec, SlotId};
use canteen_core::node::ContainerEvent;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::{DATAGRAM_BYTES_MAX, Input, short};
use crate::docker::Docker;
use crate::metrics::Metrics;
use crate::proxy::Proxies;

/// Hands every gossip datagram received to the node, until the agent stops.
pub fn spawn_gossip_receiver(socket: Arc<UdpSocket>, tx: mpsc::Sender<Input>, metrics: Arc<Metrics>) {
    tokio::spawn(async move {
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
    (slot, app, host_port, generation): (SlotId, Box<AppSpec>, u16, u64),
) {
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
    path: String,
    timeout_ms: u64,
) {
    tokio::spawn(async move {
        let outcome = crate::probe::probe(ip, host_port, &path, timeout_ms).await;
        let _ = tx.send(Input::Probe { container, outcome }).await;
    });
}
