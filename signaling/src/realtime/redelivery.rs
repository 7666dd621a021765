//! Redelivery to a returning device on any node (cluster mode): how far each (server,
//! user, device)'s last socket got lives in a NATS key-value bucket, so the node its next
//! socket lands on can send what it missed from its own copy of the events log.
//!
//! A socket writes `{open: true, seq: <where it started>}` when it registers and `{open:
//! false, seq: <how far it got>}` when it goes. A node that dies never writes the second;
//! the first then makes the next socket get everything since the dead one started (within
//! the window and the replay bound), which may repeat events the client drops by id but
//! loses none. Every bucket operation is bounded by [`DEVICES_KV_DEADLINE`]; when NATS is
//! away the node falls back to what it remembers itself.

use std::time::Duration;

use async_nats::jetstream::kv;

use crate::cluster::{Cluster, NatsState, SUBJECT_VERSION};
use crate::realtime::hub::{DeviceKey, REDELIVERY_WINDOW_SECS};

/// The longest a realtime connect or disconnect waits for the devices bucket.
pub const DEVICES_KV_DEADLINE: Duration = Duration::from_millis(500);

/// The bucket: per (server, user, device), how far its last socket got. Entries expire
/// after the redelivery window.
fn bucket() -> kv::Config {
    kv::Config {
        bucket: format!("openchat_{SUBJECT_VERSION}_devices"),
        description: "realtime redelivery: how far each device's last socket got".into(),
        history: 1,
        max_age: Duration::from_secs(REDELIVERY_WINDOW_SECS.unsigned_abs()),
        max_value_size: 1024,
        max_bytes: 64 * 1024 * 1024,
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    }
}

/// One device's entry in the bucket.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct DeviceRecord {
    /// The events stream the sequence number belongs to.
    tag: String,
    seq: u64,
    node: String,
    open: bool,
}

/// The bucket key of a device: a digest, because ids may hold characters keys cannot.
fn kv_key(key: &DeviceKey) -> String {
    let mut raw = Vec::new();
    for part in [
        key.server.as_ref().map_or("", |s| s.as_str()),
        key.user.as_str(),
        key.device.as_str(),
    ] {
        raw.extend_from_slice(&(part.len() as u32).to_be_bytes());
        raw.extend_from_slice(part.as_bytes());
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &raw);
    digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the device's last socket (on any node) got to in the stream `tag`, if it had one
/// within the window.
pub async fn last_seen(cluster: &Cluster, key: &DeviceKey, tag: &str) -> Option<u64> {
    if cluster.state() != NatsState::Connected {
        return None;
    }
    let lookup = async {
        let store = cluster.bucket(bucket()).await.ok()?;
        let raw = store.get(kv_key(key)).await.ok()??;
        serde_json::from_slice::<DeviceRecord>(&raw).ok()
    };
    let record = tokio::time::timeout(DEVICES_KV_DEADLINE, lookup).await.ok()??;
    (record.tag == tag).then_some(record.seq)
}

/// Records where the device's socket started (`open`) or got to when it went.
pub async fn remember(cluster: &Cluster, key: &DeviceKey, tag: &str, seq: u64, open: bool) {
    if cluster.state() != NatsState::Connected {
        return;
    }
    let record = DeviceRecord {
        tag: tag.to_owned(),
        seq,
        node: cluster.node_id().to_owned(),
        open,
    };
    let put = async {
        let store = cluster.bucket(bucket()).await?;
        let value = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
        store
            .put(kv_key(key), value.into())
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(DEVICES_KV_DEADLINE, put).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::debug!(error = %err, "could not record a device's progress"),
        Err(_) => tracing::debug!("recording a device's progress timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openchat_core::{ServerId, UserUid};

    #[test]
    fn device_keys_are_valid_bucket_keys_and_keep_their_parts_apart() {
        let key = |server: &str, user: &str, device: &str| DeviceKey {
            server: Some(ServerId::parse(server).unwrap()),
            user: UserUid::parse(user).unwrap(),
            device: device.into(),
        };
        let a = kv_key(&key("srv_1", "uid_ab", "c d/é"));
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, kv_key(&key("srv_1", "uid_a", "bc d/é")));
        assert_eq!(a, kv_key(&key("srv_1", "uid_ab", "c d/é")));
    }
}
