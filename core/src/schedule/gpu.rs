//! GPUs in a plan: what each node has free on each of its GPUs, what a replica holds
//! ([`Grant`]), and which GPUs a replica is given on a node.
//!
//! A GPU is `limits::GPU_MILLI` thousandths. A replica holds whole GPUs alone, or a share of
//! one; shares of one GPU add up to at most a whole. The table keeps, beside every GPU's free
//! thousandths, a summary per node (how many GPUs are wholly free, the most free on one) that
//! the policies read when they scan nodes, so a scan reads the summary, not the GPUs.

use crate::limits;
use crate::model::{GpuRequest, GpuShare, NodeSpec};

const WHOLE: u16 = limits::GPU_MILLI as u16;
const _: () = assert!(limits::GPU_MILLI <= u16::MAX as u32);

/// The GPUs one replica holds on its node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(super) enum Grant {
    /// None.
    #[default]
    None,
    /// Whole GPUs, one bit per index.
    Whole(u64),
    /// A share of the GPU at `index`.
    Share {
        /// The GPU.
        index: u8,
        /// Thousandths of it.
        milli: u16,
    },
}

impl Grant {
    /// The grant a status reports as `shares`, if it is one a replica may hold on a node of
    /// `gpus` GPUs: whole GPUs (each once), or one share below a whole.
    pub(super) fn from_shares(shares: &[GpuShare], gpus: u32) -> Option<Grant> {
        match shares {
            [] => Some(Grant::None),
            [s] if s.milli > 0 && s.milli < limits::GPU_MILLI && s.index < gpus => {
                Some(Grant::Share { index: s.index as u8, milli: s.milli as u16 })
            }
            _ => {
                let mut mask = 0u64;
                for s in shares {
                    if s.milli != limits::GPU_MILLI || s.index >= gpus || mask & (1 << s.index) != 0 {
                        return None;
                    }
                    mask |= 1 << s.index;
                }
                Some(Grant::Whole(mask))
            }
        }
    }

    /// The GPUs held, by index.
    pub(super) fn shares(self) -> Vec<GpuShare> {
        match self {
            Grant::None => Vec::new(),
            Grant::Whole(mask) => (0..64)
                .filter(|i| mask & (1 << i) != 0)
                .map(|index| GpuShare { index, milli: limits::GPU_MILLI })
                .collect(),
            Grant::Share { index, milli } => vec![GpuShare { index: u32::from(index), milli: u32::from(milli) }],
        }
    }

    /// Whether it is what `need` asks for.
    pub(super) fn answers(self, need: GpuNeed) -> bool {
        match (self, need) {
            (Grant::None, GpuNeed::None) => true,
            (Grant::Whole(mask), GpuNeed::Whole(k)) => mask.count_ones() == u32::from(k),
            (Grant::Share { milli, .. }, GpuNeed::Share(m)) => milli == m,
            _ => false,
        }
    }
}

/// What one replica of an app asks of GPUs, in the plan's terms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum GpuNeed {
    /// No GPU.
    #[default]
    None,
    /// This many whole GPUs.
    Whole(u8),
    /// This share of one GPU.
    Share(u16),
}

impl GpuNeed {
    /// The plan's form of a validated request.
    pub(super) fn of(request: &GpuRequest) -> GpuNeed {
        if request.gpus > 0 {
            GpuNeed::Whole(request.gpus.min(limits::GPUS_PER_NODE_MAX) as u8)
        } else if request.gpu_milli > 0 {
            GpuNeed::Share(request.gpu_milli.min(limits::GPU_MILLI - 1) as u16)
        } else {
            GpuNeed::None
        }
    }

    /// The least a GPU must have free to take part: a whole one, or the share.
    pub(super) fn per_gpu(self) -> u16 {
        match self {
            GpuNeed::None => 0,
            GpuNeed::Whole(_) => WHOLE,
            GpuNeed::Share(m) => m,
        }
    }
}

/// Which GPU models an app's replicas may run on, as indexes into the plan's model table.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Models {
    /// Any model.
    #[default]
    Any,
    /// One of these (sorted); empty when no node of the plan has any of the models named.
    Only(Vec<u16>),
}

