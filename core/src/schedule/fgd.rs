//! The `fgd` policy: fragmentation gradient descent (Weng et al., "Beware of Fragmentation:
//! Scheduling GPU-Sharing Workloads with Fragmentation Gradient Descent", USENIX ATC '23).
//!
//! A node's GPU *fragmentation*, for a mix of replica shapes, is the GPU capacity it has free
//! that the mix cannot use, weighted by how common each shape is: for a shape that cannot run
//! there at all (too little CPU or memory, a model it does not allow, too few GPUs free), or
//! asks for no GPU, every thousandth free is lost; for one that can, the GPUs with less free
//! than it asks of one GPU are. A replica goes to the node, and GPU, whose fragmentation it
//! increases least.
//!
//! Increases are compared to a tenth of a GPU (`TIE_MILLI`): among nodes within it, the node
//! first in a fixed order of the nodes (by a hash of their names, as rendezvous ranks them)
//! wins. Measured on the openb trace (benches/README.md), the exact least increase keeps
//! 94.8% of the GPUs allocated; compared to a tenth of a GPU, 95.5% with bin-pack's order
//! among equals and 95.6% with the fixed order, which fills the same nodes first as packing
//! does, without packing's pull towards the nodes whose CPU is nearly gone (whose GPUs it
//! strands). The paper's artifact compares a sigmoid of the decrease truncated to a
//! hundredth, with ties to a random order of the nodes fixed for the run: much the same.
//!
//! The mix is what every node knows alike: the shapes of the apps' replicas, weighted by
//! their replica counts (a replay gives the trace's mix instead, [`super::Plan::set_workload`]),
//! the most common `limits::FGD_SHAPES_MAX` of them. (The artifact keeps the most common
//! shapes that make up 95% of the tasks; weighing the rest too, up to the bound, took the
//! openb replay from 95.3% to 95.6%.) A node's fragmentation changes only when its own
//! usage does, so what a shape would add on a node is cached until that node changes: a
//! placement pass computes it about once per node and shape.

use std::collections::{BTreeMap, BinaryHeap};

use crate::hash::mix;
use crate::limits;
use crate::model::{GpuRequest, Resources};

use super::Plan;
use super::gpu::{GpuNeed, GpuTable, Grant, Models};

/// Increases of fragmentation closer than this, in thousandths of a GPU (per replica of the
/// mix), count as equal.
const TIE_MILLI: i64 = 100;

/// One shape of replica: what it reserves and asks of GPUs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Shape {
    /// CPU and memory.
    pub resources: Resources,
    /// GPUs.
    pub gpu: GpuRequest,
}

/// A weighed shape, in the plan's terms.
#[derive(Clone, Debug)]
struct Weighed {
    cpu: u64,
    mem: u64,
    need: GpuNeed,
    models: Models,
    weight: i64,
    /// Index into `Workload::thresholds` of what it asks of one GPU.
    threshold: usize,
}

/// What a shape would add to a node's fragmentation, cached: valid while the node's stamp is
/// `stamp`.
#[derive(Clone, Copy, Debug, Default)]
struct Cached {
    stamp: u32,
    delta: i64,
    /// For a share, the GPU it goes on.
    gpu: u8,
}

/// The mix the policy weighs, and its caches.
#[derive(Clone, Debug)]
pub(super) struct Workload {
    shapes: Vec<Weighed>,
    /// Each shape's index in `shapes`, for the cache.
    index: BTreeMap<(Resources, GpuNeed, Models), usize>,
    /// What the weighed shapes ask of one GPU, each value once, ascending.
    thresholds: Vec<u16>,
    /// Per node, bumped on every change of its usage (from 1).
    stamps: Vec<u32>,
    /// Per node, its fragmentation as of its stamp.
    frag: Vec<(u32, i64)>,
    /// Per node and weighed shape (`n * shapes.len() + s`).
    cache: Vec<Cached>,
    /// What increases are compared to: `TIE_MILLI` per replica of the mix.
    tie: i64,
    /// Per node, its place in the fixed order of the nodes that breaks ties, with its index
    /// below it (`Plan::fgd_rank`).
    order: Vec<u64>,
    /// Per app of the plan, its shape's index in `shapes`: `NOT_WEIGHED` when it is not
    /// among them; grown as apps are looked up.
    app_shapes: Vec<u32>,
}

