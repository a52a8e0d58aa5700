//! The HTTP balancer: each request of a client connection (HTTP/1.1, or HTTP/2 with prior
//! knowledge) goes to a replica over a pooled HTTP/1.1 connection, bodies streaming both ways.
//!
//! A request goes to another replica only when none of it reached the first (its connection
//! could not be had, or was found closed before the request was handed to it), or when it is
//! idempotent and its body was kept whole (`Kept`) and the first failed before answering, or
//! left the node's list without answering ([`super::ABANDON_AFTER_MS`]). An `Upgrade` request
//! (WebSocket) that the replica answers with 101 becomes a tunnel between the two sockets.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

use super::body::{BodyFault, ForwardBody, Kept, ProxyBody, Relayed, Upload, Whole};
use super::pick::AppProxy;
use super::pool::Pool;
use super::{CONNECTION_BUFFER_BYTES_MAX, H2_STREAMS_MAX, Target, accept_one, tunnel};

/// Accepts the app's client connections until aborted.
pub(super) async fn accept_loop(
    listener: TcpListener,
    proxy: Arc<AppProxy>,
    pool: Arc<Pool>,
    client_idle: Duration,
    slots: Arc<tokio::sync::Semaphore>,
) {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(client_idle)
        .keep_alive(true)
        .max_buf_size(CONNECTION_BUFFER_BYTES_MAX);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(H2_STREAMS_MAX);
    let builder = Arc::new(builder);
    loop {
        let Some((stream, peer, permit)) = accept_one(&listener, &proxy.app, &slots).await else { continue };
        let (proxy, pool, builder) = (proxy.clone(), pool.clone(), builder.clone());
        tokio::spawn(async move {
            serve(stream, peer, proxy, pool, client_idle, &builder).await;
            drop(permit);
        });
    }
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    proxy: Arc<AppProxy>,
    pool: Arc<Pool>,
    client_idle: Duration,
    builder: &hyper_util::server::conn::auto::Builder<TokioExecutor>,
) {
    // The client's address as `X-Forwarded-For` gives it, made once per connection.
    let Ok(peer) = HeaderValue::from_str(&peer.ip().to_string()) else { return };
    let service = hyper::service::service_fn(move |req| {
        let (proxy, pool, peer) = (proxy.clone(), pool.clone(), peer.clone());
        async move { Ok::<_, Infallible>(forward(proxy, pool, peer, req, client_idle).await) }
    });
    let _ = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await;
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// Marks the balancer's own 502 and 503 answers, which count as the app's errors.
const X_CANTEEN_ERROR: HeaderName = HeaderName::from_static("x-canteen-error");

const HOP_BY_HOP_COUNT: usize = 9;
/// Headers that concern one connection only, never forwarded. Names made once: a lookup by
/// `&str` parses the name on every call, which cost an eighth of the balancer's instructions.
static HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("proxy-connection"),
];

pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(connection) = headers.get(header::CONNECTION) {
        // The common values name no other header: nothing to collect.
        let value = connection.as_bytes();
        if !(value.eq_ignore_ascii_case(b"keep-alive") || value.eq_ignore_ascii_case(b"close")) {
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
        }
    }
    // One pass over the few names present finds the hop-by-hop ones (usually none, or just
    // `connection`), instead of a hashed lookup for each of the nine.
    let mut present = [false; HOP_BY_HOP_COUNT];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(name);
    }
}

fn plain(status: StatusCode, text: String) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::Left(Whole(Some(Bytes::from(text)))));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

fn idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
}

/// Whether an HTTP/1.1 request asks to switch protocols (`Connection: upgrade` with `Upgrade`).
fn wants_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

async fn forward(
    proxy: Arc<AppProxy>,
    pool: Arc<Pool>,
    peer: HeaderValue,
    req: Request<Incoming>,
    client_idle: Duration,
) -> Response<ProxyBody> {
    let started = Instant::now();
    proxy.count();
    let response = forward_inner(&proxy, &pool, peer, req, client_idle).await;
    if matches!(response.status(), StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE)
        && response.headers().contains_key(&X_CANTEEN_ERROR)
    {
        proxy.errors_metric.inc();
    }
    proxy.latency_metric.observe(started.elapsed().as_secs_f64());
    response
}

