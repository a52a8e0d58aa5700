//! The agent state machine: one per server, the same in the simulator and in the real agent.
//!
//! `Node` is sans-I/O, in the manner of quinn-proto's `Connection` and foca: inputs go in through
//! `handle_*(now, ...)`, effects come out of [`Node::poll_action`], and the next wake-up out of
//! [`Node::poll_timeout`]. A driver calls them in this order, and only this order:
//!
//! 1. one input: `handle_timeout` when `poll_timeout` is due, or `handle_message`,
//!    `handle_container_event`, `handle_probe_result`, `handle_traffic`, `handle_command`,
//!    `handle_membership`;
//! 2. `poll_action` until it returns `None`, carrying out each action;
//! 3. `poll_timeout`, to know when to call `handle_timeout` next.
//!
//! Inputs are refused (asserted) while actions are still queued: effects are drained after every
//! input (STYLE.md, rule 4).
//!
//! What a node decides, it decides from its replicated registry ([`crate::registry`]): the apps
//! (`app/<name>`), what every node runs (`status/<node>`) and the autoscaled counts
//! (`scale/<app>`). It computes [`crate::schedule::place`] over those facts and acts on its own
//! rows only; every node runs the same function on the same facts, so no leader is needed.
//!
//! Membership ([`NodeConfig::membership`]): by default the driver tells the node who is alive
//! through [`Node::handle_membership`]. That is a *perfect failure detector*, a simulator
//! crutch, and it is named so wherever it is used. In [`MembershipMode::Swim`] the node runs
//! SWIM ([`crate::membership`]) instead: its packets are [`Message::Swim`], its timers sit in the
//! node's timer heap, and the driver only names seeds ([`NodeConfig::seeds`],
//! [`Node::handle_join`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::hash::stable_hash;
use crate::health::{HealthState, ProbeOutcome};
use crate::limits;
use crate::membership::{MembershipMode, PeerAddr, Swim, SwimError, SwimId, SwimTimer};
use crate::model::{AppName, AppSpec, NodeId, NodeSpec, SlotId, validate_apps};
use crate::registry::{Entry, Head, Key, Registry, RegistryError};
use crate::rng::SplitMix64;
use crate::schedule::{ContainerState, Observed, ObservedContainer, place_owned};
use crate::time::Time;

mod anti_entropy;
mod balancers;
mod config;
mod gossip;
mod io;
mod members;
mod own_status;
mod placement;
mod scaling;
mod slots;
mod swim;
mod timers;
mod view;
mod wire;

use anti_entropy::AntiEntropy;
use balancers::Balancers;
pub use config::NodeConfig;
use gossip::{Gossip, RumorConfig};
use io::Effects;
pub use io::{Action, Backend, Command, CommandError, ContainerEvent, Event};
use members::Members;
use own_status::OwnStatus;
use placement::{Order, Placement, Shortcut};
use scaling::Scaling;
use slots::{Phase, Slots};
use swim::{Liveness, SwimState};
use timers::{Grid, Timer};
use view::{NodeSlots, View};
pub use wire::{ContainerStatus, Message, NodeStatus, Packet, STARTING, Value, WireEntry};

/// The agent. See the module documentation for the order in which a driver calls it.
#[derive(Debug)]
pub struct Node {
    config: NodeConfig,
    registry: Registry<Value>,
    /// The peers believed alive, their lives, and the ones SWIM suspects.
    members: Members,
    /// This node's slots and their lifecycles.
    slots: Slots,
    /// What this node's parts decided to do: actions for the driver, timers for itself.
    out: Effects,
    rng: SplitMix64,
    /// Rumors of recent news, and when the next round is.
    gossip: Gossip,
    /// Throttles the answers to the roots SWIM's packets carry.
    anti_entropy: AntiEntropy,
    /// What each balancer is sent.
    balancers: Balancers,
    /// What the statuses say: the slots of each node, the live containers of each slot.
    view: View,
    /// When this node's own status is written.
    own_status: OwnStatus,
    /// When placement passes run, and what the last one saw.
    placement: Placement,
    /// Request counts, autoscalers and which apps autoscale.
    scaling: Scaling,
    /// How this node learns which peers are alive: told, or SWIM.
    liveness: Liveness,
    /// Where this node's periodic timers fall.
    grid: Grid,
    now: Time,
}

