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
