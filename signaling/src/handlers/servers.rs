//! Servers, settings, membership, channels, categories, layout and members (WIRE.md §2.2-§2.3).

use std::sync::Arc;

use http::{Response, StatusCode};
use openchat_core::limits::{DIRECTORY_SERVERS_MAX, JSON_BODY_BYTES_MAX, OWNERSHIP_CLAIM_TTL_SECONDS};
use openchat_core::settings::{ServerSettings, channel_name, icon_text};
use openchat_core::{ChannelId, ChannelKind, GroupId, ServerId, UserUid};
use openchat_storage::queries;
use openchat_storage::{NewServer, Query, StarterIds};

use super::{new_id, random_hex32};
use crate::body::{Body, json, read_json};
use crate::clock::rfc3339;
use crate::dto::{
    CategoryCreatedDto, CategoryUpdatedDto, ChannelCreatedDto, ChannelDto, ClaimBody, ClaimDto,
    ClaimTokenDto, CreateCategoryBody, CreateChannelBody, CreateServerBody, DirectoryDto, GroupDto,
    LayoutBody, LayoutChangedDto, LayoutDto, LeaveDto, MemberDto, MembersDto, RenameCategoryBody,
    ServerCreatedDto, ServerDto, SettingsBody, SettingsDto, SettingsUpdatedDto, groups,
};
use crate::error::ApiError;
use crate::error::GenericErrors;
use crate::identity::USER_UID_HEADER;
use crate::identity::sha256_hex;
use crate::realtime::Audience;
use crate::state::{AppState, Ctx, Event};

fn server_id(ctx: &Ctx) -> Result<ServerId, ApiError> {
    ctx.id("server_id", ServerId::parse, "server_not_found")
}

fn group_id(ctx: &Ctx) -> Result<GroupId, ApiError> {
    ctx.id("group_id", GroupId::parse, "category_not_found")
}

/// Runs a write whose answer is both the response body and the `kind` event to every socket
/// of the server: `build` makes the body from the answer (inside the write's transaction
/// for the event in cluster mode, and again for the response).
async fn run_announced<Q, B, F>(
    state: &AppState,
    kind: &'static str,
    server: &ServerId,
    query: Q,
    build: F,
) -> Result<B, ApiError>
where
    Q: Query,
    B: serde::Serialize,
    F: Fn(&Q::Output) -> B + Clone + Send + 'static,
{
    let audience = Audience::Server(server.clone());
    let for_event = build.clone();
    let output = state
        .run_publishing(query, move |output| {
            Event::only(kind, audience, &for_event(output))
        })
        .await?;
    Ok(build(&output))
}

/// The body and event of a layout change (`chat.channel.layout.updated`).
fn layout_changed(
    server: ServerId,
    who: UserUid,
    now: openchat_core::UnixSeconds,
) -> impl Fn(&Vec<openchat_storage::GroupRecord>) -> LayoutChangedDto + Clone + Send + 'static {
    move |layout| LayoutChangedDto {
        server_id: server.to_string(),
        groups: groups(layout),
        updated_by_uid: who.to_string(),
        updated_at: rfc3339(now),
    }
}

fn kind(raw: &str) -> Result<ChannelKind, ApiError> {
    ChannelKind::parse(raw.trim()).map_err(|e| ApiError::bad_request("invalid_channel_type", e.to_string()))
}

fn name(raw: &str) -> Result<String, ApiError> {
    channel_name(raw).map_err(|e| ApiError::invalid_payload(e.to_string()))
}

/// The server directory, without servers the caller (by `X-OpenChat-User-UID`) has left.
#[utoipa::path(get, path = "/v1/servers", tag = "servers", responses((status = 200, body = DirectoryDto), GenericErrors))]
pub(crate) async fn directory(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let viewer = ctx
        .header(USER_UID_HEADER)
        .map(str::trim)
        .and_then(|uid| UserUid::parse(uid).ok());
    let servers = state
        .run(queries::Directory {
            viewer,
            limit: DIRECTORY_SERVERS_MAX,
        })
        .await?;
    Ok(json(
        StatusCode::OK,
        &DirectoryDto {
            servers: servers.iter().map(ServerDto::from).collect(),
        },
    ))
}

/// Creates a server (with a starter text and voice channel) and an ownership claim token.
#[utoipa::path(post, path = "/v1/servers", tag = "servers", request_body = CreateServerBody,
    responses((status = 201, body = ServerCreatedDto), GenericErrors))]
