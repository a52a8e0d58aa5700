//! The balancers: one HTTP proxy per app on its published port, forwarding each request to a
//! healthy replica chosen by core's [`Balancer`].
//!
//! The node decides which replicas are backends ([`Proxies::set_backends`]); the proxy only
//! picks among them, ejects a backend that refuses connections at once (until the node's next
//! list, or 5 s, whichever is first), and retries a request once on another replica when its
//! connection failed before it was sent (any idempotent request that failed before an answer
//! came, too). Connections to backends are pooled and kept alive. Hop-by-hop headers are
//! dropped both ways and `X-Forwarded-For` is set.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use canteen_core::balance::Balancer;
use canteen_core::model::{AppName, PickerKind, SlotId};
use canteen_core::node::Backend;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use crate::metrics::{AppLabel, Metrics};

/// A request body larger than this is refused (413): bodies are buffered so a request can be
/// retried on another replica.
const REQUEST_BODY_BYTES_MAX: usize = 8 * 1024 * 1024;
/// A backend ejected after a connection error comes back after this long at most.
const EJECTION_MS: u64 = 5000;
/// Connecting to a backend longer than this is a connection failure.
const CONNECT_TIMEOUT_MS: u64 = 1000;
/// Idle pooled connections to backends are closed after this.
const POOL_IDLE_MS: u64 = 30_000;
/// Idle connections kept per backend; more are closed when they finish. Under load a finished
/// connection is taken again at once, so the idle set stays small; what this bounds is the
/// pool left behind a burst, which with 16 a backend over 30 replicas was a quarter of the
/// agent's memory (`scripts/bench-docker`: 21 to 23 MiB peak, 16 to 18 with 4).
const POOL_IDLE_PER_BACKEND_MAX: usize = 4;
/// Read buffer of one connection, either side: enough for any sane request head, and it keeps
/// the agent's memory flat under many connections (bodies stream through in chunks).
const CONNECTION_BUFFER_BYTES_MAX: usize = 16 * 1024;

/// A client connection is closed when it stays idle this long between requests (hyper's header
/// read timeout runs from the end of each response until the next request's head is in, so it
/// is an idle timeout too), or takes this long to send a request head; a request body not
/// received within it is answered 408. Without it, clients that open connections and go quiet
/// (or send a body byte by byte) would hold the proxy's tasks and descriptors forever.
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

/// What a proxy answers with.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;
type HttpClient = Client<HttpConnector, Full<Bytes>>;
/// A backend as the balancer knows it: its slot and address.
type Target = Arc<(SlotId, SocketAddr)>;

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

struct Picking {
    balancer: Balancer<Target>,
    /// The node's list, to restore after an ejection.
    listed: Vec<Target>,
    ejected_at: Option<Instant>,
    /// Requests sent to each slot since the last report.
    per_slot: HashMap<SlotId, u64>,
}

/// One app's balancer, shared by its connections.
struct AppProxy {
    app: AppName,
    port: u16,
    /// This app's metrics, looked up once (a family lookup hashes the label on every call).
    requests_metric: Counter,
    errors_metric: Counter,
    latency_metric: Histogram,
    picking: Mutex<Picking>,
    /// Requests since the last report to the node.
    requests: AtomicU64,
    /// Bumped whenever the node sets the backends: requests waiting on a backend look again
    /// whether it is still listed.
    backends_changed: tokio::sync::watch::Sender<u64>,
}

impl AppProxy {
    fn pick(&self, exclude: Option<&Target>) -> Option<Target> {
        let mut p = self.picking.lock().expect("balancer lock");
        let picked = match exclude {
            None => p.balancer.pick(),
            Some(t) => p.balancer.pick_excluding(t),
        }?;
        p.balancer.request_started(&picked);
        *p.per_slot.entry(picked.0.clone()).or_default() += 1;
        Some(picked)
    }

    fn finished(&self, t: &Target) {
        self.picking.lock().expect("balancer lock").balancer.request_finished(t);
    }

