//! The agent's HTTP JSON API, used by the CLI, and its client.
//!
//! - `GET /status`: [`StatusJson`];
//! - `POST /apply` with `{"file": name, "text": toml}`: applies the cluster file's apps;
//! - `POST /scale` with `{"app": name, "replicas": n}`;
//! - `POST /rm` with `{"app": name}`;
//! - `POST /apply` with `"dry_run": true`: what would change, and whether it starts a rollout;
//! - `POST /rollout` with `{"app": name, "action": "restart" | "undo" | "promote", "to": v}`;
//! - `GET /metrics`: Prometheus text.
//!
//! Bad input answers 400 with `{"error": message}`; the CLI exits 2 on it.
//!
//! With `api_token` set, every route answers 401 unless the request carries
//! `Authorization: Bearer <token>`. `POST` routes take only `Content-Type: application/json`,
//! so that no web page can post a form to an agent. A body over 4 MiB answers 413, a known
//! route with another method 405 with `Allow`; headers and body must arrive within 10 s each,
//! and the API holds at most [`API_CONNECTIONS_MAX`] connections: stalled clients cannot
//! starve the agent.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use canteen_core::model::{AppName, AppSpec};
use canteen_core::node::Command;

use crate::plan::GpuJson;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::agent::{CommandFailure, Handle};
use crate::state::apps_from_file;

/// An API request body larger than this is refused (413).
pub const API_BODY_BYTES_MAX: usize = 4 * 1024 * 1024;
/// How long a request's headers, and then its body, may take to arrive.
const API_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections the API holds at once; one more is closed at once.
pub const API_CONNECTIONS_MAX: usize = 256;

/// `POST /apply`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ApplyRequest {
    /// The file's name, for messages.
    pub file: String,
    /// Its text.
    pub text: String,
    /// Only say what would change, and whether it starts a rollout; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// `POST /rollout`: a command on an app's versions.
#[derive(Debug, Serialize, Deserialize)]
pub struct RolloutRequest {
    /// The app.
    pub app: String,
    /// `restart` (a new version, fresh containers), `undo` (back to `to`, or the version
    /// before) or `promote` (the canaries are good).
    pub action: String,
    /// For `undo`: the version to go back to.
    #[serde(default)]
    pub to: Option<u64>,
}

/// `POST /scale`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ScaleRequest {
    /// The app.
    pub app: String,
    /// The replica count.
    pub replicas: u32,
}

/// `POST /rm`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RemoveRequest {
    /// The app.
    pub app: String,
}

/// What a command answered.
#[derive(Debug, Serialize, Deserialize)]
pub struct Reply {
    /// What was done, on success.
    #[serde(default)]
    pub done: Option<String>,
    /// What went wrong, on failure.
    #[serde(default)]
    pub error: Option<String>,
}

/// Serves the API on `listener` until the process ends; over TLS with `tls`.
pub async fn serve(listener: TcpListener, handle: Handle, tls: Option<tokio_rustls::TlsAcceptor>) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(API_CONNECTIONS_MAX));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Full: closed at once, rather than left to wait while holding a descriptor.
            drop(stream);
            continue;
        };
        let (handle, tls) = (handle.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, handle).await,
                Some(acceptor) => {
                    // The handshake has the headers' time limit too.
                    if let Ok(Ok(stream)) = tokio::time::timeout(API_READ_TIMEOUT, acceptor.accept(stream)).await {
                        serve_connection(stream, handle).await;
                    }
                }
            }
            drop(permit);
        });
    }
}

