//! Membership timelines and epochs: joins, leaves and removals advance the epoch; exactly one commit per epoch; members of an epoch.

use openchat_core::Denial;
use openchat_core::{ChannelId, UnixSeconds, UserUid};

use super::{
    advance_epoch, current_members, e2ee_channel, is_current_member, member_of_epoch, members_of_epoch,
    not_a_member, require_active_device,
};
use crate::db::{Db, Param, in_transaction};
use crate::e2ee::{Actor, CommitRecord, Committed, EpochList, EpochRecord, MembershipChange};
use crate::error::StorageError;
use crate::query::Query;

/// Adds `user` to an e2ee channel (a member adds someone, or `self_join` in dev mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddMember {
    pub actor: Actor,
    pub channel: ChannelId,
    pub user: UserUid,
    pub self_join: bool,
    pub now: UnixSeconds,
}

impl Query for AddMember {
    type Output = MembershipChange;
    const NAME: &'static str = "e2ee_add_member";

    async fn run<D: Db>(self, db: &mut D) -> Result<MembershipChange, StorageError> {
        let AddMember {
            actor,
            channel,
            user,
            self_join,
            now,
        } = self;
        in_transaction(db, async |db: &mut D| {
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
                &[
                    Param::Text(channel.as_str()),
                    Param::Text(user.as_str()),
                    Param::Int(epoch),
                ],
            )
            .await?;
            let audience = current_members(db, &channel).await?;
            Ok(MembershipChange {
                channel_id: channel.clone(),
                user_uid: user.clone(),
                change: "join",
                from_epoch: Some(epoch),
                to_epoch: None,
                current_epoch: epoch,
                audience,
            })
        })
        .await
    }
}

/// Removes `user` (self: leave; else the channel's creator or the server's owner).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoveMember {
    pub actor: Actor,
    pub channel: ChannelId,
    pub user: UserUid,
    pub now: UnixSeconds,
}

impl Query for RemoveMember {
    type Output = MembershipChange;
    const NAME: &'static str = "e2ee_remove_member";

    async fn run<D: Db>(self, db: &mut D) -> Result<MembershipChange, StorageError> {
        let RemoveMember {
            actor,
            channel,
            user,
            now,
        } = self;
        in_transaction(db, async |db: &mut D| {
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
            Ok(MembershipChange {
                channel_id: channel.clone(),
                user_uid: user.clone(),
                change: cause,
                from_epoch: None,
                to_epoch: Some(epoch - 1),
                current_epoch: epoch,
                audience,
            })
        })
        .await
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotate {
    pub actor: Actor,
    pub channel: ChannelId,
    pub now: UnixSeconds,
}

impl Query for Rotate {
    type Output = (i64, Vec<UserUid>);
    const NAME: &'static str = "e2ee_rotate";

    async fn run<D: Db>(self, db: &mut D) -> Result<(i64, Vec<UserUid>), StorageError> {
        let Rotate { actor, channel, now } = self;
        in_transaction(db, async |db: &mut D| {
            let info = e2ee_channel(db, &channel).await?;
            if !is_current_member(db, &channel, actor.user.as_str()).await? {
                return Err(not_a_member());
            }
            let epoch = advance_epoch(db, &channel, info.current_epoch, "rotate", now).await?;
            let audience = current_members(db, &channel).await?;
            Ok((epoch, audience))
        })
        .await
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Epochs {
    pub actor: Actor,
    pub channel: ChannelId,
}

impl Query for Epochs {
    type Output = EpochList;
    const NAME: &'static str = "e2ee_epochs";

    async fn run<D: Db>(self, db: &mut D) -> Result<EpochList, StorageError> {
        let Epochs { actor, channel } = self;
        in_transaction(db, async |db: &mut D| {
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
            Ok(EpochList {
                channel_id: channel.clone(),
                current_epoch: info.current_epoch,
                epochs,
                my_membership: spans,
            })
        })
        .await
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub actor: Actor,
    pub channel: ChannelId,
    pub epoch_id: i64,
    pub commit_payload: String,
    pub signature: String,
    pub now: UnixSeconds,
}

impl Query for Commit {
    type Output = Committed;
    const NAME: &'static str = "e2ee_commit";

    async fn run<D: Db>(self, db: &mut D) -> Result<Committed, StorageError> {
        let Commit {
            actor,
            channel,
            epoch_id,
            commit_payload,
            signature,
            now,
        } = self;
        in_transaction(db, async |db: &mut D| {
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
            Ok(Committed {
                epoch_id,
                committed_at: now,
                audience,
            })
        })
        .await
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchCommit {
    pub actor: Actor,
    pub channel: ChannelId,
    pub epoch_id: i64,
}

impl Query for FetchCommit {
    type Output = CommitRecord;
    const NAME: &'static str = "e2ee_fetch_commit";

    async fn run<D: Db>(self, db: &mut D) -> Result<CommitRecord, StorageError> {
        let FetchCommit {
            actor,
            channel,
            epoch_id,
        } = self;
        in_transaction(db, async |db: &mut D| {
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
            Ok(CommitRecord {
                epoch_id,
                committer_device_id: row.text(0)?,
                commit_payload: row.text(1)?,
                signature: row.text(2)?,
                committed_at: row.int(3)?,
            })
        })
        .await
    }
}

/// Who was a member of `epoch` (immutable once the epoch exists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochMembers {
    pub channel: ChannelId,
    pub epoch: i64,
}

impl Query for EpochMembers {
    type Output = (i64, Vec<UserUid>);
    const NAME: &'static str = "e2ee_epoch_members";

    async fn run<D: Db>(self, db: &mut D) -> Result<(i64, Vec<UserUid>), StorageError> {
        let EpochMembers { channel, epoch } = self;
        let members = members_of_epoch(db, &channel, epoch).await?;
        Ok((epoch, members))
    }
}
