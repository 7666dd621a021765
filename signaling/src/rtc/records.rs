//! Voice across nodes (cluster mode), the records: the node registry and which node runs
//! each room.
//!
//! - **Registry.** Every node puts its [`NodeInfo`] (shards, participants, draining) into
//!   the key-value bucket `openchat_v1_nodes` every [`NODE_HEARTBEAT`] and watches the
//!   bucket; a node not heard for [`NODE_SILENT_MAX`] is gone ([`Registry`]).
//! - **Room records.** `openchat_v1_rooms` maps a voice channel to the node that runs its
//!   room. A join reads it: a live owner (draining or not) is followed; no record, or a dead
//!   owner, makes the joining node choose one with [`place`] and write it with
//!   create-if-absent (or compare-and-set over the dead owner's), so concurrent joins agree.
//!   The owner renews its records every [`ROOM_RENEW`] while the room has participants and
//!   deletes them when it empties; a dead owner's record lapses with the bucket's max age
//!   ([`ROOM_LEASE`]). Before it admits anyone, the owner checks the record names it.
//!
//! [`super::bridge`] carries a socket to the room's node when it is another.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use openchat_core::ChannelId;

use super::placement::{NODE_HEARTBEAT, NodeInfo, place};
pub use super::placement::{NODE_SILENT_MAX, Registry};
use crate::cluster::{Cluster, NatsState, SUBJECT_VERSION};
use crate::state::AppState;

/// How long a room record lives without renewal (the bucket's max age).
pub const ROOM_LEASE: Duration = Duration::from_secs(15);
/// How often an owner renews the records of its rooms.
pub const ROOM_RENEW: Duration = Duration::from_secs(3);
/// Attempts to settle a room's owner when records race.
const RESOLVE_ATTEMPTS: usize = 4;

const _: () = assert!(ROOM_RENEW.as_secs() * 3 <= ROOM_LEASE.as_secs());

fn nodes_bucket() -> kv::Config {
    kv::Config {
        bucket: format!("openchat_{SUBJECT_VERSION}_nodes"),
        description: "voice: live nodes, their shards and load".into(),
        history: 1,
        max_age: Duration::from_secs(60),
        max_value_size: 4096,
        storage: async_nats::jetstream::stream::StorageType::Memory,
        ..Default::default()
    }
}

fn rooms_bucket() -> kv::Config {
    kv::Config {
        bucket: format!("openchat_{SUBJECT_VERSION}_rooms"),
        description: "voice: which node runs each channel's room".into(),
        history: 1,
        max_age: ROOM_LEASE,
        max_value_size: 1024,
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    }
}

/// A room record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct RoomRecord {
    owner: String,
}

/// Where a channel's room runs: this node, another, or nowhere reachable right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Here,
    There(String),
    Unavailable,
}

fn participants(state: &AppState) -> u32 {
    state.rtc.as_ref().map_or(0, |rtc| {
        rtc.shards
            .stats()
            .iter()
            .map(|s| s.participants.load(std::sync::atomic::Ordering::Relaxed) as u32)
            .sum()
    })
}

fn my_info(state: &AppState, cluster: &Cluster) -> NodeInfo {
    NodeInfo {
        node: cluster.node_id().to_owned(),
        shards: state
            .rtc
            .as_ref()
            .map_or(0, |rtc| rtc.shards.stats().len() as u32),
        participants: participants(state),
        draining: state.draining.load(std::sync::atomic::Ordering::Acquire) || state.lifecycle.is_closing(),
    }
}

/// Decides who runs `channel`'s room, recording a new owner when there is none (or it
/// died).
pub async fn resolve_owner(state: &AppState, channel: &ChannelId) -> Owner {
    let (Some(cluster), Some(rtc)) = (&state.cluster, &state.rtc) else {
        return Owner::Here;
    };
    let rooms = match cluster.bucket(rooms_bucket()).await {
        Ok(rooms) => rooms,
        Err(err) => {
            tracing::warn!(error = %err, "cannot open the voice rooms bucket");
            return Owner::Unavailable;
        }
    };
    let me = cluster.node_id();
    for _ in 0..RESOLVE_ATTEMPTS {
        let now = Instant::now();
        let entry = match rooms.entry(channel.as_str()).await {
            Ok(entry) => entry,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read a voice room record");
                return Owner::Unavailable;
            }
        };
        let live_entry = entry.as_ref().filter(|e| e.operation == kv::Operation::Put);
        let current = live_entry.and_then(|e| serde_json::from_slice::<RoomRecord>(&e.value).ok());
        if let Some(record) = &current {
            let live = record.owner == me || rtc.registry().is_live(&record.owner, now);
            if live {
                return owner_of(me, &record.owner);
            }
        }
        // Nobody (alive) holds it: choose, then record the choice unless another node
        // recorded one first.
        let mut live = rtc.registry().live(now);
        if !live.iter().any(|n| n.node == me) {
            live.push(my_info(state, cluster));
        }
        let Some(chosen) = place(channel.as_str(), &live).map(|n| n.node.clone()) else {
            tracing::warn!(channel = %channel, "no live node can take a voice room");
            return Owner::Unavailable;
        };
        let Ok(value) = serde_json::to_vec(&RoomRecord {
            owner: chosen.clone(),
        }) else {
            return Owner::Unavailable;
        };
        // No record (or a deleted one): create; a dead owner's: replace that revision.
        let written = match &entry {
            None => rooms
                .create(channel.as_str(), value.into())
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Some(old) => rooms
                .update(channel.as_str(), value.into(), old.revision)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
        };
        let written = match written {
            Ok(()) => true,
            Err(err) => {
                tracing::debug!(channel = %channel, error = %err, "another node recorded the room first");
                false
            }
        };
        if written {
            tracing::info!(channel = %channel, owner = chosen, "voice room placed");
            return owner_of(me, &chosen);
        }
    }
    Owner::Unavailable
}

