//! The facade's routing of what is learnt about members: the perfect failure detector's list
//! or SWIM's (foca drained after every call, its members read when they may have changed),
//! suspicions, and what rides on SWIM's packets. A member joining or leaving reaches the view
//! and the balancers through `Node::set_members`; a suspicion through `Node::suspect` and
//! `Node::clear_suspicion`.

use std::time::Duration;

use crate::membership::{PeerAddr, Swim, SwimError, SwimId, SwimTimer};
use crate::model::NodeId;
use crate::time::Time;

use super::swim;
use super::swim::MembersRead;
use super::{Event, Message, Node, Timer, WireEntry};

impl Node {
    /// A SWIM packet from `from`, for foca; ignored with the perfect failure detector.
    pub(super) fn swim_message(&mut self, now: Time, from: &NodeId, message: Message<'_>) {
        if self.liveness.swim().is_none() {
            return;
        }
        match message {
            Message::Swim(root, packet) => {
                self.swim_call(now, Some(from), |swim| swim.handle_data(packet));
                // A root that differs starts an exchange as a `Root` does, at most once an
                // anti-entropy interval: a busy node's packets would start one each.
                // Cheapest test first: the roots are equal in a quiet cluster, and this runs for
                // every SWIM packet.
                self.confirm_by_peer_root(now, from, root);
                if self.anti_entropy.may_answer(now, self.config.anti_entropy_interval_ms)
                    && root != self.registry.root_hash()
                    && self.members.contains(from)
                {
                    self.anti_entropy.answered(now);
                    self.send(from, &Message::Digest(self.registry.digest()));
                }
            }
            Message::SwimSync { members, reply } => {
                let mut sender = None;
                self.swim_call(now, Some(from), |swim| {
                    sender = Some(swim.apply_sync(members)?);
                    Ok(())
                });
                if let Some(sender) = sender.filter(|_| reply) {
                    self.answer_swim_sync(sender.peer_addr().clone());
                }
            }
            Message::SwimSuspicion { sender, suspect } => {
                self.swim_call(now, Some(from), |swim| swim.refute(suspect, sender));
            }
            _ => unreachable!("routed by handle_message"),
        }
    }

    /// Runs one call into foca ([`SwimState::call`]), then routes what it left: the members
    /// read from foca's own list, the truth, when they may have changed; this node's status
    /// again if foca renewed its identity; the members it began to suspect out of the
    /// balancers and told; the news that rode on the packet merged. A change that foca did not
    /// notify and that kept the count (a member down and another up in one call) is caught by
    /// the full check of `Timer::SwimTick`. A refused packet is reported as an
    /// [`Event::BadMessage`] from `source`.
    pub(super) fn swim_call(
        &mut self,
        now: Time,
        source: Option<&NodeId>,
        call: impl FnOnce(&mut Swim) -> Result<(), SwimError>,
    ) {
        let root = self.registry.root_hash();
        let members = self.members.len();
        let me = (&self.config.id, &self.config.gossip_addr);
        let Some(swim) = self.liveness.swim_mut() else { return };
        let drained = swim.call(now, me, root, members, call, &mut self.out);
        if let Some(e) = drained.error {
            // foca refuses its own timers only on a bug; a packet from a peer may be anything.
            assert!(source.is_some(), "foca refused a timer or an announce: {e}");
            self.out.event(Event::BadMessage { from: source.cloned(), error: e.to_string() });
        }
        self.read_swim_members(now, MembersRead::Throttled);
        // Declared down and back under a renewed identity: the status says so, or peers that
        // know the new life would count it as none.
        if self.own_status.is_of_another_life(self.own_generation()) {
            self.publish_status(now);
        }
        for (member, incarnation) in drained.suspected {
            self.suspect(member.node());
            self.tell_suspicion(now, member, incarnation, swim::SUSPICION_SENDS);
        }
        // A packet from a member this node suspects may carry its refutation.
        if let Some(node) = source
            && self.members.is_suspected(node)
        {
            self.refresh_suspected(node);
        }
        self.merge_broadcasts(now, source, &drained.items);
        self.unpark_swim_gossip(now);
    }

    /// Hands foca back its parked gossip timers if it has something to gossip.
    pub(super) fn unpark_swim_gossip(&mut self, now: Time) {
        if let Some(swim) = self.liveness.swim_mut() {
            swim.unpark(now, &mut self.out);
        }
    }

    /// Takes the members from foca when they may have changed ([`SwimState::members_to_read`]).
    pub(super) fn read_swim_members(&mut self, now: Time, read: MembersRead) {
        let joining = self.placement.is_joining(now);
        let Some(swim) = self.liveness.swim_mut() else { return };
        if let Some(alive) = swim.members_to_read(now, joining, read) {
            self.set_members(now, alive);
        }
    }

