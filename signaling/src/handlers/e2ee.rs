//! End-to-end-encrypted channels, devices, key relay, backups and session authentication
//! (E2EE.md §2). The handlers check shapes, sizes and that every `*_device_id` in a body is
//! the caller's own device (`device_mismatch`); the rules themselves (who may post, read,
//! commit, receive) are storage transactions (`openchat_storage::e2ee`). Nothing here logs a
//! blob, a ciphertext or a token.

use openchat_core::Denial;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{Response, StatusCode};
use openchat_core::limits::{
    COMMIT_PAYLOAD_BYTES_MAX, DEVICE_LINK_TTL_SECONDS, DEVICES_PER_USER_MAX, E2EE_SMALL_BLOB_BYTES_MAX,
    HISTORY_PAGE_DEFAULT, HISTORY_PAGE_MAX, ID_BYTES_MAX, JSON_BODY_BYTES_MAX, KEY_BACKUP_BYTES_MAX,
    KEY_BODY_BYTES_MAX, KEY_ENVELOPE_BYTES_MAX, KEY_ENVELOPE_QUEUE_MAX, KEY_ENVELOPES_PAGE_DEFAULT,
    KEY_ENVELOPES_PAGE_MAX, KEY_ENVELOPES_PER_CALL_MAX, KEY_PACKAGE_BYTES_MAX, KEY_PACKAGES_PER_CALL_MAX,
};
use openchat_core::{ChannelId, UserUid};
use openchat_storage::PageRequest;
use openchat_storage::e2ee::{Actor, DeviceRecord, EnvelopeIn, Op, Outcome};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::new_id;
use crate::body::{Body, json, read_json};
use crate::dto::MessageDto;
use crate::error::ApiError;
use crate::error::GenericErrors;
use crate::realtime::Audience;
use crate::state::{AppState, Ctx};
use crate::wire::rfc3339;

fn channel_id(ctx: &Ctx) -> Result<ChannelId, ApiError> {
    ctx.id("channel_id", ChannelId::parse, "channel_not_found")
}

fn actor(ctx: &Ctx) -> Result<Actor, ApiError> {
    let who = ctx.who()?;
    Ok(Actor {
        user: who.user_uid.clone(),
        device: who.device_id.clone(),
    })
}

/// A device id named in a body must be the caller's own device.
fn same_device(actor: &Actor, named: &str) -> Result<(), ApiError> {
    if named.trim() != actor.device {
        return Err(ApiError::denied(
            Denial::DeviceMismatch,
            "the device named in the body is not the caller's device",
        ));
    }
    Ok(())
}

/// A base64url (no padding) field of at most `max` decoded bytes.
fn blob(field: &str, value: &str, max: usize) -> Result<Vec<u8>, ApiError> {
    if value.len() > (max * 4).div_ceil(3) {
        return Err(too_large(field, max));
    }
    // Canonical base64url without padding (E2EE.md): no `=`, no whitespace, no stray bits.
    let bytes = URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| ApiError::invalid_payload(format!("{field} is not base64url without padding")))?;
    if bytes.len() > max {
        return Err(too_large(field, max));
    }
    Ok(bytes)
}

fn too_large(field: &str, max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("{field} exceeds {max} bytes"),
    )
}

fn device_id_field(field: &str, value: &str) -> Result<String, ApiError> {
    let value = value.trim();
    if !openchat_core::ids::is_id(value) {
        return Err(ApiError::invalid_payload(format!(
            "{field} is not a device id (1-{ID_BYTES_MAX} of A-Z a-z 0-9 _ . -)"
        )));
    }
    Ok(value.to_owned())
}

fn user_field(value: &str) -> Result<UserUid, ApiError> {
    UserUid::parse(value.trim()).map_err(|e| ApiError::invalid_payload(format!("user_uid: {e}")))
}

fn unexpected(outcome: Outcome) -> ApiError {
    tracing::error!(outcome = ?std::mem::discriminant(&outcome), "storage answered an E2EE request with another kind");
    ApiError::internal()
}

