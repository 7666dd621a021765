#![allow(clippy::unwrap_used, missing_docs)]
//! `forward` vs `floor`: outbound packets per second of the SFU's forwarding path (one
//! publisher datagram in, `fanout` SRTP datagrams out) and of the physical floor (copy +
//! SRTP AEAD per outbound packet), for Opus-size and video-size payloads. Besides
//! criterion's report, prints one line per case:
//! `RATIO size=<bytes> fanout=<n> forward_pps=<x> floor_pps=<y> ratio=<forward/floor>`.

use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use openchat_benches::{Floor, Harness};
use str0m::media::MediaKind;

const SIZES: [(usize, MediaKind); 2] = [(160, MediaKind::Audio), (1100, MediaKind::Video)];

fn fanouts() -> Vec<usize> {
    // OPENCHAT_BENCH_QUICK=1: one small case (the CI smoke).
    if std::env::var("OPENCHAT_BENCH_QUICK").is_ok() {
        vec![1]
    } else {
        vec![1, 10, 100]
    }
}

/// Outbound packets per second over `rounds` forwarded datagrams (measured directly, for
/// the RATIO line; criterion's statistics come from its own runs).
fn forward_pps(harness: &mut Harness, size: usize, rounds: usize) -> f64 {
    let datagrams: Vec<Vec<u8>> = (0..rounds).map(|_| harness.datagram(size)).collect();
    let started = Instant::now();
    let mut sent = 0;
    for datagram in &datagrams {
        sent += harness.forward(datagram);
    }
    sent as f64 / started.elapsed().as_secs_f64()
}

fn floor_pps(size: usize, packets: usize) -> f64 {
    let mut floor = Floor::default();
    let payload = vec![0x5Au8; size];
    let started = Instant::now();
    let mut bytes = 0;
    for _ in 0..packets {
        bytes += floor.packet(std::hint::black_box(&payload));
    }
    std::hint::black_box(bytes);
    packets as f64 / started.elapsed().as_secs_f64()
}

fn benches(c: &mut Criterion) {
    let quick = std::env::var("OPENCHAT_BENCH_QUICK").is_ok();
    for (size, kind) in SIZES {
        for fanout in fanouts() {
            let harness = std::cell::RefCell::new(Harness::new(fanout, kind));
            let mut group = c.benchmark_group(format!("forward/{size}B"));
            group.throughput(Throughput::Elements(fanout as u64));
            if quick {
                group
                    .sample_size(10)
                    .measurement_time(Duration::from_millis(200))
                    .warm_up_time(Duration::from_millis(50));
            }
            group.bench_function(format!("fanout_{fanout}"), |b| {
                b.iter_batched(
                    || harness.borrow_mut().datagram(size),
                    |d| harness.borrow_mut().forward(&d),
                    BatchSize::SmallInput,
                )
            });
            let payload = vec![0x5Au8; size];
            let mut floor = Floor::default();
            group.bench_function(format!("floor_x{fanout}"), |b| {
                b.iter(|| {
                    let mut bytes = 0;
                    for _ in 0..fanout {
                        bytes += floor.packet(std::hint::black_box(&payload));
                    }
                    bytes
                })
            });
            group.finish();
            let rounds = if quick { 50 } else { (20_000 / fanout).max(200) };
            let forward = forward_pps(&mut harness.borrow_mut(), size, rounds);
            let floor = floor_pps(size, if quick { 1000 } else { 200_000 });
            println!(
                "RATIO size={size} fanout={fanout} forward_pps={forward:.0} floor_pps={floor:.0} ratio={:.3}",
                forward / floor
            );
        }
    }
}

criterion_group!(forward, benches);
criterion_main!(forward);
