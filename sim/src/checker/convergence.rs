//! Convergence after the heal: every slot healthy, no duplicates and every live registry
//! identical (`converged`); registries identical and no duplicate from some time on to the end
//! (`converge time`).

use crate::report::Check;
use crate::scenario::{Expect, Scenario};
use crate::world::World;

/// When the heal came, and since when each condition has held.
#[derive(Debug, Default)]
pub struct Convergence {
    /// When the fault phase ended, in simulated s.
    pub heal_at: Option<f64>,
    /// Since when every slot is healthy, nothing runs twice and registries are identical.
    converged_at: Option<f64>,
    /// Since when registries are identical and nothing runs twice.
    settled_since: Option<f64>,
    /// The last change of the desired state after the heal (an update, a scale decision), if
    /// any: convergence is measured from it.
    changed_at: Option<f64>,
}

impl Convergence {
    /// The fault phase ended at `at_s`.
    pub fn healed_at(&mut self, at_s: f64) {
        self.heal_at = Some(at_s);
    }

    /// The desired state changed at `at_s` (an update, a scale decision).
    pub fn changed_at(&mut self, at_s: f64) {
        self.changed_at = Some(at_s);
    }

    /// What convergence is measured from: the heal, or a later change of the desired state.
    fn since(&self) -> f64 {
        let heal = self.heal_at.unwrap_or(0.0);
        self.changed_at.map_or(heal, |c| c.max(heal))
    }

    /// What that was, for the report.
    fn since_what(&self) -> String {
        let heal = self.heal_at.unwrap_or(0.0);
        match self.changed_at {
            Some(c) if c > heal => format!("the last change of the desired state at {c:.1}s"),
            _ => format!("the heal at {heal:.1}s"),
        }
    }

    /// A sample at `now_s`: `good` when every desired slot is served once.
    pub fn sample(&mut self, now_s: f64, good: bool, duplicates: u32, w: &World) {
        let Some(heal) = self.heal_at else { return };
        let digests: Vec<_> = w.nodes.iter().filter(|n| n.up).map(|n| n.digest).collect();
        let agree = digests.windows(2).all(|d| d[0] == d[1]) && digests.iter().all(|d| d.is_some());
        if good && agree && now_s >= heal {
            self.converged_at.get_or_insert(now_s);
        } else {
            self.converged_at = None;
        }
        if agree && duplicates == 0 && now_s >= heal {
            self.settled_since.get_or_insert(now_s);
        } else {
            self.settled_since = None;
        }
    }

    /// From the heal (or a later change) until registries were identical and nothing ran
    /// twice, for good.
    pub fn converge_s(&self) -> Option<f64> {
        let since = self.since();
        self.settled_since.filter(|_| self.heal_at.is_some()).map(|at| (at - since).max(0.0))
    }

    /// Converged after the heal, within the scenario's bound.
    pub fn converged_check(&self, e: &Expect, scenario: &Scenario) -> Option<Check> {
        if !e.converged {
            return None;
        }
        let (since, what) = (self.since(), self.since_what());
        // Convergence includes spreading the new statuses to every registry: it may take
        // longer than a fault's recovery, so a scenario can bound it on its own.
        let bound = e.converge_s_max.or(e.recovery_s_max).unwrap_or(scenario.duration_s);
        Some(match self.converged_at {
            Some(at) if at - since <= bound => Check::pass(
                "converged",
                format!(
                    "{:.1}s after {what}: every slot healthy, no duplicates, registries identical",
                    (at - since).max(0.0)
                ),
            ),
            Some(at) => Check::fail("converged", format!("only {:.1}s after {what} (max {bound}s)", at - since)),
            None => Check::fail("converged", format!("not converged at the end ({:.1}s); {what}", scenario.duration_s)),
        })
    }

    /// Registries identical and no duplicate within the scenario's bound after the heal.
    pub fn converge_time_check(&self, e: &Expect, scenario: &Scenario) -> Option<Check> {
        let max = e.converge_s_max?;
        let what = self.since_what();
        Some(match self.converge_s() {
            Some(s) => Check::new(
                "converge time",
                s <= max,
                format!("registries identical and no duplicate {s:.1}s after {what} (max {max}s)"),
            ),
            None => Check::fail(
                "converge time",
                format!("registries differ or a slot runs twice at the end ({:.1}s)", scenario.duration_s),
            ),
        })
    }
}
