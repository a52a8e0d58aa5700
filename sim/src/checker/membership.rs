//! Membership: wrong down declarations (counted by the world as drivers publish their
//! members), and each restarted agent's new life and adoptions.

use crate::report::Check;
use crate::scenario::Expect;
use crate::world::World;

/// The wrong down declarations' verdicts, in the report's order.
pub fn false_down_checks(e: &Expect, w: &World, end_ms: u64) -> Vec<Check> {
    let node_s = w.false_down_node_s(end_ms);
    let detail = || {
        let mut d = format!("{} wrong down declarations, {node_s:.1} node-s", w.truth.false_down_events);
        if !w.truth.false_down_examples.is_empty() {
            d.push_str(&format!(": {}", w.truth.false_down_examples.join("; ")));
        }
        d
    };
    let mut checks = Vec::new();
    if let Some(max) = e.false_down_max {
        checks.push(Check::new(
            "wrongly declared down",
            w.truth.false_down_events <= max,
            format!("{} (max {max})", detail()),
        ));
    }
    if let Some(max) = e.false_down_node_s_max {
        checks.push(Check::new("wrongly down node-s", node_s <= max, format!("{} (max {max} node-s)", detail())));
    }
    checks
}

/// Each restarted agent runs a later life and adopted every container that was running.
pub fn agent_restart_checks(w: &World) -> Vec<Check> {
    w.truth
        .agent_restarts
        .iter()
        .map(|r| {
            let id = &w.nodes[r.node].id;
            let at = r.at_ms as f64 / 1000.0;
            let ok = r.new_generation.is_some_and(|g| g > r.old_generation) && r.adopted == Some(r.running);
            let detail = format!(
                "{id} at {at:.1}s: generation {} -> {}, adopted {} of the {} containers running",
                r.old_generation,
                r.new_generation.map_or("none (never booted)".to_owned(), |g| g.to_string()),
                r.adopted.map_or("none".to_owned(), |n| n.to_string()),
                r.running
            );
            Check::new("agent restart", ok, detail)
        })
        .collect()
}
