//! The request shell: everything every request goes through, around the handlers.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use openchat_core::{Denial, UnixSeconds};
use tracing::Instrument;

use crate::body::{Body, RequestBody, error_response, full};
use crate::clock;
use crate::error::ApiError;
use crate::handlers;
use crate::identity::{self, Identity};
use crate::routes::{self, Access, Matched};
use crate::state::{AppState, Ctx, lookup_session};

/// Adds the CORS headers of WIRE.md §1.3.
fn add_cors(headers: &mut http::HeaderMap) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(
            "Content-Type, Authorization, If-Match, X-OpenChat-User-UID, X-OpenChat-Device-ID",
        ),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
    );
}

fn declared_length(request: &Request<RequestBody>) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Whether a request carries a body (a non-zero length, or a transfer coding).
fn has_body(request: &Request<RequestBody>) -> bool {
    request.headers().contains_key(header::TRANSFER_ENCODING)
        || declared_length(request).is_some_and(|len| len > 0)
}

/// Refuses a body of a media type the route does not take: a cross-site form cannot post
/// `text/plain` or `application/x-www-form-urlencoded` to a JSON route without a CORS
/// preflight, so only the declared types are accepted. Bodiless requests pass.
fn check_content_type(kind: routes::BodyKind, request: &Request<RequestBody>) -> Result<(), ApiError> {
    use routes::BodyKind;
    if kind == BodyKind::None || !has_body(request) {
        return Ok(());
    }
    let declared = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let essence = declared
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    let json = essence.as_deref() == Some("application/json");
    let multipart = crate::upload::boundary(declared).is_some();
    let (ok, wanted) = match kind {
        BodyKind::None => (true, ""),
        BodyKind::Json => (json, "application/json"),
        BodyKind::Multipart => (multipart, "multipart/form-data with a boundary"),
        BodyKind::JsonOrMultipart => (
            json || multipart,
            "application/json or multipart/form-data with a boundary",
        ),
    };
    if ok {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!(
            "this route takes {wanted}, not {}",
            declared.map_or("a body without Content-Type".to_owned(), |d| format!("{d:?}"))
        ),
    ))
}

/// Routes exempt from rate limiting: probes and scrapes.
fn unlimited(endpoint: routes::Endpoint) -> bool {
    use routes::Endpoint as E;
    matches!(endpoint, E::Healthz | E::Readyz | E::Metrics)
}

/// Checks identity and rate limits; returns the identity on authed routes.
async fn admit(
    state: &AppState,
    matched: &Matched,
    request: &Request<RequestBody>,
    peer: IpAddr,
    now: UnixSeconds,
) -> Result<Option<Identity>, ApiError> {
    // In every mode and on every route: a garbled identity header is an error, never "no
    // identity".
    identity::check_identity_headers(request.headers())?;
    match matched.spec.access {
        Access::Authed if state.config.session_auth => {
            let who = session_identity(state, request, now).await?.ok_or_else(|| {
                ApiError::denied(Denial::SessionInvalid, "a valid bearer session is required")
            })?;
            if who.scope_link && !LINK_SCOPE.contains(&matched.spec.endpoint) {
                return Err(ApiError::denied(
                    Denial::ScopeInsufficient,
                    "a pending device's session may only list devices and start a link",
                ));
            }
            state
                .limiters
                .check_user(who.identity.user_uid.as_str())
                .map_err(ApiError::rate_limited)?;
            Ok(Some(who.identity))
        }
        Access::Authed => {
            let who = identity::identity(request.headers(), state.config.production)?;
            state
                .limiters
                .check_user(who.user_uid.as_str())
                .map_err(ApiError::rate_limited)?;
            Ok(Some(who))
        }
        Access::Public => {
            if !unlimited(matched.spec.endpoint) {
                state.limiters.check_ip(peer).map_err(ApiError::rate_limited)?;
            }
            // In session mode a public route still knows a caller who sends a valid session
            // (history of an e2ee channel needs it); headers are never trusted there.
            if state.config.session_auth {
                return Ok(session_identity(state, request, now)
                    .await
                    .ok()
                    .flatten()
                    .filter(|who| !who.scope_link)
                    .map(|who| who.identity));
            }
            Ok(None)
        }
    }
}

/// What a link-scoped session (a pending device) may call.
const LINK_SCOPE: &[crate::routes::Endpoint] = &[
    crate::routes::Endpoint::Devices,
    crate::routes::Endpoint::LinkStart,
];

/// A session as the request shell sees it.
struct SessionIdentity {
    identity: Identity,
    scope_link: bool,
}

