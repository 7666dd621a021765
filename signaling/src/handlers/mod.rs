//! Route handlers. Each takes the shared state and a [`Ctx`] (routed, identified request
//! with the clock read once) and returns a response or an [`ApiError`]. Writes publish
//! their realtime event after the storage thread confirmed them.

mod auth;
mod e2ee;
mod messages;
mod profiles;
mod rtc;
mod servers;

use std::sync::Arc;

use http::{Response, StatusCode, header};
use openchat_storage::queries;
use serde_json::json;

use crate::body::{Body, full, json};
use crate::capabilities;
use crate::dto::StatusDto;
use crate::error::{ApiError, ErrorEnvelope};
use crate::routes::Endpoint;
use crate::state::{AppState, Ctx};

pub(crate) use auth::*;
pub(crate) use e2ee::*;
pub(crate) use messages::*;
pub(crate) use profiles::*;
pub(crate) use rtc::*;
pub(crate) use servers::*;

/// The caller of a public route, when it says who it is: its session (session mode) or its
/// identity headers (headers mode). `None` when it sends none: the development default
/// identity is nobody's counts.
pub(crate) fn optional_viewer(state: &AppState, ctx: &Ctx) -> Option<openchat_core::UserUid> {
    if let Some(identity) = &ctx.identity {
        return Some(identity.user_uid.clone());
    }
    if state.config.session_auth {
        return None;
    }
    let headers = ctx.request.headers();
    let sent = crate::identity::header(headers, crate::identity::USER_UID_HEADER).is_some()
        || crate::identity::header(headers, "authorization").is_some();
    if !sent {
        return None;
    }
    crate::identity::identity(headers, state.config.production)
        .ok()
        .map(|identity| identity.user_uid)
}

/// A whole number from a query string: only ASCII digits (no sign, no spaces), within
/// `min..=max`; anything else is `400 invalid_query` naming the bounds.
pub(crate) fn query_number(name: &str, raw: &str, min: u64, max: u64) -> Result<u64, ApiError> {
    let digits = !raw.is_empty() && raw.len() <= 19 && raw.bytes().all(|b| b.is_ascii_digit());
    raw.parse::<u64>()
        .ok()
        .filter(|value| digits && (min..=max).contains(value))
        .ok_or_else(|| ApiError::invalid_query(format!("{name} must be a whole number from {min} to {max}")))
}

/// A history cursor (`c<sequence>`), as issued by this server: `c` and 1 to 18 digits.
pub(crate) fn cursor_sequence(raw: &str) -> Option<i64> {
    let digits = raw.strip_prefix('c')?;
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The 413 answer of a route whose declared body is over its limit.
pub(crate) fn too_large(endpoint: Endpoint, limit: u64) -> ApiError {
    match endpoint {
        Endpoint::UploadAvatar => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "avatar_too_large",
            format!("avatar upload exceeds {limit} bytes"),
        ),
        _ => ApiError::payload_too_large(limit as usize),
    }
}

