//! What travels between nodes: registry values ([`Value`]), the [`Packet`] around every
//! [`Message`], and the cutting of entries into packets that fit one datagram.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::limits;
use crate::membership::{SwimId, SwimMember};
use crate::model::{AppName, AppSpec, GpuShare, NodeId, NodeSpec, SlotId};
use crate::registry::{Digest, Entry, Head, Key};
use crate::rollout::RolloutRecord;
use crate::schedule::ContainerState;

/// What the registry holds under each kind of key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// `app/<name>`: the operator's spec, boxed: registry entries move around in B-tree nodes,
    /// and a spec is many times the size of the other values.
    App(Box<AppSpec>),
    /// `status/<node>`: what a node offers and runs.
    Status(NodeStatus),
    /// `scale/<app>`: the replica count the app's coordinator chose.
    Scale(u32),
    /// `rollout/<app>`: the verdicts of the app's coordinator on its versions.
    Rollout(Box<RolloutRecord>),
}

/// What a node publishes about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Its capacity and labels.
    pub spec: NodeSpec,
    /// The host its containers are reached at.
    pub addr: String,
    /// Its containers, by slot.
    pub containers: Vec<ContainerStatus>,
    /// The SWIM generation of the node's life that wrote it (`NodeConfig::generation` with
    /// the perfect failure detector). A peer that knows the node in a later life counts it as
    /// no status at all: a rebooted node's status from before the reboot names containers
    /// that are gone.
    pub generation: u64,
}

/// One container as its node reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    /// The slot it serves.
    pub slot: SlotId,
    /// The runtime's id; [`STARTING`] while the runtime has not answered yet.
    pub container: Arc<str>,
    /// The host port it listens on.
    pub host_port: u16,
    /// Its state.
    pub state: ContainerState,
    /// The version of its app it runs (`AppSpec::version`).
    pub version: u64,
    /// Whether it counts in its app's rollout: healthy for the update's `min_healthy_ms`
    /// (at once, outside a rollout), so that its slot's old replica may stop.
    pub ready: bool,
    /// The GPUs it holds (none once it failed for good).
    #[serde(default)]
    pub gpus: Vec<GpuShare>,
}

/// The container id reported for a slot whose start was asked for but not yet confirmed.
pub const STARTING: &str = "~starting";

/// One registry entry on the wire: its [`Head`] in front, then the entry itself, encoded apart
/// (postcard of `(Key, Entry<Value>)`). A receiver reads the head and decodes the body only when
/// the entry is news: most copies of a rumor reach nodes that have it already.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEntry<'a> {
    /// The key and version, hashed.
    pub head: Head,
    /// The encoded `(Key, Entry<Value>)`.
    #[serde(borrow, serialize_with = "serialize_bytes")]
    pub body: &'a [u8],
}

/// Writes a byte slice as one block of bytes: serde's own impl for slices writes element by
/// element, which postcard turns into the same bytes, only many times slower.
fn serialize_bytes<S: serde::Serializer>(bytes: &&[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

/// What travels between nodes: the sender's name, then one [`Message`]. Encoded with postcard;
/// entries borrow from the received bytes. The sender rides in the packet because a driver
/// knows only where bytes came from on its network, not which node sent them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Packet<'a> {
    /// The sending node.
    pub from: NodeId,
    /// What it says.
    #[serde(borrow)]
    pub message: Message<'a>,
}

impl Packet<'_> {
    /// `message` from `from`, encoded for the wire.
    pub fn encode(from: &NodeId, message: &Message<'_>) -> Vec<u8> {
        postcard::to_allocvec(&(from, message)).expect("messages encode")
    }
}

