//! Preemption: slots that fit nowhere take the place of lower-priority slots, and what is
//! said of a slot that fits nowhere at all.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::{AppName, Resources, SlotId};

use super::gpu::{GpuScratch, Grant};
use super::{FRESH, Plan, Stop, StopReason, UNPLACED, Unplaceable, Unschedulable};

/// The slots to evict from one node to make room for another.
struct Eviction {
    /// How many, and the highest priority among them: the fewer and the less important, the
    /// better.
    cost: (usize, i32),
    /// The node.
    node: usize,
    /// The slots, least important first.
    victims: Vec<(u32, u32)>,
}

impl Plan {
    /// Slots that fit nowhere take the place of lower-priority slots, as few as possible: on
    /// the node where the fewest (then the least important) slots must go. The evicted are
    /// placed elsewhere if they fit, may in turn evict slots of still lower priority, and are
    /// otherwise reported unschedulable. Priorities strictly fall along every chain of
    /// evictions, so the pass ends.
    pub(super) fn preempt(&mut self) {
        if self.unschedulable.is_empty() {
            return;
        }
        let lowest = self.apps.iter().map(|a| a.priority).min().unwrap_or(0);
        let index: BTreeMap<AppName, usize> = self.apps.iter().enumerate().map(|(i, a)| (a.name.clone(), i)).collect();
        let mut reasons: BTreeMap<(u32, u32), Unplaceable> = BTreeMap::new();
        for u in std::mem::take(&mut self.unschedulable) {
            reasons.insert((index[&u.slot.app] as u32, u.slot.index), u.reason);
        }
        // Slots on each node, for choosing victims.
        let mut on_node: Vec<Vec<(u32, u32)>> = vec![Vec::new(); self.nodes.len()];
        for (a, slots) in self.slots.iter().enumerate() {
            for (i, _) in slots.iter().enumerate() {
                // A slot being replaced start-first is no victim: it has two containers.
                if let Some(n) = self.node_index_of(a, i as u32)
                    && !self.old_kept.contains_key(&(a as u32, i as u32))
                {
                    on_node[n].push((a as u32, i as u32));
                }
            }
        }
        let mut pending: std::collections::BTreeSet<(u32, u32)> = reasons.keys().copied().collect();
        let mut cursor = 0;
        while let Some((a, i)) = pending.pop_first() {
            let app = a as usize;
            let eligible = self.eligible(app);
            // Room may have appeared elsewhere (an evicted slot may fit where the evictor did not).
            if self.place_avoiding(app, &[i], &eligible, &mut cursor).is_empty() {
                let n = self.node_index_of(app, i).expect("just placed");
                on_node[n].push((a, i));
                reasons.remove(&(a, i));
                continue;
            }
            let priority = self.apps[app].priority;
            if priority <= lowest {
                continue;
            }
            let Some((n, victims)) = self.fewest_victims(app, &eligible, &on_node) else { continue };
            let by = SlotId { app: self.apps[app].name.clone(), index: i };
            for victim in victims {
                self.evict(n, victim, &mut on_node[n]);
                reasons.insert(victim, Unplaceable::Preempted { by: by.clone(), priority });
                pending.insert(victim);
            }
            self.assign(app, i, n);
            on_node[n].push((a, i));
            reasons.remove(&(a, i));
        }
        self.unschedulable = reasons
            .into_iter()
            .map(|((a, i), reason)| Unschedulable {
                slot: SlotId { app: self.apps[a as usize].name.clone(), index: i },
                reason,
            })
            .collect();
        self.stops.sort_by(|x, y| (&x.node, &x.container).cmp(&(&y.node, &y.container)));
    }

    /// The node of `eligible` where a replica of app `a` fits after evicting the fewest
    /// lower-priority slots (then those of the lowest highest priority, then the lower node),
    /// with those slots, least important first; none where no eviction makes room.
    fn fewest_victims(
        &self,
        a: usize,
        eligible: &[u32],
        on_node: &[Vec<(u32, u32)>],
    ) -> Option<(usize, Vec<(u32, u32)>)> {
        let priority = self.apps[a].priority;
        let need = self.apps[a].resources;
        let gpu = self.needs[a].gpu;
        let mut best: Option<Eviction> = None;
        for &n in eligible {
            let n = n as usize;
            let mut lower: Vec<(u32, u32)> =
                on_node[n].iter().copied().filter(|&(va, _)| self.apps[va as usize].priority < priority).collect();
            // The least important go first: lowest priority, then last in placement order.
            lower.sort_by_key(|&(va, vi)| (self.apps[va as usize].priority, Reverse(va), Reverse(vi)));
            // What the node would have free with the victims gone.
            let mut free = self.rooms[n].res();
            let mut ports = u32::from(self.rooms[n].ports);
            let mut gpus = self.gpus.clone_node(n);
            let fits =
                |free: Resources, ports: u32, gpus: &GpuScratch| need.fits_in(free) && ports > 0 && gpus.fits(gpu);
            let mut victims = Vec::new();
            for v in lower {
                if fits(free, ports, &gpus) {
                    break;
                }
                // Only GPUs short: a victim that holds none frees nothing the slot needs.
                let grant = self.grants[v.0 as usize].get(v.1 as usize).copied().unwrap_or_default();
                if need.fits_in(free) && ports > 0 && grant == Grant::None {
                    continue;
                }
                free = free.saturating_add(self.apps[v.0 as usize].resources);
                ports += 1;
                gpus.give(grant);
                victims.push(v);
            }
            if !fits(free, ports, &gpus) {
                continue;
            }
            let worst = victims.iter().map(|&(va, _)| self.apps[va as usize].priority).max().unwrap_or(i32::MIN);
            let cost = (victims.len(), worst);
            if best.as_ref().is_none_or(|b| cost < b.cost) {
                best = Some(Eviction { cost, node: n, victims });
            }
        }
        best.map(|b| (b.node, b.victims))
    }

    /// Takes slot `index` of app `a` off node `n` (whose slots are `on_node`): its container,
    /// if it has one, is stopped as preempted.
    fn evict(&mut self, n: usize, (a, index): (u32, u32), on_node: &mut Vec<(u32, u32)>) {
        let slot = SlotId { app: self.apps[a as usize].name.clone(), index };
        if self.slots[a as usize][index as usize] & FRESH == 0 {
            let container = self.kept_containers.get(&(a, index)).cloned().unwrap_or_else(|| Arc::from(""));
            self.stops.push(Stop { node: self.nodes[n].id.clone(), container, slot, reason: StopReason::Preempted });
        }
        self.slots[a as usize][index as usize] = UNPLACED;
        let grant = self.take_grant(a as usize, index);
        self.release(n, self.apps[a as usize].resources, grant);
        on_node.retain(|x| *x != (a, index));
    }
}
