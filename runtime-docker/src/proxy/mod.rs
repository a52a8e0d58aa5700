//! The balancers: one per app on its published port, forwarding each HTTP request (or each TCP
//! connection, for `protocol = "tcp"`) to a healthy replica chosen by core's [`Balancer`].
//!
//! The node decides which replicas are backends ([`Proxies::set_backends`]); a balancer only
//! picks among them, and ejects a backend that refuses connections at once (until the node's
//! next list, or 5 s, whichever is first).
//!
//! The balancers run on their own threads, one per core the agent may use, each with a
//! single-threaded runtime, its own accept loop on every app's listener and its own pool of
//! backend connections: a request is read, forwarded and answered on one thread, with no work
//! stealing and no wake-up across threads (the agent's multi-threaded runtime cost about two
//! context switches per request when pinned to one core).
//!
//! # Layout
//!
//! - `pick`: one app's picking state, shared by its connections.
//! - `http`: the HTTP balancer (HTTP/1.1 and h2c from clients, upgrades as tunnels).
//! - `body`: bodies streaming through, with inactivity timeouts and the kept copy for retries.
//! - `pool`: kept-alive connections to backends.
//! - `tcp`: the TCP balancer.
//!
//! [`Balancer`]: canteen_core::balance::Balancer

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use canteen_core::model::{AppName, Frontend, Protocol, SlotId};
use canteen_core::node::Backend;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::metrics::{AppLabel, Metrics};

mod body;
mod http;
mod pick;
mod pool;
mod tcp;
#[cfg(test)]
mod tests;

use pick::AppProxy;
use pool::Pool;

/// A backend ejected after a connection error comes back after this long at most.
const EJECTION_MS: u64 = 5000;
/// Connecting to a backend longer than this is a connection failure.
const CONNECT_TIMEOUT_MS: u64 = 1000;
/// Idle pooled connections to backends are closed after this.
const POOL_IDLE_MS: u64 = 30_000;
/// Idle connections kept per backend, and by one balancer thread for all backends; more are
/// closed when they finish. The pool keeps as many as were in flight at once (the freshest are
/// reused first, the rest age out after `POOL_IDLE_MS`): with at most 4 per backend, a backend
/// with 11 requests in flight had its balancer connect afresh for 158 of every 1,000 requests.
/// An idle connection costs about 15 KB of buffers, so the thread's budget bounds the memory a
/// burst over many replicas leaves behind: 30 replicas under 64 client connections kept 400
/// idle with only the per-backend bound (agent RSS 28 MiB), and the agent's peak RSS was 19.6
/// to 20.2 MiB with 64 a thread, 17.5 to 17.9 MiB with 32 (`scripts/bench-docker memory`).
const POOL_IDLE_PER_BACKEND_MAX: usize = 64;
const POOL_IDLE_MAX: usize = 32;
/// Read buffer of one connection, either side: enough for any sane request head, and it keeps
/// the agent's memory flat under many connections (bodies stream through in chunks).
const CONNECTION_BUFFER_BYTES_MAX: usize = 16 * 1024;
/// Most balancer threads, whatever the cores.
const WORKERS_MAX: usize = 16;
/// Streams one HTTP/2 client connection may have open at once: each is a request in flight,
/// which may hold a kept body of up to `limits::RETRY_BODY_BYTES_MAX`.
const H2_STREAMS_MAX: u32 = 128;

/// A client connection is closed when it stays idle this long between requests (hyper's header
/// read timeout runs from the end of each response until the next request's head is in, so it
/// is an idle timeout too), or takes this long to send a request head. A body, either way, that
/// moves nothing for this long is cut (408 for a request body not yet answered). Without it,
/// clients that open connections and go quiet would hold the proxy's tasks and descriptors
/// forever; a slow body that keeps moving is not cut, however long it takes.
const CLIENT_IDLE_MS: u64 = 30_000;
/// An idempotent request sent to a backend that has since left the balancer (its node declared
/// down, its slot moved or drained) and has not answered this long after it was sent is sent
/// again to another replica. A node that vanished (a crash, a partition) never answers what it
/// was sent on a kept-alive connection: without this, those requests hung until the client gave
/// up (`scripts/lab`: 9 to 15 requests per crash or partition, at the client's 5 s timeout).
/// As long as the connect timeout: a drained replica's idempotent request slower than this is
/// answered by another replica instead, which idempotence allows.
const ABANDON_AFTER_MS: u64 = CONNECT_TIMEOUT_MS;
/// Most client connections the balancers hold at once, all apps together; one more is closed
/// at once. Stalled clients (each held `CLIENT_IDLE_MS` at most) then cannot take every
/// descriptor of the agent: with a backend connection each, and the API's, this stays under
/// the 20,000 a process gets here by default.
const CLIENT_CONNECTIONS_MAX: usize = 8192;

/// A backend as the balancer knows it.
type Target = Arc<Replica>;