/// One API connection, plain or TLS, until it closes or stalls.
async fn serve_connection<IO>(stream: IO, handle: Handle)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let handle = handle.clone();
        async move { Ok::<_, Infallible>(route(&handle, req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(API_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).expect("replies encode");
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    r
}

fn reply(result: Result<String, (StatusCode, String)>) -> Response<Full<Bytes>> {
    match result {
        Ok(done) => json(StatusCode::OK, &Reply { done: Some(done), error: None }),
        Err((status, error)) => json(status, &Reply { done: None, error: Some(error) }),
    }
}

async fn body<T: for<'de> Deserialize<'de>>(req: Request<Incoming>) -> Result<T, (StatusCode, String)> {
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over the API's limit of {} MiB", API_BODY_BYTES_MAX >> 20),
        )
    };
    let declared = req.headers().get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > API_BODY_BYTES_MAX as u64) {
        return Err(too_large());
    }
    let read = Limited::new(req.into_body(), API_BODY_BYTES_MAX).collect();
    let bytes = match tokio::time::timeout(API_READ_TIMEOUT, read).await {
        Err(_) => return Err((StatusCode::REQUEST_TIMEOUT, "the request body did not arrive within 10 s".to_owned())),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Ok(Err(e)) => return Err((StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}"))),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    serde_json::from_slice(&bytes).map_err(|e| (StatusCode::BAD_REQUEST, format!("bad request body: {e}")))
}

/// What every request must carry before its route is looked at: the token, when one is set.
fn check_token(handle: &Handle, req: &Request<Incoming>) -> Result<(), Box<Response<Full<Bytes>>>> {
    let Some(token) = handle.token.as_deref() else { return Ok(()) };
    let given = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        return Ok(());
    }
    let mut r = reply(Err((
        StatusCode::UNAUTHORIZED,
        "this agent needs its API token: give --token or set CANTEEN_TOKEN".to_owned(),
    )));
    r.headers_mut().insert(hyper::header::WWW_AUTHENTICATE, hyper::header::HeaderValue::from_static("Bearer"));
    Err(Box::new(r))
}

/// Compares without stopping at the first difference, so the time taken tells nothing of how
/// much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// A `POST` must say its body is JSON: a browser posts forms (`text/plain`,
/// `application/x-www-form-urlencoded`) across origins without asking, JSON it does not.
fn check_json(req: &Request<Incoming>) -> Result<(), (StatusCode, String)> {
    let content_type = req.headers().get(hyper::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be application/json, not {content_type:?}"),
        ))
    }
}

