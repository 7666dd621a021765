//! Server management: create, claim, grant, leave; channels, categories and layout.
//! Every management write checks `openchat_core::policy` inside its own transaction.

use openchat_core::limits::SERVER_CHANNELS_MAX;
use openchat_core::policy::may_manage;
use openchat_core::{ChannelId, ChannelKind, GroupId, ServerId, UnixSeconds, UserUid};

use super::{corrupt, layout_in_tx, server};
use crate::db::{Db, Param, Row, in_transaction, lock_scope};
use crate::error::StorageError;
use crate::query::Query;
use crate::records::{ChannelInfo, ChannelRecord, ClaimRecord, GroupRecord, NewServer, ServerRecord};

fn forbidden() -> StorageError {
    StorageError::Forbidden("only the server owner may manage this server".into())
}

/// Checks that `actor` may manage `server` (and that the server exists).
pub(crate) async fn require_manager<D: Db>(
    db: &mut D,
    id: &ServerId,
    actor: &UserUid,
) -> Result<ServerRecord, StorageError> {
    let record = server(db, id).await?;
    if !may_manage(record.owner_uid.as_ref(), actor) {
        return Err(forbidden());
    }
    Ok(record)
}

#[derive(Debug, Clone)]
pub struct CreateServer {
    pub new: NewServer,
}

impl Query for CreateServer {
    type Output = ServerRecord;
    const NAME: &'static str = "create_server";

    async fn run<D: Db>(self, db: &mut D) -> Result<ServerRecord, StorageError> {
        let CreateServer { new } = self;
        let new = &new;
        in_transaction(db, async |db: &mut D| {
        lock_scope(db, "servers").await?;
        let position = db
            .query_opt("SELECT COALESCE(MAX(position), -1) + 1 FROM servers", &[])
            .await?
            .map(|row| row.int(0))
            .transpose()?
            .unwrap_or(0);
        db.execute(
            "INSERT INTO servers (id, display_name, description, banner_preset, icon_text, trust_state, \
             handshake_strategy, uid_policy, created_by_uid, created_at, updated_by_uid, updated_at, position) \
             VALUES ($1, $2, $3, $4, $5, 'unverified', 'challenge_signature', 'server_scoped', $6, $7, $6, $7, $8)",
            &[
                Param::Text(new.id.as_str()),
                Param::Text(&new.display_name),
                Param::Text(&new.description),
                Param::Text(&new.banner_preset),
                Param::Text(&new.icon_text),
                Param::Text(new.created_by.as_str()),
                Param::Int(new.now),
                Param::Int(position),
            ],
        )
        .await?;
        let ids = &new.starter_ids;
        let starter = [
            (&ids.text_group, "Text Channels", ChannelKind::Text, &ids.text_channel, "general"),
            (&ids.voice_group, "Voice Channels", ChannelKind::Voice, &ids.voice_channel, "General"),
        ];
        for (position, (group, label, kind, channel, name)) in starter.into_iter().enumerate() {
            insert_group(db, &new.id, group, label, kind, position as i64, new.now).await?;
            insert_channel(db, &new.id, group, channel, name, kind, 0, new.now).await?;
        }
        db.execute(
            "INSERT INTO ownership_claims (token_hash, server_id, created_by_uid, expires_at) VALUES ($1, $2, $3, $4)",
            &[
                Param::Text(&new.claim_token_sha256),
                Param::Text(new.id.as_str()),
                Param::Text(new.created_by.as_str()),
                Param::Int(new.claim_expires_at),
            ],
        )
        .await?;
        server(db, &new.id).await
    })
    .await
    }
}

/// Redeems a claim token: its holder becomes the owner. Claiming again with the same
/// token by the same user is idempotent; a different user, or an already-owned server,
/// is a conflict.
#[derive(Debug, Clone)]
pub struct ClaimOwnership {
    pub server: ServerId,
    pub token_sha256: String,
    pub by: UserUid,
    pub now: UnixSeconds,
}

impl Query for ClaimOwnership {
    type Output = ClaimRecord;
    const NAME: &'static str = "claim_ownership";

