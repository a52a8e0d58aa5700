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
        return match tokio::time::timeout(timeout, tcp_once(addr, timeout)).await {
            Err(_) => ProbeOutcome::Timeout,
            Ok(true) => ProbeOutcome::Success,
            Ok(false) => ProbeOutcome::Failure,
        };
    }
    match tokio::time::timeout(timeout, probe_once(addr, path)).await {
        Err(_) => ProbeOutcome::Timeout,
        Ok(Ok(status)) if (200..300).contains(&status) => ProbeOutcome::Success,
        Ok(_) => ProbeOutcome::Failure,
    }
}

/// How long a TCP probe waits, once connected, for the connection to be closed on it.
const TCP_CLOSE_WAIT: Duration = Duration::from_millis(100);

/// Whether something listens at `addr`. Docker's proxy accepts every connection to a published
/// port, and closes it at once when nothing listens in the container: a connection still open
/// after a moment (a server waiting for its client), or one that sends a greeting (SSH, SMTP,
/// a database), is a listening app.
async fn tcp_once(addr: SocketAddr, timeout: Duration) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr).await else { return false };
    let mut byte = [0u8; 1];
    match tokio::time::timeout(TCP_CLOSE_WAIT.min(timeout / 2), stream.read(&mut byte)).await {
        Err(_) => true,
        Ok(Ok(n)) => n > 0,
        Ok(Err(_)) => false,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime").block_on(f)
    }

    #[test]
    fn a_tcp_probe_passes_a_listening_app_only() {
        block_on(async {
            let ip: IpAddr = "127.0.0.1".parse().expect("an address");
            // A server that waits for its client: passes.
            let listening = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let port = listening.local_addr().expect("bound").port();
            let held = tokio::spawn(async move {
                let (s, _) = listening.accept().await.expect("accept");
                tokio::time::sleep(Duration::from_secs(1)).await;
                drop(s);
            });
            assert_eq!(probe(HealthKind::Tcp, ip, port, "/", 500).await, ProbeOutcome::Success);
            held.abort();
            // What Docker's proxy does with nothing listening behind it: accept, then close.
            let closing = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let port = closing.local_addr().expect("bound").port();
            tokio::spawn(async move {
                let (s, _) = closing.accept().await.expect("accept");
                drop(s);
            });
            assert_eq!(probe(HealthKind::Tcp, ip, port, "/", 500).await, ProbeOutcome::Failure);
            // Nothing at all.
            let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let port = gone.local_addr().expect("bound").port();
            drop(gone);
            assert_eq!(probe(HealthKind::Tcp, ip, port, "/", 500).await, ProbeOutcome::Failure);
        });
    }
}