impl Models {
    pub(super) fn allows(&self, model: u16) -> bool {
        match self {
            Models::Any => model != NO_MODEL,
            Models::Only(list) => list.binary_search(&model).is_ok(),
        }
    }
}

/// The model index of a node without GPUs.
pub(super) const NO_MODEL: u16 = u16::MAX;

/// A node's GPUs at a glance, as the policies scan them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct GpuRoom {
    /// GPUs wholly free.
    pub(super) whole: u8,
    /// The most thousandths free on one GPU.
    pub(super) share_max: u16,
    /// Thousandths free over all its GPUs.
    pub(super) free: u32,
}

impl GpuRoom {
    /// Whether `need` fits in what is free (the model aside).
    pub(super) fn fits(self, need: GpuNeed) -> bool {
        match need {
            GpuNeed::None => true,
            GpuNeed::Whole(k) => self.whole >= k,
            GpuNeed::Share(m) => self.share_max >= m,
        }
    }
}

/// Every node's GPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct GpuTable {
    /// The models of the plan's nodes, sorted, each once.
    models: Vec<String>,
    /// Each node's model, an index into `models`, or `NO_MODEL`.
    node_model: Vec<u16>,
    /// Node `n`'s GPUs are `free[at[n]..at[n + 1]]`, thousandths free on each.
    at: Vec<u32>,
    free: Vec<u16>,
    /// Each node's summary, kept current by every change to `free`.
    room: Vec<GpuRoom>,
}

impl GpuTable {
    /// Every GPU of `nodes` (sorted as the plan's) free.
    pub(super) fn new(nodes: &[NodeSpec]) -> GpuTable {
        let mut models: Vec<String> =
            nodes.iter().filter(|n| n.gpus > 0).map(|n| n.gpu_model.clone()).collect::<Vec<_>>();
        models.sort_unstable();
        models.dedup();
        let mut at = Vec::with_capacity(nodes.len() + 1);
        at.push(0u32);
        let mut node_model = Vec::with_capacity(nodes.len());
        for n in nodes {
            let gpus = n.gpus.min(limits::GPUS_PER_NODE_MAX);
            at.push(at.last().expect("starts with 0") + gpus);
            node_model.push(if gpus == 0 {
                NO_MODEL
            } else {
                models.binary_search(&n.gpu_model).expect("listed") as u16
            });
        }
        let total = *at.last().expect("starts with 0") as usize;
        let mut table =
            GpuTable { models, node_model, at, free: vec![WHOLE; total], room: vec![GpuRoom::default(); nodes.len()] };
        for n in 0..nodes.len() {
            table.refresh(n);
        }
        table
    }

    /// The model filter of `request` over this table.
    pub(super) fn models_of(&self, request: &GpuRequest) -> Models {
        if request.gpu_models.is_empty() {
            return Models::Any;
        }
        let mut list: Vec<u16> =
            request.gpu_models.iter().filter_map(|m| self.models.binary_search(m).ok().map(|i| i as u16)).collect();
        list.sort_unstable();
        list.dedup();
        Models::Only(list)
    }

    /// Node `n`'s model index.
    pub(super) fn model(&self, n: usize) -> u16 {
        self.node_model[n]
    }

    /// How many GPUs node `n` has.
    pub(super) fn count(&self, n: usize) -> u32 {
        self.at[n + 1] - self.at[n]
    }

    /// Thousandths free on each of node `n`'s GPUs.
    pub(super) fn of(&self, n: usize) -> &[u16] {
        &self.free[self.at[n] as usize..self.at[n + 1] as usize]
    }

    /// Node `n`'s summary.
    pub(super) fn room(&self, n: usize) -> GpuRoom {
        self.room[n]
    }

    /// Whether a replica of `need` and `models` fits in node `n`'s free GPUs.
    pub(super) fn fits(&self, n: usize, need: GpuNeed, models: &Models) -> bool {
        need == GpuNeed::None || (self.room[n].fits(need) && models.allows(self.node_model[n]))
    }

