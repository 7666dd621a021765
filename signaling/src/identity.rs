//! Who a request or realtime socket says it is: the identity headers, the one derivation of
//! an identity (WIRE.md §1.2), and the digest tokens are stored as.

use openchat_core::UserUid;

use crate::error::ApiError;

pub const USER_UID_HEADER: &str = "x-openchat-user-uid";
pub const DEVICE_ID_HEADER: &str = "x-openchat-device-id";
/// The identity of a request without headers, outside production (WIRE.md §1.2).
pub const DEFAULT_USER_UID: &str = "uid_dev_local";
pub const DEFAULT_DEVICE_ID: &str = "dev_local";

/// Who a request says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_uid: UserUid,
    pub device_id: String,
}

/// The headers that say who a caller is, with their names as clients write them.
pub const IDENTITY_HEADERS: [(&str, &str); 3] = [
    (USER_UID_HEADER, "X-OpenChat-User-UID"),
    (DEVICE_ID_HEADER, "X-OpenChat-Device-ID"),
    ("authorization", "Authorization"),
];

/// Refuses a request whose identity headers are not text: such a header must never be read
/// as "absent" (that would make the caller the development identity).
pub fn check_identity_headers(headers: &http::HeaderMap) -> Result<(), ApiError> {
    for (name, display) in IDENTITY_HEADERS {
        for value in headers.get_all(name) {
            if value.to_str().is_err() {
                return Err(ApiError::bad_request(
                    "invalid_identity_header",
                    format!("the {display} header is not valid text (visible ASCII only)"),
                ));
            }
        }
    }
    Ok(())
}

/// A header's trimmed value; `None` when absent or empty. Callers have run
/// [`check_identity_headers`], so a value that is not text is treated as absent only here.
pub fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Identity values a WebSocket URL may carry (`/v1/realtime?user_uid=..&device_id=..`,
/// WIRE.md §4: a browser cannot set headers on a WebSocket). Used only where a header is
/// absent.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueryIdentity<'a> {
    pub user_uid: Option<&'a str>,
    pub device_id: Option<&'a str>,
}

/// Reads the identity headers as Go does: the UID header, else a bearer value used as the
/// UID; missing values default outside production and are refused in production.
pub fn identity(headers: &http::HeaderMap, production: bool) -> Result<Identity, ApiError> {
    identity_from(headers, QueryIdentity::default(), production)
}

/// The one derivation of a caller's identity, for HTTP requests and the realtime socket
/// (the signaling socket's identity is its ticket's): identity headers that are not text
/// are an error, never the default (WIRE.md §1.2); the UID comes from the UID header, else
/// a bearer value, else `query`; the device from its header, else `query`; a missing UID
/// is refused when `required` and defaults otherwise; an invalid UID or an over-long device
/// id is refused.
pub fn identity_from(
    headers: &http::HeaderMap,
    query: QueryIdentity<'_>,
    required: bool,
) -> Result<Identity, ApiError> {
    check_identity_headers(headers)?;
    let bearer = header(headers, "authorization")
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let raw_uid = header(headers, USER_UID_HEADER)
        .or(bearer)
        .or(present(query.user_uid));
    let raw_uid = match raw_uid {
        Some(uid) => uid,
        None if required => return Err(ApiError::unauthorized("missing user identity headers")),
        None => DEFAULT_USER_UID,
    };
    let user_uid =
        UserUid::parse(raw_uid).map_err(|e| ApiError::unauthorized(format!("invalid user identity: {e}")))?;
    let device_id = header(headers, DEVICE_ID_HEADER)
        .or(present(query.device_id))
        .unwrap_or(DEFAULT_DEVICE_ID);
    if device_id.len() > openchat_core::limits::ID_BYTES_MAX {
        return Err(ApiError::unauthorized("device id is too long"));
    }
    Ok(Identity {
        user_uid,
        device_id: device_id.to_owned(),
    })
}

/// A value trimmed, `None` when absent or blank.
fn present(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// Lowercase hex of the SHA-256 digest of `input` (how tokens are stored).
pub fn sha256_hex(input: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, input)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, http::HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn identity_defaults_outside_production_and_is_required_in_production() {
        let none = headers(&[]);
        let id = identity(&none, false).unwrap();
        assert_eq!(
            (id.user_uid.as_str(), id.device_id.as_str()),
            (DEFAULT_USER_UID, DEFAULT_DEVICE_ID)
        );
        assert_eq!(identity(&none, true).unwrap_err().code, "unauthorized");
    }

    #[test]
    fn identity_prefers_the_header_and_falls_back_to_bearer() {
        let both = headers(&[
            (USER_UID_HEADER, " uid_1234abcd "),
            ("authorization", "Bearer uid_other"),
        ]);
        assert_eq!(identity(&both, true).unwrap().user_uid.as_str(), "uid_1234abcd");
        let bearer = headers(&[
            ("authorization", "Bearer uid_bearer"),
            (DEVICE_ID_HEADER, "desktop_x"),
        ]);
        let id = identity(&bearer, true).unwrap();
        assert_eq!(
            (id.user_uid.as_str(), id.device_id.as_str()),
            ("uid_bearer", "desktop_x")
        );
        assert!(identity(&headers(&[(USER_UID_HEADER, "uid with space")]), false).is_err());
    }

    #[test]
    fn identity_headers_that_are_not_text_are_refused_not_defaulted() {
        for (name, display) in IDENTITY_HEADERS {
            let mut map = http::HeaderMap::new();
            map.insert(name, http::HeaderValue::from_bytes(b"uid_\xff\xfe").unwrap());
            for production in [false, true] {
                let err = identity(&map, production).unwrap_err();
                assert_eq!((err.status.as_u16(), err.code), (400, "invalid_identity_header"));
                assert!(err.message.contains(display), "{}", err.message);
            }
        }
    }

    #[test]
    fn the_realtime_query_is_used_only_where_a_header_is_absent() {
        let query = QueryIdentity {
            user_uid: Some("uid_0000000q"),
            device_id: Some("dev_query"),
        };
        let id = identity_from(&headers(&[]), query, false).unwrap();
        assert_eq!(
            (id.user_uid.as_str(), id.device_id.as_str()),
            ("uid_0000000q", "dev_query")
        );
        let id = identity_from(&headers(&[(USER_UID_HEADER, "uid_0000000h")]), query, false).unwrap();
        assert_eq!(
            (id.user_uid.as_str(), id.device_id.as_str()),
            ("uid_0000000h", "dev_query")
        );
        let blank = QueryIdentity {
            user_uid: Some("  "),
            device_id: None,
        };
        let id = identity_from(&headers(&[]), blank, false).unwrap();
        assert_eq!(id.user_uid.as_str(), DEFAULT_USER_UID, "a blank value is absent");
        assert_eq!(
            identity_from(&headers(&[]), blank, true).unwrap_err().code,
            "unauthorized"
        );
        let long = "d".repeat(openchat_core::limits::ID_BYTES_MAX + 1);
        let too_long = QueryIdentity {
            user_uid: None,
            device_id: Some(&long),
        };
        assert!(
            identity_from(&headers(&[]), too_long, false).is_err(),
            "refused, not cut"
        );
        let mut garbled = http::HeaderMap::new();
        garbled.insert(
            USER_UID_HEADER,
            http::HeaderValue::from_bytes(b"uid_\xff").unwrap(),
        );
        assert_eq!(
            identity_from(&garbled, query, false).unwrap_err().code,
            "invalid_identity_header",
            "an invalid header is an error even when the query has a value"
        );
    }
}
