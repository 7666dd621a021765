#![allow(clippy::unwrap_used, missing_docs)]
//! Heap allocations per forwarded packet per subscriber, counted by `dhat`'s global
//! allocator in testing mode (every block counted, no unsafe code here). Prints
//! `ALLOCS size=<bytes> fanout=<n> per_packet_per_subscriber=<x>`.

use openchat_benches::Harness;
use str0m::media::MediaKind;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let quick = std::env::var("OPENCHAT_BENCH_QUICK").is_ok();
    let fanouts: &[usize] = if quick { &[1] } else { &[1, 10, 100] };
    for (size, kind) in [(160usize, MediaKind::Audio), (1100, MediaKind::Video)] {
        for &fanout in fanouts {
            let mut harness = Harness::new(fanout, kind);
            let rounds = if quick { 20 } else { 500 };
            let datagrams: Vec<Vec<u8>> = (0..rounds).map(|_| harness.datagram(size)).collect();
            let before = dhat::HeapStats::get().total_blocks;
            let mut sent = 0;
            for datagram in &datagrams {
                sent += harness.forward(datagram);
            }
            let allocations = dhat::HeapStats::get().total_blocks - before;
            println!(
                "ALLOCS size={size} fanout={fanout} forwarded={sent} allocations={allocations} per_packet_per_subscriber={:.2}",
                allocations as f64 / sent.max(1) as f64
            );
        }
    }
}
