//! Who a SWIM member is: its node name, its gossip address ([`PeerAddr`]) and the life
//! ([`SwimId`]'s generation) it is in, shared and compared cheaply, since foca compares them on
//! every packet.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use foca::Identity;
use serde::{Deserialize, Serialize};

use crate::hash::{mix, stable_hash};
use crate::model::NodeId;

/// Where a node's packets go: a string its driver understands (the real agent's `host:port`
/// of its UDP socket, the simulator's node address). Cheap to clone (shared) and to compare (it
/// carries its hash): foca compares addresses in linear scans of its member list, so at a
/// thousand members a string comparison there was a third of the simulator's time.
#[derive(Clone)]
pub struct PeerAddr {
    text: Arc<str>,
    hash: u64,
}

impl PeerAddr {
    /// The address `text`.
    pub fn new(text: &str) -> PeerAddr {
        let hash = stable_hash(text.as_bytes());
        let text = crate::intern::peer_addr(hash, text);
        PeerAddr { text, hash }
    }

    /// The address as the driver gave it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// A stable 64-bit hash of the address.
    pub fn hash64(&self) -> u64 {
        self.hash
    }
}

impl PartialEq for PeerAddr {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && (Arc::ptr_eq(&self.text, &other.text) || self.text == other.text)
    }
}

impl Eq for PeerAddr {}

impl PartialOrd for PeerAddr {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PeerAddr {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.text.cmp(&other.text)
    }
}

impl Hash for PeerAddr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl fmt::Debug for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text, f)
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<&str> for PeerAddr {
    fn from(text: &str) -> Self {
        PeerAddr::new(text)
    }
}

impl Serialize for PeerAddr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for PeerAddr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Ok(PeerAddr::new(&text))
    }
}

/// A member's identity: its node name, its address and the generation of this life of it.
///
/// Twenty-four bytes: the address's hash and the generation inline, the rest shared. foca
/// keeps its members in a vector and scans it on every packet (each packet's sender is applied
/// as alive), so at a thousand members the size of an identity is what a scan costs: inline
/// names made it three times as long. The generation is inline so that telling two lives apart
/// and fingerprinting the members ([`super::Swim::fingerprint`]) read no shared part.
#[derive(Clone)]
pub struct SwimId {
    pub(super) addr_hash: u64,
    pub(super) generation: u64,
    life: Arc<SwimLife>,
}

/// What a [`SwimId`] names, on the wire.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
struct SwimLife {
    node: NodeId,
    addr: PeerAddr,
    generation: u64,
}

impl SwimId {
    /// The life `generation` of `node`, reached at `addr`.
    pub fn new(node: NodeId, addr: PeerAddr, generation: u64) -> SwimId {
        SwimId { addr_hash: addr.hash, generation, life: Arc::new(SwimLife { node, addr, generation }) }
    }

    /// The node.
    pub fn node(&self) -> &NodeId {
        &self.life.node
    }

    /// Where its packets go; foca tells members apart by it.
    pub fn peer_addr(&self) -> &PeerAddr {
        &self.life.addr
    }

    /// Higher in each life of the node: a restart, or a rejoin after being declared down.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether `other` is the very same shared copy (for tests of the cache).
    #[cfg(test)]
    pub(super) fn is_same_copy(&self, other: &SwimId) -> bool {
        Arc::ptr_eq(&self.life, &other.life)
    }
}

impl PartialEq for SwimId {
    fn eq(&self, other: &Self) -> bool {
        self.addr_hash == other.addr_hash
            && self.generation == other.generation
            && (Arc::ptr_eq(&self.life, &other.life) || self.life == other.life)
    }
}

impl Eq for SwimId {}

impl PartialOrd for SwimId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SwimId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.life.cmp(&other.life)
    }
}

impl Hash for SwimId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.life.hash(state);
    }
}

impl fmt::Debug for SwimId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}#{}", self.life.node, self.life.addr, self.life.generation)
    }
}

impl Serialize for SwimId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.life.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SwimId {
    /// Reads what `SwimLife` writes (node, address, generation) and hands out this thread's
    /// shared copy of that identity (`SwimId::shared`).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{Error, MapAccess, SeqAccess, Visitor};
        use std::borrow::Cow;

