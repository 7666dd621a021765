//! End-to-end-encrypted channels, devices and key relay (E2EE.md): the records the
//! operations of [`queries::e2ee`](crate::queries::e2ee) take and hand back. Every blob here is opaque base64url text;
//! the storage layer never interprets it. The rules of E2EE.md §3 are enforced inside the
//! storage transactions of `queries::e2ee`, so they hold whichever front-end calls them.

use openchat_core::{ChannelId, UnixSeconds, UserUid};

/// A message's encrypted content, instead of `body` in an e2ee channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub epoch_id: i64,
    pub sender_device_id: String,
    pub ciphertext: String,
    pub nonce: String,
    pub aad: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceStatus {
    Active,
    Pending,
    Revoked,
}

impl DeviceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Active => "active",
            DeviceStatus::Pending => "pending",
            DeviceStatus::Revoked => "revoked",
        }
    }

    pub(crate) fn parse(raw: &str) -> Option<Self> {
        match raw {
            "active" => Some(DeviceStatus::Active),
            "pending" => Some(DeviceStatus::Pending),
            "revoked" => Some(DeviceStatus::Revoked),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    pub device_id: String,
    pub user_uid: UserUid,
    pub device_pubkey: String,
    pub device_name: Option<String>,
    pub status: DeviceStatus,
    pub created_at: UnixSeconds,
}

/// A membership change and the channel's epoch after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipChange {
    pub channel_id: ChannelId,
    pub user_uid: UserUid,
    /// `join`, `leave` or `remove`.
    pub change: &'static str,
    pub from_epoch: Option<i64>,
    pub to_epoch: Option<i64>,
    pub current_epoch: i64,
    /// Who is a member now, plus the departed user (the event's audience).
    pub audience: Vec<UserUid>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochRecord {
    pub epoch_id: i64,
    pub cause: String,
    pub committed: bool,
    pub created_at: UnixSeconds,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochList {
    pub channel_id: ChannelId,
    pub current_epoch: i64,
    /// Only the epochs the caller belonged to.
    pub epochs: Vec<EpochRecord>,
    /// The caller's membership spans: `(from_epoch, to_epoch)`.
    pub my_membership: Vec<(i64, Option<i64>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRecord {
    pub epoch_id: i64,
    pub committer_device_id: String,
    pub commit_payload: String,
    pub signature: String,
    pub committed_at: UnixSeconds,
}

/// A stored commit and the members of its epoch (the event's audience).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub epoch_id: i64,
    pub committed_at: UnixSeconds,
    pub audience: Vec<UserUid>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedPackage {
    pub device_id: String,
    pub key_package: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeIn {
    pub target_device_id: String,
    pub encrypted_key_blob: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishOutcome {
    pub accepted: usize,
    /// `(target_device_id, code)` per refused envelope.
    pub rejected: Vec<(String, &'static str)>,
    /// Devices that got envelopes: `(device id, its owner, envelopes now queued for it)`.
    pub delivered: Vec<(String, UserUid, usize)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEnvelopeRecord {
    pub envelope_id: i64,
    pub channel_id: ChannelId,
    pub epoch_id: i64,
    pub sender_device_id: String,
    pub encrypted_key_blob: String,
    pub created_at: UnixSeconds,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRecord {
    pub backup_id: String,
    pub ciphertext_blob: String,
    /// The client's JSON object, stored as text.
    pub kdf_metadata: String,
    pub created_at: UnixSeconds,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeRecord {
    pub challenge_id: String,
    pub user_uid: UserUid,
    pub device_id: String,
    pub nonce: String,
    pub expires_at: UnixSeconds,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub user_uid: UserUid,
    pub device_id: String,
    /// `full` or `link`.
    pub scope: String,
    pub expires_at: UnixSeconds,
}

/// Who asks: the authenticated user and device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub user: UserUid,
    pub device: String,
}

/// A started link request and when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRequest {
    pub request_id: String,
    pub expires_at: UnixSeconds,
}
