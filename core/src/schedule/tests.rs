//! Unit tests of the placement pass.

use super::*;
use crate::model::GpuRequest;

fn node(name: &str, cpu: u64, mem_mb: u64) -> NodeSpec {
    NodeSpec::new(name, Resources::new(cpu, mem_mb))
}

fn app(name: &str, replicas: u32, cpu: u64) -> AppSpec {
    let mut a = AppSpec::new(name, "img", replicas, Resources::new(cpu, 100));
    a.port = 1000 + name.len() as u16 + cpu as u16;
    a
}

fn where_is(plan: &Plan) -> Vec<(String, String)> {
    plan.placements().map(|(s, n)| (s.to_string(), n.to_string())).collect()
}

fn running(node: &str, slot: SlotId, container: &str, state: ContainerState) -> (NodeId, ObservedContainer) {
    (
        NodeId::new(node),
        ObservedContainer { slot, container: container.into(), state, version: 0, ready: true, gpus: Vec::new() },
    )
}

fn observed(rows: Vec<(NodeId, ObservedContainer)>) -> Observed {
    let mut o = Observed::new();
    for (n, c) in rows {
        o.entry(n).or_default().push(c);
    }
    o
}

fn three_nodes() -> Vec<NodeSpec> {
    vec![node("a", 1000, 1000), node("b", 1000, 1000), node("c", 1000, 1000)]
}

#[test]
fn spread_evens_the_load_and_binpack_fills_one_node_first() {
    let apps = [app("web", 3, 300)];
    let spread = place(&apps, &three_nodes(), &Observed::new(), Policy::Spread);
    assert_eq!(spread.usage().map(|(_, u)| u.cpu_millis).collect::<Vec<_>>(), [300, 300, 300]);
    let packed = place(&apps, &three_nodes(), &Observed::new(), Policy::BinPack);
    assert_eq!(packed.usage().map(|(_, u)| u.cpu_millis).collect::<Vec<_>>(), [900, 0, 0]);
}

#[test]
fn round_robin_deals_replicas_in_name_order_with_one_cursor_over_the_pass() {
    let apps = [app("x", 2, 100), app("y", 2, 100)];
    let plan = place(&apps, &three_nodes(), &Observed::new(), Policy::RoundRobin);
    let got = where_is(&plan);
    assert_eq!(got, [("x/0", "a"), ("x/1", "b"), ("y/0", "c"), ("y/1", "a")].map(|(s, n)| (s.into(), n.into())));
}

#[test]
fn higher_priority_is_placed_first_when_capacity_is_short() {
    let mut important = app("important", 2, 1000);
    important.priority = 5;
    let apps = [app("batch", 2, 1000), important];
    for (_, policy) in Policy::ALL {
        let plan = place(&apps, &[node("a", 1000, 1000), node("b", 1000, 1000)], &Observed::new(), policy);
        assert!(plan.placements().all(|(s, _)| s.app.as_str() == "important"), "{policy}");
        assert_eq!(plan.unschedulable().len(), 2);
        assert!(plan.unschedulable().iter().all(|u| u.slot.app.as_str() == "batch"));
    }
}

#[test]
fn a_higher_priority_slot_preempts_running_lower_priority_ones_on_one_node() {
    let mut checkout = app("checkout", 2, 600);
    checkout.priority = 10;
    let apps = [app("batch", 3, 500), checkout];
    let nodes = [node("a", 1000, 1000), node("b", 1000, 1000)];
    // batch/0 and batch/1 fill node a, batch/2 half of b: checkout/0 fits on b only after
    // batch/2 goes, checkout/1 needs a whole node.
    let rows = vec![
        running("a", SlotId::new("batch", 0), "b0", ContainerState::Healthy),
        running("a", SlotId::new("batch", 1), "b1", ContainerState::Healthy),
        running("b", SlotId::new("batch", 2), "b2", ContainerState::Healthy),
    ];
    for (_, policy) in Policy::ALL {
        let plan = place(&apps, &nodes, &observed(rows.clone()), policy);
        assert!(plan.node_of(&SlotId::new("checkout", 0)).is_some(), "{policy}");
        assert!(plan.node_of(&SlotId::new("checkout", 1)).is_some(), "{policy}");
        let stopped: Vec<_> = plan.stops().iter().map(|s| (&*s.container, s.reason)).collect();
        assert_eq!(stopped.len(), 3, "{policy}: {stopped:?}");
        assert!(stopped.iter().all(|(_, r)| *r == StopReason::Preempted));
        assert!(plan.unschedulable().iter().all(|u| u.slot.app.as_str() == "batch"));
        assert!(plan.unschedulable()[0].reason.to_string().starts_with("preempted by checkout/"));
    }
}

