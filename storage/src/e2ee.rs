//! End-to-end-encrypted channels, devices and key relay (E2EE.md): the requests the storage
//! thread answers and the records it hands back. Every blob here is opaque base64url text;
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
    /// Devices that got envelopes, with how many are now queued for each.
    pub delivered: Vec<(String, usize)>,
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

/// One E2EE request. Every `*_device_id` the client names has been checked against the
/// actor's device by the front-end (`device_mismatch`) before it gets here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Adds `user` to an e2ee channel (a member adds someone, or `self_join` in dev mode).
    AddMember {
        actor: Actor,
        channel: ChannelId,
        user: UserUid,
        self_join: bool,
        now: UnixSeconds,
    },
    /// Removes `user` (self: leave; else the channel's creator or the server's owner).
    RemoveMember {
        actor: Actor,
        channel: ChannelId,
        user: UserUid,
        now: UnixSeconds,
    },
    Rotate {
        actor: Actor,
        channel: ChannelId,
        now: UnixSeconds,
    },
    Epochs {
        actor: Actor,
        channel: ChannelId,
    },
    Commit {
        actor: Actor,
        channel: ChannelId,
        epoch_id: i64,
        commit_payload: String,
        signature: String,
        now: UnixSeconds,
    },
    FetchCommit {
        actor: Actor,
        channel: ChannelId,
        epoch_id: i64,
    },
    RegisterDevice {
        user: UserUid,
        device_id: String,
        device_pubkey: String,
        device_name: Option<String>,
        limit: usize,
        now: UnixSeconds,
    },
    Devices {
        user: UserUid,
    },
    /// The device's record, if it exists (any user).
    Device {
        device_id: String,
    },
    LinkStart {
        actor: Actor,
        request_id: String,
        ttl: i64,
        now: UnixSeconds,
    },
    LinkConfirm {
        actor: Actor,
        request_id: String,
        approve: bool,
        now: UnixSeconds,
    },
    RevokeDevice {
        user: UserUid,
        device_id: String,
        now: UnixSeconds,
    },
    PublishKeyPackages {
        actor: Actor,
        key_packages: Vec<String>,
        last_resort: Option<String>,
        now: UnixSeconds,
    },
    ClaimKeyPackages {
        user: UserUid,
    },
    PublishEnvelopes {
        actor: Actor,
        channel: ChannelId,
        epoch_id: i64,
        envelopes: Vec<EnvelopeIn>,
        queue_max: usize,
        now: UnixSeconds,
    },
    FetchEnvelopes {
        actor: Actor,
        device_id: String,
        after: i64,
        limit: usize,
    },
    AckEnvelopes {
        actor: Actor,
        device_id: String,
        up_to: i64,
    },
    PutBackup {
        user: UserUid,
        backup_id: String,
        ciphertext_blob: String,
        kdf_metadata: String,
        now: UnixSeconds,
    },
    LatestBackup {
        user: UserUid,
    },
    CreateChallenge {
        challenge: ChallengeRecord,
    },
    /// An unused, unexpired challenge (`challenge_invalid` otherwise); not consumed.
    Challenge {
        challenge_id: String,
        now: UnixSeconds,
    },
    /// Who was a member of `epoch` (immutable once the epoch exists).
    EpochMembers {
        channel: ChannelId,
        epoch: i64,
    },
    /// Consumes a challenge once; then registers the device on first sight (one rule with
    /// `RegisterDevice`) or checks its key, and stores the session (token digest).
    OpenSession {
        challenge_id: String,
        user: UserUid,
        device_id: String,
        device_pubkey: String,
        token_sha256: String,
        ttl: i64,
        device_limit: usize,
        now: UnixSeconds,
    },
    /// The live session for a token digest (not expired, not revoked, device not revoked).
    Session {
        token_sha256: String,
        now: UnixSeconds,
    },
    RevokeSession {
        token_sha256: String,
        now: UnixSeconds,
    },
}

/// The answer to an [`Op`], one variant per kind of result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Membership(MembershipChange),
    Epoch(i64, Vec<UserUid>),
    Epochs(EpochList),
    Committed(Committed),
    Commit(CommitRecord),
    Device(DeviceRecord),
    MaybeDevice(Option<DeviceRecord>),
    Devices(Vec<DeviceRecord>),
    Link {
        request_id: String,
        expires_at: UnixSeconds,
    },
    Stored(usize),
    Claimed(Vec<ClaimedPackage>),
    Published(PublishOutcome),
    Envelopes(Vec<KeyEnvelopeRecord>),
    Backup(BackupRecord),
    Challenge(ChallengeRecord),
    /// The device (as registered now) and the session's scope and expiry.
    Session(DeviceRecord, SessionRecord),
    MaybeSession(Option<SessionRecord>),
    Done,
}
