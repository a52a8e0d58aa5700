//! Property tests of `place`: what must hold for every cluster, every policy and every order.

use std::collections::BTreeMap;

use canteen_core::model::{AppSpec, GpuRequest, GpuShare, Labels, NodeId, NodeSpec, Resources, SlotId};
use canteen_core::schedule::{
    ContainerState, Observed, ObservedContainer, Plan, Policy, StopReason, Unplaceable, place,
};
use proptest::prelude::*;

fn policy() -> impl Strategy<Value = Policy> {
    prop::sample::select(Policy::ALL.iter().map(|(_, p)| *p).collect::<Vec<_>>())
}

fn labels() -> impl Strategy<Value = Labels> {
    (any::<bool>(), 0..3u8).prop_map(|(ssd, zone)| {
        let mut l = Labels::new();
        if ssd {
            l.insert("disk".into(), "ssd".into());
        }
        if zone > 0 {
            l.insert("zone".into(), if zone == 1 { "a".into() } else { "b".into() });
        }
        l
    })
}

fn nodes() -> impl Strategy<Value = Vec<NodeSpec>> {
    let gpus = (prop::sample::select(vec![0u32, 0, 1, 2, 4]), any::<bool>());
    prop::collection::vec((prop::sample::select(vec![1000u64, 2000, 4000]), 1..5u64, labels(), gpus), 1..10).prop_map(
        |specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (cpu, mem_gb, labels, (gpus, a100)))| {
                    let mut n = NodeSpec::new(&format!("n{i}"), Resources::new(cpu, mem_gb * 1024));
                    n.labels = labels;
                    n.gpus = gpus;
                    n.gpu_model = if gpus == 0 {
                        String::new()
                    } else if a100 {
                        "A100".into()
                    } else {
                        "T4".into()
                    };
                    // Few host ports, so that some nodes run out of them.
                    n.host_ports.max = n.host_ports.min + 6 + i as u16 % 5;
                    n
                })
                .collect()
        },
    )
}

fn apps() -> impl Strategy<Value = Vec<AppSpec>> {
    prop::collection::vec(
        (0..7u32, prop::sample::select(vec![100u64, 250, 500, 1000]), 1..4u64, -2..3i32, 0..4u8, 0..8u8),
        1..6,
    )
    .prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (replicas, cpu, mem_q, priority, constraint, gpu))| {
                let mut app = AppSpec::new(&format!("a{i}"), "img", replicas.max(1), Resources::new(cpu, mem_q * 256));
                // One published port falls in the nodes' host-port range, which it shrinks.
                app.port = 8000 + i as u16;
                app.gpu = match gpu {
                    3 => GpuRequest { gpus: 1, ..Default::default() },
                    4 => GpuRequest { gpus: 2, ..Default::default() },
                    5 => GpuRequest { gpu_milli: 250, ..Default::default() },
                    6 => GpuRequest { gpu_milli: 600, gpu_models: vec!["T4".into()], ..Default::default() },
                    _ => GpuRequest::default(),
                };
                app.priority = priority;
                match constraint {
                    1 => drop(app.constraints.insert("disk".into(), "ssd".into())),
                    2 => drop(app.constraints.insert("zone".into(), "a".into())),
                    _ => {}
                }
                app
            })
            .collect()
    })
}

/// Every placement as a map, for comparing plans.
fn placements(plan: &Plan) -> BTreeMap<SlotId, NodeId> {
    plan.placements().map(|(s, n)| (s, n.clone())).collect()
}

/// Every placement with its GPUs.
fn placements_with_gpus(plan: &Plan) -> BTreeMap<SlotId, (NodeId, Vec<GpuShare>)> {
    plan.placements().map(|(s, n)| (s.clone(), (n.clone(), plan.gpus_of(&s)))).collect()
}

/// What nodes would report once they ran `plan`: every placed slot healthy.
fn observe(plan: &Plan) -> Observed {
    let mut observed = Observed::new();
    for (slot, node) in plan.placements() {
        observed.entry(node.clone()).or_default().push(ObservedContainer {
            container: format!("c-{}-{}", slot, node).into(),
            gpus: plan.gpus_of(&slot),
            slot,
            state: ContainerState::Healthy,
            version: 0,
            ready: true,
        });
    }
    observed
}

