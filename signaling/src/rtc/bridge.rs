//! Voice across nodes (cluster mode), the signaling relay: the client opens the ticket's
//! `signaling_url`, which may land on any node. When [`super::records`] says the room runs
//! on another node, this node bridges the socket to it: it asks the owner to open a session
//! (`openchat.v1.rtc.open.<owner>`), then passes text frames both ways on
//! `openchat.v1.rtc.session.<id>.in` / `.out` with keepalives. The owner runs the ordinary
//! signaling session over an in-memory WebSocket, so the ticket check (single use, in
//! Postgres), the join and every message follow the one code path; media goes straight to
//! the owner's shards and its own `OPENCHAT_MEDIA_PUBLIC_IP`. If the owner dies or stops
//! answering, the relaying node closes the client's socket with 1012 and the client rejoins
//! with a new ticket (WIRE.md §0 item 7); the next join places the room on a live node.
//! Core NATS carries the frames (ordered per session, not durable): a NATS outage ends
//! relayed calls the same way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Response, StatusCode};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tracing::Instrument;

use super::placement::NODE_HEARTBEAT;
use super::session::{Relay, session};
use crate::body::Body;
use crate::cluster::{Cluster, SUBJECT_VERSION};
use crate::error::ApiError;
use crate::state::AppState;

/// Keepalive on a relayed session, both ways.
pub const RELAY_KEEPALIVE: Duration = Duration::from_secs(5);
/// A relayed session with no frame or keepalive from the other side for this long ends.
pub const RELAY_SILENT_MAX: Duration = Duration::from_secs(20);
/// How long opening a session on the owner may take.
pub const RELAY_OPEN_DEADLINE: Duration = Duration::from_secs(5);
/// The in-memory pipe between a relayed session and its WebSocket, in bytes.
pub const RELAY_PIPE_BYTES: usize = 64 * 1024;
const _: () = assert!(RELAY_KEEPALIVE.as_secs() * 3 <= RELAY_SILENT_MAX.as_secs());

fn open_subject(node: &str) -> String {
    format!("openchat.{SUBJECT_VERSION}.rtc.open.{node}")
}

fn session_subject(session: &str, way: &str) -> String {
    format!("openchat.{SUBJECT_VERSION}.rtc.session.{session}.{way}")
}

/// One relayed WebSocket event on NATS: a text frame, a keepalive, or the close.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Relayed {
    Text(String),
    Keepalive,
    Close(u16, String),
}

impl Relayed {
    fn encode(&self) -> Bytes {
        match self {
            Relayed::Text(text) => {
                let mut out = Vec::with_capacity(text.len() + 1);
                out.push(b'T');
                out.extend_from_slice(text.as_bytes());
                out.into()
            }
            Relayed::Keepalive => Bytes::from_static(b"K"),
            Relayed::Close(code, reason) => {
                let mut out = vec![b'C'];
                out.extend_from_slice(&code.to_be_bytes());
                out.extend_from_slice(reason.as_bytes());
                out.into()
            }
        }
    }

    fn decode(raw: &[u8]) -> Option<Self> {
        let (&tag, rest) = raw.split_first()?;
        match tag {
            b'T' => Some(Relayed::Text(String::from_utf8(rest.to_vec()).ok()?)),
            b'K' => Some(Relayed::Keepalive),
            b'C' if rest.len() >= 2 => {
                let code = u16::from_be_bytes([rest[0], rest[1]]);
                let reason = String::from_utf8_lossy(&rest[2..]).into_owned();
                Some(Relayed::Close(code, reason))
            }
            _ => None,
        }
    }
}

/// Answers the upgrade and starts the session.
pub fn upgrade(
    state: Arc<AppState>,
    mut request: http::Request<crate::body::RequestBody>,
    local: Option<std::net::IpAddr>,
) -> Result<Response<Body>, ApiError> {
    if state.rtc.is_none() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "rtc_unavailable",
            "voice is not enabled",
        ));
    }
    let (response, socket) =
        crate::websocket::accept(&mut request, openchat_core::protocol::SIGNALING_MESSAGE_BYTES_MAX)?;
    let guard = state.lifecycle.socket();
    // One span per signaling session; channel, participant and (tagged) user once joined.
    let span = tracing::info_span!(
        "rtc",
        channel = tracing::field::Empty,
        participant = tracing::field::Empty,
        user = tracing::field::Empty
    );
    tokio::spawn(
        async move {
            let Some(ws) = socket.await else { return };
            let Some(relay) = session(state.clone(), ws, local, guard, false).await else {
                return;
            };
            let Relay {
                owner,
                first,
                mut ws,
                mut guard,
            } = relay;
            if bridge(&state, &owner, first, &mut ws, &mut guard).await.is_err() {
                super::session::refuse_unavailable(&state, &mut ws).await;
            }
        }
        .instrument(span),
    );
    Ok(response)
}

