//! The joiner's way in: the HTTP join ticket and the signaling WebSocket (both transports
//! use it), and the errors the joiner stops with.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpStream;

use super::flags::Flags;

/// The join-ticket request's timeout (the Go tool's 12 s).
pub const TICKET_TIMEOUT: Duration = Duration::from_secs(12);
/// Without a data message for this long, the joiner leaves.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the joiner stopped with an error (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum JoinerError {
    #[error("cannot read {path}: {reason}")]
    File { path: String, reason: String },
    #[error("cannot run ffmpeg {bin:?} (set --ffmpeg-bin): {reason}")]
    Ffmpeg { bin: String, reason: String },
    #[error("join ticket refused ({status}): {code}: {message}")]
    TicketRefused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("join ticket request failed: {0}")]
    Ticket(String),
    #[error("signaling: {0}")]
    Signaling(String),
    #[error("signaling closed: {0}")]
    Closed(String),
    #[error("{0}")]
    Unsupported(String),
}

/// `bytes` random bytes as lowercase hex.
pub(crate) fn random_hex(bytes: usize) -> String {
    uuid::Uuid::new_v4().simple().to_string()[..bytes * 2].to_owned()
}

/// The join ticket: 200 with a ticket and a signaling URL, or the server's flat error.
pub(crate) async fn ticket(flags: &Flags) -> Result<Value, JoinerError> {
    let url = format!(
        "{}/v1/rtc/channels/{}/join-ticket",
        flags.backend_url, flags.channel_id
    );
    let response = reqwest::Client::builder()
        .timeout(TICKET_TIMEOUT)
        .build()
        .map_err(|e| JoinerError::Ticket(e.to_string()))?
        .post(url)
        .header("X-OpenChat-User-UID", &flags.user_uid)
        .header("X-OpenChat-Device-ID", &flags.device_id)
        .json(&json!({"server_id": flags.server_id}))
        .send()
        .await
        .map_err(|e| JoinerError::Ticket(e.to_string()))?;
    let status = response.status().as_u16();
    let text = response
        .text()
        .await
        .map_err(|e| JoinerError::Ticket(e.to_string()))?;
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status != 200 {
        // The flat envelope (WIRE.md §1.4); the Go tool looked for a nested one.
        let code = body["code"].as_str().unwrap_or("unknown").to_owned();
        let message = body["message"].as_str().map(str::to_owned).unwrap_or(text);
        return Err(JoinerError::TicketRefused {
            status,
            code,
            message,
        });
    }
    let present = |k: &str| body[k].as_str().is_some_and(|v| !v.is_empty());
    if !present("ticket") || !present("signaling_url") {
        return Err(JoinerError::Ticket(
            "the answer has no ticket or signaling_url".into(),
        ));
    }
    Ok(body)
}

/// Opens the signaling WebSocket (`ws://` only).
pub(crate) async fn connect(url: &str) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, JoinerError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| JoinerError::Signaling(format!("bad signaling_url {url:?}")))?;
    if uri.scheme_str() != Some("ws") {
        return Err(JoinerError::Unsupported(format!(
            "signaling_url {url:?}: only ws:// is supported by this build"
        )));
    }
    let host = uri
        .host()
        .ok_or_else(|| JoinerError::Signaling("signaling_url has no host".into()))?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| JoinerError::Signaling(format!("connect {host}:{port}: {e}")))?;
    let (ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .map_err(|e| JoinerError::Signaling(e.to_string()))?;
    Ok(ws)
}
