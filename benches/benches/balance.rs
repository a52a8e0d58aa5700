//! One pick of each picker over 100 backends.

use std::hint::black_box;

use canteen_core::balance::Balancer;
use canteen_core::model::PickerKind;
use criterion::{Criterion, criterion_group, criterion_main};

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick_one_of_100_backends");
    for (name, kind) in PickerKind::ALL {
        let mut balancer = Balancer::new(kind, 7);
        balancer.set_backends((0..100u32).map(|i| (i, 1 + i % 3)));
        // Sane before timed: every backend gets picked over a few cycles.
        let mut seen = [false; 100];
        for _ in 0..1000 {
            let k = balancer.pick().expect("backends present");
            seen[k as usize] = true;
        }
        assert!(seen.iter().all(|s| *s), "{name} reaches every backend");
        group.bench_function(name, |b| {
            b.iter(|| {
                let k = balancer.pick().expect("backends present");
                balancer.request_started(&k);
                balancer.request_finished(black_box(&k));
                k
            })
        });
    }
    group.finish();
}

criterion_group!(benches, pick);
criterion_main!(benches);