fn check_capacity_and_constraints(plan: &Plan, apps: &[AppSpec], nodes: &[NodeSpec]) -> Result<(), TestCaseError> {
    for (node, used) in plan.usage() {
        prop_assert!(used.fits_in(node.capacity), "{} over capacity: {:?} > {:?}", node.id, used, node.capacity);
    }
    let mut held: BTreeMap<(NodeId, u32), u32> = BTreeMap::new();
    let mut replicas: BTreeMap<NodeId, u32> = BTreeMap::new();
    for (slot, node) in plan.placements() {
        let app = apps.iter().find(|a| a.name == slot.app).unwrap();
        let node = nodes.iter().find(|n| n.id == *node).unwrap();
        prop_assert!(app.admits(&node.labels), "{} placed on {} against its constraints", slot, node.id);
        *replicas.entry(node.id.clone()).or_default() += 1;
        let gpus = plan.gpus_of(&slot);
        let milli: u32 = gpus.iter().map(|g| g.milli).sum();
        prop_assert_eq!(
            u64::from(milli),
            u64::from(app.gpu.gpus) * 1000 + u64::from(app.gpu.gpu_milli),
            "{} holds what it asks",
            slot
        );
        prop_assert!(gpus.is_empty() || app.gpu.allows(&node.gpu_model), "{} on a GPU model it does not allow", slot);
        for g in gpus {
            prop_assert!(g.index < node.gpus, "{} holds GPU {} of {}", slot, g.index, node.id);
            let h = held.entry((node.id.clone(), g.index)).or_default();
            *h += g.milli;
            prop_assert!(*h <= 1000, "GPU {} of {} held past its whole", g.index, node.id);
        }
    }
    for (node, count) in replicas {
        let n = nodes.iter().find(|n| n.id == node).unwrap();
        prop_assert!(
            count <= n.host_ports.len(),
            "{} runs {} replicas on {} host ports",
            node,
            count,
            n.host_ports.len()
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_node_is_over_capacity_and_constraints_always_hold(apps in apps(), nodes in nodes(), policy in policy()) {
        let plan = place(&apps, &nodes, &Observed::new(), policy);
        check_capacity_and_constraints(&plan, &apps, &nodes)?;
        let total: usize = apps.iter().map(|a| a.replicas as usize).sum();
        prop_assert_eq!(plan.placements().count() + plan.unschedulable().len(), total, "every slot placed or reported");
    }

    #[test]
    fn a_slot_is_preempted_only_by_a_higher_priority_one(apps in apps(), nodes in nodes(), policy in policy()) {
        let plan = place(&apps, &nodes, &Observed::new(), policy);
        let priority = |name: &str| apps.iter().find(|a| a.name.as_str() == name).unwrap().priority;
        for u in plan.unschedulable() {
            if let Unplaceable::Preempted { by, priority: p } = &u.reason {
                prop_assert_eq!(*p, priority(by.app.as_str()));
                prop_assert!(priority(u.slot.app.as_str()) < *p, "{} preempted by {} of no higher priority", u.slot, by);
            }
        }
    }

    #[test]
    fn a_plan_over_an_unchanged_cluster_changes_nothing(apps in apps(), nodes in nodes(), policy in policy()) {
        let first = place(&apps, &nodes, &Observed::new(), policy);
        let second = place(&apps, &nodes, &observe(&first), policy);
        prop_assert_eq!(placements_with_gpus(&first), placements_with_gpus(&second));
        prop_assert!(second.stops().is_empty(), "stops: {:?}", second.stops());
        for n in &nodes {
            prop_assert!(second.starts_on(&n.id).is_empty());
        }
    }

    #[test]
    fn removing_a_node_moves_exactly_the_slots_it_held(
        apps in apps(), nodes in nodes(), policy in policy(), victim in any::<prop::sample::Index>(),
    ) {
        let before = place(&apps, &nodes, &Observed::new(), policy);
        let victim = nodes[victim.index(nodes.len())].id.clone();
        let survivors: Vec<NodeSpec> = nodes.iter().filter(|n| n.id != victim).cloned().collect();
        let after = place(&apps, &survivors, &observe(&before), policy);
        check_capacity_and_constraints(&after, &apps, &survivors)?;
        let (old, new) = (placements(&before), placements(&after));
        // "When capacity allows": a displaced slot of higher priority may preempt others.
        let preempted = after.stops().iter().any(|s| s.reason == StopReason::Preempted);
        for (slot, node) in &old {
            if *node != victim && !preempted {
                prop_assert_eq!(new.get(slot), Some(node), "{} moved though its node lives", slot);
            }
        }
        for stop in after.stops() {
            prop_assert_eq!(stop.reason, StopReason::Preempted, "the only stops after a crash are preemptions");
        }
        // A slot the dead node held is placed elsewhere or reported, never lost.
        for (slot, node) in &old {
            if *node == victim {
                prop_assert!(new.contains_key(slot) || after.unschedulable().iter().any(|u| u.slot == *slot));
            }
        }

        // The incremental path agrees with the full pass.
        let mut incremental = before.clone();
        let moves = incremental.remove_node(&victim);
        prop_assert_eq!(moves.len(), old.values().filter(|n| **n == victim).count());
        prop_assert_eq!(placements_with_gpus(&incremental), placements_with_gpus(&after));
    }

    #[test]
    fn the_plan_does_not_depend_on_the_order_of_nodes_or_apps(
        apps in apps(), nodes in nodes(), policy in policy(), seed in any::<u64>(),
    ) {
        let plan = place(&apps, &nodes, &Observed::new(), policy);
        let (mut apps2, mut nodes2) = (apps.clone(), nodes.clone());
        // A deterministic shuffle driven by the seed.
        let mut s = seed | 1;
        let mut next = |n: usize| { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s % n as u64) as usize };
        for i in (1..apps2.len()).rev() { let j = next(i + 1); apps2.swap(i, j); }
        for i in (1..nodes2.len()).rev() { let j = next(i + 1); nodes2.swap(i, j); }
        let shuffled = place(&apps2, &nodes2, &Observed::new(), policy);
        prop_assert_eq!(placements_with_gpus(&plan), placements_with_gpus(&shuffled));
        prop_assert_eq!(plan.unschedulable(), shuffled.unschedulable());
    }
}
