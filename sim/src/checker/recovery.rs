//! Recovery: after each fault, how long until every desired slot is served once again; for a
//! crash also when no live node lists the dead one any more (its detection).

use crate::report::{Check, Recovery};
use crate::scenario::Expect;
use crate::world::World;

/// A fault whose recovery is watched.
#[derive(Debug)]
struct OpenFault {
    describe: String,
    at_s: f64,
    measure_from_s: f64,
    recovered_s: Option<f64>,
    /// The node a crash-node fault killed.
    crashed: Option<usize>,
    /// See `Recovery::detected_s`.
    detected_s: Option<f64>,
}

/// The faults so far.
#[derive(Debug, Default)]
pub struct Recoveries {
    faults: Vec<OpenFault>,
}

impl Recoveries {
    /// A fault began at `at_s` (its recovery counts from `end_s` if it lasts); `crashed` is
    /// the node a crash killed.
    pub fn fault_started(&mut self, describe: String, at_s: f64, end_s: Option<f64>, crashed: Option<usize>) {
        let measure_from_s = end_s.unwrap_or(at_s);
        self.faults.push(OpenFault { describe, at_s, measure_from_s, recovered_s: None, crashed, detected_s: None });
    }

    /// A sample at `now_ms`, `good` when every desired slot is served once.
    pub fn sample(&mut self, now_ms: u64, good: bool, w: &World) {
        let now_s = now_ms as f64 / 1000.0;
        for f in &mut self.faults {
            if f.recovered_s.is_none() && now_s > f.measure_from_s && good {
                f.recovered_s = Some(now_s - f.measure_from_s);
            }
            if let Some(crashed) = f.crashed
                && f.detected_s.is_none()
                && now_s >= f.at_s
                && !w.nodes[crashed].up
            {
                let id = &w.nodes[crashed].id;
                if w.nodes.iter().all(|n| !n.up || !n.members.contains(id)) {
                    f.detected_s = Some(now_s - f.at_s);
                } else if now_ms.is_multiple_of(5000) && std::env::var_os("CANTEEN_SIM_DEBUG").is_some() {
                    let listing: Vec<_> =
                        w.nodes.iter().filter(|n| n.up && n.members.contains(id)).map(|n| n.id.to_string()).collect();
                    eprintln!(
                        "{now_s:.1}s {id} still listed by {} nodes: {:?}",
                        listing.len(),
                        &listing[..listing.len().min(10)]
                    );
                }
            }
        }
    }

    /// Each fault's recovery, for the report.
    pub fn recoveries(&self) -> Vec<Recovery> {
        self.faults
            .iter()
            .map(|f| Recovery {
                fault: f.describe.clone(),
                at_s: f.at_s,
                recovery_s: f.recovered_s,
                detected_s: f.crashed.and(f.detected_s),
            })
            .collect()
    }

    /// Every fault recovered within the scenario's bound.
    pub fn check(e: &Expect, recoveries: &[Recovery]) -> Option<Check> {
        let max = e.recovery_s_max?;
        let slow: Vec<String> = recoveries
            .iter()
            .filter(|r| r.recovery_s.is_none_or(|s| s > max))
            .map(|r| match r.recovery_s {
                Some(s) => format!("{} at {:.1}s took {s:.1}s", r.fault, r.at_s),
                None => format!("{} at {:.1}s never recovered", r.fault, r.at_s),
            })
            .collect();
        Some(if slow.is_empty() {
            Check::pass("recovery", format!("every fault recovered within {max}s"))
        } else {
            Check::fail("recovery", format!("over {max}s: {}", slow.join("; ")))
        })
    }
}
