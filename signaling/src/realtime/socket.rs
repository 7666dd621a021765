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
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::hub::*;
use super::presence::NoteBody;
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
pub async fn upgrade(
    state: Arc<AppState>,
    mut request: http::Request<crate::body::RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let (response, socket) = crate::websocket::accept(&mut request, INBOUND_MESSAGE_BYTES_MAX)?;
    let query: ConnectQuery = serde_urlencoded_query(request.uri().query().unwrap_or(""));
    let server = query
        .server_id
        .as_deref()
        .and_then(|raw| ServerId::parse(raw).ok());
    if state.config.session_auth {
        // Session mode: identity comes from the first frame, never from the URL or headers.
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
                let key = DeviceKey {
                    server,
                    user: authed.user_uid,
                    device: authed.device_id,
                };
                let Ok(registered) =
                    register(&state, key.clone(), member.clone(), query.resume_from.as_deref()).await
                else {
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
                    return;
                };
                let span = tracing::Span::current();
                span.record("socket", registered.id);
                span.record("user", crate::redact::tag(&member.user_uid).as_str());
                let _ = ws
                    .send(Message::Text(frame(
                        "chat.authenticated",
                        None,
                        &json!({"user_uid": member.user_uid, "device_id": member.device_id}),
                        None,
                    )))
                    .await;
                run(state, key, member, registered, ws, &mut guard).await;
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
    let member = Member {
        client_id: uuid::Uuid::new_v4().to_string(),
        user_uid: who.user_uid.to_string(),
        device_id: who.device_id.clone(),
    };
    let key = DeviceKey {
        server,
        user: who.user_uid,
        device: who.device_id,
    };
    let registered = register(&state, key.clone(), member.clone(), query.resume_from.as_deref()).await?;
    let mut guard = state.lifecycle.socket();
    let span = tracing::info_span!(
        "realtime",
        socket = registered.id,
        user = %crate::redact::tag(&member.user_uid)
    );
    tokio::spawn(
        async move {
            match socket.await {
                Some(ws) => run(state, key, member, registered, ws, &mut guard).await,
                // Cleanup runs however the upgrade ended.
                None => leave(&state, registered.id, &key, None).await,
            }
        }
        .instrument(span),
    );
    Ok(response)
}

/// Registers a socket with the hub, asking for what it named (`resume_from`) or, in
/// cluster mode, for what the device's last socket on any node missed; records the start.
async fn register(
    state: &AppState,
    key: DeviceKey,
    member: Member,
    resume_from: Option<&str>,
) -> Result<Registered, ApiError> {
    let tag = state.hub.tag();
    let resume = match (resume_from, &state.cluster) {
        (Some(from), _) => Resume::From(from),
        (None, Some(cluster)) => match super::redelivery::last_seen(cluster, &key, &tag).await {
            Some(seq) => Resume::Missed(seq),
            None => Resume::Fresh,
        },
        (None, None) => Resume::Fresh,
    };
    let registered = state.hub.register(
        key.server.clone(),
        member,
        key.user.clone(),
        resume,
        crate::clock::unix_now(),
    )?;
    if let Some(cluster) = &state.cluster {
        let start = registered.progress.confirmed();
        super::redelivery::remember(cluster, &key, &tag, start, true).await;
    }
    Ok(registered)
}

/// Runs a registered socket's session, then its cleanup.
async fn run<S>(
    state: Arc<AppState>,
    key: DeviceKey,
    member: Member,
    registered: Registered,
    ws: WebSocketStream<S>,
    guard: &mut crate::lifecycle::SocketGuard,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Registered {
        id,
        rx,
        kick,
        progress,
        resync,
    } = registered;
    if let Some(reason) = resync {
        let payload = json!({"reason": reason.as_str()});
        state
            .hub
            .reply(id, frame("chat.resync_required", None, &payload, None));
    }
    let reached = session(state.clone(), id, &key, member, ws, rx, kick, &progress, guard).await;
    leave(&state, id, &key, Some(reached)).await;
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

/// Unregisters a socket: the others subscribed with it see it go, and how far it got
/// (`reached`, from its session, which remembered it locally already) is remembered for
/// the device's next socket.
async fn leave(state: &AppState, id: u64, key: &DeviceKey, reached: Option<u64>) {
    let Some(socket) = state.hub.unregister(id) else {
        return;
    };
    for channel in socket.view.subscriptions {
        let payload = json!({"channel_id": channel, "member": socket.member});
        state.hub.publish(
            "chat.presence.left",
            Audience::Subscribers {
                channel: channel.clone(),
                except: Some(id),
            },
            &payload,
        );
        let member = socket.member.clone();
        super::presence::announce(state, NoteBody::Left { channel, member }).await;
    }
    let reached = match reached {
        Some(reached) => reached,
        None => {
            let reached = socket.progress.confirmed();
            let now = crate::clock::unix_now();
            state.hub.record_departure(key.clone(), reached, now);
            reached
        }
    };
    if let Some(cluster) = &state.cluster {
        let tag = state.hub.tag();
        super::redelivery::remember(cluster, key, &tag, reached, false).await;
    }
}

fn error_payload(code: &str, message: &str) -> Value {
    json!({"code": code, "message": message, "retryable": false})
}

/// Drives one socket until it closes, goes silent past [`READ_DEADLINE`], or is kicked
/// for a full send queue. Generic over the transport so tests can run it over an in-memory
/// pipe under a paused clock.
#[allow(clippy::too_many_arguments)]
async fn session<S>(
    state: Arc<AppState>,
    id: u64,
    key: &DeviceKey,
    member: Member,
    ws: WebSocketStream<S>,
    mut rx: mpsc::Receiver<Outbound>,
    kick: Arc<Notify>,
    progress: &Progress,
    guard: &mut crate::lifecycle::SocketGuard,
) -> u64
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let hub = &state.hub;
    let writer = async {
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.tick().await;
        loop {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(out) => {
                        if sink.send(Message::Text(out.frame)).await.is_err() { break }
                        progress.wrote(out.seq);
                    }
                    None => break,
                },
                _ = ping.tick() => {
                    // The ping carries the floor; its pong proves the client had it all.
                    let published = hub.published();
                    let floor = progress.floor(published, rx.is_empty());
                    let payload = bytes::Bytes::copy_from_slice(&floor.to_be_bytes());
                    if sink.send(Message::Ping(payload)).await.is_err() { break }
                }
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
                Message::Close(_) => return SessionEnd::ClientClosed,
                Message::Pong(payload) => {
                    if let Ok(floor) = <[u8; 8]>::try_from(payload.as_ref()) {
                        progress.confirm(u64::from_be_bytes(floor), hub.published());
                    }
                }
                // Pings are answered by tungstenite; binary frames only count as life.
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
    // How far the client got: after its own close handshake, everything written reached
    // it; otherwise only what a pong confirmed.
    let reached = match end {
        SessionEnd::ClientClosed => {
            let published = hub.published();
            progress.floor(published, rx.is_empty())
        }
        _ => progress.confirmed(),
    };
    // Recorded before the transport closes, so a client that reconnects at once finds it.
    hub.record_departure(key.clone(), reached, crate::clock::unix_now());
    let close = match end {
        SessionEnd::Ended | SessionEnd::ClientClosed => None,
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
    reached
}

/// Why a realtime session ended, and so which close frame (if any) the client gets.
enum SessionEnd {
    /// The client went silent or the transport failed: nothing more to send.
    Ended,
    /// The client sent its close frame.
    ClientClosed,
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
                            channel: channel_id.clone(),
                            except: Some(id),
                        };
                        hub.publish("chat.presence.joined", audience, &payload);
                        let note = NoteBody::Joined {
                            channel: channel_id,
                            member: member.clone(),
                        };
                        super::presence::announce(state, note).await;
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
                        channel: channel_id.clone(),
                        except: Some(id),
                    },
                    &payload,
                );
                let note = NoteBody::Left {
                    channel: channel_id,
                    member: member.clone(),
                };
                super::presence::announce(state, note).await;
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
                    channel: channel_id.clone(),
                    except: Some(id),
                },
                &payload,
            );
            let note = NoteBody::Typing {
                channel: channel_id,
                member: member.clone(),
                is_typing,
            };
            super::presence::announce(state, note).await;
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
    use openchat_core::{ChannelId, UnixSeconds, UserUid};
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

    fn drain(rx: &mut mpsc::Receiver<Outbound>) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok(next) = rx.try_recv() {
            out.push(serde_json::from_str(next.frame.as_str()).unwrap());
        }
        out
    }

    fn numbers(frames: &[Value]) -> Vec<i64> {
        frames
            .iter()
            .map(|e| e["payload"]["n"].as_i64().unwrap())
            .collect()
    }

    const NOW: UnixSeconds = 1_800_000_000;

    #[test]
    fn resume_replays_exactly_the_missed_visible_events() {
        let hub = Hub::new();
        let server = ServerId::parse("srv_1").unwrap();
        let uid = UserUid::parse("uid_r").unwrap();
        let Registered {
            id: first, mut rx, ..
        } = hub
            .register(Some(server.clone()), member(), uid.clone(), Resume::Fresh, NOW)
            .unwrap();
        hub.deliver_committed("e.one", Audience::Server(server.clone()), &json!({"n": 1}), NOW);
        let seen = drain(&mut rx);
        let last = seen[0]["event_id"].as_str().unwrap().to_owned();
        hub.unregister(first);
        hub.deliver_committed("e.two", Audience::Server(server.clone()), &json!({"n": 2}), NOW);
        hub.deliver_committed(
            "e.other",
            Audience::Server(ServerId::parse("srv_2").unwrap()),
            &json!({"n": 0}),
            NOW,
        );
        hub.publish("e.typing", Audience::Server(server.clone()), &json!({"n": 9}));
        hub.deliver_committed("e.three", Audience::Server(server.clone()), &json!({"n": 3}), NOW);
        let Registered { mut rx, resync, .. } = hub
            .register(
                Some(server.clone()),
                member(),
                uid.clone(),
                Resume::From(&last),
                NOW,
            )
            .unwrap();
        assert_eq!(resync, None);
        assert_eq!(numbers(&drain(&mut rx)), [2, 3]);
        let Registered { resync, .. } = hub
            .register(
                Some(server.clone()),
                member(),
                uid.clone(),
                Resume::From("nope:1"),
                NOW,
            )
            .unwrap();
        assert_eq!(resync, Some(ResyncReason::UnknownEventId));
    }

    #[test]
    fn a_device_that_comes_back_gets_what_it_missed_and_only_recent_events() {
        let hub = Hub::new();
        let server = ServerId::parse("srv_1").unwrap();
        let uid = UserUid::parse("uid_r").unwrap();
        let key = DeviceKey {
            server: Some(server.clone()),
            user: uid.clone(),
            device: member().device_id,
        };
        let all = Audience::Server(server.clone());
        let Registered {
            id, mut rx, progress, ..
        } = hub
            .register(Some(server.clone()), member(), uid.clone(), Resume::Fresh, NOW)
            .unwrap();
        hub.deliver_committed("e", all.clone(), &json!({"n": 1}), NOW);
        for out in std::iter::from_fn(|| rx.try_recv().ok()) {
            progress.wrote(out.seq);
        }
        // Written but never confirmed by a pong; the socket dies a window later.
        let gone = NOW + REDELIVERY_WINDOW_SECS;
        hub.unregister(id);
        hub.record_departure(key.clone(), progress.confirmed(), gone);
        hub.deliver_committed("e", all.clone(), &json!({"n": 2}), gone + 1);
        hub.deliver_committed("e", all.clone(), &json!({"n": 3}), gone + 2);
        // Back soon after: events 2 and 3, but not 1, which is older than the window now.
        let later = gone + 5;
        let Registered { id, mut rx, .. } = hub
            .register(Some(server.clone()), member(), uid.clone(), Resume::Fresh, later)
            .unwrap();
        assert_eq!(numbers(&drain(&mut rx)), [2, 3]);
        hub.unregister(id);
        // Gone for longer than the window: nothing is redelivered.
        hub.record_departure(key.clone(), 3, later);
        hub.deliver_committed("e", all.clone(), &json!({"n": 4}), later);
        let Registered { id, mut rx, .. } = hub
            .register(
                Some(server.clone()),
                member(),
                uid.clone(),
                Resume::Fresh,
                later + REDELIVERY_WINDOW_SECS + 1,
            )
            .unwrap();
        assert!(drain(&mut rx).is_empty());
        hub.unregister(id);
        // The departure was used up: the next socket gets nothing replayed.
        let Registered { mut rx, .. } = hub
            .register(
                Some(server.clone()),
                member(),
                uid.clone(),
                Resume::Fresh,
                later + 1,
            )
            .unwrap();
        assert!(drain(&mut rx).is_empty());
        // Cluster mode names the point itself; at most REPLAY_MAX, the newest.
        for n in 0..(REPLAY_MAX as i64 + 5) {
            hub.deliver_committed("e", all.clone(), &json!({"n": 100 + n}), later + 2);
        }
        let Registered { mut rx, .. } = hub
            .register(Some(server), member(), uid, Resume::Missed(2), later + 2)
            .unwrap();
        let got = numbers(&drain(&mut rx));
        assert_eq!(got.len(), REPLAY_MAX);
        assert_eq!(got.last(), Some(&(100 + REPLAY_MAX as i64 + 4)));
    }

    #[test]
    fn a_pong_confirms_the_floor_its_ping_carried_and_no_more_than_was_published() {
        let progress = Progress::default();
        progress.wrote(4);
        assert_eq!(progress.floor(9, false), 4, "frames still queued");
        assert_eq!(
            progress.floor(9, true),
            9,
            "queue empty: all published is written"
        );
        progress.confirm(9, 9);
        progress.confirm(5, 9);
        assert_eq!(progress.confirmed(), 9);
        progress.confirm(u64::MAX, 12);
        assert_eq!(progress.confirmed(), 12);
    }

    #[test]
    fn cluster_mode_numbers_events_by_the_stream_and_ignores_repeats() {
        let hub = Hub::new();
        hub.follow_stream("s1");
        let server = ServerId::parse("srv_1").unwrap();
        let uid = UserUid::parse("uid_r").unwrap();
        let all = Audience::Server(server.clone());
        // Caught up on start: logged, not sent.
        hub.deliver_numbered(7, NOW, "e", all.clone(), &json!({"n": 7}), false);
        let Registered { mut rx, .. } = hub
            .register(Some(server.clone()), member(), uid.clone(), Resume::Fresh, NOW)
            .unwrap();
        hub.deliver_numbered(9, NOW, "e", all.clone(), &json!({"n": 9}), true);
        hub.deliver_numbered(9, NOW, "e", all.clone(), &json!({"n": 99}), true);
        let got = drain(&mut rx);
        assert_eq!(numbers(&got), [9]);
        assert_eq!(got[0]["event_id"], "s1:9");
        let Registered { mut rx, resync, .. } = hub
            .register(Some(server), member(), uid, Resume::From("s1:6"), NOW)
            .unwrap();
        assert_eq!(resync, None);
        assert_eq!(numbers(&drain(&mut rx)), [7, 9]);
        // A new stream: the old numbers mean nothing.
        hub.follow_stream("s2");
        assert_eq!(hub.published(), 0);
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
                Resume::Fresh,
                NOW,
            )
            .unwrap();
        for n in 0..=SEND_QUEUE_MAX {
            hub.publish("e", Audience::Server(server.clone()), &json!({"n": n}));
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
        let Registered {
            id,
            rx,
            kick,
            progress,
            ..
        } = state
            .hub
            .register(
                Some(server),
                member(),
                UserUid::parse("uid_r").unwrap(),
                Resume::Fresh,
                NOW,
            )
            .unwrap();
        let mut guard = state.lifecycle.socket();
        let state = state.clone();
        let task = tokio::spawn(async move {
            let key = DeviceKey {
                server: None,
                user: UserUid::parse("uid_r").unwrap(),
                device: "d".into(),
            };
            session(
                state,
                id,
                &key,
                member(),
                server_ws,
                rx,
                kick,
                &progress,
                &mut guard,
            )
            .await;
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
            state.hub.publish("e", Audience::Server(server.clone()), &big);
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
