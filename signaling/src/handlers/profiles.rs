//! Profiles and avatars (WIRE.md §2.5).

use std::sync::Arc;

use http::{Response, StatusCode};
use openchat_core::limits::{AVATAR_BYTES_MAX, AVATAR_SIDE_PX_MAX, JSON_BODY_BYTES_MAX, PROFILES_BATCH_MAX};
use openchat_core::profile::{display_name, parse_if_match};
use openchat_core::{AssetId, UserUid};
use openchat_storage::queries;
use openchat_storage::{Avatar, AvatarRecord, ProfileUpdate};

use super::messages::{StoredFile, blob_response};
use super::new_id;
use crate::body::{Body, json, parse_json, read_body};
use crate::dto::{AvatarDto, ProfileBody, ProfileDto, ProfilesDto};
use crate::error::GenericErrors;
use crate::error::{ApiError, ErrorEnvelope};
use crate::realtime::Audience;
use crate::routes::BodyLimit;
use crate::state::{AppState, Ctx, Event};
use crate::upload::{self, FormLimits, Sniffed, UploadError};

/// The caller's profile, created with defaults on first sight.
#[utoipa::path(get, path = "/v1/profile/me", tag = "profiles", responses((status = 200, body = ProfileDto), GenericErrors))]
pub(crate) async fn my_profile(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let profile = state
        .run(queries::Profile {
            user: ctx.user()?,
            now: ctx.now,
        })
        .await?;
    Ok(json(StatusCode::OK, &ProfileDto::new(state.base_url(), &profile)))
}

/// Changes the caller's profile; `If-Match: <profile_version>` makes it conditional
/// (409 `profile_conflict` when stale). Emits `profile_updated` to every socket.
#[utoipa::path(put, path = "/v1/profile/me", tag = "profiles", request_body = ProfileBody,
    params(("If-Match" = Option<String>, Header, description = "12, \"12\" or W/\"12\"")),
    responses((status = 200, body = ProfileDto), GenericErrors))]
pub(crate) async fn update_my_profile(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let who = ctx.user()?;
    if ctx
        .request
        .headers()
        .get("if-match")
        .is_some_and(|v| v.to_str().is_err())
    {
        return Err(ApiError::bad_request(
            "invalid_if_match",
            "If-Match must be a positive profile version",
        ));
    }
    let if_match = ctx.header("if-match").map(str::to_owned);
    let bytes = read_body(ctx.request, JSON_BODY_BYTES_MAX).await?;
    // Go's order of checks: body, If-Match, display name, version, avatar.
    let body: ProfileBody = parse_json(&bytes)?;
    let expected_version = match if_match.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
        None => None,
        Some(raw) => Some(parse_if_match(raw).ok_or_else(|| {
            ApiError::bad_request("invalid_if_match", "If-Match must be a positive profile version")
        })?),
    };
    let name = display_name(&body.display_name)
        .map_err(|e| ApiError::bad_request("display_name_invalid", e.to_string()))?;
    let unsupported = || {
        ApiError::bad_request(
            "avatar_mode_unsupported",
            "avatar_mode must be generated or uploaded",
        )
    };
    let avatar = match body.avatar_mode.as_str() {
        "generated" => Avatar::Preset(
            body.avatar_preset_id
                .clone()
                .filter(|p| !p.is_empty())
                .ok_or_else(unsupported)?,
        ),
        "uploaded" => {
            let missing = || ApiError::bad_request("avatar_asset_not_found", "unknown avatar asset");
            let raw = body
                .avatar_asset_id
                .as_deref()
                .filter(|a| !a.is_empty())
                .ok_or_else(missing)?;
            Avatar::Uploaded(AssetId::parse(raw).map_err(|_| missing())?)
        }
        _ => return Err(unsupported()),
    };
    let update = ProfileUpdate {
        user_uid: who,
        expected_version,
        display_name: name,
        avatar,
        now: ctx.now,
    };
    let base = state.base_url().to_owned();
    let profile = state
        .run_publishing(queries::UpdateProfile { update }, move |profile| {
            let dto = ProfileDto::new(&base, profile);
            Event::only("profile_updated", Audience::Everyone, &dto)
        })
        .await?;
    let dto = ProfileDto::new(state.base_url(), &profile);
    Ok(json(StatusCode::OK, &dto))
}

const AVATAR_TYPES: [&str; 3] = ["image/png", "image/jpeg", "image/webp"];

fn avatar_error(code: &'static str, status: StatusCode, message: &str) -> ApiError {
    ApiError::new(status, code, message)
}

/// Uploads an avatar image: multipart with one part named `file`; png, jpeg or webp, at
/// most 2 MiB and 1024x1024.
#[utoipa::path(post, path = "/v1/profile/avatar", tag = "profiles",
    request_body(content_type = "multipart/form-data", description = "one part named `file`"),
    responses(
        (status = 201, body = AvatarDto),
        (status = 413, description = "avatar_too_large", body = ErrorEnvelope),
        (status = 415, description = "avatar_type_unsupported", body = ErrorEnvelope),
        GenericErrors
    ))]