    async fn run<D: Db>(self, db: &mut D) -> Result<ClaimRecord, StorageError> {
        let ClaimOwnership {
            server: id,
            token_sha256,
            by,
            now,
        } = self;
        let id = &id;
        let token_sha256 = token_sha256.as_str();
        let by = &by;
        in_transaction(db, async |db: &mut D| {
        let record = server(db, id).await?;
        let claim = db
            .query_opt(
                "SELECT expires_at, claimed_by_uid, claimed_at FROM ownership_claims WHERE token_hash = $1 AND server_id = $2",
                &[Param::Text(token_sha256), Param::Text(id.as_str())],
            )
            .await?
            .ok_or_else(|| StorageError::Forbidden("the claim token is not valid for this server".into()))?;
        if let (Some(claimed_by), Some(claimed_at)) = (claim.opt_text(1)?, claim.opt_int(2)?) {
            if claimed_by == by.as_str() {
                return Ok(ClaimRecord { server_id: id.clone(), owner_uid: by.clone(), claimed_at });
            }
            return Err(StorageError::conflict("ownership_already_claimed", "the server was already claimed"));
        }
        if claim.int(0)? <= now {
            return Err(StorageError::Forbidden("the claim token has expired".into()));
        }
        if record.owner_uid.as_ref().is_some_and(|owner| owner != by) {
            return Err(StorageError::conflict("ownership_already_claimed", "the server already has an owner"));
        }
        db.execute(
            "UPDATE ownership_claims SET claimed_by_uid = $2, claimed_at = $3 WHERE token_hash = $1",
            &[Param::Text(token_sha256), Param::Text(by.as_str()), Param::Int(now)],
        )
        .await?;
        db.execute("UPDATE servers SET owner_uid = $2 WHERE id = $1", &[Param::Text(id.as_str()), Param::Text(by.as_str())])
            .await?;
        Ok(ClaimRecord { server_id: id.clone(), owner_uid: by.clone(), claimed_at: now })
    })
    .await
    }
}

/// The operator's override (`openchatd admin grant-owner`): sets the owner unconditionally.
#[derive(Debug, Clone)]
pub struct GrantOwner {
    pub server: ServerId,
    pub owner: UserUid,
}

impl Query for GrantOwner {
    type Output = ServerRecord;
    const NAME: &'static str = "grant_owner";

    async fn run<D: Db>(self, db: &mut D) -> Result<ServerRecord, StorageError> {
        let GrantOwner { server: id, owner } = self;
        let id = &id;
        let owner = &owner;
        in_transaction(db, async |db: &mut D| {
            let changed = db
                .execute(
                    "UPDATE servers SET owner_uid = $2 WHERE id = $1",
                    &[Param::Text(id.as_str()), Param::Text(owner.as_str())],
                )
                .await?;
            if changed == 0 {
                return Err(StorageError::NotFound("server"));
            }
            server(db, id).await
        })
        .await
    }
}

/// Records that `user` left `server`; idempotent (the first leave time is kept).
#[derive(Debug, Clone)]
pub struct LeaveServer {
    pub server: ServerId,
    pub user: UserUid,
    pub now: UnixSeconds,
}

impl Query for LeaveServer {
    type Output = UnixSeconds;
    const NAME: &'static str = "leave_server";

    async fn run<D: Db>(self, db: &mut D) -> Result<UnixSeconds, StorageError> {
        let LeaveServer {
            server: id,
            user,
            now,
        } = self;
        let id = &id;
        let user = &user;
        in_transaction(db, async |db: &mut D| {
            server(db, id).await?;
            db.execute(
                "INSERT INTO server_leaves (server_id, user_uid, left_at) VALUES ($1, $2, $3) \
             ON CONFLICT (server_id, user_uid) DO NOTHING",
                &[
                    Param::Text(id.as_str()),
                    Param::Text(user.as_str()),
                    Param::Int(now),
                ],
            )
            .await?;
            let row = db
                .query_opt(
                    "SELECT left_at FROM server_leaves WHERE server_id = $1 AND user_uid = $2",
                    &[Param::Text(id.as_str()), Param::Text(user.as_str())],
                )
                .await?
                .ok_or_else(|| corrupt("server_leaves", "row vanished"))?;
            row.int(0)
        })
        .await
    }
}

