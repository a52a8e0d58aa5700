//! Rolling updates through the node, on the test harness: start-first replacement one slot at
//! a time with no slot ever without a healthy replica, a version that fails rolled back (by
//! its deadline, or at once when its image is missing), canaries held until promoted, a
//! restart and an undo, and a node lost in the middle of a rollout.

use crate::model::{AppName, SlotId};
use crate::registry::Key;
use crate::rollout::Outcome;

use super::testing::{Cluster, quick_app};
use super::{Command, Event, Value};

const APP: &str = "web";

/// A cluster of `nodes` running `replicas` of web at image `v1`, whose rollout completed.
fn settled(nodes: usize, replicas: u32) -> Cluster {
    let mut cluster = Cluster::new(nodes);
    let mut spec = quick_app(APP, replicas, 9000);
    spec.image = "web:v1".into();
    spec.update.min_healthy_ms = 300;
    spec.update.healthy_deadline_ms = 3000;
    cluster.apply(0, spec);
    let done = cluster.run_until_true(20_000, |c| outcome(c, 1) == Some(Outcome::Completed));
    assert!(done, "version 1 completes");
    cluster
}

/// The verdict node 0 holds on web's `version`.
fn outcome(cluster: &Cluster, version: u64) -> Option<Outcome> {
    match cluster.nodes[0].registry.get(&Key::Rollout(AppName::new(APP))) {
        Some(Value::Rollout(record)) => record.outcome(version).cloned(),
        _ => None,
    }
}

/// web's spec as node `at` holds it.
fn applied(cluster: &Cluster, at: usize) -> crate::model::AppSpec {
    match cluster.nodes[at].registry.get(&Key::App(AppName::new(APP))) {
        Some(Value::App(spec)) => (**spec).clone(),
        _ => panic!("web is applied"),
    }
}

/// web's spec as node `at` holds it, with `image`, applied through node `at`.
fn update(cluster: &mut Cluster, at: usize, image: &str) {
    let mut spec = applied(cluster, at);
    spec.image = image.into();
    cluster.apply(at, spec);
}

/// The images of web's running containers, by slot index.
fn images(cluster: &Cluster) -> Vec<(u32, String)> {
    let mut out: Vec<(u32, String)> = cluster
        .containers
        .values()
        .filter(|c| !c.removed && c.slot.app.as_str() == APP)
        .map(|c| (c.slot.index, c.image.clone()))
        .collect();
    out.sort();
    out
}

/// Runs until `until`, checking every millisecond that every slot of web keeps a container
/// that passes its probes, and that at most `replicas + surge` containers of web run.
fn run_checked(cluster: &mut Cluster, until: u64, replicas: u32, surge: usize) {
    while cluster.now < until {
        cluster.run_until(cluster.now + 1);
        let running: Vec<_> =
            cluster.containers.values().filter(|c| !c.removed && c.slot.app.as_str() == APP).collect();
        assert!(running.len() <= replicas as usize + surge, "at {} ms: {} containers run", cluster.now, running.len());
        for index in 0..replicas {
            let serving = running.iter().any(|c| c.slot.index == index && c.healthy);
            assert!(serving, "at {} ms slot {index} has no healthy replica", cluster.now);
        }
    }
}

#[test]
fn a_new_image_replaces_every_slot_start_first_one_at_a_time() {
    let mut cluster = settled(3, 4);
    let from = cluster.now;
    update(&mut cluster, 1, "web:v2");
    run_checked(&mut cluster, from + 15_000, 4, 1);
    assert_eq!(outcome(&cluster, 2), Some(Outcome::Completed), "version 2 completes");
    assert_eq!(images(&cluster), (0..4).map(|i| (i, "web:v2".to_owned())).collect::<Vec<_>>());
    let started =
        (0..3).flat_map(|i| cluster.events(i, from)).any(|e| matches!(e, Event::RolloutStarted { to: 2, .. }));
    assert!(started, "the apply reports a rollout");
    // Each slot's new replica went beside the old one, on the same node: both fit there.
    for index in 0..4 {
        let slot = SlotId::new(APP, index);
        let nodes: Vec<usize> = cluster.containers.values().filter(|c| c.slot == slot).map(|c| c.node).collect();
        assert!(nodes.windows(2).all(|w| w[0] == w[1]), "slot {index} stayed on its node: {nodes:?}");
    }
}

#[test]
fn a_change_of_replicas_or_priority_restarts_nothing() {
    let mut cluster = settled(3, 2);
    let before = cluster.containers.len();
    let mut spec = applied(&cluster, 0);
    spec.replicas = 3;
    spec.priority = 5;
    cluster.apply(0, spec);
    cluster.run_until(cluster.now + 5000);
    assert_eq!(cluster.containers.len(), before + 1, "one more replica, none replaced");
    assert_eq!(outcome(&cluster, 1), Some(Outcome::Completed), "still version 1");
}

