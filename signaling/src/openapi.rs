//! The OpenAPI 3.1 document of the REST API, generated from the handlers' annotations
//! (`utoipa`) and served at `GET /v1/openapi.json`. A test checks it against
//! [`routes::ROUTES`](crate::routes::ROUTES): same paths, same methods.

use std::sync::OnceLock;

use utoipa::OpenApi;

use crate::body::{Body, json};
use crate::handlers;

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
        serve,
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

/// The document, built once: utoipa's output plus [`rules::constrain`], which states the
/// syntax the server enforces (id patterns, bounds, enums, base64url) so that every request
/// valid per the document is accepted and every invalid one refused (checked by
/// schemathesis in CI).
pub fn document() -> &'static serde_json::Value {
    static DOCUMENT: OnceLock<serde_json::Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| serde_json::json!({}));
        rules::constrain(&mut doc);
        doc
    })
}

/// The constraints of parameters and request bodies that utoipa's derive cannot carry, in
/// one table. Each pattern here mirrors one validation in the handlers or in `core`; the
/// `schemathesis` run in CI fails if the two drift apart.
pub mod rules {
    use serde_json::{Value, json};

    /// What `str::trim` removes: Unicode `White_Space`, spelled out because regex `\s`
    /// differs between dialects (Python's also matches U+001C..U+001F).
    pub const WS: &str =
        "[\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";
    /// A character that is neither whitespace nor a control character.
    const VISIBLE: &str =
        "[^\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";
    /// A character that is not whitespace (control characters allowed).
    const SOLID: &str =
        "[^\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";
    /// A display-name character other than a space, as far as ASCII goes (letters, digits,
    /// `.`, `_`, `-`); beyond ASCII only control characters and whitespace are excluded here,
    /// because the regex dialect cannot name Unicode letters (the server still checks).
    const NAME_CHAR: &str =
        "[^\\x00-\\x2c/:-@\\[-^`{-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";
    const NAME_CHAR_OR_SPACE: &str =
        "[^\\x00-\\x1f!-,/:-@\\[-^`{-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";
    /// An id as `core::ids` parses it.
    pub const ID: &str = "^[A-Za-z0-9_.-]{1,128}$";

    fn trimmed(inner: &str) -> String {
        format!("^{WS}*(?:{inner}){WS}*$")
    }

    /// An id the handler trims first.
    pub fn trimmed_id() -> String {
        trimmed("[A-Za-z0-9_.-]{1,128}")
    }

    /// Canonical base64url without padding of at most `max` decoded bytes (E2EE.md §0).
    pub fn base64url(max: usize) -> Value {
        let chars = (max * 4).div_ceil(3);
        json!({
            "type": "string",
            "maxLength": chars,
            "pattern": "^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$",
        })
    }

    fn string(pattern: String) -> Value {
        json!({"type": "string", "pattern": pattern})
    }

    /// A trimmed text of 1..=`max` characters, none a control character (channel and
    /// category names).
    fn name(max: usize) -> Value {
        string(trimmed(&format!(
            "{VISIBLE}|{VISIBLE}[^\\x00-\\x1f\\x7f-\\x9f]{{0,{}}}{VISIBLE}",
            max - 2
        )))
    }

    /// A trimmed text of `min`..=`max` characters of any kind.
    fn text(min: usize, max: usize) -> Value {
        let body = format!("{SOLID}|{SOLID}[\\s\\S]{{0,{}}}{SOLID}", max - 2);
        let inner = if min == 0 { format!("|{body}") } else { body };
        string(trimmed(&inner))
    }

    fn one_of_words(words: &[&str], empty: bool) -> Value {
        let mut inner = words.join("|");
        if empty {
            inner.insert(0, '|');
        }
        string(trimmed(&inner))
    }

    /// JSON integers the server reads as whole numbers that survive a trip through a double.
    fn safe_integer(minimum: i64) -> Value {
        json!({"type": "integer", "minimum": minimum, "maximum": crate::dto::SAFE_INTEGER_MAX})
    }

