//! A rolling update's step in a placement pass: which slots still on an older version get a
//! new container next (start-first within `max_surge`, stop-first within `max_unavailable`,
//! canaries all at once), where it goes, and a slot whose new one fits nowhere.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::{Resources, SlotId};

use super::gpu::Grant;
use super::{ContainerState, Plan, Stop, StopReason, UNPLACED};

/// An old container kept beside its slot's new one during a rolling update.
#[derive(Clone, Debug)]
pub(super) struct OldKept {
    pub(super) node: u32,
    pub(super) container: Arc<str>,
    pub(super) resources: Resources,
    /// The GPUs it holds there.
    pub(super) grant: Grant,
}

/// What a rollout reads of the container kept for a slot.
#[derive(Clone, Copy, Debug)]
pub(super) struct KeptState {
    /// Whether it runs the app's version.
    pub(super) current: bool,
    /// Its health.
    pub(super) state: ContainerState,
}

impl Plan {
    /// Whether slot `i` of app `a` is a canary whose old container stays until the operator
    /// promotes the version.
    pub(super) fn holds_canary(&self, a: usize, i: u32) -> bool {
        let u = &self.apps[a].update;
        u.canary > 0 && !self.apps[a].promoted && i < u.canary
    }

    /// The rollout step of every app with slots still on an older version: the next slots in
    /// index order get a new container beside the old (start-first, `max_surge` at once), or
    /// have the old one stopped first (`max_unavailable` at once); canaries all at once. A new
    /// container goes to its old one's node when it fits there. Every node derives the same
    /// step from the same facts, so none leads it. Returns the slots given a new container
    /// beside the old.
    pub(super) fn roll(&mut self, states: &BTreeMap<(u32, u32), KeptState>) -> Vec<(u32, u32)> {
        let mut successors = Vec::new();
        let mut apps: Vec<u32> = states.keys().map(|&(a, _)| a).collect();
        apps.dedup();
        for a in apps {
            let spec = &self.apps[a as usize];
            let u = spec.update.clone();
            let canaries = if u.canary > 0 && !spec.promoted { Some(u.canary) } else { None };
            let slots = states.range((a, 0)..=(a, u32::MAX));
            let surging = self.old_kept.range((a, 0)..=(a, u32::MAX)).count() as u32;
            let placed = slots.clone().count() as u32;
            let unavailable = spec.replicas - placed
                + slots.clone().filter(|(_, k)| k.state != ContainerState::Healthy).count() as u32;
            let mut surge = u.max_surge.saturating_sub(surging);
            let mut unavailable_left = u.max_unavailable.saturating_sub(unavailable);
            let waiting: Vec<u32> = slots.filter(|(_, k)| !k.current).map(|(&(_, i), _)| i).collect();
            for i in waiting {
                let n = self.slots[a as usize][i as usize] as usize;
                let key = (a, i);
                if let Some(c) = canaries {
                    if i >= c {
                        break;
                    }
                } else if surge > 0 {
                    surge -= 1;
                } else if unavailable_left > 0 {
                    unavailable_left -= 1;
                    let container = self.kept_containers.remove(&key).expect("a kept slot has its container");
                    let slot = SlotId { app: self.apps[a as usize].name.clone(), index: i };
                    self.stops.push(Stop {
                        node: self.nodes[n].id.clone(),
                        container,
                        slot,
                        reason: StopReason::Replaced,
                    });
                    self.slots[a as usize][i as usize] = UNPLACED;
                    let grant = self.take_grant(a as usize, i);
                    self.release(n, self.apps[a as usize].resources, grant);
                    continue;
                } else {
                    break;
                }
                // Start-first: the old container steps aside, still reserved, and the slot is
                // placed again, on the old one's node when it fits.
                let container = self.kept_containers.remove(&key).expect("a kept slot has its container");
                let resources = self.apps[a as usize].resources;
                let grant = self.take_grant(a as usize, i);
                self.old_kept.insert(key, OldKept { node: n as u32, container, resources, grant });
                self.slots[a as usize][i as usize] = UNPLACED;
                if self.fits(a as usize, n) {
                    self.assign(a as usize, i, n);
                }
                successors.push(key);
            }
        }
        self.stops.sort_by(|x, y| (&x.node, &x.container).cmp(&(&y.node, &y.container)));
        successors
    }

    /// A slot given a new container that fits nowhere keeps its old one as its only one, and is
    /// not reported unschedulable: it runs, and is replaced once room frees up.
    pub(super) fn keep_unplaced_successors_old(&mut self, successors: &[(u32, u32)]) {
        for &(a, i) in successors {
            if self.slots[a as usize][i as usize] != UNPLACED {
                continue;
            }
            let old = self.old_kept.remove(&(a, i)).expect("a successor's old container is kept");
            let n = old.node as usize;
            self.set_used(
                n,
                self.used[n].saturating_sub(old.resources).saturating_add(self.apps[a as usize].resources),
            );
            self.set_grant(a as usize, i, old.grant);
            self.slots[a as usize][i as usize] = old.node;
            self.kept_containers.insert((a, i), old.container);
            let slot = SlotId { app: self.apps[a as usize].name.clone(), index: i };
            self.unschedulable.retain(|u| u.slot != slot);
        }
    }
}
