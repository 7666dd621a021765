//! The OpenAPI 3.1 document of the REST API, generated from the handlers' annotations
//! (`utoipa`) and served at `GET /v1/openapi.json`. A test checks it against
//! [`routes::ROUTES`](crate::routes::ROUTES): same paths, same methods.

use std::sync::OnceLock;

use utoipa::OpenApi;

use crate::error::ErrorEnvelope;
use crate::handlers;

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
    /// `storage_unavailable` (retryable).
    #[response(status = 503)]
    Unavailable(ErrorEnvelope),
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "openchatd",
        description = "The OpenChat server's REST API (WIRE.md)."
    ),
    paths(
        handlers::healthz,
        handlers::readyz,
        handlers::metrics,
        handlers::openapi,
        handlers::capabilities,
        handlers::legacy_capabilities,
        handlers::realtime,
        handlers::directory,
        handlers::create_server,
        handlers::claim_ownership,
        handlers::leave_server,
        handlers::settings,
        handlers::update_settings,
        handlers::channels,
        handlers::create_channel,
        handlers::create_category,
        handlers::rename_category,
        handlers::delete_category,
        handlers::update_layout,
        handlers::members,
        handlers::list_messages,
        handlers::create_message,
        handlers::delete_message,
        handlers::attachment,
        handlers::mentions,
        handlers::read_ack,
        handlers::put_read_ack,
        handlers::my_profile,
        handlers::update_my_profile,
        handlers::upload_avatar,
        handlers::avatar,
        handlers::profiles_batch,
        handlers::join_ticket,
        handlers::signaling,
        handlers::add_member,
        handlers::remove_member,
        handlers::rotate_epoch,
        handlers::epochs,
        handlers::commit,
        handlers::fetch_commit,
        handlers::history,
        handlers::register_device,
        handlers::devices,
        handlers::link_start,
        handlers::link_confirm,
        handlers::revoke_device,
        handlers::publish_key_packages,
        handlers::claim_key_packages,
        handlers::publish_envelopes,
        handlers::fetch_envelopes,
        handlers::ack_envelopes,
        handlers::put_backup,
        handlers::latest_backup,
        handlers::auth_challenge,
        handlers::open_session,
        handlers::close_session,
    )
)]
struct ApiDoc;

/// The document, built once.
pub fn document() -> &'static serde_json::Value {
    static DOCUMENT: OnceLock<serde_json::Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| serde_json::json!({})))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use crate::routes::ROUTES;

    #[test]
    fn openapi_document_matches_the_route_table_exactly() {
        let doc = super::document();
        assert!(
            doc["openapi"].as_str().unwrap().starts_with("3.1"),
            "{}",
            doc["openapi"]
        );
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in ["get", "put", "post", "delete", "patch", "head", "options"] {
                if item.get(method).is_some() {
                    documented.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        let routed: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|spec| (spec.method.to_string(), spec.pattern.to_owned()))
            .collect();
        let missing: Vec<_> = routed.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&routed).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "undocumented routes: {missing:?}; unrouted documentation: {extra:?}"
        );
    }

    #[test]
    fn every_operation_documents_its_error_envelope() {
        let doc = super::document();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let responses = operation["responses"].as_object().unwrap();
                assert!(!responses.is_empty(), "{method} {path}");
            }
        }
        assert!(doc["components"]["schemas"]["ErrorEnvelope"].is_object());
    }
}
