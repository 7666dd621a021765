//! The router: a pure function from method and path to a [`Route`].
//!
//! Paths are matched segment by segment against literals, so segments with a literal
//! colon (`profiles:batch`, `mentions:resolve`, `ownership:claim`) are ordinary literals.
//! Path parameters are parsed into newtype ids here; an id that cannot be valid can name
//! nothing, so it is answered like an unknown one (404 with the resource's code).

use http::Method;
use openchat_core::ServerId;
use openchat_core::limits::JSON_BODY_BYTES_MAX;

use crate::error::ApiError;

/// Every route the front-end serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Healthz,
    Readyz,
    Metrics,
    /// `GET /v1/client/capabilities` and the legacy `GET /client/capabilities`.
    Capabilities,
    Directory,
    ServerChannels(ServerId),
    ServerMembers(ServerId),
    ServerSettings(ServerId),
    UpdateServerSettings(ServerId),
}

impl Route {
    /// The route's name as a metrics label: the path pattern, never raw client input.
    pub fn name(&self) -> &'static str {
        match self {
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::Capabilities => "/v1/client/capabilities",
            Route::Directory => "/v1/servers",
            Route::ServerChannels(_) => "/v1/servers/{server_id}/channels",
            Route::ServerMembers(_) => "/v1/servers/{server_id}/members",
            Route::ServerSettings(_) | Route::UpdateServerSettings(_) => "/v1/servers/{server_id}/settings",
        }
    }

    /// The largest request body this route accepts.
    pub fn body_limit(&self) -> usize {
        JSON_BODY_BYTES_MAX
    }
}

fn server_id(raw: &str) -> Result<ServerId, ApiError> {
    ServerId::parse(raw).map_err(|_| ApiError::server_not_found())
}

/// Resolves a request to its route, or to the error to answer (404 unknown path, 405 known
/// path with another method, 404 with the resource's code for an impossible id).
pub fn route(method: &Method, path: &str) -> Result<Route, ApiError> {
    let segments: Vec<&str> = match path.strip_prefix('/') {
        Some(rest) => rest.split('/').collect(),
        None => return Err(ApiError::not_found_route(method, path)),
    };
    let get = |route: Route| {
        if method == Method::GET || method == Method::HEAD {
            Ok(route)
        } else {
            Err(ApiError::method_not_allowed(method, path))
        }
    };
    match segments.as_slice() {
        ["healthz"] => get(Route::Healthz),
        ["readyz"] => get(Route::Readyz),
        ["metrics"] => get(Route::Metrics),
        ["v1", "client", "capabilities"] | ["client", "capabilities"] => get(Route::Capabilities),
        ["v1", "servers"] => get(Route::Directory),
        ["v1", "servers", id, "channels"] => get(Route::ServerChannels(server_id(id)?)),
        ["v1", "servers", id, "members"] => get(Route::ServerMembers(server_id(id)?)),
        ["v1", "servers", id, "settings"] => match *method {
            Method::GET | Method::HEAD => Ok(Route::ServerSettings(server_id(id)?)),
            Method::PUT => Ok(Route::UpdateServerSettings(server_id(id)?)),
            _ => Err(ApiError::method_not_allowed(method, path)),
        },
        _ => Err(ApiError::not_found_route(method, path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(raw: &str) -> ServerId {
        ServerId::parse(raw).unwrap()
    }

    #[test]
    fn known_paths_route_to_their_handlers() {
        assert_eq!(route(&Method::GET, "/healthz"), Ok(Route::Healthz));
        assert_eq!(
            route(&Method::GET, "/client/capabilities"),
            Ok(Route::Capabilities)
        );
        assert_eq!(
            route(&Method::GET, "/v1/client/capabilities"),
            Ok(Route::Capabilities)
        );
        assert_eq!(
            route(&Method::GET, "/v1/servers/srv_harbor/channels"),
            Ok(Route::ServerChannels(sid("srv_harbor")))
        );
        assert_eq!(
            route(&Method::PUT, "/v1/servers/srv_harbor/settings"),
            Ok(Route::UpdateServerSettings(sid("srv_harbor")))
        );
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
            "/v1/profiles:batch2",
        ] {
            let err = route(&Method::GET, path).unwrap_err();
            assert_eq!((err.status.as_u16(), err.code), (404, "not_found"), "{path}");
        }
        let err = route(&Method::POST, "/healthz").unwrap_err();
        assert_eq!((err.status.as_u16(), err.code), (405, "method_not_allowed"));
        let err = route(&Method::DELETE, "/v1/servers/srv_harbor/settings").unwrap_err();
        assert_eq!(err.status.as_u16(), 405);
    }

    #[test]
    fn impossible_server_ids_are_server_not_found() {
        let err = route(&Method::GET, "/v1/servers/bad%20id/channels").unwrap_err();
        assert_eq!((err.status.as_u16(), err.code), (404, "server_not_found"));
    }
}