    /// Takes what `grant` holds on node `n`; false, changing nothing, when some of it is not
    /// free there.
    pub(super) fn take(&mut self, n: usize, grant: Grant) -> bool {
        let base = self.at[n] as usize;
        let count = self.count(n);
        match grant {
            Grant::None => return true,
            Grant::Whole(mask) => {
                if count < 64 && mask >> count != 0 {
                    return false;
                }
                let all_free =
                    (0..count as usize).filter(|i| mask & (1 << i) != 0).all(|i| self.free[base + i] == WHOLE);
                if !all_free {
                    return false;
                }
                for i in (0..count as usize).filter(|i| mask & (1 << i) != 0) {
                    self.free[base + i] = 0;
                }
            }
            Grant::Share { index, milli } => {
                if u32::from(index) >= count || self.free[base + index as usize] < milli {
                    return false;
                }
                self.free[base + index as usize] -= milli;
            }
        }
        self.refresh(n);
        true
    }

    /// Gives back what `grant` held on node `n`.
    pub(super) fn give(&mut self, n: usize, grant: Grant) {
        let base = self.at[n] as usize;
        match grant {
            Grant::None => return,
            Grant::Whole(mask) => {
                for i in (0..self.count(n) as usize).filter(|i| mask & (1 << i) != 0) {
                    debug_assert_eq!(self.free[base + i], 0);
                    self.free[base + i] = WHOLE;
                }
            }
            Grant::Share { index, milli } => {
                let f = &mut self.free[base + index as usize];
                *f = (*f + milli).min(WHOLE);
            }
        }
        self.refresh(n);
    }

    /// Node `n` is dead: nothing of its GPUs is free, so nothing is placed there.
    pub(super) fn close(&mut self, n: usize) {
        let (lo, hi) = (self.at[n] as usize, self.at[n + 1] as usize);
        self.free[lo..hi].fill(0);
        self.refresh(n);
    }

    fn refresh(&mut self, n: usize) {
        let gpus = self.of(n);
        self.room[n] = GpuRoom {
            whole: gpus.iter().filter(|&&f| f == WHOLE).count() as u8,
            share_max: gpus.iter().copied().max().unwrap_or(0),
            free: gpus.iter().map(|&f| u32::from(f)).sum(),
        };
    }

    /// The GPUs best fit for `need` on node `n`, which has room for it: the lowest-indexed
    /// wholly free ones, or for a share, the GPU with the least free that takes it (a GPU
    /// already shared before a free one), the lowest index among equals.
    pub(super) fn best_fit(&self, n: usize, need: GpuNeed) -> Grant {
        let gpus = self.of(n);
        match need {
            GpuNeed::None => Grant::None,
            GpuNeed::Whole(k) => {
                let mut mask = 0u64;
                for (i, _) in gpus.iter().enumerate().filter(|(_, f)| **f == WHOLE).take(k as usize) {
                    mask |= 1 << i;
                }
                debug_assert_eq!(mask.count_ones(), u32::from(k), "the node has room");
                Grant::Whole(mask)
            }
            GpuNeed::Share(m) => {
                let (index, _) = gpus
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| **f >= m)
                    .min_by_key(|(i, f)| (**f, *i))
                    .expect("the node has room");
                Grant::Share { index: index as u8, milli: m }
            }
        }
    }

    /// A copy of node `n`'s GPUs, to try what freeing some would make room for.
    pub(super) fn clone_node(&self, n: usize) -> GpuScratch {
        GpuScratch(self.of(n).to_vec())
    }

    /// Every total of thousandths free and allocated over the live GPUs: `(free, total)`.
    pub(super) fn totals(&self, alive: &[bool]) -> (u64, u64) {
        let mut free = 0;
        let mut total = 0;
        for (n, alive) in alive.iter().enumerate() {
            if *alive {
                free += u64::from(self.room[n].free);
                total += u64::from(self.count(n)) * u64::from(WHOLE);
            }
        }
        (free, total)
    }

    /// Checks the summaries against the GPUs.
    pub(super) fn check(&self) {
        let mut fresh = self.clone();
        for n in 0..self.room.len() {
            fresh.refresh(n);
        }
        assert_eq!(fresh.room, self.room, "GPU summaries are current");
    }
}