pub(crate) async fn create_server(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let who = ctx.user()?;
    let body: CreateServerBody = read_json(ctx.request, JSON_BODY_BYTES_MAX).await?;
    let settings = ServerSettings::parse(&body.display_name, &body.description, &body.banner_preset)
        .map_err(|e| ApiError::invalid_payload(e.to_string()))?;
    let token = random_hex32() + &random_hex32();
    let expires_at = ctx.now + OWNERSHIP_CLAIM_TTL_SECONDS;
    let parse_group = |raw: String| GroupId::parse_owned(raw).map_err(|_| ApiError::internal());
    let parse_channel = |raw: String| ChannelId::parse_owned(raw).map_err(|_| ApiError::internal());
    let new = NewServer {
        id: ServerId::parse_owned(new_id("srv")).map_err(|_| ApiError::internal())?,
        icon_text: icon_text(&settings.display_name),
        display_name: settings.display_name,
        description: settings.description,
        banner_preset: settings.banner_preset,
        created_by: who.clone(),
        claim_token_sha256: sha256_hex(token.as_bytes()),
        claim_expires_at: expires_at,
        starter_ids: StarterIds {
            text_group: parse_group(new_id("grp"))?,
            text_channel: parse_channel(new_id("ch"))?,
            voice_group: parse_group(new_id("grp"))?,
            voice_channel: parse_channel(new_id("vc"))?,
        },
        now: ctx.now,
    };
    let server = state.run(queries::CreateServer { new }).await?;
    let body = ServerCreatedDto {
        server: ServerDto::from(&server),
        created_by_uid: who.to_string(),
        created_at: rfc3339(server.created_at),
        ownership_claim: ClaimTokenDto {
            token,
            expires_at: rfc3339(expires_at),
        },
    };
    Ok(json(StatusCode::CREATED, &body))
}

/// Redeems the claim token of a created server: the caller becomes its owner.
#[utoipa::path(post, path = "/v1/servers/{server_id}/ownership:claim", tag = "servers", request_body = ClaimBody,
    params(("server_id" = String, Path)), responses((status = 200, body = ClaimDto), GenericErrors))]
pub(crate) async fn claim_ownership(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let server = server_id(&ctx)?;
    let who = ctx.user()?;
    let body: ClaimBody = read_json(ctx.request, JSON_BODY_BYTES_MAX).await?;
    let token = body.claim_token.trim();
    if token.is_empty() {
        return Err(ApiError::invalid_payload("claim_token is required"));
    }
    let claim = state
        .run(queries::ClaimOwnership {
            server,
            token_sha256: sha256_hex(token.as_bytes()),
            by: who,
            now: ctx.now,
        })
        .await?;
    let body = ClaimDto {
        server_id: claim.server_id.to_string(),
        owner_user_uid: claim.owner_uid.to_string(),
        claimed_at: rfc3339(claim.claimed_at),
    };
    Ok(json(StatusCode::OK, &body))
}

/// Leaves a server (idempotent); it disappears from the caller's directory.
#[utoipa::path(delete, path = "/v1/servers/{server_id}/membership", tag = "servers",
    params(("server_id" = String, Path)), responses((status = 200, body = LeaveDto), GenericErrors))]
pub(crate) async fn leave_server(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let server = server_id(&ctx)?;
    let who = ctx.user()?;
    let left_at = state
        .run(queries::LeaveServer {
            server: server.clone(),
            user: who.clone(),
            now: ctx.now,
        })
        .await?;
    let body = LeaveDto {
        server_id: server.to_string(),
        user_uid: who.to_string(),
        left: true,
        left_at: rfc3339(left_at),
    };
    Ok(json(StatusCode::OK, &body))
}

#[utoipa::path(get, path = "/v1/servers/{server_id}/settings", tag = "servers",
    params(("server_id" = String, Path)), responses((status = 200, body = SettingsDto), GenericErrors))]
pub(crate) async fn settings(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let record = state
        .run(queries::Server {
            server: server_id(&ctx)?,
        })
        .await?;
    Ok(json(StatusCode::OK, &SettingsDto::from(&record)))
}

/// Changes the settings; an absent field keeps its value. Emits `chat.server.updated`.
#[utoipa::path(put, path = "/v1/servers/{server_id}/settings", tag = "servers", request_body = SettingsBody,
    params(("server_id" = String, Path)), responses((status = 200, body = SettingsUpdatedDto), GenericErrors))]