async fn run_commands(handle: &Handle, commands: Vec<Command>) -> Result<(), (StatusCode, String)> {
    handle.commands(commands).await.map_err(|e| match e {
        CommandFailure::Refused(e) if e.starts_with("no app named") => (StatusCode::NOT_FOUND, e),
        CommandFailure::Refused(e) => (StatusCode::BAD_REQUEST, e),
        e @ (CommandFailure::NotPersisted(_) | CommandFailure::Stopped) => {
            (StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
    })
}

/// The routes and the methods each takes.
const ROUTES: [(&str, Method); 6] = [
    ("/status", Method::GET),
    ("/metrics", Method::GET),
    ("/apply", Method::POST),
    ("/scale", Method::POST),
    ("/rm", Method::POST),
    ("/rollout", Method::POST),
];

async fn route(handle: &Handle, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if let Err(refused) = check_token(handle, &req) {
        return *refused;
    }
    let path = req.uri().path().to_owned();
    let Some((_, allowed)) = ROUTES.iter().find(|(p, _)| *p == path) else {
        return reply(Err((StatusCode::NOT_FOUND, "no such API route".to_owned())));
    };
    if req.method() != allowed {
        let mut r = reply(Err((StatusCode::METHOD_NOT_ALLOWED, format!("{path} takes {allowed} only"))));
        r.headers_mut()
            .insert(hyper::header::ALLOW, hyper::header::HeaderValue::from_str(allowed.as_str()).expect("a method"));
        return r;
    }
    if req.method() == Method::POST
        && let Err(e) = check_json(&req)
    {
        return reply(Err(e));
    }
    match path.as_str() {
        "/status" => match handle.status().await {
            Some(status) => json(StatusCode::OK, &status),
            None => reply(Err((StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping".to_owned()))),
        },
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(handle.metrics.encode())));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            );
            r
        }
        "/apply" => {
            let result = async {
                let request: ApplyRequest = body(req).await?;
                let apps = apps_from_file(&request.file, &request.text, &handle.config)
                    .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
                if request.dry_run {
                    let applied = handle.specs().await.ok_or_else(stopping)?;
                    return Ok(dry_run(&applied, &apps));
                }
                let names: Vec<String> = apps.iter().map(|a| a.name.to_string()).collect();
                run_commands(handle, apps.into_iter().map(|a| Command::Apply(Box::new(a))).collect()).await?;
                Ok(format!("applied {}", names.join(", ")))
            }
            .await;
            reply(result)
        }
        "/scale" => {
            let result = async {
                let request: ScaleRequest = body(req).await?;
                run_commands(handle, vec![Command::Scale(AppName::new(&request.app), request.replicas)]).await?;
                Ok(format!("scaled {} to {}", request.app, request.replicas))
            }
            .await;
            reply(result)
        }
        "/rollout" => {
            let result = async {
                let request: RolloutRequest = body(req).await?;
                let app = AppName::new(&request.app);
                let command = match request.action.as_str() {
                    "restart" => Command::Restart(app),
                    "undo" => Command::Undo(app, request.to),
                    "promote" => Command::Promote(app),
                    other => {
                        return Err((
                            StatusCode::BAD_REQUEST,
                            format!("action {other:?} is unknown; allowed: \"restart\", \"undo\", \"promote\""),
                        ));
                    }
                };
                run_commands(handle, vec![command]).await?;
                Ok(match request.action.as_str() {
                    "restart" => format!("restarting {}: a new version rolls out", request.app),
                    "undo" => format!(
                        "rolling {} back{}",
                        request.app,
                        request.to.map_or(String::new(), |v| format!(" to version {v}"))
                    ),
                    _ => format!("promoted the canaries of {}", request.app),
                })
            }
            .await;
            reply(result)
        }
        _ => {
            let result = async {
                let request: RemoveRequest = body(req).await?;
                run_commands(handle, vec![Command::Remove(AppName::new(&request.app))]).await?;
                Ok(format!("removed {}", request.app))
            }
            .await;
            reply(result)
        }
    }
}

fn stopping() -> (StatusCode, String) {
    (StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping".to_owned())
}

/// What applying `apps` over the `applied` specs would change, one line per app.
fn dry_run(applied: &[AppSpec], apps: &[AppSpec]) -> String {
    let mut lines = Vec::new();
    for app in apps {
        let line = match applied.iter().find(|a| a.name == app.name) {
            None => format!("{}: new app, version 1 with {} replicas of {}", app.name, app.replicas, app.image),
            Some(old) => match canteen_core::rollout::changes(old, app) {
                (fields, _) if fields.is_empty() => format!("{}: unchanged (version {})", app.name, old.version),
                (fields, true) => format!(
                    "{}: changes {}; starts a rollout, version {} -> {}",
                    app.name,
                    fields.join(", "),
                    old.version,
                    old.version + 1
                ),
                (fields, false) => format!(
                    "{}: changes {}; restarts nothing (still version {})",
                    app.name,
                    fields.join(", "),
                    old.version
                ),
            },
        };
        lines.push(line);
    }
    format!("dry run, nothing changed:\n{}", lines.join("\n"))
}

/// Why a CLI call to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No agent answered; nothing changed.
    #[error("cannot reach the agent's API at {addr}: {error}; is `canteen agent` (or `canteen up`) running there?")]
    Unreachable {
        /// The API address.
        addr: SocketAddr,
        /// What went wrong.
        error: String,
    },
    /// The agent refused the request (bad input); nothing changed.
    #[error("{0}")]
    Refused(String),
    /// The agent failed.
    #[error("the agent answered {status}: {message}")]
    Failed {
        /// The HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
}

/// Where the CLI reaches an agent's API, and the token it gives.
#[derive(Clone, Debug)]
pub struct Api {
    /// The API's address.
    pub addr: SocketAddr,
    /// The agent's `api_token`, when it has one.
    pub token: Option<String>,
    /// The CA certificate (PEM) to trust when the agent's API speaks TLS; plain HTTP without.
    pub tls_ca: Option<std::path::PathBuf>,
}

/// The TLS crypto of the API, server and client: *ring*'s. rustls deprecates it in favour of
/// aws-lc-rs for want of post-quantum key exchange; *ring* builds from plain C with the
/// machine's compiler where aws-lc's large C library would more than double the agent's build,
/// for an API that serves operators on their own network. Moving to aws-lc-rs is a feature
/// switch here and in Cargo.toml.
#[allow(deprecated)]
pub fn tls_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS connector trusting the CA certificates in `ca` (PEM).
fn tls_connector(ca: &std::path::Path) -> Result<tokio_rustls::TlsConnector, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("{}: not a PEM certificate: {e}", ca.display()))?;
        roots.add(cert).map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(tls_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)))
}

