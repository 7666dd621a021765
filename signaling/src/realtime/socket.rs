//! One realtime WebSocket: the upgrade, identity and the first-frame session, the read and
//! write loop with its deadlines, and the inbound frames (subscribe, typing, presence).

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::Response;
use openchat_core::ServerId;
use openchat_core::protocol::{ChatMessage, WireError, parse_chat};
use openchat_storage::queries;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use super::hub::*;
use crate::body::Body;
use crate::error::ApiError;
use crate::routes::form_pairs;
use crate::state::AppState;
use tracing::Instrument;

/// Largest inbound frame.
pub const INBOUND_MESSAGE_BYTES_MAX: usize = 64 * 1024;
pub const PING_INTERVAL: Duration = Duration::from_secs(25);
/// How long a kicked socket gets to take its close frame.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// A socket that sends nothing (not even a pong) for this long is closed.
pub const READ_DEADLINE: Duration = Duration::from_secs(60);

const _: () = assert!(PING_INTERVAL.as_secs() * 2 <= READ_DEADLINE.as_secs());

/// Connection query (WIRE.md §4): `server_id`, `user_uid`, `device_id`, and `resume_from`.
#[derive(Debug, Default, Deserialize)]
struct ConnectQuery {
    server_id: Option<String>,
    user_uid: Option<String>,
    device_id: Option<String>,
    resume_from: Option<String>,
}

/// Answers the upgrade and starts the session.
pub fn upgrade(
    state: Arc<AppState>,
    mut request: http::Request<crate::body::RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let (response, socket) = crate::websocket::accept(&mut request, INBOUND_MESSAGE_BYTES_MAX)?;
    let query: ConnectQuery = serde_urlencoded_query(request.uri().query().unwrap_or(""));
    if state.config.session_auth {
        // Session mode: identity comes from the first frame, never from the URL or headers.
        let server = query
            .server_id
            .as_deref()
            .and_then(|raw| ServerId::parse(raw).ok());
        let resume_from = query.resume_from.clone();
        let mut guard = state.lifecycle.socket();
        let span = tracing::info_span!(
            "realtime",
            socket = tracing::field::Empty,
            user = tracing::field::Empty
        );
        tokio::spawn(
            async move {
                let Some(mut ws) = socket.await else { return };
                let Some(authed) = first_frame_session(&state, &mut ws).await else {
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
                    return;
                };
                let member = Member {
                    client_id: uuid::Uuid::new_v4().to_string(),
                    user_uid: authed.user_uid.to_string(),
                    device_id: authed.device_id.clone(),
                };
                let registered =
                    state
                        .hub
                        .register(server, member.clone(), authed.user_uid, resume_from.as_deref());
                let Ok(Registered { id, rx, kick, resync }) = registered else {
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
                    return;
                };
                let span = tracing::Span::current();
                span.record("socket", id);
                span.record("user", crate::redact::tag(&member.user_uid).as_str());
                let _ = ws
                    .send(Message::Text(frame(
                        "chat.authenticated",
                        None,
                        &json!({"user_uid": member.user_uid, "device_id": member.device_id}),
                        None,
                    )))
                    .await;
                if let Some(reason) = resync {
                    state.hub.reply(
                        id,
                        frame(
                            "chat.resync_required",
                            None,
                            &json!({"reason": reason.as_str()}),
                            None,
                        ),
                    );
                }
                session(state.clone(), id, member, ws, rx, kick, &mut guard).await;
                leave(&state, id);
            }
            .instrument(span),
        );
        return Ok(response);
    }
    // The same derivation as every HTTP request; the URL's values stand in for absent
    // headers. The realtime socket is a public route: identity is never required.
    let who = crate::identity::identity_from(
        request.headers(),
        crate::identity::QueryIdentity {
            user_uid: query.user_uid.as_deref(),
            device_id: query.device_id.as_deref(),
        },
        false,
    )?;
    let (user_uid, device_id) = (who.user_uid, who.device_id);
    let server = query
        .server_id
        .as_deref()
        .and_then(|raw| ServerId::parse(raw).ok());
    let member = Member {
        client_id: uuid::Uuid::new_v4().to_string(),
        user_uid: user_uid.to_string(),
        device_id,
    };
    let Registered { id, rx, kick, resync } =
        state
            .hub
            .register(server, member.clone(), user_uid, query.resume_from.as_deref())?;

    let mut guard = state.lifecycle.socket();
    let span = tracing::info_span!(
        "realtime",
        socket = id,
        user = %crate::redact::tag(&member.user_uid)
    );
    tokio::spawn(
        async move {
            if let Some(ws) = socket.await {
                if let Some(reason) = resync {
                    let payload = json!({"reason": reason.as_str()});
                    state
                        .hub
                        .reply(id, frame("chat.resync_required", None, &payload, None));
                }
                session(state.clone(), id, member, ws, rx, kick, &mut guard).await;
            }
            // Cleanup runs however the session ended.
            leave(&state, id);
        }
        .instrument(span),
    );
    Ok(response)
}

