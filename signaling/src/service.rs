//! The request shell: everything every request goes through, around the handlers.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::body::Incoming;
use openchat_core::UnixSeconds;
use openchat_storage::{StorageError, StorageHandle};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::handlers;
use crate::metrics::Metrics;
use crate::routes::{self, Route};
use crate::wire;

/// The body of every response.
pub type Body = BoxBody<Bytes, Infallible>;

/// Longest a request waits for the storage thread before answering 503.
pub const STORAGE_DEADLINE: Duration = Duration::from_secs(10);

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
    pub limits: Limits,
    pub build: BuildInfo,
}

/// Shared, immutable-after-start state of the front-end.
#[derive(Debug)]
pub struct AppState {
    pub config: FrontConfig,
    pub storage: StorageHandle,
    pub metrics: Metrics,
}

impl AppState {
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
}

/// One request as a handler sees it: already routed, with the clock read once.
#[derive(Debug)]
pub struct Ctx {
    pub now: UnixSeconds,
    pub request: Request<Incoming>,
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
    json(err.status, &err.envelope())
}

/// Reads and parses a JSON body of at most `limit` bytes.
pub async fn read_json<T: DeserializeOwned>(request: Request<Incoming>, limit: usize) -> Result<T, ApiError> {
    let collected = Limited::new(request.into_body(), limit)
        .collect()
        .await
        .map_err(|err| {
            if err.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                ApiError::payload_too_large(limit)
            } else {
                ApiError::invalid_payload(format!("cannot read the request body: {err}"))
            }
        })?;
    serde_json::from_slice(&collected.to_bytes())
        .map_err(|err| ApiError::invalid_payload(format!("invalid JSON body: {err}")))
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

fn declared_length(request: &Request<Incoming>) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The shell around every request; never fails (errors become responses).
pub async fn handle(state: Arc<AppState>, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let method = request.method().clone();
    let (route_name, mut response) = if method == Method::OPTIONS {
        let mut response = Response::new(full(Bytes::new()));
        *response.status_mut() = StatusCode::NO_CONTENT;
        ("OPTIONS", response)
    } else {
        match routes::route(&method, request.uri().path()) {
            Err(err) => ("unmatched", error_response(&err)),
            Ok(route) => {
                let name = route.name();
                let response = match declared_length(&request) {
                    Some(length) if length > route.body_limit() as u64 => {
                        error_response(&ApiError::payload_too_large(route.body_limit()))
                    }
                    _ => {
                        let ctx = Ctx {
                            now: wire::unix_now(),
                            request,
                        };
                        match dispatch(&state, route, ctx).await {
                            Ok(response) => response,
                            Err(err) => error_response(&err),
                        }
                    }
                };
                (name, response)
            }
        }
    };
    if method == Method::HEAD {
        *response.body_mut() = full(Bytes::new());
    }
    add_cors(response.headers_mut());
    state
        .metrics
        .observe_request(route_name, &method, response.status().as_u16(), started.elapsed());
    Ok(response)
}

async fn dispatch(state: &AppState, route: Route, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    match route {
        Route::Healthz => Ok(json(StatusCode::OK, &serde_json::json!({"status": "ok"}))),
        Route::Readyz => handlers::readyz(state).await,
        Route::Metrics => Ok(handlers::metrics(state)),
        Route::Capabilities => handlers::capabilities(state).await,
        Route::Directory => handlers::directory(state).await,
        Route::ServerChannels(server) => handlers::channels(state, server).await,
        Route::ServerMembers(server) => handlers::members(state, server).await,
        Route::ServerSettings(server) => handlers::settings(state, server).await,
        Route::UpdateServerSettings(server) => handlers::update_settings(state, server, ctx).await,
    }
}