    fn query_integer(minimum: u64, maximum: u64) -> Value {
        json!({"type": "integer", "minimum": minimum, "maximum": maximum})
    }

    /// Schemas of path and query parameters, by name (and, for `limit`, by path).
    fn parameter(path: &str, name: &str) -> Option<Value> {
        use openchat_core::limits::{
            HISTORY_PAGE_MAX, KEY_ENVELOPES_PAGE_MAX, MENTION_RESULTS_MAX, MESSAGES_PAGE_MAX,
            PROFILES_BATCH_MAX,
        };
        Some(match name {
            "epoch_id" => json!({"type": "integer"}),
            "before" | "after" if path.ends_with("/history") || path.ends_with("/messages") => {
                string("^c[0-9]{1,18}$".to_owned())
            }
            "after" => query_integer(0, crate::dto::SAFE_INTEGER_MAX as u64),
            "limit" if path.ends_with("/messages") => query_integer(1, MESSAGES_PAGE_MAX as u64),
            "limit" if path.ends_with("/history") => query_integer(1, HISTORY_PAGE_MAX as u64),
            "limit" if path.ends_with("/envelopes") => query_integer(1, KEY_ENVELOPES_PAGE_MAX as u64),
            "limit" if path.ends_with("mentions:resolve") => query_integer(1, MENTION_RESULTS_MAX as u64),
            "query" => string("^[A-Za-z0-9_.-]{0,64}$".to_owned()),
            // Empty and repeated values are skipped (the client sends both), but count.
            "user_uid" if path.ends_with("profiles:batch") => json!({
                "type": "array",
                "minItems": 1,
                "maxItems": PROFILES_BATCH_MAX,
                "items": string(format!("^(?:{WS}*|{WS}*[A-Za-z0-9_.-]{{1,128}}{WS}*)$")),
                "contains": string(trimmed_id()),
            }),
            // `12`, `"12"` or `W/"12"`: a positive version; blank means none.
            "If-Match" => json!({
                "type": "string",
                "pattern": "^[ \\t]*(?:(?:W/)?(?:\\+?0*[1-9][0-9]{0,17}|\"\\+?0*[1-9][0-9]{0,17}\"))?[ \\t]*$",
            }),
            "device_id" if !path.contains('{') => string(trimmed_id()),
            _ if name.ends_with("_id") || name == "user_uid" => string(ID.to_owned()),
            _ => return None,
        })
    }