/// Starts the service that opens relayed sessions on this node (cluster mode with voice).
pub fn start(state: Arc<AppState>) {
    let (Some(cluster), Some(_)) = (state.cluster.clone(), state.rtc.as_ref()) else {
        return;
    };
    tokio::spawn(serve_relayed(state, cluster));
}

/// The owner's side: each request opens a session for a socket held by another node.
async fn serve_relayed(state: Arc<AppState>, cluster: Cluster) {
    let client = cluster.client().clone();
    let mut requests = loop {
        match client.subscribe(open_subject(cluster.node_id())).await {
            Ok(subscriber) => break subscriber,
            Err(err) => {
                tracing::warn!(error = %err, "cannot serve relayed voice sessions; retrying");
                tokio::time::sleep(NODE_HEARTBEAT).await;
            }
        }
    };
    while let Some(request) = requests.next().await {
        let Some(reply) = request.reply.clone() else {
            continue;
        };
        let Ok(session) = String::from_utf8(request.payload.to_vec()) else {
            continue;
        };
        if session.is_empty()
            || session.len() > 64
            || !session.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            continue;
        }
        let state = state.clone();
        let client = client.clone();
        tokio::spawn(async move {
            // Listen before answering, so the first frame from the other node is not lost.
            let Ok(inbound) = client.subscribe(session_subject(&session, "in")).await else {
                return;
            };
            if client.publish(reply, Bytes::from_static(b"ok")).await.is_err() {
                return;
            }
            owner_side(state, client, session, inbound).await;
        });
    }
}

/// Runs the ordinary signaling session over an in-memory WebSocket whose other end is
/// carried over NATS to the node holding the client's socket.
async fn owner_side(
    state: Arc<AppState>,
    client: async_nats::Client,
    session: String,
    mut inbound: async_nats::Subscriber,
) {
    let (near, far) = tokio::io::duplex(RELAY_PIPE_BYTES);
    let server_ws = WebSocketStream::from_raw_socket(near, Role::Server, None).await;
    let mut pipe = WebSocketStream::from_raw_socket(far, Role::Client, None).await;
    // Held to the end: the shutdown waits until the close below reached NATS.
    let _held = state.lifecycle.socket();
    let guard = state.lifecycle.socket();
    // No signaling address: media is advertised on this node's own public address.
    let running = tokio::spawn(super::session::relayed_session(state.clone(), server_ws, guard));
    let out = session_subject(&session, "out");
    let mut keepalive = tokio::time::interval(RELAY_KEEPALIVE);
    let mut heard = Instant::now();
    let close = loop {
        tokio::select! {
            message = inbound.next() => {
                let Some(message) = message else { break None };
                heard = Instant::now();
                match Relayed::decode(&message.payload) {
                    Some(Relayed::Text(text)) => {
                        if pipe.send(Message::text(text)).await.is_err() { break None }
                    }
                    Some(Relayed::Close(..)) => {
                        let _ = pipe.close(None).await;
                        break None;
                    }
                    Some(Relayed::Keepalive) | None => {}
                }
            }
            frame = pipe.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    let _ = client.publish(out.clone(), Relayed::Text(text.to_string()).encode()).await;
                }
                Some(Ok(Message::Close(frame))) => {
                    break Some(frame.map_or((1000, String::new()), |f| (u16::from(f.code), f.reason.to_string())));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break Some((1000, String::new())),
            },
            _ = keepalive.tick() => {
                if heard.elapsed() > RELAY_SILENT_MAX {
                    tracing::info!(session, "the relaying node went silent; leaving");
                    let _ = pipe.close(None).await;
                    break None;
                }
                let _ = client.publish(out.clone(), Relayed::Keepalive.encode()).await;
            }
        }
    };
    if let Some((code, reason)) = close {
        let _ = client.publish(out, Relayed::Close(code, reason).encode()).await;
        let _ = tokio::time::timeout(RELAY_OPEN_DEADLINE, client.flush()).await;
    }
    drop(pipe);
    let _ = running.await;
}

