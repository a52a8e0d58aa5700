//! Kept-alive HTTP/1.1 connections to backends, shared by every app's balancer.
//!
//! A connection is handed back when its response body has been read to the end, and the
//! freshest idle one is taken first: under a steady load the same few connections serve every
//! request (a burst's extras sink to the bottom of the stack and age out), so the balancer
//! rarely connects afresh. A connection is taken by one request at a time (HTTP/1.1 has no
//! multiplexing), so a backend with `n` requests in flight holds `n` connections.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::ForwardBody;
use super::{CONNECT_TIMEOUT_MS, CONNECTION_BUFFER_BYTES_MAX, POOL_IDLE_MAX, POOL_IDLE_MS, POOL_IDLE_PER_BACKEND_MAX};

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
    idle: Mutex<Stacks>,
}

#[derive(Default)]
struct Stacks {
    by_addr: HashMap<SocketAddr, Vec<Idle>, BuildHasherDefault<AddrHasher>>,
    /// Idle connections in all the stacks, at most [`POOL_IDLE_MAX`].
    total: usize,
}

/// A connection handed back, and when.
type Idle = (Sender, Instant);

/// Hashes the backend addresses the pool is keyed by, twice per request: a multiply and a
/// rotate per word instead of SipHash's rounds. The keys are the node's own list of replicas,
/// not chosen by clients, so flooding is not a concern.
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
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
        let Stacks { by_addr, total } = &mut *idle;
        let stack = by_addr.get_mut(&addr)?;
        while let Some((sender, since)) = stack.pop() {
            *total -= 1;
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
        if idle.total >= POOL_IDLE_MAX {
            return;
        }
        let stack = idle.by_addr.entry(addr).or_default();
        if stack.len() < POOL_IDLE_PER_BACKEND_MAX {
            stack.push((sender, Instant::now()));
            idle.total += 1;
        }
    }

    /// Closes the connections idle longer than [`POOL_IDLE_MS`] or closed by their backend.
    pub(super) fn reap(&self) {
        let max = Duration::from_millis(POOL_IDLE_MS);
        let mut idle = self.idle.lock().expect("pool lock");
        idle.by_addr.retain(|_, stack| {
            stack.retain(|(sender, since)| !sender.is_closed() && since.elapsed() < max);
            !stack.is_empty()
        });
        idle.total = idle.by_addr.values().map(Vec::len).sum();
    }

    /// Idle connections held, all backends together.
    #[cfg(test)]
    pub(super) fn idle(&self) -> usize {
        self.idle.lock().expect("pool lock").total
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