    /// Request body properties, by schema name and property.
    fn property(schema: &str, property: &str) -> Option<Value> {
        use openchat_core::limits::{
            CHANNEL_NAME_CHARS_MAX, COMMIT_PAYLOAD_BYTES_MAX, E2EE_SMALL_BLOB_BYTES_MAX,
            KEY_BACKUP_BYTES_MAX, KEY_ENVELOPE_BYTES_MAX, KEY_ENVELOPES_PER_CALL_MAX, KEY_PACKAGE_BYTES_MAX,
            KEY_PACKAGES_PER_CALL_MAX, SERVER_DESCRIPTION_CHARS_MAX, SERVER_NAME_CHARS_MAX,
        };
        use openchat_core::profile::DISPLAY_NAME_CHARS_MAX;
        use openchat_core::settings::BANNER_PRESETS;
        Some(match (schema, property) {
            ("AddMemberBody" | "KeyPackageClaimBody" | "ChallengeBody", "user_uid") => string(trimmed_id()),
            ("ChallengeBody" | "RegisterDeviceBody", "device_id") => string(trimmed_id()),
            ("RegisterDeviceBody", "device_pubkey") | ("SessionBody", "device_pubkey") => json!({
                "type": "string",
                "pattern": "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$",
            }),
            ("AckBody", "up_to_envelope_id") => safe_integer(-crate::dto::SAFE_INTEGER_MAX),
            ("CommitBody" | "PublishEnvelopesBody" | "EnvelopeDto", "epoch_id") => {
                safe_integer(-crate::dto::SAFE_INTEGER_MAX)
            }
            ("CommitBody", "commit_payload") => base64url(COMMIT_PAYLOAD_BYTES_MAX),
            ("CommitBody", "signature") => base64url(E2EE_SMALL_BLOB_BYTES_MAX),
            ("BackupBody", "ciphertext_blob") => base64url(KEY_BACKUP_BYTES_MAX),
            ("EnvelopeInBody", "encrypted_key_blob") => base64url(KEY_ENVELOPE_BYTES_MAX),
            ("EnvelopeInBody", "target_device_id") => string(trimmed_id()),
            ("PublishEnvelopesBody", "channel_id") => string(trimmed_id()),
            ("PublishEnvelopesBody", "envelopes") => json!({
                "type": "array",
                "maxItems": KEY_ENVELOPES_PER_CALL_MAX,
                "items": {"$ref": "#/components/schemas/EnvelopeInBody"},
            }),
            ("KeyPackagesBody", "key_packages") => json!({
                "type": "array",
                "maxItems": KEY_PACKAGES_PER_CALL_MAX,
                "items": base64url(KEY_PACKAGE_BYTES_MAX),
            }),
            ("KeyPackagesBody", "last_resort") => {
                let mut package = base64url(KEY_PACKAGE_BYTES_MAX);
                package["type"] = json!(["string", "null"]);
                package
            }
            ("CreateChannelBody" | "CreateCategoryBody" | "RenameCategoryBody", "name") => {
                name(CHANNEL_NAME_CHARS_MAX)
            }
            ("CreateChannelBody", "type") | ("CreateCategoryBody", "kind") => {
                one_of_words(&["text", "voice"], false)
            }
            ("CreateChannelBody" | "LayoutGroupBody", "group_id" | "id") => string(trimmed_id()),
            ("LayoutGroupBody", "channel_ids") => json!({"type": "array", "items": string(trimmed_id())}),
            ("CreateServerBody" | "SettingsBody", "display_name") => text(1, SERVER_NAME_CHARS_MAX),
            ("CreateServerBody" | "SettingsBody", "description") => text(0, SERVER_DESCRIPTION_CHARS_MAX),
            ("CreateServerBody" | "SettingsBody", "banner_preset") => one_of_words(BANNER_PRESETS, true),
            ("ProfileBody", "display_name") => json!({
                "type": "string",
                "description": format!(
                    "2-{DISPLAY_NAME_CHARS_MAX} letters, digits, spaces, '.', '_' or '-' (after trimming)"
                ),
                "pattern": trimmed(&format!(
                    "{NAME_CHAR}{NAME_CHAR_OR_SPACE}{{0,{}}}{NAME_CHAR}",
                    DISPLAY_NAME_CHARS_MAX - 2
                )),
            }),
            ("ProfileBody", "avatar_mode") => json!({"type": "string", "enum": ["generated", "uploaded"]}),
            ("ClaimBody", "claim_token") => string(SOLID.to_owned()),
            ("EnvelopeDto", "ciphertext") => {
                // Bounded by the configured message size (413 beyond), not by the document.
                let mut any = base64url(0);
                if let Some(schema) = any.as_object_mut() {
                    schema.remove("maxLength");
                }
                any
            }
            ("EnvelopeDto", "nonce" | "aad") => base64url(E2EE_SMALL_BLOB_BYTES_MAX),
            _ => return None,
        })
    }