/// One node's GPUs, copied out of the table.
pub(super) struct GpuScratch(Vec<u16>);

impl GpuScratch {
    /// Gives back what `grant` held.
    pub(super) fn give(&mut self, grant: Grant) {
        match grant {
            Grant::None => {}
            Grant::Whole(mask) => {
                for (i, f) in self.0.iter_mut().enumerate() {
                    if mask & (1 << i) != 0 {
                        *f = WHOLE;
                    }
                }
            }
            Grant::Share { index, milli } => {
                if let Some(f) = self.0.get_mut(index as usize) {
                    *f = (*f + milli).min(WHOLE);
                }
            }
        }
    }

    /// Whether `need` fits in what is free.
    pub(super) fn fits(&self, need: GpuNeed) -> bool {
        match need {
            GpuNeed::None => true,
            GpuNeed::Whole(k) => self.0.iter().filter(|&&f| f == WHOLE).count() >= usize::from(k),
            GpuNeed::Share(m) => self.0.iter().any(|&f| f >= m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Resources;

    fn gpu_node(name: &str, gpus: u32, model: &str) -> NodeSpec {
        let mut n = NodeSpec::new(name, Resources::new(64_000, 65_536));
        n.gpus = gpus;
        n.gpu_model = model.into();
        n
    }

    #[test]
    fn a_whole_gpu_is_held_alone_and_shares_add_up_to_a_whole() {
        let mut t = GpuTable::new(&[gpu_node("a", 2, "A100")]);
        assert!(t.take(0, Grant::Share { index: 0, milli: 600 }));
        assert!(!t.take(0, Grant::Share { index: 0, milli: 401 }), "600 + 401 is more than a GPU");
        assert!(t.take(0, Grant::Share { index: 0, milli: 400 }));
        assert!(!t.take(0, Grant::Whole(0b01)), "a shared GPU is not whole");
        assert!(t.take(0, Grant::Whole(0b10)));
        assert!(!t.take(0, Grant::Share { index: 1, milli: 1 }), "a whole GPU is held alone");
        assert_eq!(t.room(0), GpuRoom { whole: 0, share_max: 0, free: 0 });
        t.give(0, Grant::Whole(0b10));
        assert_eq!(t.room(0), GpuRoom { whole: 1, share_max: 1000, free: 1000 });
        t.check();
    }

    #[test]
    fn best_fit_takes_the_fullest_gpu_that_fits_and_the_lowest_free_whole_ones() {
        let mut t = GpuTable::new(&[gpu_node("a", 4, "T4")]);
        assert!(t.take(0, Grant::Share { index: 2, milli: 500 }));
        assert!(t.take(0, Grant::Share { index: 3, milli: 800 }));
        assert_eq!(t.best_fit(0, GpuNeed::Share(200)), Grant::Share { index: 3, milli: 200 });
        assert_eq!(t.best_fit(0, GpuNeed::Share(300)), Grant::Share { index: 2, milli: 300 });
        assert_eq!(t.best_fit(0, GpuNeed::Whole(2)), Grant::Whole(0b0011));
    }

    #[test]
    fn a_reported_grant_is_whole_gpus_each_once_or_one_share() {
        let s = |index, milli| GpuShare { index, milli };
        assert_eq!(Grant::from_shares(&[], 2), Some(Grant::None));
        assert_eq!(Grant::from_shares(&[s(1, 300)], 2), Some(Grant::Share { index: 1, milli: 300 }));
        assert_eq!(Grant::from_shares(&[s(0, 1000), s(1, 1000)], 2), Some(Grant::Whole(0b11)));
        assert_eq!(Grant::from_shares(&[s(2, 300)], 2), None, "no such GPU");
        assert_eq!(Grant::from_shares(&[s(0, 1000), s(0, 1000)], 2), None, "one GPU twice");
        assert_eq!(Grant::from_shares(&[s(0, 300), s(1, 300)], 2), None, "two shares");
        assert_eq!(Grant::from_shares(&[s(0, 0)], 2), None, "an empty share");
        let whole = Grant::Whole(0b101);
        assert_eq!(Grant::from_shares(&whole.shares(), 4), Some(whole));
    }
}
