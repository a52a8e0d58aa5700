//! What the statuses say: which status of a node counts, the slots each node runs, and how
//! many live containers each slot has, kept in step as statuses and members change, so that a
//! placement pass knows without walking the cluster whether its view is complete and whether
//! anything would move.

use std::collections::BTreeMap;

use crate::hash::StableMap;
use crate::model::{AppName, NodeId, NodeSpec, SlotId};
use crate::registry::{Key, Registry};
use crate::schedule::ContainerState;

use super::members::Members;
use super::{NodeStatus, Value};

/// `node`'s status, if it has one that counts: written by the life of `node` this node knows,
/// or a later one (this node's own always counts). A rebooted node's status from before the
/// reboot names containers that are gone.
pub(super) fn counted_status<'r>(
    registry: &'r Registry<Value>,
    members: &Members,
    me: &NodeId,
    node: &NodeId,
) -> Option<&'r NodeStatus> {
    match registry.get(&Key::Status(node.clone())) {
        Some(Value::Status(status)) if node == me || members.life_counts(node, status.generation) => Some(status),
        _ => None,
    }
}

/// The statuses that count of the peers believed alive, in node order. Statuses and members
/// are both sorted by node, so one walk over each finds them, without a lookup per status.
pub(super) fn live_statuses<'r>(
    registry: &'r Registry<Value>,
    members: &'r Members,
) -> impl Iterator<Item = (&'r NodeId, &'r NodeStatus)> + 'r {
    let mut names = members.names().iter().peekable();
    registry.statuses().filter_map(move |(node, value)| {
        let Value::Status(status) = value else { return None };
        while names.next_if(|m| *m < node).is_some() {}
        names.next_if(|m| *m == node).filter(|_| members.life_counts(node, status.generation)).map(|_| (node, status))
    })
}

/// One node as this node sees it ([`super::Node::cluster_view`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView<'a> {
    /// Its name.
    pub node: &'a NodeId,
    /// Whether this node believes it alive (this node always is).
    pub alive: bool,
    /// Its status, if one counts: none yet, or only one written by an earlier life.
    pub status: Option<&'a NodeStatus>,
}

/// What a node's status says it runs: its spec (none without a status that counts) and the
/// slots it lists with a container that has not failed, each with its version.
#[derive(Debug)]
pub(super) struct NodeSlots {
    /// The node's capacity and labels.
    pub(super) spec: Option<NodeSpec>,
    /// Its slots with their versions, sorted.
    pub(super) slots: Vec<(SlotId, u64)>,
}

/// The slots of every node, and the count of live containers per slot.
#[derive(Debug, Default)]
pub(super) struct View {
    /// Each node's spec and the slots its status lists with a container that has not failed
    /// (with its version), live or not.
    node_slots: StableMap<NodeId, (NodeSpec, Vec<(SlotId, u64)>)>,
    /// Live containers that have not failed, per slot, over this node and the peers believed
    /// alive. Slots with none are absent.
    slot_counts: BTreeMap<SlotId, u32>,
    /// The same containers per app and version: a rollout has slots to replace while an app
    /// has a version its spec does not run as.
    version_counts: BTreeMap<(AppName, u64), u32>,
    /// How many members have a status that counts (are in `node_slots`): the view is complete
    /// when all of them do.
    members_with_status: usize,
}

