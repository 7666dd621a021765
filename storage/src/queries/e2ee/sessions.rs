//! Device-signature challenges and the sessions they open.

use openchat_core::Denial;
use openchat_core::{UnixSeconds, UserUid};

use super::{device, register_device, uid};
use crate::db::{Db, Param, in_transaction};
use crate::e2ee::{ChallengeRecord, DeviceRecord, DeviceStatus, SessionRecord};
use crate::error::StorageError;
use crate::query::Query;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateChallenge {
    pub challenge: ChallengeRecord,
}

impl Query for CreateChallenge {
    type Output = ChallengeRecord;
    const NAME: &'static str = "auth_challenge";

    async fn run<D: Db>(self, db: &mut D) -> Result<ChallengeRecord, StorageError> {
        let CreateChallenge { challenge } = self;
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
        Ok(challenge)
    }
}

/// An unused, unexpired challenge (`challenge_invalid` otherwise); not consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub challenge_id: String,
    pub now: UnixSeconds,
}

impl Query for Challenge {
    type Output = ChallengeRecord;
    const NAME: &'static str = "auth_challenge_lookup";

    async fn run<D: Db>(self, db: &mut D) -> Result<ChallengeRecord, StorageError> {
        let Challenge { challenge_id, now } = self;
        let row = db
            .query_opt(
                "SELECT challenge_id, user_uid, device_id, nonce, expires_at FROM auth_challenges \
                     WHERE challenge_id = $1 AND used_at IS NULL AND expires_at > $2",
                &[Param::Text(&challenge_id), Param::Int(now)],
            )
            .await?
            .ok_or_else(|| {
                StorageError::denied(Denial::ChallengeInvalid, "unknown, used or expired challenge")
            })?;
        Ok(ChallengeRecord {
            challenge_id: row.text(0)?,
            user_uid: uid(row.text(1)?)?,
            device_id: row.text(2)?,
            nonce: row.text(3)?,
            expires_at: row.int(4)?,
        })
    }
}

/// Consumes a challenge once; then registers the device on first sight (one rule with
/// `RegisterDevice`) or checks its key, and stores the session (token digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSession {
    pub challenge_id: String,
    pub user: UserUid,
    pub device_id: String,
    pub device_pubkey: String,
    pub token_sha256: String,
    pub ttl: i64,
    pub device_limit: usize,
    pub now: UnixSeconds,
}

impl Query for OpenSession {
    type Output = (DeviceRecord, SessionRecord);
    const NAME: &'static str = "auth_session";

    async fn run<D: Db>(self, db: &mut D) -> Result<(DeviceRecord, SessionRecord), StorageError> {
        let OpenSession {
            challenge_id,
            user,
            device_id,
            device_pubkey,
            token_sha256,
            ttl,
            device_limit,
            now,
        } = self;
        in_transaction(db, async |db: &mut D| {
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
                    return Err(StorageError::denied(
                        Denial::DeviceRevoked,
                        "this device was revoked",
                    ));
                }
                Some(d) if d.device_pubkey != device_pubkey => {
                    return Err(StorageError::denied(
                        Denial::DeviceKeyMismatch,
                        "the key does not match the registered device key",
                    ));
                }
                Some(d) => d,
                None => {
                    register_device(db, &user, &device_id, &device_pubkey, None, device_limit, now).await?
                }
            };
            let scope = if record.status == DeviceStatus::Active {
                "full"
            } else {
                "link"
            };
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
            Ok((
                record,
                SessionRecord {
                    user_uid: user.clone(),
                    device_id: device_id.clone(),
                    scope: scope.to_owned(),
                    expires_at,
                },
            ))
        })
        .await
    }
}

/// The live session for a token digest (not expired, not revoked, device not revoked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub token_sha256: String,
    pub now: UnixSeconds,
}

impl Query for Session {
    type Output = Option<SessionRecord>;
    const NAME: &'static str = "auth_session_lookup";

    async fn run<D: Db>(self, db: &mut D) -> Result<Option<SessionRecord>, StorageError> {
        let Session { token_sha256, now } = self;
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
        Ok(session)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeSession {
    pub token_sha256: String,
    pub now: UnixSeconds,
}

impl Query for RevokeSession {
    type Output = ();
    const NAME: &'static str = "auth_session_revoke";

    async fn run<D: Db>(self, db: &mut D) -> Result<(), StorageError> {
        let RevokeSession { token_sha256, now } = self;
        db.execute(
            "UPDATE sessions SET revoked_at = $1 WHERE token_sha256 = $2 AND revoked_at IS NULL",
            &[Param::Int(now), Param::Text(&token_sha256)],
        )
        .await?;
        Ok(())
    }
}