fn channel_info(row: &Row) -> Result<ChannelInfo, StorageError> {
    Ok(ChannelInfo {
        id: ChannelId::parse_owned(row.text(0)?).map_err(|e| corrupt("channel id", e))?,
        server_id: ServerId::parse_owned(row.text(1)?).map_err(|e| corrupt("server id", e))?,
        group_id: GroupId::parse_owned(row.text(2)?).map_err(|e| corrupt("group id", e))?,
        name: row.text(3)?,
        kind: ChannelKind::parse(&row.text(4)?).map_err(|e| corrupt("channel kind", e))?,
        e2ee: row.int(5)? != 0,
    })
}

pub(crate) async fn channel<D: Db>(db: &mut D, id: &ChannelId) -> Result<ChannelInfo, StorageError> {
    db.query_opt(
        "SELECT id, server_id, group_id, name, kind, e2ee FROM channels WHERE id = $1",
        &[Param::Text(id.as_str())],
    )
    .await?
    .as_ref()
    .map(channel_info)
    .transpose()?
    .ok_or(StorageError::NotFound("channel"))
}

/// One channel by id, with its server and its e2ee state.
#[derive(Debug, Clone)]
pub struct Channel {
    pub channel: ChannelId,
}

impl Query for Channel {
    type Output = ChannelInfo;
    const NAME: &'static str = "channel";

    async fn run<D: Db>(self, db: &mut D) -> Result<ChannelInfo, StorageError> {
        channel(db, &self.channel).await
    }
}

async fn insert_group<D: Db>(
    db: &mut D,
    server: &ServerId,
    id: &GroupId,
    label: &str,
    kind: ChannelKind,
    position: i64,
    now: UnixSeconds,
) -> Result<(), StorageError> {
    db.execute(
        "INSERT INTO channel_groups (id, server_id, label, kind, position, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            Param::Text(id.as_str()),
            Param::Text(server.as_str()),
            Param::Text(label),
            Param::Text(kind.as_str()),
            Param::Int(position),
            Param::Int(now),
        ],
    )
    .await
    .map(drop)
}

#[allow(clippy::too_many_arguments)]
async fn insert_channel<D: Db>(
    db: &mut D,
    server: &ServerId,
    group: &GroupId,
    id: &ChannelId,
    name: &str,
    kind: ChannelKind,
    position: i64,
    now: UnixSeconds,
) -> Result<(), StorageError> {
    db.execute(
        "INSERT INTO channels (id, server_id, group_id, name, kind, position, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            Param::Text(id.as_str()),
            Param::Text(server.as_str()),
            Param::Text(group.as_str()),
            Param::Text(name),
            Param::Text(kind.as_str()),
            Param::Int(position),
            Param::Int(now),
        ],
    )
    .await
    .map(drop)
}

async fn count_layout<D: Db>(db: &mut D, server: &ServerId) -> Result<usize, StorageError> {
    let row = db
        .query_opt(
            "SELECT (SELECT COUNT(*) FROM channels WHERE server_id = $1) + \
             (SELECT COUNT(*) FROM channel_groups WHERE server_id = $1)",
            &[Param::Text(server.as_str())],
        )
        .await?;
    Ok(row.map(|row| row.int(0)).transpose()?.unwrap_or(0) as usize)
}

fn too_many() -> StorageError {
    StorageError::invalid(
        "limit_exceeded",
        format!("a server holds at most {SERVER_CHANNELS_MAX} channels and categories"),
    )
}

#[derive(Debug, Clone)]
pub struct CreateChannel {
    pub server: ServerId,
    pub group: GroupId,
    pub channel: ChannelId,
    pub name: String,
    pub kind: ChannelKind,
    pub e2ee: bool,
    pub actor: UserUid,
    pub now: UnixSeconds,
}

impl Query for CreateChannel {
    type Output = ChannelRecord;
    const NAME: &'static str = "create_channel";