#[test]
fn a_slot_that_fits_nowhere_is_reported_with_its_reason() {
    let mut ssd = app("db", 1, 100);
    ssd.constraints.insert("disk".into(), "ssd".into());
    let plan = place(&[ssd, app("big", 1, 5000)], &three_nodes(), &Observed::new(), Policy::Spread);
    let reasons: Vec<String> = plan.unschedulable().iter().map(|u| format!("{}: {}", u.slot, u.reason)).collect();
    assert_eq!(reasons.len(), 2);
    assert!(reasons.contains(&"db/0: no live node has labels disk=ssd".to_owned()), "{reasons:?}");
    let big = reasons.iter().find(|r| r.starts_with("big/0")).unwrap();
    assert!(big.contains("insufficient cpu") && big.contains("3 eligible"), "{big}");
}

#[test]
fn running_slots_stay_where_they_are_whatever_their_health() {
    let apps = [app("web", 3, 100)];
    let rows = vec![
        running("c", SlotId::new("web", 0), "c0", ContainerState::Healthy),
        running("c", SlotId::new("web", 1), "c1", ContainerState::Starting),
        running("c", SlotId::new("web", 2), "c2", ContainerState::Unhealthy),
    ];
    for (_, policy) in Policy::ALL {
        let plan = place(&apps, &three_nodes(), &observed(rows.clone()), policy);
        assert!(plan.placements().all(|(_, n)| n.as_str() == "c"), "{policy}");
        assert!(plan.stops().is_empty());
        assert!(plan.starts_on(&NodeId::new("c")).is_empty());
    }
}

#[test]
fn a_duplicate_is_stopped_the_same_way_whatever_the_report_order() {
    let apps = [app("web", 1, 100)];
    let a = running("a", SlotId::new("web", 0), "on-a", ContainerState::Unhealthy);
    let b = running("b", SlotId::new("web", 0), "on-b", ContainerState::Starting);
    let c = running("c", SlotId::new("web", 0), "on-c", ContainerState::Healthy);
    let one = place(&apps, &three_nodes(), &observed(vec![a.clone(), b.clone(), c.clone()]), Policy::Spread);
    let two = place(&apps, &three_nodes(), &observed(vec![c, b, a]), Policy::Spread);
    assert_eq!(where_is(&one), [("web/0".to_owned(), "b".to_owned())], "running first, then the lower name");
    assert_eq!(one.stops(), two.stops());
    let stopped: Vec<_> = one.stops().iter().map(|s| (&*s.container, s.reason)).collect();
    assert_eq!(stopped, [("on-a", StopReason::Duplicate), ("on-c", StopReason::Duplicate)]);
}

/// Two nodes that started one slot each see their own copy healthy before they hear that
/// the other's is: whichever states each has heard, both keep the copy on the lower node.
#[test]
fn both_nodes_of_a_doubly_started_slot_keep_the_same_copy_whatever_health_they_heard() {
    let apps = [app("web", 1, 100)];
    let copy = |node: &str, state| running(node, SlotId::new("web", 0), &format!("on-{node}"), state);
    let (healthy, starting) = (ContainerState::Healthy, ContainerState::Starting);
    // Each sees its own copy healthy and the other's still starting; later, both healthy.
    let seen_by_a =
        place(&apps, &three_nodes(), &observed(vec![copy("a", healthy), copy("b", starting)]), Policy::Spread);
    let seen_by_b =
        place(&apps, &three_nodes(), &observed(vec![copy("a", starting), copy("b", healthy)]), Policy::Spread);
    let agreed = place(&apps, &three_nodes(), &observed(vec![copy("a", healthy), copy("b", healthy)]), Policy::Spread);
    for plan in [&seen_by_a, &seen_by_b, &agreed] {
        assert_eq!(where_is(plan), [("web/0".to_owned(), "a".to_owned())]);
        let stopped: Vec<_> = plan.stops().iter().map(|s| &*s.container).collect();
        assert_eq!(stopped, ["on-b"]);
    }
}

