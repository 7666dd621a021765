//! Challenge/signature sessions (E2EE.md §2 and §4): a device proves it holds the Ed25519
//! key it registers (or registered) by signing a single-use challenge; the session token is
//! returned once and stored only as its SHA-256 digest. Tokens never appear in logs.

use openchat_core::Denial;
use openchat_storage::queries;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{Response, StatusCode};
use openchat_core::UserUid;
use openchat_core::limits::{
    AUTH_CHALLENGE_TTL_SECONDS, DEVICES_PER_USER_MAX, JSON_BODY_BYTES_MAX, SESSION_TTL_SECONDS,
};
use openchat_storage::e2ee::ChallengeRecord;
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::e2ee::ed25519_key;
use crate::body::{Body, json, read_json};
use crate::clock::rfc3339;
use crate::error::ApiError;
use crate::error::GenericErrors;
use crate::identity::sha256_hex;
use crate::state::{AppState, Ctx};

/// What the device signs (UTF-8, `\n`-separated, no trailing newline).
pub fn transcript(
    server_id: &str,
    challenge_id: &str,
    nonce: &str,
    user_uid: &str,
    device_id: &str,
) -> String {
    [
        "openchat-auth-v1",
        server_id,
        challenge_id,
        nonce,
        user_uid,
        device_id,
    ]
    .join("\n")
}

fn random_b64(len: usize) -> Result<String, ApiError> {
    let mut bytes = vec![0u8; len];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ApiError::internal())?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

async fn server_id(state: &AppState) -> Result<String, ApiError> {
    let instance = state.run(queries::Instance).await?;
    Ok(instance
        .primary_server
        .map(|s| s.id.to_string())
        .unwrap_or_default())
}

/// The bearer token of a request, if it sends one.
pub fn bearer(ctx: &Ctx) -> Option<String> {
    ctx.header("authorization")
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ChallengeBody {
    pub user_uid: String,
    pub device_id: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChallengeDto {
    pub challenge_id: String,
    pub nonce: String,
    pub server_id: String,
    pub expires_at: String,
}

/// A single-use challenge (60 s) for a device to sign.
#[utoipa::path(post, path = "/v1/auth/challenge", tag = "auth", request_body = ChallengeBody,
    responses((status = 201, body = ChallengeDto), GenericErrors))]
pub(crate) async fn auth_challenge(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let body: ChallengeBody = read_json(ctx.request, JSON_BODY_BYTES_MAX).await?;
    let user = UserUid::parse(body.user_uid.trim())
        .map_err(|e| ApiError::invalid_payload(format!("user_uid: {e}")))?;
    let device_id = body.device_id.trim().to_owned();
    if !openchat_core::ids::is_id(&device_id) {
        return Err(ApiError::invalid_payload(
            "device_id is not a device id (1-128 of A-Z a-z 0-9 _ . -)",
        ));
    }
    // Per-user as well as the route's per-IP limit: one user cannot be flooded from many IPs.
    state
        .limiters
        .check_user(user.as_str())
        .map_err(ApiError::rate_limited)?;
    let challenge = ChallengeRecord {
        challenge_id: format!("chl_{}", random_b64(12)?),
        user_uid: user,
        device_id,
        nonce: random_b64(32)?,
        expires_at: ctx.now + AUTH_CHALLENGE_TTL_SECONDS,
    };
    let server_id = server_id(state).await?;
    let c = state.run(queries::e2ee::CreateChallenge { challenge }).await?;
    Ok(json(
        StatusCode::CREATED,
        &ChallengeDto {
            challenge_id: c.challenge_id,
            nonce: c.nonce,
            server_id,
            expires_at: rfc3339(c.expires_at),
        },
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SessionBody {
    pub challenge_id: String,
    pub user_uid: String,
    pub device_id: String,
    pub device_pubkey: String,
    pub signature: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionDto {
    pub session_token: String,
    pub expires_at: String,
    /// `full`, or `link` for a pending device.
    pub scope: String,
}

/// Opens a session for a device that signed its challenge. An unknown device is registered
/// by the one rule (first device active, later ones pending with a `link` session).
#[utoipa::path(post, path = "/v1/auth/session", tag = "auth", request_body = SessionBody,
    responses((status = 201, body = SessionDto), GenericErrors))]
pub(crate) async fn open_session(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let body: SessionBody = read_json(ctx.request, JSON_BODY_BYTES_MAX).await?;
    let user = UserUid::parse(body.user_uid.trim())
        .map_err(|_| ApiError::denied(Denial::ChallengeInvalid, "unknown challenge"))?;
    let challenge = state
        .run(queries::e2ee::Challenge {
            challenge_id: body.challenge_id.clone(),
            now: ctx.now,
        })
        .await?;
    if challenge.user_uid != user || challenge.device_id != body.device_id {
        return Err(ApiError::denied(
            Denial::ChallengeInvalid,
            "the challenge was issued to another device",
        ));
    }
    let key = ed25519_key(&body.device_pubkey)?;
    let signature = URL_SAFE_NO_PAD
        .decode(body.signature.as_str())
        .map_err(|_| ApiError::denied(Denial::SignatureInvalid, "the signature is not base64url"))?;
    let server_id = server_id(state).await?;
    let message = transcript(
        &server_id,
        &challenge.challenge_id,
        &challenge.nonce,
        user.as_str(),
        &challenge.device_id,
    );
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &key)
        .verify(message.as_bytes(), &signature)
        .map_err(|_| ApiError::denied(Denial::SignatureInvalid, "the signature does not verify"))?;
    let token = format!("ocs_{}", random_b64(32)?);
    let op = queries::e2ee::OpenSession {
        challenge_id: challenge.challenge_id,
        user,
        device_id: challenge.device_id,
        device_pubkey: body.device_pubkey.trim().to_owned(),
        token_sha256: sha256_hex(token.as_bytes()),
        ttl: SESSION_TTL_SECONDS,
        device_limit: DEVICES_PER_USER_MAX,
        now: ctx.now,
    };
    let (_, session) = state.run(op).await?;
    Ok(json(
        StatusCode::CREATED,
        &SessionDto {
            session_token: token,
            expires_at: rfc3339(session.expires_at),
            scope: session.scope,
        },
    ))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RevokedDto {
    pub revoked: bool,
}

/// Ends the session whose bearer token the request carries.
#[utoipa::path(delete, path = "/v1/auth/session", tag = "auth", responses((status = 200, body = RevokedDto), GenericErrors))]
pub(crate) async fn close_session(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let token = bearer(&ctx).ok_or_else(|| ApiError::denied(Denial::SessionInvalid, "no bearer token"))?;
    let digest = sha256_hex(token.as_bytes());
    let live = state
        .run(queries::e2ee::Session {
            token_sha256: digest.clone(),
            now: ctx.now,
        })
        .await?;
    if live.is_none() {
        return Err(ApiError::denied(
            Denial::SessionInvalid,
            "the session is unknown, expired or revoked",
        ));
    }
    state
        .run(queries::e2ee::RevokeSession {
            token_sha256: digest,
            now: ctx.now,
        })
        .await?;
    Ok(json(StatusCode::OK, &RevokedDto { revoked: true }))
}