    async fn run<D: Db>(self, db: &mut D) -> Result<ChannelRecord, StorageError> {
        let CreateChannel {
            server: server_id,
            group,
            channel: id,
            name,
            kind,
            e2ee,
            actor,
            now,
        } = self;
        let server_id = &server_id;
        let group = &group;
        let id = &id;
        let name = name.as_str();
        let actor = &actor;
        in_transaction(db, async |db: &mut D| {
            require_manager(db, server_id, actor).await?;
            let group_server = db
                .query_opt(
                    "SELECT server_id FROM channel_groups WHERE id = $1",
                    &[Param::Text(group.as_str())],
                )
                .await?;
            match group_server {
                Some(row) if row.text(0)? == server_id.as_str() => {}
                _ => return Err(StorageError::NotFound("group")),
            }
            lock_scope(db, &format!("layout:{server_id}")).await?;
            if count_layout(db, server_id).await? >= SERVER_CHANNELS_MAX {
                return Err(too_many());
            }
            let position = db
                .query_opt(
                    "SELECT COALESCE(MAX(position), -1) + 1 FROM channels WHERE group_id = $1",
                    &[Param::Text(group.as_str())],
                )
                .await?
                .map(|row| row.int(0))
                .transpose()?
                .unwrap_or(0);
            insert_channel(db, server_id, group, id, name, kind, position, now).await?;
            if e2ee {
                super::e2ee::make_e2ee(db, id, actor, now).await?;
            }
            Ok(ChannelRecord {
                id: id.clone(),
                name: name.to_owned(),
                kind,
                e2ee: e2ee.then_some(1),
            })
        })
        .await
    }
}

#[derive(Debug, Clone)]
pub struct CreateCategory {
    pub server: ServerId,
    pub group: GroupId,
    pub name: String,
    pub kind: ChannelKind,
    pub actor: UserUid,
    pub now: UnixSeconds,
}

impl Query for CreateCategory {
    type Output = GroupRecord;
    const NAME: &'static str = "create_category";

    async fn run<D: Db>(self, db: &mut D) -> Result<GroupRecord, StorageError> {
        let CreateCategory {
            server: server_id,
            group: id,
            name,
            kind,
            actor,
            now,
        } = self;
        let server_id = &server_id;
        let id = &id;
        let name = name.as_str();
        let actor = &actor;
        in_transaction(db, async |db: &mut D| {
            require_manager(db, server_id, actor).await?;
            lock_scope(db, &format!("layout:{server_id}")).await?;
            if count_layout(db, server_id).await? >= SERVER_CHANNELS_MAX {
                return Err(too_many());
            }
            let position = db
                .query_opt(
                    "SELECT COALESCE(MAX(position), -1) + 1 FROM channel_groups WHERE server_id = $1",
                    &[Param::Text(server_id.as_str())],
                )
                .await?
                .map(|row| row.int(0))
                .transpose()?
                .unwrap_or(0);
            insert_group(db, server_id, id, name, kind, position, now).await?;
            Ok(GroupRecord {
                id: id.clone(),
                label: name.to_owned(),
                kind,
                channels: Vec::new(),
            })
        })
        .await
    }
}

#[derive(Debug, Clone)]
pub struct RenameCategory {
    pub server: ServerId,
    pub group: GroupId,
    pub name: String,
    pub actor: UserUid,
}

impl Query for RenameCategory {
    type Output = GroupRecord;
    const NAME: &'static str = "rename_category";

    async fn run<D: Db>(self, db: &mut D) -> Result<GroupRecord, StorageError> {
        let RenameCategory {
            server: server_id,
            group: id,
            name,
            actor,
        } = self;
        let server_id = &server_id;
        let id = &id;
        let name = name.as_str();
        let actor = &actor;
        in_transaction(db, async |db: &mut D| {
            require_manager(db, server_id, actor).await?;
            let changed = db
                .execute(
                    "UPDATE channel_groups SET label = $3 WHERE id = $1 AND server_id = $2",
                    &[
                        Param::Text(id.as_str()),
                        Param::Text(server_id.as_str()),
                        Param::Text(name),
                    ],
                )
                .await?;
            if changed == 0 {
                return Err(StorageError::NotFound("group"));
            }
            let layout = layout_in_tx(db, server_id).await?;
            layout
                .into_iter()
                .find(|group| group.id == *id)
                .ok_or(StorageError::NotFound("group"))
        })
        .await
    }
}

