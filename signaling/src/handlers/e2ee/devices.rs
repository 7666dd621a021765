//! Devices: registration, listing, linking and revocation.

use super::*;

#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterDeviceBody {
    pub device_id: String,
    pub device_pubkey: String,
    pub device_name: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceDto {
    pub device_id: String,
    pub user_uid: String,
    pub device_pubkey: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    pub status: String,
    pub created_at: String,
}

impl From<DeviceRecord> for DeviceDto {
    fn from(d: DeviceRecord) -> Self {
        Self {
            device_id: d.device_id,
            user_uid: d.user_uid.to_string(),
            device_pubkey: d.device_pubkey,
            device_name: d.device_name,
            status: d.status.as_str().to_owned(),
            created_at: rfc3339(d.created_at),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceEnvelopeDto {
    pub device: DeviceDto,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DevicesDto {
    pub devices: Vec<DeviceDto>,
}

/// An Ed25519 public key: 32 bytes, base64url.
pub(crate) fn ed25519_key(raw: &str) -> Result<Vec<u8>, ApiError> {
    match URL_SAFE_NO_PAD.decode(raw) {
        Ok(key) if key.len() == 32 => Ok(key),
        _ => Err(ApiError::bad_request(
            "invalid_pubkey",
            "device_pubkey must be a 32-byte Ed25519 key, base64url",
        )),
    }
}

/// Registers the caller's device: the user's first device is active, later ones pending.
#[utoipa::path(post, path = "/v1/devices", tag = "devices", request_body = RegisterDeviceBody,
    responses((status = 201, body = DeviceEnvelopeDto), GenericErrors))]
pub(crate) async fn register_device(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let actor = actor(&ctx)?;
    let body: RegisterDeviceBody = read_json(ctx.request, JSON_BODY_BYTES_MAX).await?;
    let device_id = device_id_field("device_id", &body.device_id)?;
    same_device(&actor, &device_id)?;
    ed25519_key(&body.device_pubkey)?;
    let name = body
        .device_name
        .map(|n| n.trim().chars().take(100).collect::<String>())
        .filter(|n| !n.is_empty());
    let op = queries::e2ee::RegisterDevice {
        user: actor.user,
        device_id,
        device_pubkey: body.device_pubkey.trim().to_owned(),
        device_name: name,
        limit: DEVICES_PER_USER_MAX,
        now: ctx.now,
    };
    let device = state.run(op).await?;
    Ok(json(
        StatusCode::CREATED,
        &DeviceEnvelopeDto {
            device: device.into(),
        },
    ))
}

/// The caller's devices.
#[utoipa::path(get, path = "/v1/devices", tag = "devices", responses((status = 200, body = DevicesDto), GenericErrors))]
pub(crate) async fn devices(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let op = queries::e2ee::Devices { user: ctx.user()? };
    let list = state.run(op).await?;
    Ok(json(
        StatusCode::OK,
        &DevicesDto {
            devices: list.into_iter().map(DeviceDto::from).collect(),
        },
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LinkStartBody {
    pub new_device_id: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LinkStartedDto {
    pub request_id: String,
    pub expires_at: String,
}

/// A pending device asks to be linked (TTL 10 minutes).
#[utoipa::path(post, path = "/v1/devices/link/start", tag = "devices", request_body = LinkStartBody,
    responses((status = 201, body = LinkStartedDto), GenericErrors))]
pub(crate) async fn link_start(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let actor = actor(&ctx)?;
    let body: LinkStartBody = read_json(ctx.request, JSON_BODY_BYTES_MAX).await?;
    same_device(&actor, &body.new_device_id)?;
    let op = queries::e2ee::LinkStart {
        actor,
        request_id: new_id("lnk"),
        ttl: DEVICE_LINK_TTL_SECONDS,
        now: ctx.now,
    };
    let LinkRequest {
        request_id,
        expires_at,
    } = state.run(op).await?;
    Ok(json(
        StatusCode::CREATED,
        &LinkStartedDto {
            request_id,
            expires_at: rfc3339(expires_at),
        },
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LinkConfirmBody {
    pub request_id: String,
    pub approve: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceStatusDto {
    pub device_id: String,
    pub status: String,
}

/// An active device of the same user approves (or refuses) a link request.
#[utoipa::path(post, path = "/v1/devices/link/confirm", tag = "devices", request_body = LinkConfirmBody,
    responses((status = 200, body = DeviceStatusDto), GenericErrors))]
pub(crate) async fn link_confirm(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let actor = actor(&ctx)?;
    let body: LinkConfirmBody = read_json(ctx.request, JSON_BODY_BYTES_MAX).await?;
    let op = queries::e2ee::LinkConfirm {
        actor,
        request_id: body.request_id.trim().to_owned(),
        approve: body.approve,
        now: ctx.now,
    };
    let d = state.run(op).await?;
    Ok(json(
        StatusCode::OK,
        &DeviceStatusDto {
            device_id: d.device_id,
            status: d.status.as_str().to_owned(),
        },
    ))
}

/// Revokes one of the caller's devices: it receives no more envelopes, its sessions end and
/// its open sockets close now.
#[utoipa::path(delete, path = "/v1/devices/{device_id}", tag = "devices", params(("device_id" = String, Path)),
    responses((status = 200, body = DeviceStatusDto), GenericErrors))]
pub(crate) async fn revoke_device(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let user = ctx.user()?;
    let device_id = device_id_field("device_id", ctx.params.get("device_id"))
        .map_err(|_| ApiError::not_found("device_not_found", "device not found"))?;
    let op = queries::e2ee::RevokeDevice {
        user: user.clone(),
        device_id: device_id.clone(),
        now: ctx.now,
    };
    // The device's sockets close on every node, once the revocation committed.
    let d = state
        .run_publishing(op, move |_| {
            Event::only(
                DEVICE_REVOKED_EVENT,
                Audience::Device {
                    user,
                    device: device_id,
                },
                &serde_json::json!({}),
            )
        })
        .await?;
    Ok(json(
        StatusCode::OK,
        &DeviceStatusDto {
            device_id: d.device_id,
            status: d.status.as_str().to_owned(),
        },
    ))
}
