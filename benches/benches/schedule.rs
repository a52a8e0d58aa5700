//! Placement from scratch of 100,000 replicas on 10,000 nodes for each policy, with GPUs and
//! without, and the reschedule after one of those nodes dies. Each plan is checked before it
//! is timed.

use std::hint::black_box;

use canteen_benches::{apps, gpu_apps, gpu_nodes, nodes};
use canteen_core::schedule::{Observed, Plan, Policy, place};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

const NODES: usize = 10_000;
const APPS: usize = 1_000;
const REPLICAS: u32 = 100;

/// A benchmark that measures a wrong answer measures nothing.
fn check(plan: &Plan) {
    assert_eq!(plan.placements().count(), APPS * REPLICAS as usize, "every replica placed");
    assert!(plan.unschedulable().is_empty());
    for (node, used) in plan.usage() {
        assert!(used.fits_in(node.capacity), "{} over capacity", node.id);
    }
}

fn from_scratch(c: &mut Criterion) {
    let nodes = nodes(NODES);
    let apps = apps(APPS, REPLICAS);
    let observed = Observed::new();
    let mut group = c.benchmark_group("place_100k_replicas_on_10k_nodes");
    group.sample_size(20);
    for (name, policy) in Policy::ALL {
        check(&place(&apps, &nodes, &observed, policy));
        group.bench_function(name, |b| b.iter(|| place(black_box(&apps), black_box(&nodes), &observed, policy)));
    }
    group.finish();
}

fn with_gpus(c: &mut Criterion) {
    let nodes = gpu_nodes(NODES);
    let apps = gpu_apps(APPS, REPLICAS);
    let observed = Observed::new();
    let mut group = c.benchmark_group("place_100k_replicas_on_10k_gpu_nodes");
    group.sample_size(10);
    for (name, policy) in Policy::ALL {
        let plan = place(&apps, &nodes, &observed, policy);
        check(&plan);
        for app in &apps {
            let slot = canteen_core::model::SlotId::new(app.name.as_str(), 0);
            let held: u32 = plan.gpus_of(&slot).iter().map(|g| g.milli).sum();
            assert_eq!(u64::from(held), u64::from(app.gpu.gpus) * 1000 + u64::from(app.gpu.gpu_milli), "{name}");
        }
        group.bench_function(name, |b| b.iter(|| place(black_box(&apps), black_box(&nodes), &observed, policy)));
    }
    group.finish();
}

fn reschedule(c: &mut Criterion) {
    let nodes = nodes(NODES);
    let apps = apps(APPS, REPLICAS);
    let mut group = c.benchmark_group("reschedule_one_dead_node_of_10k");
    for (name, policy) in Policy::ALL {
        let plan = place(&apps, &nodes, &Observed::new(), policy);
        check(&plan);
        // A node that holds slots under this policy: the one running the middle replica.
        let victim = plan.placements().nth(APPS * REPLICAS as usize / 2).expect("placed").1.clone();
        let held = plan.placements().filter(|(_, n)| **n == victim).count();
        let moves = plan.clone().remove_node(&victim);
        assert_eq!(moves.len(), held, "exactly the dead node's slots move");
        assert!(moves.iter().all(|m| m.to.as_ref().is_ok_and(|to| *to != victim)));
        group.bench_function(name, |b| {
            b.iter_batched_ref(|| plan.clone(), |p| p.remove_node(black_box(&victim)), BatchSize::LargeInput)
        });
    }
    group.finish();
}

criterion_group!(benches, from_scratch, with_gpus, reschedule);
criterion_main!(benches);