/// An app whose shape is not among the weighed ones.
const NOT_WEIGHED: u32 = u32::MAX;

impl Workload {
    /// The mix of `shapes` with their weights.
    pub(super) fn new(shapes: &[(Shape, u64)], gpus: &GpuTable) -> Workload {
        let mut merged: BTreeMap<(Resources, GpuNeed, Models), u64> = BTreeMap::new();
        for (shape, weight) in shapes {
            let key = (shape.resources, GpuNeed::of(&shape.gpu), gpus.models_of(&shape.gpu));
            *merged.entry(key).or_default() += weight;
        }
        let mut ranked: Vec<((Resources, GpuNeed, Models), u64)> = merged.into_iter().filter(|(_, w)| *w > 0).collect();
        // The most common first; equals in the order of their shapes, so the choice depends
        // on the mix only.
        ranked.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
        ranked.truncate(limits::FGD_SHAPES_MAX);
        let kept = ranked;
        let mut thresholds: Vec<u16> = kept.iter().map(|((_, need, _), _)| need.per_gpu()).collect();
        thresholds.sort_unstable();
        thresholds.dedup();
        let mut index = BTreeMap::new();
        let shapes: Vec<Weighed> = kept
            .into_iter()
            .enumerate()
            .map(|(i, ((res, need, models), weight))| {
                index.insert((res, need, models.clone()), i);
                Weighed {
                    cpu: res.cpu_millis,
                    mem: res.mem_bytes,
                    need,
                    models,
                    weight: weight as i64,
                    threshold: thresholds.binary_search(&need.per_gpu()).expect("listed"),
                }
            })
            .collect();
        let weights: i64 = shapes.iter().map(|s: &Weighed| s.weight).sum();
        Workload {
            tie: (weights * TIE_MILLI).max(1),
            order: Vec::new(),
            shapes,
            index,
            thresholds,
            stamps: Vec::new(),
            frag: Vec::new(),
            cache: Vec::new(),
            app_shapes: Vec::new(),
        }
    }

    /// Node `n`'s usage changed.
    pub(super) fn touch(&mut self, n: usize) {
        if let Some(s) = self.stamps.get_mut(n) {
            *s += 1;
        }
    }

    fn size_for(&mut self, nodes: usize, hashes: &[u64]) {
        if self.stamps.len() != nodes {
            let mask = super::policies::NODE_MASK;
            self.order = hashes.iter().enumerate().map(|(n, &h)| (mix(h) & !mask) | (mask - n as u64)).collect();
            self.stamps = vec![1; nodes];
            self.frag = vec![(0, 0); nodes];
            self.cache = vec![Cached::default(); nodes * self.shapes.len()];
        }
    }

    /// The fragmentation of a node with `cpu` and `mem` free, GPUs of `model` with `gpus`
    /// thousandths free: thousandths the mix cannot use, times the weights.
    fn fragmentation(&self, cpu: u64, mem: u64, model: u16, gpus: &[u16]) -> i64 {
        if gpus.is_empty() {
            return 0;
        }
        let all: i64 = gpus.iter().map(|&f| i64::from(f)).sum();
        // Per threshold: the GPUs with at least that much free, and the thousandths free on
        // the others.
        let mut count_ge = [0u8; limits::FGD_SHAPES_MAX];
        let mut lost = [0i64; limits::FGD_SHAPES_MAX];
        for (t, &threshold) in self.thresholds.iter().enumerate() {
            for &f in gpus {
                if f >= threshold {
                    count_ge[t] += 1;
                } else {
                    lost[t] += i64::from(f);
                }
            }
        }
        let mut total = 0i64;
        for s in &self.shapes {
            let usable = match s.need {
                GpuNeed::None => false,
                GpuNeed::Whole(k) => count_ge[s.threshold] >= k,
                GpuNeed::Share(_) => count_ge[s.threshold] >= 1,
            } && s.cpu <= cpu
                && s.mem <= mem
                && s.models.allows(model);
            total += s.weight * if usable { lost[s.threshold] } else { all };
        }
        total
    }
}