pub(crate) async fn dispatch(
    state: &Arc<AppState>,
    endpoint: Endpoint,
    ctx: Ctx,
) -> Result<Response<Body>, ApiError> {
    use Endpoint as E;
    match endpoint {
        E::Healthz => Ok(healthz()),
        E::Readyz => readyz(state).await,
        E::Metrics => Ok(metrics(state)),
        // Answered by the request shell (`service::handle`), above this layer.
        E::OpenApi => Err(ApiError::internal()),
        E::Capabilities => capabilities(state).await,
        E::LegacyCapabilities => legacy_capabilities(state).await,
        E::Directory => directory(state, ctx).await,
        E::CreateServer => create_server(state, ctx).await,
        E::ClaimOwnership => claim_ownership(state, ctx).await,
        E::LeaveServer => leave_server(state, ctx).await,
        E::ServerSettings => settings(state, ctx).await,
        E::UpdateServerSettings => update_settings(state, ctx).await,
        E::ServerChannels => channels(state, ctx).await,
        E::CreateChannel => create_channel(state, ctx).await,
        E::CreateCategory => create_category(state, ctx).await,
        E::RenameCategory => rename_category(state, ctx).await,
        E::DeleteCategory => delete_category(state, ctx).await,
        E::ChannelLayout => update_layout(state, ctx).await,
        E::ServerMembers => members(state, ctx).await,
        E::Messages => list_messages(state, ctx).await,
        E::CreateMessage => create_message(state, ctx).await,
        E::DeleteMessage => delete_message(state, ctx).await,
        E::Attachment => attachment(state, ctx).await,
        E::Mentions => mentions(state, ctx).await,
        E::ReadAck => read_ack(state, ctx).await,
        E::PutReadAck => put_read_ack(state, ctx).await,
        E::MyProfile => my_profile(state, ctx).await,
        E::UpdateMyProfile => update_my_profile(state, ctx).await,
        E::UploadAvatar => upload_avatar(state, ctx).await,
        E::Avatar => avatar(state, ctx).await,
        E::ProfilesBatch => profiles_batch(state, ctx).await,
        E::Realtime => realtime(state, ctx).await,
        E::JoinTicket => join_ticket(state, ctx).await,
        E::Signaling => signaling(state, ctx),
        E::AddMember => add_member(state, ctx).await,
        E::RemoveMember => remove_member(state, ctx).await,
        E::RotateEpoch => rotate_epoch(state, ctx).await,
        E::Epochs => epochs(state, ctx).await,
        E::Commit => commit(state, ctx).await,
        E::FetchCommit => fetch_commit(state, ctx).await,
        E::History => history(state, ctx).await,
        E::RegisterDevice => register_device(state, ctx).await,
        E::Devices => devices(state, ctx).await,
        E::LinkStart => link_start(state, ctx).await,
        E::LinkConfirm => link_confirm(state, ctx).await,
        E::RevokeDevice => revoke_device(state, ctx).await,
        E::PublishKeyPackages => publish_key_packages(state, ctx).await,
        E::ClaimKeyPackages => claim_key_packages(state, ctx).await,
        E::PublishEnvelopes => publish_envelopes(state, ctx).await,
        E::FetchEnvelopes => fetch_envelopes(state, ctx).await,
        E::AckEnvelopes => ack_envelopes(state, ctx).await,
        E::PutBackup => put_backup(state, ctx).await,
        E::LatestBackup => latest_backup(state, ctx).await,
        E::AuthChallenge => auth_challenge(state, ctx).await,
        E::OpenSession => open_session(state, ctx).await,
        E::CloseSession => close_session(state, ctx).await,
    }
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = StatusDto)))]
pub(crate) fn healthz() -> Response<Body> {
    json(StatusCode::OK, &json!({"status": "ok"}))
}