/// One call to the agent's API; returns the body of a 2xx answer. A body over the API's limit
/// is refused here, before anything is sent.
pub async fn call(api: &Api, method: Method, path: &str, body: Option<String>) -> Result<String, ClientError> {
    let addr = api.addr;
    if body.as_ref().is_some_and(|b| b.len() > API_BODY_BYTES_MAX) {
        return Err(ClientError::Refused(format!(
            "the request is too large: {} bytes, and the agent takes at most {} MiB",
            body.as_ref().map_or(0, String::len),
            API_BODY_BYTES_MAX >> 20
        )));
    }
    let unreachable = |error: String| ClientError::Unreachable { addr, error };
    let stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| unreachable("no answer within 5 s".to_owned()))?
        .map_err(|e| unreachable(e.to_string()))?;
    let mut sender = match &api.tls_ca {
        None => handshake(stream).await.map_err(unreachable)?,
        Some(ca) => {
            let connector = tls_connector(ca).map_err(ClientError::Refused)?;
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let stream = connector.connect(name, stream).await.map_err(|e| unreachable(format!("TLS: {e}")))?;
            handshake(stream).await.map_err(unreachable)?
        }
    };
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(token) = &api.token {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request.body(Full::new(Bytes::from(body.unwrap_or_default()))).expect("a valid request");
    let response = sender.send_request(request).await.map_err(|e| unreachable(e.to_string()))?;
    let status = response.status();
    let bytes = response.into_body().collect().await.map_err(|e| unreachable(e.to_string()))?.to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if status.is_success() {
        return Ok(text);
    }
    let message = serde_json::from_str::<Reply>(&text).ok().and_then(|r| r.error).unwrap_or(text);
    if status.is_client_error() {
        Err(ClientError::Refused(message))
    } else {
        Err(ClientError::Failed { status: status.as_u16(), message })
    }
}

/// An HTTP/1 client connection over `stream`, driven on its own task.
async fn handshake<IO>(stream: IO) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

/// `GET /status`, decoded.
pub async fn status(api: &Api) -> Result<StatusJson, ClientError> {
    let text = call(api, Method::GET, "/status", None).await?;
    serde_json::from_str(&text).map_err(|e| ClientError::Failed { status: 200, message: e.to_string() })
}

/// The agent's state as `GET /status` reports it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StatusJson {
    /// This node.
    pub node: String,
    /// This life of the node (its SWIM generation: the agent's start time in Unix ms).
    #[serde(default)]
    pub generation: u64,
    /// The root hash of this node's registry (16 hex digits): two nodes whose hashes are equal
    /// hold the same desired state and statuses, so a cluster has converged when every live
    /// node shows the same.
    #[serde(default)]
    pub registry_hash: String,
    /// How many running containers this agent adopted when it started.
    #[serde(default)]
    pub adopted: usize,
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
    /// Its GPUs.
    #[serde(default)]
    pub gpus: u32,
    /// Their model.
    #[serde(default)]
    pub gpu_model: String,
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
    /// The version last applied.
    #[serde(default)]
    pub version: u64,
    /// The version its slots are placed and started with (an earlier one while reverting).
    #[serde(default)]
    pub running_version: u64,
    /// Where its rollout stands: `steady`, `rolling`, `canary` (waiting for
    /// `canteen promote`), `paused` (failed, no auto-revert) or `reverting`.
    #[serde(default)]
    pub rollout: String,
    /// Its versions, oldest first, the last applied included.
    #[serde(default)]
    pub versions: Vec<VersionJson>,
    /// Its update settings: max_surge, max_unavailable, min_healthy_ms, healthy_deadline_ms.
    #[serde(default)]
    pub update: Option<UpdateJson>,
}

/// One version of an app.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct VersionJson {
    /// Its number.
    pub version: u64,
    /// Its image.
    pub image: String,
    /// Why it was made: `apply`, `restart` or `undo to N`.
    pub cause: String,
    /// `completed`, `failed: ...`, or empty while none was given.
    pub outcome: String,
}

/// An app's update settings, as `canteen rollout status` explains a wait with them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct UpdateJson {
    /// New replicas beside the old ones at once.
    pub max_surge: u32,
    /// Slots without a healthy replica at once.
    pub max_unavailable: u32,
    /// How long a new replica stays healthy before it counts.
    pub min_healthy_ms: u64,
    /// How long a new replica has to count.
    pub healthy_deadline_ms: u64,
    /// Canaries before a promote.
    pub canary: u32,
    /// Whether they were promoted.
    pub promoted: bool,
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
    /// The version of its app it runs (0 when unplaced).
    #[serde(default)]
    pub version: u64,
    /// Whether it counts in a rollout (healthy for the update's min_healthy_ms).
    #[serde(default)]
    pub ready: bool,
    /// The GPUs it holds on its node.
    #[serde(default)]
    pub gpus: Vec<GpuJson>,
    /// Why it runs nowhere, when it is unplaced and this node's last placement said why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