fn publish(state: &AppState, kind: &str, audience: Audience, payload: &impl Serialize) {
    match serde_json::to_value(payload) {
        Ok(payload) => state.hub.publish(kind, audience, &payload, false),
        Err(err) => tracing::error!(error = %err, "event payload did not serialise"),
    }
}

/// An e2ee message's envelope, checked: sent by the caller's device, fields base64url and
/// within the message limit.
pub(crate) fn message_envelope(
    envelope: crate::dto::EnvelopeDto,
    device: &str,
    max_message_bytes: u64,
) -> Result<openchat_storage::e2ee::Envelope, ApiError> {
    if envelope.sender_device_id.trim() != device {
        return Err(ApiError::denied(
            Denial::DeviceMismatch,
            "sender_device_id is not the caller's device",
        ));
    }
    let ciphertext_max = max_message_bytes as usize + 1024;
    blob("ciphertext", &envelope.ciphertext, ciphertext_max)?;
    blob("nonce", &envelope.nonce, E2EE_SMALL_BLOB_BYTES_MAX)?;
    blob("aad", &envelope.aad, E2EE_SMALL_BLOB_BYTES_MAX)?;
    Ok(openchat_storage::e2ee::Envelope {
        epoch_id: envelope.epoch_id,
        sender_device_id: device.to_owned(),
        ciphertext: envelope.ciphertext,
        nonce: envelope.nonce,
        aad: envelope.aad,
    })
}

// ---- membership and epochs ----

#[derive(Debug, Deserialize, ToSchema)]
pub struct AddMemberBody {
    pub user_uid: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MembershipDto {
    pub channel_id: String,
    pub user_uid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_epoch: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_epoch: Option<i64>,
    pub current_epoch: i64,
}

fn announce_membership(state: &AppState, change: &openchat_storage::e2ee::MembershipChange) {
    publish(
        state,
        "chat.membership.updated",
        Audience::Users(Arc::from(change.audience.clone())),
        &serde_json::json!({
            "channel_id": change.channel_id.as_str(),
            "user_uid": change.user_uid.as_str(),
            "change": change.change,
            "current_epoch": change.current_epoch,
        }),
    );
}

/// Adds a member to an e2ee channel (a member adds someone; a user may add itself only with
/// `OPENCHAT_E2EE_SELF_JOIN=true`, in every mode). The epoch advances.
#[utoipa::path(post, path = "/v1/channels/{channel_id}/members", tag = "e2ee", request_body = AddMemberBody,
    params(("channel_id" = String, Path)), responses((status = 200, body = MembershipDto), GenericErrors))]
pub(crate) async fn add_member(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let channel = channel_id(&ctx)?;
    let actor = actor(&ctx)?;
    let body: AddMemberBody = read_json(ctx.request, JSON_BODY_BYTES_MAX).await?;
    let user = user_field(&body.user_uid)?;
    let op = Op::AddMember {
        actor,
        channel,
        user,
        self_join: state.config.e2ee_self_join,
        now: ctx.now,
    };
    match state.store("e2ee_add_member", state.storage.e2ee(op)).await? {
        Outcome::Membership(change) => {
            announce_membership(state, &change);
            let body = MembershipDto {
                channel_id: change.channel_id.to_string(),
                user_uid: change.user_uid.to_string(),
                from_epoch: change.from_epoch,
                to_epoch: None,
                current_epoch: change.current_epoch,
            };
            Ok(json(StatusCode::OK, &body))
        }
        other => Err(unexpected(other)),
    }
}

/// Removes a member (self: leave; someone else: the channel's creator or the server's
/// owner). The epoch advances.
#[utoipa::path(delete, path = "/v1/channels/{channel_id}/members/{user_uid}", tag = "e2ee",
    params(("channel_id" = String, Path), ("user_uid" = String, Path)),
    responses((status = 200, body = MembershipDto), GenericErrors))]
