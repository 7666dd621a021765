//! E2EE.md's rules as storage operations, one module per rule family: membership timelines and epochs, exactly one
//! commit per epoch, devices and links, KeyPackages consumed once, key envelopes only for
//! members of their epoch, backups, challenges and sessions.
//!
//! Every write runs in one transaction, and every rule is checked inside the transaction
//! that depends on it, so the rules hold under concurrency on both backends. The one
//! race that matters across processes, two commits for one epoch, is decided by a guarded
//! `UPDATE ... WHERE committed_at IS NULL` (exactly one changes a row).

mod backups;
mod devices;
mod keys;
mod membership;
mod sessions;

pub use backups::{LatestBackup, PutBackup};
pub use devices::{Device, Devices, LinkConfirm, LinkStart, RegisterDevice, RevokeDevice};
pub use keys::{AckEnvelopes, ClaimKeyPackages, FetchEnvelopes, PublishEnvelopes, PublishKeyPackages};
pub use membership::{AddMember, Commit, EpochMembers, Epochs, FetchCommit, RemoveMember, Rotate};
pub use sessions::{Challenge, CreateChallenge, OpenSession, RevokeSession, Session};

use openchat_core::Denial;
use openchat_core::{ChannelId, ServerId, UnixSeconds, UserUid};

use super::corrupt;
use crate::db::{Db, Param, Row};
use crate::e2ee::{Actor, DeviceRecord, DeviceStatus};
use crate::error::StorageError;

/// One-time KeyPackages kept per device; a publish beyond this is refused.
pub const KEY_PACKAGES_PER_DEVICE_MAX: i64 = 1000;

struct E2eeChannel {
    server_id: ServerId,
    current_epoch: i64,
    created_by: Option<String>,
}

fn uid(raw: String) -> Result<UserUid, StorageError> {
    UserUid::parse_owned(raw).map_err(|e| corrupt("user uid", e))
}

async fn e2ee_channel<D: Db>(db: &mut D, channel: &ChannelId) -> Result<E2eeChannel, StorageError> {
    let row = db
        .query_opt(
            "SELECT server_id, e2ee, current_epoch, created_by_uid FROM channels WHERE id = $1",
            &[Param::Text(channel.as_str())],
        )
        .await?
        .ok_or(StorageError::NotFound("channel"))?;
    if row.int(1)? == 0 {
        return Err(StorageError::denied(
            Denial::ChannelNotE2ee,
            "this channel is not end-to-end encrypted",
        ));
    }
    Ok(E2eeChannel {
        server_id: ServerId::parse_owned(row.text(0)?).map_err(|e| corrupt("server id", e))?,
        current_epoch: row.opt_int(2)?.unwrap_or(1),
        created_by: row.opt_text(3)?,
    })
}

async fn is_current_member<D: Db>(db: &mut D, channel: &ChannelId, user: &str) -> Result<bool, StorageError> {
    Ok(db
        .query_opt(
            "SELECT 1 FROM channel_membership WHERE channel_id = $1 AND user_uid = $2 AND to_epoch IS NULL",
            &[Param::Text(channel.as_str()), Param::Text(user)],
        )
        .await?
        .is_some())
}

pub(crate) async fn member_of_epoch<D: Db>(
    db: &mut D,
    channel: &ChannelId,
    user: &str,
    epoch: i64,
) -> Result<bool, StorageError> {
    Ok(db
        .query_opt(
            "SELECT 1 FROM channel_membership WHERE channel_id = $1 AND user_uid = $2 \
             AND from_epoch <= $3 AND (to_epoch IS NULL OR to_epoch >= $3)",
            &[
                Param::Text(channel.as_str()),
                Param::Text(user),
                Param::Int(epoch),
            ],
        )
        .await?
        .is_some())
}

/// Everyone who was a member of `epoch` (a set that never changes once the epoch exists).
pub(crate) async fn members_of_epoch<D: Db>(
    db: &mut D,
    channel: &ChannelId,
    epoch: i64,
) -> Result<Vec<UserUid>, StorageError> {
    let rows = db
        .query(
            "SELECT DISTINCT user_uid FROM channel_membership WHERE channel_id = $1 \
             AND from_epoch <= $2 AND (to_epoch IS NULL OR to_epoch >= $2) ORDER BY user_uid",
            &[Param::Text(channel.as_str()), Param::Int(epoch)],
        )
        .await?;
    rows.iter().map(|r| uid(r.text(0)?)).collect()
}

