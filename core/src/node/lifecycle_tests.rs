//! A slot's lifecycle and the cluster-wide decisions around it, on the harness of
//! `testing.rs`: claim, start, healthy, crash, back-off, give up, forget; a duplicate; remove
//! and scale; the autoscale coordinator.

use crate::health::HealthState;
use crate::model::{Autoscale, ScaleRule, SlotId};
use crate::schedule::ContainerState;

use super::Found;
use super::testing::{Cluster, quick_app};
use super::*;

fn slot(app: &str, index: u32) -> SlotId {
    SlotId::new(app, index)
}

/// Runs until every slot of `app` (`replicas` of them) has one container and every node's
/// balancer lists all of them; at most 10 s.
fn settle(cluster: &mut Cluster, app: &str, replicas: u32) {
    let n = cluster.nodes.len();
    let settled = cluster.run_until_true(10_000, |c| {
        (0..replicas).all(|i| c.running(&slot(app, i)).len() == 1)
            && (0..n).all(|node| c.backends(node, app).is_some_and(|b| b.len() == replicas as usize))
    });
    assert!(settled, "{app} settled: {:?}", cluster.containers);
}

#[test]
fn a_placed_slot_is_claimed_then_started_then_healthy_and_in_every_balancer() {
    let mut cluster = Cluster::new(3);
    cluster.apply(0, quick_app("web", 3, 8080));
    settle(&mut cluster, "web", 3);
    // Each start came only after the claim settled (the pass runs 20 ms after the apply).
    let claim_ms = cluster.nodes[0].config().claim_settle_ms;
    let first_start = cluster.log.iter().find(|l| matches!(l.action, Action::StartContainer { .. })).expect("started");
    assert!(first_start.at >= claim_ms, "started at {} ms, before its claim settled", first_start.at);
    // Spread: one replica per node, each healthy where it runs.
    for i in 0..3 {
        let running = cluster.running(&slot("web", i));
        let (_, c) = running[0];
        let local = cluster.nodes[c.node].local_slots();
        assert!(local.contains(&(slot("web", i), c.host_port, ContainerState::Healthy)), "{local:?}");
    }
    let nodes: BTreeSet<usize> = (0..3).map(|i| cluster.running(&slot("web", i))[0].1.node).collect();
    assert_eq!(nodes.len(), 3, "spread over the three nodes");
}

#[test]
fn an_unhealthy_replica_leaves_the_balancers_and_restarts_on_its_port_after_its_back_off() {
    let mut cluster = Cluster::new(3);
    cluster.apply(0, quick_app("web", 3, 8080));
    settle(&mut cluster, "web", 3);
    let (id, c) = cluster.running(&slot("web", 1))[0];
    let (id, node, host_port) = (id.to_owned(), c.node, c.host_port);
    cluster.containers.get_mut(&id).expect("running").healthy = false;
    let failed_from = cluster.now;
    // Out of its own balancer at the first failed probe, and of every peer's soon after.
    let out = cluster.run_until_true(1_000, |c| (0..3).all(|n| c.backends(n, "web").is_some_and(|b| b.len() == 2)));
    assert!(out, "web-1 left every balancer");
    let events = cluster.events(node, failed_from);
    assert!(events.iter().any(|e| matches!(e, Event::Health { state: HealthState::Unhealthy, .. })), "{events:?}");
    let restart_at = events
        .iter()
        .find_map(|e| match e {
            Event::Restarting { at, .. } => Some(at.as_millis()),
            _ => None,
        })
        .expect("a restart is planned");
    assert!(cluster.containers[&id].removed, "the unhealthy container is stopped");
    // Started again after the back-off (1 s at first), on the same node and host port.
    cluster.run_until_true(3_000, |c| c.running(&slot("web", 1)).len() == 1);
    let (new_id, again) = cluster.running(&slot("web", 1))[0];
    assert_ne!(new_id, id, "a fresh container");
    assert_eq!((again.node, again.host_port), (node, host_port), "same node, same host port");
    let restarted = cluster.log.iter().find(|l| {
        l.node == node
            && l.at > failed_from
            && matches!(&l.action, Action::StartContainer { slot, .. } if *slot == SlotId::new("web", 1))
    });
    assert!(restarted.is_some_and(|l| l.at >= restart_at), "not before its back-off: {restarted:?}");
    settle(&mut cluster, "web", 3);
}

