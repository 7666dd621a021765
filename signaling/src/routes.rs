//! The router: one table of every route, and a pure function that matches a request
//! against it.
//!
//! Patterns are matched segment by segment: literals must be equal (so `profiles:batch`,
//! `mentions:resolve` and `ownership:claim` are plain literals), `{name}` captures one
//! segment. The same table feeds the OpenAPI test, which fails if the document and the
//! router ever disagree.

use http::Method;

use crate::error::ApiError;

/// What a route does; the handler is chosen by this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
    Capabilities,
    LegacyCapabilities,
    Directory,
    CreateServer,
    ClaimOwnership,
    LeaveServer,
    ServerSettings,
    UpdateServerSettings,
    ServerChannels,
    CreateChannel,
    CreateCategory,
    RenameCategory,
    DeleteCategory,
    ChannelLayout,
    ServerMembers,
    Messages,
    CreateMessage,
    DeleteMessage,
    Attachment,
    Mentions,
    ReadAck,
    PutReadAck,
    MyProfile,
    UpdateMyProfile,
    UploadAvatar,
    Avatar,
    ProfilesBatch,
    Realtime,
    JoinTicket,
    Signaling,
    AddMember,
    RemoveMember,
    RotateEpoch,
    Epochs,
    Commit,
    FetchCommit,
    History,
    RegisterDevice,
    Devices,
    LinkStart,
    LinkConfirm,
    RevokeDevice,
    PublishKeyPackages,
    ClaimKeyPackages,
    PublishEnvelopes,
    FetchEnvelopes,
    AckEnvelopes,
    PutBackup,
    LatestBackup,
    AuthChallenge,
    OpenSession,
    CloseSession,
}

/// The signaling socket's default path (`OPENCHAT_SIGNALING_PATH` may add another).
pub const SIGNALING_PATH: &str = "/v1/rtc/signaling";

/// Who may call a route without identity headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No identity needed; rate-limited per client IP.
    Public,
    /// Identity headers (defaulted outside production); rate-limited per user.
    Authed,
}

/// The largest body a route accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLimit {
    /// Small JSON bodies ([`openchat_core::limits::JSON_BODY_BYTES_MAX`]).
    Json,
    /// A message: the configured message and upload limits plus multipart overhead.
    Message,
    /// An avatar upload.
    Avatar,
    /// Key material: commits, KeyPackage and envelope batches, backups
    /// ([`openchat_core::limits::KEY_BODY_BYTES_MAX`]).
    Keys,
}

#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub method: Method,
    pub pattern: &'static str,
    pub endpoint: Endpoint,
    pub access: Access,
    pub body: BodyLimit,
}

/// The body media types a route takes (checked by the request shell before the handler).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// A GET (or HEAD): a body, if any, is ignored.
    None,
    /// `application/json`, with or without parameters.
    Json,
    /// `multipart/form-data` with a boundary.
    Multipart,
    /// Either (a message: JSON, or a form with images).
    JsonOrMultipart,
}

impl RouteSpec {
    /// What a request to this route may carry as its body.
    pub fn body_kind(&self) -> BodyKind {
        if self.method == Method::GET {
            return BodyKind::None;
        }
        match self.endpoint {
            Endpoint::UploadAvatar => BodyKind::Multipart,
            Endpoint::CreateMessage => BodyKind::JsonOrMultipart,
            _ => BodyKind::Json,
        }
    }
}

const fn spec(
    method: Method,
    pattern: &'static str,
    endpoint: Endpoint,
    access: Access,
    body: BodyLimit,
) -> RouteSpec {
    RouteSpec {
        method,
        pattern,
        endpoint,
        access,
        body,
    }
}

use Access::{Authed, Public};
use BodyLimit::Json;
use Endpoint as E;

