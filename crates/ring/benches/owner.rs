//! The cost of `Ring::owner` (one hash per member) for 3, 10 and 100 members: what
//! every agent pays per CONNECT and every distributor per routed message.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use throng_ring::{Member, Ring};

fn owner(c: &mut Criterion) {
    let keys: Vec<String> = (0..1024)
        .map(|i| format!("sensor-{i:05}-eu-west"))
        .collect();
    let mut group = c.benchmark_group("owner");
    group.throughput(Throughput::Elements(1));
    for members in [3usize, 10, 100] {
        let ring = Ring::new(
            (0..members)
                .map(|i| Member::new(format!("throng-handler-{i}"), format!("10.0.0.{i}:1884"))),
        );
        group.bench_with_input(BenchmarkId::from_parameter(members), &ring, |b, ring| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % keys.len();
                black_box(ring.owner(black_box(&keys[i])))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, owner);
criterion_main!(benches);