#[test]
fn a_slot_failing_past_its_budget_is_given_up_placed_elsewhere_and_forgotten_after_its_cooldown() {
    let mut cluster = Cluster::new(2);
    let mut spec = quick_app("web", 1, 8080);
    spec.restart.budget = 1;
    spec.restart.initial_ms = 100;
    cluster.apply(0, spec);
    settle(&mut cluster, "web", 1);
    let (id, c) = cluster.running(&slot("web", 0))[0];
    let (id, first_node) = (id.to_owned(), c.node);
    // The replica fails, and so does its restart: past its budget of one restart.
    cluster.born_healthy = false;
    cluster.containers.get_mut(&id).expect("running").healthy = false;
    let gave_up =
        cluster.run_until_true(5_000, |c| c.events(first_node, 0).iter().any(|e| matches!(e, Event::GaveUp { .. })));
    assert!(gave_up, "given up here");
    cluster.born_healthy = true;
    // Placed on the other node, which runs it healthy; the failed node keeps a record only.
    let moved = cluster.run_until_true(5_000, |c| c.running(&slot("web", 0)).iter().any(|(_, r)| r.node != first_node));
    assert!(moved, "placed elsewhere: {:?}", cluster.containers);
    let local = cluster.nodes[first_node].local_slots();
    assert!(matches!(local.as_slice(), [(s, _, ContainerState::Failed)] if *s == slot("web", 0)), "{local:?}");
    // Forgotten after the cooldown.
    let cooldown_ms = cluster.nodes[first_node].config().failed_cooldown_ms;
    cluster.run_until(cluster.now + cooldown_ms + 1);
    assert!(cluster.nodes[first_node].local_slots().is_empty(), "the failure is forgotten");
    assert_eq!(cluster.running(&slot("web", 0)).len(), 1, "and the slot still runs once");
}

#[test]
fn a_start_answered_after_its_app_was_removed_is_undone() {
    let mut cluster = Cluster::new(1);
    cluster.start_ms = 2_000;
    cluster.apply(0, quick_app("web", 1, 8080));
    let asked = cluster.run_until_true(2_000, |c| c.containers.len() == 1);
    assert!(asked, "the start was asked for");
    cluster.command(0, Command::Remove(AppName::new("web")));
    let answer_at = cluster.now + cluster.start_ms;
    cluster.run_until(answer_at + 10);
    let id = cluster.containers.keys().next().expect("one container").clone();
    let undone =
        cluster.log.iter().any(|l| matches!(&l.action, Action::StopContainer { container, .. } if *container == id));
    assert!(undone, "the late container is stopped: {:?}", cluster.log);
    assert!(cluster.nodes[0].local_slots().is_empty());
}

