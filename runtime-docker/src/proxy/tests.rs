//! The balancers against real sockets on loopback.

use std::convert::Infallible;

use bytes::Bytes;
use canteen_core::limits;
use canteen_core::model::{PickerKind, Protocol};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use super::*;
use canteen_core::model::NodeId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP balancer on `port`, round-robin, no body cap.
fn http(port: u16) -> Frontend {
    Frontend { port, picker: PickerKind::RoundRobin, protocol: Protocol::Http, max_body_bytes: None }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A backend answering every request with `name` and the X-Forwarded-For and X-Private
/// headers it received; after reading the whole body, with its length and any `Expect` it got.
async fn backend(name: &'static str) -> u16 {
    backend_counting(name).await.0
}

/// [`backend`], and a count of the connections it accepted.
async fn backend_counting(name: &'static str) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
                    let mut text = format!("{name} xff={} private={}", header("x-forwarded-for"), header("x-private"));
                    if req.headers().contains_key("expect") {
                        text.push_str(&format!(" expect={}", header("expect")));
                    }
                    let body = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
                    if body > 0 {
                        text.push_str(&format!(" body={body}"));
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (port, accepted)
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
    let proxies = Proxies::new("127.0.0.1".parse().unwrap(), metrics.clone(), 7).unwrap();
    let port = free_port();
    let app = AppName::new("web");
    proxies.set_backends(&app, http(port), &[backend_at(0, refusing), backend_at(1, live)]).unwrap();
    for _ in 0..6 {
        let (code, body) = get(port).await;
        assert_eq!(code, 200, "{body}");
        // Forwarded for the client; the header its Connection named is not passed on.
        assert_eq!(body, "live xff=127.0.0.1 private=-");
    }
    let running = proxies.apps.lock().unwrap();
    assert_eq!(running[&app].proxy.backends(), 1, "the refusing backend is out");
    assert_eq!(metrics.errors.get_or_create(&AppLabel::new("web")).get(), 0);
}

/// A backend that accepts connections and reads requests but never answers: a node that
/// vanished behind a kept-alive connection.
async fn mute_backend() -> u16 {
    raw_backend(|mut stream| async move {
        let mut buf = [0u8; 1024];
        while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    })
    .await
}

/// A backend on loopback serving each connection with `serve`; its port.
async fn raw_backend<F, Fut>(serve: F) -> u16
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Copy + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(serve(stream));
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_unanswered_by_a_backend_that_left_is_answered_by_another() {
    let (mute, live) = (mute_backend().await, backend("live").await);
    let proxies = Arc::new(Proxies::new("127.0.0.1".parse().unwrap(), Arc::new(Metrics::new()), 7).unwrap());
    let port = free_port();
    let app = AppName::new("web");
    proxies.set_backends(&app, http(port), &[backend_at(0, mute)]).unwrap();
    let started = Instant::now();
    let request = tokio::spawn(get(port));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!request.is_finished(), "the mute backend holds it");
    // The node learns that the mute backend's node is down: another replica is listed.
    proxies.set_backends(&app, http(port), &[backend_at(1, live)]).unwrap();
    let (code, body) = tokio::time::timeout(Duration::from_secs(5), request).await.expect("answered").unwrap();
    assert_eq!((code, body.split(' ').next()), (200, Some("live")), "{body}");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(ABANDON_AFTER_MS), "abandoned only after {ABANDON_AFTER_MS} ms: {took:?}");
    // A backend still listed is waited for, however slow.
    proxies.set_backends(&app, http(port), &[backend_at(0, mute)]).unwrap();
    let waiting = tokio::spawn(get(port));
    tokio::time::sleep(Duration::from_millis(ABANDON_AFTER_MS + 300)).await;
    assert!(!waiting.is_finished(), "a listed backend is not abandoned");
    waiting.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_alternates_and_no_backend_is_a_503() {
    let (a, b) = (backend("a").await, backend("b").await);
    let proxies = Proxies::new("127.0.0.1".parse().unwrap(), Arc::new(Metrics::new()), 7).unwrap();
    let port = free_port();
    let app = AppName::new("web");
    proxies.set_backends(&app, http(port), &[backend_at(0, a), backend_at(1, b)]).unwrap();
    let mut names = Vec::new();
    for _ in 0..4 {
        names.push(get(port).await.1.split(' ').next().unwrap().to_owned());
    }
    assert!(names[0] != names[1] && names[0] == names[2] && names[1] == names[3], "{names:?}");
    proxies.set_backends(&app, http(port), &[]).unwrap();
    let (code, body) = get(port).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no healthy replica"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_client_connection_is_closed_and_a_stalled_body_is_a_408() {
    let a = backend("a").await;
    let mut proxies = Proxies::new("127.0.0.1".parse().unwrap(), Arc::new(Metrics::new()), 7).unwrap();
    proxies.client_idle = Duration::from_millis(300);
    let port = free_port();
    proxies.set_backends(&AppName::new("web"), http(port), &[backend_at(0, a)]).unwrap();
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
    http::strip_hop_by_hop(&mut h);
    assert_eq!(h.len(), 1);
    assert!(h.contains_key("x-kept"));
}

/// Reads an HTTP/1.1 response's head from `s`: its status and the bytes after the head.
async fn read_head(s: &mut tokio::net::TcpStream) -> (u16, Vec<u8>) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("answered").unwrap();
        assert!(n > 0, "closed before a head: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
        if let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&seen[..at]).into_owned();
            let code = text.split_whitespace().nth(1).unwrap().parse().unwrap();
            return (code, seen[at + 4..].to_vec());
        }
    }
}

