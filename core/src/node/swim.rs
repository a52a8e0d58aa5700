//! How a node learns which peers are alive: told by its driver (the perfect failure detector,
//! a simulator crutch) or by SWIM through foca ([`crate::membership`]). This holds SWIM's glue
//! around foca: draining it after every call, reading its members only when they may have
//! changed, parking its gossip timer while it has nothing to say, and the node's own
//! suspicions (told to the suspect straight away; stale ones heard of taken up).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::limits;
use crate::membership::{PeerAddr, Swim, SwimError, SwimId, SwimMember, SwimTimer};
use crate::model::NodeId;
use crate::time::Time;

use super::gossip::Piggyback;
use super::io::Effects;
use super::timers::Timer;
use super::{Action, Message, NodeConfig, Packet};

/// Every how many `SwimTick`s a SWIM node reads all of foca's members to check its own list
/// (4 s at the default probe period, once joined).
pub(super) const FULL_CHECK_TICKS: u64 = 4;

/// Once joined, a SWIM node's `SwimTick` comes every this many probe periods.
pub(super) const TICK_PERIODS: u64 = 2;

/// While a node joins, how often at most foca's members are read.
const JOIN_READ_MS: u64 = 250;

/// How many times a node tells a member it suspects so (`Message::SwimSuspicion`): at once,
/// then evenly over the suspicion, while it lasts. Each telling is a round trip that 10% packet
/// loss breaks about one time in five; all five fail about once in 4,000 suspicions, and
/// gossip carries the news too.
pub(super) const SUSPICION_SENDS: u32 = 5;

/// How this node learns which peers are alive.
#[derive(Debug)]
pub(super) enum Liveness {
    /// The driver says (`Node::handle_membership`).
    Oracle,
    /// SWIM, through foca.
    Swim(Box<SwimState>),
}

impl Liveness {
    /// The SWIM state, in SWIM mode.
    pub(super) fn swim(&self) -> Option<&SwimState> {
        match self {
            Liveness::Oracle => None,
            Liveness::Swim(state) => Some(state),
        }
    }

    /// The SWIM state, in SWIM mode.
    pub(super) fn swim_mut(&mut self) -> Option<&mut SwimState> {
        match self {
            Liveness::Oracle => None,
            Liveness::Swim(state) => Some(state),
        }
    }

    /// The life this node's status carries: its SWIM identity's (a rejoin after being declared
    /// down renews it), or its configured one.
    pub(super) fn life(&self, configured: u64) -> u64 {
        self.swim().map_or(configured, |state| state.swim.identity().generation())
    }
}

/// How soon foca's members are read when they may have changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MembersRead {
    /// At most every `JOIN_READ_MS` while the node joins: members arrive by the dozen in every
    /// packet then, and nothing acts on them yet.
    Throttled,
    /// Now, whatever the throttle: a placement pass, or SWIM's tick, which may have just
    /// computed the members' fingerprint.
    Now {
        /// The fingerprint, when the caller has just computed it.
        fingerprint: Option<u64>,
    },
}

/// What one call into foca left for the node to route.
#[derive(Debug)]
pub(super) struct Drained {
    /// Broadcast items (registry entries) that rode on the packet.
    pub(super) items: Vec<Vec<u8>>,
    /// Members this node began to suspect: their replicas leave the balancers now, and they
    /// hear of it straight from this node.
    pub(super) suspected: Vec<(SwimId, u16)>,
    /// What foca refused, if it did.
    pub(super) error: Option<SwimError>,
}

/// What a `SwimTick`'s full check found.
#[derive(Debug)]
pub(super) struct Tick {
    /// The members' fingerprint, on a full check.
    pub(super) fingerprint: Option<u64>,
    /// The suspicions foca holds, on a full check.
    pub(super) suspects: Option<Vec<(SwimId, u16)>>,
}