pub(crate) async fn remove_member(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let channel = channel_id(&ctx)?;
    let actor = actor(&ctx)?;
    let user = ctx.id("user_uid", UserUid::parse, "member_not_found")?;
    let op = Op::RemoveMember {
        actor,
        channel,
        user,
        now: ctx.now,
    };
    match state.store("e2ee_remove_member", state.storage.e2ee(op)).await? {
        Outcome::Membership(change) => {
            announce_membership(state, &change);
            let body = MembershipDto {
                channel_id: change.channel_id.to_string(),
                user_uid: change.user_uid.to_string(),
                from_epoch: None,
                to_epoch: change.to_epoch,
                current_epoch: change.current_epoch,
            };
            Ok(json(StatusCode::OK, &body))
        }
        other => Err(unexpected(other)),
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CurrentEpochDto {
    pub current_epoch: i64,
}

/// Starts a new epoch (any member; e.g. after a device revocation). Rate-limited per member
/// and channel (429).
#[utoipa::path(post, path = "/v1/channels/{channel_id}/epochs/rotate", tag = "e2ee",
    params(("channel_id" = String, Path)), responses((status = 200, body = CurrentEpochDto), GenericErrors))]
pub(crate) async fn rotate_epoch(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let channel = channel_id(&ctx)?;
    state
        .limiters
        .check_rotation(channel.as_str(), ctx.user()?.as_str())
        .map_err(ApiError::rate_limited)?;
    let op = Op::Rotate {
        actor: actor(&ctx)?,
        channel,
        now: ctx.now,
    };
    match state.store("e2ee_rotate", state.storage.e2ee(op)).await? {
        Outcome::Epoch(current_epoch, _) => Ok(json(StatusCode::OK, &CurrentEpochDto { current_epoch })),
        other => Err(unexpected(other)),
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EpochDto {
    pub epoch_id: i64,
    pub cause: String,
    pub committed: bool,
    pub created_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SpanDto {
    pub from_epoch: i64,
    pub to_epoch: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EpochsDto {
    pub channel_id: String,
    pub current_epoch: i64,
    pub epochs: Vec<EpochDto>,
    pub my_membership: Vec<SpanDto>,
}

/// The epochs the caller belonged to.
#[utoipa::path(get, path = "/v1/channels/{channel_id}/epochs", tag = "e2ee",
    params(("channel_id" = String, Path)), responses((status = 200, body = EpochsDto), GenericErrors))]
pub(crate) async fn epochs(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let op = Op::Epochs {
        actor: actor(&ctx)?,
        channel: channel_id(&ctx)?,
    };
    match state.store("e2ee_epochs", state.storage.e2ee(op)).await? {
        Outcome::Epochs(list) => Ok(json(
            StatusCode::OK,
            &EpochsDto {
                channel_id: list.channel_id.to_string(),
                current_epoch: list.current_epoch,
                epochs: list
                    .epochs
                    .into_iter()
                    .map(|e| EpochDto {
                        epoch_id: e.epoch_id,
                        cause: e.cause,
                        committed: e.committed,
                        created_at: rfc3339(e.created_at),
                    })
                    .collect(),
                my_membership: list
                    .my_membership
                    .into_iter()
                    .map(|(from_epoch, to_epoch)| SpanDto { from_epoch, to_epoch })
                    .collect(),
            },
        )),
        other => Err(unexpected(other)),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CommitBody {
    #[serde(deserialize_with = "crate::dto::whole_number")]
    pub epoch_id: i64,
    pub committer_device_id: String,
    pub commit_payload: String,
    pub signature: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CommittedDto {
    pub epoch_id: i64,
    pub committed_at: String,
}

/// Stores the one commit of the current epoch (exactly one per epoch; the loser of a race
/// gets `epoch_commit_exists`).
#[utoipa::path(post, path = "/v1/channels/{channel_id}/membership/commit", tag = "e2ee", request_body = CommitBody,
    params(("channel_id" = String, Path)), responses((status = 201, body = CommittedDto), GenericErrors))]
pub(crate) async fn commit(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let channel = channel_id(&ctx)?;
    let actor = actor(&ctx)?;
    let body: CommitBody = read_json(ctx.request, KEY_BODY_BYTES_MAX).await?;
    same_device(&actor, &body.committer_device_id)?;
    blob("commit_payload", &body.commit_payload, COMMIT_PAYLOAD_BYTES_MAX)?;
    blob("signature", &body.signature, E2EE_SMALL_BLOB_BYTES_MAX)?;
    let op = Op::Commit {
        actor,
        channel: channel.clone(),
        epoch_id: body.epoch_id,
        commit_payload: body.commit_payload,
        signature: body.signature,
        now: ctx.now,
    };
    match state.store("e2ee_commit", state.storage.e2ee(op)).await? {
        Outcome::Committed(done) => {
            publish(
                state,
                "chat.epoch.committed",
                Audience::Users(Arc::from(done.audience)),
                &serde_json::json!({"channel_id": channel.as_str(), "epoch_id": done.epoch_id}),
            );
            Ok(json(
                StatusCode::CREATED,
                &CommittedDto {
                    epoch_id: done.epoch_id,
                    committed_at: rfc3339(done.committed_at),
                },
            ))
        }
        other => Err(unexpected(other)),
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CommitDto {
    pub epoch_id: i64,
    pub committer_device_id: String,
    pub commit_payload: String,
    pub signature: String,
    pub committed_at: String,
}

/// An epoch's commit, for members of that epoch or the one before.
#[utoipa::path(get, path = "/v1/channels/{channel_id}/epochs/{epoch_id}/commit", tag = "e2ee",
    params(("channel_id" = String, Path), ("epoch_id" = i64, Path)),
    responses((status = 200, body = CommitDto), GenericErrors))]
pub(crate) async fn fetch_commit(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let channel = channel_id(&ctx)?;
    let epoch_id: i64 = ctx
        .params
        .get("epoch_id")
        .parse()
        .map_err(|_| ApiError::not_found("epoch_not_committed", "no such epoch"))?;
    let op = Op::FetchCommit {
        actor: actor(&ctx)?,
        channel,
        epoch_id,
    };
    match state.store("e2ee_fetch_commit", state.storage.e2ee(op)).await? {
        Outcome::Commit(c) => Ok(json(
            StatusCode::OK,
            &CommitDto {
                epoch_id: c.epoch_id,
                committer_device_id: c.committer_device_id,
                commit_payload: c.commit_payload,
                signature: c.signature,
                committed_at: rfc3339(c.committed_at),
            },
        )),
        other => Err(unexpected(other)),
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HistoryDto {
    pub channel_id: String,
    pub messages: Vec<MessageDto>,
    /// Pass as `before` for the next older page; null at the start.
    pub next_cursor: Option<String>,
}

fn history_cursor(name: &str, raw: &str) -> Result<i64, ApiError> {
    super::cursor_sequence(raw).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_cursor",
            format!("{name} is not a cursor this server issued"),
        )
    })
}

/// A page of history, oldest first, as the caller may read it (an e2ee channel shows only
/// the epochs the caller was a member of).
#[utoipa::path(get, path = "/v1/channels/{channel_id}/history", tag = "e2ee",
    params(("channel_id" = String, Path), ("before" = Option<String>, Query), ("after" = Option<String>, Query), ("limit" = Option<usize>, Query)),
    responses((status = 200, body = HistoryDto), GenericErrors))]