/// How long a session-mode socket has to send `chat.auth`.
pub const AUTH_FRAME_DEADLINE: Duration = Duration::from_secs(10);

/// Reads the first frame of a session-mode socket: `{"type":"chat.auth","payload":
/// {"session_token"}}` naming a live, fully linked session. Anything else is answered with
/// `chat.error session_invalid` (`None`: close the socket).
async fn first_frame_session<S>(
    state: &AppState,
    ws: &mut WebSocketStream<S>,
) -> Option<openchat_storage::e2ee::SessionRecord>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + AUTH_FRAME_DEADLINE;
    let text = loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => break Some(text),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            _ => break None,
        }
    };
    let token = text.as_ref().and_then(|text| {
        let value: Value = serde_json::from_str(text.as_str()).ok()?;
        (value["type"] == "chat.auth")
            .then(|| value["payload"]["session_token"].as_str().map(str::to_owned))
            .flatten()
    });
    let session = match token {
        Some(token) => crate::state::lookup_session(state, &token, crate::clock::unix_now())
            .await
            .ok()
            .flatten()
            .filter(|session| session.scope == "full"),
        None => None,
    };
    if session.is_none() {
        let payload = error_payload(
            "session_invalid",
            "send chat.auth with a valid session token first",
        );
        let _ = ws
            .send(Message::Text(frame("chat.error", None, &payload, None)))
            .await;
    }
    session
}

/// Parses a query string leniently (unknown keys ignored; a bad one means "absent").
fn serde_urlencoded_query(raw: &str) -> ConnectQuery {
    let mut query = ConnectQuery::default();
    for (key, value) in form_pairs(raw) {
        match key.as_str() {
            "server_id" => query.server_id = Some(value),
            "user_uid" => query.user_uid = Some(value),
            "device_id" => query.device_id = Some(value),
            "resume_from" => query.resume_from = Some(value),
            _ => {}
        }
    }
    query
}

fn leave(state: &AppState, id: u64) {
    if let Some(socket) = state.hub.unregister(id) {
        for channel in socket.view.subscriptions {
            let payload = json!({"channel_id": channel, "member": socket.member});
            state.hub.publish(
                "chat.presence.left",
                Audience::Subscribers {
                    channel,
                    except: Some(id),
                },
                &payload,
                true,
            );
        }
    }
}

fn error_payload(code: &str, message: &str) -> Value {
    json!({"code": code, "message": message, "retryable": false})
}

/// Drives one socket until it closes, goes silent past [`READ_DEADLINE`], or is kicked
/// for a full send queue. Generic over the transport so tests can run it over an in-memory
/// pipe under a paused clock.
async fn session<S>(
    state: Arc<AppState>,
    id: u64,
    member: Member,
    ws: WebSocketStream<S>,
    mut rx: mpsc::Receiver<Utf8Bytes>,
    kick: Arc<Notify>,
    guard: &mut crate::lifecycle::SocketGuard,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let writer = async {
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.tick().await;
        loop {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(text) => if sink.send(Message::Text(text)).await.is_err() { break },
                    None => break,
                },
                _ = ping.tick() => if sink.send(Message::Ping(bytes::Bytes::new())).await.is_err() { break },
            }
        }
    };
    let reader = async {
        loop {
            let next = match tokio::time::timeout(READ_DEADLINE, stream.next()).await {
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(WsError::Capacity(err)))) => {
                    tracing::debug!(socket = id, error = %err, "realtime frame too large");
                    return SessionEnd::TooBig;
                }
                Ok(Some(Err(err))) => {
                    tracing::debug!(socket = id, error = %err, "realtime read failed");
                    return SessionEnd::Ended;
                }
                Ok(None) => return SessionEnd::Ended,
                Err(_) => {
                    tracing::debug!(socket = id, "realtime read deadline passed");
                    return SessionEnd::Ended;
                }
            };
            match next {
                Message::Text(text) => handle_inbound(&state, id, &member, text.as_str()).await,
                Message::Close(_) => return SessionEnd::Ended,
                // Pings are answered by tungstenite; pongs and binary frames only count as life.
                _ => {}
            }
        }
    };
    let end = tokio::select! {
        () = writer => SessionEnd::Ended,
        end = reader => end,
        () = kick.notified() => SessionEnd::Kicked,
        () = guard.closing() => SessionEnd::GoingAway,
    };
    let close = match end {
        SessionEnd::Ended => None,
        SessionEnd::Kicked => Some((CloseCode::Policy, "send queue full")),
        SessionEnd::TooBig => Some((CloseCode::Size, "message too big")),
        SessionEnd::GoingAway => Some((CloseCode::Away, "server shutting down")),
    };
    if let Some((code, reason)) = close {
        // Best effort: a consumer too slow for its queue may be too slow for this too.
        let close = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(Some(close)))).await;
    }
}

