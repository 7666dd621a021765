#![allow(clippy::unwrap_used, missing_docs)]
//! The cost of one shard turn (a command into one active room, then the deadline query and
//! the transmit drain the driver runs after every turn) with 1, 100 and 1 000 rooms of 10
//! participants each on the shard. Work per turn should follow what happened, not what
//! exists: prints `TURN rooms=<n> ns_per_turn=<x> ratio_to_one_room=<y>`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use openchat_core::ChannelId;
use openchat_core::ticket::Permissions;
use openchat_media::room::{ParticipantId, ParticipantInfo, RoomCommand};
use openchat_media::shard::{OutboxReceiver, Shard, ShardCommand, ShardStats, outbox};

const PARTICIPANTS_PER_ROOM: usize = 10;

/// A shard with `rooms` media rooms of 10 participants, and the receivers that keep their
/// outboxes open.
fn shard_with(rooms: usize) -> (Shard, Vec<OutboxReceiver>) {
    let stats = Arc::new(ShardStats::default());
    let mut shard = Shard::new(0, 64, stats).with_media_addr("127.0.0.1:50000".parse().unwrap(), true);
    let mut receivers = Vec::new();
    for room in 0..rooms {
        let channel = ChannelId::parse_owned(format!("vc_{room:06}")).unwrap();
        for p in 0..PARTICIPANTS_PER_ROOM {
            let (tx, rx) = outbox();
            let (reply, _answer) = flume_reply();
            shard.handle(ShardCommand::Join {
                channel: channel.clone(),
                command: RoomCommand::Join {
                    participant: ParticipantInfo {
                        id: ParticipantId(format!("p{room}_{p}")),
                        server_id: "srv_bench".into(),
                        user_uid: format!("uid_{room}_{p}"),
                        device_id: "d".into(),
                        permissions: Permissions::ALL,
                    },
                    request_id: None,
                },
                outbox: tx,
                reply,
            });
            receivers.push(rx);
        }
    }
    // Settle: every room has asked for its deadline and drained once.
    let mut out = Vec::new();
    shard.media_deadline(Instant::now());
    shard.take_transmits(&mut out);
    shard.flush();
    for rx in &receivers {
        while rx.frames.try_recv().is_ok() {}
    }
    (shard, receivers)
}

type Reply = Result<(), openchat_media::room::RoomError>;

fn flume_reply() -> (flume::Sender<Reply>, flume::Receiver<Reply>) {
    flume::bounded(1)
}

/// One turn: a ping into the first room, then what the driver does after every turn.
fn turn(shard: &mut Shard, out: &mut Vec<openchat_media::sfu::Transmit>, receivers: &[OutboxReceiver]) {
    shard.handle(ShardCommand::Room {
        channel: ChannelId::parse("vc_000000").unwrap(),
        command: RoomCommand::Ping {
            from: ParticipantId("p0_0".into()),
            request_id: None,
        },
        ack: None,
    });
    shard.flush();
    shard.take_transmits(out);
    out.clear();
    std::hint::black_box(shard.media_deadline(Instant::now()));
    while receivers[0].frames.try_recv().is_ok() {}
}

/// The best of five timed runs of `turns` turns (the machine is shared and noisy).
fn ns_per_turn(rooms: usize, turns: usize) -> f64 {
    let (mut shard, receivers) = shard_with(rooms);
    let mut out = Vec::new();
    (0..5)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..turns {
                turn(&mut shard, &mut out, &receivers);
            }
            started.elapsed().as_nanos() as f64 / turns as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn benches(c: &mut Criterion) {
    let quick = std::env::var("OPENCHAT_BENCH_QUICK").is_ok();
    let counts: &[usize] = if quick { &[1, 10] } else { &[1, 100, 1000] };
    let turns = if quick { 200 } else { 20_000 };
    let baseline = ns_per_turn(1, turns);
    for &rooms in counts {
        let ns = ns_per_turn(rooms, turns);
        println!(
            "TURN rooms={rooms} ns_per_turn={ns:.0} ratio_to_one_room={:.2}",
            ns / baseline
        );
        let (mut shard, receivers) = shard_with(rooms);
        let mut out = Vec::new();
        let mut group = c.benchmark_group("shard_turn");
        if quick {
            group
                .sample_size(10)
                .measurement_time(Duration::from_millis(200))
                .warm_up_time(Duration::from_millis(50));
        }
        group.bench_function(format!("rooms_{rooms}"), |b| {
            b.iter(|| turn(&mut shard, &mut out, &receivers))
        });
        group.finish();
    }
}

criterion_group!(shard_turn, benches);
criterion_main!(shard_turn);