/// The caller's session from `Authorization: Bearer`, if the request sends one. A missing
/// token is `Ok(None)`; an unknown, expired or revoked one, or identity headers naming
/// someone else, are errors.
async fn session_identity(
    state: &AppState,
    request: &Request<RequestBody>,
    now: UnixSeconds,
) -> Result<Option<SessionIdentity>, ApiError> {
    let Some(token) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
    else {
        return Ok(None);
    };
    let session = lookup_session(state, token, now).await?.ok_or_else(|| {
        ApiError::denied(
            Denial::SessionInvalid,
            "the session is unknown, expired or revoked",
        )
    })?;
    // Identity headers, when sent, must name the session's user and device.
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let user_ok = header(identity::USER_UID_HEADER).is_none_or(|u| u == session.user_uid.as_str());
    let device_ok = header(identity::DEVICE_ID_HEADER).is_none_or(|d| d == session.device_id);
    if !user_ok || !device_ok {
        return Err(ApiError::denied(
            Denial::IdentityMismatch,
            "the identity headers do not match the session",
        ));
    }
    Ok(Some(SessionIdentity {
        scope_link: session.scope != "full",
        identity: Identity {
            user_uid: session.user_uid,
            device_id: session.device_id,
        },
    }))
}

/// Requests numbered in arrival order: the stable id of each request's span.
static NEXT_REQUEST: AtomicU64 = AtomicU64::new(1);

/// The shell around every request; never fails (errors become responses). Everything it
/// and the handler log belongs to one `request` span: its number, method, route template,
/// status and duration, and the client address as a keyed tag ([`crate::redact`]); never
/// the path, query or headers.
pub async fn handle(
    state: Arc<AppState>,
    peer: SocketAddr,
    local: Option<IpAddr>,
    request: Request<RequestBody>,
) -> Result<Response<Body>, Infallible> {
    let span = tracing::info_span!(
        "request",
        id = NEXT_REQUEST.fetch_add(1, Ordering::Relaxed),
        method = %request.method(),
        route = tracing::field::Empty,
        status = tracing::field::Empty,
        micros = tracing::field::Empty,
        peer = %crate::redact::tag(&peer.ip().to_string()),
    );
    shell(state, peer, local, request).instrument(span).await
}

async fn shell(
    state: Arc<AppState>,
    peer: SocketAddr,
    local: Option<IpAddr>,
    request: Request<RequestBody>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let method = request.method().clone();
    let (route_name, mut response) = if method == Method::OPTIONS {
        let mut response = Response::new(full(Bytes::new()));
        *response.status_mut() = StatusCode::NO_CONTENT;
        ("OPTIONS", response)
    } else {
        // The signaling socket answers at its configured path too.
        let path = request.uri().path();
        let path = match &state.rtc {
            Some(rtc) if path == rtc.config.signaling_path => routes::SIGNALING_PATH,
            _ => path,
        };
        match routes::route(&method, path) {
            Err(err) => ("unmatched", error_response(&err)),
            Ok(matched) => {
                let name = matched.spec.pattern;
                let limit = state.config.body_limit(matched.spec.body);
                let response = match declared_length(&request) {
                    Some(length) if length > limit => {
                        error_response(&handlers::too_large(matched.spec.endpoint, limit))
                    }
                    _ => match check_content_type(matched.spec.body_kind(), &request) {
                        Err(err) => error_response(&err),
                        Ok(()) => {
                            match admit(&state, &matched, &request, peer.ip(), clock::unix_now()).await {
                                Err(err) => error_response(&err),
                                Ok(identity) => {
                                    let ctx = Ctx {
                                        now: clock::unix_now(),
                                        request,
                                        params: matched.params,
                                        identity,
                                        peer: peer.ip(),
                                        local,
                                    };
                                    let answer = match matched.spec.endpoint {
                                        // The document lists the handlers: it is served from
                                        // above them.
                                        routes::Endpoint::OpenApi => Ok(crate::openapi::serve()),
                                        endpoint => handlers::dispatch(&state, endpoint, ctx).await,
                                    };
                                    match answer {
                                        Ok(response) => response,
                                        Err(err) => error_response(&err),
                                    }
                                }
                            }
                        }
                    },
                };
                (name, response)
            }
        }
    };
    if method == Method::HEAD {
        *response.body_mut() = full(Bytes::new());
    }
    if response.status() == StatusCode::REQUEST_TIMEOUT {
        // The rest of a stalled body will not be read: the connection cannot carry another
        // request.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    add_cors(response.headers_mut());
    state
        .metrics
        .observe_request(route_name, &method, response.status().as_u16(), started.elapsed());
    // The route pattern only: paths and queries may carry ids a log need not keep.
    let span = tracing::Span::current();
    span.record("route", route_name);
    span.record("status", response.status().as_u16());
    span.record("micros", started.elapsed().as_micros() as u64);
    tracing::debug!("request");
    Ok(response)
}