pub(crate) async fn history(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let channel = channel_id(&ctx)?;
    let viewer = ctx.user()?;
    let mut page = PageRequest {
        limit: HISTORY_PAGE_DEFAULT,
        before: None,
        after: None,
    };
    for (key, value) in ctx.query() {
        match key.as_str() {
            "limit" => {
                page.limit = super::query_number("limit", &value, 1, HISTORY_PAGE_MAX as u64)? as usize
            }
            "before" => page.before = Some(history_cursor("before", &value)?),
            "after" => page.after = Some(history_cursor("after", &value)?),
            _ => {}
        }
    }
    let result = state
        .store(
            "history",
            state.storage.messages_for(channel.clone(), page, viewer),
        )
        .await?;
    let base = state.base_url();
    Ok(json(
        StatusCode::OK,
        &HistoryDto {
            channel_id: channel.to_string(),
            messages: result.messages.iter().map(|m| MessageDto::new(base, m)).collect(),
            next_cursor: result.older_cursor.map(|seq| format!("c{seq}")),
        },
    ))
}

// ---- devices ----

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
    let op = Op::RegisterDevice {
        user: actor.user,
        device_id,
        device_pubkey: body.device_pubkey.trim().to_owned(),
        device_name: name,
        limit: DEVICES_PER_USER_MAX,
        now: ctx.now,
    };
    match state
        .store("e2ee_register_device", state.storage.e2ee(op))
        .await?
    {
        Outcome::Device(device) => Ok(json(
            StatusCode::CREATED,
            &DeviceEnvelopeDto {
                device: device.into(),
            },
        )),
        other => Err(unexpected(other)),
    }
}

