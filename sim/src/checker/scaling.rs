//! Scaling: the peak of desired replicas, scale-ups and scale-downs, and slots reported
//! unschedulable.

use crate::report::Check;
use crate::scenario::Expect;
use crate::world::World;

/// The highest replica count any app was asked for.
#[derive(Debug, Default)]
pub struct Scaling {
    /// The peak of desired replicas of any app.
    pub peak_replicas: u32,
}

impl Scaling {
    /// An app is desired at `replicas`.
    pub fn desired(&mut self, replicas: u32) {
        self.peak_replicas = self.peak_replicas.max(replicas);
    }

    /// The verdicts the scenario asks for, in the report's order.
    pub fn checks(&self, e: &Expect, w: &World) -> Vec<Check> {
        let ups = w.truth.scale_events.iter().filter(|s| s.to > s.from).count() as u32;
        let downs = w.truth.scale_events.iter().filter(|s| s.to < s.from).count() as u32;
        let mut checks = Vec::new();
        if let Some(min) = e.replicas_peak_min {
            let detail = format!("peak desired replicas {} (min {min})", self.peak_replicas);
            checks.push(Check::new("scaled up", self.peak_replicas >= min, detail));
        }
        if let Some(min) = e.scale_ups_min {
            checks.push(Check::new("scale-ups", ups >= min, format!("{ups} scale-ups (min {min})")));
        }
        if let Some(max) = e.scale_downs_max {
            checks.push(Check::new("no flapping", downs <= max, format!("{downs} scale-downs (max {max})")));
        }
        if let Some(min) = e.unschedulable_min {
            let detail = format!("{} slots reported unschedulable (min {min})", w.truth.unschedulable);
            checks.push(Check::new("unschedulable reported", w.truth.unschedulable as u32 >= min, detail));
        }
        checks
    }
}
