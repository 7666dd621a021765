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
use openchat_storage::e2ee::{Actor, DeviceRecord, EnvelopeIn, LinkRequest};
use openchat_storage::queries;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::new_id;
use crate::body::{Body, json, read_json};
use crate::clock::rfc3339;
use crate::dto::MessageDto;
use crate::error::ApiError;
use crate::error::GenericErrors;
use crate::realtime::{Audience, DEVICE_REVOKED_EVENT};
use crate::state::{AppState, Ctx, Event};

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

mod backups;
mod devices;
mod keys;
mod membership;

pub(crate) use backups::*;
pub(crate) use devices::*;
pub(crate) use keys::*;
pub(crate) use membership::*;
