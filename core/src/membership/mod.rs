//! SWIM membership through the `foca` crate: who is alive, learnt from the peers themselves.
//!
//! [`Swim`] wraps one `foca::Foca` and its `AccumulatingRuntime`. It is as sans-I/O as `Node`:
//! packets and timers go in ([`Swim::handle_data`], [`Swim::handle_timer`], [`Swim::announce`]),
//! and after every call the caller drains what came out ([`Swim::poll_send`],
//! [`Swim::poll_timer`]) and reads the members again ([`Swim::alive`]). `Node` does that; it puts
//! foca's timers in its own timer heap, one ordered queue, as foca requires (foca issue #26).
//!
//! A member's identity is its node name, its gossip address ([`PeerAddr`]) and a *generation*:
//! a node that restarts comes back with a higher generation, so its peers take it for the same
//! node alive again instead of a ghost of the one they declared down. foca tells members apart
//! by address, so a node joins through any address it knows ([`Swim::announce`]) without
//! knowing the name behind it, and the addresses of the members spread with the membership.
//!
//! `iter_members` is the truth: foca may miss a `MemberDown` for a member it never saw come up,
//! so the members are read from it ([`Swim::alive`]), not followed through notifications; a
//! notification or a change of [`Swim::num_members`] only says when to read them again.

use std::convert::Infallible;
use std::fmt;
use std::num::{NonZeroU8, NonZeroUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foca::{AccumulatingRuntime, BroadcastHandler, Foca, Identity, Invalidates, PostcardCodec};
use serde::{Deserialize, Serialize};

mod identity;

pub use identity::{PeerAddr, SwimId, with_generation_ceiling};

use crate::hash::mix;
use crate::model::NodeId;
use crate::rng::SplitMix64;

/// How a node learns which peers are alive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipMode {
    /// The driver says who is alive through `Node::handle_membership`: a perfect failure
    /// detector, the simulator's crutch. The default until SWIM has proven itself.
    #[default]
    PerfectFailureDetector,
    /// SWIM through foca: nodes probe each other and gossip who is down
    /// ([`SwimConfig`]); the driver only says which peers to join at start
    /// (`NodeConfig::seeds`).
    Swim,
}

/// SWIM settings. The default is a preset for a LAN (round trips of a few milliseconds) tuned
/// for fast detection:
///
/// - every node probes one peer every 500 ms (`probe_period_ms`), waits 200 ms for the answer
///   (`probe_rtt_ms`), then asks 8 others to probe it (under 10% packet loss, a direct probe
///   fails one time in five; with 8 indirect ones, all fail about once in 25,000 probes, against
///   once in 1,000 with 5);
/// - a peer silent for a whole probe period is suspected (its replicas leave the balancers at
///   once) and told so straight away, five times over the suspicion (`node`'s
///   `Message::SwimSuspicion`, Lifeguard's buddy system), so that a live one refutes within a
///   round trip; it is declared down 1 s later (`suspect_to_down_ms`) unless it refutes;
/// - every node gossips membership news to peers every 200 ms while it has some (at once when
///   news arrives after a quiet spell: `node` parks foca's gossip timer while there is none),
///   and it rides on every probe;
/// - every 2 s a node announces itself to 2 peers it believes down, so that the two sides of a
///   healed partition find each other again; the push-pull syncs (`sync_interval_ms`) repair
///   what that misses.
///
/// Expected detection time of a crashed node: a dead peer is probed by some node within about
/// one probe period, suspected at the end of that period, declared down 1 s later, and the
/// news reaches everyone within a few gossip rounds: about 2 s, more when no peer happens to
/// probe it for a few periods. Measured in the simulator (1 to 5 ms hops, seeds 1 to 100,
/// "detected" = no live node still lists it; `scripts/sim sweep FILE --seeds 1..101`):
/// `scenarios/node-crash-50-nodes.toml` (50 nodes) median 1.8 s, p99 3.5 s; figures for 5, 20
/// and 1,000 nodes are in benches/README.md. A node that stalls for longer than about 1.5 s is
/// declared down too: the price of fast detection (it rejoins under a new generation once it
/// answers again).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwimConfig {
    /// How often this node probes one peer.
    pub probe_period_ms: u64,
    /// How long a direct probe waits for its answer before peers are asked to probe indirectly.
    /// Must be less than `probe_period_ms`.
    pub probe_rtt_ms: u64,
    /// How many peers probe on this node's behalf when a direct probe is not answered.
    pub indirect_probes: usize,
    /// How long a suspected peer has to refute before it is declared down.
    pub suspect_to_down_ms: u64,
    /// How often membership news is pushed to `gossip_fanout` random peers, on top of the news
    /// that rides on probes.
    pub gossip_interval_ms: u64,
    /// See `gossip_interval_ms`.
    pub gossip_fanout: usize,
    /// How many times each piece of membership news is sent.
    pub max_transmissions: u8,
    /// How often this node announces itself to one random peer, to learn the members it missed,
    /// and to its seeds while it knows no peer at all.
    pub announce_interval_ms: u64,
    /// How often this node announces itself to a peer it believes down: how a partition heals.
    pub announce_down_interval_ms: u64,
    /// The largest SWIM packet sent or accepted.
    pub packet_bytes_max: usize,
    /// How often, at least, a node sends its whole member list to one random peer, which
    /// answers with its own (a push-pull sync, as memberlist does): what a node missed from
    /// SWIM's gossip, it learns there. The interval grows with the cluster
    /// (`sync_ms_per_member` per member known), so that the bytes a node spends on it stay flat
    /// as the cluster grows. A node also syncs with a seed right after it joins: a thousand
    /// nodes starting at once learn each other in one round trip instead of a minute of
    /// gossip.
    pub sync_interval_ms: u64,
    /// See `sync_interval_ms`.
    pub sync_ms_per_member: u64,
    /// How long after its start a node runs no placement pass: its view of the members fills
    /// in over the first second or so (announce, feed, gossip), and a pass over a partial view
    /// starts slots that move as soon as the view is whole.
    pub join_settle_ms: u64,
}

