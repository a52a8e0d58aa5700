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

mod policies;
mod preempt;
mod roll;

use roll::{KeptState, OldKept};

use crate::hash::{mix, stable_hash};
use crate::limits;
use crate::model::{AppName, AppSpec, Labels, NodeId, NodeSpec, Resources, SlotId};

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
}

impl Policy {
    /// Every policy, by the name used in files and on the command line.
    pub const ALL: [(&'static str, Policy); 4] = [
        ("round-robin", Policy::RoundRobin),
        ("binpack", Policy::BinPack),
        ("spread", Policy::Spread),
        ("rendezvous", Policy::Rendezvous),
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
#[error("unknown policy {0:?}; allowed: round-robin, binpack, spread, rendezvous")]
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

/// Why a slot could not be placed. The slot is left unplaced, never over-committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unplaceable {
    /// No live node carries the labels the app requires (or no node is live).
    NoNodeMatches {
        /// The required labels, `k=v` joined by commas; empty when there are no live nodes.
        constraints: String,
    },
    /// It ran, or was placed, where a higher-priority slot that fit nowhere else now runs.
    Preempted {
        /// The slot that took its place.
        by: SlotId,
        /// That slot's priority.
        priority: i32,
    },
    /// Nodes match, but none has the resources free.
    Insufficient {
        /// What one replica needs.
        needs: Resources,
        /// Live nodes that match the constraints.
        eligible: usize,
        /// The most CPU free on any of them.
        cpu_free_max: u64,
        /// The most memory free on any of them.
        mem_free_max: u64,
    },
}

impl fmt::Display for Unplaceable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unplaceable::NoNodeMatches { constraints } if constraints.is_empty() => f.write_str("no live node"),
            Unplaceable::NoNodeMatches { constraints } => write!(f, "no live node has labels {constraints}"),
            Unplaceable::Preempted { by, priority } => {
                write!(f, "preempted by {by} (priority {priority}) and fits nowhere else")
            }
            Unplaceable::Insufficient { needs, eligible, cpu_free_max, mem_free_max } => {
                let mut short = Vec::new();
                if needs.cpu_millis > *cpu_free_max {
                    short.push("cpu");
                }
                if needs.mem_bytes > *mem_free_max {
                    short.push("memory");
                }
                let what = if short.is_empty() { "cpu and memory together".to_owned() } else { short.join(" and ") };
                write!(
                    f,
                    "insufficient {what}: needs {}m cpu and {} MiB, {eligible} eligible nodes have at most {}m cpu and {} MiB free",
                    needs.cpu_millis,
                    needs.mem_mb(),
                    cpu_free_max,
                    mem_free_max / limits::MIB
                )
            }
        }
    }
}

