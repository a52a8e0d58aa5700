//! Placement: which node runs which slot, as a pure function of the replicated facts.
//!
//! Every node computes [`place`] from its own view of the cluster and acts only on its own rows,
//! so the function must give the same answer for the same facts, whatever order they came in:
//! nodes are sorted by name, apps by priority (higher first) then name, and every tie is broken
//! by node name. It is sticky: a slot already running on a live node that still admits it stays
//! where it is, and only missing slots are placed. A node crash therefore moves exactly the slots
//! that were on it.
//!
//! The pass has two stages, as Nomad's reconciler does: first *reconcile* (diff the desired slots
//! against what nodes report, keep one container per slot, stop surplus, duplicates and failed
//! containers), then *place* each missing slot with the policy: feasibility (constraints, then
//! capacity) before rank. [`Plan::remove_node`] runs the same placing stage on just the slots of
//! a node that died, which is what makes a reschedule cheap on a large cluster.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

mod fgd;
mod gpu;
mod policies;
mod preempt;
mod reasons;
mod roll;
mod room;

pub use fgd::Shape;
use gpu::{GpuNeed, GpuTable, Grant, Models};
pub use policies::{rendezvous_owner, rendezvous_owner_hashed};
pub use reasons::{Unplaceable, Unschedulable};
use roll::{KeptState, OldKept};
use room::Room;

use crate::hash::stable_hash;
use crate::limits;
use crate::model::{AppName, AppSpec, GpuShare, Labels, NodeId, NodeSpec, Resources, SlotId};

/// How missing slots are spread over the nodes that can take them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// The original canteen's rule: apps by priority, each replica dealt to the next node in
    /// name order that can take it, one cursor over the whole pass.
    RoundRobin,
    /// The most allocated node that fits: fills nodes one by one, leaves whole nodes free.
    #[serde(rename = "binpack")]
    BinPack,
    /// The least allocated node that fits: evens the load out.
    #[default]
    Spread,
    /// The node ranked first by a hash of (slot, node): a slot's choice does not depend on the
    /// other slots, so views that differ slightly still agree on most placements.
    Rendezvous,
    /// The node, and GPU, where a replica least increases the expected GPU fragmentation for
    /// the mix of replica shapes the apps ask for (Weng et al., "Beware of Fragmentation",
    /// ATC '23: fragmentation gradient descent).
    Fgd,
}