impl Default for SwimConfig {
    fn default() -> Self {
        SwimConfig {
            probe_period_ms: 500,
            probe_rtt_ms: 200,
            indirect_probes: 8,
            suspect_to_down_ms: 1000,
            gossip_interval_ms: 200,
            gossip_fanout: 3,
            max_transmissions: 10,
            announce_interval_ms: 30_000,
            announce_down_interval_ms: 2000,
            packet_bytes_max: 1400,
            sync_interval_ms: 30_000,
            sync_ms_per_member: 200,
            join_settle_ms: 2000,
        }
    }
}

impl SwimConfig {
    /// foca's `Config` for these settings.
    fn foca(&self) -> foca::Config {
        assert!(
            self.probe_rtt_ms > 0 && self.probe_rtt_ms < self.probe_period_ms,
            "0 < probe_rtt_ms < probe_period_ms"
        );
        assert!(self.suspect_to_down_ms > 0, "suspect_to_down_ms");
        let nonzero = |n: usize| NonZeroUsize::new(n.max(1)).expect("at least one");
        let mut config = foca::Config::simple();
        config.probe_period = Duration::from_millis(self.probe_period_ms);
        config.probe_rtt = Duration::from_millis(self.probe_rtt_ms);
        config.num_indirect_probes = nonzero(self.indirect_probes);
        config.suspect_to_down_after = Duration::from_millis(self.suspect_to_down_ms);
        config.max_transmissions = NonZeroU8::new(self.max_transmissions.max(1)).expect("at least one");
        config.max_packet_size = nonzero(self.packet_bytes_max);
        config.notify_down_members = true;
        config.periodic_gossip = Some(foca::PeriodicParams {
            frequency: Duration::from_millis(self.gossip_interval_ms.max(1)),
            num_members: nonzero(self.gossip_fanout),
        });
        config.periodic_announce = Some(foca::PeriodicParams {
            frequency: Duration::from_millis(self.announce_interval_ms.max(1)),
            num_members: nonzero(1),
        });
        config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: Duration::from_millis(self.announce_down_interval_ms.max(1)),
            num_members: nonzero(2),
        });
        config
    }
}

/// foca's randomness: core's seeded generator behind rand's traits.
#[derive(Clone, Debug)]
pub struct SwimRng(SplitMix64);

impl rand_core::TryRng for SwimRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.0.next_u64() >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.0.next_u64())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let bytes = self.0.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(())
    }
}

/// A foca timer, held in `Node`'s timer heap until it is due.
pub type SwimTimer = foca::Timer<SwimId>;

