//! No node over capacity: what a node's containers reserve, against what it offers, at every
//! sample.

use canteen_core::model::Resources;

use crate::report::Check;
use crate::world::World;

/// The first time a node reserved more than it offers.
#[derive(Debug, Default)]
pub struct Capacity {
    over: Option<(f64, String)>,
}

impl Capacity {
    /// A sample at `now_s`: `used` is what each node's containers reserve.
    pub fn sample(&mut self, now_s: f64, used: &[Resources], w: &World) {
        for (i, n) in w.nodes.iter().enumerate() {
            if n.up && !used[i].fits_in(n.capacity) && self.over.is_none() {
                self.over = Some((now_s, format!("{} reserves {:?} of {:?}", n.id, used[i], n.capacity)));
            }
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