    /// Resolves once `t` has left the node's list of backends while another is listed, and
    /// `ABANDON_AFTER_MS` have passed since `sent`; never otherwise.
    async fn abandoned(&self, t: &Target, sent: Instant) {
        let mut changes = self.backends_changed.subscribe();
        loop {
            let gone = || {
                let p = self.picking.lock().expect("balancer lock");
                !p.listed.contains(t) && !p.listed.is_empty()
            };
            if gone() {
                let due = sent + Duration::from_millis(ABANDON_AFTER_MS);
                tokio::time::sleep_until(due.into()).await;
                if gone() {
                    return;
                }
            }
            if changes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    fn eject(&self, t: &Target) {
        let mut p = self.picking.lock().expect("balancer lock");
        if p.balancer.contains(t) {
            tracing::warn!(app = %self.app, slot = %t.0, addr = %t.1, "backend refused the connection: ejected");
            p.balancer.eject(t);
            p.ejected_at = Some(Instant::now());
        }
    }
}

struct Running {
    proxy: Arc<AppProxy>,
    listener: JoinHandle<()>,
}

/// Every app's balancer on this node.
pub struct Proxies {
    ip: IpAddr,
    client: HttpClient,
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
    /// No balancers yet; they listen on `ip`.
    pub fn new(ip: IpAddr, metrics: Arc<Metrics>, seed: u64) -> Proxies {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_millis(CONNECT_TIMEOUT_MS)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_millis(POOL_IDLE_MS))
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(POOL_IDLE_PER_BACKEND_MAX)
            .http1_max_buf_size(CONNECTION_BUFFER_BYTES_MAX)
            .build(connector);
        Proxies {
            ip,
            client,
            metrics,
            apps: Mutex::new(BTreeMap::new()),
            seed,
            client_idle: Duration::from_millis(CLIENT_IDLE_MS),
            last_report: Mutex::new(Instant::now()),
            rates: Mutex::new(BTreeMap::new()),
            slots: Arc::new(tokio::sync::Semaphore::new(CLIENT_CONNECTIONS_MAX)),
        }
    }

    /// The balancer of `app` listens on `port` and sends requests to exactly `backends`, picked
    /// by `picker`. Opens the balancer when it is new; must run inside a tokio runtime.
    pub fn set_backends(
        &self,
        app: &AppName,
        port: u16,
        picker: PickerKind,
        backends: &[Backend],
    ) -> Result<(), ProxyError> {
        let targets: Vec<Target> = backends
            .iter()
            .filter_map(|b| {
                let ip: IpAddr = b.addr.parse().ok()?;
                Some(Arc::new((b.slot.clone(), SocketAddr::new(ip, b.host_port))))
            })
            .collect();
        self.metrics.replicas.get_or_create(&AppLabel::new(app.as_str())).set(targets.len() as i64);
        let mut apps = self.apps.lock().expect("proxies lock");
        if let Some(running) = apps.get(app)
            && running.proxy.port != port
        {
            running.listener.abort();
            apps.remove(app);
        }
        if let Some(running) = apps.get(app) {
            let mut p = running.proxy.picking.lock().expect("balancer lock");
            if p.balancer.kind() != picker {
                p.balancer = Balancer::new(picker, self.seed);
            }
            p.balancer.set_backends(targets.iter().map(|t| (t.clone(), 1)));
            p.listed = targets;
            p.ejected_at = None;
            drop(p);
            running.proxy.backends_changed.send_modify(|g| *g += 1);
            return Ok(());
        }
        let addr = SocketAddr::new(self.ip, port);
        let std_listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|error| ProxyError::Listen { app: app.clone(), addr, error })?;
        let listener = TcpListener::from_std(std_listener).map_err(|error| ProxyError::Listen {
            app: app.clone(),
            addr,
            error,
        })?;
        let mut balancer = Balancer::new(picker, self.seed);
        balancer.set_backends(targets.iter().map(|t| (t.clone(), 1)));
        let label = AppLabel::new(app.as_str());
        let proxy = Arc::new(AppProxy {
            app: app.clone(),
            port,
            requests_metric: self.metrics.requests.get_or_create(&label).clone(),
            errors_metric: self.metrics.errors.get_or_create(&label).clone(),
            latency_metric: self.metrics.latency.get_or_create(&label).clone(),
            picking: Mutex::new(Picking { balancer, listed: targets, ejected_at: None, per_slot: HashMap::new() }),
            requests: AtomicU64::new(0),
            backends_changed: tokio::sync::watch::Sender::new(0),
        });
        tracing::info!(app = %app, %addr, "balancer listening");
        let task = tokio::spawn(accept_loop(
            listener,
            proxy.clone(),
            self.client.clone(),
            self.client_idle,
            self.slots.clone(),
        ));
        apps.insert(app.clone(), Running { proxy, listener: task });
        Ok(())
    }

