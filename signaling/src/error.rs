//! The front-end's error type and the one place where errors become HTTP responses.

use http::StatusCode;
use openchat_storage::StorageError;
use serde::Serialize;

/// An error answered to a client as the flat envelope of WIRE.md §1.4:
/// `{"code", "message", "retryable"}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retryable: bool,
}

/// The JSON body of an error response.
#[derive(Debug, Serialize)]
pub struct ErrorEnvelope<'a> {
    pub code: &'a str,
    pub message: &'a str,
    pub retryable: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retryable: false,
        }
    }

    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }

    pub fn envelope(&self) -> ErrorEnvelope<'_> {
        ErrorEnvelope {
            code: self.code,
            message: &self.message,
            retryable: self.retryable,
        }
    }

    pub fn not_found_route(method: &http::Method, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for {method} {path}"),
        )
    }

    pub fn method_not_allowed(method: &http::Method, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on {path}"),
        )
    }

    pub fn invalid_payload(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_payload", message)
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body exceeds {limit} bytes"),
        )
    }

    pub fn server_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "server_not_found", "server not found")
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn storage_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "storage is unavailable; retry later",
        )
        .retryable()
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error",
        )
        .retryable()
    }
}

impl From<StorageError> for ApiError {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::Unavailable(reason) => {
                tracing::warn!(%reason, "storage unavailable");
                ApiError::storage_unavailable()
            }
            StorageError::NotFound("server") => ApiError::server_not_found(),
            StorageError::NotFound("channel") => {
                ApiError::new(StatusCode::NOT_FOUND, "channel_not_found", "channel not found")
            }
            StorageError::NotFound(what) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
            }
            StorageError::Conflict(reason) => {
                tracing::info!(%reason, "storage conflict");
                ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    "the change conflicts with the current state",
                )
            }
            other => {
                // Details stay in the log; clients get a generic message.
                tracing::error!(error = %other, "storage request failed");
                ApiError::internal()
            }
        }
    }
}