#[test]
fn surplus_failed_and_removed_app_containers_are_stopped() {
    let apps = [app("web", 1, 100)];
    let rows = vec![
        running("a", SlotId::new("web", 0), "failed", ContainerState::Failed),
        running("a", SlotId::new("web", 1), "surplus", ContainerState::Healthy),
        running("b", SlotId::new("gone", 0), "removed", ContainerState::Healthy),
    ];
    let plan = place(&apps, &three_nodes(), &observed(rows), Policy::Spread);
    let stopped: Vec<_> = plan.stops().iter().map(|s| (&*s.container, s.reason)).collect();
    assert_eq!(
        stopped,
        [("failed", StopReason::Failed), ("surplus", StopReason::Surplus), ("removed", StopReason::Surplus)]
    );
    assert!(plan.node_of(&SlotId::new("web", 0)).is_some(), "the failed slot is placed again");
}

#[test]
fn a_slot_that_failed_past_its_budget_goes_elsewhere_while_it_can() {
    let apps = [app("web", 1, 100)];
    for (_, policy) in Policy::ALL {
        let rows = vec![running("a", SlotId::new("web", 0), "x", ContainerState::Failed)];
        let plan = place(&apps, &three_nodes(), &observed(rows), policy);
        assert_ne!(plan.node_of(&SlotId::new("web", 0)).unwrap().as_str(), "a", "{policy}");
        let rows = vec![running("a", SlotId::new("web", 0), "x", ContainerState::Failed)];
        let plan = place(&apps, &[node("a", 1000, 1000)], &observed(rows), policy);
        assert_eq!(plan.node_of(&SlotId::new("web", 0)).unwrap().as_str(), "a", "the only node is better than none");
    }
}

#[test]
fn a_node_over_capacity_sheds_its_lowest_priority_slot() {
    let mut high = app("high", 1, 600);
    high.priority = 1;
    let apps = [high, app("low", 1, 600)];
    let rows = vec![
        running("a", SlotId::new("high", 0), "h", ContainerState::Healthy),
        running("a", SlotId::new("low", 0), "l", ContainerState::Healthy),
    ];
    let plan = place(&apps, &three_nodes(), &observed(rows), Policy::Spread);
    assert_eq!(plan.node_of(&SlotId::new("high", 0)).unwrap().as_str(), "a");
    assert_eq!(plan.node_of(&SlotId::new("low", 0)).unwrap().as_str(), "b");
    assert_eq!(&*plan.stops()[0].container, "l");
    assert_eq!(plan.stops()[0].reason, StopReason::Evicted);
}

#[test]
fn containers_on_dead_nodes_are_ignored_and_their_slots_placed_again() {
    let apps = [app("web", 1, 100)];
    let rows = vec![running("gone", SlotId::new("web", 0), "x", ContainerState::Healthy)];
    let plan = place(&apps, &three_nodes(), &observed(rows), Policy::Spread);
    assert_eq!(plan.node_of(&SlotId::new("web", 0)).unwrap().as_str(), "a");
    assert!(plan.stops().is_empty(), "a dead node's containers are not its business to stop");
    assert_eq!(plan.starts_on(&NodeId::new("a")), [SlotId::new("web", 0)]);
}

#[test]
fn rendezvous_choice_of_a_slot_does_not_depend_on_other_apps() {
    let nodes: Vec<NodeSpec> = (0..20).map(|i| node(&format!("n{i}"), 100_000, 100_000)).collect();
    let alone = place(&[app("web", 10, 10)], &nodes, &Observed::new(), Policy::Rendezvous);
    let crowd = place(&[app("web", 10, 10), app("api", 30, 10)], &nodes, &Observed::new(), Policy::Rendezvous);
    for (slot, node) in alone.placements() {
        assert_eq!(crowd.node_of(&slot), Some(node));
    }
}

#[test]
fn rendezvous_moves_few_slots_when_a_node_joins() {
    let mut nodes: Vec<NodeSpec> = (0..10).map(|i| node(&format!("n{i}"), 1_000_000, 1_000_000)).collect();
    let apps = [app("web", 1000, 10)];
    let before = place(&apps, &nodes, &Observed::new(), Policy::Rendezvous);
    nodes.push(node("n10", 1_000_000, 1_000_000));
    let after = place(&apps, &nodes, &Observed::new(), Policy::Rendezvous);
    let moved = before.placements().filter(|(s, n)| after.node_of(s) != Some(*n)).count();
    // About 1000 / 11 slots belong to the new node; nothing else should move.
    assert!(moved < 1000 * 2 / 11, "{moved} of 1000 moved");
    assert!(after.placements().filter(|(s, n)| n.as_str() != "n10" && before.node_of(s) != Some(*n)).count() == 0);
}