async fn current_members<D: Db>(db: &mut D, channel: &ChannelId) -> Result<Vec<UserUid>, StorageError> {
    let rows = db
        .query(
            "SELECT user_uid FROM channel_membership WHERE channel_id = $1 AND to_epoch IS NULL ORDER BY user_uid",
            &[Param::Text(channel.as_str())],
        )
        .await?;
    rows.iter().map(|r| uid(r.text(0)?)).collect()
}

const DEVICE_COLUMNS: &str = "device_id, user_uid, device_pubkey, device_name, status, created_at";

fn device_from_row(row: &Row) -> Result<DeviceRecord, StorageError> {
    Ok(DeviceRecord {
        device_id: row.text(0)?,
        user_uid: uid(row.text(1)?)?,
        device_pubkey: row.text(2)?,
        device_name: row.opt_text(3)?,
        status: DeviceStatus::parse(&row.text(4)?)
            .ok_or_else(|| corrupt("device status", row.text(4).unwrap_or_default()))?,
        created_at: row.int(5)?,
    })
}

async fn device<D: Db>(db: &mut D, device_id: &str) -> Result<Option<DeviceRecord>, StorageError> {
    db.query_opt(
        &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id = $1"),
        &[Param::Text(device_id)],
    )
    .await?
    .as_ref()
    .map(device_from_row)
    .transpose()
}

/// The actor's device, which must be active.
pub(crate) async fn require_active_device<D: Db>(
    db: &mut D,
    user: &str,
    device_id: &str,
) -> Result<(), StorageError> {
    match device(db, device_id).await? {
        Some(d) if d.user_uid.as_str() == user && d.status == DeviceStatus::Active => Ok(()),
        _ => Err(StorageError::denied(
            Denial::DeviceNotActive,
            "this device is not an active device of the caller",
        )),
    }
}

/// Starts the next epoch; returns it.
async fn advance_epoch<D: Db>(
    db: &mut D,
    channel: &ChannelId,
    current: i64,
    cause: &str,
    now: UnixSeconds,
) -> Result<i64, StorageError> {
    let next = current + 1;
    db.execute(
        "UPDATE channels SET current_epoch = $1 WHERE id = $2",
        &[Param::Int(next), Param::Text(channel.as_str())],
    )
    .await?;
    db.execute(
        "INSERT INTO channel_epochs (channel_id, epoch_id, cause, created_at) VALUES ($1, $2, $3, $4)",
        &[
            Param::Text(channel.as_str()),
            Param::Int(next),
            Param::Text(cause),
            Param::Int(now),
        ],
    )
    .await?;
    Ok(next)
}

/// Makes a freshly created channel end-to-end encrypted: epoch 1, its creator the first member.
pub(crate) async fn make_e2ee<D: Db>(
    db: &mut D,
    channel: &ChannelId,
    creator: &UserUid,
    now: UnixSeconds,
) -> Result<(), StorageError> {
    db.execute(
        "UPDATE channels SET e2ee = 1, current_epoch = 1, created_by_uid = $1 WHERE id = $2",
        &[Param::Text(creator.as_str()), Param::Text(channel.as_str())],
    )
    .await?;
    db.execute(
        "INSERT INTO channel_epochs (channel_id, epoch_id, cause, created_at) VALUES ($1, 1, 'create', $2)",
        &[Param::Text(channel.as_str()), Param::Int(now)],
    )
    .await?;
    db.execute(
        "INSERT INTO channel_membership (channel_id, user_uid, from_epoch) VALUES ($1, $2, 1)",
        &[Param::Text(channel.as_str()), Param::Text(creator.as_str())],
    )
    .await
    .map(drop)
}

