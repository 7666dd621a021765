//! Voice: join tickets (WIRE.md §2.6) and the signaling socket's entry.

use std::sync::Arc;

use http::{Response, StatusCode};
use openchat_core::limits::JSON_BODY_BYTES_MAX;
use openchat_core::ticket::{Permissions, TicketClaims};
use openchat_core::{ChannelId, ChannelKind, ServerId};
use openchat_storage::queries;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::body::{Body, json, parse_json, read_body};
use crate::clock::rfc3339;
use crate::error::GenericErrors;
use crate::error::{ApiError, ErrorEnvelope};
use crate::state::{AppState, Ctx};

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct JoinTicketBody {
    #[serde(default)]
    pub server_id: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PermissionsDto {
    pub speak: bool,
    pub video: bool,
    pub screenshare: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JoinTicketDto {
    /// Opaque to clients; single use; send it in `rtc.join`.
    pub ticket: String,
    pub channel_id: String,
    pub server_id: String,
    pub user_uid: String,
    pub device_id: String,
    pub expires_at: String,
    pub signaling_url: String,
    #[schema(value_type = Vec<Object>)]
    pub ice_servers: Vec<Value>,
    pub permissions: PermissionsDto,
}

/// Mints a single-use join ticket for a voice channel (200, as the joiner tool requires).
#[utoipa::path(post, path = "/v1/rtc/channels/{channel_id}/join-ticket", tag = "rtc", request_body = JoinTicketBody,
    params(("channel_id" = String, Path)),
    responses(
        (status = 200, body = JoinTicketDto),
        (status = 400, description = "invalid_channel, invalid_channel_type", body = ErrorEnvelope),
        GenericErrors
    ))]
pub(crate) async fn join_ticket(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let Some(rtc) = state.rtc.as_ref() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "rtc_unavailable",
            "voice is not enabled",
        ));
    };
    let who = ctx.who()?.clone();
    let raw_channel = ctx.params.get("channel_id").trim().to_owned();
    if raw_channel.is_empty() {
        return Err(ApiError::bad_request("invalid_channel", "channel_id is required"));
    }
    let channel = ChannelId::parse(&raw_channel)
        .map_err(|_| ApiError::not_found("channel_not_found", "channel not found"))?;
    rtc.ticket_limiter
        .check_user(who.user_uid.as_str())
        .map_err(|wait| {
            state
                .metrics
                .rtc_join_failures
                .get_or_create(&crate::metrics::ReasonLabels {
                    reason: "ticket_rate",
                })
                .inc();
            ApiError::rate_limited(wait)
        })?;
    let bytes = read_body(ctx.request, JSON_BODY_BYTES_MAX).await?;
    let body: JoinTicketBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        JoinTicketBody::default()
    } else {
        parse_json(&bytes)?
    };
    let info = state
        .run(queries::Channel {
            channel: channel.clone(),
        })
        .await?;
    if info.kind != ChannelKind::Voice {
        return Err(ApiError::bad_request(
            "invalid_channel_type",
            "join tickets are for voice channels",
        ));
    }
    // Go falls back to the instance's server when the body names none.
    let server = match body.server_id.trim() {
        "" => info.server_id.clone(),
        raw => ServerId::parse(raw).map_err(|_| ApiError::server_not_found())?,
    };
    state
        .run(queries::Server {
            server: server.clone(),
        })
        .await?;
    // May join: the user has not left the channel's server.
    let visible = state
        .run(queries::Directory {
            viewer: Some(who.user_uid.clone()),
            limit: openchat_core::limits::DIRECTORY_SERVERS_MAX,
        })
        .await?;
    if !visible.iter().any(|s| s.id == info.server_id) {
        return Err(ApiError::forbidden("you left this server"));
    }
    let now = ctx.now;
    let claims = TicketClaims {
        server_id: info.server_id.to_string(),
        channel_id: channel.to_string(),
        user_uid: who.user_uid.to_string(),
        device_id: who.device_id.clone(),
        permissions: Permissions::ALL,
        exp: now + rtc.config.ticket_ttl_seconds,
        iat: now,
        jti: uuid::Uuid::new_v4().to_string(),
    };
    let ticket = rtc.signer.sign(&claims);
    state.metrics.rtc_tickets_issued.inc();
    let body = JoinTicketDto {
        ticket,
        channel_id: claims.channel_id,
        server_id: claims.server_id,
        user_uid: claims.user_uid,
        device_id: claims.device_id,
        expires_at: rfc3339(claims.exp),
        signaling_url: rtc.signaling_url(state.base_url()),
        ice_servers: rtc.ice_servers(who.user_uid.as_str(), now),
        permissions: PermissionsDto {
            speak: claims.permissions.speak,
            video: claims.permissions.video,
            screenshare: claims.permissions.screenshare,
        },
    };
    Ok(json(StatusCode::OK, &body))
}

/// The signaling WebSocket (WIRE.md §5); the first message is `rtc.join {"ticket"}`.
#[utoipa::path(get, path = "/v1/rtc/signaling", tag = "rtc", responses(
    (status = 101, description = "WebSocket upgrade"),
    (status = 426, description = "websocket_required (with `Upgrade: websocket`)", body = ErrorEnvelope),
))]
pub(crate) fn signaling(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    crate::rtc::upgrade(state.clone(), ctx.request, ctx.local)
}
