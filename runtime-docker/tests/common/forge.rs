//! A forging tool, for tests only: canteen packets built from core's own wire types, as an
//! attacker who read the source would build them, sent raw or sealed to a real agent's gossip
//! socket.

use std::net::{SocketAddr, UdpSocket};

use canteen_core::membership::{PeerAddr, SwimId, SwimMember};
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

/// A packet from `from` with these registry entries (key, version's wall time, value).
pub fn updates(from: &str, entries: &[(Key, u64, Option<Value>)]) -> Vec<u8> {
    let encoded: Vec<(Head, Vec<u8>)> = entries
        .iter()
        .map(|(key, wall_ms, value)| {
            let version = Version { wall_ms: *wall_ms, logical: 0, writer: NodeId::new(from) };
            let head = Head::of(key, &version);
            (head, postcard::to_allocvec(&(key, Entry { version, value: value.clone() })).unwrap())
        })
        .collect();
    let wire: Vec<WireEntry<'_>> = encoded.iter().map(|(head, body)| WireEntry { head: *head, body }).collect();
    Packet::encode(&NodeId::new(from), &Message::Updates(wire))
}

/// A SWIM push-pull sync from `sender` (its identity first) listing `members`.
pub fn sync(sender: SwimMember, members: Vec<SwimMember>) -> Vec<u8> {
    let from = sender.id().node().clone();
    let mut all = vec![sender];
    all.extend(members);
    Packet::encode(&from, &Message::SwimSync { members: all, reply: false })
}

/// A member `node` at `addr` in life `generation`, in `state`.
pub fn member(node: &str, addr: &str, generation: u64, state: foca::State) -> SwimMember {
    SwimMember::new(SwimId::new(NodeId::new(node), PeerAddr::new(addr), generation), 0, state)
}

/// A load report from `from`.
pub fn load(from: &str, app: &str, requests: u64) -> Vec<u8> {
    Packet::encode(&NodeId::new(from), &Message::Load { app: app.into(), requests })
}
