//! Health probes: an HTTP `GET` on a fresh connection, a 2xx status in time is a success; or a
//! TCP connect in time.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use canteen_core::health::ProbeOutcome;
use canteen_core::model::HealthKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The status line is all a probe reads; a longer head is cut here.
const PROBE_READ_BYTES_MAX: usize = 1024;

/// Probes `http://ip:port{path}` once (`kind` HTTP), or connects to `ip:port` (TCP), within
/// `timeout_ms`.
pub async fn probe(kind: HealthKind, ip: IpAddr, port: u16, path: &str, timeout_ms: u64) -> ProbeOutcome {
    let addr = SocketAddr::new(ip, port);
    let timeout = Duration::from_millis(timeout_ms);
    if kind != HealthKind::Http {
        return match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Err(_) => ProbeOutcome::Timeout,
            Ok(Ok(_)) => ProbeOutcome::Success,
            Ok(Err(_)) => ProbeOutcome::Failure,
        };
    }
    match tokio::time::timeout(timeout, probe_once(addr, path)).await {
        Err(_) => ProbeOutcome::Timeout,
        Ok(Ok(status)) if (200..300).contains(&status) => ProbeOutcome::Success,
        Ok(_) => ProbeOutcome::Failure,
    }
}

async fn probe_once(addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: canteen-probe\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut buf = vec![0u8; PROBE_READ_BYTES_MAX];
    let mut len = 0;
    while len < buf.len() {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
        if buf[..len].contains(&b'\n') {
            break;
        }
    }
    let line = String::from_utf8_lossy(&buf[..len]);
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok());
    status.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no HTTP status line"))
}
