//! The placing stage's policies: round-robin, bin-pack and spread (by allocation score), and
//! rendezvous (over a two-level skeleton of node groups), plus the slow path for slots that
//! must avoid the node they failed on. `fgd` is in `fgd.rs`.
//!
//! Every policy takes GPUs into account the same way beside its own rule: a replica that asks
//! for GPUs goes only where GPUs of a model it allows are free, on the GPUs that fit it best
//! (`GpuTable::best_fit`); bin-pack and spread pack GPU replicas onto the nodes whose GPUs are
//! most used, and keep replicas without GPUs off nodes with GPUs free, so that the GPUs of
//! whole nodes stay free for the replicas that need them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::hash::{mix, stable_hash};
use crate::limits;
use crate::model::NodeId;

use super::gpu::GpuNeed;
use super::{Plan, Policy};

/// Bits of a node index in a rank key.
const NODE_BITS: u32 = 17;
pub(super) const NODE_MASK: u64 = (1 << NODE_BITS) - 1;
const _: () = assert!(limits::NODES_MAX as u64 <= NODE_MASK);

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
        let fits = self.fitter(a);
        let mut ring: Vec<u32> = eligible.iter().copied().filter(|&n| fits(self, n as usize)).collect();
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
                if fits(self, n) {
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

    /// The key spread (`most_allocated` false) and bin-pack rank node `n` by for a replica of
    /// app `a`, the best highest, in one integer: first what GPUs ask (for a replica with
    /// GPUs, the share of the node's GPUs in use, in thousandths: GPU replicas are packed;
    /// for one without, whether the node has no GPU free: it keeps off GPUs it would
    /// strand), then the allocation score, then the node index inverted so that ties go to
    /// the lower name. Without GPUs anywhere, the first part is the same for every node.
    #[inline]
    pub(super) fn score_key(&self, a: usize, n: usize, most_allocated: bool) -> u64 {
        let room = &self.rooms[n];
        let score = u64::from(room.score);
        let s = if most_allocated { score } else { (1 << 22) - score };
        let first = match self.needs[a].gpu {
            GpuNeed::None => u64::from(room.gpu_used == 1000),
            _ => u64::from(room.gpu_used),
        };
        // Scores are at most 2^21 and their complements at most 2^22: 23 bits.
        (((first << 23) | s) << NODE_BITS) | (NODE_MASK - n as u64)
    }

    /// Spread (lowest score first) or bin-pack (highest first) over the fitting nodes.
    pub(super) fn place_by_score(
        &mut self,
        a: usize,
        indexes: &[u32],
        eligible: &[u32],
        most_allocated: bool,
    ) -> usize {
        let key = |plan: &Plan, n: usize| plan.score_key(a, n, most_allocated);
        let node_of = |k: u64| (NODE_MASK - (k & NODE_MASK)) as usize;
        // Every eligible node is read, for every app (or every slot of a few): what the app
        // asks is read once, and for an app without GPUs, the key is made from the node's
        // room alone (`score_key`'s, checked below).
        let res = self.apps[a].resources;
        let cpu_only = self.needs[a].gpu == GpuNeed::None;
        // A node's key for an app without GPUs, from its room alone (`score_key`'s).
        let cpu_key = |plan: &Plan, n: u32| -> Option<u64> {
            let room = &plan.rooms[n as usize];
            if !room.takes(res) {
                return None;
            }
            let score = u64::from(room.score);
            let s = if most_allocated { score } else { (1 << 22) - score };
            let first = u64::from(room.gpu_used == 1000);
            Some((((first << 23) | s) << NODE_BITS) | (NODE_MASK - u64::from(n)))
        };
        let any_key = |plan: &Plan, n: u32| plan.fits(a, n as usize).then(|| key(plan, n as usize));
        let scan = |plan: &Plan| -> Vec<u64> {
            if cpu_only {
                eligible.iter().filter_map(|&n| cpu_key(plan, n)).collect()
            } else {
                eligible.iter().filter_map(|&n| any_key(plan, n)).collect()
            }
        };
        if indexes.len() <= 2 {
            // A scan is cheaper than a heap for a slot or two (the reschedule path).
            for (done, &index) in indexes.iter().enumerate() {
                let best = if cpu_only {
                    eligible.iter().filter_map(|&n| cpu_key(self, n)).max()
                } else {
                    eligible.iter().filter_map(|&n| any_key(self, n)).max()
                };
                let Some(best) = best else { return done };
                debug_assert_eq!(best, key(self, node_of(best)), "the scan's keys are score_key's");
                self.assign(a, index, node_of(best));
            }
            return indexes.len();
        }
        let heap = scan(self);
        debug_assert!(heap.iter().all(|&k| k == key(self, node_of(k))), "the scan's keys are score_key's");
        let mut heap = BinaryHeap::from(heap);
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
        // Rank keys pack the hash in the high bits and an inverted index in the low bits, so
        // one integer comparison ranks and breaks ties towards the lower index.
        const GROUP_BITS: u32 = limits::RENDEZVOUS_GROUPS.trailing_zeros();
        const NODE_BITS: u32 = usize::BITS - (limits::NODES_MAX - 1).leading_zeros();
        let group_key = |h: u64, i: usize| (h << GROUP_BITS) | (limits::RENDEZVOUS_GROUPS - 1 - i as u64);
        let node_key = |h: u64, n: usize| (h << NODE_BITS) | ((1u64 << NODE_BITS) - 1 - n as u64);
        let mut ranked: Vec<u64> = Vec::with_capacity(live_groups.len());
        let fits = self.fitter(a);
        for (done, &index) in indexes.iter().enumerate() {
            let slot_hash = mix(app_hash ^ mix(u64::from(index).wrapping_add(0x5107)));
            // The best fitting node of group `g`, or 0.
            let best_in = |plan: &Plan, g: usize| {
                let mut best = 0u64;
                for &n in &groups[g] {
                    let n = n as usize;
                    if (everyone || admitted[n]) && fits(plan, n) {
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
            let cursor_at = *cursor;
            let mut ranked: Vec<(u128, Reverse<usize>, bool)> = Vec::new();
            let fitting: Vec<usize> = eligible.iter().map(|&n| n as usize).filter(|&n| self.fits(a, n)).collect();
            for n in fitting {
                let rank = match self.policy {
                    Policy::RoundRobin => u128::from(u32::MAX - ((n + count - cursor_at % count) % count) as u32),
                    Policy::BinPack => u128::from(self.score_key(a, n, true)),
                    Policy::Spread => u128::from(self.score_key(a, n, false)),
                    Policy::Fgd => self.fgd_rank(a, n),
                    Policy::Rendezvous => {
                        let g = self.node_hash[n] & (limits::RENDEZVOUS_GROUPS - 1);
                        let group = mix(slot_hash ^ mix(g + 1));
                        (u128::from(group) << 64) | u128::from(mix(slot_hash ^ self.node_hash[n]))
                    }
                };
                ranked.push((rank, Reverse(n), avoid.contains(&(n as u32))));
            }
            let pick = |avoiding: bool| {
                ranked.iter().filter(|(_, _, avoided)| !(avoiding && *avoided)).max().map(|&(_, Reverse(n), _)| n)
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