impl View {
    /// What `status` says `node` runs, if that differs from what was derived before (a health
    /// change keeps the slots as they were): built only when it changed.
    pub(super) fn changed_slots(&self, node: &NodeId, status: Option<&NodeStatus>) -> Option<NodeSlots> {
        let running = |s: &'_ NodeStatus| {
            s.containers
                .iter()
                .filter(|c| c.state != ContainerState::Failed)
                .map(|c| (c.slot.clone(), c.version))
                .collect::<Vec<_>>()
        };
        let same = match (status, self.node_slots.get(node)) {
            (None, None) => true,
            (Some(status), Some((spec, slots))) => {
                *spec == status.spec
                    && slots.iter().map(|(s, v)| (s, *v)).eq(status
                        .containers
                        .iter()
                        .filter(|c| c.state != ContainerState::Failed)
                        .map(|c| (&c.slot, c.version)))
            }
            _ => false,
        };
        (!same)
            .then(|| NodeSlots { spec: status.map(|s| s.spec.clone()), slots: status.map(running).unwrap_or_default() })
    }

    /// `node` runs `update` now; `member` says whether it is a peer believed alive, `live`
    /// whether its slots count (a member, or this node). Returns whether its spec changed.
    pub(super) fn set_node_slots(&mut self, node: &NodeId, update: NodeSlots, member: bool, live: bool) -> bool {
        let NodeSlots { spec, mut slots } = update;
        slots.sort();
        let old = self.node_slots.remove(node);
        let spec_changed = old.as_ref().map(|(s, _)| s) != spec.as_ref();
        match (old.is_some(), spec.is_some()) {
            (false, true) if member => self.members_with_status += 1,
            (true, false) if member => self.members_with_status -= 1,
            _ => {}
        }
        let old_slots = old.map(|(_, s)| s).unwrap_or_default();
        // A health change keeps the slots as they were: the counts stay as they are.
        if live && old_slots != slots {
            self.count_slots(&old_slots, false);
            self.count_slots(&slots, true);
        }
        if let Some(spec) = spec {
            self.node_slots.insert(node.clone(), (spec, slots));
        }
        spec_changed
    }

    /// `node` became a member: its slots count.
    pub(super) fn member_joined(&mut self, node: &NodeId) {
        let Some((_, slots)) = self.node_slots.get(node) else { return };
        let slots = slots.clone();
        self.members_with_status += 1;
        self.count_slots(&slots, true);
    }

    /// `node` stopped being a member: its slots no longer count.
    pub(super) fn member_left(&mut self, node: &NodeId) {
        let Some((_, slots)) = self.node_slots.get(node) else { return };
        let slots = slots.clone();
        self.members_with_status -= 1;
        self.count_slots(&slots, false);
    }

    /// Counts one live node's slots in (`add`) or out of `slot_counts` and `version_counts`.
    fn count_slots(&mut self, slots: &[(SlotId, u64)], add: bool) {
        fn step<K: Ord + Clone>(counts: &mut BTreeMap<K, u32>, key: &K, add: bool) {
            if add {
                *counts.entry(key.clone()).or_default() += 1;
            } else if let Some(count) = counts.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(key);
                }
            }
        }
        for (slot, version) in slots {
            step(&mut self.slot_counts, slot, add);
            step(&mut self.version_counts, &(slot.app.clone(), *version), add);
        }
    }

    /// Each app with each version of it that live containers run.
    pub(super) fn versions(&self) -> impl Iterator<Item = (&AppName, u64)> + '_ {
        self.version_counts.keys().map(|(app, version)| (app, *version))
    }

    /// Whether every one of `members` peers has a status that counts.
    pub(super) fn is_complete(&self, members: usize) -> bool {
        self.members_with_status == members
    }

    /// How many live containers `slot` has.
    #[cfg(test)]
    pub(super) fn count(&self, slot: &SlotId) -> Option<u32> {
        self.slot_counts.get(slot).copied()
    }

    /// Whether every desired slot (`apps`' slots, in order, each app with its replica count)
    /// runs exactly once in this view, and nothing runs that is not desired. Then, unless apps,
    /// scales, membership or node specs changed since, a placement pass keeps everything where
    /// it is. One walk over the apps and the counts, both in slot order.
    pub(super) fn runs_each_slot_once<'a>(&self, apps: impl Iterator<Item = (&'a AppName, u32)>) -> bool {
        let mut counts = self.slot_counts.iter();
        for (name, replicas) in apps {
            for index in 0..replicas {
                match counts.next() {
                    Some((slot, &1)) if slot.app == *name && slot.index == index => {}
                    _ => return false,
                }
            }
        }
        counts.next().is_none()
    }

    /// What must hold against the statuses that count (`live`: the live peers', as
    /// [`live_statuses`] lists them).
    pub(super) fn check_invariants<'a>(&self, live: impl Iterator<Item = (&'a NodeId, &'a NodeStatus)>) {
        debug_assert_eq!(self.members_with_status, live.count(), "the count of members with a status is kept in step");
    }
}
