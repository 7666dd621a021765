//! Every storage operation, each a [`Query`] written once against [`Db`]: the instance and
//! directory here, servers and layout in `servers`, history, reads and mentions in
//! `messages`, profiles and avatars in `profiles`, E2EE.md in [`e2ee`].
//!
//! Writes run in one transaction; reads see one consistent snapshot where they issue
//! several statements. The functions that stay `pub(crate)` are rules that several
//! operations share.

use openchat_core::seed::Seed;
use openchat_core::settings::ServerSettings;
use openchat_core::{
    ChannelId, ChannelKind, GroupId, HandshakeStrategy, MemberId, MemberStatus, ServerId, TrustState,
    UidPolicy, UnixSeconds, UserUid,
};

pub mod e2ee;
mod messages;
pub mod outbox;
mod profiles;
mod servers;
pub mod tickets;

pub use messages::{
    Attachment, CreateMessage, DeleteMessage, Mentions, Messages, PostMessage, PutReadAck, ReadAck,
    UnreadCounts,
};
pub use outbox::{OutboxEvent, OutboxOrphans, OutboxPending, OutboxRecord, OutboxRelayed, Outboxed};
pub use profiles::{InsertAvatar, LoadAvatar, Profile, Profiles, UpdateProfile};
pub use servers::{
    Channel, ClaimOwnership, CreateCategory, CreateChannel, CreateServer, DeleteCategory, GrantOwner,
    LeaveServer, RenameCategory, UpdateLayout,
};
pub use tickets::UseTicket;

use crate::db::{Db, Param, Row, in_transaction};
use crate::error::StorageError;
use crate::query::Query;
use crate::records::{ChannelRecord, GroupRecord, InstanceRecord, MemberRecord, ServerRecord};

const META_SEEDED: &str = "seeded_at";
const META_INSTANCE_NAME: &str = "instance_name";
const META_PRIMARY_SERVER: &str = "primary_server_id";

const SERVER_COLUMNS: &str = "id, display_name, description, banner_preset, icon_text, trust_state, \
     handshake_strategy, uid_policy, owner_uid, created_at, updated_by_uid, updated_at";

pub(crate) fn corrupt(what: &str, err: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(format!("{what}: {err}"))
}

fn server_from_row(row: &Row) -> Result<ServerRecord, StorageError> {
    Ok(ServerRecord {
        id: ServerId::parse_owned(row.text(0)?).map_err(|e| corrupt("server id", e))?,
        display_name: row.text(1)?,
        description: row.text(2)?,
        banner_preset: row.text(3)?,
        icon_text: row.text(4)?,
        trust_state: TrustState::parse(&row.text(5)?).map_err(|e| corrupt("trust_state", e))?,
        handshake_strategy: HandshakeStrategy::parse(&row.text(6)?)
            .map_err(|e| corrupt("handshake_strategy", e))?,
        uid_policy: UidPolicy::parse(&row.text(7)?).map_err(|e| corrupt("uid_policy", e))?,
        owner_uid: row
            .opt_text(8)?
            .map(UserUid::parse_owned)
            .transpose()
            .map_err(|e| corrupt("owner_uid", e))?,
        created_at: row.int(9)?,
        updated_by_uid: row
            .opt_text(10)?
            .map(UserUid::parse_owned)
            .transpose()
            .map_err(|e| corrupt("updated_by_uid", e))?,
        updated_at: row.int(11)?,
    })
}

#[derive(Debug, Clone)]
pub struct Ping;

impl Query for Ping {
    type Output = ();
    const NAME: &'static str = "ping";

    async fn run<D: Db>(self, db: &mut D) -> Result<(), StorageError> {
        db.query("SELECT 1", &[]).await.map(drop)
    }
}

async fn meta<D: Db>(db: &mut D, key: &str) -> Result<Option<String>, StorageError> {
    match db
        .query_opt(
            "SELECT value FROM instance_meta WHERE key = $1",
            &[Param::Text(key)],
        )
        .await?
    {
        Some(row) => Ok(Some(row.text(0)?)),
        None => Ok(None),
    }
}

