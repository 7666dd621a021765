//! Profiles and avatar assets (WIRE.md §2.5).

use openchat_core::profile::{AVATAR_PRESETS, default_avatar_preset, default_display_name};
use openchat_core::{AssetId, UnixSeconds, UserUid};

use super::corrupt;
use crate::db::{Db, Param, Row, in_transaction};
use crate::error::StorageError;
use crate::query::Query;
use crate::records::{Avatar, AvatarMode, AvatarRecord, ProfileRecord, ProfileUpdate};

const PROFILE_COLUMNS: &str =
    "user_uid, display_name, avatar_mode, avatar_preset_id, avatar_asset_id, profile_version, updated_at";

fn profile_from_row(row: &Row) -> Result<ProfileRecord, StorageError> {
    Ok(ProfileRecord {
        user_uid: UserUid::parse_owned(row.text(0)?).map_err(|e| corrupt("user uid", e))?,
        display_name: row.text(1)?,
        avatar_mode: match row.text(2)?.as_str() {
            "generated" => AvatarMode::Generated,
            "uploaded" => AvatarMode::Uploaded,
            other => return Err(corrupt("avatar_mode", other)),
        },
        avatar_preset_id: row.opt_text(3)?,
        avatar_asset_id: row
            .opt_text(4)?
            .map(AssetId::parse_owned)
            .transpose()
            .map_err(|e| corrupt("asset id", e))?,
        profile_version: row.int(5)?,
        updated_at: row.int(6)?,
    })
}

async fn stored_profile<D: Db>(db: &mut D, uid: &UserUid) -> Result<Option<ProfileRecord>, StorageError> {
    let sql = format!("SELECT {PROFILE_COLUMNS} FROM profiles WHERE user_uid = $1");
    db.query_opt(&sql, &[Param::Text(uid.as_str())])
        .await?
        .as_ref()
        .map(profile_from_row)
        .transpose()
}

/// The profile of `uid`, created with the documented defaults on first sight.
async fn profile_in_tx<D: Db>(
    db: &mut D,
    uid: &UserUid,
    now: UnixSeconds,
) -> Result<ProfileRecord, StorageError> {
    if let Some(profile) = stored_profile(db, uid).await? {
        return Ok(profile);
    }
    db.execute(
        "INSERT INTO profiles (user_uid, display_name, avatar_mode, avatar_preset_id, profile_version, updated_at) \
         VALUES ($1, $2, 'generated', $3, 1, $4) ON CONFLICT (user_uid) DO NOTHING",
        &[
            Param::Text(uid.as_str()),
            Param::Text(&default_display_name(uid.as_str())),
            Param::Text(default_avatar_preset(uid.as_str())),
            Param::Int(now),
        ],
    )
    .await?;
    stored_profile(db, uid)
        .await?
        .ok_or_else(|| corrupt("profile", "vanished after insert"))
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub user: UserUid,
    pub now: UnixSeconds,
}

impl Query for Profile {
    type Output = ProfileRecord;
    const NAME: &'static str = "profile";

    async fn run<D: Db>(self, db: &mut D) -> Result<ProfileRecord, StorageError> {
        let Profile { user: uid, now } = self;
        let uid = &uid;
        in_transaction(db, async |db: &mut D| profile_in_tx(db, uid, now).await).await
    }
}

/// Profiles of every uid, in the given order, creating missing ones.
#[derive(Debug, Clone)]
pub struct Profiles {
    pub users: Vec<UserUid>,
    pub now: UnixSeconds,
}

impl Query for Profiles {
    type Output = Vec<ProfileRecord>;
    const NAME: &'static str = "profiles";

    async fn run<D: Db>(self, db: &mut D) -> Result<Vec<ProfileRecord>, StorageError> {
        let Profiles { users: uids, now } = self;
        let uids = uids.as_slice();
        in_transaction(db, async |db: &mut D| {
            let mut out = Vec::with_capacity(uids.len());
            for uid in uids {
                out.push(profile_in_tx(db, uid, now).await?);
            }
            Ok(out)
        })
        .await
    }
}

/// Applies a profile change if `expected_version` (when given) is the stored version.
#[derive(Debug, Clone)]
pub struct UpdateProfile {
    pub update: ProfileUpdate,
}

