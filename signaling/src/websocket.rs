//! The server side of a WebSocket handshake on a hyper request, shared by the realtime
//! gateway and the signaling socket.

use std::future::Future;

use http::{Response, StatusCode, header};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::body::{Body, full};
use crate::error::ApiError;

/// A server-side WebSocket over a hyper upgrade.
pub type ServerSocket = WebSocketStream<TokioIo<Upgraded>>;

/// Checks a WebSocket upgrade request and returns its `Sec-WebSocket-Accept` value; marks the
/// connection exempt from the HTTP write-stall bound.
pub fn handshake<B>(request: &mut http::Request<B>) -> Result<String, ApiError> {
    let headers = request.headers();
    let is_upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = headers.get("sec-websocket-key").map(|k| k.as_bytes().to_vec());
    let (true, Some(key)) = (is_upgrade, key) else {
        // 426 with `Upgrade: websocket` (RFC 9110 §15.5.22): the request is fine, the
        // protocol is not.
        let mut err = ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "websocket_required",
            "this endpoint needs a WebSocket upgrade",
        );
        err.upgrade = Some("websocket");
        return Err(err);
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    // From here on the connection is a WebSocket: its own send queues, ping and read
    // deadlines bound it, not the HTTP write-stall bound.
    if let Some(connection) = request.extensions().get::<crate::guard::ConnectionHandle>() {
        connection.exempt();
    }
    Ok(accept)
}

/// Checks the upgrade request and returns the `101 Switching Protocols` answer, plus a future
/// that yields the socket once hyper hands the connection over (`None` if it never does).
/// Inbound messages are limited to `message_bytes_max`.
pub fn accept(
    request: &mut http::Request<crate::body::RequestBody>,
    message_bytes_max: usize,
) -> Result<
    (
        Response<Body>,
        impl Future<Output = Option<ServerSocket>> + Send + 'static,
    ),
    ApiError,
> {
    let accept = handshake(request)?;
    let on_upgrade = hyper::upgrade::on(request);
    let socket = async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let mut config = WebSocketConfig::default();
                config.max_message_size = Some(message_bytes_max);
                config.max_frame_size = Some(message_bytes_max);
                Some(
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                        .await,
                )
            }
            Err(err) => {
                tracing::debug!(error = %err, "websocket upgrade failed");
                None
            }
        }
    };
    let mut response = Response::new(full(bytes::Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, header::HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, header::HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = header::HeaderValue::from_str(&accept) {
        headers.insert("sec-websocket-accept", accept);
    }
    Ok((response, socket))
}
