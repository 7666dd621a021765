//! The request shell: everything every request goes through, around the handlers.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use openchat_core::limits::{AVATAR_BYTES_MAX, JSON_BODY_BYTES_MAX};
use openchat_core::{UnixSeconds, UserUid};
use openchat_storage::{StorageError, StorageHandle};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::blobs::BlobStore;
use crate::error::ApiError;
use crate::handlers;
use crate::metrics::Metrics;
use crate::ratelimit::Limiters;
use crate::realtime::Hub;
use crate::routes::{self, Access, BodyLimit, Matched, Params};
use crate::wire::{self, Identity};

/// The body of every response.
pub type Body = BoxBody<Bytes, Infallible>;
/// The body of every request: hyper's, under the connection's time and rate bounds.
pub type RequestBody = crate::guard::TimedBody;

/// Longest a request waits for the storage thread before answering 503.
pub const STORAGE_DEADLINE: Duration = Duration::from_secs(10);
/// Multipart framing allowed on top of the configured message and upload limits.
pub const MULTIPART_OVERHEAD_BYTES: u64 = 64 * 1024;

/// Limits reported in the capabilities document and enforced by the routes that need them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_message_bytes: u64,
    pub max_upload_bytes: u64,
    pub rate_limit_per_minute: u32,
    pub max_call_participants: u32,
}

/// Facts about this build, reported by capabilities and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    pub version: String,
    pub commit: String,
    pub time: String,
}

/// What the front-end needs from the configuration.
#[derive(Debug, Clone)]
pub struct FrontConfig {
    /// The external origin, without a trailing slash (`https://chat.example.org`).
    pub public_base_url: String,
    /// `OPENCHAT_ENV=production`: identity required, `https_required` advertised.
    pub production: bool,
    /// `OPENCHAT_AUTH=session`: authed routes need a bearer session (E2EE.md §4).
    pub session_auth: bool,
    pub limits: Limits,
    pub build: BuildInfo,
    /// Time and rate bounds of every connection (`OPENCHAT_HTTP_*`).
    pub http: crate::guard::HttpBounds,
    /// `OPENCHAT_E2EE_SELF_JOIN`: a user may add itself to an e2ee channel (any mode).
    pub e2ee_self_join: bool,
}

impl FrontConfig {
    /// The body limit of a route, in bytes.
    pub fn body_limit(&self, limit: BodyLimit) -> u64 {
        match limit {
            BodyLimit::Json => JSON_BODY_BYTES_MAX as u64,
            BodyLimit::Message => {
                self.limits.max_upload_bytes + self.limits.max_message_bytes + MULTIPART_OVERHEAD_BYTES
            }
            BodyLimit::Avatar => AVATAR_BYTES_MAX as u64 + MULTIPART_OVERHEAD_BYTES,
            BodyLimit::Keys => openchat_core::limits::KEY_BODY_BYTES_MAX as u64,
        }
    }
}

/// Shared state of the front-end.
#[derive(Debug)]
pub struct AppState {
    pub config: FrontConfig,
    pub storage: StorageHandle,
    pub metrics: Metrics,
    pub hub: Hub,
    pub blobs: BlobStore,
    pub limiters: Limiters,
    /// Voice; `None` when no shards run (then the RTC routes answer 503).
    pub rtc: Option<crate::rtc::RtcState>,
    /// Open WebSockets and the shutdown signal they watch.
    pub lifecycle: crate::lifecycle::Lifecycle,
}

impl AppState {
    pub fn new(config: FrontConfig, storage: StorageHandle, metrics: Metrics, blobs: BlobStore) -> Self {
        let per_user = config.limits.rate_limit_per_minute;
        let per_ip = per_user.saturating_mul(crate::ratelimit::PUBLIC_REQUESTS_PER_IP_FACTOR);
        let limiters = Limiters::new(per_user, per_ip);
        Self {
            config,
            storage,
            metrics,
            hub: Hub::new(),
            blobs,
            limiters,
            rtc: None,
            lifecycle: crate::lifecycle::Lifecycle::default(),
        }
    }

    /// Runs one storage request under [`STORAGE_DEADLINE`], timing it for `/metrics`.
    pub async fn store<T>(
        &self,
        op: &'static str,
        request: impl Future<Output = Result<T, StorageError>>,
    ) -> Result<T, ApiError> {
        let started = Instant::now();
        let result = match tokio::time::timeout(STORAGE_DEADLINE, request).await {
            Ok(result) => result,
            Err(_) => Err(StorageError::Unavailable(format!(
                "no answer within {STORAGE_DEADLINE:?}"
            ))),
        };
        self.metrics
            .observe_storage(op, result.is_ok(), started.elapsed());
        result.map_err(ApiError::from)
    }

    /// Starts closing every WebSocket: realtime sockets close with 1001; voice rooms tell
    /// their participants that the others left, then close them with 1001.
    pub fn begin_shutdown(&self) {
        self.lifecycle.begin_shutdown();
        if let Some(rtc) = &self.rtc {
            rtc.shards.begin_shutdown();
        }
    }

    pub fn base_url(&self) -> &str {
        &self.config.public_base_url
    }
}

/// One request as a handler sees it: routed, identified, with the clock read once.
#[derive(Debug)]
pub struct Ctx {
    pub now: UnixSeconds,
    pub request: Request<RequestBody>,
    pub params: Params,
    /// Set on authed routes.
    pub identity: Option<Identity>,
    pub peer: IpAddr,
    /// The server address the connection arrived on.
    pub local: Option<IpAddr>,
}