/// The request as sent to replicas, and what is kept to send it again.
struct Outgoing {
    /// Method, target and headers, for a request sent again after a replica failed it
    /// (idempotent requests only).
    spare: Option<(Method, Uri, HeaderMap)>,
    /// The body as it streamed, if it had one.
    kept: Option<Arc<Mutex<Kept>>>,
}

impl Outgoing {
    /// The request again, whole, if it may be sent again after reaching a replica.
    fn again(&self) -> Option<Request<ForwardBody>> {
        let (method, uri, headers) = self.spare.as_ref()?;
        let body = match &self.kept {
            None => ForwardBody::Left(Whole(None)),
            Some(kept) => ForwardBody::Left(Whole(Some(kept.lock().expect("kept lock").replay()?))),
        };
        let mut req = Request::new(body);
        *req.method_mut() = method.clone();
        *req.uri_mut() = uri.clone();
        *req.headers_mut() = headers.clone();
        Some(req)
    }

    fn fault(&self) -> Option<BodyFault> {
        self.kept.as_ref().and_then(|k| k.lock().expect("kept lock").fault)
    }
}

async fn forward_inner(
    proxy: &Arc<AppProxy>,
    pool: &Arc<Pool>,
    peer: HeaderValue,
    mut req: Request<Incoming>,
    client_idle: Duration,
) -> Response<ProxyBody> {
    let max_body = proxy.max_body();
    if req.body().size_hint().exact().is_some_and(|len| len > max_body) {
        let mut r = plain(StatusCode::PAYLOAD_TOO_LARGE, format!("request body over {max_body} bytes\n"));
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    let client_upgrade = wants_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let upgrade_to = client_upgrade.as_ref().and_then(|_| parts.headers.get(header::UPGRADE).cloned());
    strip_hop_by_hop(&mut parts.headers);
    // The client's `Expect: 100-continue` is answered here (hyper sends the 100 when the body
    // is first read); the replica gets the body without being asked.
    parts.headers.remove(header::EXPECT);
    if let Some(protocol) = upgrade_to {
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol);
    }
    let forwarded = match parts.headers.get(&X_FORWARDED_FOR) {
        None => Some(peer),
        Some(earlier) => {
            let mut both = Vec::with_capacity(earlier.len() + 2 + peer.len());
            both.extend_from_slice(earlier.as_bytes());
            both.extend_from_slice(b", ");
            both.extend_from_slice(peer.as_bytes());
            HeaderValue::from_maybe_shared(Bytes::from(both)).ok()
        }
    };
    if let Some(v) = forwarded {
        parts.headers.insert(X_FORWARDED_FOR, v);
    }
    // An HTTP/2 request (or an absolute-form HTTP/1.1 one) names its host in the target; the
    // replica speaks HTTP/1.1 and gets origin form with a Host header.
    if let Some(authority) = parts.uri.authority() {
        if !parts.headers.contains_key(header::HOST)
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            parts.headers.insert(header::HOST, host);
        }
        let origin = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = Uri::try_from(origin).unwrap_or_else(|_| Uri::from_static("/"));
    }
    parts.version = Version::HTTP_11;
    let may_repeat = idempotent(&parts.method) && client_upgrade.is_none();
    let (body, kept) = if body.is_end_stream() {
        (ForwardBody::Left(Whole(None)), None)
    } else {
        let kept = Arc::new(Mutex::new(Kept::default()));
        (ForwardBody::Right(Upload::new(body, client_idle, max_body, kept.clone())), Some(kept))
    };
    let outgoing =
        Outgoing { spare: may_repeat.then(|| (parts.method.clone(), parts.uri.clone(), parts.headers.clone())), kept };
    let mut request = Request::from_parts(parts, body);
    let Some(mut target) = proxy.pick(None) else {
        return no_backend(proxy);
    };
    let mut retried = false;
    loop {
        let mut sender = match pool.checkout(target.addr).await {
            Ok(sender) => sender,
            Err(e) => {
                proxy.finished(&target);
                proxy.eject(&target);
                match (retried, proxy.pick(Some(&target))) {
                    (false, Some(next)) => {
                        (target, retried) = (next, true);
                        continue;
                    }
                    _ => return bad_gateway(proxy, &target, &e.to_string()),
                }
            }
        };
        // A request with no body to keep, to a replica that leaves the list without
        // answering, is sent again elsewhere; one whose body streams waits for its answer.
        let result = if outgoing.spare.is_some() && outgoing.kept.is_none() && !retried {
            let sent = Instant::now();
            tokio::select! {
                biased;
                result = sender.try_send_request(request) => Some(result),
                () = proxy.abandoned(&target, sent) => None,
            }
        } else {
            Some(sender.try_send_request(request).await)
        };
        proxy.finished(&target);
        let failure = match result {
            Some(Ok(response)) => {
                return respond(proxy, pool, (sender, &target), response, client_upgrade, client_idle);
            }
            Some(Err(mut e)) => {
                if let Some(fault) = outgoing.fault() {
                    return client_fault(fault, max_body, client_idle);
                }
                match e.take_message() {
                    // Not handed to the connection: nothing reached the replica.
                    Some(unsent) => Ok((unsent, e.into_error().to_string())),
                    None => {
                        let error = e.into_error();
                        outgoing.again().ok_or(error.to_string()).map(|again| (again, error.to_string()))
                    }
                }
            }
            None => {
                tracing::warn!(app = %proxy.app, slot = %target.slot, addr = %target.addr, "backend left unanswered: request sent again");
                outgoing.again().ok_or_else(|| "left unanswered".to_owned()).map(|again| (again, String::new()))
            }
        };
        match failure {
            Ok((again, error)) if !retried => match proxy.pick(Some(&target)) {
                Some(next) => {
                    (target, request, retried) = (next, again, true);
                }
                None if error.is_empty() => return no_backend(proxy),
                None => return bad_gateway(proxy, &target, &error),
            },
            Ok((_, error)) | Err(error) => return bad_gateway(proxy, &target, &error),
        }
    }
}

