//! The agent's start: Docker, the persisted state, the API and gossip sockets, the node, the
//! containers adopted, the background jobs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use canteen_core::membership::PeerAddr;
use canteen_core::node::{ContainerEvent, Found, Node};
use canteen_core::seal::{Keyring, Opener, Sealer, sender_of};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::driver::{Driver, Stopped};
use super::{AgentError, Handle, INPUT_QUEUE_MAX, now, seed, short, tasks};
use crate::config::AgentConfig;
use crate::docker::Docker;
use crate::metrics::Metrics;
use crate::proxy::Proxies;
use crate::state::{self, StateError};

/// Starts the agent: connects to Docker, restores the persisted apps, adopts the containers
/// this node already runs, opens the API and the gossip socket, joins the cluster through
/// `seeds` (none: a cluster of one, that others may join), and runs the node's task until
/// `shutdown` resolves. Returns once the API listens; the returned future ends when the agent
/// stops.
pub async fn start(
    config: AgentConfig,
    seeds: Vec<SocketAddr>,
) -> Result<(Handle, impl std::future::Future<Output = Stopped> + Send + 'static, oneshot::Sender<()>), AgentError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|error| StateError::Io { path: config.data_dir.clone(), error })?;
    let identity = state::identity(&config.data_dir)?;
    let docker = Docker::connect(config.node_id(), &identity).await?;
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

    let keys = config.cluster_keys("(the agent's config)").map_err(|e| AgentError::Config(e.to_string()))?;
    let keyring = if keys.is_empty() {
        if !advertised.ip().is_loopback() || !config.gossip_addr.ip().is_loopback() {
            tasks::spawn_insecure_warning(advertised);
        }
        None
    } else {
        Some(Arc::new(Keyring::new(&config.cluster_name, &keys).map_err(|e| AgentError::Config(e.to_string()))?))
    };
    let metrics = Arc::new(Metrics::new());
    let seed = seed();
    let proxies = Arc::new(Proxies::new(config.proxy_ip, metrics.clone(), seed).map_err(AgentError::Proxies)?);
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
        sealer: keyring
            .clone()
            .map(|keys| Sealer::new(keys, sender_of(&config.node_name), t.as_millis(), nonce_prefix())),
        rejections_logged: tasks::LogLimiter::default(),
        adopted: 0,
    };
    driver.drain();
    // The desired state first, so adopted containers meet their app's health check.
    driver.restore(persisted);
    driver.persisted = driver.node.desired_version();
    let mut adopted = Vec::new();
    for c in own {
        if c.running {
            tracing::info!(slot = %c.slot, container = %short(&c.id), host_port = c.host_port, version = c.version, "adopting container");
            let (slot, container, host_port, version, gpus) = (c.slot, c.id, c.host_port, c.version, c.gpus);
            adopted.push(Found { slot, container, host_port, version, gpus });
        } else {
            tracing::info!(slot = %c.slot, container = %short(&c.id), "removing exited container");
            let _ = docker.remove(&c.id).await;
        }
    }
    driver.adopted = adopted.len();
    driver.node.handle_container_event(now(), ContainerEvent::Adopted { containers: adopted });
    driver.drain();
    tasks::spawn_gossip_receiver(gossip, tx.clone(), metrics.clone(), keyring.map(Opener::new));
    tasks::spawn_exit_watcher(docker.clone(), tx.clone());
    tasks::spawn_traffic_reports(proxies.clone(), tx.clone(), Duration::from_millis(config.scaling_interval_ms));
    let token = config.api_token("(the agent's config)").map_err(|e| AgentError::Config(e.to_string()))?;
    let handle = Handle {
        token: token.map(Arc::from),
        tx,
        metrics: metrics.clone(),
        config: Arc::new(config.clone()),
        docker: docker.clone(),
        proxies: proxies.clone(),
    };
    let tls = config.api_tls().map_err(|(key, problem)| AgentError::Config(format!("{key}: {problem}")))?;
    tokio::spawn(crate::api::serve(api, handle.clone(), tls.map(tokio_rustls::TlsAcceptor::from)));
    let driver_keyed = driver.sealer.is_some();
    tracing::info!(
        node = %config.node_name,
        api = %config.api_addr,
        gossip = %advertised,
        seeds = ?seeds,
        generation = t.as_millis(),
        keyed = driver_keyed,
        "agent started"
    );
    let (stop_tx, stop_rx) = oneshot::channel();
    Ok((handle, driver.run(rx, stop_rx), stop_tx))
}

/// The first 8 bytes of every nonce this life of the agent seals with (`core::seal`), from the
/// OS's randomness; the time, if the OS gives none, with the process id.
fn nonce_prefix() -> [u8; 8] {
    let mut prefix = [0u8; 8];
    if getrandom::fill(&mut prefix).is_err() {
        prefix = seed().to_le_bytes();
    }
    prefix
}
