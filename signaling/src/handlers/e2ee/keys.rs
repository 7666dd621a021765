//! KeyPackages and key envelopes: publishing, claiming and relaying key material.

use super::*;

#[derive(Debug, Deserialize, ToSchema)]
pub struct KeyPackagesBody {
    pub device_id: String,
    pub key_packages: Vec<String>,
    pub last_resort: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StoredDto {
    pub stored: usize,
}

/// Publishes the caller device's KeyPackages (and optionally its last-resort package).
#[utoipa::path(post, path = "/v1/keys/packages", tag = "keys", request_body = KeyPackagesBody,
    responses((status = 201, body = StoredDto), GenericErrors))]
pub(crate) async fn publish_key_packages(
    state: &Arc<AppState>,
    ctx: Ctx,
) -> Result<Response<Body>, ApiError> {
    let actor = actor(&ctx)?;
    let body: KeyPackagesBody = read_json(ctx.request, KEY_BODY_BYTES_MAX).await?;
    same_device(&actor, &body.device_id)?;
    if body.key_packages.len() > KEY_PACKAGES_PER_CALL_MAX {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("at most {KEY_PACKAGES_PER_CALL_MAX} KeyPackages per call"),
        ));
    }
    for package in body.key_packages.iter().chain(body.last_resort.iter()) {
        blob("key_package", package, KEY_PACKAGE_BYTES_MAX)?;
    }
    let op = queries::e2ee::PublishKeyPackages {
        actor,
        key_packages: body.key_packages,
        last_resort: body.last_resort,
        now: ctx.now,
    };
    let stored = state.run(op).await?;
    Ok(json(StatusCode::CREATED, &StoredDto { stored }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct KeyPackageClaimBody {
    pub user_uid: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClaimedPackageDto {
    pub device_id: String,
    pub key_package: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClaimedDto {
    pub user_uid: String,
    pub packages: Vec<ClaimedPackageDto>,
}

/// One KeyPackage per active device of a user, each consumed once (the last-resort one is
/// returned but kept). Rate-limited per caller.
#[utoipa::path(post, path = "/v1/keys/packages/claim", tag = "keys", request_body = KeyPackageClaimBody,
    responses((status = 200, body = ClaimedDto), GenericErrors))]
pub(crate) async fn claim_key_packages(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let caller = ctx.user()?;
    state
        .limiters
        .check_claim(caller.as_str())
        .map_err(ApiError::rate_limited)?;
    let body: KeyPackageClaimBody = read_json(ctx.request, JSON_BODY_BYTES_MAX).await?;
    let user = user_field(&body.user_uid)?;
    let packages = state
        .run(queries::e2ee::ClaimKeyPackages { user: user.clone() })
        .await?;
    Ok(json(
        StatusCode::OK,
        &ClaimedDto {
            user_uid: user.to_string(),
            packages: packages
                .into_iter()
                .map(|p| ClaimedPackageDto {
                    device_id: p.device_id,
                    key_package: p.key_package,
                })
                .collect(),
        },
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct EnvelopeInBody {
    pub target_device_id: String,
    pub encrypted_key_blob: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PublishEnvelopesBody {
    pub channel_id: String,
    #[serde(deserialize_with = "crate::dto::whole_number")]
    pub epoch_id: i64,
    pub envelopes: Vec<EnvelopeInBody>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RejectedDto {
    pub target_device_id: String,
    pub code: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PublishedDto {
    pub accepted: usize,
    pub rejected: Vec<RejectedDto>,
}

/// Key envelopes (Welcomes, wrapped epoch keys) for target devices; each target must be an
/// active device of a member of that epoch.
#[utoipa::path(post, path = "/v1/keys/envelopes/publish", tag = "keys", request_body = PublishEnvelopesBody,
    responses((status = 201, body = PublishedDto), GenericErrors))]
pub(crate) async fn publish_envelopes(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let actor = actor(&ctx)?;
    let body: PublishEnvelopesBody = read_json(ctx.request, KEY_BODY_BYTES_MAX).await?;
    let channel = ChannelId::parse(body.channel_id.trim())
        .map_err(|_| ApiError::not_found("channel_not_found", "channel not found"))?;
    if body.envelopes.len() > KEY_ENVELOPES_PER_CALL_MAX {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("at most {KEY_ENVELOPES_PER_CALL_MAX} envelopes per call"),
        ));
    }
    let mut envelopes = Vec::with_capacity(body.envelopes.len());
    for envelope in body.envelopes {
        blob(
            "encrypted_key_blob",
            &envelope.encrypted_key_blob,
            KEY_ENVELOPE_BYTES_MAX,
        )?;
        envelopes.push(EnvelopeIn {
            target_device_id: device_id_field("target_device_id", &envelope.target_device_id)?,
            encrypted_key_blob: envelope.encrypted_key_blob,
        });
    }
    let op = queries::e2ee::PublishEnvelopes {
        actor,
        channel,
        epoch_id: body.epoch_id,
        envelopes,
        queue_max: KEY_ENVELOPE_QUEUE_MAX,
        now: ctx.now,
    };
    let out = state
        .run_publishing(op, |out| {
            out.delivered
                .iter()
                .filter_map(|(device, owner, count)| {
                    Event::new(
                        "keys.envelopes.available",
                        Audience::Device {
                            user: owner.clone(),
                            device: device.clone(),
                        },
                        &serde_json::json!({"device_id": device, "count": count}),
                    )
                })
                .collect()
        })
        .await?;
    Ok(json(
        StatusCode::CREATED,
        &PublishedDto {
            accepted: out.accepted,
            rejected: out
                .rejected
                .into_iter()
                .map(|(target_device_id, code)| RejectedDto {
                    target_device_id,
                    code: code.to_owned(),
                })
                .collect(),
        },
    ))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyEnvelopeDto {
    pub envelope_id: i64,
    pub channel_id: String,
    pub epoch_id: i64,
    pub sender_device_id: String,
    pub encrypted_key_blob: String,
    pub created_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyEnvelopesDto {
    pub envelopes: Vec<KeyEnvelopeDto>,
    /// Pass as `after` for the next page; null when this page was the last.
    pub next_cursor: Option<String>,
}

/// The caller device's queued envelopes, in increasing `envelope_id`.
#[utoipa::path(get, path = "/v1/keys/envelopes", tag = "keys",
    params(("device_id" = String, Query), ("after" = Option<i64>, Query), ("limit" = Option<usize>, Query)),
    responses((status = 200, body = KeyEnvelopesDto), GenericErrors))]
pub(crate) async fn fetch_envelopes(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let actor = actor(&ctx)?;
    let (mut device_id, mut after, mut limit) = (None, 0i64, KEY_ENVELOPES_PAGE_DEFAULT);
    for (key, value) in ctx.query() {
        match key.as_str() {
            "device_id" => device_id = Some(device_id_field("device_id", &value)?),
            "after" => {
                after = super::super::query_number("after", &value, 0, crate::dto::SAFE_INTEGER_MAX as u64)
                    .map_err(|_| ApiError::bad_request("invalid_cursor", "after is not an envelope id"))?
                    as i64;
            }
            "limit" => {
                limit =
                    super::super::query_number("limit", &value, 1, KEY_ENVELOPES_PAGE_MAX as u64)? as usize;
            }
            _ => {}
        }
    }
    let device_id = device_id.unwrap_or_else(|| actor.device.clone());
    let op = queries::e2ee::FetchEnvelopes {
        actor,
        device_id,
        after,
        limit,
    };
    let list = state.run(op).await?;
    let next_cursor = (list.len() == limit)
        .then(|| list.last().map(|e| e.envelope_id.to_string()))
        .flatten();
    Ok(json(
        StatusCode::OK,
        &KeyEnvelopesDto {
            envelopes: list
                .into_iter()
                .map(|e| KeyEnvelopeDto {
                    envelope_id: e.envelope_id,
                    channel_id: e.channel_id.to_string(),
                    epoch_id: e.epoch_id,
                    sender_device_id: e.sender_device_id,
                    encrypted_key_blob: e.encrypted_key_blob,
                    created_at: rfc3339(e.created_at),
                })
                .collect(),
            next_cursor,
        },
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AckBody {
    pub device_id: String,
    #[serde(deserialize_with = "crate::dto::whole_number")]
    pub up_to_envelope_id: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeletedDto {
    pub deleted: usize,
}

/// Deletes the caller device's envelopes up to an id.
#[utoipa::path(post, path = "/v1/keys/envelopes/ack", tag = "keys", request_body = AckBody,
    responses((status = 200, body = DeletedDto), GenericErrors))]
pub(crate) async fn ack_envelopes(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let actor = actor(&ctx)?;
    let body: AckBody = read_json(ctx.request, JSON_BODY_BYTES_MAX).await?;
    same_device(&actor, &body.device_id)?;
    let op = queries::e2ee::AckEnvelopes {
        device_id: actor.device.clone(),
        actor,
        up_to: body.up_to_envelope_id,
    };
    let deleted = state.run(op).await?;
    Ok(json(StatusCode::OK, &DeletedDto { deleted }))
}