impl Node {
    /// A node that knows nothing yet; it publishes its status and starts its timers.
    pub fn new(now: Time, config: NodeConfig) -> Node {
        if let Err(e) = config.check() {
            panic!("the driver checks its NodeConfig first (NodeConfig::check): {e}");
        }
        assert!(config.gossip_fanout > 0 && config.gossip_interval_ms > 0 && config.anti_entropy_interval_ms > 0);
        let rng = SplitMix64::new(config.seed ^ stable_hash(config.id.as_str().as_bytes()));
        let mut node = Node {
            registry: Registry::new(config.id.clone()),
            members: Members::default(),
            slots: Slots::default(),
            out: Effects::default(),
            rng,
            gossip: Gossip::new(),
            anti_entropy: AntiEntropy::default(),
            balancers: Balancers::default(),
            view: View::default(),
            own_status: OwnStatus::default(),
            scaling: Scaling::default(),
            liveness: Liveness::Oracle,
            grid: Grid { started: now, phase_ms: 0 },
            placement: Placement::new(match config.membership {
                MembershipMode::PerfectFailureDetector => now,
                MembershipMode::Swim => now + Duration::from_millis(config.swim.join_settle_ms),
            }),
            now,
            config,
        };
        // Spread the periodic timers so that nodes started together do not gossip in lockstep.
        // On one node they share a phase: timers of equal intervals (anti-entropy, load
        // reports, autoscaling: a second each by default) then come due together and wake the
        // node once, not three times. SWIM's own tick (`SwimTick`) shares it too.
        node.grid.phase_ms = node.rng.next_u64();
        let periodic = [
            (node.config.gossip_interval_ms, Timer::Gossip),
            (node.config.anti_entropy_interval_ms, Timer::AntiEntropy),
            (node.config.load_report_interval_ms, Timer::LoadReport),
            (node.config.autoscale_interval_ms, Timer::Autoscale),
        ];
        // With SWIM, the root rides on its packets (`Message::Swim`).
        let swim = node.config.membership == MembershipMode::Swim;
        for (interval_ms, timer) in periodic.into_iter().filter(|(_, t)| !(swim && matches!(t, Timer::AntiEntropy))) {
            node.out.schedule(now + Duration::from_millis(node.grid.jitter_ms(interval_ms)), timer);
        }
        node.publish_status(now);
        node.request_pass(now);
        if node.config.membership == MembershipMode::Swim {
            let seed = node.rng.next_u64();
            let config = &node.config;
            node.liveness = Liveness::Swim(Box::new(SwimState::new(config, seed)));
            let seeds = node.config.seeds.clone();
            node.swim_call(now, None, |swim| {
                swim.announce(&seeds);
                Ok(())
            });
            let period_ms = node.config.swim.probe_period_ms.max(1);
            let join_at = now + Duration::from_millis(period_ms);
            node.out.schedule(join_at + Duration::from_millis(node.grid.jitter_ms(period_ms)), Timer::SwimTick);
            // After the first announces were answered: the seeds know the cluster by then.
            node.out.schedule(join_at, Timer::SwimSync);
        }
        node
    }

    /// This node's name.
    pub fn id(&self) -> &NodeId {
        &self.config.id
    }

    /// This node's config.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The replicated registry as this node sees it.
    pub fn registry(&self) -> &Registry<Value> {
        &self.registry
    }

    /// The peers this node believes alive.
    pub fn members(&self) -> &BTreeSet<NodeId> {
        self.members.names()
    }

    /// The members SWIM suspects right now: their replicas are out of every balancer, and
    /// placement still counts them.
    pub fn suspected(&self) -> &BTreeSet<NodeId> {
        self.members.suspected()
    }

    /// Bumped whenever [`Node::members`] changes: a driver that mirrors the members copies
    /// them only then.
    pub fn members_version(&self) -> u64 {
        self.members.version()
    }

