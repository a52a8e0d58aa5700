//! The facade's routing of the registry's news between nodes: gossip rounds, anti-entropy's
//! steps, and merging what peers send, through `Node::merge`, the one path of their writes.

use std::time::Duration;

use crate::limits;
use crate::model::NodeId;
use crate::registry::{Entry, Head, Key, Registry};
use crate::time::Time;

use super::gossip::RumorConfig;
use super::swim::SwimState;
use super::{Action, Event, Message, Node, Packet, Timer, Value, WireEntry, admission, anti_entropy};

impl Node {
    /// A step of anti-entropy from `from`, `request_bytes` long: answered with the next, whose
    /// entries take at most the request's size or one packet, whichever is more. A peer that
    /// asks for much with little (a forged want list: reflection) gets one packet per request;
    /// what it lacks beyond comes at the next exchanges.
    pub(super) fn anti_entropy_message(
        &mut self,
        now: Time,
        from: &NodeId,
        message: Message<'_>,
        request_bytes: usize,
    ) {
        let bytes_max = request_bytes.max(limits::PACKET_BYTES_MAX);
        match message {
            Message::Root(root) => {
                self.confirm_by_peer_root(now, from, root);
                if let Some(digest) = anti_entropy::answer_root(&self.registry, root) {
                    self.send(from, &digest);
                }
            }
            Message::Digest(digest) => {
                let buckets = self.registry.mismatched_buckets(&digest);
                let mut bytes = 0usize;
                for (i, (buckets, heads)) in anti_entropy::summaries(&self.registry, &buckets).into_iter().enumerate() {
                    bytes += heads.len() * crate::registry::HEAD_BYTES + buckets.len() * 3;
                    if i > 0 && bytes > bytes_max {
                        break; // the other buckets at the next exchange
                    }
                    self.send(from, &Message::Summary { buckets, heads });
                }
            }
            Message::Summary { buckets, heads } => {
                // Send what the peer lacks or holds older; ask for what it has newer.
                let (send, want) = anti_entropy::answer_summary(&self.registry, &buckets, &heads);
                self.send_repair(from, &send, want, bytes_max);
            }
            Message::Repair { entries, want } => {
                self.merge_wire(now, from, &entries);
                if !want.is_empty() {
                    self.send_repair(from, &want, Vec::new(), bytes_max);
                }
            }
            _ => unreachable!("routed by handle_message"),
        }
    }

    /// A gossip round, then the next if there is still news.
    pub(super) fn gossip_round(&mut self, now: Time) {
        self.gossip();
        self.unpark_swim_gossip(now);
        self.gossip.rearm(now, self.config.gossip_interval_ms, &self.registry, &mut self.out);
    }

    /// Anti-entropy's first step without SWIM: this node's root to a random peer.
    pub(super) fn anti_entropy_round(&mut self, now: Time) {
        if let Some(to) = self.members.random_addrs(&mut self.rng, 1).pop() {
            let bytes = Packet::encode(&self.config.id, &Message::Root(self.registry.root_hash()));
            self.out.push(Action::Send { to, bytes });
        }
        self.out.schedule(now + Duration::from_millis(self.config.anti_entropy_interval_ms), Timer::AntiEntropy);
    }

