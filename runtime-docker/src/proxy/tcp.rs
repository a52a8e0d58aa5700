//! The TCP balancer (`protocol = "tcp"`): each client connection goes to one replica, picked as
//! HTTP requests are (least-in-flight counts open connections), and its bytes pass through
//! both ways untouched until either side closes. A replica that refuses the connection, or does
//! not accept it within the connect timeout, is ejected and the next one tried: nothing of the
//! client's had been sent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::pick::AppProxy;
use super::{CONNECT_TIMEOUT_MS, accept_one, tunnel};

/// Accepts the app's client connections until aborted.
pub(super) async fn accept_loop(listener: TcpListener, proxy: Arc<AppProxy>, slots: Arc<tokio::sync::Semaphore>) {
    loop {
        let Some((client, _peer, permit)) = accept_one(&listener, &proxy.app, &slots).await else { continue };
        let proxy = proxy.clone();
        tokio::spawn(async move {
            pass(client, &proxy).await;
            drop(permit);
        });
    }
}

async fn pass(client: TcpStream, proxy: &AppProxy) {
    proxy.count();
    let mut excluded = None;
    loop {
        let Some(target) = proxy.pick(excluded.as_ref()) else {
            proxy.errors_metric.inc();
            tracing::warn!(app = %proxy.app, "connection closed: no healthy replica");
            return;
        };
        match connect(target.addr).await {
            Ok(replica) => {
                tunnel(client, replica, proxy, &target).await;
                proxy.finished(&target);
                return;
            }
            Err(e) => {
                proxy.finished(&target);
                tracing::debug!(app = %proxy.app, slot = %target.slot, "connect: {e}");
                proxy.eject(&target);
                excluded = Some(target);
            }
        }
    }
}

async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}
