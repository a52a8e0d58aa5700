//! No orphans: a container running on a live node that serves no desired slot, or that its
//! agent does not track.

use std::collections::BTreeMap;

use crate::report::Check;
use crate::scenario::Expect;
use crate::world::{ContainerId, SimContainer, World};

/// The orphans of the last sample, the longest one so far and container-seconds of them.
#[derive(Debug, Default)]
pub struct Orphans {
    /// Containers orphaned at the last sample, with since when (simulated ms).
    orphaned: BTreeMap<ContainerId, u64>,
    /// This sample's orphans so far (`sample` fills it; `end_sample` keeps it).
    still: BTreeMap<ContainerId, u64>,
    /// The longest time one container stayed orphaned, and which, so far.
    pub longest: (f64, String),
    /// Container-seconds of orphans.
    pub container_s: f64,
}

impl Orphans {
    /// Accounts for container `id` (`c`) at `now_ms` if it is an orphan; `desired` is each
    /// app's replica count, by app index. Called for every container in id order.
    pub fn sample(&mut self, now_ms: u64, dt_s: f64, w: &World, desired: &[u32], id: ContainerId, c: &SimContainer) {
        if c.removed_at_ms.is_some() || c.stopping_at_ms.is_some() || c.exited || !w.nodes[c.node].up {
            return;
        }
        let desired = desired.get(c.app).copied().unwrap_or(0);
        let tracked = w.nodes[c.node].listed.contains(&(c.app, c.slot.index, c.host_port));
        if c.slot.index < desired && tracked {
            return;
        }
        let since = self.orphaned.get(&id).copied().unwrap_or(now_ms);
        self.container_s += dt_s;
        let for_s = (now_ms - since) as f64 / 1000.0;
        if for_s > self.longest.0 {
            let why = if tracked { "its slot is not desired" } else { "its agent does not track it" };
            self.longest =
                (for_s, format!("{} on {} since {:.1}s: {why}", c.slot, w.nodes[c.node].id, since as f64 / 1000.0));
        }
        self.still.insert(id, since);
    }

    /// The sample's walk over the containers is over: its orphans are the ones now.
    pub fn end_sample(&mut self) {
        self.orphaned = std::mem::take(&mut self.still);
    }

    /// The verdict, if the scenario bounds orphans.
    pub fn check(&self, e: &Expect) -> Option<Check> {
        let max = e.orphan_s_max?;
        let (longest, what) = &self.longest;
        let detail = if *longest > 0.0 {
            format!("longest orphan {longest:.1}s (max {max}s): {what}")
        } else {
            format!("no container orphaned for a whole check interval (max {max}s)")
        };
        Some(Check::new("no orphans", *longest <= max, detail))
    }
}