    /// Tells `member` that this node suspects it (see [`SwimState::tell_suspicion`]).
    pub(super) fn tell_suspicion(&mut self, now: Time, member: SwimId, incarnation: u16, left: u32) {
        let swim = self.liveness.swim().expect("only SWIM suspects");
        swim.tell_suspicion(
            now,
            &self.config.id,
            (member, incarnation, left),
            self.config.swim.suspect_to_down_ms,
            &mut self.out,
        );
    }

    /// Takes up the suspicions heard of that went stale ([`SwimState::stale_suspicions`]): the
    /// member leaves the balancers, is told (a live one refutes within a round trip, as for any
    /// suspicion of this node's), and is declared down `suspect_to_down_ms` later if it is
    /// still suspected at that incarnation.
    pub(super) fn take_up_stale_suspicions(&mut self, now: Time, heard: Vec<(SwimId, u16)>) {
        let swim = self.liveness.swim_mut().expect("only SWIM suspects");
        for (member, incarnation) in swim.stale_suspicions(heard) {
            self.suspect(member.node());
            self.tell_suspicion(now, member.clone(), incarnation, swim::SUSPICION_SENDS);
            let down_ms = self.config.swim.suspect_to_down_ms;
            let swim = self.liveness.swim_mut().expect("only SWIM suspects");
            swim.arm_suspect_down(now, member, incarnation, down_ms, &mut self.out);
        }
    }

    /// Lists `node`'s replicas again if foca no longer suspects it (it refuted); only this
    /// node's own suspicions take replicas out (see `swim_call`).
    pub(super) fn refresh_suspected(&mut self, node: &NodeId) {
        let swim = self.liveness.swim().expect("only SWIM suspects");
        if !swim.suspects(node) {
            self.clear_suspicion(node);
        }
    }

    /// A member suspected by SWIM is out of every balancer until it is cleared (it refuted:
    /// seen on its next packet, at the next telling of the suspicion, or when the suspicion
    /// timer runs out) or declared down (it leaves the members); placement still counts it, as
    /// nothing has moved yet.
    pub(super) fn suspect(&mut self, node: &NodeId) {
        if self.members.set_suspected(node, true) {
            self.balancers.unlist_node(node);
            self.update_backends();
        }
    }

    /// A member's suspicion is over (it refuted): its replicas are in the balancers again.
    pub(super) fn clear_suspicion(&mut self, node: &NodeId) {
        if self.members.set_suspected(node, false) {
            self.balancers.list_node(node);
            self.update_backends();
        }
    }

    /// Registry entries that rode on a peer's SWIM packet ([`crate::membership`]): merged like
    /// any news, and passed on at the next gossip round if they were news.
    pub(super) fn merge_broadcasts(&mut self, now: Time, source: Option<&NodeId>, items: &[Vec<u8>]) {
        let mut wire = Vec::with_capacity(items.len());
        for item in items {
            match postcard::from_bytes::<WireEntry>(item) {
                Ok(entry) => wire.push(entry),
                Err(e) => {
                    let event = Event::BadMessage { from: source.cloned(), error: format!("broadcast item: {e}") };
                    self.out.event(event);
                }
            }
        }
        if !wire.is_empty() {
            let from = source.cloned().unwrap_or_else(|| self.config.id.clone());
            self.merge_wire(now, &from, &wire);
        }
    }

    /// The peers believed alive are now `alive` (this node excluded, sorted by name), at these
    /// addresses and in these lives: a peer that left leaves every balancer and placement at
    /// once, one that joined enters them.
    pub(super) fn set_members(&mut self, now: Time, alive: Vec<(NodeId, PeerAddr, u64)>) {
        debug_assert!(alive.iter().all(|(n, _, _)| *n != self.config.id));
        let Some(change) = self.members.change(&alive) else { return };
        // A peer seen for the first time, or in another life: what its status says is looked
        // at again, since a status from an earlier life counts as none. A member stays one
        // through this; one that joins is listed below from what this derived.
        for (node, life) in &change.renewed {
            self.members.know_life(node, *life);
            self.status_changed(node);
            self.request_pass(now);
        }
        self.members.replace(alive, &change);
        if change.joined.is_empty() && change.left.is_empty() {
            // The same peers; one may have come back at another address, or in another life.
            return;
        }
        for (node, suspected) in &change.left {
            self.view.member_left(node);
            // A suspected node's replicas left the balancers already.
            if !suspected {
                self.balancers.unlist_node(node);
            }
        }
        for node in &change.joined {
            self.view.member_joined(node);
            self.balancers.list_node(node);
        }
        self.placement.structure_changed();
        self.placement.facts_changed();
        self.update_backends();
        self.request_pass(now);
    }

