//! Every desired slot served, each once: duplicates over the run, slots lost at the end, apps
//! fully placed, slots that moved.

use std::collections::BTreeSet;

use canteen_core::model::AppName;

use crate::report::Check;
use crate::scenario::{Expect, Scenario};
use crate::world::World;

/// Replica-seconds of duplicates, and whether the last sample was good.
#[derive(Debug, Default)]
pub struct Service {
    /// Replica-seconds of duplicates.
    pub duplicate_replica_s: f64,
    /// Whether the last sample had every desired slot served (or reported unschedulable) and
    /// no duplicate.
    pub good_now: bool,
}

/// What one sample found of the serving replicas.
#[derive(Debug)]
pub struct Served {
    /// Serving replicas beyond the first of their slot.
    pub duplicates: u32,
    /// Whether every desired slot is served, or reported unschedulable, and nothing twice.
    pub good: bool,
}

impl Service {
    /// A sample: `serving` counts the serving replicas by app index and slot index, `surge`
    /// how many of them run another version of their slot than its first (a rolling update's
    /// new replica beside the old: no duplicate), `desired` the replicas each app should have.
    pub fn sample(
        &mut self,
        now_s: f64,
        dt_s: f64,
        serving: &[Vec<u32>],
        surge: u32,
        desired: &[u32],
        w: &World,
    ) -> Served {
        let duplicates: u32 = serving.iter().flatten().map(|n| n.saturating_sub(1)).sum::<u32>() - surge;
        self.duplicate_replica_s += f64::from(duplicates) * dt_s;
        let mut missing = 0usize;
        for (counts, &replicas) in serving.iter().zip(desired) {
            missing += (0..replicas as usize).filter(|&i| counts.get(i).is_none_or(|n| *n == 0)).count();
        }
        let unschedulable = w.truth.unschedulable;
        let good = missing <= unschedulable && duplicates == 0;
        if good != self.good_now && std::env::var_os("CANTEEN_SIM_DEBUG").is_some() {
            eprintln!(
                "{now_s:.1}s good={good} missing={missing} unschedulable={unschedulable} duplicates={duplicates}"
            );
        }
        self.good_now = good;
        Served { duplicates, good }
    }

    /// The slots that run healthy at the end of the run.
    pub fn serving_at_end<'w>(w: &'w World, scenario: &Scenario) -> BTreeSet<(&'w AppName, u32)> {
        let end_ms = (scenario.duration_s * 1000.0) as u64;
        w.containers.values().filter(|c| c.serving_at(end_ms, &w.nodes)).map(|c| (&c.slot.app, c.slot.index)).collect()
    }

    /// No slot lost: every desired slot runs healthy at the end, but those reported
    /// unschedulable.
    pub fn lost_check(w: &World, scenario: &Scenario, serving_at_end: &BTreeSet<(&AppName, u32)>) -> Check {
        let mut lost = Vec::new();
        for (app, &replicas) in &w.truth.desired {
            for i in 0..replicas {
                if !serving_at_end.contains(&(app, i)) {
                    lost.push(format!("{app}/{i}"));
                }
            }
        }
        if lost.len() <= w.truth.unschedulable {
            Check::pass(
                "no slot lost",
                format!(
                    "every desired slot runs healthy at the end ({} reported unschedulable)",
                    w.truth.unschedulable
                ),
            )
        } else {
            Check::fail("no slot lost", format!("at {:.1}s not running: {}", scenario.duration_s, lost.join(", ")))
        }
    }

    /// Duplicates within their bound.
    pub fn duplicates_check(&self, e: &Expect) -> Option<Check> {
        let max = e.duplicate_replica_s_max?;
        let detail = format!("{:.1} replica-seconds of duplicates (max {max})", self.duplicate_replica_s);
        Some(Check::new("duplicates", self.duplicate_replica_s <= max, detail))
    }

    /// Each app the scenario names runs every slot healthy at the end.
    pub fn fully_placed_checks(e: &Expect, w: &World, serving_at_end: &BTreeSet<(&AppName, u32)>) -> Vec<Check> {
        e.fully_placed
            .iter()
            .map(|app| {
                let name = AppName::new(app);
                let want = w.truth.desired.get(&name).copied().unwrap_or(0);
                let have = (0..want).filter(|i| serving_at_end.contains(&(&name, *i))).count() as u32;
                let detail = format!("{app}: {have} of {want} slots run healthy at the end");
                Check::new("fully placed", have == want, detail)
            })
            .collect()
    }

    /// Slots moved within their bound.
    pub fn moves_check(e: &Expect, w: &World) -> Option<Check> {
        let max = e.moves_max?;
        let detail = format!("{} slots moved (max {max})", w.truth.moves);
        Some(Check::new("moves", w.truth.moves <= max, detail))
    }
}
