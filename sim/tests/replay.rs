//! A scenario replays bit for bit: the same file and seed give the same report. Runs only in
//! the simulator build (`--cfg madsim`); scripts/test runs it there.
#![cfg(madsim)]

use canteen_sim::harness;
use canteen_sim::scenario;

fn load(name: &str) -> scenario::Scenario {
    let path = format!("{}/../scenarios/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("scenario file");
    scenario::parse(&path, &text).expect("valid scenario")
}

#[test]
fn the_same_file_and_seed_give_a_byte_identical_report() {
    let s = load("node-crash-under-load.toml");
    let (first, first_plot) = harness::run(&s, 7);
    let (second, second_plot) = harness::run(&s, 7);
    assert_eq!(first.to_table(), second.to_table());
    assert_eq!(first_plot.to_svg(), second_plot.to_svg());
    let json = |mut r: canteen_sim::report::Report| {
        r.wall_ms = 0;
        serde_json::to_string(&r).expect("encodes")
    };
    assert_eq!(json(first), json(second));
}

#[test]
fn another_seed_gives_another_run() {
    let s = load("node-crash-under-load.toml");
    let (a, _) = harness::run(&s, 1);
    let (b, _) = harness::run(&s, 2);
    assert_ne!(a.to_table(), b.to_table());
}

#[test]
fn a_failed_expectation_names_the_check_and_the_replay_command() {
    let mut s = load("container-crash.toml");
    s.expect.recovery_s_max = Some(0.01);
    let (report, _) = harness::run(&s, 3);
    assert!(!report.passed);
    let failed: Vec<_> = report.checks.iter().filter(|c| !c.passed).collect();
    assert_eq!(failed[0].name, "recovery");
    assert!(failed[0].detail.contains("at 60.0s"), "{}", failed[0].detail);
    assert!(report.replay.ends_with("container-crash.toml --seed 3"), "{}", report.replay);
}

#[test]
fn a_restarted_agent_adopts_its_running_containers_under_a_higher_generation() {
    let s = load("agent-restart.toml");
    let (report, _) = harness::run(&s, 2);
    let restarts: Vec<_> = report.checks.iter().filter(|c| c.name == "agent restart").collect();
    assert_eq!(restarts.len(), 2, "{:?}", report.checks);
    assert!(restarts.iter().all(|c| c.passed), "{restarts:?}");
    assert!(restarts[0].detail.contains("generation 1 -> 2"), "{}", restarts[0].detail);
    assert!(report.passed, "{}", report.to_table());
}

#[test]
fn an_agent_that_does_not_adopt_leaves_orphans_and_the_checks_say_so() {
    let mut s = load("agent-restart.toml");
    s.sim.adopt = false;
    let (report, _) = harness::run(&s, 2);
    let failed: Vec<&str> = report.checks.iter().filter(|c| !c.passed).map(|c| c.name.as_str()).collect();
    assert!(failed.contains(&"no orphans"), "{failed:?}");
    assert!(failed.contains(&"agent restart"), "{failed:?}");
    assert!(report.orphan_s_longest > 1.0, "{}", report.orphan_s_longest);
}

#[test]
fn convergence_after_a_heal_is_timed_and_an_impossible_bound_fails() {
    let mut s = load("minority-partition.toml");
    let (report, _) = harness::run(&s, 1);
    let converge_s = report.converge_s.expect("the minority partition converges");
    assert!(converge_s > 0.0 && converge_s <= 10.0, "{converge_s}");
    s.expect.converge_s_max = Some(0.0);
    let (report, _) = harness::run(&s, 1);
    let check = report.checks.iter().find(|c| c.name == "converge time").expect("checked");
    assert!(!check.passed, "{}", check.detail);
}

#[test]
fn a_live_node_dropped_by_its_peers_under_packet_loss_is_counted_as_wrongly_declared_down() {
    // 50% loss for ten minutes among 20 nodes: SWIM declares live nodes down, and every peer
    // that drops one counts until it rejoins. Without faults, nobody is. (At 30% and 40% it
    // declares none at this seed since refuted suspicions stopped renewing identities.)
    let mut s = load("packet-loss.toml");
    for f in &mut s.faults {
        if let scenario::FaultKind::PacketLoss { ratio } = &mut f.kind {
            *ratio = 0.5;
        }
    }
    s.expect.false_down_max = Some(0);
    let (report, _) = harness::run(&s, 1);
    assert!(report.false_down_events > 0 && report.false_down_node_s > 0.0, "{}", report.to_table());
    let check = report.checks.iter().find(|c| c.name == "wrongly declared down").expect("checked");
    assert!(!check.passed && check.detail.contains("dropped"), "{}", check.detail);
    let (quiet, _) = harness::run(&load("steady-state.toml"), 1);
    assert_eq!(quiet.false_down_events, 0, "{}", quiet.to_table());
}