    /// Time to tell a suspected member again, if foca still suspects it.
    pub(super) fn suspicion_told(&mut self, now: Time, member: SwimId, incarnation: u16, left: u32) {
        let swim = self.liveness.swim().expect("only SWIM suspects");
        if swim.still_suspects(&member, incarnation) {
            self.tell_suspicion(now, member, incarnation, left);
        } else {
            self.refresh_suspected(member.node());
        }
    }

    /// The end of a suspicion this node took up: declared down if still suspected.
    pub(super) fn suspicion_over(&mut self, now: Time, member: SwimId, incarnation: u16) {
        let swim = self.liveness.swim_mut().expect("only SWIM suspects");
        swim.suspicion_ended(&member, incarnation);
        self.swim_call(now, None, |swim| swim.declare_down(&member, incarnation).map(|_| ()));
        self.refresh_suspected(member.node());
    }

    /// One of foca's timers: held back if it is its gossip timer with nothing to gossip, else
    /// handed to foca.
    pub(super) fn swim_timer(&mut self, now: Time, timer: SwimTimer) {
        let swim = self.liveness.swim_mut().expect("SWIM sets its timers");
        if swim.park(&timer) {
            return;
        }
        let cleared = match &timer {
            foca::Timer::ChangeSuspectToDown { member_id, incarnation, .. } => {
                swim.suspicion_ended(member_id, *incarnation);
                Some(member_id.node().clone())
            }
            _ => None,
        };
        self.swim_call(now, None, |swim| swim.handle_timer(timer));
        // Declared down, it left the members; still a member, it refuted in time (or is
        // suspected again, by a later probe).
        if let Some(node) = cleared {
            self.refresh_suspected(&node);
        }
    }

    /// A push-pull membership sync with one peer (the first ones with a seed: the node may
    /// know nobody else yet), and the next.
    pub(super) fn swim_sync(&mut self, now: Time) {
        let swim = self.liveness.swim().expect("SWIM sets its timers");
        let first = self.placement.is_joining(now);
        let to = if first && !swim.seeds().is_empty() {
            let seeds = swim.seeds();
            Some(seeds[self.rng.below(seeds.len())].clone())
        } else {
            self.members.random_addrs(&mut self.rng, 1).pop()
        };
        if let Some(to) = to {
            self.send_swim_sync(to);
        }
        let swim = &self.config.swim;
        let next = if first {
            // Once more before placement starts: the seeds may not have known the whole cluster
            // the first time (they learn every node from its own first sync).
            now + Duration::from_millis(2 * swim.probe_period_ms)
        } else {
            let interval_ms = swim.sync_interval_ms.max(swim.sync_ms_per_member * self.members.len() as u64).max(1);
            // Spread over the interval, so that nodes started together do not sync in step.
            let jitter_ms = self.rng.below(interval_ms as usize / 2 + 1) as u64;
            now + Duration::from_millis(interval_ms / 2 + jitter_ms)
        };
        self.out.schedule(next, Timer::SwimSync);
    }

    /// SWIM's own tick: announce again while alone, read the members when they may have
    /// changed, and on a full check take up the stale suspicions; then the next tick.
    pub(super) fn swim_tick(&mut self, now: Time) {
        self.swim_call(now, None, |swim| {
            swim.announce_if_alone();
            Ok(())
        });
        let members = self.members.len();
        let tick = self.liveness.swim_mut().expect("SWIM sets its timers").tick(members);
        self.read_swim_members(now, MembersRead::Now { fingerprint: tick.fingerprint });
        if let Some(suspects) = tick.suspects {
            self.take_up_stale_suspicions(now, suspects);
        }
        // Every probe period while alone or joining; then every other one, in step with the
        // node's other periodic timers (at their defaults), so that it costs no wake-up of its
        // own.
        let period_ms = self.config.swim.probe_period_ms.max(1);
        let next = if self.members.is_empty() || self.placement.is_joining(now) {
            now + Duration::from_millis(period_ms)
        } else {
            self.grid.at(now + Duration::from_millis(period_ms), swim::TICK_PERIODS * period_ms)
        };
        self.out.schedule(next, Timer::SwimTick);
    }

    /// Sends this node's member list to the peer at `to`, asking for its own when `reply`.
    pub(super) fn send_swim_sync(&mut self, to: PeerAddr) {
        let swim = self.liveness.swim().expect("SWIM syncs");
        swim.send_sync(&self.config.id, to, true, &mut self.out);
    }

    /// Answers a peer's sync with this node's member list (asking for none back).
    pub(super) fn answer_swim_sync(&mut self, to: PeerAddr) {
        let swim = self.liveness.swim().expect("SWIM syncs");
        swim.send_sync(&self.config.id, to, false, &mut self.out);
    }
}
