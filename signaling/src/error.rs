//! The front-end's error type and the one place where errors become HTTP responses.

use http::StatusCode;
use openchat_core::Denial;
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
    /// Seconds for a `Retry-After` header (rate limiting).
    pub retry_after: Option<u64>,
    /// The channel's current epoch, for the E2EE conflicts that need it
    /// (`details.current_epoch`).
    pub current_epoch: Option<i64>,
    /// The methods a path supports, for the `Allow` header of a `405` (RFC 9110 §15.5.6).
    pub allow: Option<String>,
    /// The protocol to switch to, for the `Upgrade` header of a `426`.
    pub upgrade: Option<&'static str>,
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorEnvelope {
    pub code: String,
    pub message: String,
    pub retryable: bool,
    /// Present on some E2EE errors: `{"current_epoch": n}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    /// An E2EE or session refusal, with its status from [`denial_status`].
    pub fn denied(denial: Denial, message: impl Into<String>) -> Self {
        Self::new(denial_status(denial), denial.code(), message)
    }

    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retryable: false,
            retry_after: None,
            current_epoch: None,
            allow: None,
            upgrade: None,
        }
    }

    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }

    pub fn envelope(&self) -> ErrorEnvelope {
        ErrorEnvelope {
            code: self.code.to_owned(),
            message: self.message.clone(),
            retryable: self.retryable,
            details: self
                .current_epoch
                .map(|epoch| serde_json::json!({"current_epoch": epoch})),
        }
    }

    pub fn not_found_route(method: &http::Method, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for {method} {path}"),
        )
    }

    /// `allow` lists the methods the path does support.
    pub fn method_not_allowed(method: &http::Method, path: &str, allow: &[&http::Method]) -> Self {
        let allow = allow.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ");
        let mut err = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on {path}; allowed: {allow}"),
        );
        err.allow = Some(allow);
        err
    }

    /// A request body that arrived too slowly (the connection is closed after the answer).
    pub fn request_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request body arrived too slowly",
        )
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn invalid_payload(message: impl Into<String>) -> Self {
        Self::bad_request("invalid_payload", message)
    }

    pub fn invalid_query(message: impl Into<String>) -> Self {
        Self::bad_request("invalid_query", message)
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body exceeds {limit} bytes"),
        )
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn server_not_found() -> Self {
        Self::not_found("server_not_found", "server not found")
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn rate_limited(retry_after_seconds: u64) -> Self {
        let mut err = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests; slow down",
        )
        .retryable();
        err.retry_after = Some(retry_after_seconds.max(1));
        err
    }

    pub fn storage_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "storage is unavailable; retry later",
        )
        .retryable()
    }

    /// Cluster mode without its NATS connection (`/readyz`).
    pub fn nats_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "nats_unavailable",
            "the cluster's NATS connection is down; retry later",
        )
        .retryable()
    }

    /// Cluster mode while this node reads the recent events it needs for redelivery
    /// (`/readyz`, briefly after start).
    pub fn realtime_catching_up() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "realtime_catching_up",
            "this node is still reading the recent events; retry shortly",
        )
        .retryable()
    }

    /// Cluster mode after SIGTERM: the node finishes its calls and takes no new work
    /// (`/readyz`).
    pub fn draining() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this node is shutting down; use another",
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

/// The status of an E2EE or session refusal (E2EE.md §2): the one mapping from a
/// [`Denial`] to HTTP.
pub fn denial_status(denial: Denial) -> StatusCode {
    match denial {
        Denial::NotAMember
        | Denial::NotAMemberOfEpoch
        | Denial::DeviceNotActive
        | Denial::Forbidden
        | Denial::DeviceRevoked
        | Denial::DeviceMismatch
        | Denial::ScopeInsufficient => StatusCode::FORBIDDEN,
        Denial::AlreadyMember
        | Denial::EpochCommitExists
        | Denial::EpochNotCurrent
        | Denial::EpochStale
        | Denial::EpochCommitPending
        | Denial::DeviceExists
        | Denial::DeviceLimit
        | Denial::DeviceNotPending
        | Denial::KeyPackageLimit
        // The channel exists but is a plain one: a conflict with its state, not bad syntax.
        | Denial::ChannelNotE2ee => StatusCode::CONFLICT,
        Denial::LinkRequestExpired => StatusCode::GONE,
        Denial::ChallengeInvalid
        | Denial::SignatureInvalid
        | Denial::DeviceKeyMismatch
        | Denial::SessionInvalid
        | Denial::IdentityMismatch => StatusCode::UNAUTHORIZED,
    }
}

