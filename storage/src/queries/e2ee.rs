//! E2EE.md's rules as storage transactions: membership timelines and epochs, exactly one
//! commit per epoch, devices and links, KeyPackages consumed once, key envelopes only for
//! members of their epoch, backups, challenges and sessions.
//!
//! Every write runs in one transaction, and every rule is checked inside the transaction
//! that depends on it, so the rules hold under concurrency on both backends. The one
//! race that matters across processes, two commits for one epoch, is decided by a guarded
//! `UPDATE ... WHERE committed_at IS NULL` (exactly one changes a row).

use openchat_core::Denial;
use openchat_core::{ChannelId, ServerId, UnixSeconds, UserUid};

use super::corrupt;
use crate::db::{Db, Param, Row, in_transaction};
use crate::e2ee::{
    Actor, BackupRecord, ChallengeRecord, ClaimedPackage, CommitRecord, Committed, DeviceRecord,
    DeviceStatus, EpochList, EpochRecord, KeyEnvelopeRecord, MembershipChange, Op, Outcome, PublishOutcome,
    SessionRecord,
};
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

pub(crate) async fn run<D: Db>(db: &mut D, op: Op) -> Result<Outcome, StorageError> {
    match op {
        Op::AddMember {
            actor,
            channel,
            user,
            self_join,
            now,
        } => in_transaction(db, async |db: &mut D| {
            let info = e2ee_channel(db, &channel).await?;
            let adding_self = self_join && actor.user == user;
            if !adding_self && !is_current_member(db, &channel, actor.user.as_str()).await? {
                return Err(not_a_member());
            }
            if is_current_member(db, &channel, user.as_str()).await? {
                return Err(StorageError::denied(Denial::AlreadyMember, "already a member"));
            }
            let epoch = advance_epoch(db, &channel, info.current_epoch, "join", now).await?;
            db.execute(
                "INSERT INTO channel_membership (channel_id, user_uid, from_epoch) VALUES ($1, $2, $3)",
                &[Param::Text(channel.as_str()), Param::Text(user.as_str()), Param::Int(epoch)],
            )
            .await?;
            let audience = current_members(db, &channel).await?;
            Ok(Outcome::Membership(MembershipChange {
                channel_id: channel.clone(),
                user_uid: user.clone(),
                change: "join",
                from_epoch: Some(epoch),
                to_epoch: None,
                current_epoch: epoch,
                audience,
            }))
        })
        .await,
        Op::RemoveMember {
            actor,
            channel,
            user,
            now,
        } => in_transaction(db, async |db: &mut D| {
            let info = e2ee_channel(db, &channel).await?;
            if !is_current_member(db, &channel, actor.user.as_str()).await? {
                return Err(not_a_member());
            }
            if !is_current_member(db, &channel, user.as_str()).await? {
                return Err(StorageError::NotFound("member"));
            }
            let leaving = actor.user == user;
            if !leaving {
                let owner = db
                    .query_opt(
                        "SELECT owner_uid FROM servers WHERE id = $1",
                        &[Param::Text(info.server_id.as_str())],
                    )
                    .await?
                    .map(|r| r.opt_text(0))
                    .transpose()?
                    .flatten();
                let allowed = info.created_by.as_deref() == Some(actor.user.as_str())
                    || owner.as_deref() == Some(actor.user.as_str());
                if !allowed {
                    return Err(StorageError::denied(
                        Denial::Forbidden,
                        "only the channel's creator or the server's owner may remove members",
                    ));
                }
            }
            let cause = if leaving { "leave" } else { "remove" };
            let epoch = advance_epoch(db, &channel, info.current_epoch, cause, now).await?;
            db.execute(
                "UPDATE channel_membership SET to_epoch = $1 WHERE channel_id = $2 AND user_uid = $3 AND to_epoch IS NULL",
                &[Param::Int(epoch - 1), Param::Text(channel.as_str()), Param::Text(user.as_str())],
            )
            .await?;
            let mut audience = current_members(db, &channel).await?;
            audience.push(user.clone());
            Ok(Outcome::Membership(MembershipChange {
                channel_id: channel.clone(),
                user_uid: user.clone(),
                change: cause,
                from_epoch: None,
                to_epoch: Some(epoch - 1),
                current_epoch: epoch,
                audience,
            }))
        })
        .await,
        Op::Rotate { actor, channel, now } => in_transaction(db, async |db: &mut D| {
            let info = e2ee_channel(db, &channel).await?;
            if !is_current_member(db, &channel, actor.user.as_str()).await? {
                return Err(not_a_member());
            }
            let epoch = advance_epoch(db, &channel, info.current_epoch, "rotate", now).await?;
            let audience = current_members(db, &channel).await?;
            Ok(Outcome::Epoch(epoch, audience))
        })
        .await,
        Op::Epochs { actor, channel } => in_transaction(db, async |db: &mut D| {
            let info = e2ee_channel(db, &channel).await?;
            let spans = db
                .query(
                    "SELECT from_epoch, to_epoch FROM channel_membership WHERE channel_id = $1 AND user_uid = $2 \
                     ORDER BY from_epoch",
                    &[Param::Text(channel.as_str()), Param::Text(actor.user.as_str())],
                )
                .await?
                .iter()
                .map(|r| Ok((r.int(0)?, r.opt_int(1)?)))
                .collect::<Result<Vec<_>, StorageError>>()?;
            if spans.is_empty() {
                return Err(not_a_member());
            }
            let rows = db
                .query(
                    "SELECT epoch_id, cause, committed_at, created_at FROM channel_epochs WHERE channel_id = $1 \
                     ORDER BY epoch_id",
                    &[Param::Text(channel.as_str())],
                )
                .await?;
            let mut epochs = Vec::new();
            for row in &rows {
                let epoch = row.int(0)?;
                if spans
                    .iter()
                    .any(|(from, to)| *from <= epoch && to.is_none_or(|to| epoch <= to))
                {
                    epochs.push(EpochRecord {
                        epoch_id: epoch,
                        cause: row.text(1)?,
                        committed: row.opt_int(2)?.is_some(),
                        created_at: row.int(3)?,
                    });
                }
            }
            Ok(Outcome::Epochs(EpochList {
                channel_id: channel.clone(),
                current_epoch: info.current_epoch,
                epochs,
                my_membership: spans,
            }))
        })
        .await,
        Op::Commit {
            actor,
            channel,
            epoch_id,
            commit_payload,
            signature,
            now,
        } => in_transaction(db, async |db: &mut D| {
            let info = e2ee_channel(db, &channel).await?;
            let current = info.current_epoch;
            if !member_of_epoch(db, &channel, actor.user.as_str(), epoch_id).await? {
                return Err(StorageError::denied_at(
                    Denial::NotAMemberOfEpoch,
                    "only a member of that epoch may commit it",
                    current,
                ));
            }
            require_active_device(db, actor.user.as_str(), &actor.device).await?;
            let committed = db
                .query_opt(
                    "SELECT committed_at FROM channel_epochs WHERE channel_id = $1 AND epoch_id = $2",
                    &[Param::Text(channel.as_str()), Param::Int(epoch_id)],
                )
                .await?;
            let exists = || StorageError::denied_at(Denial::EpochCommitExists, "this epoch is already committed", current);
            match committed {
                Some(row) if row.opt_int(0)?.is_some() => return Err(exists()),
                Some(_) if epoch_id == current => {}
                _ => {
                    return Err(StorageError::denied_at(
                        Denial::EpochNotCurrent,
                        format!("the channel is at epoch {current}"),
                        current,
                    ));
                }
            }
            let changed = db
                .execute(
                    "UPDATE channel_epochs SET committer_device_id = $1, commit_payload = $2, signature = $3, \
                     committed_at = $4 WHERE channel_id = $5 AND epoch_id = $6 AND committed_at IS NULL",
                    &[
                        Param::Text(&actor.device),
                        Param::Text(&commit_payload),
                        Param::Text(&signature),
                        Param::Int(now),
                        Param::Text(channel.as_str()),
                        Param::Int(epoch_id),
                    ],
                )
                .await?;
            if changed == 0 {
                return Err(exists());
            }
            let audience = members_of_epoch(db, &channel, epoch_id).await?;
            Ok(Outcome::Committed(Committed {
                epoch_id,
                committed_at: now,
                audience,
            }))
        })
        .await,
        Op::FetchCommit {
            actor,
            channel,
            epoch_id,
        } => in_transaction(db, async |db: &mut D| {
            e2ee_channel(db, &channel).await?;
            let user = actor.user.as_str();
            if !member_of_epoch(db, &channel, user, epoch_id).await?
                && !member_of_epoch(db, &channel, user, epoch_id - 1).await?
            {
                return Err(StorageError::denied(
                    Denial::NotAMemberOfEpoch,
                    "only members of that epoch or the one before may fetch its commit",
                ));
            }
            let row = db
                .query_opt(
                    "SELECT committer_device_id, commit_payload, signature, committed_at FROM channel_epochs \
                     WHERE channel_id = $1 AND epoch_id = $2 AND committed_at IS NOT NULL",
                    &[Param::Text(channel.as_str()), Param::Int(epoch_id)],
                )
                .await?
                .ok_or(StorageError::NotFound("epoch_commit"))?;
            Ok(Outcome::Commit(CommitRecord {
                epoch_id,
                committer_device_id: row.text(0)?,
                commit_payload: row.text(1)?,
                signature: row.text(2)?,
                committed_at: row.int(3)?,
            }))
        })
        .await,
        Op::RegisterDevice {
            user,
            device_id,
            device_pubkey,
            device_name,
            limit,
            now,
        } => in_transaction(db, async |db: &mut D| {
            register_device(db, &user, &device_id, &device_pubkey, device_name.as_deref(), limit, now)
                .await
                .map(Outcome::Device)
        })
        .await,
        Op::Devices { user } => {
            let rows = db
                .query(
                    &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE user_uid = $1 ORDER BY created_at, device_id"),
                    &[Param::Text(user.as_str())],
                )
                .await?;
            Ok(Outcome::Devices(rows.iter().map(device_from_row).collect::<Result<_, _>>()?))
        }
        Op::Device { device_id } => Ok(Outcome::MaybeDevice(device(db, &device_id).await?)),
        Op::LinkStart {
            actor,
            request_id,
            ttl,
            now,
        } => in_transaction(db, async |db: &mut D| {
            match device(db, &actor.device).await? {
                Some(d) if d.user_uid == actor.user && d.status == DeviceStatus::Pending => {}
                _ => {
                    return Err(StorageError::denied(
                        Denial::DeviceNotPending,
                        "only a pending device may ask to be linked",
                    ));
                }
            }
            let expires_at = now + ttl;
            db.execute(
                "INSERT INTO device_links (request_id, user_uid, device_id, expires_at) VALUES ($1, $2, $3, $4)",
                &[
                    Param::Text(&request_id),
                    Param::Text(actor.user.as_str()),
                    Param::Text(&actor.device),
                    Param::Int(expires_at),
                ],
            )
            .await?;
            Ok(Outcome::Link {
                request_id: request_id.clone(),
                expires_at,
            })
        })
        .await,
        Op::LinkConfirm {
            actor,
            request_id,
            approve,
            now,
        } => in_transaction(db, async |db: &mut D| {
            require_active_device(db, actor.user.as_str(), &actor.device).await?;
            let row = db
                .query_opt(
                    "SELECT device_id, expires_at FROM device_links WHERE request_id = $1 AND user_uid = $2 \
                     AND decided_at IS NULL",
                    &[Param::Text(&request_id), Param::Text(actor.user.as_str())],
                )
                .await?
                .ok_or(StorageError::NotFound("link_request"))?;
            let (target, expires_at) = (row.text(0)?, row.int(1)?);
            if now >= expires_at {
                return Err(StorageError::denied(Denial::LinkRequestExpired, "the link request expired"));
            }
            db.execute(
                "UPDATE device_links SET decided_at = $1 WHERE request_id = $2",
                &[Param::Int(now), Param::Text(&request_id)],
            )
            .await?;
            let status = if approve { "active" } else { "revoked" };
            db.execute(
                "UPDATE devices SET status = $1, revoked_at = $2 WHERE device_id = $3 AND status = 'pending'",
                &[
                    Param::Text(status),
                    if approve { Param::OptText(None) } else { Param::Int(now) },
                    Param::Text(&target),
                ],
            )
            .await?;
            device(db, &target)
                .await?
                .map(Outcome::Device)
                .ok_or(StorageError::NotFound("device"))
        })
        .await,
        Op::RevokeDevice { user, device_id, now } => in_transaction(db, async |db: &mut D| {
            match device(db, &device_id).await? {
                Some(d) if d.user_uid == user => {}
                _ => return Err(StorageError::NotFound("device")),
            }
            db.execute(
                "UPDATE devices SET status = 'revoked', revoked_at = $1 WHERE device_id = $2 AND status <> 'revoked'",
                &[Param::Int(now), Param::Text(&device_id)],
            )
            .await?;
            // Rule 5: nothing more for it, and its sessions end.
            db.execute("DELETE FROM key_envelopes WHERE target_device_id = $1", &[Param::Text(&device_id)])
                .await?;
            db.execute("DELETE FROM key_packages WHERE device_id = $1", &[Param::Text(&device_id)])
                .await?;
            db.execute(
                "UPDATE sessions SET revoked_at = $1 WHERE device_id = $2 AND revoked_at IS NULL",
                &[Param::Int(now), Param::Text(&device_id)],
            )
            .await?;
            device(db, &device_id)
                .await?
                .map(Outcome::Device)
                .ok_or(StorageError::NotFound("device"))
        })
        .await,
        Op::PublishKeyPackages {
            actor,
            key_packages,
            last_resort,
            now,
        } => in_transaction(db, async |db: &mut D| {
            match device(db, &actor.device).await? {
                Some(d) if d.user_uid == actor.user && d.status != DeviceStatus::Revoked => {}
                _ => {
                    return Err(StorageError::denied(
                        Denial::DeviceNotActive,
                        "this device is not a device of the caller",
                    ));
                }
            }
            let stored = db
                .query_opt(
                    "SELECT COUNT(*) FROM key_packages WHERE device_id = $1 AND last_resort = 0",
                    &[Param::Text(&actor.device)],
                )
                .await?
                .map(|r| r.int(0))
                .transpose()?
                .unwrap_or(0);
            if stored + key_packages.len() as i64 > KEY_PACKAGES_PER_DEVICE_MAX {
                return Err(StorageError::denied(
                    Denial::KeyPackageLimit,
                    format!("a device keeps at most {KEY_PACKAGES_PER_DEVICE_MAX} one-time KeyPackages"),
                ));
            }
            let mut id = next_id(db, "SELECT COALESCE(MAX(id), 0) + 1 FROM key_packages").await?;
            let mut count = 0;
            let lasts = last_resort.iter().map(|p| (p, 1));
            for (package, last) in key_packages.iter().map(|p| (p, 0)).chain(lasts) {
                if last == 1 {
                    db.execute(
                        "DELETE FROM key_packages WHERE device_id = $1 AND last_resort = 1",
                        &[Param::Text(&actor.device)],
                    )
                    .await?;
                }
                db.execute(
                    "INSERT INTO key_packages (id, device_id, user_uid, key_package, last_resort, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        Param::Int(id),
                        Param::Text(&actor.device),
                        Param::Text(actor.user.as_str()),
                        Param::Text(package),
                        Param::Int(last),
                        Param::Int(now),
                    ],
                )
                .await?;
                id += 1;
                count += 1;
            }
            Ok(Outcome::Stored(count))
        })
        .await,
        Op::ClaimKeyPackages { user } => in_transaction(db, async |db: &mut D| {
            let devices = db
                .query(
                    "SELECT device_id, status FROM devices WHERE user_uid = $1 ORDER BY created_at, device_id",
                    &[Param::Text(user.as_str())],
                )
                .await?;
            if devices.is_empty() {
                return Err(StorageError::NotFound("user"));
            }
            let mut packages = Vec::new();
            for row in &devices {
                if row.text(1)? != "active" {
                    continue;
                }
                let device_id = row.text(0)?;
                let one_time = db
                    .query_opt(
                        "SELECT id, key_package FROM key_packages WHERE device_id = $1 AND last_resort = 0 \
                         ORDER BY id LIMIT 1",
                        &[Param::Text(&device_id)],
                    )
                    .await?;
                let package = match one_time {
                    Some(found) => {
                        // Consumed once: the DELETE must take the row we read.
                        let taken = db
                            .execute("DELETE FROM key_packages WHERE id = $1", &[Param::Int(found.int(0)?)])
                            .await?;
                        if taken != 1 {
                            return Err(StorageError::conflict("conflict", "KeyPackage taken concurrently"));
                        }
                        Some(found.text(1)?)
                    }
                    None => db
                        .query_opt(
                            "SELECT key_package FROM key_packages WHERE device_id = $1 AND last_resort = 1",
                            &[Param::Text(&device_id)],
                        )
                        .await?
                        .map(|r| r.text(0))
                        .transpose()?,
                };
                if let Some(key_package) = package {
                    packages.push(ClaimedPackage { device_id, key_package });
                }
            }
            Ok(Outcome::Claimed(packages))
        })
        .await,
        Op::PublishEnvelopes {
            actor,
            channel,
            epoch_id,
            envelopes,
            queue_max,
            now,
        } => in_transaction(db, async |db: &mut D| {
            e2ee_channel(db, &channel).await?;
            if !member_of_epoch(db, &channel, actor.user.as_str(), epoch_id).await? {
                return Err(StorageError::denied(
                    Denial::NotAMemberOfEpoch,
                    "only members of that epoch may send its keys",
                ));
            }
            require_active_device(db, actor.user.as_str(), &actor.device).await?;
            let mut id = next_id(db, "SELECT COALESCE(MAX(envelope_id), 0) + 1 FROM key_envelopes").await?;
            let mut outcome = PublishOutcome {
                accepted: 0,
                rejected: Vec::new(),
                delivered: Vec::new(),
            };
            for envelope in &envelopes {
                let target = &envelope.target_device_id;
                let code = match device(db, target).await? {
                    Some(d) if d.status == DeviceStatus::Active => {
                        if !member_of_epoch(db, &channel, d.user_uid.as_str(), epoch_id).await? {
                            Some("target_not_member_of_epoch")
                        } else {
                            None
                        }
                    }
                    _ => Some("target_device_not_active"),
                };
                if let Some(code) = code {
                    outcome.rejected.push((target.clone(), code));
                    continue;
                }
                let queued = db
                    .query_opt(
                        "SELECT COUNT(*) FROM key_envelopes WHERE target_device_id = $1",
                        &[Param::Text(target)],
                    )
                    .await?
                    .map(|r| r.int(0))
                    .transpose()?
                    .unwrap_or(0) as usize;
                if queued >= queue_max {
                    outcome.rejected.push((target.clone(), "target_queue_full"));
                    continue;
                }
                db.execute(
                    "INSERT INTO key_envelopes (envelope_id, target_device_id, channel_id, epoch_id, sender_device_id, \
                     blob, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[
                        Param::Int(id),
                        Param::Text(target),
                        Param::Text(channel.as_str()),
                        Param::Int(epoch_id),
                        Param::Text(&actor.device),
                        Param::Text(&envelope.encrypted_key_blob),
                        Param::Int(now),
                    ],
                )
                .await?;
                id += 1;
                outcome.accepted += 1;
                match outcome.delivered.iter_mut().find(|(d, _)| d == target) {
                    Some((_, count)) => *count = queued + 1,
                    None => outcome.delivered.push((target.clone(), queued + 1)),
                }
            }
            Ok(Outcome::Published(outcome))
        })
        .await,
        Op::FetchEnvelopes {
            actor,
            device_id,
            after,
            limit,
        } => in_transaction(db, async |db: &mut D| {
            own_active_device(db, &actor, &device_id).await?;
            let rows = db
                .query(
                    "SELECT envelope_id, channel_id, epoch_id, sender_device_id, blob, created_at FROM key_envelopes \
                     WHERE target_device_id = $1 AND envelope_id > $2 ORDER BY envelope_id LIMIT $3",
                    &[Param::Text(&device_id), Param::Int(after), Param::Int(limit as i64)],
                )
                .await?;
            let envelopes = rows
                .iter()
                .map(|r| {
                    Ok(KeyEnvelopeRecord {
                        envelope_id: r.int(0)?,
                        channel_id: ChannelId::parse_owned(r.text(1)?).map_err(|e| corrupt("channel id", e))?,
                        epoch_id: r.int(2)?,
                        sender_device_id: r.text(3)?,
                        encrypted_key_blob: r.text(4)?,
                        created_at: r.int(5)?,
                    })
                })
                .collect::<Result<Vec<_>, StorageError>>()?;
            Ok(Outcome::Envelopes(envelopes))
        })
        .await,
        Op::AckEnvelopes {
            actor,
            device_id,
            up_to,
        } => in_transaction(db, async |db: &mut D| {
            own_active_device(db, &actor, &device_id).await?;
            let deleted = db
                .execute(
                    "DELETE FROM key_envelopes WHERE target_device_id = $1 AND envelope_id <= $2",
                    &[Param::Text(&device_id), Param::Int(up_to)],
                )
                .await?;
            Ok(Outcome::Stored(deleted as usize))
        })
        .await,
        Op::PutBackup {
            user,
            backup_id,
            ciphertext_blob,
            kdf_metadata,
            now,
        } => in_transaction(db, async |db: &mut D| {
            let seq = db
                .query_opt(
                    "SELECT COALESCE(MAX(seq), 0) + 1 FROM key_backups WHERE user_uid = $1",
                    &[Param::Text(user.as_str())],
                )
                .await?
                .map(|r| r.int(0))
                .transpose()?
                .unwrap_or(1);
            db.execute(
                "INSERT INTO key_backups (backup_id, user_uid, seq, ciphertext_blob, kdf_metadata, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    Param::Text(&backup_id),
                    Param::Text(user.as_str()),
                    Param::Int(seq),
                    Param::Text(&ciphertext_blob),
                    Param::Text(&kdf_metadata),
                    Param::Int(now),
                ],
            )
            .await?;
            // Older backups are superseded; keep only the latest two.
            db.execute(
                "DELETE FROM key_backups WHERE user_uid = $1 AND seq < $2",
                &[Param::Text(user.as_str()), Param::Int(seq - 1)],
            )
            .await?;
            Ok(Outcome::Backup(BackupRecord {
                backup_id: backup_id.clone(),
                ciphertext_blob: String::new(),
                kdf_metadata: kdf_metadata.clone(),
                created_at: now,
            }))
        })
        .await,
        Op::LatestBackup { user } => {
            let row = db
                .query_opt(
                    "SELECT backup_id, ciphertext_blob, kdf_metadata, created_at FROM key_backups WHERE user_uid = $1 \
                     ORDER BY seq DESC LIMIT 1",
                    &[Param::Text(user.as_str())],
                )
                .await?
                .ok_or(StorageError::NotFound("backup"))?;
            Ok(Outcome::Backup(BackupRecord {
                backup_id: row.text(0)?,
                ciphertext_blob: row.text(1)?,
                kdf_metadata: row.text(2)?,
                created_at: row.int(3)?,
            }))
        }
        Op::CreateChallenge { challenge } => {
            db.execute(
                "INSERT INTO auth_challenges (challenge_id, user_uid, device_id, nonce, expires_at) \
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    Param::Text(&challenge.challenge_id),
                    Param::Text(challenge.user_uid.as_str()),
                    Param::Text(&challenge.device_id),
                    Param::Text(&challenge.nonce),
                    Param::Int(challenge.expires_at),
                ],
            )
            .await?;
            Ok(Outcome::Challenge(challenge))
        }
        Op::Challenge { challenge_id, now } => {
            let row = db
                .query_opt(
                    "SELECT challenge_id, user_uid, device_id, nonce, expires_at FROM auth_challenges \
                     WHERE challenge_id = $1 AND used_at IS NULL AND expires_at > $2",
                    &[Param::Text(&challenge_id), Param::Int(now)],
                )
                .await?
                .ok_or_else(|| StorageError::denied(Denial::ChallengeInvalid, "unknown, used or expired challenge"))?;
            Ok(Outcome::Challenge(ChallengeRecord {
                challenge_id: row.text(0)?,
                user_uid: uid(row.text(1)?)?,
                device_id: row.text(2)?,
                nonce: row.text(3)?,
                expires_at: row.int(4)?,
            }))
        }
        Op::EpochMembers { channel, epoch } => {
            let members = members_of_epoch(db, &channel, epoch).await?;
            Ok(Outcome::Epoch(epoch, members))
        }
        Op::OpenSession {
            challenge_id,
            user,
            device_id,
            device_pubkey,
            token_sha256,
            ttl,
            device_limit,
            now,
        } => in_transaction(db, async |db: &mut D| {
            // Single use: exactly one caller marks it used.
            let used = db
                .execute(
                    "UPDATE auth_challenges SET used_at = $1 WHERE challenge_id = $2 AND user_uid = $3 \
                     AND device_id = $4 AND used_at IS NULL AND expires_at > $1",
                    &[
                        Param::Int(now),
                        Param::Text(&challenge_id),
                        Param::Text(user.as_str()),
                        Param::Text(&device_id),
                    ],
                )
                .await?;
            if used != 1 {
                return Err(StorageError::denied(
                    Denial::ChallengeInvalid,
                    "unknown, used or expired challenge",
                ));
            }
            let record = match device(db, &device_id).await? {
                Some(d) if d.user_uid != user => {
                    return Err(StorageError::denied(
                        Denial::DeviceKeyMismatch,
                        "this device id belongs to another user",
                    ));
                }
                Some(d) if d.status == DeviceStatus::Revoked => {
                    return Err(StorageError::denied(Denial::DeviceRevoked, "this device was revoked"));
                }
                Some(d) if d.device_pubkey != device_pubkey => {
                    return Err(StorageError::denied(
                        Denial::DeviceKeyMismatch,
                        "the key does not match the registered device key",
                    ));
                }
                Some(d) => d,
                None => register_device(db, &user, &device_id, &device_pubkey, None, device_limit, now).await?,
            };
            let scope = if record.status == DeviceStatus::Active { "full" } else { "link" };
            let expires_at = now + ttl;
            db.execute(
                "INSERT INTO sessions (token_sha256, user_uid, device_id, scope, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    Param::Text(&token_sha256),
                    Param::Text(user.as_str()),
                    Param::Text(&device_id),
                    Param::Text(scope),
                    Param::Int(now),
                    Param::Int(expires_at),
                ],
            )
            .await?;
            Ok(Outcome::Session(
                record,
                SessionRecord {
                    user_uid: user.clone(),
                    device_id: device_id.clone(),
                    scope: scope.to_owned(),
                    expires_at,
                },
            ))
        })
        .await,
        Op::Session { token_sha256, now } => {
            // The scope follows the device: a link session becomes full once linked.
            let row = db
                .query_opt(
                    "SELECT s.user_uid, s.device_id, d.status, s.expires_at FROM sessions s \
                     JOIN devices d ON d.device_id = s.device_id \
                     WHERE s.token_sha256 = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 AND d.status <> 'revoked'",
                    &[Param::Text(&token_sha256), Param::Int(now)],
                )
                .await?;
            let session = row
                .map(|r| {
                    Ok::<_, StorageError>(SessionRecord {
                        user_uid: uid(r.text(0)?)?,
                        device_id: r.text(1)?,
                        scope: if r.text(2)? == "active" { "full" } else { "link" }.to_owned(),
                        expires_at: r.int(3)?,
                    })
                })
                .transpose()?;
            Ok(Outcome::MaybeSession(session))
        }
        Op::RevokeSession { token_sha256, now } => {
            db.execute(
                "UPDATE sessions SET revoked_at = $1 WHERE token_sha256 = $2 AND revoked_at IS NULL",
                &[Param::Int(now), Param::Text(&token_sha256)],
            )
            .await?;
            Ok(Outcome::Done)
        }
    }
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