impl Plan {
    /// The mix, made from the apps on first use.
    fn workload(&mut self) -> &mut Workload {
        if self.workload.is_none() {
            let shapes: Vec<(Shape, u64)> = self
                .apps
                .iter()
                .map(|a| (Shape { resources: a.resources, gpu: a.gpu.clone() }, u64::from(a.replicas)))
                .collect();
            self.workload = Some(Workload::new(&shapes, &self.gpus));
        }
        let nodes = self.nodes.len();
        let w = self.workload.as_mut().expect("just made");
        w.size_for(nodes, &self.node_hash);
        w
    }

    /// App `a`'s shape's index among the weighed ones.
    fn shape_of(&mut self, a: usize) -> Option<usize> {
        let apps = self.apps.len();
        let w = self.workload();
        if w.app_shapes.len() < apps {
            w.app_shapes.resize(apps, NOT_WEIGHED - 1);
        }
        if w.app_shapes[a] == NOT_WEIGHED - 1 {
            let key = (self.apps[a].resources, self.needs[a].gpu, self.needs[a].models.clone());
            let w = self.workload.as_mut().expect("made");
            w.app_shapes[a] = w.index.get(&key).map_or(NOT_WEIGHED, |&s| s as u32);
        }
        let s = self.workload.as_ref().expect("made").app_shapes[a];
        (s != NOT_WEIGHED).then_some(s as usize)
    }

    /// Node `n`'s fragmentation now.
    fn fragmentation_now(&mut self, n: usize) -> i64 {
        let stamp = self.workload().stamps[n];
        let w = self.workload.as_ref().expect("made");
        if w.frag[n].0 == stamp {
            return w.frag[n].1;
        }
        let free = self.rooms[n].res();
        let f = w.fragmentation(free.cpu_millis, free.mem_bytes, self.gpus.model(n), self.gpus.of(n));
        self.workload.as_mut().expect("made").frag[n] = (stamp, f);
        f
    }