/// The relaying node's side: `first` (the client's `rtc.join`) and everything after it
/// go to `owner`, and the owner's frames come back, until either side closes.
pub async fn bridge<S>(
    state: &AppState,
    owner: &str,
    first: Utf8Bytes,
    ws: &mut WebSocketStream<S>,
    guard: &mut crate::lifecycle::SocketGuard,
) -> Result<(), ()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (Some(cluster), Some(rtc)) = (&state.cluster, &state.rtc) else {
        return Err(());
    };
    let client = cluster.client();
    let session = uuid::Uuid::new_v4().to_string();
    let mut outbound = client
        .subscribe(session_subject(&session, "out"))
        .await
        .map_err(drop)?;
    let opened = tokio::time::timeout(
        RELAY_OPEN_DEADLINE,
        client.request(open_subject(owner), Bytes::from(session.clone())),
    )
    .await;
    if !matches!(opened, Ok(Ok(_))) {
        return Err(());
    }
    let inbound = session_subject(&session, "in");
    let send_in = |relayed: Relayed| client.publish(inbound.clone(), relayed.encode());
    send_in(Relayed::Text(first.to_string())).await.map_err(drop)?;
    let mut keepalive = tokio::time::interval(RELAY_KEEPALIVE);
    let mut heard = Instant::now();
    let mut ping = tokio::time::interval(super::session::PING_INTERVAL);
    ping.tick().await;
    let mut last_client = Instant::now();
    let close: Option<(CloseCode, String)> = loop {
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    last_client = Instant::now();
                    let _ = send_in(Relayed::Text(text.to_string())).await;
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    let _ = send_in(Relayed::Close(1000, String::new())).await;
                    break None;
                }
                Some(Ok(_)) => last_client = Instant::now(),
            },
            message = outbound.next() => {
                let Some(message) = message else { break Some((CloseCode::Restart, "moved".into())) };
                heard = Instant::now();
                match Relayed::decode(&message.payload) {
                    Some(Relayed::Text(text)) => {
                        if ws.send(Message::text(text)).await.is_err() {
                            let _ = send_in(Relayed::Close(1000, String::new())).await;
                            break None;
                        }
                    }
                    Some(Relayed::Close(code, reason)) => break Some((CloseCode::from(code), reason)),
                    Some(Relayed::Keepalive) | None => {}
                }
            }
            _ = keepalive.tick() => {
                let owner_gone = !rtc.registry().is_live(owner, Instant::now());
                if heard.elapsed() > RELAY_SILENT_MAX || owner_gone {
                    tracing::info!(owner, "the room's node is gone; the client rejoins");
                    let _ = send_in(Relayed::Close(1000, String::new())).await;
                    break Some((CloseCode::Restart, "voice node restarting".into()));
                }
                if last_client.elapsed() > super::session::IDLE_DEADLINE {
                    let _ = send_in(Relayed::Close(1000, String::new())).await;
                    break None;
                }
                let _ = send_in(Relayed::Keepalive).await;
            }
            _ = ping.tick() => {
                if ws.send(Message::Ping(Bytes::new())).await.is_err() {
                    let _ = send_in(Relayed::Close(1000, String::new())).await;
                    break None;
                }
            }
            () = guard.closing() => {
                let _ = send_in(Relayed::Close(1000, String::new())).await;
                break Some((CloseCode::Away, "server shutting down".into()));
            }
        }
    };
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), ws.send(Message::Close(Some(frame)))).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_frames_survive_encoding_and_garbage_is_refused() {
        for relayed in [
            Relayed::Text("{\"type\":\"rtc.join\"}".into()),
            Relayed::Keepalive,
            Relayed::Close(1012, "voice node restarting".into()),
        ] {
            assert_eq!(Relayed::decode(&relayed.encode()), Some(relayed));
        }
        assert_eq!(Relayed::decode(b""), None);
        assert_eq!(Relayed::decode(b"C\x03"), None);
        assert_eq!(Relayed::decode(b"T\xff"), None);
        assert_eq!(Relayed::decode(b"X"), None);
    }
}