pub(crate) async fn update_settings(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let server = server_id(&ctx)?;
    let who = ctx.user()?;
    let body: SettingsBody = read_json(ctx.request, JSON_BODY_BYTES_MAX).await?;
    let current = state
        .run(queries::Server {
            server: server.clone(),
        })
        .await?;
    let settings = ServerSettings::parse(
        body.display_name.as_deref().unwrap_or(&current.display_name),
        body.description.as_deref().unwrap_or(&current.description),
        body.banner_preset.as_deref().unwrap_or(&current.banner_preset),
    )
    .map_err(|err| ApiError::invalid_payload(err.to_string()))?;
    let query = queries::UpdateSettings {
        server: server.clone(),
        settings,
        by: who.clone(),
        now: ctx.now,
    };
    let body = run_announced(state, "chat.server.updated", &server, query, move |updated| {
        SettingsUpdatedDto {
            settings: SettingsDto::from(updated),
            updated_by_uid: who.to_string(),
            updated_at: rfc3339(updated.updated_at),
        }
    })
    .await?;
    Ok(json(StatusCode::OK, &body))
}

/// Channel groups and channels, in display order.
#[utoipa::path(get, path = "/v1/servers/{server_id}/channels", tag = "channels",
    params(("server_id" = String, Path)), responses((status = 200, body = LayoutDto), GenericErrors))]
pub(crate) async fn channels(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let server = server_id(&ctx)?;
    let layout = state
        .run(queries::Layout {
            server: server.clone(),
        })
        .await?;
    let mut groups = groups(&layout);
    // Per-reader counts when the caller says who it is (the desktop client sends no identity
    // here, WIRE.md §0 item 9; its badges come from the live events).
    if let Some(reader) = super::optional_viewer(state, &ctx) {
        let counts = state
            .run(queries::UnreadCounts {
                server: server.clone(),
                reader,
            })
            .await?;
        for channel in groups.iter_mut().flat_map(|g| g.channels.iter_mut()) {
            if channel.kind != "text" || channel.e2ee.is_some() {
                continue;
            }
            let found = counts.iter().find(|c| c.channel_id.as_str() == channel.id);
            channel.unread_count = Some(found.map_or(0, |c| c.unread));
            channel.mention_count = Some(found.map_or(0, |c| c.mentions));
        }
    }
    Ok(json(
        StatusCode::OK,
        &LayoutDto {
            server_id: server.to_string(),
            groups,
        },
    ))
}

/// A category named in a request body but absent from the server: 409, because the target
/// resource (the server's channel list) exists; 404 is for the request's own URI.
fn body_reference(mut err: ApiError) -> ApiError {
    if err.code == "category_not_found" {
        err.status = StatusCode::CONFLICT;
    }
    err
}

/// Creates a channel in a category. Emits `chat.channel.created`.
#[utoipa::path(post, path = "/v1/servers/{server_id}/channels", tag = "channels", request_body = CreateChannelBody,
    params(("server_id" = String, Path)), responses((status = 201, body = ChannelCreatedDto), GenericErrors))]
pub(crate) async fn create_channel(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let server = server_id(&ctx)?;
    let who = ctx.user()?;
    let body: CreateChannelBody = read_json(ctx.request, JSON_BODY_BYTES_MAX).await?;
    let kind = kind(&body.kind)?;
    let name = name(&body.name)?;
    let group = GroupId::parse(body.group_id.trim())
        .map_err(|_| ApiError::invalid_payload("group_id is not a category id"))?;
    if body.e2ee && kind != ChannelKind::Text {
        return Err(ApiError::bad_request(
            "invalid_channel_type",
            "only text channels can be end-to-end encrypted",
        ));
    }
    let prefix = if kind == ChannelKind::Voice { "vc" } else { "ch" };
    let id = ChannelId::parse_owned(new_id(prefix)).map_err(|_| ApiError::internal())?;
    let query = queries::CreateChannel {
        server: server.clone(),
        group: group.clone(),
        channel: id,
        name,
        kind: if body.e2ee { ChannelKind::Text } else { kind },
        e2ee: body.e2ee,
        actor: who.clone(),
        now: ctx.now,
    };
    let (server_id, now) = (server.to_string(), ctx.now);
    let body = run_announced(state, "chat.channel.created", &server, query, move |channel| {
        ChannelCreatedDto {
            server_id: server_id.clone(),
            group_id: group.to_string(),
            channel: ChannelDto::from(channel),
            created_by_uid: who.to_string(),
            created_at: rfc3339(now),
        }
    })
    .await
    .map_err(body_reference)?;
    Ok(json(StatusCode::CREATED, &body))
}

/// Creates a category. Emits `chat.category.created`.
#[utoipa::path(post, path = "/v1/servers/{server_id}/categories", tag = "channels", request_body = CreateCategoryBody,
    params(("server_id" = String, Path)), responses((status = 201, body = CategoryCreatedDto), GenericErrors))]
