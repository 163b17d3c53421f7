//! The cost of asking a `Checkpointer` whether to save, per processed item, against a loop
//! that only counts items: the claim is that deciding when to checkpoint costs nothing
//! measurable between saves.
//!
//! - `checkpointer/item`: 10,000 calls of `Checkpointer::item(now)` with the GitHub policy
//!   (every 50 items, every 3 minutes), saving (`saved(now)`) whenever it says so.
//! - `checkpointer/baseline_counter`: the same loop with a bare counter and a modulo check.
//!
//! Both take the same `now`, read once per batch of 10,000 items, as a caller that reads the
//! clock per page of results would. Run with `cargo bench --bench checkpointer`.

use std::hint::black_box;
use std::time::Instant;

use cairn::job::{Checkpointer, presets};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const ITEMS: u64 = 10_000;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("checkpointer");
    group.throughput(Throughput::Elements(ITEMS));
    group.bench_function("item", |b| {
        let now = Instant::now();
        let mut checkpointer = Checkpointer::new(presets::github_checkpoint_policy(), now);
        b.iter(|| {
            let mut saves = 0u64;
            for _ in 0..ITEMS {
                if black_box(checkpointer.item(now)).is_some() {
                    checkpointer.saved(now);
                    saves += 1;
                }
            }
            black_box(saves)
        });
    });
    group.bench_function("baseline_counter", |b| {
        let mut count = 0u64;
        b.iter(|| {
            let mut saves = 0u64;
            for _ in 0..ITEMS {
                count += 1;
                if black_box(count.is_multiple_of(50)) {
                    saves += 1;
                }
            }
            black_box(saves)
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