fn owner_of(me: &str, owner: &str) -> Owner {
    if owner == me {
        Owner::Here
    } else {
        Owner::There(owner.to_owned())
    }
}

/// Cluster mode: this node may admit a participant into `channel`'s room only if the room
/// record names it (creating the record when there is none).
pub async fn claim(state: &AppState, channel: &ChannelId) -> bool {
    let Some(cluster) = &state.cluster else {
        return true;
    };
    let Ok(rooms) = cluster.bucket(rooms_bucket()).await else {
        return false;
    };
    let me = cluster.node_id();
    let record = serde_json::to_vec(&RoomRecord { owner: me.to_owned() }).unwrap_or_default();
    for _ in 0..RESOLVE_ATTEMPTS {
        match rooms.entry(channel.as_str()).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                return serde_json::from_slice::<RoomRecord>(&entry.value).is_ok_and(|r| r.owner == me);
            }
            Ok(Some(deleted)) => {
                let updated = rooms
                    .update(channel.as_str(), record.clone().into(), deleted.revision)
                    .await;
                if updated.is_ok() {
                    return true;
                }
            }
            Ok(None) => {
                if rooms
                    .create(channel.as_str(), record.clone().into())
                    .await
                    .is_ok()
                {
                    return true;
                }
            }
            Err(_) => return false,
        }
    }
    false
}

/// How often a draining node looks whether its calls have ended.
const DRAIN_POLL: Duration = Duration::from_millis(250);

/// Cluster mode, on SIGTERM: the node says it is draining (its heartbeat takes it out of
/// placement, `/readyz` answers 503) and keeps its calls, with joins that follow their
/// records, until they end or `grace` passes; then the shutdown closes them with 1001.
pub async fn drain(state: &AppState, grace: Duration) {
    state.draining.store(true, std::sync::atomic::Ordering::Release);
    let deadline = tokio::time::Instant::now() + grace;
    let calls = participants(state);
    tracing::info!(
        participants = calls,
        grace_seconds = grace.as_secs(),
        "draining: keeping calls, taking no new rooms"
    );
    while participants(state) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// Starts the registry heartbeat and watch and the room renewal (cluster mode with voice
/// only).
pub fn start(state: Arc<AppState>) {
    let (Some(cluster), Some(_)) = (state.cluster.clone(), state.rtc.as_ref()) else {
        return;
    };
    tokio::spawn(heartbeat(state.clone(), cluster.clone()));
    tokio::spawn(watch_registry(state.clone(), cluster.clone()));
    tokio::spawn(renew_rooms(state, cluster));
}

async fn heartbeat(state: Arc<AppState>, cluster: Cluster) {
    let mut tick = tokio::time::interval(NODE_HEARTBEAT);
    loop {
        tick.tick().await;
        if cluster.state() != NatsState::Connected {
            if let Some(rtc) = &state.rtc {
                rtc.registry().heard_all(Instant::now());
            }
            continue;
        }
        let info = my_info(&state, &cluster);
        let Ok(nodes) = cluster.bucket(nodes_bucket()).await else {
            continue;
        };
        if let Ok(value) = serde_json::to_vec(&info) {
            let put = nodes.put(cluster.node_id(), value.into());
            if let Ok(Err(err)) | Err(err) = tokio::time::timeout(NODE_HEARTBEAT, put)
                .await
                .map_err(|e| e.to_string())
                .map(|r| r.map(drop).map_err(|e| e.to_string()))
            {
                tracing::debug!(error = %err, "node heartbeat not stored");
            }
        }
    }
}

async fn watch_registry(state: Arc<AppState>, cluster: Cluster) {
    let Some(rtc) = &state.rtc else { return };
    loop {
        let watch = match cluster.bucket(nodes_bucket()).await {
            Ok(nodes) => nodes.watch_all().await.map_err(|e| e.to_string()),
            Err(err) => Err(err),
        };
        match watch {
            Ok(mut entries) => {
                rtc.registry().listening(Instant::now());
                while let Some(entry) = entries.next().await {
                    let Ok(entry) = entry else { break };
                    match entry.operation {
                        kv::Operation::Put => {
                            if let Ok(info) = serde_json::from_slice::<NodeInfo>(&entry.value) {
                                rtc.registry().observe(info, Instant::now());
                            }
                        }
                        _ => rtc.registry().forget(&entry.key),
                    }
                }
            }
            Err(err) => tracing::debug!(error = %err, "cannot watch the node registry"),
        }
        tokio::time::sleep(NODE_HEARTBEAT).await;
    }
}

/// Renews the records of this node's rooms while they have participants; deletes them
/// once empty.
async fn renew_rooms(state: Arc<AppState>, cluster: Cluster) {
    let Some(rtc) = &state.rtc else { return };
    let mut tick = tokio::time::interval(ROOM_RENEW);
    let record = serde_json::to_vec(&RoomRecord {
        owner: cluster.node_id().to_owned(),
    })
    .unwrap_or_default();
    loop {
        tick.tick().await;
        let Ok(rooms) = cluster.bucket(rooms_bucket()).await else {
            continue;
        };
        let (held, emptied) = rtc.owned_rooms();
        for channel in held {
            let _ = rooms.put(channel.as_str(), record.clone().into()).await;
        }
        for channel in emptied {
            let _ = rooms.delete(channel.as_str()).await;
        }
    }
}