#[test]
fn the_coordinator_is_the_same_whatever_the_order_of_nodes() {
    let nodes: Vec<NodeId> = (0..7).map(|i| NodeId::new(&format!("n{i}"))).collect();
    let first = rendezvous_owner("web", &nodes).cloned();
    let reversed: Vec<NodeId> = nodes.iter().rev().cloned().collect();
    assert_eq!(rendezvous_owner("web", &reversed).cloned(), first);
    assert_eq!(rendezvous_owner("web", &[]), None);
}

#[test]
fn policies_parse_by_name_and_reject_unknown_names() {
    for (name, policy) in Policy::ALL {
        assert_eq!(name.parse::<Policy>(), Ok(policy));
        assert_eq!(policy.to_string(), name);
    }
    assert_eq!(
        "random".parse::<Policy>().unwrap_err().to_string(),
        "unknown policy \"random\"; allowed: round-robin, binpack, spread, rendezvous, fgd"
    );
}

fn gpu_node(name: &str, gpus: u32, model: &str) -> NodeSpec {
    let mut n = node(name, 64_000, 262_144);
    n.gpus = gpus;
    n.gpu_model = model.into();
    n
}

fn gpu_app(name: &str, replicas: u32, gpus: u32, gpu_milli: u32) -> AppSpec {
    let mut a = app(name, replicas, 1000);
    a.gpu = GpuRequest { gpus, gpu_milli, gpu_models: Vec::new() };
    a
}

fn gpus_of(plan: &Plan, slot: &str) -> Vec<(u32, u32)> {
    let (app, index) = slot.split_once('/').unwrap();
    plan.gpus_of(&SlotId::new(app, index.parse().unwrap())).iter().map(|g| (g.index, g.milli)).collect()
}

#[test]
fn whole_gpus_are_held_alone_and_shares_of_one_add_up_to_at_most_a_whole() {
    let apps = [gpu_app("train", 1, 2, 0), gpu_app("infer", 3, 0, 400)];
    for (_, policy) in Policy::ALL {
        let plan = place(&apps, &[gpu_node("a", 4, "A100")], &Observed::new(), policy);
        assert!(plan.unschedulable().is_empty(), "{policy}: {:?}", plan.unschedulable());
        let train = gpus_of(&plan, "train/0");
        assert_eq!(train.len(), 2, "{policy}");
        assert!(train.iter().all(|&(_, m)| m == 1000));
        let mut per_gpu = [0u32; 4];
        for s in ["infer/0", "infer/1", "infer/2"] {
            let g = gpus_of(&plan, s);
            assert_eq!(g.len(), 1);
            assert!(!train.iter().any(|&(i, _)| i == g[0].0), "{policy}: {s} shares a whole GPU");
            per_gpu[g[0].0 as usize] += g[0].1;
        }
        assert!(per_gpu.iter().all(|&m| m <= 1000), "{policy}: {per_gpu:?}");
    }
}

#[test]
fn spread_and_binpack_pack_gpu_replicas_so_a_whole_node_stays_free() {
    // Eight one-GPU replicas, then a replica that needs a whole node's eight.
    let mut big = gpu_app("big", 1, 8, 0);
    big.priority = -1;
    let apps = [gpu_app("small", 8, 1, 0), big];
    let nodes = [gpu_node("a", 8, "A100"), gpu_node("b", 8, "A100")];
    // Round-robin and rendezvous deal replicas out by turn and by hash: they strand it.
    for policy in [Policy::BinPack, Policy::Spread, Policy::Fgd] {
        let plan = place(&apps, &nodes, &Observed::new(), policy);
        assert!(plan.unschedulable().is_empty(), "{policy} stranded the eight-GPU replica: {:?}", plan.unschedulable());
    }
}

#[test]
fn replicas_without_gpus_keep_off_nodes_with_gpus_free() {
    let apps = [app("web", 4, 500)];
    let nodes = [gpu_node("a-gpu", 8, "A100"), node("b", 64_000, 262_144)];
    for policy in [Policy::BinPack, Policy::Spread, Policy::Fgd] {
        let plan = place(&apps, &nodes, &Observed::new(), policy);
        assert!(plan.placements().all(|(_, n)| n.as_str() == "b"), "{policy}: {:?}", where_is(&plan));
    }
}