    /// Where on node `n`, where it fits, a replica of app `a` adds least to the node's
    /// fragmentation: that increase, and the GPUs.
    pub(super) fn fgd_best_on(&mut self, a: usize, n: usize) -> Option<(i64, Grant)> {
        let need = self.needs[a].gpu;
        if self.gpus.count(n) == 0 {
            // No GPU, no fragmentation, before or after (and no GPU replica is placed here).
            return Some((0, Grant::None));
        }
        let res = self.apps[a].resources;
        let stamp = self.workload().stamps[n];
        let shape = self.shape_of(a);
        let w = self.workload.as_ref().expect("made");
        let slot = shape.map(|s| n * w.shapes.len() + s);
        if let Some(c) = slot.map(|i| w.cache[i]).filter(|c| c.stamp == stamp) {
            let grant = match need {
                GpuNeed::Share(m) => Grant::Share { index: c.gpu, milli: m },
                _ => self.gpus.best_fit(n, need),
            };
            return Some((c.delta, grant));
        }
        let before = self.fragmentation_now(n);
        let w = self.workload.as_ref().expect("made");
        let free = self.rooms[n].res().saturating_sub(res);
        let model = self.gpus.model(n);
        let mut buffer = [0u16; limits::GPUS_PER_NODE_MAX as usize];
        let gpus = &mut buffer[..self.gpus.count(n) as usize];
        gpus.copy_from_slice(self.gpus.of(n));
        let best = match need {
            GpuNeed::None | GpuNeed::Whole(_) => {
                let grant = self.gpus.best_fit(n, need);
                if let Grant::Whole(mask) = grant {
                    for (i, g) in gpus.iter_mut().enumerate() {
                        if mask & (1 << i) != 0 {
                            *g = 0;
                        }
                    }
                }
                Some((w.fragmentation(free.cpu_millis, free.mem_bytes, model, gpus) - before, grant))
            }
            GpuNeed::Share(m) => {
                // GPUs with equal free thousandths are alike: each value is tried once, on its
                // lowest GPU; among equal increases, the GPU with the least free (best fit).
                let mut best: Option<(i64, u16, usize)> = None;
                for i in 0..gpus.len() {
                    let f = gpus[i];
                    if f < m || gpus[..i].contains(&f) {
                        continue;
                    }
                    gpus[i] = f - m;
                    let delta = w.fragmentation(free.cpu_millis, free.mem_bytes, model, gpus) - before;
                    gpus[i] = f;
                    if best.is_none_or(|b| (delta, f) < (b.0, b.1)) {
                        best = Some((delta, f, i));
                    }
                }
                best.map(|(delta, _, i)| (delta, Grant::Share { index: i as u8, milli: m }))
            }
        };
        if let (Some(i), Some((delta, grant))) = (slot, best) {
            let gpu = if let Grant::Share { index, .. } = grant { index } else { 0 };
            self.workload.as_mut().expect("made").cache[i] = Cached { stamp, delta, gpu };
        }
        best
    }

    /// The rank of node `n` for a replica of app `a`, which fits there, the best highest:
    /// the least increase of fragmentation, to `TIE_MILLI`, then the node's place in the fixed
    /// order of the nodes, then its index.
    pub(super) fn fgd_rank(&mut self, a: usize, n: usize) -> u128 {
        let (delta, _) = self.fgd_best_on(a, n).expect("the replica fits");
        let w = self.workload();
        let step = if delta == 0 { 0 } else { delta.div_euclid(w.tie) };
        // Steps are far below 2^62 in size: weights are replica counts, increases thousandths.
        let flipped = ((1i64 << 62) - step.clamp(-(1 << 61), 1 << 61)) as u64;
        (u128::from(flipped) << 64) | u128::from(w.order[n])
    }

    /// Places slots `indexes` of app `a` on the nodes of `eligible` where each adds least to
    /// the fragmentation. Returns how many (a prefix) were placed.
    pub(super) fn place_fgd(&mut self, a: usize, indexes: &[u32], eligible: &[u32]) -> usize {
        let node_of = |rank: u128| (super::policies::NODE_MASK - (rank as u64 & super::policies::NODE_MASK)) as usize;
        if indexes.len() <= 2 {
            for (done, &index) in indexes.iter().enumerate() {
                let mut best = None;
                for &n in eligible {
                    if self.fits(a, n as usize) {
                        best = best.max(Some(self.fgd_rank(a, n as usize)));
                    }
                }
                let Some(best) = best else { return done };
                self.assign(a, index, node_of(best));
            }
            return indexes.len();
        }
        // Only this app changes usage during the loop, and only on the node it pops, whose
        // rank it then computes again: the top of the heap is current and fits.
        let fits = self.fitter(a);
        let mut ranks = Vec::with_capacity(eligible.len());
        for &n in eligible {
            if fits(self, n as usize) {
                ranks.push(self.fgd_rank(a, n as usize));
            }
        }
        let mut heap = BinaryHeap::from(ranks);
        for (done, &index) in indexes.iter().enumerate() {
            let Some(top) = heap.pop() else { return done };
            let n = node_of(top);
            self.assign(a, index, n);
            if self.fits(a, n) {
                heap.push(self.fgd_rank(a, n));
            }
        }
        indexes.len()
    }
}