/// Why a realtime session ended, and so which close frame (if any) the client gets.
enum SessionEnd {
    /// The client closed, went silent, or the transport failed: nothing more to send.
    Ended,
    /// Its send queue was full: 1008.
    Kicked,
    /// A frame over the inbound limit: 1009.
    TooBig,
    /// The server is shutting down: 1001.
    GoingAway,
}

async fn handle_inbound(state: &Arc<AppState>, id: u64, member: &Member, text: &str) {
    let hub = &state.hub;
    let reply_error = |request_id: Option<&str>, code: &str, message: &str| {
        hub.reply(
            id,
            frame("chat.error", request_id, &error_payload(code, message), None),
        );
    };
    let envelope = match parse_chat(text.as_bytes()) {
        Ok(envelope) => envelope,
        Err(WireError::UnknownType(kind)) => {
            return reply_error(
                None,
                "chat_unknown_event",
                &format!("unknown event type {kind:?}"),
            );
        }
        Err(WireError::BadField {
            kind: "chat.subscribe",
            ..
        }) => {
            return reply_error(None, "chat_channel_required", "channel_id is required");
        }
        Err(err) => return reply_error(None, "chat_invalid_message", &err.to_string()),
    };
    let request_id = envelope.request_id.as_deref();
    match envelope.message {
        ChatMessage::Subscribe { channel: channel_id } => {
            if let Err(err) = state
                .run(queries::Channel {
                    channel: channel_id.clone(),
                })
                .await
            {
                return reply_error(request_id, err.code, &err.message);
            }
            match hub.subscribe(id, &channel_id) {
                Ok((members, new)) => {
                    hub.reply(
                        id,
                        frame(
                            "chat.subscribed",
                            request_id,
                            &json!({"channel_id": channel_id}),
                            None,
                        ),
                    );
                    let snapshot = json!({"channel_id": channel_id, "members": members});
                    hub.reply(id, frame("chat.presence.snapshot", None, &snapshot, None));
                    if new {
                        let payload = json!({"channel_id": channel_id, "member": member});
                        let audience = Audience::Subscribers {
                            channel: channel_id,
                            except: Some(id),
                        };
                        hub.publish("chat.presence.joined", audience, &payload, true);
                    }
                }
                Err(code) => reply_error(request_id, code, "cannot subscribe"),
            }
        }
        ChatMessage::Unsubscribe { channel: None } => {}
        ChatMessage::Unsubscribe {
            channel: Some(channel_id),
        } => {
            let was = hub.unsubscribe(id, &channel_id);
            hub.reply(
                id,
                frame(
                    "chat.unsubscribed",
                    request_id,
                    &json!({"channel_id": channel_id}),
                    None,
                ),
            );
            if was {
                let payload = json!({"channel_id": channel_id, "member": member});
                hub.publish(
                    "chat.presence.left",
                    Audience::Subscribers {
                        channel: channel_id,
                        except: Some(id),
                    },
                    &payload,
                    true,
                );
            }
        }
        ChatMessage::Typing { channel, is_typing } => {
            let Some(channel_id) = channel.filter(|c| hub.is_subscribed(id, c)) else {
                return reply_error(request_id, "chat_not_subscribed", "subscribe first");
            };
            let payload = json!({"channel_id": channel_id, "member": member, "is_typing": is_typing});
            hub.publish(
                "chat.typing.updated",
                Audience::Subscribers {
                    channel: channel_id,
                    except: Some(id),
                },
                &payload,
                true,
            );
        }
        ChatMessage::Ping => {
            let ts = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
            hub.reply(id, frame("chat.pong", request_id, &json!({"ts": ts}), None));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use openchat_core::{ChannelId, UserUid};
    use tokio_tungstenite::tungstenite::protocol::Role;

    fn view(id: u64, server: Option<&str>, user: &str, subs: &[&str]) -> SocketView {
        SocketView {
            id,
            server: server.map(|s| ServerId::parse(s).unwrap()),
            user_uid: UserUid::parse(user).unwrap(),
            device_id: format!("dev_{user}"),
            subscriptions: subs.iter().map(|c| ChannelId::parse(c).unwrap()).collect(),
        }
    }

    #[test]
    fn e2ee_messages_reach_only_members_of_their_epoch() {
        let audience = Audience::ChannelMembers {
            channel: ChannelId::parse("ch_a").unwrap(),
            server: ServerId::parse("srv_1").unwrap(),
            users: Arc::from(vec![UserUid::parse("uid_in").unwrap()]),
        };
        assert!(visible(&audience, &view(1, None, "uid_in", &["ch_a"])));
        assert!(visible(&audience, &view(2, Some("srv_1"), "uid_in", &[])));
        assert!(
            !visible(&audience, &view(3, None, "uid_out", &["ch_a"])),
            "subscribed but no member"
        );
        assert!(!visible(&audience, &view(4, Some("srv_2"), "uid_in", &[])));
        let device = Audience::Device {
            user: UserUid::parse("uid_in").unwrap(),
            device: "dev_uid_in".into(),
        };
        assert!(visible(&device, &view(5, None, "uid_in", &[])));
        assert!(!visible(&device, &view(6, None, "uid_out", &[])));
    }

    #[test]
    fn messages_reach_subscribers_and_sockets_of_the_same_server_only() {
        let audience = Audience::ChannelAndServer {
            channel: ChannelId::parse("ch_a").unwrap(),
            server: ServerId::parse("srv_1").unwrap(),
        };
        assert!(visible(&audience, &view(1, None, "uid_x", &["ch_a"])));
        assert!(visible(&audience, &view(2, Some("srv_1"), "uid_x", &[])));
        assert!(!visible(&audience, &view(3, Some("srv_2"), "uid_x", &["ch_b"])));
    }

    #[test]
    fn typing_excludes_the_sender() {
        let audience = Audience::Subscribers {
            channel: ChannelId::parse("ch_a").unwrap(),
            except: Some(1),
        };
        assert!(!visible(&audience, &view(1, None, "uid_x", &["ch_a"])));
        assert!(visible(&audience, &view(2, None, "uid_y", &["ch_a"])));
        assert!(!visible(&audience, &view(3, Some("srv_1"), "uid_z", &[])));
    }

    fn member() -> Member {
        Member {
            client_id: "c".into(),
            user_uid: "uid_r".into(),
            device_id: "d".into(),
        }
    }

    fn drain(rx: &mut mpsc::Receiver<Utf8Bytes>) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok(frame) = rx.try_recv() {
            out.push(serde_json::from_str(frame.as_str()).unwrap());
        }
        out
    }

    #[test]
    fn resume_replays_exactly_the_missed_visible_events() {
        let hub = Hub::new();
        let server = ServerId::parse("srv_1").unwrap();
        let uid = UserUid::parse("uid_r").unwrap();
        let Registered {
            id: first, mut rx, ..
        } = hub
            .register(Some(server.clone()), member(), uid.clone(), None)
            .unwrap();
        hub.publish("e.one", Audience::Server(server.clone()), &json!({"n": 1}), false);
        let seen = drain(&mut rx);
        let last = seen[0]["event_id"].as_str().unwrap().to_owned();
        hub.unregister(first);
        hub.publish("e.two", Audience::Server(server.clone()), &json!({"n": 2}), false);
        hub.publish(
            "e.other",
            Audience::Server(ServerId::parse("srv_2").unwrap()),
            &json!({"n": 0}),
            false,
        );
        hub.publish(
            "e.typing",
            Audience::Server(server.clone()),
            &json!({"n": 9}),
            true,
        );
        hub.publish(
            "e.three",
            Audience::Server(server.clone()),
            &json!({"n": 3}),
            false,
        );
        let Registered { mut rx, resync, .. } = hub
            .register(Some(server.clone()), member(), uid.clone(), Some(&last))
            .unwrap();
        assert_eq!(resync, None);
        let replayed: Vec<i64> = drain(&mut rx)
            .iter()
            .map(|e| e["payload"]["n"].as_i64().unwrap())
            .collect();
        assert_eq!(replayed, [2, 3]);
        let Registered { resync, .. } = hub
            .register(Some(server.clone()), member(), uid.clone(), Some("nope:1"))
            .unwrap();
        assert_eq!(resync, Some(ResyncReason::UnknownEventId));
    }

    #[test]
    fn a_full_send_queue_disconnects_the_socket() {
        let hub = Hub::new();
        let server = ServerId::parse("srv_1").unwrap();
        let Registered { rx: _rx, kick, .. } = hub
            .register(
                Some(server.clone()),
                member(),
                UserUid::parse("uid_r").unwrap(),
                None,
            )
            .unwrap();
        for n in 0..=SEND_QUEUE_MAX {
            hub.publish("e", Audience::Server(server.clone()), &json!({"n": n}), true);
        }
        assert_eq!(hub.sockets(), 0);
        // The kick was signalled (a stored permit completes at once).
        let notified = kick.notified();
        futures_util::pin_mut!(notified);
        assert!(futures_util::FutureExt::now_or_never(notified).is_some());
    }

    /// Shared state over a fresh SQLite store, for session tests.
    pub(crate) fn test_state() -> (tempfile::TempDir, Arc<AppState>) {
        let dir = tempfile::tempdir().unwrap();
        let config = openchat_storage::StoreConfig::Sqlite {
            data_dir: dir.path().join("data"),
        };
        let (storage, thread) = openchat_storage::start(config).unwrap();
        std::mem::forget(thread);
        let front = crate::state::FrontConfig {
            public_base_url: "http://localhost".into(),
            production: false,
            session_auth: false,
            limits: crate::state::Limits {
                max_message_bytes: 1000,
                max_upload_bytes: 1000,
                rate_limit_per_minute: 100,
                max_call_participants: 10,
            },
            build: crate::state::BuildInfo {
                version: "t".into(),
                commit: "t".into(),
                time: "t".into(),
            },
            http: crate::guard::HttpBounds::default(),
            e2ee_self_join: false,
        };
        let labels = crate::metrics::BuildLabels {
            version: "t".into(),
            commit: "t".into(),
            store: "sqlite",
        };
        let blobs = crate::blobs::BlobStore::open(dir.path()).unwrap();
        let state = AppState::new(front, storage, crate::metrics::Metrics::new(labels), blobs);
        (dir, Arc::new(state))
    }

    /// A registered socket whose session runs over an in-memory pipe; returns the client end.
    async fn piped_session(
        state: &Arc<AppState>,
    ) -> (
        tokio::task::JoinHandle<()>,
        WebSocketStream<tokio::io::DuplexStream>,
    ) {
        let (client_io, server_io) = tokio::io::duplex(16 * 1024);
        let server_ws = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
        let client_ws = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let server = ServerId::parse("srv_1").unwrap();
        let Registered { id, rx, kick, .. } = state
            .hub
            .register(Some(server), member(), UserUid::parse("uid_r").unwrap(), None)
            .unwrap();
        let mut guard = state.lifecycle.socket();
        let state = state.clone();
        let task = tokio::spawn(async move {
            session(state, id, member(), server_ws, rx, kick, &mut guard).await;
        });
        (task, client_ws)
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_socket_is_closed_at_the_read_deadline_not_before() {
        let (_dir, state) = test_state();
        let (mut task, _client) = piped_session(&state).await;
        // The client never answers the server's pings: virtual time runs to the deadline.
        let early = READ_DEADLINE - Duration::from_secs(1);
        assert!(
            tokio::time::timeout(early, &mut task).await.is_err(),
            "closed before the deadline"
        );
        assert!(
            tokio::time::timeout(Duration::from_secs(2), &mut task)
                .await
                .is_ok(),
            "still open after it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_socket_that_does_not_read_is_disconnected_when_its_queue_fills() {
        let (_dir, state) = test_state();
        let (mut task, _client) = piped_session(&state).await;
        let server = ServerId::parse("srv_1").unwrap();
        let big = json!({"padding": "x".repeat(4096)});
        // The pipe holds 16 KiB, the queue 256 frames: far fewer than this many 4 KiB events.
        for _ in 0..(SEND_QUEUE_MAX + 16) {
            state
                .hub
                .publish("e", Audience::Server(server.clone()), &big, true);
            tokio::task::yield_now().await;
        }
        assert_eq!(state.hub.sockets(), 0, "the slow socket was dropped from the hub");
        assert!(
            tokio::time::timeout(CLOSE_TIMEOUT * 2, &mut task).await.is_ok(),
            "its session ended"
        );
    }

    #[test]
    fn query_strings_are_percent_decoded() {
        let pairs = form_pairs("server_id=srv_1&user_uid=uid%5F1&x=a+b");
        assert_eq!(pairs[1], ("user_uid".into(), "uid_1".into()));
        assert_eq!(pairs[2].1, "a b");
    }
}