/// Sends `head` then `body` in `chunks` pieces, `pause` apart; the whole answer.
async fn send_slowly(port: u16, head: &str, body: &[u8], chunks: usize, pause: Duration) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    for piece in body.chunks(body.len().div_ceil(chunks).max(1)) {
        tokio::time::sleep(pause).await;
        if s.write_all(piece).await.is_err() {
            break; // answered and closed early (a 413)
        }
    }
    let mut out = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await.expect("answered");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_that_keeps_moving_streams_through_and_a_body_over_the_cap_is_a_413() {
    let a = backend("a").await;
    let mut proxies = Proxies::new("127.0.0.1".parse().unwrap(), Arc::new(Metrics::new()), 7).unwrap();
    proxies.client_idle = Duration::from_millis(300);
    let port = free_port();
    let app = AppName::new("web");
    proxies.set_backends(&app, http(port), &[backend_at(0, a)]).unwrap();
    // 1 MB in 8 pieces 150 ms apart: 1.2 s in all, four times the idle timeout; never idle.
    let body = vec![b'x'; 1_000_000];
    let head = "POST /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1000000\r\n\r\n";
    let out = send_slowly(port, head, &body, 8, Duration::from_millis(150)).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("a xff=127.0.0.1 private=- body=1000000"), "{out}");
    // Over the app's cap, by its length: refused before any replica sees it.
    let capped = Frontend { max_body_bytes: Some(1000), ..http(port) };
    proxies.set_backends(&app, capped, &[backend_at(0, a)]).unwrap();
    let head = "POST /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2000\r\n\r\n";
    let out = send_slowly(port, head, &[b'y'; 2000], 1, Duration::ZERO).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    // Chunked, with no length given: cut where it passes the cap.
    let head = "POST /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n";
    let chunked = format!("{:x}\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n", 800, "z".repeat(800), 800, "z".repeat(800));
    let out = send_slowly(port, head, chunked.as_bytes(), 2, Duration::from_millis(50)).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    // Within the cap, chunked: passes whole.
    let chunked = format!("{:x}\r\n{}\r\n0\r\n\r\n", 900, "z".repeat(900));
    let out = send_slowly(port, head, chunked.as_bytes(), 2, Duration::from_millis(50)).await;
    assert!(out.ends_with("body=900"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_answered_here_and_not_forwarded() {
    let a = backend("a").await;
    let proxies = Proxies::new("127.0.0.1".parse().unwrap(), Arc::new(Metrics::new()), 7).unwrap();
    let port = free_port();
    proxies.set_backends(&AppName::new("web"), http(port), &[backend_at(0, a)]).unwrap();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    let (code, rest) = read_head(&mut s).await;
    assert_eq!(code, 100, "{}", String::from_utf8_lossy(&rest));
    s.write_all(b"hello").await.unwrap();
    let mut out = String::from_utf8_lossy(&rest).into_owned();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("a xff=127.0.0.1 private=- body=5"), "the backend got no Expect: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_whose_replica_refuses_goes_to_another_and_connections_are_reused() {
    let (live, accepted) = backend_counting("live").await;
    let refusing = free_port();
    let proxies = Proxies::new("127.0.0.1".parse().unwrap(), Arc::new(Metrics::new()), 7).unwrap();
    let port = free_port();
    let app = AppName::new("web");
    proxies.set_backends(&app, http(port), &[backend_at(0, refusing), backend_at(1, live)]).unwrap();
    // Nothing reached the refusing replica: even a POST goes on to the next.
    for _ in 0..2 {
        let head = "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 3\r\n\r\n";
        let out = send_slowly(port, head, b"abc", 1, Duration::ZERO).await;
        assert!(out.ends_with("live xff=127.0.0.1 private=- body=3"), "{out}");
    }
    for _ in 0..20 {
        assert_eq!(get(port).await.0, 200);
    }
    // One kept-alive connection per balancer thread served them all.
    let threads = proxies.workers.len();
    assert!(accepted.load(std::sync::atomic::Ordering::Relaxed) <= threads, "{accepted:?} for {threads}");
    assert!(proxies.workers.iter().all(|w| w.pool.idle() <= 1));
}

/// A backend that reads one request head, then closes without answering: a replica that died
/// with the request.
async fn dying_backend() -> u16 {
    raw_backend(|mut stream| async move {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                _ => return,
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_reached_a_failing_replica_is_sent_again_only_if_idempotent_and_kept() {
    let (dying, live) = (dying_backend().await, backend("live").await);
    let metrics = Arc::new(Metrics::new());
    let proxies = Proxies::new("127.0.0.1".parse().unwrap(), metrics.clone(), 7).unwrap();
    let port = free_port();
    let app = AppName::new("web");
    // Round-robin from the dying one: every request meets it first, or second.
    let frontend = Frontend { picker: PickerKind::RoundRobin, ..http(port) };
    proxies.set_backends(&app, frontend, &[backend_at(0, dying), backend_at(1, live)]).unwrap();
    let put = |len: usize| {
        format!("PUT / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len}\r\n\r\n{}", "p".repeat(len))
    };
    let post = "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc";
    let (mut gets, mut puts, mut posts) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..4 {
        gets.push(get(port).await.0);
        puts.push(send_slowly(port, &put(1000), b"", 1, Duration::ZERO).await[9..12].to_owned());
        posts.push(send_slowly(port, post, b"", 1, Duration::ZERO).await[9..12].to_owned());
    }
    assert_eq!(gets, [200; 4], "a GET is sent again");
    assert_eq!(puts, ["200"; 4], "a short PUT was kept whole and is sent again");
    assert!(posts.contains(&"502".to_owned()), "a POST that reached a replica is not: {posts:?}");
    // A PUT too long to keep is not sent again once it reached the replica.
    let long = put(limits::RETRY_BODY_BYTES_MAX + 1);
    let mut codes = Vec::new();
    for _ in 0..2 {
        codes.push(send_slowly(port, &long, b"", 1, Duration::ZERO).await[9..12].to_owned());
    }
    assert!(codes.contains(&"502".to_owned()), "{codes:?}");
}

/// A backend that answers a head with a body promised 100 bytes long, sends 10 and closes.
async fn cutting_backend() -> u16 {
    raw_backend(|mut stream| async move {
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf).await;
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789").await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_cut_mid_body_is_counted_as_an_error_and_cut_for_the_client() {
    let cutting = cutting_backend().await;
    let metrics = Arc::new(Metrics::new());
    let proxies = Proxies::new("127.0.0.1".parse().unwrap(), metrics.clone(), 7).unwrap();
    let port = free_port();
    proxies.set_backends(&AppName::new("web"), http(port), &[backend_at(0, cutting)]).unwrap();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let (code, mut rest) = read_head(&mut s).await;
    assert_eq!(code, 200);
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("closed") {
            Ok(0) | Err(_) => break,
            Ok(n) => rest.extend_from_slice(&buf[..n]),
        }
    }
    assert_eq!(rest, b"0123456789", "the client's connection is closed short, not padded");
    assert_eq!(metrics.errors.get_or_create(&AppLabel::new("web")).get(), 1);
}

/// A backend that switches to any protocol asked, then echoes every byte.
async fn upgrading_backend() -> u16 {
    raw_backend(|stream| async move {
        let service = hyper::service::service_fn(|mut req: Request<Incoming>| async move {
            let asked = req.headers().get("upgrade").cloned().unwrap_or(HeaderValue::from_static("none"));
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let mut io = TokioIo::new(on.await.expect("upgraded"));
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut().insert("upgrade", asked);
            r.headers_mut().insert("connection", HeaderValue::from_static("upgrade"));
            Ok::<_, Infallible>(r)
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades()
            .await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_becomes_a_tunnel_to_the_replica() {
    let up = upgrading_backend().await;
    let proxies = Proxies::new("127.0.0.1".parse().unwrap(), Arc::new(Metrics::new()), 7).unwrap();
    let port = free_port();
    proxies.set_backends(&AppName::new("web"), http(port), &[backend_at(0, up)]).unwrap();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    let (code, rest) = read_head(&mut s).await;
    assert_eq!(code, 101);
    assert!(rest.is_empty());
    for message in [&b"ping"[..], b"a longer frame of bytes"] {
        s.write_all(message).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echoed)).await.expect("echoed").unwrap();
        assert_eq!(echoed, message);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_speaking_http2_with_prior_knowledge_is_served() {
    let a = backend("a").await;
    let proxies = Proxies::new("127.0.0.1".parse().unwrap(), Arc::new(Metrics::new()), 7).unwrap();
    let port = free_port();
    proxies.set_backends(&AppName::new("web"), http(port), &[backend_at(0, a)]).unwrap();
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    // Several streams at once on the one connection.
    let mut answers = Vec::new();
    for i in 0..3 {
        let body = Full::new(Bytes::from(vec![b'q'; i * 10]));
        let req = Request::post(format!("http://x:{port}/{i}")).body(body).unwrap();
        answers.push(sender.send_request(req));
    }
    for (i, answer) in answers.into_iter().enumerate() {
        let response = answer.await.unwrap();
        assert_eq!(response.status(), 200);
        let text = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
        let expected = if i == 0 {
            "a xff=127.0.0.1 private=-".to_owned()
        } else {
            format!("a xff=127.0.0.1 private=- body={}", i * 10)
        };
        assert_eq!(text, expected);
    }
}

/// A TCP server that prefixes every chunk it echoes with `name`.
async fn echo_backend(name: &'static str) -> u16 {
    raw_backend(move |mut stream| async move {
        let mut buf = [0u8; 1024];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let mut out = name.as_bytes().to_vec();
            out.extend_from_slice(&buf[..n]);
            if stream.write_all(&out).await.is_err() {
                break;
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_service_spreads_connections_and_skips_a_refusing_replica() {
    let (a, b, refusing) = (echo_backend("a:").await, echo_backend("b:").await, free_port());
    let metrics = Arc::new(Metrics::new());
    let proxies = Proxies::new("127.0.0.1".parse().unwrap(), metrics.clone(), 7).unwrap();
    let port = free_port();
    let app = AppName::new("db");
    let tcp = Frontend { port, picker: PickerKind::RoundRobin, protocol: Protocol::Tcp, max_body_bytes: None };
    proxies.set_backends(&app, tcp, &[backend_at(0, a), backend_at(1, refusing), backend_at(2, b)]).unwrap();
    let mut seen = Vec::new();
    for _ in 0..6 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(b"select 1").await.unwrap();
        let mut out = [0u8; 10];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut out)).await.expect("echoed").unwrap();
        seen.push(String::from_utf8_lossy(&out).into_owned());
    }
    assert_eq!(seen.iter().filter(|s| *s == "a:select 1").count(), 3, "{seen:?}");
    assert_eq!(seen.iter().filter(|s| *s == "b:select 1").count(), 3, "{seen:?}");
    assert_eq!(proxies.apps.lock().unwrap()[&app].proxy.backends(), 2, "the refusing replica is out");
    assert_eq!(proxies.take_counts(), vec![(app.clone(), 6)]);
    // The same app as HTTP now: the listener is reopened speaking HTTP.
    proxies.set_backends(&app, http(port), &[]).unwrap();
    assert_eq!(get(port).await.0, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_reuse_the_backend_connections() {
    let (a, accepted_a) = backend_counting("a").await;
    let (b, accepted_b) = backend_counting("b").await;
    let proxies = Proxies::new("127.0.0.1".parse().unwrap(), Arc::new(Metrics::new()), 7).unwrap();
    let port = free_port();
    proxies.set_backends(&AppName::new("web"), http(port), &[backend_at(0, a), backend_at(1, b)]).unwrap();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
                tokio::spawn(connection);
                for _ in 0..100 {
                    let req = Request::get("/").header("host", "x").body(Full::new(Bytes::new())).unwrap();
                    let response = sender.send_request(req).await.unwrap();
                    assert_eq!(response.status(), 200);
                    response.into_body().collect().await.unwrap();
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    let opened =
        accepted_a.load(std::sync::atomic::Ordering::Relaxed) + accepted_b.load(std::sync::atomic::Ordering::Relaxed);
    // At most one per request in flight at once: 8 clients, on each balancer thread.
    assert!(opened <= 8 * proxies.workers.len(), "{opened} backend connections for 800 requests");
}