pub(crate) async fn create_category(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let server = server_id(&ctx)?;
    let who = ctx.user()?;
    let body: CreateCategoryBody = read_json(ctx.request, JSON_BODY_BYTES_MAX).await?;
    let kind = kind(&body.kind)?;
    let name = name(&body.name)?;
    let id = GroupId::parse_owned(new_id("grp")).map_err(|_| ApiError::internal())?;
    let query = queries::CreateCategory {
        server: server.clone(),
        group: id,
        name,
        kind,
        actor: who.clone(),
        now: ctx.now,
    };
    let (server_id, now) = (server.to_string(), ctx.now);
    let body = run_announced(state, "chat.category.created", &server, query, move |group| {
        CategoryCreatedDto {
            server_id: server_id.clone(),
            group: GroupDto::from(group),
            created_by_uid: who.to_string(),
            created_at: rfc3339(now),
        }
    })
    .await?;
    Ok(json(StatusCode::CREATED, &body))
}

/// Renames a category. Emits `chat.category.updated`.
#[utoipa::path(put, path = "/v1/servers/{server_id}/categories/{group_id}", tag = "channels", request_body = RenameCategoryBody,
    params(("server_id" = String, Path), ("group_id" = String, Path)),
    responses((status = 200, body = CategoryUpdatedDto), GenericErrors))]
pub(crate) async fn rename_category(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let server = server_id(&ctx)?;
    let group = group_id(&ctx)?;
    let who = ctx.user()?;
    let body: RenameCategoryBody = read_json(ctx.request, JSON_BODY_BYTES_MAX).await?;
    let name = name(&body.name)?;
    let query = queries::RenameCategory {
        server: server.clone(),
        group,
        name,
        actor: who.clone(),
    };
    let (server_id, now) = (server.to_string(), ctx.now);
    let body = run_announced(state, "chat.category.updated", &server, query, move |group| {
        CategoryUpdatedDto {
            server_id: server_id.clone(),
            group: GroupDto::from(group),
            updated_by_uid: who.to_string(),
            updated_at: rfc3339(now),
        }
    })
    .await?;
    Ok(json(StatusCode::OK, &body))
}

/// Deletes an empty category (409 `category_not_empty` otherwise). Emits
/// `chat.channel.layout.updated`.
#[utoipa::path(delete, path = "/v1/servers/{server_id}/categories/{group_id}", tag = "channels",
    params(("server_id" = String, Path), ("group_id" = String, Path)),
    responses((status = 200, body = LayoutChangedDto), GenericErrors))]
pub(crate) async fn delete_category(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let server = server_id(&ctx)?;
    let group = group_id(&ctx)?;
    let who = ctx.user()?;
    let query = queries::DeleteCategory {
        server: server.clone(),
        group,
        actor: who.clone(),
    };
    let built = layout_changed(server.clone(), who, ctx.now);
    let body = run_announced(state, "chat.channel.layout.updated", &server, query, built).await?;
    Ok(json(StatusCode::OK, &body))
}

/// Applies a complete new order of categories and channels. Emits
/// `chat.channel.layout.updated`.
#[utoipa::path(put, path = "/v1/servers/{server_id}/channel-layout", tag = "channels", request_body = LayoutBody,
    params(("server_id" = String, Path)), responses((status = 200, body = LayoutChangedDto), GenericErrors))]
pub(crate) async fn update_layout(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let server = server_id(&ctx)?;
    let who = ctx.user()?;
    let body: LayoutBody = read_json(ctx.request, JSON_BODY_BYTES_MAX).await?;
    let mut order = Vec::with_capacity(body.groups.len());
    for group in body.groups {
        let id = GroupId::parse(&group.id)
            .map_err(|_| ApiError::invalid_payload(format!("bad group id {:?}", group.id)))?;
        let channels = group
            .channel_ids
            .iter()
            .map(|c| {
                ChannelId::parse(c).map_err(|_| ApiError::invalid_payload(format!("bad channel id {c:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        order.push((id, channels));
    }
    let query = queries::UpdateLayout {
        server: server.clone(),
        order,
        actor: who.clone(),
    };
    let built = layout_changed(server.clone(), who, ctx.now);
    let body = run_announced(state, "chat.channel.layout.updated", &server, query, built).await?;
    Ok(json(StatusCode::OK, &body))
}

#[utoipa::path(get, path = "/v1/servers/{server_id}/members", tag = "servers",
    params(("server_id" = String, Path)), responses((status = 200, body = MembersDto), GenericErrors))]
pub(crate) async fn members(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let server = server_id(&ctx)?;
    let members = state
        .run(queries::Members {
            server: server.clone(),
        })
        .await?;
    let body = MembersDto {
        server_id: server.to_string(),
        members: members.iter().map(MemberDto::from).collect(),
    };
    Ok(json(StatusCode::OK, &body))
}