/// Readiness: 200 when the store answers and, in cluster mode, NATS is connected.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, body = StatusDto),
    (status = 503, description = "storage_unavailable, nats_unavailable, realtime_catching_up, draining", body = ErrorEnvelope),
))]
pub(crate) async fn readyz(state: &AppState) -> Result<Response<Body>, ApiError> {
    state.run(queries::Ping).await?;
    let mut body = json!({"status": "ready", "store": state.storage.kind().as_str()});
    if let Some(cluster) = &state.cluster {
        let nats = cluster.state();
        if nats != crate::cluster::NatsState::Connected {
            return Err(ApiError::nats_unavailable());
        }
        if !state.hub.caught_up() {
            return Err(ApiError::realtime_catching_up());
        }
        if state.draining.load(std::sync::atomic::Ordering::Acquire) {
            return Err(ApiError::draining());
        }
        body["node"] = json!(cluster.node_id());
        body["nats"] = json!(nats.as_str());
    }
    Ok(json(StatusCode::OK, &body))
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, content_type = "application/openmetrics-text", body = String)))]
pub(crate) fn metrics(state: &AppState) -> Response<Body> {
    state
        .metrics
        .storage_queue_depth
        .set(state.storage.queue_depth() as i64);
    state.metrics.realtime_sockets.set(state.hub.sockets() as i64);
    if let Some(rtc) = &state.rtc {
        let (mut rooms, mut participants) = (0, 0);
        for (shard, stats) in rtc.shards.stats().iter().enumerate() {
            let shard_rooms = stats.rooms.load(std::sync::atomic::Ordering::Relaxed);
            rooms += shard_rooms;
            participants += stats.participants.load(std::sync::atomic::Ordering::Relaxed);
            let labels = crate::metrics::ShardLabels { shard: shard as u32 };
            state
                .metrics
                .rtc_shard_rooms
                .get_or_create(&labels)
                .set(shard_rooms);
            let load = |v: &std::sync::atomic::AtomicI64| v.load(std::sync::atomic::Ordering::Relaxed);
            let metrics = &state.metrics;
            crate::metrics::Metrics::counter_to(
                &metrics.rtc_media_packets_in.get_or_create(&labels),
                load(&stats.packets_in),
            );
            crate::metrics::Metrics::counter_to(
                &metrics.rtc_media_packets_out.get_or_create(&labels),
                load(&stats.packets_out),
            );
            let dropped = load(&stats.packets_dropped) + load(&stats.packets_unknown);
            crate::metrics::Metrics::counter_to(
                &metrics.rtc_media_packets_dropped.get_or_create(&labels),
                dropped,
            );
            for (family, value) in [
                (&metrics.rtc_media_bytes_in, &stats.bytes_in),
                (&metrics.rtc_media_bytes_out, &stats.bytes_out),
                (&metrics.rtc_forwarded_packets, &stats.forwarded),
                (&metrics.rtc_forward_drops, &stats.forward_drops),
                (&metrics.rtc_negotiation_errors, &stats.negotiation_errors),
            ] {
                crate::metrics::Metrics::counter_to(&family.get_or_create(&labels), load(value));
            }
            metrics
                .rtc_shard_tracks
                .get_or_create(&labels)
                .set(load(&stats.tracks));
            for (copy, histogram) in [
                ("each", &stats.forward_delay),
                ("last", &stats.forward_delay_last),
            ] {
                metrics
                    .rtc_forward_delay
                    .get_or_create(&crate::metrics::ForwardDelayLabels {
                        shard: shard as u32,
                        copy,
                    })
                    .set(histogram.snapshot());
            }
        }
        state.metrics.rtc_active_rooms.set(rooms);
        state.metrics.rtc_active_participants.set(participants);
    }
    let mut response = Response::new(full(state.metrics.encode()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// The capabilities document (WIRE.md §3).
#[utoipa::path(get, path = "/v1/client/capabilities", tag = "discovery", responses((status = 200, body = Object)))]
pub(crate) async fn capabilities(state: &AppState) -> Result<Response<Body>, ApiError> {
    let instance = state.run(queries::Instance).await?;
    let rtc = state.rtc.as_ref().map(|rtc| capabilities::RtcBlock {
        signaling_url: rtc.signaling_url(state.base_url()),
        ice_servers: rtc.ice_servers("capabilities", crate::clock::unix_now()),
    });
    Ok(json(
        StatusCode::OK,
        &capabilities::document(&state.config, &instance, rtc.as_ref()),
    ))
}

/// The capabilities document at the legacy path the client falls back to.
#[utoipa::path(get, path = "/client/capabilities", tag = "discovery", responses((status = 200, body = Object)))]
pub(crate) async fn legacy_capabilities(state: &AppState) -> Result<Response<Body>, ApiError> {
    capabilities(state).await
}

/// The realtime WebSocket (WIRE.md §4); `server_id`, `user_uid`, `device_id` and
/// `resume_from` in the query.
#[utoipa::path(get, path = "/v1/realtime", tag = "realtime", responses(
    (status = 101, description = "WebSocket upgrade"),
    (status = 426, description = "websocket_required (with `Upgrade: websocket`)", body = ErrorEnvelope),
))]
pub(crate) async fn realtime(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    crate::realtime::upgrade(state.clone(), ctx.request).await
}

/// 16 random bytes as 32 lowercase hex characters.
pub(crate) fn random_hex32() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A new short id (`prefix_<8 hex>`).
pub(crate) fn new_id(prefix: &str) -> String {
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    openchat_core::short_id(prefix, [bytes[0], bytes[1], bytes[2], bytes[3]])
}
