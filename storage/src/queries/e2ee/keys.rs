//! KeyPackages (consumed once) and key envelopes (only for members of their epoch), with their per-device queues.

use openchat_core::Denial;
use openchat_core::{ChannelId, UnixSeconds, UserUid};

use super::{
    KEY_PACKAGES_PER_DEVICE_MAX, device, e2ee_channel, member_of_epoch, next_id, own_active_device,
    require_active_device,
};
use crate::db::{Db, Param, in_transaction, lock_scope};
use crate::e2ee::{Actor, ClaimedPackage, DeviceStatus, EnvelopeIn, KeyEnvelopeRecord, PublishOutcome};
use crate::error::StorageError;
use crate::queries::corrupt;
use crate::query::Query;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishKeyPackages {
    pub actor: Actor,
    pub key_packages: Vec<String>,
    pub last_resort: Option<String>,
    pub now: UnixSeconds,
}

impl Query for PublishKeyPackages {
    type Output = usize;
    const NAME: &'static str = "e2ee_publish_key_packages";

    async fn run<D: Db>(self, db: &mut D) -> Result<usize, StorageError> {
        let PublishKeyPackages {
            actor,
            key_packages,
            last_resort,
            now,
        } = self;
        in_transaction(db, async |db: &mut D| {
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
            lock_scope(db, "key_packages").await?;
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
            Ok(count)
        })
        .await
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimKeyPackages {
    pub user: UserUid,
}

impl Query for ClaimKeyPackages {
    type Output = Vec<ClaimedPackage>;
    const NAME: &'static str = "e2ee_claim";

    async fn run<D: Db>(self, db: &mut D) -> Result<Vec<ClaimedPackage>, StorageError> {
        let ClaimKeyPackages { user } = self;
        in_transaction(db, async |db: &mut D| {
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
            Ok(packages)
        })
        .await
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishEnvelopes {
    pub actor: Actor,
    pub channel: ChannelId,
    pub epoch_id: i64,
    pub envelopes: Vec<EnvelopeIn>,
    pub queue_max: usize,
    pub now: UnixSeconds,
}

impl Query for PublishEnvelopes {
    type Output = PublishOutcome;
    const NAME: &'static str = "e2ee_publish_envelopes";

    async fn run<D: Db>(self, db: &mut D) -> Result<PublishOutcome, StorageError> {
        let PublishEnvelopes {
            actor,
            channel,
            epoch_id,
            envelopes,
            queue_max,
            now,
        } = self;
        in_transaction(db, async |db: &mut D| {
            e2ee_channel(db, &channel).await?;
            if !member_of_epoch(db, &channel, actor.user.as_str(), epoch_id).await? {
                return Err(StorageError::denied(
                    Denial::NotAMemberOfEpoch,
                    "only members of that epoch may send its keys",
                ));
            }
            require_active_device(db, actor.user.as_str(), &actor.device).await?;
            lock_scope(db, "key_envelopes").await?;
            let mut id = next_id(db, "SELECT COALESCE(MAX(envelope_id), 0) + 1 FROM key_envelopes").await?;
            let mut outcome = PublishOutcome {
                accepted: 0,
                rejected: Vec::new(),
                delivered: Vec::new(),
            };
            for envelope in &envelopes {
                let target = &envelope.target_device_id;
                let owner = match device(db, target).await? {
                    Some(d) if d.status == DeviceStatus::Active => {
                        if member_of_epoch(db, &channel, d.user_uid.as_str(), epoch_id).await? {
                            Ok(d.user_uid)
                        } else {
                            Err("target_not_member_of_epoch")
                        }
                    }
                    _ => Err("target_device_not_active"),
                };
                let owner = match owner {
                    Ok(owner) => owner,
                    Err(code) => {
                        outcome.rejected.push((target.clone(), code));
                        continue;
                    }
                };
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
                match outcome.delivered.iter_mut().find(|(d, _, _)| d == target) {
                    Some((_, _, count)) => *count = queued + 1,
                    None => outcome.delivered.push((target.clone(), owner, queued + 1)),
                }
            }
            Ok(outcome)
        })
        .await
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchEnvelopes {
    pub actor: Actor,
    pub device_id: String,
    pub after: i64,
    pub limit: usize,
}

impl Query for FetchEnvelopes {
    type Output = Vec<KeyEnvelopeRecord>;
    const NAME: &'static str = "e2ee_fetch_envelopes";

    async fn run<D: Db>(self, db: &mut D) -> Result<Vec<KeyEnvelopeRecord>, StorageError> {
        let FetchEnvelopes {
            actor,
            device_id,
            after,
            limit,
        } = self;
        in_transaction(db, async |db: &mut D| {
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
            Ok(envelopes)
        })
        .await
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckEnvelopes {
    pub actor: Actor,
    pub device_id: String,
    pub up_to: i64,
}

impl Query for AckEnvelopes {
    type Output = usize;
    const NAME: &'static str = "e2ee_ack_envelopes";

    async fn run<D: Db>(self, db: &mut D) -> Result<usize, StorageError> {
        let AckEnvelopes {
            actor,
            device_id,
            up_to,
        } = self;
        in_transaction(db, async |db: &mut D| {
            own_active_device(db, &actor, &device_id).await?;
            let deleted = db
                .execute(
                    "DELETE FROM key_envelopes WHERE target_device_id = $1 AND envelope_id <= $2",
                    &[Param::Text(&device_id), Param::Int(up_to)],
                )
                .await?;
            Ok(deleted as usize)
        })
        .await
    }
}