/// The messages nodes exchange, inside a [`Packet`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message<'a> {
    /// News: entries that changed recently.
    Updates(#[serde(borrow)] Vec<WireEntry<'a>>),
    /// Anti-entropy, first step: "here is one hash of my registry". Equal registries end the
    /// exchange here, so a quiet cluster spends a few bytes a second on it.
    Root(u64),
    /// Anti-entropy, second step, when the roots differ: the hash of each bucket.
    Digest(Digest),
    /// Anti-entropy, third step: the buckets where the digests differ, and the heads of the
    /// sender's entries in them.
    Summary {
        /// The buckets that differ.
        buckets: Vec<u16>,
        /// The sender's heads in those buckets.
        heads: Vec<Head>,
    },
    /// Anti-entropy, fourth and last steps: entries the receiver lacks or holds older, and the
    /// key hashes of the entries the sender wants back.
    Repair {
        /// Entries the receiver needs.
        #[serde(borrow)]
        entries: Vec<WireEntry<'a>>,
        /// Key hashes of the entries the sender needs; empty in the last step.
        want: Vec<u64>,
    },
    /// Requests that entered the sender's balancer for `app` since its last report; sent to
    /// the app's coordinator.
    Load {
        /// The app.
        app: AppName,
        /// How many.
        requests: u64,
    },
    /// A SWIM packet, foca's own encoding ([`crate::membership`]), and the sender's registry
    /// root: with SWIM, anti-entropy's first step rides on its probes, which go to a random
    /// peer several times a second anyway, instead of a datagram of its own every second
    /// (a sixth of a quiet thousand-node cluster's datagrams).
    Swim(u64, #[serde(borrow, serialize_with = "serialize_bytes")] &'a [u8]),
    /// A push-pull membership sync ([`crate::membership::SwimConfig::sync_interval_ms`]): the sender's member
    /// list, the sender first. With `reply`, the receiver answers with its own.
    SwimSync {
        /// The sender, then every member it knows.
        members: Vec<SwimMember>,
        /// Whether the receiver should answer with its own list.
        reply: bool,
    },
    /// "I suspect you": sent straight to a member this node's probe of it failed, at once and
    /// again while the suspicion lasts (Lifeguard's buddy system). A live receiver refutes (a
    /// new incarnation) and announces itself to the sender, whose foca takes the refutation
    /// from that packet's header: a round trip, where gossip alone takes a few rounds each way
    /// and, under packet loss, sometimes longer than the suspicion. A receiver in a later life
    /// than the one suspected (restarted, or renewed after a down declaration) announces that
    /// life instead, which takes the old one's place at the sender: foca answers no probe
    /// addressed to an earlier life, so the sender would declare it down.
    SwimSuspicion {
        /// The sender, to answer to.
        sender: SwimId,
        /// The receiver as the sender holds it: suspected, at that incarnation.
        suspect: SwimMember,
    },
}

/// Splits `items` into runs, in order, whose sizes add up to at most what a packet holds
/// around its header ([`limits::PACKET_BYTES_MAX`]). An item too large for any packet cannot
/// exist: registry values are bounded to fit one ([`limits::REGISTRY_VALUE_BYTES_MAX`]).
pub(super) fn packet_runs<T>(items: &[T], size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    const BUDGET: usize = limits::PACKET_BYTES_MAX - limits::PACKET_HEADER_BYTES_MAX;
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let item_bytes = size(item);
        assert!(item_bytes <= BUDGET, "an entry of {item_bytes} bytes fits no packet");
        if bytes + item_bytes > BUDGET {
            runs.push(&items[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += item_bytes;
    }
    if start < items.len() {
        runs.push(&items[start..]);
    }
    runs
}

/// What an entry takes in a packet: its head, its body and the body's length prefix.
pub(super) fn wire_bytes(entry: &WireEntry<'_>) -> usize {
    crate::registry::HEAD_BYTES + 5 + entry.body.len()
}

/// Encodes entries for the wire, each body once, into as many packets as they need (none for
/// no entries).
pub(super) fn encode_with_entries(
    entries: &[(Key, Entry<Value>)],
    message: impl Fn(Vec<WireEntry<'_>>) -> Vec<u8>,
) -> Vec<Vec<u8>> {
    let bodies: Vec<Vec<u8>> =
        entries.iter().map(|(k, e)| postcard::to_allocvec(&(k, e)).expect("entries encode")).collect();
    let wire: Vec<WireEntry<'_>> =
        entries.iter().zip(&bodies).map(|((k, e), body)| WireEntry { head: Head::of(k, &e.version), body }).collect();
    packet_runs(&wire, wire_bytes).into_iter().map(|run| message(run.to_vec())).collect()
}