/// A replica behind a balancer: its slot and address (what identifies it, in that order), and
/// the requests sent to it since the last report.
#[derive(Debug)]
struct Replica {
    slot: SlotId,
    addr: SocketAddr,
    sent: std::sync::atomic::AtomicU64,
}

impl Replica {
    fn new(slot: SlotId, addr: SocketAddr) -> Target {
        Arc::new(Replica { slot, addr, sent: std::sync::atomic::AtomicU64::new(0) })
    }

    fn key(&self) -> (&SlotId, SocketAddr) {
        (&self.slot, self.addr)
    }
}

impl PartialEq for Replica {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Replica {}

impl PartialOrd for Replica {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Replica {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// Why a balancer could not be opened. Nothing changed: the app has no balancer on this node.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The published port is taken or not allowed.
    #[error("app {app}: cannot listen on {addr}: {error}")]
    Listen {
        /// The app.
        app: AppName,
        /// Where.
        addr: SocketAddr,
        /// What the system said.
        error: std::io::Error,
    },
}

struct Running {
    proxy: Arc<AppProxy>,
    frontend: Frontend,
    /// One accept loop per worker.
    listeners: Vec<JoinHandle<()>>,
    /// The listening socket, kept to serve the port again at once when the app's protocol
    /// changes (the accept loops drop their descriptors only once their threads see the abort).
    socket: std::net::TcpListener,
}

impl Running {
    fn close(&self) {
        for l in &self.listeners {
            l.abort();
        }
    }
}

/// One balancer thread: its runtime and its backend connections.
struct Worker {
    handle: tokio::runtime::Handle,
    pool: Arc<Pool>,
    /// Dropped (with [`Proxies`]): the thread's runtime ends.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Worker {
    fn start(index: usize) -> std::io::Result<Worker> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new().name(format!("canteen-proxy-{index}")).spawn(move || {
            runtime.block_on(async {
                let _ = stopped.await;
            });
        })?;
        Ok(Worker { handle, pool: Arc::new(Pool::default()), _stop: stop })
    }
}

/// Every app's balancer on this node.
pub struct Proxies {
    ip: IpAddr,
    workers: Vec<Worker>,
    metrics: Arc<Metrics>,
    apps: Mutex<BTreeMap<AppName, Running>>,
    seed: u64,
    /// [`CLIENT_IDLE_MS`]; tests shorten it.
    client_idle: Duration,
    last_report: Mutex<Instant>,
    /// Requests per second per slot over the last report period.
    rates: Mutex<BTreeMap<SlotId, f64>>,
    /// Room for client connections, shared by every balancer ([`CLIENT_CONNECTIONS_MAX`]).
    slots: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Proxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxies").field("ip", &self.ip).finish_non_exhaustive()
    }
}