async fn set_meta<D: Db>(db: &mut D, key: &str, value: &str) -> Result<(), StorageError> {
    db.execute(
        "INSERT INTO instance_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = $2",
        &[Param::Text(key), Param::Text(value)],
    )
    .await
    .map(drop)
}

/// Writes the first-run community, once. Returns whether anything was written: nothing is
/// when the store already holds a server or was seeded before (even if the seeded servers
/// were deleted since), so restarts never duplicate or resurrect anything.
#[derive(Debug, Clone)]
pub struct SeedFirstRun {
    pub seed: Seed,
    pub now: UnixSeconds,
}

impl Query for SeedFirstRun {
    type Output = bool;
    const NAME: &'static str = "seed";

    async fn run<D: Db>(self, db: &mut D) -> Result<bool, StorageError> {
        let SeedFirstRun { seed, now } = self;
        let seed = &seed;
        in_transaction(db, async |db: &mut D| {
        let servers = db.query_opt("SELECT COUNT(*) FROM servers", &[]).await?;
        if servers.map(|row| row.int(0)).transpose()?.unwrap_or(0) > 0 {
            return Ok(false);
        }
        let claimed = db
            .execute(
                "INSERT INTO instance_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[Param::Text(META_SEEDED), Param::Text(&now.to_string())],
            )
            .await?;
        if claimed == 0 {
            return Ok(false);
        }
        set_meta(db, META_INSTANCE_NAME, seed.instance_name).await?;
        if let Some(primary) = seed.servers.first() {
            set_meta(db, META_PRIMARY_SERVER, primary.id).await?;
        }
        for (server_pos, server) in seed.servers.iter().enumerate() {
            db.execute(
                "INSERT INTO servers (id, display_name, icon_text, trust_state, handshake_strategy, \
                 uid_policy, created_at, updated_at, position) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)",
                &[
                    Param::Text(server.id),
                    Param::Text(server.display_name),
                    Param::Text(server.icon_text),
                    Param::Text(server.trust_state.as_str()),
                    Param::Text(server.handshake_strategy.as_str()),
                    Param::Text(server.uid_policy.as_str()),
                    Param::Int(now),
                    Param::Int(server_pos as i64),
                ],
            )
            .await?;
            for (group_pos, group) in server.groups.iter().enumerate() {
                db.execute(
                    "INSERT INTO channel_groups (id, server_id, label, kind, position, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        Param::Text(group.id),
                        Param::Text(server.id),
                        Param::Text(group.label),
                        Param::Text(group.kind.as_str()),
                        Param::Int(group_pos as i64),
                        Param::Int(now),
                    ],
                )
                .await?;
                for (channel_pos, channel) in group.channels.iter().enumerate() {
                    db.execute(
                        "INSERT INTO channels (id, server_id, group_id, name, kind, position, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                        &[
                            Param::Text(channel.id),
                            Param::Text(server.id),
                            Param::Text(group.id),
                            Param::Text(channel.name),
                            Param::Text(group.kind.as_str()),
                            Param::Int(channel_pos as i64),
                            Param::Int(now),
                        ],
                    )
                    .await?;
                    for (seq, message) in channel.messages.iter().enumerate() {
                        db.execute(
                            "INSERT INTO messages (id, channel_id, seq, author_uid, body, created_at) \
                             VALUES ($1, $2, $3, $4, $5, $6)",
                            &[
                                Param::Text(message.id),
                                Param::Text(channel.id),
                                Param::Int(seq as i64),
                                Param::Text(message.author_uid),
                                Param::Text(message.body),
                                Param::Int(now - message.age_seconds),
                            ],
                        )
                        .await?;
                    }
                }
            }
            for (member_pos, member) in server.members.iter().enumerate() {
                db.execute(
                    "INSERT INTO server_members (server_id, member_id, user_uid, display_name, status, position, joined_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[
                        Param::Text(server.id),
                        Param::Text(member.id),
                        Param::Text(member.user_uid),
                        Param::Text(member.name),
                        Param::Text(member.status.as_str()),
                        Param::Int(member_pos as i64),
                        Param::Int(now),
                    ],
                )
                .await?;
                // The member's profile, so seeded messages show the member's name.
                db.execute(
                    "INSERT INTO profiles (user_uid, display_name, avatar_mode, avatar_preset_id, \
                     avatar_asset_id, profile_version, updated_at) \
                     VALUES ($1, $2, 'generated', $3, NULL, 1, $4) ON CONFLICT (user_uid) DO NOTHING",
                    &[
                        Param::Text(member.user_uid),
                        Param::Text(member.name),
                        Param::Text(openchat_core::profile::default_avatar_preset(member.user_uid)),
                        Param::Int(now),
                    ],
                )
                .await?;
            }
        }
        Ok(true)
    })
    .await
    }
}