/// The caller's devices.
#[utoipa::path(get, path = "/v1/devices", tag = "devices", responses((status = 200, body = DevicesDto), GenericErrors))]
pub(crate) async fn devices(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let op = Op::Devices { user: ctx.user()? };
    match state.store("e2ee_devices", state.storage.e2ee(op)).await? {
        Outcome::Devices(list) => Ok(json(
            StatusCode::OK,
            &DevicesDto {
                devices: list.into_iter().map(DeviceDto::from).collect(),
            },
        )),
        other => Err(unexpected(other)),
    }
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
    let op = Op::LinkStart {
        actor,
        request_id: new_id("lnk"),
        ttl: DEVICE_LINK_TTL_SECONDS,
        now: ctx.now,
    };
    match state.store("e2ee_link_start", state.storage.e2ee(op)).await? {
        Outcome::Link {
            request_id,
            expires_at,
        } => Ok(json(
            StatusCode::CREATED,
            &LinkStartedDto {
                request_id,
                expires_at: rfc3339(expires_at),
            },
        )),
        other => Err(unexpected(other)),
    }
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
    let op = Op::LinkConfirm {
        actor,
        request_id: body.request_id.trim().to_owned(),
        approve: body.approve,
        now: ctx.now,
    };
    match state.store("e2ee_link_confirm", state.storage.e2ee(op)).await? {
        Outcome::Device(d) => Ok(json(
            StatusCode::OK,
            &DeviceStatusDto {
                device_id: d.device_id,
                status: d.status.as_str().to_owned(),
            },
        )),
        other => Err(unexpected(other)),
    }
}

/// Revokes one of the caller's devices: it receives no more envelopes, its sessions end and
/// its open sockets close now.
#[utoipa::path(delete, path = "/v1/devices/{device_id}", tag = "devices", params(("device_id" = String, Path)),
    responses((status = 200, body = DeviceStatusDto), GenericErrors))]
pub(crate) async fn revoke_device(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let user = ctx.user()?;
    let device_id = device_id_field("device_id", ctx.params.get("device_id"))
        .map_err(|_| ApiError::not_found("device_not_found", "device not found"))?;
    let op = Op::RevokeDevice {
        user: user.clone(),
        device_id: device_id.clone(),
        now: ctx.now,
    };
    match state.store("e2ee_revoke_device", state.storage.e2ee(op)).await? {
        Outcome::Device(d) => {
            state.hub.kick_device(&user, &device_id);
            Ok(json(
                StatusCode::OK,
                &DeviceStatusDto {
                    device_id: d.device_id,
                    status: d.status.as_str().to_owned(),
                },
            ))
        }
        other => Err(unexpected(other)),
    }
}