/// Every route openchatd serves.
pub const ROUTES: &[RouteSpec] = &[
    spec(Method::GET, "/healthz", E::Healthz, Public, Json),
    spec(Method::GET, "/readyz", E::Readyz, Public, Json),
    spec(Method::GET, "/metrics", E::Metrics, Public, Json),
    spec(Method::GET, "/v1/openapi.json", E::OpenApi, Public, Json),
    spec(
        Method::GET,
        "/v1/client/capabilities",
        E::Capabilities,
        Public,
        Json,
    ),
    spec(
        Method::GET,
        "/client/capabilities",
        E::LegacyCapabilities,
        Public,
        Json,
    ),
    spec(Method::GET, "/v1/servers", E::Directory, Public, Json),
    spec(Method::POST, "/v1/servers", E::CreateServer, Authed, Json),
    spec(
        Method::POST,
        "/v1/servers/{server_id}/ownership:claim",
        E::ClaimOwnership,
        Authed,
        Json,
    ),
    spec(
        Method::DELETE,
        "/v1/servers/{server_id}/membership",
        E::LeaveServer,
        Authed,
        Json,
    ),
    spec(
        Method::GET,
        "/v1/servers/{server_id}/settings",
        E::ServerSettings,
        Authed,
        Json,
    ),
    spec(
        Method::PUT,
        "/v1/servers/{server_id}/settings",
        E::UpdateServerSettings,
        Authed,
        Json,
    ),
    spec(
        Method::GET,
        "/v1/servers/{server_id}/channels",
        E::ServerChannels,
        Public,
        Json,
    ),
    spec(
        Method::POST,
        "/v1/servers/{server_id}/channels",
        E::CreateChannel,
        Authed,
        Json,
    ),
    spec(
        Method::POST,
        "/v1/servers/{server_id}/categories",
        E::CreateCategory,
        Authed,
        Json,
    ),
    spec(
        Method::PUT,
        "/v1/servers/{server_id}/categories/{group_id}",
        E::RenameCategory,
        Authed,
        Json,
    ),
    spec(
        Method::DELETE,
        "/v1/servers/{server_id}/categories/{group_id}",
        E::DeleteCategory,
        Authed,
        Json,
    ),
    spec(
        Method::PUT,
        "/v1/servers/{server_id}/channel-layout",
        E::ChannelLayout,
        Authed,
        Json,
    ),
    spec(
        Method::GET,
        "/v1/servers/{server_id}/members",
        E::ServerMembers,
        Public,
        Json,
    ),
    spec(
        Method::GET,
        "/v1/channels/{channel_id}/messages",
        E::Messages,
        Public,
        Json,
    ),
    spec(
        Method::POST,
        "/v1/channels/{channel_id}/messages",
        E::CreateMessage,
        Authed,
        BodyLimit::Message,
    ),
    spec(
        Method::DELETE,
        "/v1/channels/{channel_id}/messages/{message_id}",
        E::DeleteMessage,
        Authed,
        Json,
    ),
    spec(
        Method::GET,
        "/v1/channels/{channel_id}/attachments/{attachment_id}",
        E::Attachment,
        Public,
        Json,
    ),
    spec(
        Method::GET,
        "/v1/channels/{channel_id}/mentions:resolve",
        E::Mentions,
        Authed,
        Json,
    ),
    spec(
        Method::GET,
        "/v1/channels/{channel_id}/read-ack",
        E::ReadAck,
        Authed,
        Json,
    ),
    spec(
        Method::PUT,
        "/v1/channels/{channel_id}/read-ack",
        E::PutReadAck,
        Authed,
        Json,
    ),
    spec(Method::GET, "/v1/profile/me", E::MyProfile, Authed, Json),
    spec(Method::PUT, "/v1/profile/me", E::UpdateMyProfile, Authed, Json),
    spec(
        Method::POST,
        "/v1/profile/avatar",
        E::UploadAvatar,
        Authed,
        BodyLimit::Avatar,
    ),
    spec(
        Method::GET,
        "/v1/profile/avatar/{asset_id}",
        E::Avatar,
        Public,
        Json,
    ),
    spec(Method::GET, "/v1/profiles:batch", E::ProfilesBatch, Authed, Json),
    spec(Method::GET, "/v1/realtime", E::Realtime, Public, Json),
    spec(
        Method::POST,
        "/v1/rtc/channels/{channel_id}/join-ticket",
        E::JoinTicket,
        Authed,
        Json,
    ),
    spec(Method::GET, SIGNALING_PATH, E::Signaling, Public, Json),
    spec(
        Method::POST,
        "/v1/channels/{channel_id}/members",
        E::AddMember,
        Authed,
        Json,
    ),
    spec(
        Method::DELETE,
        "/v1/channels/{channel_id}/members/{user_uid}",
        E::RemoveMember,
        Authed,
        Json,
    ),
    spec(
        Method::POST,
        "/v1/channels/{channel_id}/epochs/rotate",
        E::RotateEpoch,
        Authed,
        Json,
    ),
    spec(
        Method::GET,
        "/v1/channels/{channel_id}/epochs",
        E::Epochs,
        Authed,
        Json,
    ),
    spec(
        Method::POST,
        "/v1/channels/{channel_id}/membership/commit",
        E::Commit,
        Authed,
        BodyLimit::Keys,
    ),
    spec(
        Method::GET,
        "/v1/channels/{channel_id}/epochs/{epoch_id}/commit",
        E::FetchCommit,
        Authed,
        Json,
    ),
    spec(
        Method::GET,
        "/v1/channels/{channel_id}/history",
        E::History,
        Authed,
        Json,
    ),
    spec(Method::POST, "/v1/devices", E::RegisterDevice, Authed, Json),
    spec(Method::GET, "/v1/devices", E::Devices, Authed, Json),
    spec(Method::POST, "/v1/devices/link/start", E::LinkStart, Authed, Json),
    spec(
        Method::POST,
        "/v1/devices/link/confirm",
        E::LinkConfirm,
        Authed,
        Json,
    ),
    spec(
        Method::DELETE,
        "/v1/devices/{device_id}",
        E::RevokeDevice,
        Authed,
        Json,
    ),
    spec(
        Method::POST,
        "/v1/keys/packages",
        E::PublishKeyPackages,
        Authed,
        BodyLimit::Keys,
    ),
    spec(
        Method::POST,
        "/v1/keys/packages/claim",
        E::ClaimKeyPackages,
        Authed,
        Json,
    ),
    spec(
        Method::POST,
        "/v1/keys/envelopes/publish",
        E::PublishEnvelopes,
        Authed,
        BodyLimit::Keys,
    ),
    spec(Method::GET, "/v1/keys/envelopes", E::FetchEnvelopes, Authed, Json),
    spec(
        Method::POST,
        "/v1/keys/envelopes/ack",
        E::AckEnvelopes,
        Authed,
        Json,
    ),
    spec(
        Method::POST,
        "/v1/keys/backups",
        E::PutBackup,
        Authed,
        BodyLimit::Keys,
    ),
    spec(
        Method::GET,
        "/v1/keys/backups/latest",
        E::LatestBackup,
        Authed,
        Json,
    ),
    spec(Method::POST, "/v1/auth/challenge", E::AuthChallenge, Public, Json),
    spec(Method::POST, "/v1/auth/session", E::OpenSession, Public, Json),
    spec(Method::DELETE, "/v1/auth/session", E::CloseSession, Public, Json),
];

