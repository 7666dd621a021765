#![allow(clippy::unwrap_used, missing_docs)]
//! Per-packet cost of a [`ShardCore`](openchat_media::shard::ShardCore) holding idle rooms:
//! one audio publisher to 10 subscribers in the active room, beside 0 or 1 000 idle rooms of
//! 10 connected str0m peers each (live timers: ICE, RTCP). The timed step is the driver's
//! work per received datagram (handle it, ask the deadline, run due timeouts, drain), with
//! the virtual clock following the real one. Work per packet should follow what happened,
//! not what exists. Prints
//! `TURN idle_rooms=<n> peers=<p> pps=<publisher packets/s> ratio_to_one_room=<y>`
//! (target: ratio >= 0.9 with 1 000 idle rooms).

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use openchat_benches::shard::ShardHarness;

const SUBSCRIBERS: usize = 10;
const PEERS_PER_IDLE_ROOM: usize = 10;

/// The best of `windows` timed windows of `per_window` datagrams (untimed keepalives and
/// packet generation between them; the machine is shared and noisy).
fn pps(harness: &mut ShardHarness, windows: usize, per_window: usize) -> f64 {
    (0..windows)
        .map(|_| {
            let datagrams: Vec<Vec<u8>> = (0..per_window).map(|_| harness.datagram(160)).collect();
            harness.packets_per_second(&datagrams)
        })
        .fold(0.0, f64::max)
}

fn benches(c: &mut Criterion) {
    let quick = std::env::var("OPENCHAT_BENCH_QUICK").is_ok();
    let idle: &[usize] = if quick { &[0, 2] } else { &[0, 1000] };
    let (windows, per_window) = if quick { (2, 50) } else { (7, 3000) };
    let mut baseline = None;
    for &rooms in idle {
        let mut harness = ShardHarness::new(SUBSCRIBERS, rooms, PEERS_PER_IDLE_ROOM);
        let pps = pps(&mut harness, windows, per_window);
        assert!(harness.all_connected(), "the idle peers stayed connected");
        let base = *baseline.get_or_insert(pps);
        println!(
            "TURN idle_rooms={rooms} peers={} pps={pps:.0} ratio_to_one_room={:.2}",
            harness.peers(),
            pps / base
        );
        let mut group = c.benchmark_group("shard_turn");
        if quick {
            group
                .sample_size(10)
                .measurement_time(Duration::from_millis(200))
                .warm_up_time(Duration::from_millis(50));
        }
        let harness = std::cell::RefCell::new(harness);
        group.bench_function(format!("idle_rooms_{rooms}"), |b| {
            b.iter_batched(
                || harness.borrow_mut().datagram(160),
                |datagram| harness.borrow_mut().step(&datagram),
                criterion::BatchSize::SmallInput,
            )
        });
        group.finish();
    }
}

criterion_group!(shard_turn, benches);
criterion_main!(shard_turn);