/// Why a SWIM input was refused. The membership is unchanged, except where foca says otherwise
/// (it never applies half a packet's updates).
#[derive(Debug, thiserror::Error)]
pub enum SwimError {
    /// foca refused the packet or the timer (malformed, too big, from ourselves, ...).
    #[error("swim: {0}")]
    Foca(#[from] foca::Error),
    /// A member list from a peer ([`Swim::apply_sync`]) was empty: it must list its sender
    /// first.
    #[error("swim: a member list without its sender")]
    EmptySync,
}

/// A member as a peer's member list ([`Swim::sync_state`]) gives it.
pub type SwimMember = foca::Member<SwimId>;

/// Registry news riding in the room SWIM's packets leave: foca's custom broadcasts. An item
/// is one encoded `node::WireEntry` (its 28-byte head, then the entry). foca hands each item a
/// peer sent to this handler, which keeps it for the node ([`Swim::take_broadcasts`]) and tells
/// foca not to pass it on: the node merges it, and passes on ([`Swim::broadcast`]) only what
/// was news to its registry. foca then sends each item `max_transmissions` times.
struct EntryBroadcasts {
    /// Items from peers, oldest first, until the node takes them. Shared with [`Swim`]: foca
    /// owns its handler and lends no access to it (no thread ever touches this; the lock is
    /// never contended).
    received: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// What tells two broadcast items apart in foca's backlog: the registry key, by hash. A newer
/// version of an entry replaces the older one there (the node passes on only news).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BroadcastKey(u64);

impl Invalidates for BroadcastKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

/// A broadcast item too short to hold an entry's head. The packet's other items and its
/// membership updates are applied all the same.
#[derive(Debug, thiserror::Error)]
#[error("a broadcast item of {0} bytes is shorter than an entry head")]
pub struct BroadcastError(usize);

impl BroadcastHandler<SwimId> for EntryBroadcasts {
    type Key = BroadcastKey;
    type Error = BroadcastError;

    fn receive_item(&mut self, data: &[u8], sender: Option<&SwimId>) -> Result<Option<BroadcastKey>, BroadcastError> {
        // postcard writes the head as a length byte (28) and then its bytes, key hash first.
        let key_hash =
            data.get(1..9).filter(|_| data.len() > crate::registry::HEAD_BYTES).ok_or(BroadcastError(data.len()))?;
        let key = BroadcastKey(u64::from_le_bytes(key_hash.try_into().expect("8 bytes")));
        match sender {
            // The node's own (or passed on): into foca's backlog.
            None => Ok(Some(key)),
            Some(_) => {
                self.received.lock().expect("never poisoned: nothing panics holding it").push(data.to_vec());
                Ok(None)
            }
        }
    }
}

/// One node's SWIM member: foca, its runtime's queued effects, and the seeds to join through.
pub struct Swim {
    foca: Foca<SwimId, PostcardCodec, SwimRng, EntryBroadcasts>,
    runtime: AccumulatingRuntime<SwimId>,
    /// Notifications drained by [`Swim::reconnect_after_rejoin`], for [`Swim::take_notifications`].
    notified: bool,
    seeds: Vec<PeerAddr>,
    /// See [`EntryBroadcasts::received`].
    received: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl fmt::Debug for Swim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Swim")
            .field("identity", self.foca.identity())
            .field("members", &self.foca.num_members())
            .field("seeds", &self.seeds)
            .finish()
    }
}

impl Swim {
    /// A member named `node`, reached at `addr`, in its life `generation`, with randomness
    /// from `seed`. It knows nobody until it announces itself ([`Swim::announce`]) or a peer
    /// probes it.
    pub fn new(node: NodeId, addr: PeerAddr, generation: u64, config: &SwimConfig, seed: u64) -> Swim {
        let identity = SwimId::new(node, addr, generation);
        let received = Arc::new(Mutex::new(Vec::new()));
        let handler = EntryBroadcasts { received: received.clone() };
        let rng = SwimRng(SplitMix64::new(seed));
        let foca = Foca::with_custom_broadcast(identity, config.foca(), rng, PostcardCodec, handler);
        Swim { foca, runtime: AccumulatingRuntime::new(), seeds: Vec::new(), received, notified: false }
    }

    /// This life's identity (foca renews it when the cluster declared this node down).
    pub fn identity(&self) -> &SwimId {
        self.foca.identity()
    }

    /// The addresses to announce to while this node knows no peer.
    pub fn seeds(&self) -> &[PeerAddr] {
        &self.seeds
    }

    /// Asks to join the cluster through the peers at `addrs` (remembered as seeds, this node's
    /// own address left out). Their names need not be known.
    pub fn announce(&mut self, addrs: &[PeerAddr]) {
        let me = self.foca.identity().peer_addr().clone();
        for addr in addrs.iter().filter(|a| **a != me) {
            if !self.seeds.contains(addr) {
                self.seeds.push(addr.clone());
            }
            // An announce is accepted by address: the name and generation we put do not matter.
            let to = SwimId::new(NodeId::new(""), addr.clone(), 0);
            self.foca.announce(to, &mut self.runtime).expect("an announce only encodes a header");
        }
    }

    /// Announces again to the seeds when this node knows no peer: its first announces may have
    /// been lost, or reached seeds not started yet (foca issue #15).
    pub fn announce_if_alone(&mut self) {
        if self.foca.num_members() == 0 {
            let seeds = self.seeds.clone();
            self.announce(&seeds);
        }
    }

    /// A SWIM packet from a peer.
    pub fn handle_data(&mut self, bytes: &[u8]) -> Result<(), SwimError> {
        self.foca.handle_data(bytes, &mut self.runtime)?;
        Ok(())
    }