    /// Merges entries from a peer; a change to the facts placement reads asks for a new pass.
    /// Only entries whose head says they are news are decoded. A body that does not decode, or
    /// does not match its head, is dropped with an [`Event::BadMessage`].
    pub(super) fn merge_wire(&mut self, now: Time, from: &NodeId, entries: &[WireEntry<'_>]) {
        let mut changed = false;
        let mut own_overwritten = false;
        for wire in entries.iter().take(limits::ENTRIES_PER_MESSAGE_MAX) {
            if !self.registry.is_news(&wire.head) {
                continue;
            }
            let (key, entry) = match postcard::from_bytes::<(Key, Entry<Value>)>(wire.body) {
                Ok(decoded) if Head::of(&decoded.0, &decoded.1.version) == wire.head => self.share_names(decoded),
                Ok(_) => {
                    let error = "an entry does not match its head".to_owned();
                    self.out.event(Event::BadMessage { from: Some(from.clone()), error });
                    continue;
                }
                Err(e) => {
                    let error = e.to_string();
                    self.out.event(Event::BadMessage { from: Some(from.clone()), error });
                    continue;
                }
            };
            if let Err(reason) = admission::check_entry(&key, &entry) {
                self.out.event(Event::Refused { from: Some(from.clone()), input: "entry", reason });
                continue;
            }
            if matches!(&key, Key::Status(n) if *n == self.config.id) {
                // Only this node writes its status. A newer one from elsewhere is an echo of a
                // previous life of this node: take its version into the clock, write ours over.
                if self.registry.entry(&key).is_some_and(|e| e.version < entry.version) {
                    own_overwritten = true;
                }
            }
            if self.merge(now, key, entry) {
                self.gossip.received(wire.head, wire.body);
                changed = true;
            }
        }
        if own_overwritten {
            self.publish_status(now);
        }
        if changed {
            self.update_backends();
            self.request_pass(now);
        }
    }

    /// Points the names in a decoded entry at the copies this node holds already (its members'
    /// names, its apps' names) instead of fresh ones: every node holds every node's status, so
    /// a name decoded anew for each would be held a thousand times over in a large cluster.
    pub(super) fn share_names(&self, (key, mut entry): (Key, Entry<Value>)) -> (Key, Entry<Value>) {
        let key = match key {
            Key::Status(node) => {
                let node = self.members.shared_name(&node).cloned().unwrap_or(node);
                if entry.version.writer == node {
                    entry.version.writer = node.clone();
                }
                if let Some(Value::Status(status)) = &mut entry.value {
                    if status.spec.id == node {
                        status.spec.id = node.clone();
                    }
                    for c in &mut status.containers {
                        if let Some(app) = self.balancers.shared_app_name(&c.slot.app) {
                            c.slot.app = app.clone();
                        }
                    }
                }
                Key::Status(node)
            }
            other => other,
        };
        (key, entry)
    }

    /// Anti-entropy: sends the entries with these key hashes and asks for those in `want`.
    pub(super) fn send_repair(&mut self, to: &NodeId, key_hashes: &[u64], want: Vec<u64>, bytes_max: usize) {
        for bytes in anti_entropy::repair_packets(&self.registry, &self.config.id, key_hashes, want, bytes_max) {
            self.send_bytes(to, bytes);
        }
    }

    /// A gossip round (see [`Gossip::round`]).
    pub(super) fn gossip(&mut self) {
        let config = RumorConfig { fanout: self.config.gossip_fanout, rounds: self.config.rumor_rounds };
        let piggyback = self.liveness.swim_mut().map(SwimState::piggyback);
        self.gossip.round(
            &mut self.registry,
            piggyback,
            &self.members,
            &mut self.rng,
            &self.config.id,
            config,
            &mut self.out,
        );
    }

    pub(super) fn send(&mut self, to: &NodeId, message: &Message) {
        let bytes = Packet::encode(&self.config.id, message);
        self.send_bytes(to, bytes);
    }

    /// Sends to a peer believed alive; one that is not (a reply to a node declared down since,
    /// a load report racing a change of members) is not sent anything: it could not be
    /// addressed, and it would be ignored anyway.
    pub(super) fn send_bytes(&mut self, to: &NodeId, bytes: Vec<u8>) {
        if let Some(to) = self.members.addr_of(to) {
            let to = to.clone();
            self.out.push(Action::Send { to, bytes });
        }
    }

    /// On the first report timer of each hour of the wall clock, collects the tombstones older
    /// than the horizon counted from that hour, so that every node collects the same ones and
    /// their roots agree again at once. It rides on the report timer (once a second) rather
    /// than a timer of its own, which would wake every node once an hour for nothing.
    pub(super) fn collect_tombstones_if_due(&mut self, now: Time) {
        const HOUR_MS: u64 = 3600 * 1000;
        let hour = now.as_millis() / HOUR_MS;
        if hour == self.tombstones_collected_hour {
            return;
        }
        self.tombstones_collected_hour = hour;
        let desired = |r: &Registry<Value>| r.iter().filter(|(k, e)| k.is_desired_state() && e.is_tombstone()).count();
        let before = desired(&self.registry);
        if self.registry.collect_tombstones(Time::from_millis(hour * HOUR_MS), limits::TOMBSTONE_HORIZON_MS) > 0
            && desired(&self.registry) != before
        {
            self.desired_version += 1;
        }
    }
}