#[test]
fn a_version_that_never_turns_healthy_is_rolled_back_with_no_slot_unserved() {
    let mut cluster = settled(3, 3);
    cluster.bad_images.push("web:broken".into());
    let from = cluster.now;
    update(&mut cluster, 2, "web:broken");
    run_checked(&mut cluster, from + 10_000, 3, 1);
    assert!(matches!(outcome(&cluster, 2), Some(Outcome::Failed { .. })), "version 2 failed");
    assert_eq!(images(&cluster), (0..3).map(|i| (i, "web:v1".to_owned())).collect::<Vec<_>>(), "back on v1");
    let broken = cluster.containers.values().filter(|c| c.image == "web:broken").count();
    assert_eq!(broken, 1, "one slot was tried, with max_surge = 1");
    let reverted = (0..3)
        .flat_map(|i| cluster.events(i, from))
        .any(|e| matches!(e, Event::RolloutEnded { version: 2, reverted_to: Some(1), .. }));
    assert!(reverted, "the coordinator reports the revert");
}

#[test]
fn a_missing_image_fails_its_rollout_at_once() {
    let mut cluster = settled(2, 2);
    cluster.missing_images.push("web:nope".into());
    let from = cluster.now;
    update(&mut cluster, 0, "web:nope");
    let failed = cluster.run_until_true(2500, |c| matches!(outcome(c, 2), Some(Outcome::Failed { .. })));
    assert!(failed, "failed well before its 3 s deadline, at {} ms", cluster.now - from);
    cluster.run_until(cluster.now + 2000);
    assert_eq!(images(&cluster), vec![(0, "web:v1".to_owned()), (1, "web:v1".to_owned())]);
}

#[test]
fn without_auto_revert_a_failed_rollout_stops_where_it_is() {
    let mut cluster = settled(3, 3);
    cluster.bad_images.push("web:broken".into());
    let mut spec = applied(&cluster, 0);
    spec.image = "web:broken".into();
    spec.update.auto_revert = false;
    cluster.apply(0, spec);
    cluster.run_until(cluster.now + 10_000);
    assert!(matches!(outcome(&cluster, 2), Some(Outcome::Failed { .. })));
    assert_eq!(images(&cluster), (0..3).map(|i| (i, "web:v1".to_owned())).collect::<Vec<_>>(), "the old ones stay");
    assert_eq!(cluster.containers.values().filter(|c| c.image == "web:broken").count(), 1, "no more tried");
}

#[test]
fn canaries_run_beside_the_old_replicas_until_promoted() {
    let mut cluster = settled(3, 4);
    let mut spec = applied(&cluster, 0);
    spec.image = "web:v2".into();
    spec.update.canary = 2;
    cluster.apply(0, spec);
    cluster.run_until(cluster.now + 8000);
    let running = images(&cluster);
    assert_eq!(running.iter().filter(|(_, i)| i == "web:v2").count(), 2, "two canaries: {running:?}");
    assert_eq!(running.iter().filter(|(_, i)| i == "web:v1").count(), 4, "every old replica stays: {running:?}");
    assert_eq!(outcome(&cluster, 2), None, "the rollout waits");
    cluster.command(1, Command::Promote(AppName::new(APP)));
    cluster.run_until(cluster.now + 15_000);
    assert_eq!(images(&cluster), (0..4).map(|i| (i, "web:v2".to_owned())).collect::<Vec<_>>());
    assert_eq!(outcome(&cluster, 2), Some(Outcome::Completed));
}

#[test]
fn a_restart_replaces_every_container_and_an_undo_goes_back() {
    let mut cluster = settled(2, 2);
    let first: Vec<String> = cluster.running(&SlotId::new(APP, 0)).iter().map(|(id, _)| id.to_string()).collect();
    cluster.command(0, Command::Restart(AppName::new(APP)));
    cluster.run_until(cluster.now + 10_000);
    assert_eq!(outcome(&cluster, 2), Some(Outcome::Completed));
    let now: Vec<String> = cluster.running(&SlotId::new(APP, 0)).iter().map(|(id, _)| id.to_string()).collect();
    assert!(now.iter().all(|id| !first.contains(id)), "fresh containers: {first:?} then {now:?}");
    update(&mut cluster, 0, "web:v3");
    cluster.run_until(cluster.now + 10_000);
    assert_eq!(outcome(&cluster, 3), Some(Outcome::Completed));
    cluster.command(1, Command::Undo(AppName::new(APP), None));
    cluster.run_until(cluster.now + 10_000);
    assert_eq!(outcome(&cluster, 4), Some(Outcome::Completed));
    assert_eq!(images(&cluster), vec![(0, "web:v1".to_owned()), (1, "web:v1".to_owned())]);
    let spec = applied(&cluster, 0);
    assert_eq!((spec.version, spec.redeploys, spec.history.len()), (4, 1, 3));
    // An undo to what already runs, or to a version not kept, is refused.
    let refused = cluster.nodes[0]
        .handle_command(crate::time::Time::from_millis(cluster.now), Command::Undo(APP.into(), Some(2)));
    assert!(refused.is_err(), "version 2's spec runs already");
    let refused = cluster.nodes[0]
        .handle_command(crate::time::Time::from_millis(cluster.now), Command::Undo(APP.into(), Some(99)));
    assert!(refused.unwrap_err().to_string().contains("not kept"));
}