impl Query for UpdateProfile {
    type Output = ProfileRecord;
    const NAME: &'static str = "update_profile";

    async fn run<D: Db>(self, db: &mut D) -> Result<ProfileRecord, StorageError> {
        let UpdateProfile { update } = self;
        let update = &update;
        in_transaction(db, async |db: &mut D| {
        let current = profile_in_tx(db, &update.user_uid, update.now).await?;
        if let Some(expected) = update.expected_version
            && expected != current.profile_version
        {
            return Err(StorageError::conflict(
                "profile_conflict",
                format!("profile version is {}, not {expected}", current.profile_version),
            ));
        }
        let (mode, preset, asset) = match &update.avatar {
            Avatar::Preset(preset) => {
                if !AVATAR_PRESETS.contains(&preset.as_str()) {
                    return Err(StorageError::invalid("avatar_mode_unsupported", format!("unknown avatar preset {preset:?}")));
                }
                (AvatarMode::Generated, Some(preset.as_str()), None)
            }
            Avatar::Uploaded(asset) => {
                if avatar_opt(db, asset).await?.is_none() {
                    return Err(StorageError::invalid("avatar_asset_not_found", format!("unknown avatar asset {asset}")));
                }
                (AvatarMode::Uploaded, None, Some(asset.as_str()))
            }
        };
        db.execute(
            "UPDATE profiles SET display_name = $2, avatar_mode = $3, avatar_preset_id = $4, avatar_asset_id = $5, \
             profile_version = profile_version + 1, updated_at = $6 WHERE user_uid = $1",
            &[
                Param::Text(update.user_uid.as_str()),
                Param::Text(&update.display_name),
                Param::Text(mode.as_str()),
                Param::OptText(preset),
                Param::OptText(asset),
                Param::Int(update.now),
            ],
        )
        .await?;
        stored_profile(db, &update.user_uid).await?.ok_or_else(|| corrupt("profile", "vanished after update"))
    })
    .await
    }
}

#[derive(Debug, Clone)]
pub struct InsertAvatar {
    pub avatar: AvatarRecord,
}

impl Query for InsertAvatar {
    type Output = ();
    const NAME: &'static str = "insert_avatar";

    async fn run<D: Db>(self, db: &mut D) -> Result<(), StorageError> {
        let InsertAvatar { avatar } = self;
        let avatar = &avatar;
        db.execute(
        "INSERT INTO avatar_assets (id, content_type, bytes, width, height, sha256, uploaded_by_uid, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            Param::Text(avatar.id.as_str()),
            Param::Text(&avatar.content_type),
            Param::Int(avatar.bytes),
            Param::Int(avatar.width),
            Param::Int(avatar.height),
            Param::Text(&avatar.sha256),
            Param::Text(avatar.uploaded_by.as_str()),
            Param::Int(avatar.created_at),
        ],
    )
    .await
    .map(drop)
    }
}

async fn avatar_opt<D: Db>(db: &mut D, id: &AssetId) -> Result<Option<AvatarRecord>, StorageError> {
    let row = db
        .query_opt(
            "SELECT id, content_type, bytes, width, height, sha256, uploaded_by_uid, created_at FROM avatar_assets WHERE id = $1",
            &[Param::Text(id.as_str())],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(AvatarRecord {
        id: AssetId::parse_owned(row.text(0)?).map_err(|e| corrupt("asset id", e))?,
        content_type: row.text(1)?,
        bytes: row.int(2)?,
        width: row.int(3)?,
        height: row.int(4)?,
        sha256: row.text(5)?,
        uploaded_by: UserUid::parse_owned(row.text(6)?).map_err(|e| corrupt("user uid", e))?,
        created_at: row.int(7)?,
    }))
}

#[derive(Debug, Clone)]
pub struct LoadAvatar {
    pub asset: AssetId,
}

impl Query for LoadAvatar {
    type Output = AvatarRecord;
    const NAME: &'static str = "avatar";

    async fn run<D: Db>(self, db: &mut D) -> Result<AvatarRecord, StorageError> {
        let LoadAvatar { asset: id } = self;
        let id = &id;
        avatar_opt(db, id)
            .await?
            .ok_or(StorageError::NotFound("avatar_asset"))
    }
}