impl Policy {
    /// Every policy, by the name used in files and on the command line.
    pub const ALL: [(&'static str, Policy); 5] = [
        ("round-robin", Policy::RoundRobin),
        ("binpack", Policy::BinPack),
        ("spread", Policy::Spread),
        ("rendezvous", Policy::Rendezvous),
        ("fgd", Policy::Fgd),
    ];

    /// The name used in files and on the command line.
    pub fn name(self) -> &'static str {
        Policy::ALL.iter().find(|(_, p)| *p == self).map(|(n, _)| *n).unwrap_or("?")
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A policy name that is not one of [`Policy::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown policy {0:?}; allowed: round-robin, binpack, spread, rendezvous, fgd")]
pub struct UnknownPolicy(pub String);

impl FromStr for Policy {
    type Err = UnknownPolicy;
    fn from_str(s: &str) -> Result<Policy, UnknownPolicy> {
        Policy::ALL.iter().find(|(n, _)| *n == s).map(|(_, p)| *p).ok_or_else(|| UnknownPolicy(s.to_owned()))
    }
}

/// What a node reports about one of its containers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContainerState {
    /// Started, no health verdict yet.
    Starting,
    /// Passing its health check.
    Healthy,
    /// Failing its health check; its node replaces it in place.
    Unhealthy,
    /// Failed past its restart budget: the slot must be placed again.
    Failed,
}

impl ContainerState {
    /// Which of two containers of one slot is kept: the higher rank. Healthy and starting rank
    /// the same: each node hears its own container turn healthy at once and a peer's late, so
    /// ranking them would let both nodes of a slot started twice keep their own copy until
    /// each heard the other's health (seen at 1,000 nodes: both copies served for 0.8 s). A
    /// claim is heard once and does not change: the lower node then keeps its copy, and both
    /// nodes agree as soon as each has heard the other's claim.
    fn keep_rank(self) -> u8 {
        match self {
            ContainerState::Healthy | ContainerState::Starting => 2,
            ContainerState::Unhealthy => 1,
            ContainerState::Failed => 0,
        }
    }
}

/// One container a node reports running.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedContainer {
    /// The slot the container serves.
    pub slot: SlotId,
    /// The runtime's container id (shared: a placement pass copies it cheaply).
    pub container: Arc<str>,
    /// Its health as the node last saw it.
    pub state: ContainerState,
    /// The version of its app it runs (`AppSpec::version`; 0 when unknown, taken as current).
    pub version: u64,
    /// Whether it counts in a rollout (see `ContainerStatus::ready`).
    pub ready: bool,
    /// The GPUs it holds.
    pub gpus: Vec<GpuShare>,
}

/// What each node reports it runs. Nodes missing from the `nodes` argument of [`place`] are dead:
/// their containers are ignored.
pub type Observed = BTreeMap<NodeId, Vec<ObservedContainer>>;

/// Why a container must be stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// Its app was removed or scaled below its slot index.
    Surplus,
    /// Another container of the same slot is kept.
    Duplicate,
    /// It failed past its restart budget; the slot is placed again.
    Failed,
    /// Its node no longer admits it: constraints changed, or the node is over capacity and this
    /// slot has the lowest priority there.
    Evicted,
    /// A slot of a higher-priority app that fit nowhere else takes its place.
    Preempted,
    /// Its slot runs the app's new version, ready (a rolling update), or is replaced
    /// stop-first.
    Replaced,
}

/// A container its node must stop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    /// The node running it.
    pub node: NodeId,
    /// The runtime's container id.
    pub container: Arc<str>,
    /// The slot it served.
    pub slot: SlotId,
    /// Why.
    pub reason: StopReason,
}

/// A slot that [`Plan::remove_node`] moved off a dead node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    /// The slot.
    pub slot: SlotId,
    /// The node it ran on.
    pub from: NodeId,
    /// Where it goes now, or why it fits nowhere.
    pub to: Result<NodeId, Unplaceable>,
}

/// `slots[app][index]` when the slot has no node.
const UNPLACED: u32 = u32::MAX;
/// Set in `slots[app][index]` when the node must start the slot (it does not run it yet).
const FRESH: u32 = 1 << 31;
const _: () = assert!(limits::NODES_MAX < FRESH as usize);
const _: () = assert!(limits::NODES_MAX < u32::MAX as usize, "node indexes pack into 32 bits");

/// The outcome of one placement pass: where every slot runs, what each node must start and
/// stop, and what fits nowhere. A node acts on its own rows only.
#[derive(Clone, Debug)]
pub struct Plan {
    policy: Policy,
    /// Nodes sorted by name; `alive[i]` is false once [`Plan::remove_node`] removed node `i`.
    nodes: Vec<NodeSpec>,
    alive: Vec<bool>,
    /// Resources reserved on each node by the slots placed there.
    used: Vec<Resources>,
    /// What each node has left (CPU, memory, host ports, GPUs at a glance) and its allocation
    /// score, kept current by every change to its usage: every policy reads it for every
    /// candidate node, so it is apart from `nodes` and a scan reads 24 bytes a node.
    rooms: Vec<Room>,
    /// Replicas on each node (kept, kept beside a new one, placed): each holds a host port.
    ports_used: Vec<u32>,
    /// Host ports each node gives replicas: its range, less the ports apps publish there, at
    /// most `limits::LOCAL_SLOTS_MAX`.
    ports_cap: Vec<u32>,
    /// Every node's GPUs and what is free on each.
    gpus: GpuTable,
    /// Apps in placement order: priority descending, then name.
    apps: Vec<AppSpec>,
    /// Each app's index in `apps`.
    app_index: BTreeMap<AppName, u32>,
    /// What each app's replicas ask of GPUs, in the plan's terms.
    needs: Vec<Need>,
    /// Per app, per slot index: node index (with `FRESH` when it must be started) or `UNPLACED`.
    slots: Vec<Vec<u32>>,
    /// Per app that asks for GPUs, per slot index: the GPUs its kept or placed replica holds
    /// (empty for an app that asks for none).
    grants: Vec<Vec<Grant>>,
    /// The mix of replica shapes the `fgd` policy weighs, with its caches: made on first use
    /// from the apps, or given (`Plan::set_workload`).
    workload: Option<fgd::Workload>,
    /// Whether the mix was given, not made from the apps.
    workload_given: bool,
    /// Stable hash of each node's name, for rendezvous.
    node_hash: Vec<u64>,
    stops: Vec<Stop>,
    unschedulable: Vec<Unschedulable>,
    /// Per slot `(app, index)`, the nodes it failed on past its restart budget: it is placed
    /// elsewhere while one is possible.
    avoid: BTreeMap<(u32, u32), Vec<u32>>,
    /// The container kept for each slot that runs, for stopping it if it is preempted.
    kept_containers: BTreeMap<(u32, u32), Arc<str>>,
    /// Per slot being replaced start-first: its old container, kept beside the new one until
    /// that one is ready, with its node and what it reserves there.
    old_kept: BTreeMap<(u32, u32), OldKept>,
    /// Apps whose rollout is paused (failed, with no revert): no slot of theirs is replaced.
    paused: BTreeSet<AppName>,
}

/// What one app's replicas ask of GPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Need {
    gpu: GpuNeed,
    models: Models,
}

/// A container kept for its slot `(app, index)`: its node, its id and what it reports.
type Kept<'a> = ((usize, u32), usize, &'a Arc<str>, &'a ObservedContainer);

/// How a slot's containers are ranked when one is kept: state (running, healthy or starting,
/// before unhealthy), node index, container id; the least wins.
type KeepKey<'a> = (Reverse<u8>, usize, &'a Arc<str>);

/// Places every app's slots on `nodes`, keeping what `observed` shows running.
///
/// The result depends on the facts only, not on the order of `apps`, `nodes` or the containers
/// in `observed`. `apps` must have passed [`crate::model::validate_apps`] and node names must be
/// unique (both are asserted).
pub fn place(apps: &[AppSpec], nodes: &[NodeSpec], observed: &Observed, policy: Policy) -> Plan {
    place_owned(apps.to_vec(), nodes.to_vec(), observed, policy, BTreeSet::new())
}

/// [`place`] for a caller that built `apps` and `nodes` for this pass: they are taken, not
/// copied again (an agent computes a plan after every change of facts). The rollouts of the
/// apps in `paused` replace no slot (`crate::rollout::Phase::Paused`).
pub fn place_owned(
    mut apps: Vec<AppSpec>,
    mut nodes: Vec<NodeSpec>,
    observed: &Observed,
    policy: Policy,
    paused: BTreeSet<AppName>,
) -> Plan {
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    assert!(nodes.windows(2).all(|w| w[0].id != w[1].id), "node names must be unique");
    assert!(nodes.len() <= limits::NODES_MAX, "too many nodes");
    apps.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.name.cmp(&b.name)));
    assert!(apps.windows(2).all(|w| w[0].name != w[1].name), "app names must be unique");

    let node_hash = nodes.iter().map(|n| stable_hash(n.id.as_str().as_bytes())).collect();
    let gpus = GpuTable::new(&nodes);
    let mut published: Vec<u16> = apps.iter().map(|a| a.port).collect();
    published.sort_unstable();
    let ports_cap: Vec<u32> = nodes
        .iter()
        .map(|n| {
            let r = n.host_ports;
            let taken = if r.is_empty() {
                0
            } else {
                published.partition_point(|&p| p <= r.max) - published.partition_point(|&p| p < r.min)
            };
            (r.len() - taken as u32).min(limits::LOCAL_SLOTS_MAX as u32)
        })
        .collect();
    let needs: Vec<Need> =
        apps.iter().map(|a| Need { gpu: GpuNeed::of(&a.gpu), models: gpus.models_of(&a.gpu) }).collect();
    let mut plan = Plan {
        policy,
        alive: vec![true; nodes.len()],
        used: vec![Resources::ZERO; nodes.len()],
        rooms: nodes.iter().zip(&ports_cap).map(|(n, &ports)| Room::empty(n, ports)).collect(),
        ports_used: vec![0; nodes.len()],
        ports_cap,
        gpus,
        slots: apps.iter().map(|a| vec![UNPLACED; a.replicas as usize]).collect(),
        grants: vec![Vec::new(); apps.len()],
        app_index: apps.iter().enumerate().map(|(i, a)| (a.name.clone(), i as u32)).collect(),
        needs,
        workload: None,
        workload_given: false,
        nodes,
        apps,
        node_hash,
        stops: Vec::new(),
        unschedulable: Vec::new(),
        avoid: BTreeMap::new(),
        kept_containers: BTreeMap::new(),
        old_kept: BTreeMap::new(),
        paused,
    };
    let states = plan.reconcile(observed);
    let successors = plan.roll(&states);
    let mut missing: Vec<(u32, u32)> = plan
        .slots
        .iter()
        .enumerate()
        .flat_map(|(a, s)| {
            s.iter().enumerate().filter(|(_, n)| **n == UNPLACED).map(move |(i, _)| (a as u32, i as u32))
        })
        .collect();
    missing.sort_unstable();
    plan.place_missing(&missing);
    plan.keep_unplaced_successors_old(&successors);
    plan.preempt();
    plan.check_invariants();
    plan
}

impl Plan {
    /// Keeps one container per desired slot on a live node that admits it, and beside it, in
    /// a rolling update, the slot's old container until the new one is ready; everything else
    /// that live nodes run is stopped. Returns the state of the container kept for each slot
    /// of an app with an old container anywhere (the slots a rollout may replace), by slot.
    fn reconcile(&mut self, observed: &Observed) -> BTreeMap<(u32, u32), KeptState> {
        // `self.nodes` is sorted by name and its names are unique: a binary search finds one.
        let nodes = &self.nodes;
        let node_index = |id: &NodeId| nodes.binary_search_by(|n| n.id.cmp(id)).ok();
        let app_index = &self.app_index;
        // The best container seen so far for each slot, of the app's version (`cur`) and of
        // an older one (`old`): (rank, node, container), compared so that the choice does not
        // depend on the order of the report.
        let mut cur: BTreeMap<(usize, u32), (KeepKey<'_>, &ObservedContainer)> = BTreeMap::new();
        let mut old: BTreeMap<(usize, u32), (KeepKey<'_>, &ObservedContainer)> = BTreeMap::new();
        let mut candidates: Vec<(usize, Option<usize>, &ObservedContainer)> = Vec::new();
        // Apps with a container of their version that failed: a rollout halts there until the
        // coordinator's verdict (a new replica that failed makes more of them no better).
        let mut failing: BTreeSet<usize> = BTreeSet::new();
        // A node lists its containers by slot, so neighbours mostly share an app: remember the
        // last name looked up.
        let mut last_app: Option<(&AppName, Option<usize>)> = None;
        for (node_id, containers) in observed {
            let Some(n) = node_index(node_id) else { continue };
            for c in containers {
                let app = match last_app {
                    Some((name, a)) if *name == c.slot.app => a,
                    _ => {
                        let a = app_index.get(&c.slot.app).map(|&a| a as usize);
                        last_app = Some((&c.slot.app, a));
                        a
                    }
                };
                candidates.push((n, app, c));
                let desired = app.filter(|&a| c.slot.index < self.apps[a].replicas);
                let Some(a) = desired else { continue };
                if c.state == ContainerState::Failed {
                    self.avoid.entry((a as u32, c.slot.index)).or_default().push(n as u32);
                    if self.apps[a].runs_as(c.version) {
                        failing.insert(a);
                    }
                    continue;
                }
                if self.grant_of(a, n, c).is_none() {
                    continue;
                }
                let key = (Reverse(c.state.keep_rank()), n, &c.container);
                let best = if self.apps[a].runs_as(c.version) { &mut cur } else { &mut old };
                let entry = best.entry((a, c.slot.index)).or_insert((key, c));
                if key < entry.0 {
                    *entry = (key, c);
                }
            }
        }
        // A slot's new container is kept; its old one too while the new one is not ready, or
        // is a canary waiting for promotion; an old one alone is kept, for `roll` to replace.
        let mut states = BTreeMap::new();
        let mut rolling: BTreeSet<usize> = old.keys().map(|&(a, _)| a).collect();
        rolling.retain(|a| !self.paused.contains(&self.apps[*a].name) && !failing.contains(a));
        // Containers whose GPUs a container kept before them holds (two reports disagree):
        // they are stopped, and their slots placed again.
        let mut refused: BTreeSet<(usize, &Arc<str>)> = BTreeSet::new();
        let kept: Vec<Kept<'_>> = cur
            .iter()
            .chain(old.iter().filter(|(k, _)| !cur.contains_key(k)))
            .map(|(&k, &((_, n, container), c))| (k, n, container, c))
            .collect();
        for ((a, i), n, container, c) in kept {
            let grant = self.grant_of(a, n, c).expect("only admitted containers are kept");
            let (n, container, c, grant) = if self.hold(n, self.apps[a].resources, grant) {
                (n, container, c, grant)
            } else {
                refused.insert((n, container));
                cur.remove(&(a, i));
                // The slot's old container, if it has one, is kept in its place.
                let Some(&((_, m, old_container), o)) = old.get(&(a, i)) else { continue };
                let old_grant = self.grant_of(a, m, o).expect("only admitted containers are kept");
                if !self.hold(m, self.apps[a].resources, old_grant) {
                    refused.insert((m, old_container));
                    old.remove(&(a, i));
                    continue;
                }
                (m, old_container, o, old_grant)
            };
            self.set_grant(a, i, grant);
            self.kept_containers.insert((a as u32, i), container.clone());
            self.slots[a][i as usize] = n as u32;
            if rolling.contains(&a) {
                states.insert((a as u32, i), KeptState { current: self.apps[a].runs_as(c.version), state: c.state });
            }
        }
        for (&(a, i), &((_, n, container), c)) in &old {
            let Some(&(_, new)) = cur.get(&(a, i)) else { continue };
            if new.ready && !self.holds_canary(a, i) {
                continue;
            }
            let spec = &self.apps[a];
            let resources = spec.template_of(c.version).map_or(spec.resources, |t| t.resources);
            let grant = self.grant_of(a, n, c).expect("only admitted containers are kept");
            if !self.hold(n, resources, grant) {
                refused.insert((n, container));
                continue;
            }
            self.old_kept
                .insert((a as u32, i), OldKept { node: n as u32, container: container.clone(), resources, grant });
        }
        for (n, app, c) in candidates {
            let reason = match app {
                None => StopReason::Surplus,
                Some(a) if c.slot.index >= self.apps[a].replicas => StopReason::Surplus,
                Some(_) if c.state == ContainerState::Failed => StopReason::Failed,
                Some(a) if self.grant_of(a, n, c).is_none() || refused.contains(&(n, &c.container)) => {
                    StopReason::Evicted
                }
                Some(a) => {
                    let key = (a, c.slot.index);
                    let kept = |m: &BTreeMap<(usize, u32), (KeepKey<'_>, &ObservedContainer)>| {
                        m.get(&key).is_some_and(|&((_, kn, kc), _)| kn == n && *kc == c.container)
                    };
                    let is_old = !self.apps[a].runs_as(c.version);
                    if is_old
                        && self.old_kept.get(&(a as u32, c.slot.index)).is_some_and(|o| o.container == c.container)
                    {
                        continue;
                    }
                    if (is_old && !cur.contains_key(&key) && kept(&old)) || (!is_old && kept(&cur)) {
                        continue;
                    }
                    if is_old && cur.contains_key(&key) { StopReason::Replaced } else { StopReason::Duplicate }
                }
            };
            self.stops.push(Stop {
                node: self.nodes[n].id.clone(),
                container: c.container.clone(),
                slot: c.slot.clone(),
                reason,
            });
        }
        self.evict_over_capacity();
        // A slot evicted is placed again, not replaced by a rollout.
        states.retain(|&(a, i), _| self.slots[a as usize][i as usize] != UNPLACED);
        self.stops.sort_by(|x, y| (&x.node, &x.container).cmp(&(&y.node, &y.container)));
        states
    }

    /// A node whose kept slots exceed its capacity (its capacity shrank, or two views each
    /// filled it) sheds its lowest-priority slots until it fits; they are placed again.
    fn evict_over_capacity(&mut self) {
        let over = |plan: &Plan, n: usize| {
            !plan.used[n].fits_in(plan.nodes[n].capacity) || plan.ports_used[n] > plan.ports_cap[n]
        };
        for n in 0..self.nodes.len() {
            if !over(self, n) {
                continue;
            }
            // Apps are in placement order, so the last kept slots are the least important.
            let mut kept: Vec<(usize, usize)> = Vec::new();
            for (a, slots) in self.slots.iter().enumerate() {
                kept.extend(slots.iter().enumerate().filter(|(_, s)| **s == n as u32).map(|(i, _)| (a, i)));
            }
            // Old containers kept beside new ones go first: their slots keep running.
            let mut olds: Vec<(u32, u32)> =
                self.old_kept.iter().filter(|(_, o)| o.node as usize == n).map(|(k, _)| *k).collect();
            while over(self, n) {
                let (slot, container) = if let Some((a, i)) = olds.pop() {
                    let old = self.old_kept.remove(&(a, i)).expect("listed");
                    self.release(n, old.resources, old.grant);
                    (SlotId { app: self.apps[a as usize].name.clone(), index: i }, old.container)
                } else {
                    let (a, i) = kept.pop().expect("an over-full node keeps at least one slot");
                    self.slots[a][i] = UNPLACED;
                    let grant = self.take_grant(a, i as u32);
                    self.release(n, self.apps[a].resources, grant);
                    let container =
                        self.kept_containers.remove(&(a as u32, i as u32)).expect("a kept slot has a container");
                    (SlotId { app: self.apps[a].name.clone(), index: i as u32 }, container)
                };
                self.stops.push(Stop { node: self.nodes[n].id.clone(), container, slot, reason: StopReason::Evicted });
            }
        }
    }

    /// Places `missing` slots, given in placement order, with the plan's policy.
    fn place_missing(&mut self, missing: &[(u32, u32)]) {
        let mut cursor = 0usize; // round-robin: the next node index to consider
        let mut groups: Option<Vec<Vec<u32>>> = None; // rendezvous skeleton, built on first use
        let mut eligible_cache: BTreeMap<(Labels, Option<Models>), Vec<u32>> = BTreeMap::new();
        let mut start = 0;
        while start < missing.len() {
            let a = missing[start].0 as usize;
            let end = start + missing[start..].iter().take_while(|(x, _)| *x as usize == a).count();
            let indexes: Vec<u32> = missing[start..end].iter().map(|&(_, i)| i).collect();
            start = end;

            let key = self.eligibility(a);
            let eligible = eligible_cache.entry(key.clone()).or_insert_with(|| self.eligible(a));
            let eligible = std::mem::take(eligible);
            if !self.avoid.is_empty() && indexes.iter().any(|&i| self.avoid.contains_key(&(a as u32, i))) {
                // Some slot must avoid the node it failed on: the slow path, slot by slot.
                for i in self.place_avoiding(a, &indexes, &eligible, &mut cursor) {
                    let reason = self.why_unplaceable(a, &eligible);
                    let slot = SlotId { app: self.apps[a].name.clone(), index: i };
                    self.unschedulable.push(Unschedulable { slot, reason });
                }
                *eligible_cache.get_mut(&key).expect("just inserted") = eligible;
                continue;
            }
            let placed = match self.policy {
                Policy::RoundRobin => self.place_round_robin(a, &indexes, &eligible, &mut cursor),
                Policy::BinPack => self.place_by_score(a, &indexes, &eligible, true),
                Policy::Spread => self.place_by_score(a, &indexes, &eligible, false),
                Policy::Rendezvous => {
                    let groups = groups.get_or_insert_with(|| self.rendezvous_groups());
                    self.place_rendezvous(a, &indexes, &eligible, groups)
                }
                Policy::Fgd => self.place_fgd(a, &indexes, &eligible),
            };
            if placed < indexes.len() {
                let reason = self.why_unplaceable(a, &eligible);
                for &i in &indexes[placed..] {
                    self.slots[a][i as usize] = UNPLACED;
                    let slot = SlotId { app: self.apps[a].name.clone(), index: i };
                    self.unschedulable.push(Unschedulable { slot, reason: reason.clone() });
                }
            }
            *eligible_cache.get_mut(&key).expect("just inserted") = eligible;
        }
    }

    /// Takes a dead node out of the plan and places its slots again, as a full pass over the
    /// remaining facts would: only the dead node's slots move (property-tested against [`place`]).
    /// Costs about one scan of the slots plus one placement per moved slot.
    pub fn remove_node(&mut self, node: &NodeId) -> Vec<Move> {
        let Ok(n) = self.nodes.binary_search_by(|x| x.id.cmp(node)) else { return Vec::new() };
        if !self.alive[n] {
            return Vec::new();
        }
        self.alive[n] = false;
        self.ports_used[n] = 0;
        self.gpus.close(n);
        self.set_used(n, Resources::ZERO);
        self.stops.retain(|s| s.node != *node);
        self.old_kept.retain(|_, o| o.node as usize != n);
        let mut missing = Vec::new();
        for a in 0..self.slots.len() {
            for i in 0..self.slots[a].len() {
                let s = self.slots[a][i];
                if s == UNPLACED || (s & !FRESH) as usize != n {
                    continue;
                }
                self.take_grant(a, i as u32);
                // A slot whose new container was on the dead node keeps its old one.
                if let Some(old) = self.old_kept.remove(&(a as u32, i as u32)) {
                    let m = old.node as usize;
                    self.set_used(m, self.used[m].saturating_sub(old.resources).saturating_add(self.apps[a].resources));
                    self.set_grant(a, i as u32, old.grant);
                    self.slots[a][i] = old.node;
                    self.kept_containers.insert((a as u32, i as u32), old.container);
                    continue;
                }
                missing.push((a as u32, i as u32));
            }
        }
        self.place_missing(&missing);
        self.preempt();
        let failed: BTreeMap<SlotId, Unplaceable> =
            self.unschedulable.iter().map(|u| (u.slot.clone(), u.reason.clone())).collect();
        let moves = missing
            .iter()
            .map(|&(a, i)| {
                let slot = SlotId { app: self.apps[a as usize].name.clone(), index: i };
                let to = match self.node_index_of(a as usize, i) {
                    Some(to) => Ok(self.nodes[to].id.clone()),
                    None => Err(failed[&slot].clone()),
                };
                Move { slot, from: node.clone(), to }
            })
            .collect();
        self.check_invariants();
        moves
    }

    /// An app arrives: its slots are placed after everything placed so far, as the last app
    /// in placement order, and nothing else moves (a replay of a trace, which places each task
    /// on arrival and never moves one). Its slots that fit nowhere are reported unschedulable.
    /// Not bounded by `limits::APPS_MAX`: a replay has a task per app. Its published port is
    /// not taken out of the nodes' host ports, as a full pass would take it: a replay's tasks
    /// publish none.
    ///
    /// # Panics
    ///
    /// If an app of the plan has its name.
    pub fn add_app(&mut self, app: AppSpec) {
        let a = self.apps.len();
        let need = Need { gpu: GpuNeed::of(&app.gpu), models: self.gpus.models_of(&app.gpu) };
        assert!(self.app_index.insert(app.name.clone(), a as u32).is_none(), "app names must be unique");
        self.slots.push(vec![UNPLACED; app.replicas as usize]);
        self.grants.push(Vec::new());
        if !self.workload_given {
            // The mix the fgd policy weighs is the plan's apps': made again with this one.
            self.workload = None;
        }
        self.needs.push(need);
        let missing: Vec<(u32, u32)> = (0..app.replicas).map(|i| (a as u32, i)).collect();
        self.apps.push(app);
        self.place_missing(&missing);
    }

    /// Gives the `fgd` policy the mix of replica shapes to expect, in place of the one it
    /// derives from the plan's apps: a replay knows the trace's whole mix from the start.
    pub fn set_workload(&mut self, shapes: &[(Shape, u64)]) {
        self.workload = Some(fgd::Workload::new(shapes, &self.gpus));
        self.workload_given = true;
    }

    fn node_index_of(&self, a: usize, index: u32) -> Option<usize> {
        let s = *self.slots[a].get(index as usize)?;
        (s != UNPLACED).then_some((s & !FRESH) as usize)
    }

    /// What must hold after every pass.
    fn check_invariants(&self) {
        assert_eq!(self.nodes.len(), self.used.len());
        assert_eq!(self.apps.len(), self.slots.len());
        for n in 0..self.nodes.len() {
            assert!(self.used[n].fits_in(self.nodes[n].capacity), "node {} over capacity", self.nodes[n].id);
            assert!(
                self.ports_used[n] <= self.ports_cap[n],
                "node {} holds more replicas than ports",
                self.nodes[n].id
            );
        }
        if cfg!(debug_assertions) {
            let mut used = vec![Resources::ZERO; self.nodes.len()];
            let mut ports = vec![0u32; self.nodes.len()];
            let mut gpus = GpuTable::new(&self.nodes);
            for n in (0..self.nodes.len()).filter(|&n| !self.alive[n]) {
                gpus.close(n);
            }
            for old in self.old_kept.values() {
                let n = old.node as usize;
                assert!(self.alive[n], "an old container kept is on a live node");
                used[n] = used[n].saturating_add(old.resources);
                ports[n] += 1;
                assert!(gpus.take(n, old.grant), "an old container's GPUs are its alone");
            }
            for (a, slots) in self.slots.iter().enumerate() {
                assert!(self.grants[a].is_empty() || self.grants[a].len() == slots.len());
                for i in 0..slots.len() {
                    let grant = self.grants[a].get(i).copied().unwrap_or_default();
                    if let Some(n) = self.node_index_of(a, i as u32) {
                        assert!(self.alive[n], "a dead node is never assigned a slot");
                        assert!(self.apps[a].admits(&self.nodes[n].labels), "constraints hold");
                        used[n] = used[n].saturating_add(self.apps[a].resources);
                        ports[n] += 1;
                        assert!(gpus.take(n, grant), "a slot's GPUs are its alone");
                    } else {
                        assert_eq!(grant, Grant::None, "an unplaced slot holds no GPU");
                    }
                }
            }
            assert_eq!(used, self.used, "usage matches the slots placed");
            assert_eq!(ports, self.ports_used, "host ports held match the replicas placed");
            assert_eq!(gpus, self.gpus, "GPUs held match the slots placed");
            self.gpus.check();
            let mut fresh = self.clone();
            for (n, u) in used.into_iter().enumerate() {
                fresh.set_used(n, u);
            }
            assert_eq!(fresh.rooms, self.rooms, "each node's room is current");
        }
    }

    /// The policy this plan was made with.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Every placed slot with its node, apps in placement order, slots by index.
    pub fn placements(&self) -> impl Iterator<Item = (SlotId, &NodeId)> + '_ {
        self.apps.iter().zip(&self.slots).flat_map(move |(app, slots)| {
            slots.iter().enumerate().filter(|(_, s)| **s != UNPLACED).map(move |(i, s)| {
                (SlotId { app: app.name.clone(), index: i as u32 }, &self.nodes[(*s & !FRESH) as usize].id)
            })
        })
    }

    /// Where `slot` runs, if it is placed.
    pub fn node_of(&self, slot: &SlotId) -> Option<&NodeId> {
        let a = *self.app_index.get(&slot.app)? as usize;
        self.node_index_of(a, slot.index).map(|n| &self.nodes[n].id)
    }

    /// The GPUs `slot`'s replica holds on its node (none when it is not placed, or asks for
    /// none), by index.
    pub fn gpus_of(&self, slot: &SlotId) -> Vec<GpuShare> {
        let Some(&a) = self.app_index.get(&slot.app) else { return Vec::new() };
        self.grants[a as usize].get(slot.index as usize).copied().unwrap_or_default().shares()
    }

    /// Thousandths of a GPU held and offered over the live nodes: `(allocated, total)`.
    pub fn gpu_allocation(&self) -> (u64, u64) {
        let (free, total) = self.gpus.totals(&self.alive);
        (total - free, total)
    }

    /// The slots `node` must start: placed there by this pass, not yet running there.
    pub fn starts_on(&self, node: &NodeId) -> Vec<SlotId> {
        let Ok(n) = self.nodes.binary_search_by(|x| x.id.cmp(node)) else { return Vec::new() };
        let mut out = Vec::new();
        for (app, slots) in self.apps.iter().zip(&self.slots) {
            for (i, s) in slots.iter().enumerate() {
                if *s == n as u32 | FRESH {
                    out.push(SlotId { app: app.name.clone(), index: i as u32 });
                }
            }
        }
        out
    }

    /// The containers `node` must stop.
    pub fn stops_on<'a>(&'a self, node: &'a NodeId) -> impl Iterator<Item = &'a Stop> + 'a {
        self.stops.iter().filter(move |s| s.node == *node)
    }

    /// Every container some node must stop, sorted by node then container.
    pub fn stops(&self) -> &[Stop] {
        &self.stops
    }

    /// Slots that fit nowhere, in placement order.
    pub fn unschedulable(&self) -> &[Unschedulable] {
        &self.unschedulable
    }

    /// Each live node, sorted by name, with the resources its slots reserve.
    pub fn usage(&self) -> impl Iterator<Item = (&NodeSpec, Resources)> + '_ {
        self.nodes.iter().zip(&self.used).zip(&self.alive).filter(|(_, alive)| **alive).map(|((n, u), _)| (n, *u))
    }

    /// The apps, in placement order.
    pub fn apps(&self) -> &[AppSpec] {
        &self.apps
    }
}

#[cfg(test)]
mod tests;
