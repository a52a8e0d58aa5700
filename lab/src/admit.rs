//! What the lab can run: a scenario whose every fault it can do for real, on at most
//! [`NODES_MAX`] nodes, for at most [`DURATION_S_MAX`] seconds. Anything else is refused before
//! anything is set up, naming what and why (exit 2).

use canteen_sim::scenario::{FaultKind, Membership, Scenario};

/// Agents one machine of two cores runs side by side, each with its containers.
pub const NODES_MAX: usize = 10;
/// A lab run is wall-clock time: ten minutes at most.
pub const DURATION_S_MAX: f64 = 600.0;

/// Why a scenario is refused: the key it names and what is wrong.
#[derive(Debug, PartialEq)]
pub struct Refusal {
    /// The scenario's key (`fault[3].kind`, `sim.images`, ...).
    pub key: String,
    /// What the lab cannot do, and why.
    pub why: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.why)
    }
}

/// Checks that the lab can run `s` for real.
pub fn check(s: &Scenario) -> Result<(), Refusal> {
    let refuse = |key: &str, why: String| Err(Refusal { key: key.to_owned(), why });
    if s.cluster.nodes.len() > NODES_MAX {
        return refuse(
            "cluster.nodes",
            format!(
                "the lab runs at most {NODES_MAX} agents on one machine; this scenario has {}",
                s.cluster.nodes.len()
            ),
        );
    }
    if s.duration_s > DURATION_S_MAX {
        return refuse(
            "duration_s",
            format!("a lab run takes its duration in real time: at most {DURATION_S_MAX} s, got {}", s.duration_s),
        );
    }
    if s.sim.membership == Membership::PerfectFailureDetector {
        return refuse(
            "sim.membership",
            "a real cluster has no perfect failure detector: the agents run SWIM (use membership = \"swim\")".into(),
        );
    }
    if !s.sim.images.is_empty() {
        return refuse(
            "sim.images",
            "images that never pass a health check or crash on a timer are simulated behaviour; the lab runs real \
             images as they are"
                .into(),
        );
    }
    if !s.sim.adopt {
        return refuse("sim.adopt", "the real agent always adopts its node's containers".into());
    }
    if !s.sim.gossip_keys {
        return refuse("sim.gossip_keys", "the lab runs with cluster keys, as production does off loopback".into());
    }
    for (i, f) in s.faults.iter().enumerate() {
        let why = match &f.kind {
            FaultKind::SlowNode { .. } => "a real node's containers cannot be slowed by a factor",
            FaultKind::FlapContainer { .. } => "a real container's health check cannot be made to flap on a timer",
            _ => continue,
        };
        return refuse(&format!("fault[{i}].kind"), format!("{}: {why}", f.describe()));
    }
    let e = &s.expect;
    let unjudged = [
        ("expect.rollouts_completed_min", e.rollouts_completed_min.is_some()),
        ("expect.rollbacks_min", e.rollbacks_min.is_some()),
        ("expect.rollbacks_max", e.rollbacks_max.is_some()),
        ("expect.rollout_s_max", e.rollout_s_max.is_some()),
        ("expect.unschedulable_min", e.unschedulable_min.is_some()),
    ];
    if let Some((key, _)) = unjudged.iter().find(|(_, given)| *given) {
        return refuse(
            key,
            "the lab judges this from the nodes' events, which real agents do not stream to it yet".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(extra: &str) -> Scenario {
        let text = format!(
            "name = \"t\"\nduration_s = 60\n[cluster]\nnodes = 3\ncpu_millis = 1000\nmem_mb = 1024\n\
             [[app]]\nname = \"web\"\nimage = \"canteen-demo:latest\"\nreplicas = 2\ncpu_millis = 100\nmem_mb = 64\nport = 8080\n{extra}"
        );
        canteen_sim::scenario::parse("t.toml", &text).expect("a valid scenario")
    }

    #[test]
    fn a_scenario_of_real_faults_is_admitted() {
        let s = scenario(
            "[[fault]]\nat_s = 10\nkind = \"crash-node\"\nnode = 1\n\
             [[fault]]\nat_s = 20\nkind = \"partition\"\ngroups = [[0]]\nduration_s = 5\n\
             [[fault]]\nat_s = 30\nkind = \"packet-loss\"\nratio = 0.1\nduration_s = 5\n",
        );
        assert_eq!(check(&s), Ok(()));
    }

    #[test]
    fn what_the_lab_cannot_do_is_refused_by_its_key() {
        let s = scenario("[[fault]]\nat_s = 10\nkind = \"slow-node\"\nnode = 1\nfactor = 3\nduration_s = 5\n");
        let r = check(&s).unwrap_err();
        assert_eq!(r.key, "fault[0].kind");
        assert!(r.why.contains("slow-node"), "{r}");
        let s = scenario("[sim]\nmembership = \"perfect-failure-detector\"\n");
        assert_eq!(check(&s).unwrap_err().key, "sim.membership");
        let s = scenario("[sim.images.\"canteen-demo:latest\"]\nhealthy = false\n");
        assert_eq!(check(&s).unwrap_err().key, "sim.images");
        let s = scenario("[expect]\nrollbacks_min = 1\n");
        assert_eq!(check(&s).unwrap_err().key, "expect.rollbacks_min");
        let long = scenario("").clone();
        let mut long = long;
        long.duration_s = 601.0;
        assert_eq!(check(&long).unwrap_err().key, "duration_s");
    }

    #[test]
    fn more_than_ten_nodes_are_refused() {
        let text = "name = \"t\"\nduration_s = 60\n[cluster]\nnodes = 11\ncpu_millis = 1000\nmem_mb = 1024\n";
        let s = canteen_sim::scenario::parse("t.toml", text).expect("valid");
        let r = check(&s).unwrap_err();
        assert_eq!(r.key, "cluster.nodes");
        assert!(r.why.contains("11"), "{r}");
    }
}
