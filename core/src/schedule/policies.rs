//! The placing stage's policies: round-robin, bin-pack and spread (by allocation score), and
//! rendezvous (over a two-level skeleton of node groups), plus the slow path for slots that
//! must avoid the node they failed on.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::hash::{mix, stable_hash};
use crate::limits;

use super::{Plan, Policy};

impl Plan {
    /// Deals the slots to the fitting nodes in name order, continuing from `cursor`.
    /// Returns how many of `indexes` (a prefix) were placed.
    pub(super) fn place_round_robin(
        &mut self,
        a: usize,
        indexes: &[u32],
        eligible: &[u32],
        cursor: &mut usize,
    ) -> usize {
        let mut ring: Vec<u32> = eligible.iter().copied().filter(|&n| self.fits(a, n as usize)).collect();
        let mut pos = ring.partition_point(|&n| (n as usize) < *cursor);
        for (done, &index) in indexes.iter().enumerate() {
            // Walk the ring from `pos`, dropping nodes that have filled up.
            loop {
                if ring.is_empty() {
                    return done;
                }
                if pos >= ring.len() {
                    pos = 0;
                }
                let n = ring[pos] as usize;
                if self.fits(a, n) {
                    self.assign(a, index, n);
                    *cursor = n + 1;
                    pos += 1;
                    break;
                }
                ring.remove(pos);
            }
        }
        indexes.len()
    }

    /// Allocation score of a node: the sum of its used fractions of CPU and memory, in units of
    /// 2^-20. Spread picks the lowest, bin-pack the highest; ties go to the lower node name.
    pub(super) fn score(&self, n: usize) -> u64 {
        self.scores[n]
    }

    /// Spread (lowest score first) or bin-pack (highest first) over the fitting nodes.
    pub(super) fn place_by_score(
        &mut self,
        a: usize,
        indexes: &[u32],
        eligible: &[u32],
        most_allocated: bool,
    ) -> usize {
        // The key the best node maximises, packed in one integer: the score in the high half
        // (scores are at most 2^21), the node index inverted in the low half so that ties go
        // to the lower name.
        let key = |plan: &Plan, n: usize| {
            let s = plan.score(n);
            let s = if most_allocated { s } else { (1 << 22) - s };
            (s << 32) | u64::from(u32::MAX - n as u32)
        };
        let node_of = |k: u64| (u32::MAX - (k & 0xffff_ffff) as u32) as usize;
        let need = self.apps[a].resources;
        if indexes.len() <= 2 {
            // A scan is cheaper than a heap for a slot or two (the reschedule path).
            for (done, &index) in indexes.iter().enumerate() {
                let mut best = 0u64;
                for &n in eligible {
                    if need.fits_in(self.free[n as usize]) {
                        best = best.max(key(self, n as usize));
                    }
                }
                if best == 0 {
                    return done;
                }
                self.assign(a, index, node_of(best));
            }
            return indexes.len();
        }
        let mut heap: BinaryHeap<u64> =
            eligible.iter().map(|&n| n as usize).filter(|&n| self.fits(a, n)).map(|n| key(self, n)).collect();
        for (done, &index) in indexes.iter().enumerate() {
            // Only this app changes node usage during the loop, and only on nodes it pops, so
            // the top of the heap is current and fits.
            let Some(top) = heap.pop() else { return done };
            let n = node_of(top);
            self.assign(a, index, n);
            if self.fits(a, n) {
                heap.push(key(self, n));
            }
        }
        indexes.len()
    }

    /// The rendezvous skeleton: every node in one of `RENDEZVOUS_GROUPS` groups by its name's
    /// hash, so a slot ranks the groups and then the nodes of one group instead of every node.
    pub(super) fn rendezvous_groups(&self) -> Vec<Vec<u32>> {
        let mut groups = vec![Vec::new(); limits::RENDEZVOUS_GROUPS as usize];
        for (n, h) in self.node_hash.iter().enumerate() {
            if self.alive[n] {
                groups[(h & (limits::RENDEZVOUS_GROUPS - 1)) as usize].push(n as u32);
            }
        }
        groups
    }

