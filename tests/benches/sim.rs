//! Simulator speed: a uniform cluster of 32 nodes with 3 paths per pair
//! (1,488 paths, default 100 ms heartbeats, 1% loss) for 60 simulated
//! seconds, invariants checked after every step. The README quotes it.

use criterion::{Criterion, criterion_group, criterion_main};
use heartline_tests::sim::{self, Scenario};

fn bench(c: &mut Criterion) {
    let scenario = Scenario::benchmark(32, 3, 60);
    let mut group = c.benchmark_group("simulator");
    group.sample_size(10);
    group.bench_function("32 nodes x 3 paths x 60 s", |b| {
        b.iter(|| sim::run(&scenario).expect("invariants hold"));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