#[derive(Debug, Clone)]
pub struct Instance;

impl Query for Instance {
    type Output = InstanceRecord;
    const NAME: &'static str = "instance";

    async fn run<D: Db>(self, db: &mut D) -> Result<InstanceRecord, StorageError> {
        let name = meta(db, META_INSTANCE_NAME).await?;
        let primary_id = meta(db, META_PRIMARY_SERVER).await?;
        let mut primary_server = match primary_id {
            Some(id) => server_opt(db, &id).await?,
            None => None,
        };
        if primary_server.is_none() {
            let sql =
                format!("SELECT {SERVER_COLUMNS} FROM servers ORDER BY created_at, position, id LIMIT 1");
            primary_server = db
                .query_opt(&sql, &[])
                .await?
                .as_ref()
                .map(server_from_row)
                .transpose()?;
        }
        Ok(InstanceRecord { name, primary_server })
    }
}

/// Servers in directory order, without those `viewer` has left.
#[derive(Debug, Clone)]
pub struct Directory {
    pub viewer: Option<UserUid>,
    pub limit: usize,
}

impl Query for Directory {
    type Output = Vec<ServerRecord>;
    const NAME: &'static str = "directory";

    async fn run<D: Db>(self, db: &mut D) -> Result<Vec<ServerRecord>, StorageError> {
        let Directory { viewer, limit } = self;
        let viewer = viewer.as_ref();
        let sql = format!(
            "SELECT {SERVER_COLUMNS} FROM servers WHERE NOT EXISTS \
         (SELECT 1 FROM server_leaves l WHERE l.server_id = servers.id AND l.user_uid = $2) \
         ORDER BY position, created_at, id LIMIT $1"
        );
        let viewer = viewer.map_or("", UserUid::as_str);
        let rows = db
            .query(&sql, &[Param::Int(limit as i64), Param::Text(viewer)])
            .await?;
        rows.iter().map(server_from_row).collect()
    }
}

async fn server_opt<D: Db>(db: &mut D, id: &str) -> Result<Option<ServerRecord>, StorageError> {
    let sql = format!("SELECT {SERVER_COLUMNS} FROM servers WHERE id = $1");
    db.query_opt(&sql, &[Param::Text(id)])
        .await?
        .as_ref()
        .map(server_from_row)
        .transpose()
}

pub(crate) async fn server<D: Db>(db: &mut D, id: &ServerId) -> Result<ServerRecord, StorageError> {
    server_opt(db, id.as_str())
        .await?
        .ok_or(StorageError::NotFound("server"))
}

/// One server by id.
#[derive(Debug, Clone)]
pub struct Server {
    pub server: ServerId,
}

impl Query for Server {
    type Output = ServerRecord;
    const NAME: &'static str = "server";

    async fn run<D: Db>(self, db: &mut D) -> Result<ServerRecord, StorageError> {
        server(db, &self.server).await
    }
}

/// The server's groups and channels in display order. Runs in a transaction so the group
/// list and the channel list come from the same snapshot.
#[derive(Debug, Clone)]
pub struct Layout {
    pub server: ServerId,
}

impl Query for Layout {
    type Output = Vec<GroupRecord>;
    const NAME: &'static str = "layout";

    async fn run<D: Db>(self, db: &mut D) -> Result<Vec<GroupRecord>, StorageError> {
        let Layout { server: id } = self;
        let id = &id;
        in_transaction(db, async |db: &mut D| layout_in_tx(db, id).await).await
    }
}