impl Ctx {
    /// The caller's identity (authed routes only).
    pub fn who(&self) -> Result<&Identity, ApiError> {
        self.identity.as_ref().ok_or_else(ApiError::internal)
    }

    pub fn user(&self) -> Result<UserUid, ApiError> {
        self.who().map(|who| who.user_uid.clone())
    }

    /// A path parameter parsed into an id; an impossible id is answered as unknown.
    pub fn id<T>(
        &self,
        name: &str,
        parse: fn(&str) -> Result<T, openchat_core::IdError>,
        not_found: &'static str,
    ) -> Result<T, ApiError> {
        parse(self.params.get(name)).map_err(|_| {
            ApiError::not_found(not_found, format!("{} not found", name.trim_end_matches("_id")))
        })
    }

    /// The query string's pairs.
    pub fn query(&self) -> Vec<(String, String)> {
        crate::realtime::form_pairs(self.request.uri().query().unwrap_or(""))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.request.headers().get(name).and_then(|v| v.to_str().ok())
    }
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A JSON response with the given status.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => {
            let mut response = Response::new(full(bytes));
            *response.status_mut() = status;
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(err) => {
            tracing::error!(error = %err, "serialising a response failed");
            error_response(&ApiError::internal())
        }
    }
}

pub fn error_response(err: &ApiError) -> Response<Body> {
    let mut response = json(err.status, &err.envelope());
    if let Some(seconds) = err.retry_after
        && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    if let Some(allow) = &err.allow
        && let Ok(value) = HeaderValue::from_str(allow)
    {
        response.headers_mut().insert(header::ALLOW, value);
    }
    if let Some(protocol) = err.upgrade {
        response
            .headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static(protocol));
    }
    response
}

/// Reads a body of at most `limit` bytes.
pub async fn read_body(request: Request<RequestBody>, limit: usize) -> Result<Bytes, ApiError> {
    let collected = Limited::new(request.into_body(), limit)
        .collect()
        .await
        .map_err(|err| {
            if err.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                ApiError::payload_too_large(limit)
            } else if crate::guard::BodyError::is_too_slow(&*err) {
                ApiError::request_timeout()
            } else {
                ApiError::invalid_payload(format!("cannot read the request body: {err}"))
            }
        })?;
    Ok(collected.to_bytes())
}

/// Parses JSON, answering `invalid_payload` with serde's reason.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|err| ApiError::invalid_payload(format!("invalid JSON body: {err}")))
}

/// Reads and parses a JSON body of at most `limit` bytes.
pub async fn read_json<T: DeserializeOwned>(
    request: Request<RequestBody>,
    limit: usize,
) -> Result<T, ApiError> {
    parse_json(&read_body(request, limit).await?)
}

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
    wire::check_identity_headers(request.headers())?;
    match matched.spec.access {
        Access::Authed if state.config.session_auth => {
            let who = session_identity(state, request, now)
                .await?
                .ok_or_else(|| e2ee_refusal("session_invalid", "a valid bearer session is required"))?;
            if who.scope_link && !LINK_SCOPE.contains(&matched.spec.endpoint) {
                return Err(e2ee_refusal(
                    "scope_insufficient",
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
            let who = wire::identity(request.headers(), state.config.production)?;
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

fn e2ee_refusal(code: &'static str, message: &str) -> ApiError {
    ApiError::new(crate::error::e2ee_status(code), code, message)
}

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
    let session = lookup_session(state, token, now)
        .await?
        .ok_or_else(|| e2ee_refusal("session_invalid", "the session is unknown, expired or revoked"))?;
    // Identity headers, when sent, must name the session's user and device.
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let user_ok = header(wire::USER_UID_HEADER).is_none_or(|u| u == session.user_uid.as_str());
    let device_ok = header(wire::DEVICE_ID_HEADER).is_none_or(|d| d == session.device_id);
    if !user_ok || !device_ok {
        return Err(e2ee_refusal(
            "identity_mismatch",
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

/// The live session of a bearer token (stored as its SHA-256 digest).
pub async fn lookup_session(
    state: &AppState,
    token: &str,
    now: UnixSeconds,
) -> Result<Option<openchat_storage::e2ee::SessionRecord>, ApiError> {
    let digest = crate::handlers::sha256_hex(token.as_bytes());
    let op = openchat_storage::e2ee::Op::Session {
        token_sha256: digest,
        now,
    };
    match state.store("session_lookup", state.storage.e2ee(op)).await? {
        openchat_storage::e2ee::Outcome::MaybeSession(session) => Ok(session),
        _ => Err(ApiError::internal()),
    }
}

/// The shell around every request; never fails (errors become responses).
pub async fn handle(
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
                            match admit(&state, &matched, &request, peer.ip(), wire::unix_now()).await {
                                Err(err) => error_response(&err),
                                Ok(identity) => {
                                    let ctx = Ctx {
                                        now: wire::unix_now(),
                                        request,
                                        params: matched.params,
                                        identity,
                                        peer: peer.ip(),
                                        local,
                                    };
                                    match handlers::dispatch(&state, matched.spec.endpoint, ctx).await {
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
    tracing::debug!(
        route = route_name,
        method = %method,
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    Ok(response)
}
