//! The agent state machine: one per server, the same in the simulator and in the real agent.
//!
//! `Node` is sans-I/O, in the manner of quinn-proto's `Connection` and foca: inputs go in through
//! `handle_*(now, ...)`, effects come out of [`Node::poll_action`], and the next wake-up out of
//! [`Node::poll_timeout`]. A driver calls them in this order, and only this order:
//!
//! 1. one input: `handle_timeout` when `poll_timeout` is due, or `handle_message`,
//!    `handle_container_event`, `handle_probe_result`, `handle_traffic`, `handle_command`,
//!    `handle_membership`, `handle_join`, `handle_restore`;
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
//!
//! # Layout
//!
//! `Node` is a facade (quinn-proto's `Connection`): its fields are sub-machines, each owning
//! its data and its invariants, reading what it needs as arguments, pushing its effects into
//! one sink (`io::Effects`) and returning what changed. They never call each other; the facade
//! routes. Its own code is here (inputs, outputs, `on_timer`, the one path of registry writes:
//! `write`, `remove`, `merge`, then `on_key_changed`, and what a status says:
//! `status_changed`, `write_status_views`) and in `on_members.rs`, `on_news.rs` and
//! `on_slots.rs` (the routing of membership, news and placement).
//!
//! - `config`, `io`, `wire`, `timers`: the settings; actions, events and the sink; packets;
//!   the timer heap and the grid periodic timers fall on.
//! - `members`: the peers believed alive, their lives, the suspected.
//! - `swim`: how the node learns who is alive (`Liveness`: told, or SWIM through foca).
//! - `gossip`, `anti_entropy`: rumors of recent news; repairs by comparison with a peer.
//! - `view`: what each status says (which counts, each node's slots, each slot's count).
//! - `balancers`: the healthy replicas each balancer is sent.
//! - `placement`: when a pass runs and the orders it gives this node.
//! - `slots`: this node's slots and their lifecycle.
//! - `own_status`: when this node's status is written.
//! - `scaling`: load reports and the coordinator's autoscalers.
//!
//! A container's health change reaches the balancers through `write_status_views`: here at
//! once (`handle_probe_result` -> `hold_status` -> `derive_own_views`), at every peer when the
//! status arrives (`merge` -> `on_key_changed` -> `status_changed`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::hash::stable_hash;
use crate::health::ProbeOutcome;
use crate::limits;
use crate::membership::{self, MembershipMode, PeerAddr};
use crate::model::{AppName, AppSpec, NodeId, SlotId};
use crate::registry::{Entry, Key, Registry, RegistryError};
use crate::rng::SplitMix64;
use crate::rollout::Phase;
use crate::schedule::ContainerState;
use crate::time::Time;

mod admission;
mod anti_entropy;
mod balancers;
mod config;
mod gossip;
mod io;
mod members;
mod on_commands;
mod on_load;
mod on_members;
mod on_news;
mod on_rollout;
mod on_slots;
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
use gossip::Gossip;
use io::Effects;
pub use io::{Action, Backend, Command, CommandError, ContainerEvent, Event, Found};
use members::Members;
use on_commands::Roll;
pub use on_rollout::RolloutView;
use own_status::OwnStatus;
use placement::Placement;
use scaling::Scaling;
use slots::Slots;
use swim::{Liveness, SwimState};
use timers::{Grid, Timer};
pub use view::NodeView;
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
    /// The apps whose version has no verdict yet: the only ones the coordinator's check of
    /// rollouts looks at (`Node::check_rollouts`), kept as `app/` and `rollout/` entries change.
    awaiting_verdict: BTreeSet<AppName>,
    /// Bumped by every change to the `app/` and `scale/` entries (`desired_version`).
    desired_version: u64,
    /// When a packet under this node's own name last came in (`Node::name_conflicts`).
    twin_heard_at: Option<Time>,
    /// Whether the last placement pass held back for an earlier life of this node's name.
    held_by_twin: bool,
    /// False while this node keeps containers it found at its start for apps its registry does
    /// not know, having started with no desired state at all (`Event::KeptUnconfirmed`).
    desired_confirmed: bool,
    /// The hour of the wall clock (Unix ms / 3,600,000) whose tombstones were last collected
    /// (`Node::collect_tombstones_if_due`).
    tombstones_collected_hour: u64,
    /// How this node learns which peers are alive: told, or SWIM.
    liveness: Liveness,
    /// Where this node's periodic timers fall.
    grid: Grid,
    now: Time,
}

