//! A forging tool, for tests only: canteen packets built from core's own wire types, as an
//! attacker who read the source would build them, sent raw or sealed to a real agent's gossip
//! socket.

use std::net::{SocketAddr, UdpSocket};

use canteen_core::model::{AppSpec, NodeId};
use canteen_core::node::{Message, Packet, Value, WireEntry};
use canteen_core::registry::{Entry, Head, Key, Version};
use canteen_core::seal::{Keyring, Sealer};

/// A packet from `from` that writes `spec` under `app/<name>` at `wall_ms`.
pub fn app_write(from: &str, spec: AppSpec, wall_ms: u64) -> Vec<u8> {
    let key = Key::App(spec.name.clone());
    let version = Version { wall_ms, logical: 0, writer: NodeId::new(from) };
    let head = Head::of(&key, &version);
    let body = postcard::to_allocvec(&(key, Entry { version, value: Some(Value::App(Box::new(spec))) })).unwrap();
    Packet::encode(&NodeId::new(from), &Message::Updates(vec![WireEntry { head, body: &body }]))
}

/// A harmless packet: an anti-entropy root.
pub fn root(from: &str) -> Vec<u8> {
    Packet::encode(&NodeId::new(from), &Message::Root(0))
}

/// An app spec running `image` with `name`, as a cluster file gives it.
pub fn spec(name: &str, image: &str, port: u16) -> AppSpec {
    let text = format!(
        "[[node]]\nname = \"n\"\ncpu_millis = 1000\nmem_mb = 1024\n[[app]]\nname = \"{name}\"\nimage = \"{image}\"\n\
         port = {port}\nreplicas = 2\ncpu_millis = 10\nmem_mb = 16\n"
    );
    canteen_core::cluster_file::parse("forged.toml", &text).unwrap().apps.remove(0)
}

/// `packet` sealed under `keys` (the first seals), cluster `cluster`, as node `from` in life
/// `life`.
pub fn sealed(cluster: &str, keys: &[[u8; 32]], from: &str, life: u64, packet: &[u8]) -> Vec<u8> {
    let keyring = std::sync::Arc::new(Keyring::new(cluster, keys).unwrap());
    Sealer::new(keyring, canteen_core::seal::sender_of(from), life, [0xf0; 8]).seal(packet)
}

/// Sends `datagram` to `to` from a fresh socket.
pub fn send(to: SocketAddr, datagram: &[u8]) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.send_to(datagram, to).unwrap();
}
