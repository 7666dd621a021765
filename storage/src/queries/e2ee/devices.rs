//! Devices and links: registration (first device active, later ones pending), linking a new device from an active one, revocation.

use openchat_core::Denial;
use openchat_core::{UnixSeconds, UserUid};

use super::{DEVICE_COLUMNS, device, device_from_row, register_device, require_active_device};
use crate::db::{Db, Param, in_transaction};
use crate::e2ee::{Actor, DeviceRecord, DeviceStatus, LinkRequest};
use crate::error::StorageError;
use crate::query::Query;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterDevice {
    pub user: UserUid,
    pub device_id: String,
    pub device_pubkey: String,
    pub device_name: Option<String>,
    pub limit: usize,
    pub now: UnixSeconds,
}

impl Query for RegisterDevice {
    type Output = DeviceRecord;
    const NAME: &'static str = "e2ee_register_device";

    async fn run<D: Db>(self, db: &mut D) -> Result<DeviceRecord, StorageError> {
        let RegisterDevice {
            user,
            device_id,
            device_pubkey,
            device_name,
            limit,
            now,
        } = self;
        in_transaction(db, async |db: &mut D| {
            register_device(
                db,
                &user,
                &device_id,
                &device_pubkey,
                device_name.as_deref(),
                limit,
                now,
            )
            .await
        })
        .await
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Devices {
    pub user: UserUid,
}

impl Query for Devices {
    type Output = Vec<DeviceRecord>;
    const NAME: &'static str = "e2ee_devices";

    async fn run<D: Db>(self, db: &mut D) -> Result<Vec<DeviceRecord>, StorageError> {
        let Devices { user } = self;
        let rows = db
            .query(
                &format!(
                    "SELECT {DEVICE_COLUMNS} FROM devices WHERE user_uid = $1 ORDER BY created_at, device_id"
                ),
                &[Param::Text(user.as_str())],
            )
            .await?;
        rows.iter().map(device_from_row).collect()
    }
}

/// The device's record, if it exists (any user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub device_id: String,
}

impl Query for Device {
    type Output = Option<DeviceRecord>;
    const NAME: &'static str = "e2ee_device";

    async fn run<D: Db>(self, db: &mut D) -> Result<Option<DeviceRecord>, StorageError> {
        let Device { device_id } = self;
        device(db, &device_id).await
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStart {
    pub actor: Actor,
    pub request_id: String,
    pub ttl: i64,
    pub now: UnixSeconds,
}

impl Query for LinkStart {
    type Output = LinkRequest;
    const NAME: &'static str = "e2ee_link_start";

    async fn run<D: Db>(self, db: &mut D) -> Result<LinkRequest, StorageError> {
        let LinkStart {
            actor,
            request_id,
            ttl,
            now,
        } = self;
        in_transaction(db, async |db: &mut D| {
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
            Ok(LinkRequest {
                request_id: request_id.clone(),
                expires_at,
            })
        })
        .await
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkConfirm {
    pub actor: Actor,
    pub request_id: String,
    pub approve: bool,
    pub now: UnixSeconds,
}

impl Query for LinkConfirm {
    type Output = DeviceRecord;
    const NAME: &'static str = "e2ee_link_confirm";

    async fn run<D: Db>(self, db: &mut D) -> Result<DeviceRecord, StorageError> {
        let LinkConfirm {
            actor,
            request_id,
            approve,
            now,
        } = self;
        in_transaction(db, async |db: &mut D| {
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
                return Err(StorageError::denied(
                    Denial::LinkRequestExpired,
                    "the link request expired",
                ));
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
                    if approve {
                        Param::OptText(None)
                    } else {
                        Param::Int(now)
                    },
                    Param::Text(&target),
                ],
            )
            .await?;
            device(db, &target).await?.ok_or(StorageError::NotFound("device"))
        })
        .await
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeDevice {
    pub user: UserUid,
    pub device_id: String,
    pub now: UnixSeconds,
}

impl Query for RevokeDevice {
    type Output = DeviceRecord;
    const NAME: &'static str = "e2ee_revoke_device";

    async fn run<D: Db>(self, db: &mut D) -> Result<DeviceRecord, StorageError> {
        let RevokeDevice { user, device_id, now } = self;
        in_transaction(db, async |db: &mut D| {
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
                .ok_or(StorageError::NotFound("device"))
        })
        .await
    }
}