    /// The next effect to carry out, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.actions.pop_front()
    }

    /// When `handle_timeout` is due next.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.out.timers.next_due()
    }

    fn begin_input(&mut self, now: Time) {
        assert!(self.out.actions.is_empty(), "the driver drains actions after every input");
        // Time never goes backwards inside the node, whatever the driver's clock does.
        self.now = self.now.max(now);
    }

    /// Timers that are due at `now` fire, in order.
    pub fn handle_timeout(&mut self, now: Time) {
        self.begin_input(now);
        let now = self.now;
        let mut fired = 0usize;
        while let Some(timer) = self.out.timers.pop_due(now) {
            self.on_timer(now, timer);
            fired += 1;
            assert!(fired <= limits::TIMERS_PER_CALL_MAX, "timer storm: a timer rescheduled itself at now");
        }
        self.check_invariants();
    }

    /// A [`Packet`] from a peer, as it came off the network. Undecodable bytes are dropped
    /// with an [`Event::BadMessage`]: a peer of another version must not crash this one.
    pub fn handle_message(&mut self, now: Time, bytes: &[u8]) {
        self.begin_input(now);
        let now = self.now;
        let Packet { from, message } = match postcard::from_bytes::<Packet>(bytes) {
            Ok(packet) => packet,
            Err(e) => {
                let event = Event::BadMessage { from: None, error: e.to_string() };
                self.out.event(event);
                return;
            }
        };
        match message {
            Message::Updates(entries) => self.merge_wire(now, &from, &entries),
            Message::Load { app, requests } => self.record_load(now, &app, requests),
            message @ (Message::Root(_) | Message::Digest(_) | Message::Summary { .. } | Message::Repair { .. }) => {
                self.anti_entropy_message(now, &from, message)
            }
            message @ (Message::Swim(..) | Message::SwimSync { .. } | Message::SwimSuspicion { .. }) => {
                self.swim_message(now, &from, message)
            }
        }
        self.check_invariants();
    }

    /// A step of anti-entropy from `from`: answered with the next.
    fn anti_entropy_message(&mut self, now: Time, from: &NodeId, message: Message<'_>) {
        match message {
            Message::Root(root) => {
                if let Some(digest) = anti_entropy::answer_root(&self.registry, root) {
                    self.send(from, &digest);
                }
            }
            Message::Digest(digest) => {
                let buckets = self.registry.mismatched_buckets(&digest);
                for (buckets, heads) in anti_entropy::summaries(&self.registry, &buckets) {
                    self.send(from, &Message::Summary { buckets, heads });
                }
            }
            Message::Summary { buckets, heads } => {
                // Send what the peer lacks or holds older; ask for what it has newer.
                let (send, want) = anti_entropy::answer_summary(&self.registry, &buckets, &heads);
                self.send_repair(from, &send, want);
            }
            Message::Repair { entries, want } => {
                self.merge_wire(now, from, &entries);
                if !want.is_empty() {
                    self.send_repair(from, &want, Vec::new());
                }
            }
            _ => unreachable!("routed by handle_message"),
        }
    }

    /// A SWIM packet from `from`, for foca; ignored with the perfect failure detector.
    fn swim_message(&mut self, now: Time, from: &NodeId, message: Message<'_>) {
        if self.liveness.swim().is_none() {
            return;
        }
        match message {
            Message::Swim(root, packet) => {
                self.swim_call(now, Some(from), |swim| swim.handle_data(packet));
                // A root that differs starts an exchange as a `Root` does, at most once an
                // anti-entropy interval: a busy node's packets would start one each.
                if self.anti_entropy.may_answer(now, self.config.anti_entropy_interval_ms)
                    && self.members.contains(from)
                    && let Some(digest) = anti_entropy::answer_root(&self.registry, root)
                {
                    self.anti_entropy.answered(now);
                    self.send(from, &digest);
                }
            }
            Message::SwimSync { members, reply } => {
                let mut sender = None;
                self.swim_call(now, Some(from), |swim| {
                    sender = Some(swim.apply_sync(members)?);
                    Ok(())
                });
                if let Some(sender) = sender.filter(|_| reply) {
                    self.send_swim_sync(sender.peer_addr().clone(), false);
                }
            }
            Message::SwimSuspicion { sender, suspect } => {
                self.swim_call(now, Some(from), |swim| swim.refute(suspect, sender));
            }
            _ => unreachable!("routed by handle_message"),
        }
    }

    /// Joins the cluster through the peers at `addrs` ([`MembershipMode::Swim`] only):
    /// announces this node to them, and to them again while it knows no peer.
    pub fn handle_join(&mut self, now: Time, addrs: Vec<PeerAddr>) {
        self.begin_input(now);
        let now = self.now;
        assert!(self.liveness.swim().is_some(), "handle_join is for MembershipMode::Swim");
        self.swim_call(now, None, |swim| {
            swim.announce(&addrs);
            Ok(())
        });
        self.check_invariants();
    }

    /// Runs one call into foca ([`SwimState::call`]), then routes what it left: the members
    /// read from foca's own list, the truth, when they may have changed; this node's status
    /// again if foca renewed its identity; the members it began to suspect out of the
    /// balancers and told; the news that rode on the packet merged. A change that foca did not
    /// notify and that kept the count (a member down and another up in one call) is caught by
    /// the full check of `Timer::SwimTick`. A refused packet is reported as an
    /// [`Event::BadMessage`] from `source`.
    fn swim_call(&mut self, now: Time, source: Option<&NodeId>, call: impl FnOnce(&mut Swim) -> Result<(), SwimError>) {
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
        self.read_swim_members(now, false, None);
        // Declared down and back under a renewed identity: the status says so, or peers that
        // know the new life would count it as none.
        if self.own_status.is_of_another_life(self.own_generation()) {
            self.publish_status(now);
        }
        for (member, incarnation) in drained.suspected {
            self.set_suspected(member.node(), true);
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
    fn unpark_swim_gossip(&mut self, now: Time) {
        if let Some(swim) = self.liveness.swim_mut() {
            swim.unpark(now, &mut self.out);
        }
    }

    /// Takes the members from foca when they may have changed ([`SwimState::members_to_read`]);
    /// a placement pass reads them first (`now_anyway`).
    fn read_swim_members(&mut self, now: Time, now_anyway: bool, known: Option<u64>) {
        let joining = self.placement.is_joining(now);
        let Some(swim) = self.liveness.swim_mut() else { return };
        if let Some(alive) = swim.members_to_read(now, joining, now_anyway, known) {
            self.set_members(now, alive);
        }
    }

    /// Tells `member` that this node suspects it (see [`SwimState::tell_suspicion`]).
    fn tell_suspicion(&mut self, now: Time, member: SwimId, incarnation: u16, left: u32) {
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
    fn take_up_stale_suspicions(&mut self, now: Time, heard: Vec<(SwimId, u16)>) {
        let swim = self.liveness.swim_mut().expect("only SWIM suspects");
        for (member, incarnation) in swim.stale_suspicions(heard) {
            self.set_suspected(member.node(), true);
            self.tell_suspicion(now, member.clone(), incarnation, swim::SUSPICION_SENDS);
            let down_ms = self.config.swim.suspect_to_down_ms;
            let swim = self.liveness.swim_mut().expect("only SWIM suspects");
            swim.arm_suspect_down(now, member, incarnation, down_ms, &mut self.out);
        }
    }

    /// Lists `node`'s replicas again if foca no longer suspects it (it refuted); only this
    /// node's own suspicions take replicas out (see `swim_call`).
    fn refresh_suspected(&mut self, node: &NodeId) {
        let swim = self.liveness.swim().expect("only SWIM suspects");
        if !swim.suspects(node) {
            self.set_suspected(node, false);
        }
    }

    /// A member suspected by SWIM is out of every balancer until it is cleared (it refuted:
    /// seen on its next packet, at the next telling of the suspicion, or when the suspicion
    /// timer runs out) or declared down (it leaves the members); placement still counts it, as
    /// nothing has moved yet.
    fn set_suspected(&mut self, node: &NodeId, suspected: bool) {
        if self.members.set_suspected(node, suspected) {
            self.balancers.trust(node, !suspected);
            self.update_backends();
        }
    }

    /// Registry entries that rode on a peer's SWIM packet ([`crate::membership`]): merged like
    /// any news, and passed on at the next gossip round if they were news.
    fn merge_broadcasts(&mut self, now: Time, source: Option<&NodeId>, items: &[Vec<u8>]) {
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

    /// The perfect failure detector, a simulator crutch kept for comparing policies without
    /// detection noise: the driver says which peers are alive, and where they are. A peer
    /// missing from `alive` leaves every balancer at once.
    pub fn handle_membership(&mut self, now: Time, alive: impl IntoIterator<Item = (NodeId, PeerAddr)>) {
        self.begin_input(now);
        let now = self.now;
        assert!(
            self.config.membership == MembershipMode::PerfectFailureDetector,
            "handle_membership is the perfect failure detector's input; SWIM learns members itself"
        );
        // The oracle knows no lives: every status counts (generation 0 is the lowest).
        let alive: BTreeMap<NodeId, PeerAddr> = alive.into_iter().filter(|(n, _)| *n != self.config.id).collect();
        self.set_members(now, alive.into_iter().map(|(n, a)| (n, a, 0)).collect());
        self.check_invariants();
    }

    /// The peers believed alive are now `alive` (this node excluded, sorted by name), at these
    /// addresses and in these lives: a peer that left leaves every balancer and placement at
    /// once, one that joined enters them.
    fn set_members(&mut self, now: Time, alive: Vec<(NodeId, PeerAddr, u64)>) {
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
            self.view.member_changed(node, false);
            // A suspected node's replicas left the balancers already.
            if !suspected {
                self.balancers.trust(node, false);
            }
        }
        for node in &change.joined {
            self.view.member_changed(node, true);
            self.balancers.trust(node, true);
        }
        self.placement.structure_changed();
        self.placement.facts_changed();
        self.update_backends();
        self.request_pass(now);
    }

    /// The container runtime reports on a container.
    pub fn handle_container_event(&mut self, now: Time, event: ContainerEvent) {
        self.begin_input(now);
        let now = self.now;
        match event {
            ContainerEvent::Started { slot, generation, container } => {
                let check = match self.registry.get(&Key::App(slot.app.clone())) {
                    Some(Value::App(spec)) => spec.health.clone(),
                    _ => Default::default(),
                };
                if self.slots.started(now, slot, generation, container, &check, &mut self.out) {
                    // Only the container id changed, which no peer acts on: it goes out with
                    // the next change, and does not send out one held back.
                    self.hold_status(now);
                }
            }
            ContainerEvent::StartFailed { slot, generation, .. } => {
                if self.slots.get(&slot).is_some_and(|l| l.start == generation) {
                    self.fail(now, &slot);
                }
            }
            ContainerEvent::Exited { container } => {
                if let Some(slot) = self.slots.running(&container) {
                    self.fail(now, &slot);
                }
            }
            ContainerEvent::Adopted { containers } => {
                for (slot, container, host_port) in containers {
                    let spec = self.app_spec(&slot.app);
                    self.slots.adopt(now, slot, container, host_port, spec.as_ref(), &mut self.out);
                }
                self.publish_status(now);
            }
        }
        self.check_invariants();
    }

    /// The outcome of an [`Action::Probe`].
    pub fn handle_probe_result(&mut self, now: Time, container: &str, outcome: ProbeOutcome) {
        self.begin_input(now);
        let now = self.now;
        let Some((slot, state)) = self.slots.probed(now, container, outcome) else { return };
        match state {
            HealthState::Healthy => {
                self.out.event(Event::Health { slot, state });
                self.hold_status(now);
            }
            HealthState::Unhealthy => {
                self.out.event(Event::Health { slot: slot.clone(), state });
                self.fail(now, &slot);
            }
            HealthState::Starting => {}
        }
        self.check_invariants();
    }

    /// Requests that entered this node's balancer for `app` since the last call.
    pub fn handle_traffic(&mut self, now: Time, app: &AppName, requests: u64) {
        self.begin_input(now);
        self.scaling.count(app, requests);
        self.check_invariants();
    }

    /// An operator's command. On error nothing changed.
    pub fn handle_command(&mut self, now: Time, command: Command) -> Result<(), CommandError> {
        self.begin_input(now);
        let now = self.now;
        let result = match command {
            Command::Apply(spec) => self.apply(now, *spec),
            Command::Remove(app) => {
                if self.registry.get(&Key::App(app.clone())).is_none() {
                    Err(CommandError::UnknownApp(app.to_string()))
                } else {
                    self.remove(now, Key::App(app.clone()));
                    if self.registry.get(&Key::Scale(app.clone())).is_some() {
                        self.remove(now, Key::Scale(app));
                    }
                    self.request_pass(now);
                    Ok(())
                }
            }
            Command::Scale(app, replicas) => match self.registry.get(&Key::App(app.clone())) {
                Some(Value::App(spec)) => {
                    let mut spec = (**spec).clone();
                    spec.replicas = replicas;
                    if let Some(a) = &mut spec.autoscale {
                        // An explicit count within an autoscaled app moves its bounds with it.
                        a.min = a.min.min(replicas);
                        a.max = a.max.max(replicas);
                    }
                    self.apply(now, spec)
                }
                _ => Err(CommandError::UnknownApp(app.to_string())),
            },
        };
        self.check_invariants();
        result
    }

    fn apply(&mut self, now: Time, spec: AppSpec) -> Result<(), CommandError> {
        let mut apps: Vec<AppSpec> = self.apps().into_iter().filter(|a| a.name != spec.name).collect();
        apps.push(spec.clone());
        validate_apps(&apps)
            .map_err(|(_, e)| CommandError::Invalid { app: spec.name.to_string(), problem: e.to_string() })?;
        let name = spec.name.clone();
        let autoscaled = spec.autoscale.is_some();
        let value = Value::App(Box::new(spec));
        let bytes = postcard::to_allocvec(&value).expect("specs encode");
        self.registry.check_size(&Key::App(name.clone()), bytes.len())?;
        self.write(now, Key::App(name.clone()), value)?;
        if autoscaled {
            // A new spec resets the count the coordinator chose; it starts again from here.
            if self.registry.get(&Key::Scale(name.clone())).is_some() {
                self.remove(now, Key::Scale(name));
            }
        }
        self.request_pass(now);
        Ok(())
    }

    /// Every app in the registry, with the replica count the coordinator chose for autoscaled
    /// ones.
    pub fn apps(&self) -> Vec<AppSpec> {
        self.registry.apps().filter_map(|(name, _)| scaling::spec_with_scale(&self.registry, name)).collect()
    }

    /// A timer came due: one line per kind, each a step of the part it belongs to.
    fn on_timer(&mut self, now: Time, timer: Timer) {
        match timer {
            Timer::Gossip => self.gossip_round(now),
            Timer::AntiEntropy => self.anti_entropy_round(now),
            Timer::PlacementPass => self.placement_pass_due(now),
            Timer::LoadReport => self.report_load(now),
            Timer::Autoscale => self.autoscale(now),
            Timer::Probe { slot, start } => self.probe(now, slot, start),
            Timer::Restart { slot, start } => self.restart(slot, start),
            Timer::Claim { slot, start } => self.claim_settled(now, slot, start),
            Timer::PublishStatus => self.publish_held_status(now),
            Timer::ForgetFailure { slot, start } => self.forget_failure(now, slot, start),
            Timer::Swim(timer) => self.swim_timer(now, timer),
            Timer::SwimSuspicion { member, incarnation, left } => self.suspicion_told(now, member, incarnation, left),
            Timer::SwimSuspectDown { member, incarnation } => self.suspicion_over(now, member, incarnation),
            Timer::SwimSync => self.swim_sync(now),
            Timer::SwimTick => self.swim_tick(now),
        }
    }

    /// A gossip round, then the next if there is still news.
    fn gossip_round(&mut self, now: Time) {
        self.gossip();
        self.unpark_swim_gossip(now);
        self.gossip.rearm(now, self.config.gossip_interval_ms, &self.registry, &mut self.out);
    }

    /// Anti-entropy's first step without SWIM: this node's root to a random peer.
    fn anti_entropy_round(&mut self, now: Time) {
        if let Some(to) = self.members.random_addrs(&mut self.rng, 1).pop() {
            let bytes = Packet::encode(&self.config.id, &Message::Root(self.registry.root_hash()));
            self.out.push(Action::Send { to, bytes });
        }
        self.out.schedule(now + Duration::from_millis(self.config.anti_entropy_interval_ms), Timer::AntiEntropy);
    }

    /// The placement pass requested is due.
    fn placement_pass_due(&mut self, now: Time) {
        self.placement.fired();
        self.placement_pass(now);
    }

    /// A slot's back-off is over: started again, if it still backs off at that attempt.
    fn restart(&mut self, slot: SlotId, start: u64) {
        if self.slots.is_at(&slot, start, Phase::BackingOff) {
            self.start(&slot);
        }
    }

    /// A claim's settle is over: the slot starts if it is still claimed here.
    fn claim_settled(&mut self, now: Time, slot: SlotId, start: u64) {
        // Facts that arrived during the settle (another node's claim, say) are looked at
        // before the start, whatever the pass throttle says.
        if self.placement.is_pending() {
            self.placement_pass(now);
        }
        // Still ours after the settle: no other claim won it.
        if self.slots.is_at(&slot, start, Phase::Claimed) {
            self.start(&slot);
        }
    }

    /// The wait of a held-back status change is over.
    fn publish_held_status(&mut self, now: Time) {
        if self.own_status.is_held() {
            self.publish_status(now);
        }
    }

    /// A failed slot's cooldown is over: forgotten, so placement may use this node again.
    fn forget_failure(&mut self, now: Time, slot: SlotId, start: u64) {
        if self.slots.forget(&slot, start) {
            self.publish_status(now);
        }
    }

    /// Time to tell a suspected member again, if foca still suspects it.
    fn suspicion_told(&mut self, now: Time, member: SwimId, incarnation: u16, left: u32) {
        let swim = self.liveness.swim().expect("only SWIM suspects");
        if swim.still_suspects(&member, incarnation) {
            self.tell_suspicion(now, member, incarnation, left);
        } else {
            self.refresh_suspected(member.node());
        }
    }

    /// The end of a suspicion this node took up: declared down if still suspected.
    fn suspicion_over(&mut self, now: Time, member: SwimId, incarnation: u16) {
        let swim = self.liveness.swim_mut().expect("only SWIM suspects");
        swim.suspicion_ended(&member, incarnation);
        self.swim_call(now, None, |swim| swim.declare_down(&member, incarnation).map(|_| ()));
        self.refresh_suspected(member.node());
    }

    /// One of foca's timers: held back if it is its gossip timer with nothing to gossip, else
    /// handed to foca.
    fn swim_timer(&mut self, now: Time, timer: SwimTimer) {
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
    fn swim_sync(&mut self, now: Time) {
        let swim = self.liveness.swim().expect("SWIM sets its timers");
        let first = self.placement.is_joining(now);
        let to = if first && !swim.seeds().is_empty() {
            let seeds = swim.seeds();
            Some(seeds[self.rng.below(seeds.len())].clone())
        } else {
            self.members.random_addrs(&mut self.rng, 1).pop()
        };
        if let Some(to) = to {
            self.send_swim_sync(to, true);
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
    fn swim_tick(&mut self, now: Time) {
        self.swim_call(now, None, |swim| {
            swim.announce_if_alone();
            Ok(())
        });
        let members = self.members.len();
        let tick = self.liveness.swim_mut().expect("SWIM sets its timers").tick(members);
        self.read_swim_members(now, true, tick.fingerprint);
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

    /// Probes `slot`'s container if it still runs attempt `start`, and sets the next probe.
    fn probe(&mut self, now: Time, slot: SlotId, start: u64) {
        let Some(target) = self.slots.probe_target(&slot, start) else { return };
        // Read in place: a probe needs three fields of the spec, not a copy of it.
        let Some(Value::App(spec)) = self.registry.get(&Key::App(slot.app.clone())) else { return };
        let (path, timeout_ms, interval_ms) =
            (spec.health.path.clone(), spec.health.timeout_ms, spec.health.interval_ms);
        self.out.push(Action::Probe { container: target.container, host_port: target.host_port, path, timeout_ms });
        // The next point of the node's own grid (at most an interval away), with its other
        // periodic timers: a node's probes of equal intervals go out in one wake-up, not one
        // each.
        let next = self.grid.at(now + Duration::from_millis(1), interval_ms);
        self.out.schedule(next, Timer::Probe { slot, start });
    }

    fn app_spec(&self, app: &AppName) -> Option<AppSpec> {
        match self.registry.get(&Key::App(app.clone())) {
            Some(Value::App(spec)) => Some((**spec).clone()),
            _ => None,
        }
    }

    /// Merges entries from a peer; a change to the facts placement reads asks for a new pass.
    /// Only entries whose head says they are news are decoded. A body that does not decode, or
    /// does not match its head, is dropped with an [`Event::BadMessage`].
    fn merge_wire(&mut self, now: Time, from: &NodeId, entries: &[WireEntry<'_>]) {
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
    fn share_names(&self, (key, mut entry): (Key, Entry<Value>)) -> (Key, Entry<Value>) {
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
    fn send_repair(&mut self, to: &NodeId, key_hashes: &[u64], want: Vec<u64>) {
        for bytes in anti_entropy::repair_packets(&self.registry, &self.config.id, key_hashes, want) {
            self.send_bytes(to, bytes);
        }
    }

    /// Asks for a placement pass (see [`Placement::request`]).
    fn request_pass(&mut self, now: Time) {
        let config = &self.config;
        self.placement.request(now, config.reconcile_delay_ms, config.reconcile_interval_min_ms, &mut self.out);
    }

    /// Live node specs and what they run, as this node sees them.
    fn facts(&self) -> (Vec<NodeSpec>, Observed) {
        let mut nodes = vec![self.config.spec()];
        // Built from a list sorted by node, all at once: a thousand inserts into the map, each
        // a walk from its root comparing names, were a tenth of a pass.
        let mut observed = Vec::with_capacity(self.members.len() + 1);
        for (node, status) in view::live_statuses(&self.registry, &self.members) {
            nodes.push(status.spec.clone());
            let containers = status
                .containers
                .iter()
                .map(|c| ObservedContainer { slot: c.slot.clone(), container: c.container.clone(), state: c.state })
                .collect();
            observed.push((node.clone(), containers));
        }
        let me = observed.partition_point(|(node, _)| *node < self.config.id);
        observed.insert(me, (self.config.id.clone(), self.slots.observed()));
        (nodes, observed.into_iter().collect())
    }

    /// One placement pass: start what is placed here, stop what must go.
    ///
    /// A node that lacks the status of a peer it believes alive does not act: placing with a
    /// partial view would put everything on the nodes it happens to know. The pass runs again
    /// when the missing status arrives.
    fn placement_pass(&mut self, now: Time) {
        self.read_swim_members(now, true, None);
        // The plan depends on the facts only, and what this node does with it on its own
        // containers: when neither changed since the last pass, this pass would do nothing.
        let own = self.slots.observed();
        if let Shortcut::Unchanged { complete } = self.placement.shortcut(&own) {
            if complete {
                self.update_backends();
            }
            return;
        }
        if self.placement.structure_unchanged() && self.settled() {
            // Every slot runs once and nothing that moves slots changed since the last full
            // pass: a pass would keep everything and act on nothing.
            self.placement.ran(own, true);
            self.debug_check_settled();
            self.update_backends();
            return;
        }
        // The view is complete when every live peer's status is known: a count kept in step,
        // since a walk over the statuses for it was a tenth of a thousand-node cold start.
        let complete = self.view.is_complete(self.members.len());
        self.placement.ran(own, complete);
        if !complete {
            return;
        }
        self.placement.placing(now);
        let apps = self.apps();
        let (nodes, observed) = self.facts();
        debug_assert_eq!(nodes.len(), self.members.len() + 1);
        let plan = place_owned(apps, nodes, &observed, self.config.policy);
        let orders = placement::orders(&plan, &self.config.id, &self.slots);
        let mut changed = false;
        for order in orders {
            changed |= self.carry_out(now, order);
        }
        let unschedulable = plan.unschedulable().iter().map(|u| (u.slot.clone(), u.reason.clone())).collect();
        self.placement.set_unschedulable(unschedulable, &mut self.out);
        if changed {
            self.publish_status(now);
        }
        self.update_backends();
    }

    /// Carries out one order of a placement pass; returns whether this node's slots changed
    /// (a claim finds no free host port when every one is taken).
    fn carry_out(&mut self, now: Time, order: Order) -> bool {
        match order {
            Order::Stop(slot) => self.slots.stop(&slot, self.config.drain_ms, &mut self.out),
            Order::Claim(slot) => {
                let Some(port) = self.free_host_port() else { return false };
                let spec = self.app_spec(&slot.app);
                let settle_ms = self.config.claim_settle_ms;
                self.slots.claim(now, slot, port, spec.as_ref(), settle_ms, &mut self.out);
            }
            Order::Retry(slot) => {
                let spec = self.app_spec(&slot.app);
                self.slots.retry_failed(&slot, spec.as_ref());
                self.start(&slot);
            }
        }
        true
    }

    /// In debug builds, checks what `settled` promises: a full pass would start and stop
    /// nothing here and report nothing unschedulable.
    fn debug_check_settled(&self) {
        if !cfg!(debug_assertions) || !self.view.is_complete(self.members.len()) {
            return;
        }
        let (nodes, observed) = self.facts();
        let plan = place_owned(self.apps(), nodes, &observed, self.config.policy);
        let me = &self.config.id;
        assert!(plan.starts_on(me).is_empty(), "a settled view starts nothing");
        assert!(plan.unschedulable().is_empty(), "a settled view has nothing unschedulable");
        for stop in plan.stops_on(me) {
            let failed = self.slots.get(&stop.slot).is_some_and(|l| l.phase == Phase::Failed);
            assert!(failed, "a settled view stops nothing but records of failed slots: {stop:?}");
        }
    }

    /// Starts `slot` (claimed, or backing off) as its app's spec says; a slot whose app is gone
    /// stays as it is, for the next pass to stop.
    fn start(&mut self, slot: &SlotId) {
        let Some(spec) = self.app_spec(&slot.app) else { return };
        self.slots.start(slot, spec, &mut self.out);
    }

    /// A container failed: out of every balancer at once, stopped, and started again after its
    /// back-off on the same host port, or given up past its budget.
    fn fail(&mut self, now: Time, slot: &SlotId) {
        if self.slots.fail(now, slot, self.config.failed_cooldown_ms, &mut self.out) {
            self.publish_status(now);
            self.request_pass(now);
        }
    }

    /// The lowest port of the node's range that no local slot holds and no app publishes.
    fn free_host_port(&self) -> Option<u16> {
        let published = self.registry.apps().filter_map(|(_, v)| match v {
            Value::App(spec) => Some(spec.port),
            _ => None,
        });
        self.slots.free_host_port(self.config.host_port_min, self.config.host_port_max, published)
    }

    /// Publishes the status `status_batch_ms` from now, with whatever else changes by then
    /// (see `NodeConfig::status_batch_ms`), unless something publishes it sooner.
    fn hold_status(&mut self, now: Time) {
        if self.config.status_batch_ms == 0 {
            self.publish_status(now);
            return;
        }
        // This node's own balancers take the change now, as its API does (from `local`): only
        // peers hear it later. The registry keeps the status last published until then.
        self.derive_own_views(true);
        self.own_status.hold(now, self.config.status_batch_ms, &mut self.out);
    }

    /// Derives this node's own views (its slots, its replicas in its balancers) from its slots
    /// as they are now (`current`, while a status is held back) or from its published status.
    fn derive_own_views(&mut self, current: bool) {
        let me = self.config.id.clone();
        let now = current.then(|| self.current_status());
        let status = if current { now.as_ref() } else { view::counted_status(&self.registry, &self.members, &me, &me) };
        let slots = self.view.changed_slots(&me, status);
        let list = self.balancers.changed_list(&me, status);
        self.write_status_views(&me, slots, list);
        self.update_backends();
    }

    /// This node's status as its slots are now.
    fn current_status(&self) -> NodeStatus {
        NodeStatus {
            spec: self.config.spec(),
            addr: self.config.addr.clone(),
            generation: self.own_generation(),
            containers: self.slots.statuses(),
        }
    }

    /// Writes this node's status into its registry, which spreads it.
    fn publish_status(&mut self, now: Time) {
        let was_held = self.own_status.take_held();
        let status = self.current_status();
        let generation = status.generation;
        let key = Key::Status(self.config.id.clone());
        if let Some(Value::Status(old)) = self.registry.get(&key)
            && OwnStatus::same_for_peers(old, &status)
        {
            if was_held {
                // What was held changed back: this node's own views follow the registry again.
                self.derive_own_views(false);
            }
            return;
        }
        // The status of one node is bounded by the slots it can run; a registry that refuses
        // it is a limit set too low, a programming error.
        self.own_status.written(generation);
        self.write(now, key, Value::Status(status)).expect("a node's own status fits the registry");
        self.update_backends();
    }

    /// Writes `value` under `key`: the one path of this node's own writes to its registry.
    /// On error nothing changed.
    fn write(&mut self, now: Time, key: Key, value: Value) -> Result<(), RegistryError> {
        self.registry.put(now, key.clone(), value)?;
        self.on_key_changed(&key);
        Ok(())
    }

    /// Removes `key` (a tombstone that spreads): the one path of this node's own removals.
    fn remove(&mut self, now: Time, key: Key) {
        self.registry.remove(now, key.clone());
        self.on_key_changed(&key);
    }

    /// Merges a peer's `entry` under `key`: the one path of what peers write. Returns whether
    /// it was news.
    fn merge(&mut self, now: Time, key: Key, entry: Entry<Value>) -> bool {
        if !self.registry.merge(now, key.clone(), entry) {
            return false;
        }
        self.on_key_changed(&key);
        true
    }

    /// After every change to the registry (`write`, `remove`, `merge`): fans out to whoever
    /// derives state from `key`, and makes sure a gossip round will carry the news.
    fn on_key_changed(&mut self, key: &Key) {
        self.gossip.wake(self.now, &mut self.out);
        match key {
            Key::App(app) => {
                self.placement.facts_changed();
                self.placement.structure_changed();
                self.balancers.app_changed(app);
                let spec = match self.registry.get(key) {
                    Some(Value::App(spec)) => Some(&**spec),
                    _ => None,
                };
                self.scaling.app_changed(app, spec);
            }
            Key::Scale(_) => {
                self.placement.facts_changed();
                self.placement.structure_changed();
            }
            Key::Load(_) => {}
            Key::Status(node) => self.status_changed(node),
        }
    }

    /// Derives what `node`'s status says (the slots it runs, its healthy replicas) into the
    /// view and the balancers. A status from an earlier life than the one known counts as none.
    ///
    /// Every node runs this for every version of every peer's status: what the status says is
    /// compared with what was derived before, and only what changed is built and written.
    fn status_changed(&mut self, node: &NodeId) {
        self.placement.facts_changed();
        // Both views are compared and built from one lookup of the status, then written.
        let status = view::counted_status(&self.registry, &self.members, &self.config.id, node);
        let slots = self.view.changed_slots(node, status);
        let list = self.balancers.changed_list(node, status);
        self.write_status_views(node, slots, list);
    }

    /// Writes what `node`'s status says, where it changed, into the view and the balancers.
    fn write_status_views(&mut self, node: &NodeId, slots: Option<NodeSlots>, list: Option<Vec<Backend>>) {
        let me = *node == self.config.id;
        if let Some(slots) = slots {
            let member = !me && self.members.contains(node);
            if self.view.set_node_slots(node, slots, member, me || member) {
                self.placement.structure_changed();
            }
        }
        if let Some(list) = list {
            // Only the replicas of live nodes are in the balancers' sets; a peer's list waits
            // until it is believed alive.
            let trusted = me || self.members.is_trusted(node);
            self.balancers.set_node_list(node, list, trusted);
        }
    }

    /// The generation this node's status carries: its SWIM identity's (a rejoin after being
    /// declared down renews it), or its configured one.
    fn own_generation(&self) -> u64 {
        self.liveness.life(self.config.generation)
    }

    /// Whether every desired slot runs exactly once in this node's view, nothing runs that is
    /// not desired, and nothing is reported unschedulable. Then, unless apps, scales,
    /// membership or node specs changed since, a placement pass keeps everything where it is
    /// and starts and stops nothing: it need not run.
    fn settled(&self) -> bool {
        if self.placement.has_unschedulable() {
            return false;
        }
        let mut all_specs = true;
        let apps = self.registry.apps().map_while(|(name, value)| match value {
            Value::App(spec) => Some((name, scaling::replicas(&self.registry, name, spec))),
            _ => {
                all_specs = false;
                None
            }
        });
        let once = self.view.runs_each_slot_once(apps);
        once && all_specs
    }

    /// Sends each balancer its healthy backends, when they changed.
    fn update_backends(&mut self) {
        self.balancers.update(&self.registry, &mut self.out);
    }

    /// A gossip round (see [`Gossip::round`]).
    fn gossip(&mut self) {
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

    /// Sends this node's member list to the peer at `to`, asking for its own when `reply`.
    fn send_swim_sync(&mut self, to: PeerAddr, reply: bool) {
        let swim = self.liveness.swim().expect("SWIM syncs");
        swim.send_sync(&self.config.id, to, reply, &mut self.out);
    }

    fn send(&mut self, to: &NodeId, message: &Message) {
        let bytes = Packet::encode(&self.config.id, message);
        self.send_bytes(to, bytes);
    }

    /// Sends to a peer believed alive; one that is not (a reply to a node declared down since,
    /// a load report racing a change of members) is not sent anything: it could not be
    /// addressed, and it would be ignored anyway.
    fn send_bytes(&mut self, to: &NodeId, bytes: Vec<u8>) {
        if let Some(to) = self.members.addr_of(to) {
            let to = to.clone();
            self.out.push(Action::Send { to, bytes });
        }
    }

    /// The live node that coordinates `app`: ranked first by rendezvous hash on its name.
    pub fn coordinator_of(&self, app: &AppName) -> NodeId {
        self.members.rendezvous_owner(app.as_str(), &self.config.id)
    }

    /// Sends each autoscaled app's request count to its coordinator (or records it, here), and
    /// sets the next report.
    fn report_load(&mut self, now: Time) {
        for (app, requests) in self.scaling.take_reports() {
            let coordinator = self.coordinator_of(&app);
            if coordinator == self.config.id {
                self.record_load(now, &app, requests);
            } else {
                self.send(&coordinator, &Message::Load { app, requests });
            }
        }
        self.out.schedule(now + Duration::from_millis(self.config.load_report_interval_ms), Timer::LoadReport);
    }

    /// Requests for `app` reported to this node as its coordinator.
    fn record_load(&mut self, now: Time, app: &AppName, requests: u64) {
        if self.coordinator_of(app) != self.config.id {
            return; // a report that raced a change of coordinator; the next one goes right
        }
        let registry = &self.registry;
        self.scaling.record(now, app, requests, || scaling::spec_with_scale(registry, app));
    }

    /// The coordinator of each autoscaled app evaluates its autoscaler and writes `scale/<app>`;
    /// then the next evaluation.
    fn autoscale(&mut self, now: Time) {
        // Only the autoscaled apps this node coordinates are copied out of the registry.
        let mine: BTreeMap<AppName, AppSpec> = self
            .scaling
            .autoscaled()
            .iter()
            .filter(|name| self.coordinator_of(name) == self.config.id)
            .filter_map(|name| scaling::spec_with_scale(&self.registry, name).map(|spec| (name.clone(), spec)))
            .collect();
        for (name, decision) in self.scaling.evaluate(now, &mine) {
            let to = decision.to;
            self.out.event(Event::Scaled { app: name.clone(), decision });
            self.write(now, Key::Scale(name), Value::Scale(to)).expect("a count fits the registry");
            self.request_pass(now);
        }
        self.out.schedule(now + Duration::from_millis(self.config.autoscale_interval_ms), Timer::Autoscale);
    }

    /// What must hold after every input (STYLE.md, rule 6).
    fn check_invariants(&self) {
        self.out.timers.check_invariants();
        self.slots.check_invariants(usize::from(self.config.host_port_max - self.config.host_port_min) + 1);
        for action in &self.out.actions {
            if let Action::Send { bytes, .. } = action {
                assert!(bytes.len() <= limits::PACKET_BYTES_MAX, "a packet of {} bytes", bytes.len());
            }
        }
        self.scaling.check_invariants(&self.registry);
        self.members.check_invariants(&self.config.id);
        let me = &self.config.id;
        self.balancers.check_invariants(|node| node == me || self.members.is_trusted(node));
        self.view.check_invariants(view::live_statuses(&self.registry, &self.members));
    }

    /// The host ports and states of this node's slots, for status output and tests.
    pub fn local_slots(&self) -> Vec<(SlotId, u16, ContainerState)> {
        self.slots.summary()
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod swim_tests;