        struct IdVisitor;
        impl<'de> Visitor<'de> for IdVisitor {
            type Value = SwimId;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a SWIM identity: node, address, generation")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SwimId, A::Error> {
                let node: Cow<'de, str> = seq.next_element()?.ok_or_else(|| A::Error::invalid_length(0, &self))?;
                let addr: Cow<'de, str> = seq.next_element()?.ok_or_else(|| A::Error::invalid_length(1, &self))?;
                let generation: u64 = seq.next_element()?.ok_or_else(|| A::Error::invalid_length(2, &self))?;
                checked(&node, &addr, generation).map_err(A::Error::custom)?;
                Ok(SwimId::shared(&node, &addr, generation))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SwimId, A::Error> {
                let (mut node, mut addr, mut generation) = (None, None, None);
                while let Some(field) = map.next_key::<Cow<'de, str>>()? {
                    match &*field {
                        "node" => node = Some(map.next_value::<Cow<'de, str>>()?),
                        "addr" => addr = Some(map.next_value::<Cow<'de, str>>()?),
                        "generation" => generation = Some(map.next_value::<u64>()?),
                        other => return Err(A::Error::unknown_field(other, FIELDS)),
                    }
                }
                let node = node.ok_or_else(|| A::Error::missing_field("node"))?;
                let addr = addr.ok_or_else(|| A::Error::missing_field("addr"))?;
                let generation = generation.ok_or_else(|| A::Error::missing_field("generation"))?;
                checked(&node, &addr, generation).map_err(A::Error::custom)?;
                Ok(SwimId::shared(&node, &addr, generation))
            }
        }

        const FIELDS: &[&str] = &["node", "addr", "generation"];
        deserializer.deserialize_struct("SwimLife", FIELDS, IdVisitor)
    }
}

/// What an identity from the network must be, as a node's config must (`NodeConfig::check`):
/// a valid node name (or none) and an address of 1 to `NODE_ADDR_LEN_MAX` bytes. A longer one would be
/// interned and held, and a bad name would reach the view.
fn checked(node: &str, addr: &str, generation: u64) -> Result<(), String> {
    // No name: the destination of an announce, whose name the sender does not know yet
    // (`Swim::announce`); never a member (`Swim::apply_sync` and `Swim::alive` leave it out).
    if !node.is_empty() {
        crate::model::validate_name(node).map_err(|e| format!("a member's name: {e}"))?;
    }
    if addr.is_empty() || addr.len() > crate::limits::NODE_ADDR_LEN_MAX {
        return Err(format!("a member's address of {} bytes", addr.len()));
    }
    let ceiling = GENERATION_CEILING.with(std::cell::Cell::get);
    if generation > ceiling {
        return Err(format!("{node}@{addr}: generation {generation} is in the future (at most {ceiling})"));
    }
    Ok(())
}

thread_local! {
    /// The highest generation an identity decoded on this thread may have (see
    /// [`with_generation_ceiling`]); no bound outside it.
    static GENERATION_CEILING: std::cell::Cell<u64> = const { std::cell::Cell::new(u64::MAX) };
}

/// Runs `decode` with identities above `ceiling` refused as undecodable. A life's generation is
/// its agent's start time (or a count of lives, in the simulator): one far in the future is a
/// forgery that would win every address conflict (`Identity::win_addr_conflict`) against the
/// real node at that address, keeping it down, and itself after each restart, until the
/// clock caught up. A node decodes each packet inside this, with its clock's tolerance.
pub fn with_generation_ceiling<R>(ceiling: u64, decode: impl FnOnce() -> R) -> R {
    /// Puts the ceiling back however `decode` ends.
    struct Restore(u64);
    impl Drop for Restore {
        fn drop(&mut self) {
            GENERATION_CEILING.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(GENERATION_CEILING.with(|c| c.replace(ceiling)));
    decode()
}

thread_local! {
    /// One shared copy of each SWIM identity this thread decodes, by a hash of the whole
    /// identity: every SWIM packet's header names two and a push-pull sync a thousand, and a
    /// thousand simulated nodes held a copy each of every identity.
    static IDS: std::cell::RefCell<crate::intern::Interner<SwimId>> =
        std::cell::RefCell::new(crate::intern::Interner::new());
}

impl crate::intern::Held for SwimId {
    fn unused(&self) -> bool {
        Arc::strong_count(&self.life) == 1
    }
}

impl SwimId {
    /// This thread's shared copy of the identity `node` at `addr` in life `generation`, made
    /// (its names through `intern`) the first time it is asked for. Shared copies compare by
    /// pointer.
    fn shared(node: &str, addr: &str, generation: u64) -> SwimId {
        let addr_hash = stable_hash(addr.as_bytes());
        let key = mix(addr_hash ^ mix(stable_hash(node.as_bytes()) ^ generation));
        let is = |held: &SwimId| {
            held.addr_hash == addr_hash
                && held.generation == generation
                && held.life.addr.as_str() == addr
                && held.life.node.as_str() == node
        };
        let make = || SwimId::new(NodeId::new(node), PeerAddr::new(addr), generation);
        crate::intern::with(&IDS, |ids| ids.get_or_make(key, is, make))
    }
}

impl Identity for SwimId {
    /// The address's hash: foca compares addresses in linear scans, so they must be cheap.
    type Addr = u64;

    fn renew(&self) -> Option<Self> {
        Some(SwimId::new(self.node().clone(), self.peer_addr().clone(), self.generation() + 1))
    }

    fn addr(&self) -> u64 {
        self.addr_hash
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        // Two lives of one node: the later one is the node as it is now.
        self.generation() > adversary.generation()
    }
}
