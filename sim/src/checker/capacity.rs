//! No node over capacity: what a node's containers reserve, against what it offers, and no GPU
//! held past its whole (a whole GPU by one container alone), at every sample.

use std::collections::BTreeMap;

use canteen_core::model::{GpuShare, Resources};

use crate::report::Check;
use crate::world::World;

/// The first time a node reserved more than it offers.
#[derive(Debug, Default)]
pub struct Capacity {
    over: Option<(f64, String)>,
}

impl Capacity {
    /// A sample at `now_s`: `used` is what each node's containers reserve, `gpus` what its
    /// containers that are not stopping hold of each GPU, by (node, GPU index). A stopping
    /// one drains on its GPU while its node places another there: the drain is not counted.
    pub fn sample(&mut self, now_s: f64, used: &[Resources], gpus: &BTreeMap<(usize, u32), u32>, w: &World) {
        for (i, n) in w.nodes.iter().enumerate() {
            if n.up && !used[i].fits_in(n.capacity) && self.over.is_none() {
                self.over = Some((now_s, format!("{} reserves {:?} of {:?}", n.id, used[i], n.capacity)));
            }
        }
        for (&(node, index), &milli) in gpus {
            let n = &w.nodes[node];
            if n.up && (index >= n.gpus || milli > 1000) && self.over.is_none() {
                self.over = Some((now_s, format!("{} holds {milli} thousandths of GPU {index} of {}", n.id, n.gpus)));
            }
        }
    }

    /// Adds what a container holds of its node's GPUs to `held`.
    pub fn hold(held: &mut BTreeMap<(usize, u32), u32>, node: usize, gpus: &[GpuShare]) {
        for g in gpus {
            *held.entry((node, g.index)).or_default() += g.milli;
        }
    }

    /// The verdict.
    pub fn check(&self) -> Check {
        match &self.over {
            None => {
                Check::pass("no node over capacity", "every node's containers fit its capacity at every check".into())
            }
            Some((at, what)) => Check::fail("no node over capacity", format!("at {at:.1}s: {what}")),
        }
    }
}
