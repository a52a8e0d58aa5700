//! Rolling updates: when a rolled-back version's old replicas were all back, the rollouts of
//! the run as the report lists them, and the expectations on them (completed, rolled back, how
//! long, which image runs at the end).

use canteen_core::model::AppName;

use crate::report::{Check, RolloutJson};
use crate::scenario::Expect;
use crate::world::World;

/// What the samples find of rollouts that went back.
#[derive(Debug, Default)]
pub struct Rollouts {
    /// Each reverted rollout (by its index in the world's list) with when its app ran only
    /// its old version again, every slot served.
    restored: Vec<(usize, u64)>,
}

impl Rollouts {
    /// A sample at `now_ms`: a reverted rollout is over once every desired slot of its app is
    /// served and no serving replica runs the failed version. `serving` counts the serving
    /// replicas by app index and slot index.
    pub fn sample(&mut self, now_ms: u64, w: &World, serving: &[Vec<u32>], desired: &[u32]) {
        let open: Vec<usize> = (0..w.truth.rollouts.len())
            .filter(|&i| {
                let r = &w.truth.rollouts[i];
                !self.restored.iter().any(|(j, _)| *j == i) && matches!(r.verdict, Some((_, false, Some(_))))
            })
            .collect();
        for i in open {
            let r = &w.truth.rollouts[i];
            let Some(a) = w.apps.iter().position(|x| *x == r.app) else { continue };
            let all_served = (0..desired[a] as usize).all(|s| serving[a].get(s).is_some_and(|n| *n > 0));
            let failed_serves =
                w.containers.values().any(|c| c.app == a && c.version == r.to && c.serving_at(now_ms, &w.nodes));
            if all_served && !failed_serves {
                self.restored.push((i, now_ms));
            }
        }
    }

    /// The rollouts as the report lists them.
    pub fn report(&self, w: &World) -> Vec<RolloutJson> {
        let restored = &self.restored;
        w.truth
            .rollouts
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let (outcome, ended_ms) = match r.verdict {
                    Some((at, true, _)) => ("completed", Some(at)),
                    Some((at, false, Some(_))) => {
                        ("reverted", restored.iter().find(|(j, _)| *j == i).map(|(_, t)| *t).or(Some(at)))
                    }
                    Some((at, false, None)) => ("failed", Some(at)),
                    None if r.superseded => ("superseded", None),
                    None => ("in-progress", None),
                };
                RolloutJson {
                    app: r.app.to_string(),
                    from: r.from,
                    to: r.to,
                    outcome,
                    started_s: r.started_ms as f64 / 1000.0,
                    ended_s: ended_ms.map(|t| t as f64 / 1000.0),
                }
            })
            .collect()
    }

    /// The scenario's expectations on rollouts.
    pub fn checks(&self, e: &Expect, w: &World, end_ms: u64) -> Vec<Check> {
        let list = self.report(w);
        let count = |outcome: &str| list.iter().filter(|r| r.outcome == outcome).count() as u32;
        let mut checks = Vec::new();
        if let Some(min) = e.rollouts_completed_min {
            let n = count("completed");
            checks.push(Check::new("rollouts completed", n >= min, format!("{n} completed (min {min})")));
        }
        let reverted = count("reverted");
        if let Some(min) = e.rollbacks_min {
            checks.push(Check::new("rollbacks", reverted >= min, format!("{reverted} rolled back (min {min})")));
        }
        if let Some(max) = e.rollbacks_max {
            checks.push(Check::new("rollbacks", reverted <= max, format!("{reverted} rolled back (max {max})")));
        }
        if let Some(max) = e.rollout_s_max {
            let took: Vec<f64> = list
                .iter()
                .filter(|r| r.outcome == "completed")
                .filter_map(|r| r.ended_s.map(|e| e - r.started_s))
                .collect();
            let longest = took.iter().copied().fold(0.0, f64::max);
            let detail = format!("{} completed, the longest in {longest:.1} s (max {max} s)", took.len());
            checks.push(Check::new("rollout time", !took.is_empty() && longest <= max, detail));
        }
        for (app, image) in &e.images_at_end {
            let name = AppName::new(app);
            let want = w.truth.desired.get(&name).copied().unwrap_or(0);
            let serving: Vec<_> =
                w.containers.values().filter(|c| c.slot.app == name && c.serving_at(end_ms, &w.nodes)).collect();
            let others: Vec<&str> = serving.iter().filter(|c| c.image != *image).map(|c| c.image.as_str()).collect();
            let slots: std::collections::BTreeSet<u32> = serving.iter().map(|c| c.slot.index).collect();
            let ok = others.is_empty() && (0..want).all(|i| slots.contains(&i));
            let detail = if others.is_empty() {
                format!("{app}: {} of {want} slots run {image}", slots.len())
            } else {
                format!("{app}: {} replicas run another image than {image} ({})", others.len(), others.join(", "))
            };
            checks.push(Check::new("images at end", ok, detail));
        }
        checks
    }
}
