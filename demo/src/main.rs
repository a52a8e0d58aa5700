//! canteen-demo: the small HTTP workload canteen's Docker tests and examples run.
//!
//! Nothing can be pulled on the machines canteen is tested on, so the project builds this
//! binary statically and ships it in a `FROM scratch` image (`scripts/demo-image`). It uses the
//! standard library only, one thread per connection, HTTP/1.1 with keep-alive.
//!
//! - `GET /` answers `replica <id>`: the `CANTEEN_SLOT` the agent sets, else the hostname;
//! - `GET /health` answers 200, or 500 once `/crash` was called;
//! - `GET /crash` makes `/health` fail from then on;
//! - `GET /slow?ms=N` waits N milliseconds (at most 60 s) before answering;
//! - `POST /upload` reads its body, of any length, and throws it away, answering how many
//!   bytes came (the balancer's upload figures go through it);
//! - `GET /data` reads `$CANTEEN_DATA_DIR/data.txt` (default `/data`), `POST /data` (or
//!   `GET /data?write=TEXT`) writes it: the shared volume test goes through it.
//!
//! It listens on `0.0.0.0:$PORT` (default 8080).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Bounds on what one request may carry.
const HEADER_LINES_MAX: usize = 100;
const BODY_BYTES_MAX: usize = 1024 * 1024;
const SLOW_MS_MAX: u64 = 60_000;

struct State {
    id: String,
    crashed: AtomicBool,
    data_dir: String,
}

fn main() {
    let port = std::env::var("PORT").ok().and_then(|p| p.parse::<u16>().ok()).unwrap_or(8080);
    let id = std::env::var("CANTEEN_SLOT").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "unknown".to_owned())
    });
    let data_dir = std::env::var("CANTEEN_DATA_DIR").unwrap_or_else(|_| "/data".to_owned());
    let state = Arc::new(State { id, crashed: AtomicBool::new(false), data_dir });
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("canteen-demo: cannot listen on port {port}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("canteen-demo: replica {} listening on 0.0.0.0:{port}", state.id);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let state = Arc::clone(&state);
        std::thread::spawn(move || serve(stream, &state));
    }
}

/// One connection: requests until the client closes or asks to.
fn serve(stream: TcpStream, state: &State) {
    let _ = stream.set_nodelay(true);
    let Ok(write_half) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    let mut writer = write_half;
    loop {
        let Some(request) = read_request(&mut reader) else { return };
        let (status, body) = answer(&request, state);
        let reason = if status == 200 {
            "OK"
        } else if status == 404 {
            "Not Found"
        } else {
            "Error"
        };
        let connection = if request.close { "close" } else { "keep-alive" };
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: {connection}\r\n\r\n",
            body.len()
        );
        if writer.write_all(head.as_bytes()).and_then(|()| writer.write_all(body.as_bytes())).is_err() {
            return;
        }
        if request.close {
            return;
        }
    }
}

struct Request {
    method: String,
    path: String,
    query: String,
    body: Vec<u8>,
    /// Bytes of a body read and thrown away (`/upload`).
    discarded: u64,
    close: bool,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let version = parts.next().unwrap_or("HTTP/1.0").to_owned();
    let mut content_length = 0usize;
    let mut close = version == "HTTP/1.0";
    for _ in 0..HEADER_LINES_MAX {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().ok()?;
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (target, String::new()),
    };
    if path == "/upload" {
        let discarded = std::io::copy(&mut reader.by_ref().take(content_length as u64), &mut std::io::sink()).ok()?;
        if discarded != content_length as u64 {
            return None;
        }
        return Some(Request { method, path, query, body: Vec::new(), discarded, close });
    }
    if content_length > BODY_BYTES_MAX {
        return None;
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body).ok()?;
    Some(Request { method, path, query, body, discarded: 0, close })
}

fn query_value<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == key).map(|(_, v)| v)
}

fn answer(request: &Request, state: &State) -> (u16, String) {
    match request.path.as_str() {
        "/" => (200, format!("replica {}\n", state.id)),
        "/health" => {
            if state.crashed.load(Ordering::Relaxed) {
                (500, "unhealthy\n".to_owned())
            } else {
                (200, "ok\n".to_owned())
            }
        }
        "/crash" => {
            state.crashed.store(true, Ordering::Relaxed);
            (200, format!("replica {} will fail its health checks\n", state.id))
        }
        "/slow" => {
            let ms = query_value(&request.query, "ms").and_then(|v| v.parse::<u64>().ok()).unwrap_or(100);
            std::thread::sleep(Duration::from_millis(ms.min(SLOW_MS_MAX)));
            (200, format!("replica {} waited {ms} ms\n", state.id))
        }
        "/data" => data(request, state),
        "/upload" => (200, format!("replica {} received {} bytes\n", state.id, request.discarded)),
        _ => (404, "not found\n".to_owned()),
    }
}

fn data(request: &Request, state: &State) -> (u16, String) {
    let file = format!("{}/data.txt", state.data_dir);
    let write = if request.method == "POST" || request.method == "PUT" {
        Some(String::from_utf8_lossy(&request.body).into_owned())
    } else {
        query_value(&request.query, "write").map(str::to_owned)
    };
    match write {
        Some(text) => match std::fs::write(&file, text.as_bytes()) {
            Ok(()) => (200, format!("replica {} wrote {} bytes\n", state.id, text.len())),
            Err(e) => (500, format!("replica {} cannot write {file}: {e}\n", state.id)),
        },
        None => match std::fs::read_to_string(&file) {
            Ok(text) => (200, text),
            Err(e) => (500, format!("replica {} cannot read {file}: {e}\n", state.id)),
        },
    }
}