    /// Whole schemas the derive cannot say: alternatives and cross-field rules.
    fn whole_schema(name: &str) -> Option<Value> {
        let blank_free = format!("[\\s\\S]*{SOLID}[\\s\\S]*");
        Some(match name {
            // A plain message needs text (or, as a form, an image); an e2ee one an envelope
            // instead. Which one a channel takes is the channel's (400 otherwise, E2EE.md).
            "CreateMessageBody" => json!({
                "type": "object",
                "description": "`POST .../messages` as JSON: `body` (not blank; at most `max_message_bytes` UTF-8 bytes, else 413) or, in an e2ee channel, `envelope`; the multipart form has the same text fields plus `files`.",
                "properties": {
                    "body": {"type": ["string", "null"]},
                    "reply_to_message_id": {"type": ["string", "null"], "pattern": format!("^(?:{WS}*|{inner})$", inner = trimmed_id().trim_start_matches('^').trim_end_matches('$'))},
                    "envelope": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/EnvelopeDto"}]},
                },
                "anyOf": [
                    {
                        "required": ["body"],
                        "properties": {
                            "body": {"type": "string", "pattern": format!("^{blank_free}$")},
                            "envelope": {"type": "null"},
                        },
                    },
                    {
                        "required": ["envelope"],
                        "properties": {
                            "body": {"type": ["string", "null"], "pattern": format!("^{WS}*$")},
                            "envelope": {"$ref": "#/components/schemas/EnvelopeDto"},
                        },
                    },
                ],
            }),
            _ => return None,
        })
    }

    /// Applies the tables to a generated document.
    pub fn constrain(doc: &mut Value) {
        if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
            for (path, item) in paths.iter_mut() {
                let Some(item) = item.as_object_mut() else {
                    continue;
                };
                for operation in item.values_mut() {
                    let Some(parameters) = operation.get_mut("parameters").and_then(Value::as_array_mut)
                    else {
                        continue;
                    };
                    for parameter_doc in parameters {
                        let name = parameter_doc["name"].as_str().unwrap_or_default().to_owned();
                        if let Some(schema) = parameter(path, &name) {
                            parameter_doc["schema"] = schema;
                        }
                    }
                }
            }
        }
        if let Some(schemas) = doc
            .pointer_mut("/components/schemas")
            .and_then(Value::as_object_mut)
        {
            for (name, schema) in schemas.iter_mut() {
                let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
                    continue;
                };
                for (property_name, property_schema) in properties.iter_mut() {
                    if let Some(mut rule) = property(name, property_name) {
                        // A field the derive made nullable stays nullable (null keeps a value).
                        let nullable = property_schema["type"]
                            .as_array()
                            .is_some_and(|types| types.iter().any(|t| t == "null"));
                        if nullable && let Some(kind) = rule["type"].as_str().map(str::to_owned) {
                            rule["type"] = json!([kind, "null"]);
                        }
                        *property_schema = rule;
                    }
                }
            }
            for (name, schema) in schemas.iter_mut() {
                if let Some(whole) = whole_schema(name) {
                    *schema = whole;
                }
                if name == "CreateChannelBody" {
                    // Only text channels can be end-to-end encrypted.
                    schema["if"] = json!({"properties": {"e2ee": {"const": true}}, "required": ["e2ee"]});
                    schema["then"] = json!({"properties": {"type": one_of_words(&["text"], false)}});
                }
            }
        }
        // A read ack may come without a body (`{}` and nothing both mean "the latest").
        if let Some(body) = doc.pointer_mut("/paths/~1v1~1channels~1{channel_id}~1read-ack/put/requestBody") {
            body["required"] = json!(false);
        }
        if let Some(avatar) =
            doc.pointer_mut("/paths/~1v1~1profile~1avatar/post/requestBody/content/multipart~1form-data")
        {
            avatar["schema"] = json!({
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            });
        }
    }
}

/// This document (`GET /v1/openapi.json`; answered by the request shell, which is the only
/// layer above both the handlers and this document).
#[utoipa::path(get, path = "/v1/openapi.json", tag = "operations", responses((status = 200, body = Object)))]
pub fn serve() -> http::Response<Body> {
    json(http::StatusCode::OK, &document())
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
