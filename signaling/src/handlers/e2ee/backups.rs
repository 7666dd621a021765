//! Backups of a user's key material.

use super::*;

#[derive(Debug, Deserialize, ToSchema)]
pub struct BackupBody {
    pub ciphertext_blob: String,
    #[schema(value_type = Object)]
    pub kdf_metadata: Value,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BackupCreatedDto {
    pub backup_id: String,
    pub created_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BackupDto {
    pub backup_id: String,
    pub ciphertext_blob: String,
    #[schema(value_type = Object)]
    pub kdf_metadata: Value,
    pub created_at: String,
}

/// Stores an encrypted key backup of the caller.
#[utoipa::path(post, path = "/v1/keys/backups", tag = "keys", request_body = BackupBody,
    responses((status = 201, body = BackupCreatedDto), GenericErrors))]
pub(crate) async fn put_backup(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let user = ctx.user()?;
    let body: BackupBody = read_json(ctx.request, KEY_BODY_BYTES_MAX).await?;
    blob("ciphertext_blob", &body.ciphertext_blob, KEY_BACKUP_BYTES_MAX)?;
    if !body.kdf_metadata.is_object() || body.kdf_metadata.to_string().len() > E2EE_SMALL_BLOB_BYTES_MAX {
        return Err(ApiError::invalid_payload(
            "kdf_metadata must be a small JSON object",
        ));
    }
    let op = queries::e2ee::PutBackup {
        user,
        backup_id: new_id("bkp"),
        ciphertext_blob: body.ciphertext_blob,
        kdf_metadata: body.kdf_metadata.to_string(),
        now: ctx.now,
    };
    let b = state.run(op).await?;
    Ok(json(
        StatusCode::CREATED,
        &BackupCreatedDto {
            backup_id: b.backup_id,
            created_at: rfc3339(b.created_at),
        },
    ))
}

/// The caller's latest backup.
#[utoipa::path(get, path = "/v1/keys/backups/latest", tag = "keys", responses((status = 200, body = BackupDto), GenericErrors))]
pub(crate) async fn latest_backup(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let op = queries::e2ee::LatestBackup { user: ctx.user()? };
    let b = state.run(op).await?;
    Ok(json(
        StatusCode::OK,
        &BackupDto {
            backup_id: b.backup_id,
            ciphertext_blob: b.ciphertext_blob,
            kdf_metadata: serde_json::from_str(&b.kdf_metadata).unwrap_or(Value::Null),
            created_at: rfc3339(b.created_at),
        },
    ))
}