/// A slot that fits nowhere, with the reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unschedulable {
    /// The slot.
    pub slot: SlotId,
    /// Why it fits nowhere.
    pub reason: Unplaceable,
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
    /// What each node has left: capacity minus `used`, or nothing once the node is dead. Kept
    /// apart from `nodes` so that a scan for a fitting node reads 16 bytes a node, not 80.
    free: Vec<Resources>,
    /// `score(n)` of each node, kept current by every change to `used`: computing it takes two
    /// divisions, and spread and bin-pack read it for every candidate node.
    scores: Vec<u64>,
    /// Apps in placement order: priority descending, then name.
    apps: Vec<AppSpec>,
    /// Per app, per slot index: node index (with `FRESH` when it must be started) or `UNPLACED`.
    slots: Vec<Vec<u32>>,
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
    let mut plan = Plan {
        policy,
        alive: vec![true; nodes.len()],
        used: vec![Resources::ZERO; nodes.len()],
        scores: vec![0; nodes.len()],
        free: nodes.iter().map(|n| n.capacity).collect(),
        slots: apps.iter().map(|a| vec![UNPLACED; a.replicas as usize]).collect(),
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
        let app_index: BTreeMap<AppName, usize> =
            self.apps.iter().enumerate().map(|(i, a)| (a.name.clone(), i)).collect();
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
                        let a = app_index.get(&c.slot.app).copied();
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
                if !self.apps[a].admits(&self.nodes[n].labels) {
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
        for (&(a, i), &((_, n, container), c)) in cur.iter().chain(old.iter().filter(|(k, _)| !cur.contains_key(k))) {
            self.kept_containers.insert((a as u32, i), container.clone());
            self.slots[a][i as usize] = n as u32;
            self.set_used(n, self.used[n].saturating_add(self.apps[a].resources));
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
            self.old_kept.insert((a as u32, i), OldKept { node: n as u32, container: container.clone(), resources });
            self.set_used(n, self.used[n].saturating_add(resources));
        }
        for (n, app, c) in candidates {
            let reason = match app {
                None => StopReason::Surplus,
                Some(a) if c.slot.index >= self.apps[a].replicas => StopReason::Surplus,
                Some(_) if c.state == ContainerState::Failed => StopReason::Failed,
                Some(a) if !self.apps[a].admits(&self.nodes[n].labels) => StopReason::Evicted,
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
        self.stops.sort_by(|x, y| (&x.node, &x.container).cmp(&(&y.node, &y.container)));
        states
    }

    /// A node whose kept slots exceed its capacity (its capacity shrank, or two views each
    /// filled it) sheds its lowest-priority slots until it fits; they are placed again.
    fn evict_over_capacity(&mut self) {
        for n in 0..self.nodes.len() {
            if self.used[n].fits_in(self.nodes[n].capacity) {
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
            while !self.used[n].fits_in(self.nodes[n].capacity) {
                let (slot, container) = if let Some((a, i)) = olds.pop() {
                    let old = self.old_kept.remove(&(a, i)).expect("listed");
                    self.set_used(n, self.used[n].saturating_sub(old.resources));
                    (SlotId { app: self.apps[a as usize].name.clone(), index: i }, old.container)
                } else {
                    let (a, i) = kept.pop().expect("an over-full node keeps at least one slot");
                    self.slots[a][i] = UNPLACED;
                    self.set_used(n, self.used[n].saturating_sub(self.apps[a].resources));
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
        let mut eligible_cache: BTreeMap<Labels, Vec<u32>> = BTreeMap::new();
        let mut start = 0;
        while start < missing.len() {
            let a = missing[start].0 as usize;
            let end = start + missing[start..].iter().take_while(|(x, _)| *x as usize == a).count();
            let indexes: Vec<u32> = missing[start..end].iter().map(|&(_, i)| i).collect();
            start = end;

            let constraints = self.apps[a].constraints.clone();
            let eligible = eligible_cache.entry(constraints).or_insert_with_key(|c| {
                (0..self.nodes.len() as u32)
                    .filter(|&n| {
                        self.alive[n as usize] && c.iter().all(|(k, v)| self.nodes[n as usize].labels.get(k) == Some(v))
                    })
                    .collect()
            });
            let eligible = std::mem::take(eligible);
            if !self.avoid.is_empty() && indexes.iter().any(|&i| self.avoid.contains_key(&(a as u32, i))) {
                // Some slot must avoid the node it failed on: the slow path, slot by slot.
                for i in self.place_avoiding(a, &indexes, &eligible, &mut cursor) {
                    let reason = self.why_unplaceable(a, &eligible);
                    let slot = SlotId { app: self.apps[a].name.clone(), index: i };
                    self.unschedulable.push(Unschedulable { slot, reason });
                }
                *eligible_cache.get_mut(&self.apps[a].constraints).expect("just inserted") = eligible;
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
            };
            if placed < indexes.len() {
                let reason = self.why_unplaceable(a, &eligible);
                for &i in &indexes[placed..] {
                    self.slots[a][i as usize] = UNPLACED;
                    let slot = SlotId { app: self.apps[a].name.clone(), index: i };
                    self.unschedulable.push(Unschedulable { slot, reason: reason.clone() });
                }
            }
            *eligible_cache.get_mut(&self.apps[a].constraints).expect("just inserted") = eligible;
        }
    }

    fn free(&self, n: usize) -> Resources {
        self.free[n]
    }

    /// Whether one more replica of app `a` fits on node `n`; never true of a dead node, since
    /// every replica asks for some CPU and a dead node has none free.
    fn fits(&self, a: usize, n: usize) -> bool {
        self.apps[a].resources.fits_in(self.free[n])
    }

    fn set_used(&mut self, n: usize, used: Resources) {
        self.used[n] = used;
        let cap = self.nodes[n].capacity;
        self.free[n] = if self.alive[n] { cap.saturating_sub(used) } else { Resources::ZERO };
        let frac = |u: u64, c: u64| ((u128::from(u) << 20) / u128::from(c.max(1))) as u64;
        self.scores[n] = frac(used.cpu_millis, cap.cpu_millis) + frac(used.mem_bytes, cap.mem_bytes);
    }

    fn assign(&mut self, a: usize, index: u32, n: usize) {
        debug_assert!(self.fits(a, n));
        self.set_used(n, self.used[n].saturating_add(self.apps[a].resources));
        self.slots[a][index as usize] = n as u32 | FRESH;
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
                // A slot whose new container was on the dead node keeps its old one.
                if let Some(old) = self.old_kept.remove(&(a as u32, i as u32)) {
                    let m = old.node as usize;
                    self.set_used(m, self.used[m].saturating_sub(old.resources).saturating_add(self.apps[a].resources));
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
        }
        if cfg!(debug_assertions) {
            let mut used = vec![Resources::ZERO; self.nodes.len()];
            for old in self.old_kept.values() {
                assert!(self.alive[old.node as usize], "an old container kept is on a live node");
                used[old.node as usize] = used[old.node as usize].saturating_add(old.resources);
            }
            for (a, slots) in self.slots.iter().enumerate() {
                for i in 0..slots.len() {
                    if let Some(n) = self.node_index_of(a, i as u32) {
                        assert!(self.alive[n], "a dead node is never assigned a slot");
                        assert!(self.apps[a].admits(&self.nodes[n].labels), "constraints hold");
                        used[n] = used[n].saturating_add(self.apps[a].resources);
                    }
                }
            }
            assert_eq!(used, self.used, "usage matches the slots placed");
            let mut fresh = self.clone();
            for (n, u) in used.into_iter().enumerate() {
                fresh.set_used(n, u);
            }
            assert_eq!(fresh.scores, self.scores, "cached scores are current");
            assert_eq!(fresh.free, self.free, "cached free resources are current");
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
        let a = self.apps.iter().position(|a| a.name == slot.app)?;
        self.node_index_of(a, slot.index).map(|n| &self.nodes[n].id)
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

/// The live node ranked first for `key` by rendezvous hashing over all of `nodes`; used to pick
/// an app's coordinator. `None` when `nodes` is empty.
pub fn rendezvous_owner<'a>(key: &str, nodes: impl IntoIterator<Item = &'a NodeId>) -> Option<&'a NodeId> {
    rendezvous_owner_hashed(key, nodes.into_iter().map(|n| (stable_hash(n.as_str().as_bytes()), n)))
}

/// [`rendezvous_owner`] over nodes given with their names' [`stable_hash`], for a caller that
/// keeps those hashes: the same answer, without hashing every name again.
pub fn rendezvous_owner_hashed<'a>(
    key: &str,
    nodes: impl IntoIterator<Item = (u64, &'a NodeId)>,
) -> Option<&'a NodeId> {
    let k = stable_hash(key.as_bytes());
    nodes.into_iter().max_by_key(|(h, n)| (mix(k ^ h), Reverse(*n))).map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cpu: u64, mem_mb: u64) -> NodeSpec {
        NodeSpec { id: NodeId::new(name), capacity: Resources::new(cpu, mem_mb), labels: Labels::new() }
    }

    fn app(name: &str, replicas: u32, cpu: u64) -> AppSpec {
        let mut a = AppSpec::new(name, "img", replicas, Resources::new(cpu, 100));
        a.port = 1000 + name.len() as u16 + cpu as u16;
        a
    }

    fn where_is(plan: &Plan) -> Vec<(String, String)> {
        plan.placements().map(|(s, n)| (s.to_string(), n.to_string())).collect()
    }

    fn running(node: &str, slot: SlotId, container: &str, state: ContainerState) -> (NodeId, ObservedContainer) {
        (NodeId::new(node), ObservedContainer { slot, container: container.into(), state, version: 0, ready: true })
    }

    fn observed(rows: Vec<(NodeId, ObservedContainer)>) -> Observed {
        let mut o = Observed::new();
        for (n, c) in rows {
            o.entry(n).or_default().push(c);
        }
        o
    }

    fn three_nodes() -> Vec<NodeSpec> {
        vec![node("a", 1000, 1000), node("b", 1000, 1000), node("c", 1000, 1000)]
    }

    #[test]
    fn spread_evens_the_load_and_binpack_fills_one_node_first() {
        let apps = [app("web", 3, 300)];
        let spread = place(&apps, &three_nodes(), &Observed::new(), Policy::Spread);
        assert_eq!(spread.usage().map(|(_, u)| u.cpu_millis).collect::<Vec<_>>(), [300, 300, 300]);
        let packed = place(&apps, &three_nodes(), &Observed::new(), Policy::BinPack);
        assert_eq!(packed.usage().map(|(_, u)| u.cpu_millis).collect::<Vec<_>>(), [900, 0, 0]);
    }

    #[test]
    fn round_robin_deals_replicas_in_name_order_with_one_cursor_over_the_pass() {
        let apps = [app("x", 2, 100), app("y", 2, 100)];
        let plan = place(&apps, &three_nodes(), &Observed::new(), Policy::RoundRobin);
        let got = where_is(&plan);
        assert_eq!(got, [("x/0", "a"), ("x/1", "b"), ("y/0", "c"), ("y/1", "a")].map(|(s, n)| (s.into(), n.into())));
    }

    #[test]
    fn higher_priority_is_placed_first_when_capacity_is_short() {
        let mut important = app("important", 2, 1000);
        important.priority = 5;
        let apps = [app("batch", 2, 1000), important];
        for (_, policy) in Policy::ALL {
            let plan = place(&apps, &[node("a", 1000, 1000), node("b", 1000, 1000)], &Observed::new(), policy);
            assert!(plan.placements().all(|(s, _)| s.app.as_str() == "important"), "{policy}");
            assert_eq!(plan.unschedulable().len(), 2);
            assert!(plan.unschedulable().iter().all(|u| u.slot.app.as_str() == "batch"));
        }
    }

    #[test]
    fn a_higher_priority_slot_preempts_running_lower_priority_ones_on_one_node() {
        let mut checkout = app("checkout", 2, 600);
        checkout.priority = 10;
        let apps = [app("batch", 3, 500), checkout];
        let nodes = [node("a", 1000, 1000), node("b", 1000, 1000)];
        // batch/0 and batch/1 fill node a, batch/2 half of b: checkout/0 fits on b only after
        // batch/2 goes, checkout/1 needs a whole node.
        let rows = vec![
            running("a", SlotId::new("batch", 0), "b0", ContainerState::Healthy),
            running("a", SlotId::new("batch", 1), "b1", ContainerState::Healthy),
            running("b", SlotId::new("batch", 2), "b2", ContainerState::Healthy),
        ];
        for (_, policy) in Policy::ALL {
            let plan = place(&apps, &nodes, &observed(rows.clone()), policy);
            assert!(plan.node_of(&SlotId::new("checkout", 0)).is_some(), "{policy}");
            assert!(plan.node_of(&SlotId::new("checkout", 1)).is_some(), "{policy}");
            let stopped: Vec<_> = plan.stops().iter().map(|s| (&*s.container, s.reason)).collect();
            assert_eq!(stopped.len(), 3, "{policy}: {stopped:?}");
            assert!(stopped.iter().all(|(_, r)| *r == StopReason::Preempted));
            assert!(plan.unschedulable().iter().all(|u| u.slot.app.as_str() == "batch"));
            assert!(plan.unschedulable()[0].reason.to_string().starts_with("preempted by checkout/"));
        }
    }

    #[test]
    fn a_slot_that_fits_nowhere_is_reported_with_its_reason() {
        let mut ssd = app("db", 1, 100);
        ssd.constraints.insert("disk".into(), "ssd".into());
        let plan = place(&[ssd, app("big", 1, 5000)], &three_nodes(), &Observed::new(), Policy::Spread);
        let reasons: Vec<String> = plan.unschedulable().iter().map(|u| format!("{}: {}", u.slot, u.reason)).collect();
        assert_eq!(reasons.len(), 2);
        assert!(reasons.contains(&"db/0: no live node has labels disk=ssd".to_owned()), "{reasons:?}");
        let big = reasons.iter().find(|r| r.starts_with("big/0")).unwrap();
        assert!(big.contains("insufficient cpu") && big.contains("3 eligible"), "{big}");
    }

    #[test]
    fn running_slots_stay_where_they_are_whatever_their_health() {
        let apps = [app("web", 3, 100)];
        let rows = vec![
            running("c", SlotId::new("web", 0), "c0", ContainerState::Healthy),
            running("c", SlotId::new("web", 1), "c1", ContainerState::Starting),
            running("c", SlotId::new("web", 2), "c2", ContainerState::Unhealthy),
        ];
        for (_, policy) in Policy::ALL {
            let plan = place(&apps, &three_nodes(), &observed(rows.clone()), policy);
            assert!(plan.placements().all(|(_, n)| n.as_str() == "c"), "{policy}");
            assert!(plan.stops().is_empty());
            assert!(plan.starts_on(&NodeId::new("c")).is_empty());
        }
    }

    #[test]
    fn a_duplicate_is_stopped_the_same_way_whatever_the_report_order() {
        let apps = [app("web", 1, 100)];
        let a = running("a", SlotId::new("web", 0), "on-a", ContainerState::Unhealthy);
        let b = running("b", SlotId::new("web", 0), "on-b", ContainerState::Starting);
        let c = running("c", SlotId::new("web", 0), "on-c", ContainerState::Healthy);
        let one = place(&apps, &three_nodes(), &observed(vec![a.clone(), b.clone(), c.clone()]), Policy::Spread);
        let two = place(&apps, &three_nodes(), &observed(vec![c, b, a]), Policy::Spread);
        assert_eq!(where_is(&one), [("web/0".to_owned(), "b".to_owned())], "running first, then the lower name");
        assert_eq!(one.stops(), two.stops());
        let stopped: Vec<_> = one.stops().iter().map(|s| (&*s.container, s.reason)).collect();
        assert_eq!(stopped, [("on-a", StopReason::Duplicate), ("on-c", StopReason::Duplicate)]);
    }

    /// Two nodes that started one slot each see their own copy healthy before they hear that
    /// the other's is: whichever states each has heard, both keep the copy on the lower node.
    #[test]
    fn both_nodes_of_a_doubly_started_slot_keep_the_same_copy_whatever_health_they_heard() {
        let apps = [app("web", 1, 100)];
        let copy = |node: &str, state| running(node, SlotId::new("web", 0), &format!("on-{node}"), state);
        let (healthy, starting) = (ContainerState::Healthy, ContainerState::Starting);
        // Each sees its own copy healthy and the other's still starting; later, both healthy.
        let seen_by_a =
            place(&apps, &three_nodes(), &observed(vec![copy("a", healthy), copy("b", starting)]), Policy::Spread);
        let seen_by_b =
            place(&apps, &three_nodes(), &observed(vec![copy("a", starting), copy("b", healthy)]), Policy::Spread);
        let agreed =
            place(&apps, &three_nodes(), &observed(vec![copy("a", healthy), copy("b", healthy)]), Policy::Spread);
        for plan in [&seen_by_a, &seen_by_b, &agreed] {
            assert_eq!(where_is(plan), [("web/0".to_owned(), "a".to_owned())]);
            let stopped: Vec<_> = plan.stops().iter().map(|s| &*s.container).collect();
            assert_eq!(stopped, ["on-b"]);
        }
    }

    #[test]
    fn surplus_failed_and_removed_app_containers_are_stopped() {
        let apps = [app("web", 1, 100)];
        let rows = vec![
            running("a", SlotId::new("web", 0), "failed", ContainerState::Failed),
            running("a", SlotId::new("web", 1), "surplus", ContainerState::Healthy),
            running("b", SlotId::new("gone", 0), "removed", ContainerState::Healthy),
        ];
        let plan = place(&apps, &three_nodes(), &observed(rows), Policy::Spread);
        let stopped: Vec<_> = plan.stops().iter().map(|s| (&*s.container, s.reason)).collect();
        assert_eq!(
            stopped,
            [("failed", StopReason::Failed), ("surplus", StopReason::Surplus), ("removed", StopReason::Surplus)]
        );
        assert!(plan.node_of(&SlotId::new("web", 0)).is_some(), "the failed slot is placed again");
    }

    #[test]
    fn a_slot_that_failed_past_its_budget_goes_elsewhere_while_it_can() {
        let apps = [app("web", 1, 100)];
        for (_, policy) in Policy::ALL {
            let rows = vec![running("a", SlotId::new("web", 0), "x", ContainerState::Failed)];
            let plan = place(&apps, &three_nodes(), &observed(rows), policy);
            assert_ne!(plan.node_of(&SlotId::new("web", 0)).unwrap().as_str(), "a", "{policy}");
            let rows = vec![running("a", SlotId::new("web", 0), "x", ContainerState::Failed)];
            let plan = place(&apps, &[node("a", 1000, 1000)], &observed(rows), policy);
            assert_eq!(
                plan.node_of(&SlotId::new("web", 0)).unwrap().as_str(),
                "a",
                "the only node is better than none"
            );
        }
    }

    #[test]
    fn a_node_over_capacity_sheds_its_lowest_priority_slot() {
        let mut high = app("high", 1, 600);
        high.priority = 1;
        let apps = [high, app("low", 1, 600)];
        let rows = vec![
            running("a", SlotId::new("high", 0), "h", ContainerState::Healthy),
            running("a", SlotId::new("low", 0), "l", ContainerState::Healthy),
        ];
        let plan = place(&apps, &three_nodes(), &observed(rows), Policy::Spread);
        assert_eq!(plan.node_of(&SlotId::new("high", 0)).unwrap().as_str(), "a");
        assert_eq!(plan.node_of(&SlotId::new("low", 0)).unwrap().as_str(), "b");
        assert_eq!(&*plan.stops()[0].container, "l");
        assert_eq!(plan.stops()[0].reason, StopReason::Evicted);
    }

    #[test]
    fn containers_on_dead_nodes_are_ignored_and_their_slots_placed_again() {
        let apps = [app("web", 1, 100)];
        let rows = vec![running("gone", SlotId::new("web", 0), "x", ContainerState::Healthy)];
        let plan = place(&apps, &three_nodes(), &observed(rows), Policy::Spread);
        assert_eq!(plan.node_of(&SlotId::new("web", 0)).unwrap().as_str(), "a");
        assert!(plan.stops().is_empty(), "a dead node's containers are not its business to stop");
        assert_eq!(plan.starts_on(&NodeId::new("a")), [SlotId::new("web", 0)]);
    }

    #[test]
    fn rendezvous_choice_of_a_slot_does_not_depend_on_other_apps() {
        let nodes: Vec<NodeSpec> = (0..20).map(|i| node(&format!("n{i}"), 100_000, 100_000)).collect();
        let alone = place(&[app("web", 10, 10)], &nodes, &Observed::new(), Policy::Rendezvous);
        let crowd = place(&[app("web", 10, 10), app("api", 30, 10)], &nodes, &Observed::new(), Policy::Rendezvous);
        for (slot, node) in alone.placements() {
            assert_eq!(crowd.node_of(&slot), Some(node));
        }
    }

    #[test]
    fn rendezvous_moves_few_slots_when_a_node_joins() {
        let mut nodes: Vec<NodeSpec> = (0..10).map(|i| node(&format!("n{i}"), 1_000_000, 1_000_000)).collect();
        let apps = [app("web", 1000, 10)];
        let before = place(&apps, &nodes, &Observed::new(), Policy::Rendezvous);
        nodes.push(node("n10", 1_000_000, 1_000_000));
        let after = place(&apps, &nodes, &Observed::new(), Policy::Rendezvous);
        let moved = before.placements().filter(|(s, n)| after.node_of(s) != Some(*n)).count();
        // About 1000 / 11 slots belong to the new node; nothing else should move.
        assert!(moved < 1000 * 2 / 11, "{moved} of 1000 moved");
        assert!(after.placements().filter(|(s, n)| n.as_str() != "n10" && before.node_of(s) != Some(*n)).count() == 0);
    }

    #[test]
    fn the_coordinator_is_the_same_whatever_the_order_of_nodes() {
        let nodes: Vec<NodeId> = (0..7).map(|i| NodeId::new(&format!("n{i}"))).collect();
        let first = rendezvous_owner("web", &nodes).cloned();
        let reversed: Vec<NodeId> = nodes.iter().rev().cloned().collect();
        assert_eq!(rendezvous_owner("web", &reversed).cloned(), first);
        assert_eq!(rendezvous_owner("web", &[]), None);
    }

    #[test]
    fn policies_parse_by_name_and_reject_unknown_names() {
        for (name, policy) in Policy::ALL {
            assert_eq!(name.parse::<Policy>(), Ok(policy));
            assert_eq!(policy.to_string(), name);
        }
        assert_eq!(
            "random".parse::<Policy>().unwrap_err().to_string(),
            "unknown policy \"random\"; allowed: round-robin, binpack, spread, rendezvous"
        );
    }
}