/// Path parameters captured by a match (at most two per route).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    values: Vec<(&'static str, String)>,
}

impl Params {
    /// The captured segment named `name` (without braces).
    pub fn get(&self, name: &str) -> &str {
        self.values
            .iter()
            .find(|(key, _)| *key == name)
            .map_or("", |(_, value)| value.as_str())
    }
}

/// A matched route.
#[derive(Debug, Clone)]
pub struct Matched {
    pub spec: &'static RouteSpec,
    pub params: Params,
}

fn match_pattern(pattern: &'static str, path: &str) -> Option<Params> {
    let mut params = Params::default();
    let mut want = pattern.split('/');
    let mut got = path.split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return Some(params),
            (Some(w), Some(g)) => {
                if let Some(name) = w.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
                    if g.is_empty() {
                        return None;
                    }
                    params.values.push((name, g.to_owned()));
                } else if w != g {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

/// Resolves a request: the matching route, 405 when the path exists with other methods,
/// 404 otherwise. HEAD is served by GET routes.
pub fn route(method: &Method, path: &str) -> Result<Matched, ApiError> {
    let effective = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    let mut allowed: Vec<&Method> = Vec::new();
    for spec in ROUTES {
        if let Some(params) = match_pattern(spec.pattern, path) {
            if spec.method == *effective {
                return Ok(Matched { spec, params });
            }
            if !allowed.contains(&&spec.method) {
                allowed.push(&spec.method);
            }
        }
    }
    if !allowed.is_empty() {
        // GET routes serve HEAD; every path answers OPTIONS (CORS preflight).
        if allowed.contains(&&Method::GET) {
            allowed.push(&Method::HEAD);
        }
        allowed.push(&Method::OPTIONS);
        Err(ApiError::method_not_allowed(method, path, &allowed))
    } else {
        Err(ApiError::not_found_route(method, path))
    }
}

/// Query pairs read from one URL; the rest are ignored (a `profiles:batch` of 100 uids fits).
pub const QUERY_PAIRS_MAX: usize = 128;

/// `application/x-www-form-urlencoded` pairs of a query string (at most [`QUERY_PAIRS_MAX`]).
pub fn form_pairs(raw: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.as_bytes())
        .take(QUERY_PAIRS_MAX)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_paths_route_to_their_endpoints() {
        let matched = route(&Method::GET, "/v1/servers/srv_harbor/channels").unwrap();
        assert_eq!(
            (matched.spec.endpoint, matched.params.get("server_id")),
            (E::ServerChannels, "srv_harbor")
        );
        assert_eq!(
            route(&Method::GET, "/client/capabilities").unwrap().spec.endpoint,
            E::LegacyCapabilities
        );
        let matched = route(&Method::DELETE, "/v1/channels/ch_1/messages/msg_2").unwrap();
        assert_eq!(
            (matched.params.get("channel_id"), matched.params.get("message_id")),
            ("ch_1", "msg_2")
        );
    }

    #[test]
    fn literal_colon_segments_route() {
        assert_eq!(
            route(&Method::GET, "/v1/profiles:batch").unwrap().spec.endpoint,
            E::ProfilesBatch
        );
        assert_eq!(
            route(&Method::GET, "/v1/channels/ch_1/mentions:resolve")
                .unwrap()
                .spec
                .endpoint,
            E::Mentions
        );
        assert_eq!(
            route(&Method::POST, "/v1/servers/s/ownership:claim")
                .unwrap()
                .spec
                .endpoint,
            E::ClaimOwnership
        );
        assert!(route(&Method::GET, "/v1/profiles").is_err());
        assert!(route(&Method::GET, "/v1/profiles:batch2").is_err());
    }

    #[test]
    fn unknown_paths_are_404_and_wrong_methods_405() {
        for path in [
            "/",
            "/v1",
            "/v1/servers/",
            "/healthz/",
            "/v1/servers/a/b/c",
            "nope",
            "/v1/servers//channels",
        ] {
            let err = route(&Method::GET, path).unwrap_err();
            assert_eq!((err.status.as_u16(), err.code), (404, "not_found"), "{path}");
        }
        let err = route(&Method::POST, "/healthz").unwrap_err();
        assert_eq!((err.status.as_u16(), err.code), (405, "method_not_allowed"));
        assert_eq!(err.allow.as_deref(), Some("GET, HEAD, OPTIONS"));
        let err = route(&Method::PATCH, "/v1/profile/me").unwrap_err();
        assert_eq!(err.allow.as_deref(), Some("GET, PUT, HEAD, OPTIONS"));
        assert_eq!(
            route(&Method::PATCH, "/v1/servers/s/settings")
                .unwrap_err()
                .status
                .as_u16(),
            405
        );
    }

    #[test]
    fn every_pattern_is_unique_per_method() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(
                    !(a.method == b.method && a.pattern == b.pattern),
                    "{} {}",
                    a.method,
                    a.pattern
                );
            }
        }
    }
}
