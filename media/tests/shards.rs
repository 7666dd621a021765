//! The shards, in process: placement on the hashed shard's CPU, panic isolation, and
//! backpressure without loss.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use openchat_core::ChannelId;
use openchat_core::ticket::Permissions;
use openchat_media::ShardSet;
use openchat_media::room::{ParticipantId, ParticipantInfo, RoomCommand};
use openchat_media::shard::{OUTBOX_MAX, OutboxReceiver, STALL_MAX, ShardCommand, outbox};
use serde_json::{Map, Value, json};

fn allowed_cpus() -> Vec<usize> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_owned();
    let mut cpus = Vec::new();
    for part in list.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        cpus.extend(a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap());
    }
    cpus
}

fn channel(raw: &str) -> ChannelId {
    ChannelId::parse(raw).unwrap()
}

fn info(id: &str, permissions: Permissions) -> ParticipantInfo {
    ParticipantInfo {
        id: ParticipantId(id.into()),
        server_id: "srv_harbor".into(),
        user_uid: format!("uid_{id}"),
        device_id: "d".into(),
        permissions,
    }
}

fn join(set: &ShardSet, room: &ChannelId, id: &str) -> OutboxReceiver {
    let (tx, rx) = outbox();
    let (reply, answer) = flume::bounded(1);
    let command = RoomCommand::Join {
        participant: info(id, Permissions::ALL),
        request_id: None,
    };
    set.sender(room)
        .send(ShardCommand::Join {
            channel: room.clone(),
            command,
            outbox: tx,
            reply,
        })
        .unwrap();
    answer.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
    rx
}

fn next(rx: &OutboxReceiver) -> Value {
    let frame = rx.frames.recv_timeout(Duration::from_secs(20)).expect("a frame");
    serde_json::from_str(&frame).unwrap()
}

fn next_of(rx: &OutboxReceiver, kind: &str) -> Value {
    loop {
        let frame = next(rx);
        if frame["type"] == kind {
            return frame;
        }
    }
}

fn media(set: &ShardSet, room: &ChannelId, from: &str, seq: usize) -> flume::Receiver<()> {
    let mut payload = Map::new();
    payload.insert("seq".into(), json!(seq));
    payload.insert("chunk_b64".into(), json!(format!("chunk-{seq:05}")));
    let command = RoomCommand::MediaState {
        from: ParticipantId(from.into()),
        stream_kind: Some("audio_file_chunks".into()),
        payload,
        request_id: Some(format!("media_1_{seq}")),
    };
    let (ack, acked) = flume::bounded(1);
    set.sender(room)
        .send(ShardCommand::Room {
            channel: room.clone(),
            command,
            ack: Some(ack),
        })
        .unwrap();
    acked
}