/// foca and what the node keeps beside it.
#[derive(Debug)]
pub(super) struct SwimState {
    swim: Swim,
    /// [`Swim::fingerprint`] when the members were last read from foca.
    fingerprint: u64,
    /// Whether foca's members may differ from the node's: a read is due.
    members_stale: bool,
    /// When foca's members were last read.
    members_read_at: Option<Time>,
    /// foca's periodic gossip timers held back while foca has nothing to gossip (`park`).
    parked_gossip: Vec<SwimTimer>,
    /// How many `SwimTick` timers fired.
    ticks: u64,
    /// Members foca held suspected at the last full check with no suspicion timer of this
    /// node's pending for them (`stale_suspicions`).
    heard_suspects: Vec<(SwimId, u16)>,
    /// The suspicions, by life and incarnation, whose end this node has a timer for: foca's
    /// `ChangeSuspectToDown` and its own `SwimSuspectDown`. Each leaves when its timer fires.
    suspicion_timers: BTreeSet<(SwimId, u16)>,
}

impl SwimState {
    /// SWIM for the node of `config`, its randomness seeded by `seed`.
    pub(super) fn new(config: &NodeConfig, seed: u64) -> SwimState {
        SwimState {
            swim: Swim::new(config.id.clone(), config.gossip_addr.clone(), config.generation, &config.swim, seed),
            fingerprint: 0,
            members_stale: false,
            members_read_at: None,
            parked_gossip: Vec::new(),
            ticks: 0,
            heard_suspects: Vec::new(),
            suspicion_timers: BTreeSet::new(),
        }
    }

    /// Runs one call into foca, then drains what it queued: packets (each carrying `root`, the
    /// registry's) to `Action::Send`, timers into the node's heap. The members are marked for
    /// a read when they may have changed: foca notified something, or holds another number of
    /// members than the node's `members` (reading them costs a sorted list of n names: after
    /// every packet of a thousand-node cluster, that was most of a node's time).
    pub(super) fn call(
        &mut self,
        now: Time,
        (me, my_addr): (&NodeId, &PeerAddr),
        root: u64,
        members: usize,
        call: impl FnOnce(&mut Swim) -> Result<(), SwimError>,
        out: &mut Effects,
    ) -> Drained {
        let swim = &mut self.swim;
        let result = call(swim);
        swim.reconnect_after_rejoin();
        while let Some((to, packet)) = swim.poll_send() {
            // foca keeps this node's earlier lives as members declared down when peers gossip
            // about them, and may announce to one: that is a packet to itself, which it would
            // refuse.
            if to == *my_addr {
                continue;
            }
            let bytes = Packet::encode(me, &Message::Swim(root, &packet));
            out.push(Action::Send { to, bytes });
        }
        let mut timers = Vec::new();
        let mut suspected = Vec::new();
        while let Some((after, timer)) = swim.poll_timer() {
            // foca arms this timer when it starts suspecting a member.
            if let foca::Timer::ChangeSuspectToDown { member_id, incarnation, .. } = &timer {
                suspected.push((member_id.clone(), *incarnation));
            }
            timers.push((after, timer));
        }
        let items = swim.take_broadcasts();
        let notified = swim.take_notifications();
        assert!(swim.is_drained(), "foca's runtime is drained after every call");
        self.members_stale |= notified || swim.num_members() != members;
        for (member, incarnation) in &suspected {
            self.suspicion_timers.insert((member.clone(), *incarnation));
        }
        for (after, timer) in timers {
            out.schedule(now + after, Timer::Swim(timer));
        }
        Drained { items, suspected, error: result.err() }
    }

    /// foca's members, alive, when they may have changed and their fingerprint says they did.
    /// While the node joins (`joining`), a `Throttled` read happens at most every
    /// `JOIN_READ_MS`: a tenth of the reads of a thousand-node cold start.
    pub(super) fn members_to_read(
        &mut self,
        now: Time,
        joining: bool,
        read: MembersRead,
    ) -> Option<Vec<(NodeId, PeerAddr, u64)>> {
        let (now_anyway, known) = match read {
            MembersRead::Throttled => (false, None),
            MembersRead::Now { fingerprint } => (true, fingerprint),
        };
        if !self.members_stale {
            return None;
        }
        let due = self.members_read_at.is_none_or(|at| now >= at + Duration::from_millis(JOIN_READ_MS));
        if joining && !now_anyway && !due {
            return None;
        }
        self.members_stale = false;
        self.members_read_at = Some(now);
        let fingerprint = known.unwrap_or_else(|| self.swim.fingerprint());
        (fingerprint != std::mem::replace(&mut self.fingerprint, fingerprint)).then(|| self.swim.alive())
    }

