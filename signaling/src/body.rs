//! Request and response bodies: the body types every handler speaks, JSON in and out, and
//! the flat error envelope as a response (WIRE.md §1.4).

use std::convert::Infallible;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The body of every response.
pub type Body = BoxBody<Bytes, Infallible>;
/// The body of every request: hyper's, under the connection's time and rate bounds.
pub type RequestBody = crate::guard::TimedBody;

/// A whole body from bytes.
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
