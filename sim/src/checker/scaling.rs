//! Scaling: the peak of desired replicas, scale-ups and scale-downs, and slots reported
//! unschedulable.

use crate::report::Check;
use crate::scenario::{Expect, LoadStep};
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

    /// The verdicts the scenario asks for, in the report's order; `load` is the scenario's
    /// load timeline.
    pub fn checks(&self, e: &Expect, w: &World, load: &[LoadStep]) -> Vec<Check> {
        let ups = w.truth.scale_events.iter().filter(|s| s.to > s.from).count() as u32;
        let downs = w.truth.scale_events.iter().filter(|s| s.to < s.from).count() as u32;
        let mut checks = Vec::new();
        if let Some(min) = e.replicas_peak_min {
            let detail = format!("peak desired replicas {} (min {min})", self.peak_replicas);
            checks.push(Check::new("scaled up", self.peak_replicas >= min, detail));
        }
        if let (Some(max), Some(peak)) = (e.scale_up_s_max, e.replicas_peak_min) {
            checks.push(Self::scale_up_time(max, peak, w, load));
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

    /// From the load step that raised an app's rate the most to the first decision that asked
    /// for `peak` replicas of it, within `max` seconds.
    fn scale_up_time(max: f64, peak: u32, w: &World, load: &[LoadStep]) -> Check {
        let mut steepest: Option<(f64, &str, f64)> = None; // (rise, app, at_s)
        for app in &w.apps {
            let steps: Vec<&LoadStep> = load.iter().filter(|l| l.app == app.as_str()).collect();
            let mut before = 0.0;
            for step in steps {
                let rise = step.rps - before;
                if steepest.is_none_or(|(r, _, _)| rise > r) {
                    steepest = Some((rise, step.app.as_str(), step.at_s));
                }
                before = step.rps;
            }
        }
        let Some((_, app, at_s)) = steepest else {
            return Check::fail("scale-up time", "the scenario has no load step".to_owned());
        };
        let reached = w.truth.scale_events.iter().find(|e| e.app.as_str() == app && e.at_s >= at_s && e.to >= peak);
        match reached {
            Some(e) => Check::new(
                "scale-up time",
                e.at_s - at_s <= max,
                format!(
                    "{app} asked for {} replicas {:.1}s after its load rose at {at_s:.1}s (max {max}s)",
                    e.to,
                    e.at_s - at_s
                ),
            ),
            None => Check::fail(
                "scale-up time",
                format!("{app} never asked for {peak} replicas after its load rose at {at_s:.1}s"),
            ),
        }
    }
}