    /// This node's whole view of the cluster, for a push-pull sync: itself first (alive), then
    /// every member foca knows, down ones included, split in runs of at most `bytes_max`
    /// encoded bytes each. Each run begins with this node, so a receiver always knows where
    /// to answer.
    pub fn sync_state(&self, bytes_max: usize) -> Vec<Vec<SwimMember>> {
        let me = foca::Member::alive(self.foca.identity().clone());
        let size = |m: &SwimMember| postcard::experimental::serialized_size(m).unwrap_or(bytes_max);
        let head = size(&me);
        let mut runs: Vec<Vec<SwimMember>> = vec![vec![me.clone()]];
        let mut bytes = head;
        for member in self.foca.iter_membership_state() {
            let member_bytes = size(member);
            if bytes + member_bytes > bytes_max {
                runs.push(vec![me.clone()]);
                bytes = head;
            }
            bytes += member_bytes;
            runs.last_mut().expect("one run at least").push(member.clone());
        }
        runs
    }

    /// Takes in a peer's member list ([`Swim::sync_state`]) without gossiping it again: the
    /// sender knows it already, and so, most likely, does the cluster. Returns the sender,
    /// the list's first member, to answer to. This node's own earlier lives in the list are
    /// left out: foca would keep them as members declared down, and announce to them, that
    /// is to itself.
    pub fn apply_sync(&mut self, members: Vec<SwimMember>) -> Result<SwimId, SwimError> {
        let sender = members.first().ok_or(SwimError::EmptySync)?.id().clone();
        let me = self.foca.identity().clone();
        // Most of a list is what this node holds already: foca would find each in a scan of
        // its members and change nothing, a thousand scans of a thousand at a thousand nodes.
        // Only what differs goes to foca, which decides as ever.
        let mut held: Vec<&SwimMember> = self.foca.iter_membership_state().collect();
        held.sort_unstable_by_key(|m| (m.id().addr_hash, m.id().generation));
        let same = |m: &SwimMember| {
            let id = m.id();
            held.binary_search_by_key(&(id.addr_hash, id.generation), |h| (h.id().addr_hash, h.id().generation))
                .is_ok_and(|i| {
                    held[i].id() == id && held[i].incarnation() == m.incarnation() && held[i].state() == m.state()
                })
        };
        let mut members: Vec<SwimMember> = members
            .into_iter()
            .filter(|m| m.id().addr() != me.addr() || *m.id() == me)
            .filter(|m| !m.id().node().as_str().is_empty() && !same(m))
            .collect();
        // At most `SYNC_NEW_MEMBERS_MAX` addresses this node does not know, the sender first,
        // and never past `NODES_MAX` members (see the limits).
        // `held` is sorted by address hash (then generation) already.
        let known = |m: &SwimMember| held.binary_search_by_key(&m.id().addr_hash, |h| h.id().addr_hash).is_ok();
        let room = crate::limits::SYNC_NEW_MEMBERS_MAX.min(crate::limits::NODES_MAX.saturating_sub(held.len()));
        let mut new = 0usize;
        members.retain(|m| {
            if known(m) {
                return true;
            }
            new += 1;
            new <= room
        });
        self.foca.apply_many(members.into_iter(), false, &mut self.runtime)?;
        Ok(sender)
    }

    /// What foca holds of `node` (its current life, or the last one it knew), if anything.
    pub fn member(&self, node: &NodeId) -> Option<&SwimMember> {
        self.foca.iter_membership_state().find(|m| m.id().node() == node)
    }

    /// The members foca holds as suspected, with the incarnation they are suspected at: a
    /// scan of every member, for the periodic check only.
    pub fn suspects(&self) -> Vec<(SwimId, u16)> {
        self.fingerprint_and_suspects().1
    }

    /// [`Swim::fingerprint`] and [`Swim::suspects`] from one scan of the members, for the
    /// periodic check, which wants both: each scan reads a thousand members from memory.
    pub fn fingerprint_and_suspects(&self) -> (u64, Vec<(SwimId, u16)>) {
        let mut fingerprint = 0u64;
        let mut suspects = Vec::new();
        for m in self.foca.iter_members() {
            fingerprint = fingerprint.wrapping_add(Self::member_print(m.id()));
            if m.state() == foca::State::Suspect {
                suspects.push((m.id().clone(), m.incarnation()));
            }
        }
        (fingerprint, suspects)
    }

    /// Declares `member` down, and gossips it, if foca still holds it suspected at
    /// `incarnation` (a refutation since is a higher incarnation, and wins). Returns whether
    /// it did. foca runs a suspicion's timer only on the node whose probe failed; this is the
    /// same end for a suspicion heard by gossip (see `Node`'s stale suspicions).
    pub fn declare_down(&mut self, member: &SwimId, incarnation: u16) -> Result<bool, SwimError> {
        let still = self.state_at(member, incarnation) == Some(foca::State::Suspect);
        if still {
            let down = foca::Member::new(member.clone(), incarnation, foca::State::Down);
            self.foca.apply_many(std::iter::once(down), true, &mut self.runtime)?;
        }
        Ok(still)
    }

