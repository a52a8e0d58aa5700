//! Rumor mongering: while there is news, every `gossip_interval_ms` the entries that changed go
//! to `gossip_fanout` random peers, `rumor_rounds` rounds per node that learns them. Small news
//! rides on SWIM's packets instead, when SWIM runs and has room ([`Piggyback`]). A quiet node
//! sets no gossip timer at all.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::hash::KeyHashMap;
use crate::limits;
use crate::model::NodeId;
use crate::registry::{Head, Key, Registry};
use crate::rng::SplitMix64;
use crate::time::Time;

use super::io::Effects;
use super::members::Members;
use super::timers::Timer;
use super::wire::{packet_runs, wire_bytes};
use super::{Action, Message, Packet, Value, WireEntry};

/// Where small news can ride instead of rumors: SWIM's own packets, in the room they leave.
pub(super) trait Piggyback {
    /// Whether another item may wait for a ride now.
    fn has_room(&self) -> bool;
    /// Gives SWIM an item (an encoded [`WireEntry`] of at most
    /// [`limits::SWIM_ITEM_BYTES_MAX`] bytes) to carry.
    fn carry(&mut self, item: &[u8]);
}

/// A registry entry this node pushes to a few peers for a few rounds.
#[derive(Debug)]
struct Rumor {
    rounds_left: u32,
    head: Head,
    body: Vec<u8>,
}

/// How rumors are spread (from `NodeConfig`).
#[derive(Clone, Copy, Debug)]
pub(super) struct RumorConfig {
    /// Peers per round.
    pub(super) fanout: usize,
    /// Rounds per entry.
    pub(super) rounds: u32,
}

/// The rumors being pushed, and whether a round is due.
#[derive(Debug)]
pub(super) struct Gossip {
    /// Entries being pushed to peers: rounds left, and the entry encoded once, when it became
    /// news (a newer version replaces it).
    rumors: BTreeMap<Key, Rumor>,
    /// Whether a `Gossip` timer is set: only while there is news to push.
    armed: bool,
    /// Entries merged from peers since the last round, as they arrived, by key hash: a rumor
    /// passed on is sent as it was received instead of being encoded again.
    received: KeyHashMap<(Head, Vec<u8>)>,
}

impl Gossip {
    /// Gossip whose first round's timer the node sets as it starts.
    pub(super) fn new() -> Gossip {
        Gossip { rumors: BTreeMap::new(), armed: true, received: KeyHashMap::default() }
    }

    /// The registry changed: a round is set for the next millisecond if none is.
    pub(super) fn wake(&mut self, now: Time, out: &mut Effects) {
        if !self.armed {
            self.armed = true;
            out.schedule(now + Duration::from_millis(1), Timer::Gossip);
        }
    }

    /// An entry merged from a peer, as it arrived: passed on as it is if it is still the
    /// newest at the next round.
    pub(super) fn received(&mut self, head: Head, body: &[u8]) {
        self.received.insert(head.key_hash, (head, body.to_vec()));
    }

    /// One round: the registry's recent changes become rumors (or ride on `piggyback`), and
    /// the rumors go to a few random members.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn round(
        &mut self,
        registry: &mut Registry<Value>,
        mut piggyback: Option<&mut dyn Piggyback>,
        members: &Members,
        rng: &mut SplitMix64,
        me: &NodeId,
        config: RumorConfig,
        out: &mut Effects,
    ) {
        let mut received = std::mem::take(&mut self.received);
        for key in registry.take_recent() {
            let Some(entry) = registry.entry(&key) else { continue };
            let head = Head::of(&key, &entry.version);
            let body = match received.remove(&head.key_hash) {
                Some((h, body)) if h == head => body,
                _ => postcard::to_allocvec(&(&key, entry)).expect("entries encode"),
            };
            // Small news, a little at a time, rides on SWIM's packets, in the room they leave.
            // The rest is pushed as rumors of this node's own: large entries, and bursts (a
            // cluster starting, a node's slots moving) that SWIM's packets would take seconds
            // to carry.
            if let Some(swim) = piggyback.as_deref_mut()
                && swim.has_room()
            {
                let item = postcard::to_allocvec(&WireEntry { head, body: &body }).expect("entries encode");
                if item.len() <= limits::SWIM_ITEM_BYTES_MAX {
                    swim.carry(&item);
                    self.rumors.remove(&key);
                    continue;
                }
            }
            self.rumors.insert(key, Rumor { rounds_left: config.rounds, head, body });
        }
        if self.rumors.is_empty() {
            return;
        }
        let peers = members.random_addrs(rng, config.fanout);
        if peers.is_empty() {
            return;
        }
        // One encoding for every peer of the round, in as many packets as it takes.
        let wire: Vec<WireEntry<'_>> = self
            .rumors
            .values()
            .take(limits::ENTRIES_PER_MESSAGE_MAX)
            .map(|r| WireEntry { head: r.head, body: &r.body })
            .collect();
        let packets: Vec<Vec<u8>> = packet_runs(&wire, wire_bytes)
            .into_iter()
            .map(|run| Packet::encode(me, &Message::Updates(run.to_vec())))
            .collect();
        let mut sent = 0;
        self.rumors.retain(|_, r| {
            sent += 1;
            if sent > limits::ENTRIES_PER_MESSAGE_MAX {
                return true;
            }
            r.rounds_left -= 1;
            r.rounds_left > 0
        });
        for peer in peers {
            for bytes in &packets {
                out.push(Action::Send { to: peer.clone(), bytes: bytes.clone() });
            }
        }
    }

    /// After a round: rounds go on while there is news; a quiet node sleeps until its registry
    /// changes (`wake`).
    pub(super) fn rearm(&mut self, now: Time, interval_ms: u64, registry: &Registry<Value>, out: &mut Effects) {
        self.armed = !self.rumors.is_empty() || registry.has_recent();
        if self.armed {
            out.schedule(now + Duration::from_millis(interval_ms), Timer::Gossip);
        }
    }
}