#[test]
fn adopting_two_containers_of_one_slot_keeps_the_first_and_stops_the_other() {
    let mut cluster = Cluster::new(1);
    let web0 = slot("web", 0);
    let event = ContainerEvent::Adopted {
        containers: vec![
            Found { slot: web0.clone(), container: "first".into(), host_port: 8000, version: 0, gpus: Vec::new() },
            Found { slot: web0.clone(), container: "second".into(), host_port: 8001, version: 0, gpus: Vec::new() },
        ],
    };
    cluster.nodes[0].handle_container_event(Time::from_millis(1), event);
    let actions: Vec<Action> = std::iter::from_fn(|| cluster.nodes[0].poll_action()).collect();
    let stopped: Vec<&str> = actions
        .iter()
        .filter_map(|a| match a {
            Action::StopContainer { container, .. } => Some(container.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(stopped, ["second"]);
    assert_eq!(cluster.nodes[0].local_slots(), [(web0, 8000, ContainerState::Starting)], "probed from now on");
}

#[test]
fn scaling_down_stops_the_surplus_and_removing_stops_all_and_closes_the_balancer() {
    let mut cluster = Cluster::new(2);
    cluster.apply(1, quick_app("web", 4, 8080));
    settle(&mut cluster, "web", 4);
    cluster.command(0, Command::Scale(AppName::new("web"), 2));
    settle(&mut cluster, "web", 2);
    for i in 2..4 {
        assert!(cluster.running(&slot("web", i)).is_empty(), "web-{i} is stopped");
    }
    cluster.command(1, Command::Remove(AppName::new("web")));
    let gone = cluster.run_until_true(3_000, |c| {
        c.containers.values().all(|c| c.removed) && (0..2).all(|n| c.backends(n, "web") == Some(Vec::new()))
    });
    assert!(gone, "every replica stopped and every balancer closed");
    assert!(cluster.nodes.iter().all(|n| n.local_slots().is_empty()));
}

#[test]
fn two_nodes_that_each_started_a_slot_while_apart_keep_one_container_once_together() {
    let mut cluster = Cluster::new(2);
    cluster.set_cut(0, 1, true);
    cluster.apply(0, quick_app("web", 1, 8080));
    cluster.apply(1, quick_app("web", 1, 8080));
    let both = cluster.run_until_true(3_000, |c| c.running(&slot("web", 0)).len() == 2);
    assert!(both, "each side runs web-0");
    cluster.set_cut(0, 1, false);
    let once = cluster.run_until_true(5_000, |c| c.running(&slot("web", 0)).len() == 1);
    assert!(once, "the duplicate is stopped once the views agree: {:?}", cluster.containers);
    cluster.run_until(cluster.now + 2_000);
    assert_eq!(cluster.running(&slot("web", 0)).len(), 1, "and stays stopped");
    assert_eq!(cluster.nodes[0].registry().root_hash(), cluster.nodes[1].registry().root_hash());
}

#[test]
fn the_coordinator_scales_an_autoscaled_app_with_the_load_every_node_reports() {
    let mut cluster = Cluster::new(3);
    let mut spec = quick_app("web", 1, 8080);
    let rule = ScaleRule::TargetRps {
        target_rps_per_replica: 10,
        tolerance_percent: 10,
        window_ms: 2_000,
        scale_down_stabilization_ms: 60_000,
    };
    spec.autoscale = Some(Autoscale { min: 1, max: 4, rule });
    cluster.apply(0, spec);
    settle(&mut cluster, "web", 1);
    let coordinator = cluster.nodes[0].coordinator_of(&AppName::new("web"));
    assert!(cluster.nodes.iter().all(|n| n.coordinator_of(&AppName::new("web")) == coordinator), "one coordinator");
    let c = cluster.nodes.iter().position(|n| *n.id() == coordinator).expect("a node");
    // 30 requests a second enter every node's balancer: 90 in all, 9 replicas' worth, at
    // most 4.
    let from = cluster.now;
    for _ in 0..10 {
        for n in 0..3 {
            cluster.traffic(n, "web", 30);
        }
        cluster.run_until(cluster.now + 1_000);
    }
    let scaled =
        cluster.events(c, from).iter().any(|e| matches!(e, Event::Scaled { decision, .. } if decision.to == 4));
    assert!(scaled, "the coordinator scaled web to its max: {:?}", cluster.events(c, from));
    for n in (0..3).filter(|&n| n != c) {
        assert!(
            !cluster.events(n, from).iter().any(|e| matches!(e, Event::Scaled { .. })),
            "only the coordinator scales"
        );
    }
    settle(&mut cluster, "web", 4);
}

#[test]
fn a_container_that_exits_is_started_again_on_its_node_and_port() {
    let mut cluster = Cluster::new(2);
    cluster.apply(0, quick_app("web", 2, 8080));
    settle(&mut cluster, "web", 2);
    let (id, c) = cluster.running(&slot("web", 0))[0];
    let (id, node, host_port) = (id.to_owned(), c.node, c.host_port);
    let exited_at = cluster.now;
    cluster.exit(&id);
    let events = cluster.events(node, exited_at);
    assert!(events.iter().any(|e| matches!(e, Event::Restarting { .. })), "{events:?}");
    settle(&mut cluster, "web", 2);
    let (new_id, again) = cluster.running(&slot("web", 0))[0];
    assert_ne!(new_id, id);
    assert_eq!((again.node, again.host_port), (node, host_port));
}

#[test]
fn containers_found_with_no_desired_state_are_kept_until_the_operator_speaks() {
    let mut cluster = Cluster::new(1);
    cluster.adopt(0, vec![(slot("lost", 0), "c-lost".to_owned(), 8000)]);
    let stopped = |c: &Cluster| {
        c.log.iter().any(|l| matches!(&l.action, Action::StopContainer { container, .. } if container == "c-lost"))
    };
    cluster.run_until(5000);
    assert!(cluster.events(0, 0).iter().any(|e| matches!(e, Event::KeptUnconfirmed { containers: 1 })));
    assert!(!stopped(&cluster), "kept while the desired state is unconfirmed");
    // A command that fails confirms nothing.
    let unknown = cluster.nodes[0].handle_command(Time::from_millis(5000), Command::Remove(AppName::new("nosuch")));
    assert!(unknown.is_err());
    cluster.run_until(6000);
    assert!(!stopped(&cluster), "a failed command confirms nothing");
    cluster.apply(0, quick_app("web", 1, 8080));
    cluster.run_until(8000);
    assert!(stopped(&cluster), "the operator's command confirms it: an app it does not name goes");
}

#[test]
fn gpu_replicas_start_on_the_gpus_placed_and_move_to_free_gpus_when_their_node_is_cut_off() {
    // n0 and n1 have two A100s each, n2 two T4s; the app allows A100 only.
    let mut cluster = Cluster::with(3, |i, config| {
        config.gpus = 2;
        config.gpu_model = if i == 2 { "T4" } else { "A100" }.into();
    });
    let mut infer = quick_app("infer", 3, 8080);
    infer.gpu = crate::model::GpuRequest { gpus: 0, gpu_milli: 600, gpu_models: vec!["A100".into()] };
    cluster.apply(0, infer);
    settle(&mut cluster, "infer", 3);
    // Each start asked for the GPU placement gave: 600 thousandths of one A100, none shared
    // past its whole.
    let mut held: BTreeMap<(usize, u32), u32> = BTreeMap::new();
    for i in 0..3 {
        let (_, c) = cluster.running(&slot("infer", i))[0];
        assert!(c.node < 2, "infer/{i} on the T4 node");
        let start = cluster
            .log
            .iter()
            .rev()
            .find_map(|l| match &l.action {
                Action::StartContainer { slot: s, gpus, .. } if *s == slot("infer", i) && l.node == c.node => {
                    Some(gpus)
                }
                _ => None,
            })
            .expect("started");
        assert_eq!(start.len(), 1);
        assert_eq!(start[0].milli, 600);
        *held.entry((c.node, start[0].index)).or_default() += 600;
        let status = cluster.nodes[c.node].local_statuses();
        assert!(status.iter().any(|s| s.slot == slot("infer", i) && s.gpus == *start), "{status:?}");
    }
    assert!(held.values().all(|&m| m <= 1000), "{held:?}");
    // The node with two replicas is cut off: its replicas go to the other A100 node's free
    // GPU, never to the T4s. One fits there (a GPU holds one share of 600): the other waits.
    let crowded = if cluster.running(&slot("infer", 0))[0].1.node == 0 { 0 } else { 1 };
    let other = 1 - crowded;
    for n in [other, 2] {
        cluster.set_cut(crowded, n, true);
    }
    let moved = cluster.run_until_true(10_000, |c| {
        (0..3).filter(|&i| c.running(&slot("infer", i)).iter().any(|(_, x)| x.node == other)).count() == 2
    });
    assert!(moved, "{:?}", cluster.containers);
    assert!(
        cluster.running(&slot("infer", 0)).iter().chain(&cluster.running(&slot("infer", 1))).all(|(_, c)| c.node != 2)
    );
}

#[test]
fn an_app_allowing_only_a_gpu_model_no_live_node_has_waits_with_the_reason() {
    // An agent cannot know every node's model when an app is applied (a node's status may not
    // have come yet, or its node may join later): the app is taken, and placement says why its
    // slots wait. A cluster file, which lists its nodes, refuses the model (`cluster_file`).
    let mut cluster = Cluster::with(2, |_, config| {
        config.gpus = 1;
        config.gpu_model = "A100".into();
    });
    let mut app = quick_app("train", 1, 8080);
    app.gpu = crate::model::GpuRequest { gpus: 1, gpu_milli: 0, gpu_models: vec!["H100".into()] };
    cluster.apply(0, app);
    let waits = cluster.run_until_true(5_000, |c| !c.nodes[0].unschedulable().is_empty());
    assert!(waits, "a pass ran");
    let (slot, reason) = &cluster.nodes[0].unschedulable()[0];
    assert_eq!(*slot, super::SlotId::new("train", 0));
    assert_eq!(reason.to_string(), "no live node it may run on has GPUs of model H100");
}