    pub(super) fn place_rendezvous(
        &mut self,
        a: usize,
        indexes: &[u32],
        eligible: &[u32],
        groups: &[Vec<u32>],
    ) -> usize {
        if eligible.is_empty() {
            return 0;
        }
        // Constraints filter nodes inside each group; without constraints every live node is in.
        let everyone = eligible.len() == self.alive.iter().filter(|x| **x).count();
        let mut admitted = vec![false; if everyone { 0 } else { self.nodes.len() }];
        for &n in eligible.iter().filter(|_| !everyone) {
            admitted[n as usize] = true;
        }
        let app_hash = stable_hash(self.apps[a].name.as_str().as_bytes());
        let live_groups: Vec<usize> = (0..groups.len()).filter(|&g| !groups[g].is_empty()).collect();
        let group_salt: Vec<u64> = live_groups.iter().map(|&g| mix(g as u64 + 1)).collect();
        let need = self.apps[a].resources;
        // Rank keys pack the hash in the high bits and an inverted index in the low bits, so
        // one integer comparison ranks and breaks ties towards the lower index.
        const GROUP_BITS: u32 = limits::RENDEZVOUS_GROUPS.trailing_zeros();
        const NODE_BITS: u32 = usize::BITS - (limits::NODES_MAX - 1).leading_zeros();
        let group_key = |h: u64, i: usize| (h << GROUP_BITS) | (limits::RENDEZVOUS_GROUPS - 1 - i as u64);
        let node_key = |h: u64, n: usize| (h << NODE_BITS) | ((1u64 << NODE_BITS) - 1 - n as u64);
        let mut ranked: Vec<u64> = Vec::with_capacity(live_groups.len());
        for (done, &index) in indexes.iter().enumerate() {
            let slot_hash = mix(app_hash ^ mix(u64::from(index).wrapping_add(0x5107)));
            // The best fitting node of group `g`, or 0.
            let best_in = |plan: &Plan, g: usize| {
                let mut best = 0u64;
                for &n in &groups[g] {
                    let n = n as usize;
                    if (everyone || admitted[n]) && need.fits_in(plan.free[n]) {
                        best = best.max(node_key(mix(slot_hash ^ plan.node_hash[n]), n) | 1 << 63);
                    }
                }
                best
            };
            // The top group, in one pass; usually it has a node that fits.
            let mut top = 0u64;
            for (i, salt) in group_salt.iter().enumerate() {
                top = top.max(group_key(mix(slot_hash ^ salt), i));
            }
            let top_index = (limits::RENDEZVOUS_GROUPS - 1 - (top & (limits::RENDEZVOUS_GROUPS - 1))) as usize;
            let mut chosen = best_in(self, live_groups[top_index]);
            if chosen == 0 {
                // The other groups in rank order.
                ranked.clear();
                ranked.extend(group_salt.iter().enumerate().map(|(i, salt)| group_key(mix(slot_hash ^ salt), i)));
                ranked.sort_unstable_by(|x, y| y.cmp(x));
                for &k in &ranked[1..] {
                    let i = (limits::RENDEZVOUS_GROUPS - 1 - (k & (limits::RENDEZVOUS_GROUPS - 1))) as usize;
                    chosen = best_in(self, live_groups[i]);
                    if chosen != 0 {
                        break;
                    }
                }
            }
            if chosen == 0 {
                return done;
            }
            let n = ((1u64 << NODE_BITS) - 1 - (chosen & ((1u64 << NODE_BITS) - 1))) as usize;
            self.assign(a, index, n);
        }
        indexes.len()
    }

    /// Places the slots of app `a` one by one with the policy's ranking, skipping for each slot
    /// the nodes it must avoid. Returns the indexes that fit nowhere.
    pub(super) fn place_avoiding(
        &mut self,
        a: usize,
        indexes: &[u32],
        eligible: &[u32],
        cursor: &mut usize,
    ) -> Vec<u32> {
        let count = self.nodes.len().max(1);
        let app_hash = stable_hash(self.apps[a].name.as_str().as_bytes());
        let mut failed = Vec::new();
        for &index in indexes {
            let avoid = self.avoid.get(&(a as u32, index)).cloned().unwrap_or_default();
            let slot_hash = mix(app_hash ^ mix(u64::from(index).wrapping_add(0x5107)));
            // Every policy as one ranking key, highest wins; the node index breaks ties.
            let rank = |plan: &Plan, n: usize| -> u128 {
                let tie = u128::from(u32::MAX - n as u32);
                match plan.policy {
                    Policy::RoundRobin => u128::from(u32::MAX - ((n + count - *cursor % count) % count) as u32),
                    Policy::BinPack => (u128::from(plan.score(n)) << 32) | tie,
                    Policy::Spread => (u128::from((1u64 << 22) - plan.score(n)) << 32) | tie,
                    Policy::Rendezvous => {
                        let g = plan.node_hash[n] & (limits::RENDEZVOUS_GROUPS - 1);
                        let group = mix(slot_hash ^ mix(g + 1));
                        (u128::from(group) << 64) | u128::from(mix(slot_hash ^ plan.node_hash[n]))
                    }
                }
            };
            let pick = |avoiding: bool| {
                eligible
                    .iter()
                    .map(|&n| n as usize)
                    .filter(|&n| self.fits(a, n) && !(avoiding && avoid.contains(&(n as u32))))
                    .max_by_key(|&n| (rank(self, n), Reverse(n)))
            };
            // A node the slot failed on is still better than none.
            let best = pick(true).or_else(|| pick(false));
            match best {
                Some(n) => {
                    self.assign(a, index, n);
                    *cursor = n + 1;
                }
                None => failed.push(index),
            }
        }
        failed
    }
}