    /// Closes the balancer of `app`; requests in flight finish.
    pub fn remove(&self, app: &AppName) {
        if let Some(running) = self.apps.lock().expect("proxies lock").remove(app) {
            running.listener.abort();
            tracing::info!(app = %app, "balancer closed");
        }
        self.metrics.replicas.get_or_create(&AppLabel::new(app.as_str())).set(0);
    }

    /// The requests each app received since the last call, for the autoscaler. Also computes
    /// each slot's request rate and lets ejected backends back in after [`EJECTION_MS`].
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
            counts.push((app.clone(), running.proxy.requests.swap(0, Ordering::Relaxed)));
            let mut p = running.proxy.picking.lock().expect("balancer lock");
            for (slot, n) in p.per_slot.drain() {
                rates.insert(slot, n as f64 / elapsed_s);
            }
            if p.ejected_at.is_some_and(|at| at.elapsed() >= Duration::from_millis(EJECTION_MS)) {
                let listed = p.listed.clone();
                p.balancer.set_backends(listed.into_iter().map(|t| (t, 1)));
                p.ejected_at = None;
            }
        }
        *self.rates.lock().expect("rates lock") = rates;
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
            running.listener.abort();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    proxy: Arc<AppProxy>,
    client: HttpClient,
    client_idle: Duration,
    slots: Arc<tokio::sync::Semaphore>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(app = %proxy.app, "accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Full: closed at once, so that stalled clients hold no more descriptors.
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (proxy, client) = (proxy.clone(), client.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (proxy, client) = (proxy.clone(), client.clone());
                async move { Ok::<_, Infallible>(forward(&proxy, &client, peer, req, client_idle).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(client_idle)
                .keep_alive(true)
                .max_buf_size(CONNECTION_BUFFER_BYTES_MAX)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}

/// Headers that concern one connection only, never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove("proxy-connection");
}

fn plain(status: StatusCode, text: String) -> Response<ProxyBody> {
    let mut response = Response::new(Full::new(Bytes::from(text)).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

fn idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
}

async fn forward(
    proxy: &AppProxy,
    client: &HttpClient,
    peer: SocketAddr,
    req: Request<Incoming>,
    client_idle: Duration,
) -> Response<ProxyBody> {
    let started = Instant::now();
    proxy.requests.fetch_add(1, Ordering::Relaxed);
    proxy.requests_metric.inc();
    let response = forward_inner(proxy, client, peer, req, client_idle).await;
    if matches!(response.status(), StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE)
        && response.headers().contains_key("x-canteen-error")
    {
        proxy.errors_metric.inc();
    }
    proxy.latency_metric.observe(started.elapsed().as_secs_f64());
    response
}

async fn forward_inner(
    proxy: &AppProxy,
    client: &HttpClient,
    peer: SocketAddr,
    req: Request<Incoming>,
    client_idle: Duration,
) -> Response<ProxyBody> {
    let (mut parts, body) = req.into_parts();
    let body = match tokio::time::timeout(client_idle, Limited::new(body, REQUEST_BODY_BYTES_MAX).collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(_)) => return plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large or cut off\n".to_owned()),
        Err(_) => {
            let text = format!("request body not received within {} ms\n", client_idle.as_millis());
            let mut r = plain(StatusCode::REQUEST_TIMEOUT, text);
            r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
    };
    strip_hop_by_hop(&mut parts.headers);
    let forwarded = match parts.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
        parts.headers.insert("x-forwarded-for", v);
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let retry_any_error = idempotent(&parts.method);
    let Some(first) = proxy.pick(None) else {
        return no_backend(proxy);
    };
    let mut target = first;
    let mut retried = false;
    loop {
        let mut out = Request::new(Full::new(body.clone()));
        *out.method_mut() = parts.method.clone();
        *out.headers_mut() = parts.headers.clone();
        *out.uri_mut() = match format!("http://{}{}", target.1, path).parse() {
            Ok(uri) => uri,
            Err(_) => {
                proxy.finished(&target);
                return plain(StatusCode::BAD_REQUEST, "bad request target\n".to_owned());
            }
        };
        let result = if retry_any_error && !retried {
            let sent = Instant::now();
            tokio::select! {
                result = client.request(out) => Some(result),
                () = proxy.abandoned(&target, sent) => None,
            }
        } else {
            Some(client.request(out).await)
        };
        proxy.finished(&target);
        let Some(result) = result else {
            tracing::warn!(app = %proxy.app, slot = %target.0, addr = %target.1, "backend left unanswered: request sent again");
            retried = true;
            match proxy.pick(Some(&target)) {
                Some(next) => target = next,
                None => return no_backend(proxy),
            }
            continue;
        };
        match result {
            Ok(response) => {
                let (mut head, body) = response.into_parts();
                strip_hop_by_hop(&mut head.headers);
                return Response::from_parts(head, body.boxed());
            }
            Err(e) => {
                if e.is_connect() {
                    proxy.eject(&target);
                }
                if retried || !(e.is_connect() || retry_any_error) {
                    return bad_gateway(proxy, &target, &e);
                }
                retried = true;
                match proxy.pick(Some(&target)) {
                    Some(next) => target = next,
                    None => return bad_gateway(proxy, &target, &e),
                }
            }
        }
    }
}

fn no_backend(proxy: &AppProxy) -> Response<ProxyBody> {
    let mut r = plain(StatusCode::SERVICE_UNAVAILABLE, format!("canteen: app {} has no healthy replica\n", proxy.app));
    r.headers_mut().insert("x-canteen-error", HeaderValue::from_static("no-backend"));
    r
}

fn bad_gateway(proxy: &AppProxy, target: &Target, e: &hyper_util::client::legacy::Error) -> Response<ProxyBody> {
    let cause = std::error::Error::source(e).map(|s| s.to_string()).unwrap_or_default();
    tracing::warn!(app = %proxy.app, slot = %target.0, "request failed: {e} {cause}");
    let mut r =
        plain(StatusCode::BAD_GATEWAY, format!("canteen: replica {} of app {} failed: {e}\n", target.0, proxy.app));
    r.headers_mut().insert("x-canteen-error", HeaderValue::from_static("backend"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use canteen_core::model::NodeId;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    /// A backend answering every request with `name` and the X-Forwarded-For and X-Private
    /// headers it received.
    async fn backend(name: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                        let header =
                            |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
                        let text = format!("{name} xff={} private={}", header("x-forwarded-for"), header("x-private"));
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        port
    }

    async fn get(port: u16) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let request = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close, x-private\r\nX-Private: secret\r\n\r\n";
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let code = out.split_whitespace().nth(1).unwrap().parse().unwrap();
        (code, out.split_once("\r\n\r\n").unwrap().1.to_owned())
    }

    fn backend_at(index: u32, port: u16) -> Backend {
        Backend { node: NodeId::new("n"), addr: "127.0.0.1".into(), host_port: port, slot: SlotId::new("web", index) }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refusing_backend_is_ejected_and_its_request_retried_on_another() {
        let live = backend("live").await;
        let refusing = free_port(); // nothing listens there
        let metrics = Arc::new(Metrics::new());
        let proxies = Proxies::new("127.0.0.1".parse().unwrap(), metrics.clone(), 7);
        let port = free_port();
        let app = AppName::new("web");
        proxies
            .set_backends(&app, port, PickerKind::RoundRobin, &[backend_at(0, refusing), backend_at(1, live)])
            .unwrap();
        for _ in 0..6 {
            let (code, body) = get(port).await;
            assert_eq!(code, 200, "{body}");
            // Forwarded for the client; the header its Connection named is not passed on.
            assert_eq!(body, "live xff=127.0.0.1 private=-");
        }
        let running = proxies.apps.lock().unwrap();
        let picking = running[&app].proxy.picking.lock().unwrap();
        assert_eq!(picking.balancer.len(), 1, "the refusing backend is out");
        assert_eq!(metrics.errors.get_or_create(&AppLabel::new("web")).get(), 0);
    }

    /// A backend that accepts connections and reads requests but never answers: a node that
    /// vanished behind a kept-alive connection.
    async fn mute_backend() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
                });
            }
        });
        port
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_get_unanswered_by_a_backend_that_left_is_answered_by_another() {
        let (mute, live) = (mute_backend().await, backend("live").await);
        let proxies = Arc::new(Proxies::new("127.0.0.1".parse().unwrap(), Arc::new(Metrics::new()), 7));
        let port = free_port();
        let app = AppName::new("web");
        proxies.set_backends(&app, port, PickerKind::RoundRobin, &[backend_at(0, mute)]).unwrap();
        let started = Instant::now();
        let request = tokio::spawn(get(port));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!request.is_finished(), "the mute backend holds it");
        // The node learns that the mute backend's node is down: another replica is listed.
        proxies.set_backends(&app, port, PickerKind::RoundRobin, &[backend_at(1, live)]).unwrap();
        let (code, body) = tokio::time::timeout(Duration::from_secs(5), request).await.expect("answered").unwrap();
        assert_eq!((code, body.split(' ').next()), (200, Some("live")), "{body}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(ABANDON_AFTER_MS),
            "abandoned only after {ABANDON_AFTER_MS} ms: {took:?}"
        );
        // A backend still listed is waited for, however slow.
        proxies.set_backends(&app, port, PickerKind::RoundRobin, &[backend_at(0, mute)]).unwrap();
        let waiting = tokio::spawn(get(port));
        tokio::time::sleep(Duration::from_millis(ABANDON_AFTER_MS + 300)).await;
        assert!(!waiting.is_finished(), "a listed backend is not abandoned");
        waiting.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn round_robin_alternates_and_no_backend_is_a_503() {
        let (a, b) = (backend("a").await, backend("b").await);
        let proxies = Proxies::new("127.0.0.1".parse().unwrap(), Arc::new(Metrics::new()), 7);
        let port = free_port();
        let app = AppName::new("web");
        proxies.set_backends(&app, port, PickerKind::RoundRobin, &[backend_at(0, a), backend_at(1, b)]).unwrap();
        let mut names = Vec::new();
        for _ in 0..4 {
            names.push(get(port).await.1.split(' ').next().unwrap().to_owned());
        }
        assert!(names[0] != names[1] && names[0] == names[2] && names[1] == names[3], "{names:?}");
        proxies.set_backends(&app, port, PickerKind::RoundRobin, &[]).unwrap();
        let (code, body) = get(port).await;
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("no healthy replica"), "{body}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_client_connection_is_closed_and_a_stalled_body_is_a_408() {
        let a = backend("a").await;
        let mut proxies = Proxies::new("127.0.0.1".parse().unwrap(), Arc::new(Metrics::new()), 7);
        proxies.client_idle = Duration::from_millis(300);
        let port = free_port();
        proxies.set_backends(&AppName::new("web"), port, PickerKind::RoundRobin, &[backend_at(0, a)]).unwrap();
        // One request on a kept-alive connection, then silence.
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&seen).contains("private=-") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the answer: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        let idle = Instant::now();
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("closed").unwrap();
        assert_eq!(n, 0, "the idle connection is closed");
        assert!(idle.elapsed() >= Duration::from_millis(250), "closed after {:?}", idle.elapsed());
        // A body that never comes in full.
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc").await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await.expect("answered").unwrap();
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }
}