    /// The state foca holds `member` (that life of it) in, if it holds it at `incarnation`.
    fn state_at(&self, member: &SwimId, incarnation: u16) -> Option<foca::State> {
        self.foca
            .iter_membership_state()
            .find(|m| m.id() == member && m.incarnation() == incarnation)
            .map(|m| m.state())
    }

    /// A peer, `sender`, says it suspects this node (`suspect`, as the peer holds it). If
    /// that is this node's current life, foca refutes it (a new incarnation, gossiped), and
    /// this node announces itself to the sender: the header of that packet carries the new
    /// incarnation, which clears the suspicion there. A suspicion of an earlier life of this
    /// node is answered with the announce alone (below).
    pub fn refute(&mut self, suspect: SwimMember, sender: SwimId) -> Result<(), SwimError> {
        let me = self.foca.identity();
        if sender.addr() == me.addr() || suspect.id().addr() != me.addr() {
            return Ok(());
        }
        if suspect.id() == me {
            self.foca.apply_many(std::iter::once(suspect), true, &mut self.runtime)?;
        } else if suspect.id().generation() > me.generation() {
            return Ok(());
        }
        // An earlier life: foca takes no packet addressed to it (the sender's probes of it
        // all fail), and refuting it is not this life's business. The sender missed the
        // renewal; the announce's header carries this life, which takes the old one's place
        // there (it wins the address) and ends the suspicion before it becomes a down
        // declaration.
        self.foca.announce(sender, &mut self.runtime)?;
        Ok(())
    }

    /// Hands an item (an encoded `node::WireEntry`, at most
    /// [`crate::limits::SWIM_ITEM_BYTES_MAX`] bytes) to foca, which sends it in the room left in
    /// its next packets, `max_transmissions` times; an older item for the same key is dropped.
    pub fn broadcast(&mut self, item: &[u8]) {
        assert!(item.len() <= crate::limits::SWIM_ITEM_BYTES_MAX, "broadcast items are small");
        self.foca.add_broadcast(item).expect("a small item with a head is accepted");
    }

    /// The broadcast items peers sent since the last call, oldest first.
    pub fn take_broadcasts(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.received.lock().expect("never poisoned: nothing panics holding it"))
    }

    /// How many broadcast items foca still has to send.
    pub fn broadcast_backlog(&self) -> usize {
        self.foca.custom_broadcast_backlog()
    }

    /// A foca timer that came due.
    ///
    /// A suspicion's end (`ChangeSuspectToDown`) goes to foca only if foca still holds that
    /// life of the member at that incarnation (its own condition for declaring it down):
    /// foca 2.0.0 sends the member its courtesy `TurnUndead` even when the condition fails,
    /// that is to a member that refuted in time, which then takes itself for declared down
    /// and renews its identity. Peers probing the old life before they hear of the new one
    /// get no answer (foca drops packets addressed to another identity), and one of them
    /// declared the live node down (seed 14 of `scenarios/long/packet-loss-1h-50-nodes.toml`).
    pub fn handle_timer(&mut self, timer: SwimTimer) -> Result<(), SwimError> {
        if let foca::Timer::ChangeSuspectToDown { member_id, incarnation, .. } = &timer
            && self.state_at(member_id, *incarnation).is_none()
        {
            return Ok(());
        }
        self.foca.handle_timer(timer, &mut self.runtime)?;
        Ok(())
    }

    /// The next packet to send, to the peer at that address.
    pub fn poll_send(&mut self) -> Option<(PeerAddr, Vec<u8>)> {
        self.runtime.to_send().map(|(to, bytes)| (to.peer_addr().clone(), bytes.to_vec()))
    }

    /// The next timer to set, due after the given time.
    pub fn poll_timer(&mut self) -> Option<(Duration, SwimTimer)> {
        self.runtime.to_schedule()
    }

    /// Drops foca's notifications, and says whether there were any: a member up, down or
    /// renamed, this node rejoined or lost its peers. The members themselves are read from
    /// [`Swim::alive`].
    pub fn take_notifications(&mut self) -> bool {
        let mut any = std::mem::take(&mut self.notified);
        while self.runtime.to_notify().is_some() {
            any = true;
        }
        any
    }