/// The `<thing>_not_found` code of a storage `NotFound`.
fn not_found_code(what: &str) -> &'static str {
    match what {
        "server" => "server_not_found",
        "channel" => "channel_not_found",
        "group" => "category_not_found",
        "message" => "message_not_found",
        "attachment" => "attachment_not_found",
        "avatar_asset" => "avatar_asset_not_found",
        "member" => "member_not_found",
        "epoch_commit" => "epoch_not_committed",
        "link_request" => "link_request_not_found",
        "device" => "device_not_found",
        "user" => "user_not_found",
        "backup" => "backup_not_found",
        _ => "not_found",
    }
}

impl From<StorageError> for ApiError {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::Unavailable(reason) => {
                tracing::warn!(%reason, "storage unavailable");
                ApiError::storage_unavailable()
            }
            StorageError::NotFound(what) => {
                ApiError::not_found(not_found_code(what), format!("{what} not found"))
            }
            StorageError::Conflict { code, message } => {
                let err = ApiError::new(StatusCode::CONFLICT, code, message);
                // A version conflict is worth retrying after re-reading.
                if code == "profile_conflict" {
                    err.retryable()
                } else {
                    err
                }
            }
            StorageError::Invalid { code, message } => ApiError::bad_request(code, message),
            StorageError::Denied {
                denial,
                message,
                current_epoch,
            } => {
                let mut err = ApiError::denied(denial, message);
                err.current_epoch = current_epoch;
                err
            }
            StorageError::Forbidden(message) => ApiError::forbidden(message),
            other => {
                // Details stay in the log; clients get a generic message.
                tracing::error!(error = %other, "storage request failed");
                ApiError::internal()
            }
        }
    }
}

/// The error answers shared by the endpoints WIRE.md gives no codes of their own; each
/// body is the flat envelope `{code, message, retryable}`.
#[derive(Debug, utoipa::IntoResponses)]
pub enum GenericErrors {
    /// `invalid_payload`, `invalid_query`, or the endpoint's own code from WIRE.md.
    #[response(status = 400)]
    BadRequest(ErrorEnvelope),
    /// `unauthorized`: identity required (production).
    #[response(status = 401)]
    Unauthorized(ErrorEnvelope),
    /// `forbidden`: only the server's owner may.
    #[response(status = 403)]
    Forbidden(ErrorEnvelope),
    /// `<thing>_not_found`.
    #[response(status = 404)]
    NotFound(ErrorEnvelope),
    /// A conflict (`profile_conflict`, `category_not_empty`, `ownership_already_claimed`).
    #[response(status = 409)]
    Conflict(ErrorEnvelope),
    /// `payload_too_large`.
    #[response(status = 413)]
    TooLarge(ErrorEnvelope),
    /// `rate_limited`, with `Retry-After`.
    #[response(status = 429)]
    RateLimited(ErrorEnvelope),
    /// `storage_unavailable`, `nats_unavailable` (retryable).
    #[response(status = 503)]
    Unavailable(ErrorEnvelope),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_denial_is_a_client_error_carrying_its_code() {
        for denial in Denial::ALL {
            let err = ApiError::denied(denial, "why");
            assert!(err.status.is_client_error(), "{denial:?}: {}", err.status);
            assert_eq!(err.code, denial.code());
        }
        assert_eq!(denial_status(Denial::EpochStale), StatusCode::CONFLICT);
        assert_eq!(denial_status(Denial::LinkRequestExpired), StatusCode::GONE);
        assert_eq!(denial_status(Denial::SessionInvalid), StatusCode::UNAUTHORIZED);
        assert_eq!(denial_status(Denial::NotAMemberOfEpoch), StatusCode::FORBIDDEN);
    }

    #[test]
    fn a_storage_denial_keeps_its_code_status_and_epoch() {
        let err = ApiError::from(StorageError::Denied {
            denial: Denial::EpochStale,
            message: "stale".into(),
            current_epoch: Some(7),
        });
        assert_eq!(
            (err.status, err.code, err.current_epoch),
            (StatusCode::CONFLICT, "epoch_stale", Some(7))
        );
    }
}