#[test]
fn a_gpu_replica_goes_only_to_gpus_of_a_model_it_allows_or_says_why_not() {
    let mut v100 = gpu_app("v100", 1, 0, 500);
    v100.gpu.gpu_models = vec!["V100M16".into(), "V100M32".into()];
    let nodes = [gpu_node("a", 2, "T4"), gpu_node("b", 2, "V100M32"), node("c", 64_000, 262_144)];
    for (_, policy) in Policy::ALL {
        let plan = place(std::slice::from_ref(&v100), &nodes, &Observed::new(), policy);
        assert_eq!(plan.node_of(&SlotId::new("v100", 0)).unwrap().as_str(), "b", "{policy}");
    }
    let plan = place(&[v100], &nodes[..1], &Observed::new(), Policy::Spread);
    assert_eq!(
        plan.unschedulable()[0].reason.to_string(),
        "no live node it may run on has GPUs of model V100M16|V100M32"
    );
    let plan = place(&[gpu_app("big", 1, 4, 0)], &nodes, &Observed::new(), Policy::Spread);
    let reason = plan.unschedulable()[0].reason.to_string();
    assert!(reason.starts_with("insufficient gpu: needs 1000m cpu and 100 MiB and 4 whole GPUs"), "{reason}");
    assert!(reason.contains("2 eligible nodes") && reason.ends_with("and 2 whole GPUs free"), "{reason}");
}

#[test]
fn a_node_with_no_free_host_port_takes_no_replica_and_the_reason_says_so() {
    let mut small = node("a", 64_000, 262_144);
    small.host_ports.max = small.host_ports.min + 1;
    let plan = place(&[app("web", 3, 100)], &[small], &Observed::new(), Policy::Spread);
    assert_eq!(plan.placements().count(), 2, "two host ports, two replicas");
    let reason = plan.unschedulable()[0].reason.to_string();
    assert!(reason.starts_with("no free host port on a, which have room"), "{reason}");
}

#[test]
fn a_gpu_nodes_crash_moves_its_gpu_replicas_to_free_gpus_of_an_allowed_model() {
    let mut infer = gpu_app("infer", 4, 0, 500);
    infer.gpu.gpu_models = vec!["A100".into()];
    let nodes = [gpu_node("a", 1, "A100"), gpu_node("b", 1, "A100"), gpu_node("c", 4, "T4"), gpu_node("d", 2, "A100")];
    for (_, policy) in Policy::ALL {
        let mut plan = place(std::slice::from_ref(&infer), &nodes, &Observed::new(), policy);
        let victim = plan.node_of(&SlotId::new("infer", 0)).unwrap().clone();
        let moves = plan.remove_node(&victim);
        assert!(!moves.is_empty());
        for m in moves {
            let to = m.to.unwrap_or_else(|e| panic!("{policy}: {} fits nowhere: {e}", m.slot));
            assert!(["a", "b", "d"].contains(&to.as_str()) && to != victim, "{policy}: {} to {to}", m.slot);
            assert_eq!(plan.gpus_of(&m.slot).len(), 1);
        }
    }
}

#[test]
fn of_two_containers_reporting_one_gpu_the_lower_priority_one_is_evicted() {
    let mut high = gpu_app("high", 1, 1, 0);
    high.priority = 1;
    let apps = [high, gpu_app("low", 1, 1, 0)];
    let gpu0 = vec![GpuShare { index: 0, milli: 1000 }];
    let mut rows = vec![
        running("a", SlotId::new("high", 0), "h", ContainerState::Healthy),
        running("a", SlotId::new("low", 0), "l", ContainerState::Healthy),
    ];
    for (_, c) in &mut rows {
        c.gpus = gpu0.clone();
    }
    let plan = place(&apps, &[gpu_node("a", 2, "A100")], &observed(rows), Policy::Spread);
    assert_eq!(gpus_of(&plan, "high/0"), [(0, 1000)]);
    assert_eq!(gpus_of(&plan, "low/0"), [(1, 1000)], "placed again, on the other GPU");
    assert_eq!(
        plan.stops().iter().map(|s| (&*s.container, s.reason)).collect::<Vec<_>>(),
        [("l", StopReason::Evicted)]
    );
}