impl Node {
    /// Brings back the desired state an earlier life of this node persisted
    /// ([`Node::desired_entries`]): each entry merged as the write it was, so that what the
    /// cluster changed since (a removal, a scale through another node) is newer and wins, here
    /// or when the news arrives. Entries of other keys are not desired state: they are dropped
    /// with an [`Event::BadMessage`]. A driver restores before it reports adopted containers,
    /// so that they meet their app's health check.
    pub fn handle_restore(&mut self, now: Time, entries: Vec<(Key, Entry<Value>)>) {
        self.begin_input(now);
        let now = self.now;
        let mut changed = false;
        for (key, entry) in entries {
            if !key.is_desired_state() {
                self.out.event(Event::BadMessage {
                    from: None,
                    error: format!("restored entry {key} is not desired state"),
                });
                continue;
            }
            // What an earlier version took from a peer unchecked may be on disk.
            if let Err(reason) = admission::check_entry(&key, &entry) {
                self.out.event(Event::Refused { from: None, input: "entry", reason });
                continue;
            }
            changed |= self.merge(now, key, entry);
        }
        if changed {
            self.update_backends();
            self.request_pass(now);
        }
        self.check_invariants();
    }

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
            awaiting_verdict: BTreeSet::new(),
            liveness: Liveness::Oracle,
            desired_version: 0,
            tombstones_collected_hour: 0,
            desired_confirmed: true,
            twin_heard_at: None,
            held_by_twin: false,
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