pub(crate) async fn upload_avatar(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let who = ctx.user()?;
    let too_large = || {
        avatar_error(
            "avatar_too_large",
            StatusCode::PAYLOAD_TOO_LARGE,
            "avatars are 1 byte to 2 MiB",
        )
    };
    let unsupported = || {
        avatar_error(
            "avatar_type_unsupported",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "avatars must be png, jpeg or webp",
        )
    };
    let Some(boundary) = upload::boundary(ctx.header("content-type")) else {
        return Err(ApiError::invalid_payload(
            "expected multipart/form-data with a part named file",
        ));
    };
    let limits = FormLimits {
        body_bytes_max: state.config.body_limit(BodyLimit::Avatar),
        file_bytes_max: AVATAR_BYTES_MAX as u64,
        files_max: 1,
        file_field: "file",
    };
    let form = upload::read_form(ctx.request.into_body(), boundary, limits, &state.blobs)
        .await
        .map_err(|err| match err {
            UploadError::BodyTooLarge(_) | UploadError::FileTooLarge(_) => too_large(),
            UploadError::TooManyFiles(_) => ApiError::invalid_payload("exactly one part named file"),
            UploadError::Malformed(reason) => ApiError::invalid_payload(reason),
            UploadError::TooSlow => ApiError::request_timeout(),
            UploadError::Io(err) => {
                tracing::error!(error = %err, "storing an avatar failed");
                ApiError::internal()
            }
        })?;
    let Some(file) = form.files.into_iter().next() else {
        return Err(ApiError::invalid_payload("missing the part named file"));
    };
    if file.writer.is_empty() {
        return Err(too_large());
    }
    let declared = upload::declared_mime(file.declared_type.as_deref());
    if declared
        .as_deref()
        .is_some_and(|mime| !AVATAR_TYPES.contains(&mime))
    {
        return Err(unsupported());
    }
    let info = match upload::sniff(file.writer.head()) {
        Sniffed::Image(info) if AVATAR_TYPES.contains(&info.mime) => info,
        _ => return Err(unsupported()),
    };
    if info.width > AVATAR_SIDE_PX_MAX || info.height > AVATAR_SIDE_PX_MAX {
        return Err(ApiError::bad_request(
            "avatar_dimensions_exceeded",
            format!("avatars are at most {AVATAR_SIDE_PX_MAX}x{AVATAR_SIDE_PX_MAX}"),
        ));
    }
    let blob = file.writer.commit(&state.blobs).await.map_err(|err| {
        tracing::error!(error = %err, "storing an avatar failed");
        ApiError::internal()
    })?;
    let record = AvatarRecord {
        id: AssetId::parse_owned(new_id("asset")).map_err(|_| ApiError::internal())?,
        content_type: info.mime.to_owned(),
        bytes: blob.len as i64,
        width: i64::from(info.width),
        height: i64::from(info.height),
        sha256: blob.sha256,
        uploaded_by: who,
        created_at: ctx.now,
    };
    state
        .run(queries::InsertAvatar {
            avatar: record.clone(),
        })
        .await?;
    let body = AvatarDto {
        avatar_asset_id: record.id.to_string(),
        avatar_url: format!("{}/v1/profile/avatar/{}", state.base_url(), record.id),
        width: record.width,
        height: record.height,
        content_type: record.content_type,
        bytes: record.bytes,
    };
    Ok(json(StatusCode::CREATED, &body))
}

/// The bytes of an uploaded avatar.
#[utoipa::path(get, path = "/v1/profile/avatar/{asset_id}", tag = "profiles", params(("asset_id" = String, Path)),
    responses((status = 200, description = "the image bytes", content_type = "image/*"), GenericErrors))]
pub(crate) async fn avatar(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let id = ctx.id("asset_id", AssetId::parse, "avatar_asset_not_found")?;
    let record = state.run(queries::LoadAvatar { asset: id }).await?;
    let blob = StoredFile {
        sha256: &record.sha256,
        bytes: record.bytes,
        content_type: &record.content_type,
    };
    blob_response(state, &ctx, blob, "avatar_asset_not_found").await
}

/// Profiles of 1-100 users (`user_uid` repeated), created with defaults when missing.
#[utoipa::path(get, path = "/v1/profiles:batch", tag = "profiles", params(("user_uid" = Vec<String>, Query)),
    responses((status = 200, body = ProfilesDto), GenericErrors))]
pub(crate) async fn profiles_batch(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let mut uids: Vec<UserUid> = Vec::new();
    let mut given = 0;
    for (key, value) in ctx.query() {
        if key != "user_uid" {
            continue;
        }
        // Every value counts toward the limit, empty and repeated ones too (the client sends
        // both; they are skipped, not refused).
        given += 1;
        if given > PROFILES_BATCH_MAX {
            return Err(ApiError::invalid_query(format!(
                "give 1 to {PROFILES_BATCH_MAX} user_uid values"
            )));
        }
        if value.trim().is_empty() {
            continue;
        }
        let uid = UserUid::parse(value.trim())
            .map_err(|e| ApiError::invalid_query(format!("user_uid {value:?}: {e}")))?;
        if !uids.contains(&uid) {
            uids.push(uid);
        }
    }
    if uids.is_empty() || uids.len() > PROFILES_BATCH_MAX {
        return Err(ApiError::invalid_query(format!(
            "give 1 to {PROFILES_BATCH_MAX} user_uid values"
        )));
    }
    let profiles = state
        .run(queries::Profiles {
            users: uids,
            now: ctx.now,
        })
        .await?;
    let base = state.base_url();
    Ok(json(
        StatusCode::OK,
        &ProfilesDto {
            profiles: profiles.iter().map(|p| ProfileDto::new(base, p)).collect(),
        },
    ))
}