    /// A `SwimTick` after its announce: every `FULL_CHECK_TICKS`, the members' fingerprint and
    /// their suspicions from one scan of foca's members (foca notifies every change of
    /// members; the full check is a safety net). Marks the members for a read then, or when
    /// foca holds another number than the node's `members`.
    pub(super) fn tick(&mut self, members: usize) -> Tick {
        self.ticks += 1;
        let full_check = self.ticks.is_multiple_of(FULL_CHECK_TICKS);
        let (fingerprint, suspects) = if full_check {
            let (fingerprint, suspects) = self.swim.fingerprint_and_suspects();
            (Some(fingerprint), Some(suspects))
        } else {
            (None, None)
        };
        self.members_stale |= full_check || self.swim.num_members() != members;
        Tick { fingerprint, suspects }
    }

    /// Holds back foca's periodic gossip timer when it comes due with nothing to gossip: foca
    /// would send nothing and arm it again, one wake-up in three of an idle node's. It goes back
    /// to foca as soon as there is something (`unpark`), so news goes out at once instead of at
    /// the next tick. Several may be held: a timer of an identity given up since is one that
    /// foca ignores. Returns whether it was held.
    pub(super) fn park(&mut self, timer: &SwimTimer) -> bool {
        if self.is_idle() && matches!(timer, foca::Timer::PeriodicGossip(_)) {
            self.parked_gossip.push(timer.clone());
            return true;
        }
        false
    }

    /// Hands the parked gossip timers back to foca, due now, if it has something to gossip.
    pub(super) fn unpark(&mut self, now: Time, out: &mut Effects) {
        if self.parked_gossip.is_empty() || self.is_idle() {
            return;
        }
        for timer in std::mem::take(&mut self.parked_gossip) {
            out.schedule(now, Timer::Swim(timer));
        }
    }

    /// Whether foca has nothing to gossip.
    fn is_idle(&self) -> bool {
        self.swim.updates_backlog() == 0 && self.swim.broadcast_backlog() == 0
    }

    /// How many gossip timers are parked.
    #[cfg(test)]
    pub(super) fn parked(&self) -> usize {
        self.parked_gossip.len()
    }

    /// Tells `member` that this node suspects it at `incarnation`, and sets the next telling
    /// (`left` in all, spread over the suspicion of `suspect_to_down_ms`).
    pub(super) fn tell_suspicion(
        &self,
        now: Time,
        me: &NodeId,
        (member, incarnation, left): (SwimId, u16, u32),
        suspect_to_down_ms: u64,
        out: &mut Effects,
    ) {
        let sender = self.swim.identity().clone();
        let suspect = SwimMember::new(member.clone(), incarnation, foca::State::Suspect);
        let to = member.peer_addr().clone();
        let bytes = Packet::encode(me, &Message::SwimSuspicion { sender, suspect });
        out.push(Action::Send { to, bytes });
        if left > 1 {
            let every = suspect_to_down_ms / u64::from(SUSPICION_SENDS);
            let at = now + Duration::from_millis(every.max(1));
            out.schedule(at, Timer::SwimSuspicion { member, incarnation, left: left - 1 });
        }
    }

    /// Whether foca holds `member` suspected, in that life and at `incarnation`.
    pub(super) fn still_suspects(&self, member: &SwimId, incarnation: u16) -> bool {
        let held = self.swim.member(member.node()).map(|m| (m.id() == member, m.incarnation(), m.state()));
        matches!(held, Some((true, i, foca::State::Suspect)) if i == incarnation)
    }