/// The e2ee posting rules (E2EE.md §3 rule 2), checked inside the message's transaction.
pub(crate) async fn check_post<D: Db>(
    db: &mut D,
    channel: &ChannelId,
    author: &UserUid,
    epoch_id: i64,
    sender_device_id: &str,
) -> Result<(), StorageError> {
    let info = e2ee_channel(db, channel).await?;
    let current = info.current_epoch;
    if !member_of_epoch(db, channel, author.as_str(), current).await? {
        return Err(StorageError::denied_at(
            Denial::NotAMemberOfEpoch,
            "only members of the current epoch may post",
            current,
        ));
    }
    require_active_device(db, author.as_str(), sender_device_id).await?;
    if epoch_id != current {
        return Err(StorageError::denied_at(
            Denial::EpochStale,
            format!("the channel is at epoch {current}"),
            current,
        ));
    }
    let committed = db
        .query_opt(
            "SELECT committed_at FROM channel_epochs WHERE channel_id = $1 AND epoch_id = $2",
            &[Param::Text(channel.as_str()), Param::Int(current)],
        )
        .await?
        .map(|r| r.opt_int(0))
        .transpose()?
        .flatten();
    if committed.is_none() {
        return Err(StorageError::denied_at(
            Denial::EpochCommitPending,
            "the current epoch has no commit yet",
            current,
        ));
    }
    Ok(())
}

/// Whether `viewer` ever belonged to the channel (history reads need that).
pub(crate) async fn ever_member<D: Db>(
    db: &mut D,
    channel: &ChannelId,
    viewer: &str,
) -> Result<bool, StorageError> {
    Ok(db
        .query_opt(
            "SELECT 1 FROM channel_membership WHERE channel_id = $1 AND user_uid = $2",
            &[Param::Text(channel.as_str()), Param::Text(viewer)],
        )
        .await?
        .is_some())
}

fn not_a_member() -> StorageError {
    StorageError::denied(Denial::NotAMember, "the caller is not a member of this channel")
}

async fn next_id<D: Db>(db: &mut D, sql: &str) -> Result<i64, StorageError> {
    Ok(db
        .query_opt(sql, &[])
        .await?
        .map(|r| r.int(0))
        .transpose()?
        .unwrap_or(1))
}

/// The caller's own device, which must be active (`forbidden` for anyone else's).
async fn own_active_device<D: Db>(db: &mut D, actor: &Actor, device_id: &str) -> Result<(), StorageError> {
    match device(db, device_id).await? {
        Some(d) if d.user_uid == actor.user && d.device_id == actor.device => {
            if d.status == DeviceStatus::Active {
                Ok(())
            } else {
                Err(StorageError::denied(
                    Denial::DeviceNotActive,
                    "this device is not active",
                ))
            }
        }
        _ => Err(StorageError::denied(Denial::Forbidden, "not the caller's device")),
    }
}

/// One registration rule for both paths: the first device of a user is active, later ones
/// pending until linked.
async fn register_device<D: Db>(
    db: &mut D,
    user: &UserUid,
    device_id: &str,
    device_pubkey: &str,
    device_name: Option<&str>,
    limit: usize,
    now: UnixSeconds,
) -> Result<DeviceRecord, StorageError> {
    if device(db, device_id).await?.is_some() {
        return Err(StorageError::denied(
            Denial::DeviceExists,
            "this device id is registered",
        ));
    }
    let (all, live) = db
        .query_opt(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN status <> 'revoked' THEN 1 ELSE 0 END), 0) FROM devices \
             WHERE user_uid = $1",
            &[Param::Text(user.as_str())],
        )
        .await?
        .map(|r| Ok::<_, StorageError>((r.int(0)?, r.int(1)?)))
        .transpose()?
        .unwrap_or((0, 0));
    if live as usize >= limit {
        return Err(StorageError::denied(
            Denial::DeviceLimit,
            format!("a user has at most {limit} devices"),
        ));
    }
    let status = if all == 0 {
        DeviceStatus::Active
    } else {
        DeviceStatus::Pending
    };
    db.execute(
        "INSERT INTO devices (device_id, user_uid, device_pubkey, device_name, status, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            Param::Text(device_id),
            Param::Text(user.as_str()),
            Param::Text(device_pubkey),
            Param::OptText(device_name),
            Param::Text(status.as_str()),
            Param::Int(now),
        ],
    )
    .await?;
    Ok(DeviceRecord {
        device_id: device_id.to_owned(),
        user_uid: user.clone(),
        device_pubkey: device_pubkey.to_owned(),
        device_name: device_name.map(str::to_owned),
        status,
        created_at: now,
    })
}