// ---- KeyPackages and key envelopes ----

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
    let op = Op::PublishKeyPackages {
        actor,
        key_packages: body.key_packages,
        last_resort: body.last_resort,
        now: ctx.now,
    };
    match state
        .store("e2ee_publish_key_packages", state.storage.e2ee(op))
        .await?
    {
        Outcome::Stored(stored) => Ok(json(StatusCode::CREATED, &StoredDto { stored })),
        other => Err(unexpected(other)),
    }
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
    match state
        .store(
            "e2ee_claim",
            state.storage.e2ee(Op::ClaimKeyPackages { user: user.clone() }),
        )
        .await?
    {
        Outcome::Claimed(packages) => Ok(json(
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
        )),
        other => Err(unexpected(other)),
    }
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
    let op = Op::PublishEnvelopes {
        actor,
        channel,
        epoch_id: body.epoch_id,
        envelopes,
        queue_max: KEY_ENVELOPE_QUEUE_MAX,
        now: ctx.now,
    };
    match state
        .store("e2ee_publish_envelopes", state.storage.e2ee(op))
        .await?
    {
        Outcome::Published(out) => {
            for (device, count) in &out.delivered {
                // The device's owner: the storage checked it is active; look it up once.
                if let Ok(Outcome::MaybeDevice(Some(record))) = state
                    .storage
                    .e2ee(Op::Device {
                        device_id: device.clone(),
                    })
                    .await
                {
                    publish(
                        state,
                        "keys.envelopes.available",
                        Audience::Device {
                            user: record.user_uid,
                            device: device.clone(),
                        },
                        &serde_json::json!({"device_id": device, "count": count}),
                    );
                }
            }
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
        other => Err(unexpected(other)),
    }
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
                after = super::query_number("after", &value, 0, crate::dto::SAFE_INTEGER_MAX as u64)
                    .map_err(|_| ApiError::bad_request("invalid_cursor", "after is not an envelope id"))?
                    as i64;
            }
            "limit" => {
                limit = super::query_number("limit", &value, 1, KEY_ENVELOPES_PAGE_MAX as u64)? as usize;
            }
            _ => {}
        }
    }
    let device_id = device_id.unwrap_or_else(|| actor.device.clone());
    let op = Op::FetchEnvelopes {
        actor,
        device_id,
        after,
        limit,
    };
    match state
        .store("e2ee_fetch_envelopes", state.storage.e2ee(op))
        .await?
    {
        Outcome::Envelopes(list) => {
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
        other => Err(unexpected(other)),
    }
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
    let op = Op::AckEnvelopes {
        device_id: actor.device.clone(),
        actor,
        up_to: body.up_to_envelope_id,
    };
    match state.store("e2ee_ack_envelopes", state.storage.e2ee(op)).await? {
        Outcome::Stored(deleted) => Ok(json(StatusCode::OK, &DeletedDto { deleted })),
        other => Err(unexpected(other)),
    }
}

// ---- backups ----

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
    let op = Op::PutBackup {
        user,
        backup_id: new_id("bkp"),
        ciphertext_blob: body.ciphertext_blob,
        kdf_metadata: body.kdf_metadata.to_string(),
        now: ctx.now,
    };
    match state.store("e2ee_put_backup", state.storage.e2ee(op)).await? {
        Outcome::Backup(b) => Ok(json(
            StatusCode::CREATED,
            &BackupCreatedDto {
                backup_id: b.backup_id,
                created_at: rfc3339(b.created_at),
            },
        )),
        other => Err(unexpected(other)),
    }
}

/// The caller's latest backup.
#[utoipa::path(get, path = "/v1/keys/backups/latest", tag = "keys", responses((status = 200, body = BackupDto), GenericErrors))]
pub(crate) async fn latest_backup(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let op = Op::LatestBackup { user: ctx.user()? };
    match state.store("e2ee_latest_backup", state.storage.e2ee(op)).await? {
        Outcome::Backup(b) => Ok(json(
            StatusCode::OK,
            &BackupDto {
                backup_id: b.backup_id,
                ciphertext_blob: b.ciphertext_blob,
                kdf_metadata: serde_json::from_str(&b.kdf_metadata).unwrap_or(Value::Null),
                created_at: rfc3339(b.created_at),
            },
        )),
        other => Err(unexpected(other)),
    }
}