    /// Live members (SWIM only) that carry this node's name at another address or in another
    /// life: another agent started under the same name, or a forgery. They are no members here
    /// (neither slots nor requests go to them); a driver that just started and still sees one
    /// after a probe round is the second agent of that name, and stops.
    ///
    /// Only while packets under this node's name have come in within `limits::TWIN_HEARD_MS`:
    /// a member merely listed by a peer (a forged sync) is no evidence, and must not stop a
    /// young agent nor hold its placement back.
    pub fn name_conflicts(&self) -> Vec<(PeerAddr, u64)> {
        let heard = self.twin_heard_at.is_some_and(|at| self.now < at + Duration::from_millis(limits::TWIN_HEARD_MS));
        if !heard {
            return Vec::new();
        }
        self.liveness.swim().map_or_else(Vec::new, SwimState::name_conflicts)
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
    /// with an [`Event::BadMessage`]: a peer of another version must not crash this one. What
    /// decodes but would break this node is refused with an [`Event::Refused`] (`admission`).
    pub fn handle_message(&mut self, now: Time, bytes: &[u8]) {
        self.begin_input(now);
        let now = self.now;
        // SWIM identities from further ahead than a clock may be are forgeries (see
        // `membership::with_generation_ceiling`), whether in this packet or in foca's.
        let ceiling = now.as_millis().saturating_add(limits::REGISTRY_CLOCK_AHEAD_MS_MAX);
        membership::with_generation_ceiling(ceiling, || self.route_message(now, bytes));
        self.check_invariants();
    }

    fn route_message(&mut self, now: Time, bytes: &[u8]) {
        let Packet { from, message } = match postcard::from_bytes::<Packet>(bytes) {
            Ok(packet) => packet,
            Err(e) => {
                let event = Event::BadMessage { from: None, error: e.to_string() };
                self.out.event(event);
                return;
            }
        };
        if from == self.config.id {
            // A node never sends to itself: another agent runs under this name.
            self.twin_heard_at = Some(now);
        }
        match message {
            Message::Updates(entries) => self.merge_wire(now, &from, &entries),
            Message::Load { app, requests } => self.take_load_report(now, &from, &app, requests),
            message @ (Message::Root(_) | Message::Digest(_) | Message::Summary { .. } | Message::Repair { .. }) => {
                self.anti_entropy_message(now, &from, message, bytes.len())
            }
            message @ (Message::Swim(..) | Message::SwimSync { .. } | Message::SwimSuspicion { .. }) => {
                self.swim_message(now, &from, message)
            }
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

    /// The container runtime reports on a container.
    pub fn handle_container_event(&mut self, now: Time, event: ContainerEvent) {
        self.begin_input(now);
        let now = self.now;
        self.container_event(now, event);
        self.check_invariants();
    }

    /// The outcome of an [`Action::Probe`].
    pub fn handle_probe_result(&mut self, now: Time, container: &str, outcome: ProbeOutcome) {
        self.begin_input(now);
        let now = self.now;
        self.probe_outcome(now, container, outcome);
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
            Command::Restart(app) => self.roll_command(now, &app, Roll::Restart),
            Command::Undo(app, to) => self.roll_command(now, &app, Roll::Undo(to)),
            Command::Promote(app) => self.roll_command(now, &app, Roll::Promote),
        };
        if result.is_ok() {
            // The operator speaks for the desired state: containers of apps it does not name
            // may go.
            self.confirm_desired_state(now);
        }
        self.check_invariants();
        result
    }

    /// Every app in the registry, with the replica count the coordinator chose for autoscaled
    /// ones.
    pub fn apps(&self) -> Vec<AppSpec> {
        self.registry.apps().filter_map(|(name, _)| self.effective_spec(name)).collect()
    }

    /// A timer came due: one line per kind, each a step of the part it belongs to.
    fn on_timer(&mut self, now: Time, timer: Timer) {
        match timer {
            Timer::Gossip => self.gossip_round(now),
            Timer::AntiEntropy => self.anti_entropy_round(now),
            Timer::PlacementPass => self.placement_pass_due(now),
            Timer::LoadReport => {
                self.report_load(now);
                self.check_rollouts(now);
                self.collect_tombstones_if_due(now);
                // A pass that found a member with no status is due again once it has waited
                // for it long enough; checked here, once a second, so that no timer of its
                // own wakes the node.
                if self.placement.wait_is_over(now) || self.held_by_twin {
                    self.request_pass(now);
                }
            }
            Timer::Autoscale => self.autoscale(now),
            Timer::Probe { slot, start } => self.probe(now, slot, start),
            Timer::Restart { slot, start } => self.restart(now, slot, start),
            Timer::Ready { slot, start } => self.ready_due(now, slot, start),
            Timer::Deadline { slot, start } => self.deadline_due(now, slot, start),
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

    /// The wait of a held-back status change is over.
    fn publish_held_status(&mut self, now: Time) {
        if self.own_status.is_held() {
            self.publish_status(now);
        }
    }

    /// Asks for a placement pass (see [`Placement::request`]).
    fn request_pass(&mut self, now: Time) {
        let config = &self.config;
        self.placement.request(now, config.reconcile_delay_ms, config.reconcile_interval_min_ms, &mut self.out);
    }

    /// Publishes the status `status_batch_ms` from now, with whatever else changes by then
    /// (see `NodeConfig::status_batch_ms`), unless something publishes it sooner.
    fn hold_status(&mut self, now: Time) {
        if self.config.status_batch_ms == 0 {
            self.publish_status(now);
            return;
        }
        // This node's own balancers take the change now, as its API does (from its slots): only
        // peers hear it later. The registry keeps the status last published until then.
        let current = self.current_status();
        self.derive_own_views(Some(&current));
        self.own_status.hold(now, self.config.status_batch_ms, &mut self.out);
    }

    /// Derives this node's own views (its slots, its replicas in its balancers) from `current`,
    /// its status as its slots are now while a change is held back, or from its published
    /// status (`None`).
    fn derive_own_views(&mut self, current: Option<&NodeStatus>) {
        let me = self.config.id.clone();
        let status = current.or_else(|| view::counted_status(&self.registry, &self.members, &me, &me));
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
                self.derive_own_views(None);
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
        if key.is_desired_state() {
            self.desired_version += 1;
        }
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
                self.end_trials(app);
                self.verdict_changed(app);
            }
            Key::Scale(_) => {
                self.placement.facts_changed();
                self.placement.structure_changed();
            }
            Key::Rollout(app) => {
                // Placement reads a verdict only when it pauses the app or reverts it: a
                // completed version moves nothing, and a thousand nodes placing again for each
                // app's first verdict was a fifth of a cold start.
                if matches!(self.app_phase(app), Some(Phase::Paused | Phase::Reverting { .. })) {
                    self.placement.facts_changed();
                    self.placement.structure_changed();
                }
                self.end_trials(app);
                self.verdict_changed(app);
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

    /// This node's life now, as its status carries it: its SWIM identity's (a rejoin after
    /// being declared down renews it), or its configured one.
    pub fn own_generation(&self) -> u64 {
        self.liveness.life(self.config.generation)
    }

    /// Sends each balancer its healthy backends, when they changed.
    fn update_backends(&mut self) {
        self.balancers.update(&self.registry, &mut self.out);
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
        debug_assert!(
            self.awaiting_verdict.iter().eq(self.registry.apps().filter_map(|(name, v)| match v {
                Value::App(spec) if self.rollout_record(name).is_none_or(|r| r.outcome(spec.version).is_none()) => {
                    Some(name)
                }
                _ => None,
            })),
            "the apps awaiting a verdict are the registry's"
        );
        self.members.check_invariants(&self.config.id);
        let me = &self.config.id;
        self.balancers.check_invariants(|node| node == me || self.members.is_trusted(node));
        // O(n) checks, debug builds only: even building the iterator of statuses looks up the
        // registry, after every input of every node.
        if cfg!(debug_assertions) {
            self.view.check_invariants(view::live_statuses(&self.registry, &self.members));
            self.check_derived_from_statuses();
        }
    }

    /// The cross-check of what the view and the balancers derive from each node's status:
    /// derived again from the status that counts, nothing would change (this node's own is
    /// derived from its slots as they are while a change of its status is held back).
    fn check_derived_from_statuses(&self) {
        let me = &self.config.id;
        let current = self.own_status.is_held().then(|| self.current_status());
        for (node, _) in self.registry.statuses() {
            let status = match &current {
                Some(current) if node == me => Some(current),
                _ => view::counted_status(&self.registry, &self.members, me, node),
            };
            assert!(self.view.changed_slots(node, status).is_none(), "{node}'s slots are derived from its status");
            let list = self.balancers.changed_list(node, status);
            assert!(list.is_none(), "{node}'s healthy replicas are derived from its status: {list:?}");
        }
    }

    /// The host ports and states of this node's slots, for status output and tests.
    pub fn local_slots(&self) -> Vec<(SlotId, u16, ContainerState)> {
        self.slots.summary()
    }

    /// The desired state as this node holds it: the `app/` and `scale/` entries, removals
    /// included, each with its version. What a driver persists, and gives back to
    /// [`Node::handle_restore`] in the node's next life.
    pub fn desired_entries(&self) -> Vec<(Key, Entry<Value>)> {
        self.registry.iter().filter(|(key, _)| key.is_desired_state()).map(|(k, e)| (k.clone(), e.clone())).collect()
    }

    /// Bumped by every change to [`Node::desired_entries`], however it came (a command, a
    /// peer's news): a driver persists them again when this moved.
    pub fn desired_version(&self) -> u64 {
        self.desired_version
    }

    /// The cluster as this node sees it, for status output: every node it has a status of or
    /// believes alive, whether it is alive, and its status if one counts (a status written by
    /// an earlier life than the one this node knows counts as none).
    pub fn cluster_view(&self) -> Vec<NodeView<'_>> {
        let me = &self.config.id;
        let mut nodes: BTreeMap<&NodeId, NodeView<'_>> = BTreeMap::new();
        for (node, _) in self.registry.statuses() {
            let alive = node == me || self.members.contains(node);
            let status = view::counted_status(&self.registry, &self.members, me, node);
            nodes.insert(node, NodeView { node, alive, status });
        }
        for node in self.members.names().iter().chain(std::iter::once(me)) {
            nodes.entry(node).or_insert(NodeView { node, alive: true, status: None });
        }
        nodes.into_values().collect()
    }
}

#[cfg(test)]
mod testing;

#[cfg(test)]
mod lifecycle_tests;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod swim_tests;

#[cfg(test)]
mod fuzz_tests;

#[cfg(test)]
mod hostile_tests;

#[cfg(test)]
mod rollout_tests;