#[test]
fn a_node_cut_off_in_the_middle_of_a_rollout_ends_with_every_slot_once_on_the_new_version() {
    let mut cluster = settled(3, 6);
    update(&mut cluster, 0, "web:v2");
    cluster.run_until(cluster.now + 700);
    // Node 2 is believed down: its slots are placed again, at the new version.
    cluster.set_cut(0, 2, true);
    cluster.set_cut(1, 2, true);
    cluster.run_until(cluster.now + 8000);
    cluster.set_cut(0, 2, false);
    cluster.set_cut(1, 2, false);
    cluster.run_until(cluster.now + 20_000);
    assert_eq!(images(&cluster), (0..6).map(|i| (i, "web:v2".to_owned())).collect::<Vec<_>>());
    assert_eq!(outcome(&cluster, 2), Some(Outcome::Completed));
}

#[test]
fn an_update_applied_in_a_minority_partition_rolls_out_everywhere_after_the_heal() {
    let mut cluster = settled(5, 8);
    for a in 0..3 {
        for b in 3..5 {
            cluster.set_cut(a, b, true);
        }
    }
    cluster.run_until(cluster.now + 3000);
    update(&mut cluster, 4, "web:v2");
    cluster.run_until(cluster.now + 27_000);
    for a in 0..3 {
        for b in 3..5 {
            cluster.set_cut(a, b, false);
        }
    }
    cluster.run_until(cluster.now + 60_000);
    assert_eq!(images(&cluster), (0..8).map(|i| (i, "web:v2".to_owned())).collect::<Vec<_>>());
    assert_eq!(outcome(&cluster, 2), Some(Outcome::Completed));
}

#[test]
fn a_new_replica_goes_to_another_node_when_its_old_ones_is_full() {
    for (nodes, replicas, cpu) in [(2, 1, 3000), (3, 5, 2000)] {
        a_new_replica_goes_elsewhere(nodes, replicas, cpu);
    }
}

/// `replicas` of `cpu` millicores each on `nodes` nodes of 4000, updated: some slot's new
/// replica fits only on another node than its old one's, which hears it is ready from its
/// status alone.
fn a_new_replica_goes_elsewhere(nodes: usize, replicas: u32, cpu: u64) {
    let mut cluster = Cluster::new(nodes);
    let mut spec = quick_app(APP, replicas, 9000);
    spec.image = "web:v1".into();
    spec.resources = crate::model::Resources::new(cpu, 64);
    // Longer than a status change is held back: the ready flag goes out on its own.
    spec.update.min_healthy_ms = 2000;
    spec.update.healthy_deadline_ms = 3000;
    cluster.apply(0, spec);
    assert!(cluster.run_until_true(20_000, |c| outcome(c, 1) == Some(Outcome::Completed)));
    let from = cluster.now;
    update(&mut cluster, nodes - 1, "web:v2");
    run_checked(&mut cluster, from + 30_000, replicas, 1);
    assert_eq!(outcome(&cluster, 2), Some(Outcome::Completed));
    assert_eq!(images(&cluster), (0..replicas).map(|i| (i, "web:v2".to_owned())).collect::<Vec<_>>());
    let moved = (0..replicas).filter(|&i| {
        let nodes: Vec<usize> =
            cluster.containers.values().filter(|c| c.slot == SlotId::new(APP, i)).map(|c| c.node).collect();
        nodes.windows(2).any(|w| w[0] != w[1])
    });
    assert!(moved.count() > 0, "a full node's slot was replaced on another node");
}

#[test]
fn zero_replicas_stop_every_container_and_keep_the_app() {
    let mut cluster = settled(2, 3);
    cluster.command(0, Command::Scale(AppName::new(APP), 0));
    cluster.run_until(cluster.now + 5000);
    assert!(images(&cluster).is_empty(), "no container runs");
    assert_eq!(cluster.nodes[1].apps().len(), 1, "the app is kept");
    cluster.command(1, Command::Scale(AppName::new(APP), 2));
    cluster.run_until(cluster.now + 5000);
    assert_eq!(images(&cluster), vec![(0, "web:v1".to_owned()), (1, "web:v1".to_owned())], "the same version again");
}