/// [`layout`] inside the caller's transaction.
pub(crate) async fn layout_in_tx<D: Db>(db: &mut D, id: &ServerId) -> Result<Vec<GroupRecord>, StorageError> {
    {
        server(db, id).await?;
        let group_rows = db
            .query(
                "SELECT id, label, kind FROM channel_groups WHERE server_id = $1 ORDER BY position, id",
                &[Param::Text(id.as_str())],
            )
            .await?;
        let mut groups = Vec::with_capacity(group_rows.len());
        for row in &group_rows {
            groups.push(GroupRecord {
                id: GroupId::parse_owned(row.text(0)?).map_err(|e| corrupt("group id", e))?,
                label: row.text(1)?,
                kind: ChannelKind::parse(&row.text(2)?).map_err(|e| corrupt("group kind", e))?,
                channels: Vec::new(),
            });
        }
        let channel_rows = db
            .query(
                "SELECT c.group_id, c.id, c.name, c.kind, c.e2ee, c.current_epoch FROM channels c \
                 JOIN channel_groups g ON g.id = c.group_id \
                 WHERE c.server_id = $1 ORDER BY g.position, g.id, c.position, c.id",
                &[Param::Text(id.as_str())],
            )
            .await?;
        for row in &channel_rows {
            let group_id = row.text(0)?;
            let channel = ChannelRecord {
                id: ChannelId::parse_owned(row.text(1)?).map_err(|e| corrupt("channel id", e))?,
                name: row.text(2)?,
                kind: ChannelKind::parse(&row.text(3)?).map_err(|e| corrupt("channel kind", e))?,
                e2ee: if row.int(4)? != 0 {
                    Some(row.opt_int(5)?.unwrap_or(1))
                } else {
                    None
                },
            };
            match groups.iter_mut().find(|group| group.id.as_str() == group_id) {
                Some(group) => group.channels.push(channel),
                None => return Err(corrupt("channel group", format!("{group_id} missing"))),
            }
        }
        Ok(groups)
    }
}

#[derive(Debug, Clone)]
pub struct Members {
    pub server: ServerId,
}

impl Query for Members {
    type Output = Vec<MemberRecord>;
    const NAME: &'static str = "members";

    async fn run<D: Db>(self, db: &mut D) -> Result<Vec<MemberRecord>, StorageError> {
        let Members { server: id } = self;
        let id = &id;
        server(db, id).await?;
        let rows = db
            .query(
                "SELECT member_id, display_name, status FROM server_members \
             WHERE server_id = $1 AND left_at IS NULL ORDER BY position, member_id LIMIT $2",
                &[
                    Param::Text(id.as_str()),
                    Param::Int(openchat_core::limits::MEMBERS_LIST_MAX as i64),
                ],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(MemberRecord {
                    id: MemberId::parse_owned(row.text(0)?).map_err(|e| corrupt("member id", e))?,
                    name: row.text(1)?,
                    status: MemberStatus::parse(&row.text(2)?).map_err(|e| corrupt("member status", e))?,
                })
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct UpdateSettings {
    pub server: ServerId,
    pub settings: ServerSettings,
    pub by: UserUid,
    pub now: UnixSeconds,
}

impl Query for UpdateSettings {
    type Output = ServerRecord;
    const NAME: &'static str = "update_settings";

    async fn run<D: Db>(self, db: &mut D) -> Result<ServerRecord, StorageError> {
        let UpdateSettings {
            server: id,
            settings,
            by,
            now,
        } = self;
        let id = &id;
        let settings = &settings;
        let by = &by;
        in_transaction(db, async |db: &mut D| {
            servers::require_manager(db, id, by).await?;
            let changed = db
                .execute(
                    "UPDATE servers SET display_name = $2, description = $3, banner_preset = $4, \
                 updated_by_uid = $5, updated_at = $6 WHERE id = $1",
                    &[
                        Param::Text(id.as_str()),
                        Param::Text(&settings.display_name),
                        Param::Text(&settings.description),
                        Param::Text(&settings.banner_preset),
                        Param::OptText(Some(by.as_str())),
                        Param::Int(now),
                    ],
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