#[test]
fn fgd_puts_a_share_on_a_gpu_already_shared_rather_than_breaking_a_whole_one() {
    // The mix: mostly whole-GPU replicas. A share on a fresh GPU would strand it for them.
    let apps = [gpu_app("whole", 6, 1, 0), gpu_app("share", 2, 0, 300)];
    let plan = place(&apps, &[gpu_node("a", 4, "A100"), gpu_node("b", 4, "A100")], &Observed::new(), Policy::Fgd);
    assert!(plan.unschedulable().is_empty(), "{:?}", plan.unschedulable());
    let share0 = gpus_of(&plan, "share/0");
    let share1 = gpus_of(&plan, "share/1");
    let node0 = plan.node_of(&SlotId::new("share", 0)).unwrap();
    let node1 = plan.node_of(&SlotId::new("share", 1)).unwrap();
    assert_eq!((node0, share0[0].0), (node1, share1[0].0), "both shares on one GPU");
}

#[test]
fn an_old_versions_container_keeps_its_gpus_when_the_new_version_asks_for_none() {
    // Version 1 asked for a GPU; version 2 asks for none. The old container still holds GPU 0.
    let mut web = app("web", 1, 100);
    web.gpu = GpuRequest { gpus: 1, ..Default::default() };
    web.version = 1;
    let mut v2 = web.with_template(&web.template(), 2);
    v2.gpu = GpuRequest::default();
    v2.history =
        vec![crate::model::Revision { version: 1, template: web.template(), cause: crate::model::Cause::Apply }];
    let mut rows = vec![running("a", SlotId::new("web", 0), "old", ContainerState::Healthy)];
    rows[0].1.version = 1;
    rows[0].1.gpus = vec![GpuShare { index: 0, milli: 1000 }];
    // A GPU app beside it must not be given GPU 0 while the old container holds it.
    let train = gpu_app("train", 1, 1, 0);
    for (_, policy) in Policy::ALL {
        let plan = place(&[v2.clone(), train.clone()], &[gpu_node("a", 2, "A100")], &observed(rows.clone()), policy);
        assert_eq!(gpus_of(&plan, "train/0"), [(1, 1000)], "{policy}");
    }
}

#[test]
fn a_slot_short_only_of_gpus_preempts_only_replicas_that_hold_gpus() {
    let mut urgent = gpu_app("urgent", 1, 1, 0);
    urgent.priority = 2;
    let mut batch = gpu_app("batch", 1, 1, 0);
    batch.priority = 1;
    let apps = [urgent, batch, app("cpu", 5, 100)];
    let rows = vec![
        running("a", SlotId::new("batch", 0), "b0", ContainerState::Healthy),
        running("a", SlotId::new("cpu", 0), "c0", ContainerState::Healthy),
        running("a", SlotId::new("cpu", 1), "c1", ContainerState::Healthy),
    ];
    let mut rows = rows;
    rows[0].1.gpus = vec![GpuShare { index: 0, milli: 1000 }];
    let plan = place(&apps, &[gpu_node("a", 1, "A100")], &observed(rows), Policy::Spread);
    let stopped: Vec<_> = plan.stops().iter().map(|s| (&*s.container, s.reason)).collect();
    assert_eq!(stopped, [("b0", StopReason::Preempted)], "only the GPU holder goes");
    assert_eq!(gpus_of(&plan, "urgent/0"), [(0, 1000)]);
}

#[test]
fn a_rolling_apps_old_replica_evicted_for_want_of_host_ports_is_placed_again_not_replaced() {
    // Three old replicas on a node of three host ports; another app then publishes one of them.
    let mut small = node("a", 64_000, 262_144);
    small.host_ports.max = small.host_ports.min + 2;
    let mut web = app("web", 3, 100);
    web.version = 2;
    web.history =
        vec![crate::model::Revision { version: 1, template: web.template(), cause: crate::model::Cause::Apply }];
    web.image = "img:v2".into();
    // Every old replica may be replaced at once: the one evicted would be too.
    web.update.max_surge = 3;
    let mut taker = app("taker", 0, 100);
    taker.port = small.host_ports.min;
    let rows: Vec<_> = (0..3)
        .map(|i| {
            let mut r = running("a", SlotId::new("web", i), &format!("w{i}"), ContainerState::Healthy);
            r.1.version = 1;
            r
        })
        .collect();
    for (_, policy) in Policy::ALL {
        let plan = place(&[web.clone(), taker.clone()], &[small.clone()], &observed(rows.clone()), policy);
        assert!(plan.stops().iter().any(|s| s.reason == StopReason::Evicted), "{policy}: {:?}", plan.stops());
    }
}