/// Deletes an empty category; a category that still holds channels is a conflict.
#[derive(Debug, Clone)]
pub struct DeleteCategory {
    pub server: ServerId,
    pub group: GroupId,
    pub actor: UserUid,
}

impl Query for DeleteCategory {
    type Output = Vec<GroupRecord>;
    const NAME: &'static str = "delete_category";

    async fn run<D: Db>(self, db: &mut D) -> Result<Vec<GroupRecord>, StorageError> {
        let DeleteCategory {
            server: server_id,
            group: id,
            actor,
        } = self;
        let server_id = &server_id;
        let id = &id;
        let actor = &actor;
        in_transaction(db, async |db: &mut D| {
            require_manager(db, server_id, actor).await?;
            let exists = db
                .query_opt(
                    "SELECT id FROM channel_groups WHERE id = $1 AND server_id = $2",
                    &[Param::Text(id.as_str()), Param::Text(server_id.as_str())],
                )
                .await?;
            if exists.is_none() {
                return Err(StorageError::NotFound("group"));
            }
            let channels = db
                .query_opt(
                    "SELECT COUNT(*) FROM channels WHERE group_id = $1",
                    &[Param::Text(id.as_str())],
                )
                .await?
                .map(|row| row.int(0))
                .transpose()?
                .unwrap_or(0);
            if channels > 0 {
                return Err(StorageError::conflict(
                    "category_not_empty",
                    "only an empty category can be deleted",
                ));
            }
            db.execute(
                "DELETE FROM channel_groups WHERE id = $1",
                &[Param::Text(id.as_str())],
            )
            .await?;
            layout_in_tx(db, server_id).await
        })
        .await
    }
}

/// Applies a complete new order: every group of the server exactly once, every channel
/// exactly once (channels may move between groups).
#[derive(Debug, Clone)]
pub struct UpdateLayout {
    pub server: ServerId,
    pub order: Vec<(GroupId, Vec<ChannelId>)>,
    pub actor: UserUid,
}

impl Query for UpdateLayout {
    type Output = Vec<GroupRecord>;
    const NAME: &'static str = "update_layout";

    async fn run<D: Db>(self, db: &mut D) -> Result<Vec<GroupRecord>, StorageError> {
        let UpdateLayout {
            server: server_id,
            order,
            actor,
        } = self;
        let server_id = &server_id;
        let order = order.as_slice();
        let actor = &actor;
        in_transaction(db, async |db: &mut D| {
            require_manager(db, server_id, actor).await?;
            let current = layout_in_tx(db, server_id).await?;
            let mut known_groups: Vec<&GroupId> = current.iter().map(|group| &group.id).collect();
            let mut known_channels: Vec<&ChannelId> = current
                .iter()
                .flat_map(|group| group.channels.iter().map(|channel| &channel.id))
                .collect();
            let mut given_groups: Vec<&GroupId> = order.iter().map(|(group, _)| group).collect();
            let mut given_channels: Vec<&ChannelId> =
                order.iter().flat_map(|(_, channels)| channels).collect();
            for list in [&mut known_groups, &mut given_groups] {
                list.sort();
            }
            known_channels.sort();
            given_channels.sort();
            if known_groups != given_groups || known_channels != given_channels {
                return Err(StorageError::invalid(
                    "invalid_payload",
                    "groups must list every category and every channel of the server exactly once",
                ));
            }
            for (group_position, (group, channels)) in order.iter().enumerate() {
                db.execute(
                    "UPDATE channel_groups SET position = $2 WHERE id = $1",
                    &[Param::Text(group.as_str()), Param::Int(group_position as i64)],
                )
                .await?;
                for (channel_position, channel) in channels.iter().enumerate() {
                    db.execute(
                        "UPDATE channels SET group_id = $2, position = $3 WHERE id = $1",
                        &[
                            Param::Text(channel.as_str()),
                            Param::Text(group.as_str()),
                            Param::Int(channel_position as i64),
                        ],
                    )
                    .await?;
                }
            }
            layout_in_tx(db, server_id).await
        })
        .await
    }
}