/// The replica's answer, relayed; a 101 to an upgrade request becomes a tunnel.
fn respond(
    proxy: &Arc<AppProxy>,
    pool: &Arc<Pool>,
    (sender, target): (super::pool::Sender, &Target),
    mut response: Response<Incoming>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    client_idle: Duration,
) -> Response<ProxyBody> {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client) = client_upgrade
    {
        let replica = hyper::upgrade::on(&mut response);
        let upgrade_to = response.headers().get(header::UPGRADE).cloned();
        let (mut head, _) = response.into_parts();
        strip_hop_by_hop(&mut head.headers);
        head.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(protocol) = upgrade_to {
            head.headers.insert(header::UPGRADE, protocol);
        }
        let (proxy, target) = (proxy.clone(), target.clone());
        tokio::spawn(async move {
            match tokio::try_join!(client, replica) {
                Ok((client, replica)) => tunnel(TokioIo::new(client), TokioIo::new(replica), &proxy, &target).await,
                Err(e) => tracing::warn!(app = %proxy.app, slot = %target.slot, "upgrade failed: {e}"),
            }
        });
        drop(sender);
        return Response::from_parts(head, ProxyBody::Left(Whole(None)));
    }
    let (mut head, body) = response.into_parts();
    strip_hop_by_hop(&mut head.headers);
    let body = Relayed::new(body, client_idle, (pool.clone(), sender), proxy.clone(), target.clone());
    Response::from_parts(head, ProxyBody::Right(body))
}

fn client_fault(fault: BodyFault, max_body: u64, client_idle: Duration) -> Response<ProxyBody> {
    let mut r = match fault {
        BodyFault::Idle => plain(
            StatusCode::REQUEST_TIMEOUT,
            format!("request body: nothing received for {} ms\n", client_idle.as_millis()),
        ),
        BodyFault::TooLarge => plain(StatusCode::PAYLOAD_TOO_LARGE, format!("request body over {max_body} bytes\n")),
        BodyFault::Cut => plain(StatusCode::BAD_REQUEST, "request body cut off\n".to_owned()),
    };
    r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

fn no_backend(proxy: &AppProxy) -> Response<ProxyBody> {
    let mut r = plain(StatusCode::SERVICE_UNAVAILABLE, format!("canteen: app {} has no healthy replica\n", proxy.app));
    r.headers_mut().insert(X_CANTEEN_ERROR, HeaderValue::from_static("no-backend"));
    r
}

fn bad_gateway(proxy: &AppProxy, target: &Target, error: &str) -> Response<ProxyBody> {
    tracing::warn!(app = %proxy.app, slot = %target.slot, "request failed: {error}");
    let mut r = plain(
        StatusCode::BAD_GATEWAY,
        format!("canteen: replica {} of app {} failed: {error}\n", target.slot, proxy.app),
    );
    r.headers_mut().insert(X_CANTEEN_ERROR, HeaderValue::from_static("backend"));
    r
}