    /// Reconnects foca at once after it renewed this node's identity, if it still holds active
    /// members. A peer that believes this node down tells it so (`TurnUndead`); foca then
    /// takes a new identity and waits, disconnected and with its periodic timers dropped,
    /// until a packet from a member reconnects it. When a partition heals, every node on both
    /// sides hears it from the other side and renews within a few milliseconds; a node whose
    /// peers had all renewed before it hears nothing more and waits for its next push-pull
    /// sync, tens of seconds (seed 195 of apply-then-partitioned: 11 s with no packet between
    /// the sides). Drivers call this after every call into foca, before draining it.
    pub fn reconnect_after_rejoin(&mut self) {
        let mut rejoined = false;
        while let Some(notification) = self.runtime.to_notify() {
            self.notified = true;
            match notification {
                foca::OwnedNotification::Rejoin(_) => rejoined = true,
                foca::OwnedNotification::Active => rejoined = false,
                _ => {}
            }
        }
        if rejoined && self.foca.num_members() > 0 {
            // No update: foca only looks at its members again, finds some active, and
            // reconnects (probes, announces and gossip timers armed again).
            self.foca.apply_many(std::iter::empty(), false, &mut self.runtime).expect("no update to refuse");
        }
    }

    /// How many peers foca holds active: cheap, unlike [`Swim::alive`].
    pub fn num_members(&self) -> usize {
        self.foca.num_members()
    }

    /// Whether every effect has been drained, broadcast items from peers included.
    pub fn is_drained(&self) -> bool {
        self.runtime.backlog() == 0 && self.received.lock().expect("never poisoned").is_empty()
    }

