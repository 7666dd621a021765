//! Route handlers. Each takes the shared state and its parsed route parameters and returns a
//! response or an [`ApiError`]; none touches sockets or reads the clock.

use http::{Response, StatusCode, header};
use openchat_core::ServerId;
use openchat_core::limits::{DIRECTORY_SERVERS_MAX, JSON_BODY_BYTES_MAX};
use openchat_core::settings::ServerSettings;
use openchat_storage::{GroupRecord, ServerRecord};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::capabilities;
use crate::error::ApiError;
use crate::service::{AppState, Body, Ctx, full, json, read_json};
use crate::wire::{identity, rfc3339};

pub(crate) async fn readyz(state: &AppState) -> Result<Response<Body>, ApiError> {
    state.store("ping", state.storage.ping()).await?;
    Ok(json(
        StatusCode::OK,
        &json!({"status": "ready", "store": state.storage.kind().as_str()}),
    ))
}

pub(crate) fn metrics(state: &AppState) -> Response<Body> {
    state
        .metrics
        .storage_queue_depth
        .set(state.storage.queue_depth() as i64);
    let mut response = Response::new(full(state.metrics.encode()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

pub(crate) async fn capabilities(state: &AppState) -> Result<Response<Body>, ApiError> {
    let instance = state.store("instance", state.storage.instance()).await?;
    Ok(json(
        StatusCode::OK,
        &capabilities::document(&state.config, &instance),
    ))
}

fn directory_entry(server: &ServerRecord) -> Value {
    json!({
        "server_id": server.id,
        "display_name": server.display_name,
        "icon_text": server.icon_text,
        "trust_state": server.trust_state,
        "identity_handshake_strategy": server.handshake_strategy,
        "user_identifier_policy": server.uid_policy,
        "description": server.description,
        "banner_preset": server.banner_preset,
    })
}

pub(crate) async fn directory(state: &AppState) -> Result<Response<Body>, ApiError> {
    let servers = state
        .store("directory", state.storage.directory(None, DIRECTORY_SERVERS_MAX))
        .await?;
    let servers: Vec<Value> = servers.iter().map(directory_entry).collect();
    Ok(json(StatusCode::OK, &json!({ "servers": servers })))
}

fn group_json(group: &GroupRecord) -> Value {
    let channels: Vec<Value> = group
        .channels
        .iter()
        .map(|channel| json!({"id": channel.id, "name": channel.name, "type": channel.kind}))
        .collect();
    json!({"id": group.id, "label": group.label, "kind": group.kind, "channels": channels})
}

pub(crate) async fn channels(state: &AppState, server: ServerId) -> Result<Response<Body>, ApiError> {
    let groups = state
        .store("layout", state.storage.layout(server.clone()))
        .await?;
    let groups: Vec<Value> = groups.iter().map(group_json).collect();
    Ok(json(
        StatusCode::OK,
        &json!({"server_id": server, "groups": groups}),
    ))
}

pub(crate) async fn members(state: &AppState, server: ServerId) -> Result<Response<Body>, ApiError> {
    let members = state
        .store("members", state.storage.members(server.clone()))
        .await?;
    let members: Vec<Value> = members
        .iter()
        .map(|member| json!({"id": member.id, "name": member.name, "status": member.status}))
        .collect();
    Ok(json(
        StatusCode::OK,
        &json!({"server_id": server, "members": members}),
    ))
}

fn settings_json(server: &ServerRecord) -> Value {
    json!({
        "server_id": server.id,
        "display_name": server.display_name,
        "description": server.description,
        "banner_preset": server.banner_preset,
    })
}

pub(crate) async fn settings(state: &AppState, server: ServerId) -> Result<Response<Body>, ApiError> {
    let record = state.store("server", state.storage.server(server)).await?;
    Ok(json(StatusCode::OK, &settings_json(&record)))
}

/// `PUT /v1/servers/{id}/settings`; an absent field keeps its current value.
#[derive(Debug, Deserialize)]
struct SettingsBody {
    display_name: Option<String>,
    description: Option<String>,
    banner_preset: Option<String>,
}

pub(crate) async fn update_settings(
    state: &AppState,
    server: ServerId,
    ctx: Ctx,
) -> Result<Response<Body>, ApiError> {
    let who = identity(ctx.request.headers(), state.config.production)?;
    let body: SettingsBody = read_json(ctx.request, JSON_BODY_BYTES_MAX).await?;
    let current = state
        .store("server", state.storage.server(server.clone()))
        .await?;
    // Management policy (WIRE.md §8.7): anyone in development; in production only the
    // server's owner (set by the ownership claim).
    if state.config.production && current.owner_uid.as_ref() != Some(&who.user_uid) {
        return Err(ApiError::forbidden(
            "only the server owner may change its settings",
        ));
    }
    let settings = ServerSettings::parse(
        body.display_name.as_deref().unwrap_or(&current.display_name),
        body.description.as_deref().unwrap_or(&current.description),
        body.banner_preset.as_deref().unwrap_or(&current.banner_preset),
    )
    .map_err(|err| ApiError::invalid_payload(err.to_string()))?;
    let updated = state
        .store(
            "update_settings",
            state
                .storage
                .update_settings(server, settings, who.user_uid, ctx.now),
        )
        .await?;
    let mut body = settings_json(&updated);
    body["updated_by_uid"] = json!(updated.updated_by_uid);
    body["updated_at"] = json!(rfc3339(updated.updated_at));
    Ok(json(StatusCode::OK, &body))
}
