//! Encrypted key backups: one per id, the latest per user.

use openchat_core::{UnixSeconds, UserUid};

use crate::db::{Db, Param, in_transaction, lock_scope};
use crate::e2ee::BackupRecord;
use crate::error::StorageError;
use crate::query::Query;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutBackup {
    pub user: UserUid,
    pub backup_id: String,
    pub ciphertext_blob: String,
    pub kdf_metadata: String,
    pub now: UnixSeconds,
}

impl Query for PutBackup {
    type Output = BackupRecord;
    const NAME: &'static str = "e2ee_put_backup";

    async fn run<D: Db>(self, db: &mut D) -> Result<BackupRecord, StorageError> {
        let PutBackup {
            user,
            backup_id,
            ciphertext_blob,
            kdf_metadata,
            now,
        } = self;
        in_transaction(db, async |db: &mut D| {
            lock_scope(db, &format!("key_backups:{user}")).await?;
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
            Ok(BackupRecord {
                backup_id: backup_id.clone(),
                ciphertext_blob: String::new(),
                kdf_metadata: kdf_metadata.clone(),
                created_at: now,
            })
        })
        .await
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestBackup {
    pub user: UserUid,
}

impl Query for LatestBackup {
    type Output = BackupRecord;
    const NAME: &'static str = "e2ee_latest_backup";

    async fn run<D: Db>(self, db: &mut D) -> Result<BackupRecord, StorageError> {
        let LatestBackup { user } = self;
        let row = db
                .query_opt(
                    "SELECT backup_id, ciphertext_blob, kdf_metadata, created_at FROM key_backups WHERE user_uid = $1 \
                     ORDER BY seq DESC LIMIT 1",
                    &[Param::Text(user.as_str())],
                )
                .await?
                .ok_or(StorageError::NotFound("backup"))?;
        Ok(BackupRecord {
            backup_id: row.text(0)?,
            ciphertext_blob: row.text(1)?,
            kdf_metadata: row.text(2)?,
            created_at: row.int(3)?,
        })
    }
}