    /// The peers foca holds active (alive or suspected), sorted by node name, with their
    /// addresses and generations. A node is there once: foca keeps one identity per address,
    /// and of a node seen at two addresses, the later life counts.
    ///
    /// A member that carries this node's own name at another address is left out: a second
    /// agent started under a taken name, or a forgery. Either way it gets neither slots nor
    /// requests here ([`Swim::name_conflicts`] lists it).
    pub fn alive(&self) -> Vec<(NodeId, PeerAddr, u64)> {
        let me = self.foca.identity().node();
        let mut alive: Vec<(NodeId, PeerAddr, u64)> = self
            .foca
            .iter_members()
            .filter(|m| m.id().node() != me && !m.id().node().as_str().is_empty())
            .map(|m| (m.id().node().clone(), m.id().peer_addr().clone(), m.id().generation()))
            .collect();
        alive.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.2.cmp(&a.2)));
        alive.dedup_by(|later, first| later.0 == first.0);
        alive
    }

    /// The active members that carry this node's name at another address (or in another life
    /// at this one): their addresses and generations.
    pub fn name_conflicts(&self) -> Vec<(PeerAddr, u64)> {
        let me = self.foca.identity();
        self.foca
            .iter_members()
            .filter(|m| m.id().node() == me.node() && m.id() != me)
            .map(|m| (m.id().peer_addr().clone(), m.id().generation()))
            .collect()
    }

    /// A fingerprint of the active members (their addresses and generations), order-free and
    /// cheap next to [`Swim::alive`]: equal fingerprints mean nothing to read again, but for
    /// odds of 1 in 2^64.
    pub fn fingerprint(&self) -> u64 {
        self.foca.iter_members().fold(0u64, |acc, m| acc.wrapping_add(Self::member_print(m.id())))
    }

    /// What one active member adds to [`Swim::fingerprint`].
    fn member_print(id: &SwimId) -> u64 {
        mix(id.addr_hash ^ id.generation.rotate_left(32))
    }

    /// How many membership updates wait to be gossiped: a number growing past the cluster's
    /// size means identities are churning (foca issue #19).
    pub fn updates_backlog(&self) -> usize {
        self.foca.updates_backlog()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Reverse;
    use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

    /// A few `Swim` members on a perfect network with 1 ms hops, driven in order by one clock.
    struct Cluster {
        members: BTreeMap<NodeId, Swim>,
        /// (due ms, sequence, event)
        queue: BinaryHeap<Reverse<(u64, u64, Event)>>,
        seq: u64,
        now_ms: u64,
        /// Nodes whose packets are neither delivered nor sent, and whose timers are dropped.
        stopped: BTreeSet<NodeId>,
        /// One side of a partition: packets between it and the rest are lost.
        side: BTreeSet<NodeId>,
    }

    #[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
    enum Event {
        Packet(NodeId, NodeId, Vec<u8>),
        Timer(NodeId, u64),
    }

    impl Cluster {
        fn new(n: usize, config: &SwimConfig) -> (Cluster, BTreeMap<u64, SwimTimer>) {
            let mut cluster = Cluster {
                members: BTreeMap::new(),
                queue: BinaryHeap::new(),
                seq: 0,
                now_ms: 0,
                stopped: BTreeSet::new(),
                side: BTreeSet::new(),
            };
            let mut timers = BTreeMap::new();
            for i in 0..n {
                let id = NodeId::new(&format!("n{i}"));
                let addr = PeerAddr::new(id.as_str());
                cluster.members.insert(id.clone(), Swim::new(id, addr, 1, config, i as u64));
            }
            let first = PeerAddr::new("n0");
            for i in 1..n {
                let id = NodeId::new(&format!("n{i}"));
                cluster.members.get_mut(&id).unwrap().announce(std::slice::from_ref(&first));
                cluster.drain(&id, &mut timers);
            }
            (cluster, timers)
        }

        fn push(&mut self, at_ms: u64, event: Event) {
            self.seq += 1;
            self.queue.push(Reverse((at_ms, self.seq, event)));
        }

        fn drain(&mut self, id: &NodeId, timers: &mut BTreeMap<u64, SwimTimer>) {
            let now = self.now_ms;
            let mut out = Vec::new();
            let member = self.members.get_mut(id).unwrap();
            // As `Node::swim_call` does, before it drains foca.
            member.reconnect_after_rejoin();
            while let Some((to, bytes)) = member.poll_send() {
                // Each test node's address is its name.
                out.push(Event::Packet(id.clone(), NodeId::new(to.as_str()), bytes));
            }
            let mut later = Vec::new();
            while let Some((after, timer)) = member.poll_timer() {
                later.push((after, timer));
            }
            member.take_notifications();
            assert!(member.is_drained());
            for event in out {
                if let Event::Packet(from, to, bytes) = event {
                    self.push(now + 1, Event::Packet(from, to, bytes));
                }
            }
            for (after, timer) in later {
                self.seq += 1;
                timers.insert(self.seq, timer);
                let key = self.seq;
                self.queue.push(Reverse((now + after.as_millis() as u64, key, Event::Timer(id.clone(), key))));
            }
        }

        fn run_until(&mut self, until_ms: u64, timers: &mut BTreeMap<u64, SwimTimer>) {
            while let Some(Reverse((at, _, _))) = self.queue.peek() {
                if *at > until_ms {
                    break;
                }
                let Reverse((at, _, event)) = self.queue.pop().unwrap();
                self.now_ms = at;
                match event {
                    Event::Packet(from, to, bytes) => {
                        let cut = self.side.contains(&from) != self.side.contains(&to);
                        if cut || self.stopped.contains(&to) || !self.members.contains_key(&to) {
                            continue;
                        }
                        let _ = self.members.get_mut(&to).unwrap().handle_data(&bytes);
                        self.drain(&to, timers);
                    }
                    Event::Timer(id, key) => {
                        let timer = timers.remove(&key).unwrap();
                        if self.stopped.contains(&id) {
                            continue;
                        }
                        self.members.get_mut(&id).unwrap().handle_timer(timer).unwrap();
                        self.drain(&id, timers);
                    }
                }
            }
            self.now_ms = until_ms;
        }

        fn everyone_but(&self, id: &NodeId) -> impl Iterator<Item = (&NodeId, &Swim)> + '_ {
            let id = id.clone();
            self.members.iter().filter(move |(n, _)| **n != id && !self.stopped.contains(*n))
        }
    }

    #[test]
    fn nodes_that_announce_to_one_seed_all_learn_each_other() {
        let config = SwimConfig::default();
        let (mut cluster, mut timers) = Cluster::new(8, &config);
        cluster.run_until(3000, &mut timers);
        for (id, member) in &cluster.members {
            assert_eq!(member.alive().len(), 7, "{id} knows everyone else");
        }
    }

    #[test]
    fn a_node_that_stops_answering_is_declared_down_by_every_peer_within_the_expected_detection_time() {
        let config = SwimConfig::default();
        let (mut cluster, mut timers) = Cluster::new(10, &config);
        cluster.run_until(5000, &mut timers);
        let victim = NodeId::new("n3");
        cluster.stopped.insert(victim.clone());
        let stopped_at = cluster.now_ms;
        // The bound the preset documents: a probe period to be probed, one to be suspected,
        // the suspicion time, then a few gossip rounds.
        let bound_ms = 2 * config.probe_period_ms + config.suspect_to_down_ms + 3 * config.gossip_interval_ms;
        let mut declared_at = None;
        while cluster.now_ms < stopped_at + 4 * bound_ms {
            let next = cluster.now_ms + 50;
            cluster.run_until(next, &mut timers);
            if cluster.everyone_but(&victim).all(|(_, m)| !m.alive().iter().any(|(n, _, _)| *n == victim)) {
                declared_at = Some(cluster.now_ms);
                break;
            }
        }
        let declared_at = declared_at.expect("the silent node is declared down");
        let took = declared_at - stopped_at;
        assert!(took >= config.suspect_to_down_ms, "not before the suspicion ran out ({took} ms)");
        assert!(took <= bound_ms + config.probe_period_ms, "declared down after {took} ms (bound {bound_ms} ms)");
        for (id, member) in cluster.everyone_but(&victim) {
            assert_eq!(member.alive().len(), 8, "{id} still sees every other live node");
        }
    }

    #[test]
    fn a_restarted_node_with_a_new_generation_rejoins_and_is_alive_again_everywhere() {
        let config = SwimConfig::default();
        let (mut cluster, mut timers) = Cluster::new(6, &config);
        cluster.run_until(3000, &mut timers);
        let victim = NodeId::new("n2");
        cluster.stopped.insert(victim.clone());
        cluster.run_until(10_000, &mut timers);
        assert!(
            cluster.everyone_but(&victim).all(|(_, m)| !m.alive().iter().any(|(n, _, _)| *n == victim)),
            "declared down first"
        );
        // The node comes back as a new life: a fresh member with a higher generation.
        cluster.stopped.remove(&victim);
        let mut reborn = Swim::new(victim.clone(), PeerAddr::new(victim.as_str()), 2, &config, 99);
        reborn.announce(&[PeerAddr::new("n0")]);
        cluster.members.insert(victim.clone(), reborn);
        cluster.drain(&victim, &mut timers);
        cluster.run_until(13_000, &mut timers);
        for (id, member) in &cluster.members {
            assert_eq!(member.alive().len(), 5, "{id} sees every other node, the restarted one included");
        }
        assert_eq!(cluster.members[&victim].identity().generation(), 2, "no rename was needed");
    }

    /// After a partition heals, each side tells the other's nodes that they were declared down,
    /// and every node renews its identity within a few milliseconds; foca then waits,
    /// disconnected and with its timers dropped, for a packet from a member. Without
    /// `reconnect_after_rejoin` the nodes that renewed last could wait for a push-pull sync.
    #[test]
    fn both_sides_of_a_healed_partition_find_each_other_within_a_few_seconds() {
        let config = SwimConfig::default();
        let (mut cluster, mut timers) = Cluster::new(7, &config);
        cluster.run_until(3000, &mut timers);
        cluster.side = ["n0", "n1"].into_iter().map(NodeId::new).collect();
        cluster.run_until(20_000, &mut timers);
        for (id, member) in &cluster.members {
            let expected = if cluster.side.contains(id) { 1 } else { 4 };
            assert_eq!(member.alive().len(), expected, "{id} sees only its own side");
        }
        cluster.side.clear();
        let healed_at = cluster.now_ms;
        let mut whole_at = None;
        while cluster.now_ms < healed_at + 30_000 {
            let next = cluster.now_ms + 100;
            cluster.run_until(next, &mut timers);
            if cluster.members.values().all(|m| m.alive().len() == 6) {
                whole_at = Some(cluster.now_ms);
                break;
            }
        }
        let took = whole_at.expect("the sides find each other") - healed_at;
        assert!(took <= 2 * config.announce_down_interval_ms, "whole again {took} ms after the heal");
    }

    #[test]
    fn a_decoded_identity_is_one_shared_copy_equal_to_the_identity_encoded() {
        let id = SwimId::new(NodeId::new("node-7"), PeerAddr::new("10.0.0.8:7946"), 3);
        let bytes = postcard::to_allocvec(&id).expect("encodes");
        let a: SwimId = postcard::from_bytes(&bytes).expect("decodes");
        let b: SwimId = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!(a, id);
        assert!(a.is_same_copy(&b), "one copy per identity");
        assert_eq!((a.node().as_str(), a.peer_addr().as_str(), a.generation()), ("node-7", "10.0.0.8:7946", 3));
        // Another life of the node is another identity, and so is another node at the address.
        let later = SwimId::new(NodeId::new("node-7"), PeerAddr::new("10.0.0.8:7946"), 4);
        let c: SwimId = postcard::from_bytes(&postcard::to_allocvec(&later).expect("encodes")).expect("decodes");
        assert_eq!(c, later);
        assert_ne!(c, a);
        let other = SwimId::new(NodeId::new("node-9"), PeerAddr::new("10.0.0.8:7946"), 3);
        let d: SwimId = postcard::from_bytes(&postcard::to_allocvec(&other).expect("encodes")).expect("decodes");
        assert_eq!(d, other);
        assert_ne!(d, a);
        // A format that names the fields decodes it too, to the same copy.
        let text = toml::to_string(&id).expect("encodes");
        let e: SwimId = toml::from_str(&text).expect("decodes");
        assert!(e.is_same_copy(&a));
        // A cut identity is an error.
        assert!(postcard::from_bytes::<SwimId>(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn the_later_life_of_a_node_wins_its_address() {
        let old = SwimId::new(NodeId::new("a"), PeerAddr::new("10.0.0.1:7946"), 1);
        let new = old.renew().unwrap();
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
        assert_eq!(new.addr(), old.addr());
    }
}