impl Proxies {
    /// No balancers yet; they will listen on `ip`. Starts the balancers' threads, one per core
    /// this process may run on ([`WORKERS_MAX`] at most).
    pub fn new(ip: IpAddr, metrics: Arc<Metrics>, seed: u64) -> std::io::Result<Proxies> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()).min(WORKERS_MAX);
        let workers = (0..cores).map(Worker::start).collect::<std::io::Result<Vec<_>>>()?;
        Ok(Proxies {
            ip,
            workers,
            metrics,
            apps: Mutex::new(BTreeMap::new()),
            seed,
            client_idle: Duration::from_millis(CLIENT_IDLE_MS),
            last_report: Mutex::new(Instant::now()),
            rates: Mutex::new(BTreeMap::new()),
            slots: Arc::new(tokio::sync::Semaphore::new(CLIENT_CONNECTIONS_MAX)),
        })
    }

    /// The balancer of `app` listens on `frontend.port`, speaks `frontend.protocol` and sends
    /// requests to exactly `backends`, picked by `frontend.picker`. Opens the balancer when it
    /// is new (or its port or protocol changed).
    pub fn set_backends(&self, app: &AppName, frontend: Frontend, backends: &[Backend]) -> Result<(), ProxyError> {
        let targets: Vec<Target> = backends
            .iter()
            .filter_map(|b| {
                let ip: IpAddr = b.addr.parse().ok()?;
                Some(Replica::new(b.slot.clone(), SocketAddr::new(ip, b.host_port)))
            })
            .collect();
        self.metrics.replicas.get_or_create(&AppLabel::new(app.as_str())).set(targets.len() as i64);
        let mut apps = self.apps.lock().expect("proxies lock");
        let mut socket = None;
        if let Some(running) = apps.get(app)
            && (running.frontend.port, running.frontend.protocol) != (frontend.port, frontend.protocol)
        {
            running.close();
            let running = apps.remove(app).expect("just seen");
            if running.frontend.port == frontend.port {
                socket = Some(running.socket);
            }
        }
        if let Some(running) = apps.get_mut(app) {
            running.proxy.set(frontend.picker, self.seed, targets, frontend.max_body_bytes);
            running.frontend = frontend;
            return Ok(());
        }
        let addr = SocketAddr::new(self.ip, frontend.port);
        let listen_error = |error| ProxyError::Listen { app: app.clone(), addr, error };
        let std_listener = match socket {
            Some(socket) => socket,
            None => std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(listen_error)?,
        };
        let label = AppLabel::new(app.as_str());
        let metrics = (
            self.metrics.requests.get_or_create(&label).clone(),
            self.metrics.errors.get_or_create(&label).clone(),
            self.metrics.latency.get_or_create(&label).clone(),
        );
        let proxy =
            Arc::new(AppProxy::new(app.clone(), metrics, frontend.picker, self.seed, targets, frontend.max_body_bytes));
        tracing::info!(app = %app, %addr, protocol = frontend.protocol.name(), "balancer listening");
        // Every worker accepts on the one socket (a descriptor each): whichever is free first
        // takes the connection, and serves it to its end.
        let mut listeners = Vec::with_capacity(self.workers.len());
        for worker in &self.workers {
            let _entered = worker.handle.enter();
            let listener = match std_listener.try_clone().and_then(TcpListener::from_std) {
                Ok(l) => l,
                Err(error) => {
                    listeners.iter().for_each(JoinHandle::abort);
                    return Err(listen_error(error));
                }
            };
            let (proxy, slots) = (proxy.clone(), self.slots.clone());
            listeners.push(match frontend.protocol {
                Protocol::Http => {
                    let (pool, idle) = (worker.pool.clone(), self.client_idle);
                    worker.handle.spawn(http::accept_loop(listener, proxy, pool, idle, slots))
                }
                Protocol::Tcp => worker.handle.spawn(tcp::accept_loop(listener, proxy, slots)),
            });
        }
        apps.insert(app.clone(), Running { proxy, frontend, listeners, socket: std_listener });
        Ok(())
    }

    /// Closes the balancer of `app`; requests in flight finish.
    pub fn remove(&self, app: &AppName) {
        if let Some(running) = self.apps.lock().expect("proxies lock").remove(app) {
            running.close();
            tracing::info!(app = %app, "balancer closed");
        }
        self.metrics.replicas.get_or_create(&AppLabel::new(app.as_str())).set(0);
    }

    /// The requests (connections, for TCP) each app received since the last call, for the
    /// autoscaler. Also computes each slot's request rate, lets ejected backends back in after
    /// [`EJECTION_MS`], and closes backend connections idle too long.
    pub fn take_counts(&self) -> Vec<(AppName, u64)> {
        let elapsed_s = {
            let mut last = self.last_report.lock().expect("report lock");
            let e = last.elapsed().as_secs_f64().max(0.001);
            *last = Instant::now();
            e
        };
        let apps = self.apps.lock().expect("proxies lock");
        let mut counts = Vec::with_capacity(apps.len());
        let mut rates = BTreeMap::new();
        for (app, running) in apps.iter() {
            counts.push((app.clone(), running.proxy.report(elapsed_s, &mut rates)));
        }
        drop(apps);
        *self.rates.lock().expect("rates lock") = rates;
        for worker in &self.workers {
            worker.pool.reap();
        }
        counts
    }

    /// Requests per second a slot received over the last report period.
    pub fn rate(&self, slot: &SlotId) -> f64 {
        self.rates.lock().expect("rates lock").get(slot).copied().unwrap_or(0.0)
    }

    /// Closes every balancer.
    pub fn close_all(&self) {
        let mut apps = self.apps.lock().expect("proxies lock");
        for (_, running) in std::mem::take(&mut *apps) {
            running.close();
        }
    }
}

/// The next client connection with room for it, or `None` (after a pause, on an accept error;
/// at once, closing it, when every slot is taken).
async fn accept_one(
    listener: &TcpListener,
    app: &AppName,
    slots: &Arc<tokio::sync::Semaphore>,
) -> Option<(TcpStream, SocketAddr, tokio::sync::OwnedSemaphorePermit)> {
    let (stream, peer) = match listener.accept().await {
        Ok(accepted) => accepted,
        Err(e) => {
            tracing::warn!(app = %app, "accept: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
            return None;
        }
    };
    // Full: closed at once, so that stalled clients hold no more descriptors.
    let permit = slots.clone().try_acquire_owned().ok()?;
    let _ = stream.set_nodelay(true);
    Some((stream, peer, permit))
}

/// Passes bytes both ways between a client and a replica until both sides are done (a
/// WebSocket after its 101, a TCP service's connection). A failure on either side ends both.
async fn tunnel<A, B>(mut client: A, mut replica: B, proxy: &AppProxy, target: &Target)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut replica).await {
        tracing::debug!(app = %proxy.app, slot = %target.slot, "tunnel ended: {e}");
    }
}