#[test]
fn rooms_run_on_the_cpu_of_the_shard_their_channel_hashes_to() {
    let cpus = allowed_cpus();
    let set = ShardSet::start(&cpus, 10, None).unwrap();
    let mut per_shard = vec![0usize; set.len()];
    let mut receivers = Vec::new();
    for i in 0..1000 {
        let room = channel(&format!("vc_{i:06}"));
        receivers.push(join(&set, &room, &format!("p{i}")));
        let expected = openchat_core::shard::shard_for(&room, cpus.len());
        // Ask every shard: exactly the hashed one has the room, and it runs on its CPU.
        for shard in 0..set.len() {
            let (reply, answer) = flume::bounded(1);
            let probe_room = room.clone();
            set.stats(); // the set stays borrowed; probes go straight to each shard's queue
            let sender = shard_sender(&set, shard);
            sender
                .send(ShardCommand::Probe {
                    channel: probe_room,
                    reply,
                })
                .unwrap();
            let probe = answer.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(probe.shard, shard);
            assert_eq!(probe.room_exists, shard == expected, "room {i} on shard {shard}");
            if shard == expected {
                assert_eq!(
                    probe.cpu,
                    Some(cpus[shard]),
                    "shard {shard} runs on its pinned CPU"
                );
                per_shard[shard] += 1;
            }
        }
    }
    let even = 1000.0 / cpus.len() as f64;
    for count in &per_shard {
        assert!((*count as f64 - even).abs() <= even * 0.25, "{per_shard:?}");
    }
    let rooms: i64 = set
        .stats()
        .iter()
        .map(|s| s.rooms.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    assert_eq!(rooms, 1000);
    drop(receivers);
    set.shutdown();
}

/// The queue of shard `index` (found through a channel that hashes there).
fn shard_sender(set: &ShardSet, index: usize) -> flume::Sender<ShardCommand> {
    (0..)
        .map(|i| channel(&format!("probe_{i}")))
        .find(|c| set.shard_of(c) == index)
        .map(|c| set.sender(&c).clone())
        .unwrap()
}

#[test]
fn a_panicking_room_is_dropped_and_its_neighbours_keep_relaying() {
    let set = ShardSet::start(&allowed_cpus()[..1], 10, None).unwrap();
    let (a, b) = (channel("vc_doomed"), channel("vc_healthy"));
    assert_eq!(set.shard_of(&a), set.shard_of(&b), "one shard holds both");
    let a1 = join(&set, &a, "a1");
    let b1 = join(&set, &b, "b1");
    set.sender(&a)
        .send(ShardCommand::PanicRoom {
            channel: a.clone(),
            path: openchat_media::shard::RoomPath::Command,
        })
        .unwrap();
    media(&set, &a, "a1", 0)
        .recv_timeout(Duration::from_secs(10))
        .unwrap();
    let error = next_of(&a1, "rtc.error");
    assert_eq!(error["payload"]["code"], "rtc_room_failed");
    assert!(
        a1.kick.recv_timeout(Duration::from_secs(10)).is_ok(),
        "the doomed room's participant is disconnected"
    );
    media(&set, &b, "b1", 1)
        .recv_timeout(Duration::from_secs(10))
        .unwrap();
    assert_eq!(next_of(&b1, "rtc.media.state")["payload"]["seq"], 1);
    let dropped = set.stats()[0]
        .rooms_dropped_by_panic
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(dropped, 1);
    set.shutdown();
}

#[test]
fn a_fast_sender_waits_for_slow_readers_and_a_stopped_reader_is_cut_off() {
    let set = ShardSet::start(&allowed_cpus()[..1], 10, None).unwrap();
    let room = channel("vc_pressure");
    let sender = join(&set, &room, "s");
    let slow = join(&set, &room, "slow");
    let stopped = join(&set, &room, "stopped");
    let total = 3 * OUTBOX_MAX;
    // The slow reader drains at its own pace on another thread and checks order.
    let slow_reader = std::thread::spawn(move || {
        let mut seen = 0;
        while seen < total {
            let frame = next(&slow);
            if frame["type"] == "rtc.media.state" {
                assert_eq!(frame["payload"]["seq"], seen, "in order, none lost");
                assert_eq!(frame["payload"]["chunk_b64"], format!("chunk-{seen:05}"));
                seen += 1;
                if seen % 64 == 0 {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        seen
    });
    let started = Instant::now();
    let mut acked = 0;
    for seq in 0..total {
        // The sender sends the next chunk only once the previous one was taken by all.
        media(&set, &room, "s", seq).recv_timeout(STALL_MAX * 3).unwrap();
        acked += 1;
        while sender.frames.try_recv().is_ok() {}
    }
    assert_eq!(acked, total);
    assert_eq!(slow_reader.join().unwrap(), total);
    // The reader that never read was disconnected once its outbox stayed full.
    assert!(stopped.kick.try_recv().is_ok(), "stopped reader kicked");
    assert!(started.elapsed() >= STALL_MAX, "only after the stall limit");
    assert!(stopped.frames.len() <= OUTBOX_MAX);
    set.shutdown();
}
