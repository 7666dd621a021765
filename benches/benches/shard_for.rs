#![allow(clippy::unwrap_used, missing_docs)]
//! Channel -> shard placement (FNV-1a + jump consistent hash), done on every join.

use criterion::{Criterion, criterion_group, criterion_main};
use openchat_core::ChannelId;
use openchat_core::shard::shard_for;

fn benches(c: &mut Criterion) {
    let channels: Vec<ChannelId> = (0..1000)
        .map(|i| ChannelId::parse_owned(format!("vc_{i:08x}")).unwrap())
        .collect();
    c.bench_function("shard_for/1000_channels_16_shards", |b| {
        b.iter(|| {
            channels
                .iter()
                .map(|ch| shard_for(std::hint::black_box(ch), 16))
                .sum::<usize>()
        })
    });
}

criterion_group!(shard, benches);
criterion_main!(shard);