    /// Whether foca holds `node` suspected.
    pub(super) fn suspects(&self, node: &NodeId) -> bool {
        self.swim.member(node).is_some_and(|m| m.state() == foca::State::Suspect)
    }

    /// A suspicion's timer fired: it no longer waits.
    pub(super) fn suspicion_ended(&mut self, member: &SwimId, incarnation: u16) {
        self.suspicion_timers.remove(&(member.clone(), incarnation));
    }

    /// foca runs a suspicion's timer only on the node whose probe failed; a node that heard of
    /// the suspicion by gossip holds the member suspected until the same gossip brings the
    /// member's refutation or its down declaration. A node that missed every copy of both
    /// (each is sent `max_transmissions` times by every node that learns it: at a thousand
    /// nodes, about one node in a hundred crashes) kept a dead member for minutes, until its
    /// own probe or a push-pull sync reached it, and sent requests to its replicas. So a
    /// suspicion this node heard of (`heard`, at a full check) and still sees at the next full
    /// check (4 s later: longer than any live suspicion lasts where it began) is taken up as
    /// its own: returned here, with the end of its suspicion (`SwimSuspectDown`) set
    /// `suspect_to_down_ms` from now. SWIM's paper starts a timer on every node that hears a
    /// suspicion; this does it only for the stale ones, so that a live suspected member is
    /// not told by every node of the cluster at once.
    pub(super) fn stale_suspicions(&mut self, mut heard: Vec<(SwimId, u16)>) -> Vec<(SwimId, u16)> {
        // A suspicion whose end this node has a timer for is not stale. One it suspected
        // itself and lost the timer of (foca ignores its own timers once this node renewed its
        // identity) is.
        heard.retain(|suspicion| !self.suspicion_timers.contains(suspicion));
        let before = std::mem::take(&mut self.heard_suspects);
        let stale: Vec<(SwimId, u16)> = heard.iter().filter(|s| before.contains(s)).cloned().collect();
        self.heard_suspects = heard;
        stale
    }

    /// Sets the end of a suspicion this node took up (`stale_suspicions`).
    pub(super) fn arm_suspect_down(
        &mut self,
        now: Time,
        member: SwimId,
        incarnation: u16,
        suspect_to_down_ms: u64,
        out: &mut Effects,
    ) {
        self.suspicion_timers.insert((member.clone(), incarnation));
        out.schedule(now + Duration::from_millis(suspect_to_down_ms), Timer::SwimSuspectDown { member, incarnation });
    }

    /// The seeds this node joined through.
    pub(super) fn seeds(&self) -> &[PeerAddr] {
        self.swim.seeds()
    }

    /// This node's member list for a push-pull sync with the peer at `to`, asking for its own
    /// when `reply`, in as many packets as it takes.
    pub(super) fn send_sync(&self, me: &NodeId, to: PeerAddr, reply: bool, out: &mut Effects) {
        let runs = self.swim.sync_state(limits::PACKET_BYTES_MAX - limits::PACKET_HEADER_BYTES_MAX);
        for (i, members) in runs.into_iter().enumerate() {
            // One answer is enough, whatever the number of packets.
            let bytes = Packet::encode(me, &Message::SwimSync { members, reply: reply && i == 0 });
            out.push(Action::Send { to: to.clone(), bytes });
        }
    }

    /// The live members that carry this node's name (see `Node::name_conflicts`).
    pub(super) fn name_conflicts(&self) -> Vec<(PeerAddr, u64)> {
        self.swim.name_conflicts()
    }

    /// foca itself, for tests to look at.
    #[cfg(test)]
    pub(super) fn foca(&self) -> &Swim {
        &self.swim
    }

    /// foca, for small news to ride on its packets.
    pub(super) fn piggyback(&mut self) -> &mut dyn Piggyback {
        &mut self.swim
    }
}

impl Piggyback for Swim {
    fn has_room(&self) -> bool {
        self.broadcast_backlog() < limits::SWIM_ITEMS_PENDING_MAX
    }

    fn carry(&mut self, item: &[u8]) {
        self.broadcast(item);
    }
}
