//! Kept-alive HTTP/1.1 connections to backends, shared by every app's balancer.
//!
//! A connection is handed back when its response body has been read to the end, and the
//! freshest idle one is taken first: under a steady load the same few connections serve every
//! request (a burst's extras sink to the bottom of the stack and age out), so the balancer
//! rarely connects afresh. A connection is taken by one request at a time (HTTP/1.1 has no
//! multiplexing), so a backend with `n` requests in flight holds `n` connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::ForwardBody;
use super::{CONNECT_TIMEOUT_MS, CONNECTION_BUFFER_BYTES_MAX, POOL_IDLE_MS, POOL_IDLE_PER_BACKEND_MAX};

/// One connection's request half.
pub(super) type Sender = http1::SendRequest<ForwardBody>;

/// Why no connection to a backend could be had. Nothing of the request was sent.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectError {
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
    #[error("connect: no answer within {CONNECT_TIMEOUT_MS} ms")]
    Timeout,
    #[error("connect: {0}")]
    Handshake(#[from] hyper::Error),
}

/// Idle connections by backend address, the freshest last.
#[derive(Default)]
pub(super) struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<(Sender, Instant)>>>,
}

impl Pool {
    /// A connection to `addr` ready for a request: an idle one, else a new one.
    pub(super) async fn checkout(&self, addr: SocketAddr) -> Result<Sender, ConnectError> {
        while let Some(mut sender) = self.take(addr) {
            // Handed back at the end of its last response, it is ready as soon as its task
            // has seen that end; a closed one errs here, before anything is sent on it.
            if sender.ready().await.is_ok() {
                return Ok(sender);
            }
        }
        connect(addr).await
    }

    fn take(&self, addr: SocketAddr) -> Option<Sender> {
        let mut idle = self.idle.lock().expect("pool lock");
        let stack = idle.get_mut(&addr)?;
        while let Some((sender, since)) = stack.pop() {
            if !sender.is_closed() && since.elapsed() < Duration::from_millis(POOL_IDLE_MS) {
                return Some(sender);
            }
        }
        None
    }

    /// Hands back a connection whose response was read to the end.
    pub(super) fn put(&self, addr: SocketAddr, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().expect("pool lock");
        let stack = idle.entry(addr).or_default();
        if stack.len() < POOL_IDLE_PER_BACKEND_MAX {
            stack.push((sender, Instant::now()));
        }
    }

    /// Closes the connections idle longer than [`POOL_IDLE_MS`] or closed by their backend.
    pub(super) fn reap(&self) {
        let max = Duration::from_millis(POOL_IDLE_MS);
        let mut idle = self.idle.lock().expect("pool lock");
        idle.retain(|_, stack| {
            stack.retain(|(sender, since)| !sender.is_closed() && since.elapsed() < max);
            !stack.is_empty()
        });
    }

    /// Idle connections held, all backends together.
    #[cfg(test)]
    pub(super) fn idle(&self) -> usize {
        self.idle.lock().expect("pool lock").values().map(Vec::len).sum()
    }
}

async fn connect(addr: SocketAddr) -> Result<Sender, ConnectError> {
    let stream = tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout)??;
    stream.set_nodelay(true)?;
    let (sender, connection) =
        http1::Builder::new().max_buf_size(CONNECTION_BUFFER_BYTES_MAX).handshake(TokioIo::new(stream)).await?;
    // The connection's task ends when the backend closes it or every sender is dropped; with
    // upgrades, a 101 hands its socket to the tunnel instead.
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(%addr, "backend connection: {e}");
        }
    });
    Ok(sender)
}
