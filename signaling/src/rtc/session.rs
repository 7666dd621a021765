//! One signaling WebSocket: the upgrade, the ticket check of the first message and the
//! join, then the session loop between the socket and the participant's room.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use openchat_core::ChannelId;
use openchat_core::protocol::{RtcErrorCode, SignalingMessage, WireError, parse_signaling, rtc_error};
use openchat_core::ticket::{TicketClaims, TicketError};
use openchat_media::room::{Frame, LeaveReason, ParticipantId, ParticipantInfo, RoomCommand, RoomError};
use openchat_media::shard::{OutboxReceiver, ShardCommand, outbox};
use serde_json::Value;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::clock::unix_now;
use crate::state::AppState;

use super::tickets::RtcState;

/// The first message (`rtc.join`) must arrive within this (WIRE.md §5.2).
pub const FIRST_MESSAGE_DEADLINE: Duration = Duration::from_secs(12);
/// A joined socket that sends nothing (not even a pong) for this long is closed.
pub const IDLE_DEADLINE: Duration = Duration::from_secs(40);
pub const PING_INTERVAL: Duration = Duration::from_secs(20);
/// Responses remembered per socket for retransmitted `request_id`s.
pub const RESPONSES_REMEMBERED_MAX: usize = 64;
/// How long the shard may take to acknowledge a command before the socket gives up.
pub const SHARD_ACK_DEADLINE: Duration = Duration::from_secs(30);

const _: () = assert!(SHARD_ACK_DEADLINE.as_secs() > openchat_media::shard::STALL_MAX.as_secs());

/// Why a signaling socket's join was refused: what the client is told (one `rtc.error`),
/// and the `rtc_join_fail` metric's reason, both from the variant.
#[derive(Debug, Clone, PartialEq, Eq)]
enum JoinRefusal {
    /// No `rtc.join` within [`FIRST_MESSAGE_DEADLINE`].
    Timeout,
    /// The first message is not a valid `rtc.join` with a ticket.
    NotAJoin,
    /// The first message is another valid message.
    NotFirst,
    Ticket(TicketError),
    /// The room holds as many participants as allowed.
    RoomFull(usize),
    /// The shard did not answer.
    Unavailable,
}

impl JoinRefusal {
    fn code(&self) -> RtcErrorCode {
        match self {
            Self::Timeout | Self::NotAJoin | Self::NotFirst | Self::Ticket(_) => RtcErrorCode::JoinDenied,
            Self::RoomFull(_) => RtcErrorCode::RoomFull,
            Self::Unavailable => RtcErrorCode::Unavailable,
        }
    }

    fn message(&self) -> String {
        match self {
            Self::Timeout => "no rtc.join within the first message deadline".into(),
            Self::NotAJoin => "the first message must be rtc.join with a ticket".into(),
            Self::NotFirst => "the first message must be rtc.join".into(),
            Self::Ticket(err) => err.to_string(),
            Self::RoomFull(max) => format!("the voice channel is full ({max})"),
            Self::Unavailable => "the voice room did not answer".into(),
        }
    }

    fn retryable(&self) -> bool {
        matches!(self, Self::RoomFull(_) | Self::Unavailable)
    }

    /// The `reason` label of `openchat_rtc_join_fail_total`; `None` for a socket that never
    /// sent anything (not counted as a failed join).
    fn metric_reason(&self) -> Option<&'static str> {
        Some(match self {
            Self::Timeout => return None,
            Self::NotAJoin | Self::NotFirst => "not_a_join",
            Self::Ticket(TicketError::Invalid) => "invalid",
            Self::Ticket(TicketError::Expired) => "expired",
            Self::Ticket(TicketError::Replayed) => "replayed",
            Self::Ticket(TicketError::WrongChannel) => "wrong_channel",
            Self::Ticket(TicketError::ReplayMemoryFull) => "replay_memory_full",
            Self::RoomFull(_) => "room_full",
            Self::Unavailable => "unavailable",
        })
    }

    /// The close frame's reason.
    fn close_reason(&self) -> &'static str {
        match self {
            Self::Timeout => "join timeout",
            Self::RoomFull(_) => "room full",
            Self::Unavailable => "unavailable",
            _ => "join denied",
        }
    }
}

/// A joined participant, as the session knows it.
struct Joined {
    id: ParticipantId,
    channel: ChannelId,
    outbox: OutboxReceiver,
    shard: flume::Sender<ShardCommand>,
}

type Ws<S> = WebSocketStream<S>;

async fn close<S>(ws: &mut Ws<S>, code: CloseCode, reason: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code,
        reason: reason.to_owned().into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.send(Message::Close(Some(frame)))).await;
}

/// What a good first message leads to: a participant of a room here, or (cluster mode)
/// a room on another node, to which the socket is relayed starting with that message.
enum Entered {
    Joined(Joined, Option<String>),
    Elsewhere { owner: String, first: Utf8Bytes },
}

/// Reads the join, or answers why not; `None` when the socket ends.
async fn join<S>(state: &Arc<AppState>, ws: &mut Ws<S>, relayed: bool) -> Option<Entered>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let rtc = state.rtc.as_ref()?;
    match admit(state, rtc, ws, relayed).await {
        Ok(entered) => Some(entered),
        Err((refusal, request_id, channel)) => {
            refuse(state, ws, refusal, request_id, channel).await;
            None
        }
    }
}

/// Answers a refused join with one `rtc.error` and closes (nothing for a socket that ended).
async fn refuse<S>(
    state: &AppState,
    ws: &mut Ws<S>,
    refusal: Option<JoinRefusal>,
    request_id: Option<String>,
    channel: Option<ChannelId>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Some(reason) = refusal.as_ref().and_then(JoinRefusal::metric_reason) {
        state
            .metrics
            .rtc_join_failures
            .get_or_create(&crate::metrics::ReasonLabels { reason })
            .inc();
    }
    if let Some(refusal) = refusal {
        let frame = rtc_error(
            refusal.code(),
            &refusal.message(),
            refusal.retryable(),
            request_id.as_deref(),
            channel.as_ref().map(ChannelId::as_str),
        );
        let _ = ws.send(Message::Text(Utf8Bytes::from(frame))).await;
        close(ws, CloseCode::Normal, refusal.close_reason()).await;
    }
}

/// A refused join: why (`None` when the socket ended by itself), the request id and the
/// channel, when known.
type Refused = (Option<JoinRefusal>, Option<String>, Option<ChannelId>);

/// Reads the first message, checks its ticket and joins the room.
async fn admit<S>(state: &AppState, rtc: &RtcState, ws: &mut Ws<S>, relayed: bool) -> Result<Entered, Refused>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let text = loop {
        match tokio::time::timeout(FIRST_MESSAGE_DEADLINE, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => break text,
            Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) => return Err((None, None, None)),
            Ok(Some(Ok(_))) => continue,
            Err(_) => return Err((Some(JoinRefusal::Timeout), None, None)),
        }
    };
    let Ok(envelope) = parse_signaling(text.as_bytes()) else {
        return Err((Some(JoinRefusal::NotAJoin), None, None));
    };
    let request_id = envelope.request_id.clone();
    let SignalingMessage::Join { ticket } = &envelope.message else {
        return Err((Some(JoinRefusal::NotFirst), request_id, None));
    };
    let now = unix_now();
    // Cluster mode: the room may run on another node; then that node checks the ticket
    // (its single use included) and this one only relays.
    if state.cluster.is_some()
        && !relayed
        && let Ok(claims) = rtc.signer.verify(ticket, now)
        && let Ok(channel) = ChannelId::parse(&claims.channel_id)
    {
        match super::records::resolve_owner(state, &channel).await {
            super::records::Owner::Here => {}
            super::records::Owner::There(owner) => return Ok(Entered::Elsewhere { owner, first: text }),
            super::records::Owner::Unavailable => {
                return Err((Some(JoinRefusal::Unavailable), request_id, Some(channel)));
            }
        }
    }
    let checked = rtc.signer.verify(ticket, now).and_then(|claims| {
        match envelope.channel_id.as_deref() {
            Some(channel) if channel != claims.channel_id => return Err(TicketError::WrongChannel),
            _ => {}
        }
        if state.cluster.is_none() {
            rtc.replay
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .use_once(&claims, now)?;
        }
        Ok(claims)
    });
    let claims: TicketClaims = match checked {
        Ok(claims) => claims,
        Err(err) => return Err((Some(JoinRefusal::Ticket(err)), request_id, None)),
    };
    if state.cluster.is_some() {
        // Several nodes: the first use is recorded in Postgres, which every node shares.
        let first = state
            .run(openchat_storage::queries::UseTicket {
                jti: claims.jti.clone(),
                expires_at: claims.exp,
                now,
            })
            .await;
        match first {
            Ok(true) => {}
            Ok(false) => {
                let refusal = JoinRefusal::Ticket(TicketError::Replayed);
                return Err((Some(refusal), request_id, None));
            }
            Err(_) => return Err((Some(JoinRefusal::Unavailable), request_id, None)),
        }
    }
    let Ok(channel) = ChannelId::parse(&claims.channel_id) else {
        return Err((Some(JoinRefusal::Ticket(TicketError::Invalid)), request_id, None));
    };
    if state.cluster.is_some() && !super::records::claim(state, &channel).await {
        // The room is (now) recorded on another node: the client rejoins and follows it.
        return Err((Some(JoinRefusal::Unavailable), request_id, Some(channel)));
    }
    tracing::Span::current().record("user", crate::redact::tag(&claims.user_uid).as_str());
    let id = ParticipantId(uuid::Uuid::new_v4().to_string());
    let (tx, rx) = outbox();
    let shard = rtc.shards.sender(&channel).clone();
    let info = ParticipantInfo {
        id: id.clone(),
        server_id: claims.server_id.clone(),
        user_uid: claims.user_uid.clone(),
        device_id: claims.device_id.clone(),
        permissions: claims.permissions,
    };
    let (reply, answer) = flume::bounded(1);
    let command = RoomCommand::Join {
        participant: info,
        request_id: request_id.clone(),
    };
    let sent = shard
        .send_async(ShardCommand::Join {
            channel: channel.clone(),
            command,
            outbox: tx,
            reply,
        })
        .await;
    let result = match sent {
        Ok(()) => tokio::time::timeout(SHARD_ACK_DEADLINE, answer.recv_async())
            .await
            .ok()
            .and_then(Result::ok),
        Err(_) => None,
    };
    match result {
        Some(Ok(())) => Ok(Entered::Joined(
            Joined {
                id,
                channel,
                outbox: rx,
                shard,
            },
            request_id,
        )),
        Some(Err(RoomError::Full(max))) => Err((Some(JoinRefusal::RoomFull(max)), request_id, Some(channel))),
        _ => Err((Some(JoinRefusal::Unavailable), request_id, Some(channel))),
    }
}

/// Remembers the responses this socket got, by `request_id`, to answer retransmissions.
#[derive(Default)]
struct Responses {
    recent: VecDeque<(String, Vec<Utf8Bytes>)>,
}

impl Responses {
    fn seen(&self, request_id: &str) -> Option<&Vec<Utf8Bytes>> {
        self.recent
            .iter()
            .find(|(id, _)| id == request_id)
            .map(|(_, frames)| frames)
    }

    fn begin(&mut self, request_id: &str) {
        if self.recent.len() >= RESPONSES_REMEMBERED_MAX {
            self.recent.pop_front();
        }
        self.recent.push_back((request_id.to_owned(), Vec::new()));
    }

    /// Records an outgoing frame that answers one of this socket's requests.
    fn record(&mut self, request_id: &str, frame: &Utf8Bytes) {
        if let Some((_, frames)) = self.recent.iter_mut().rev().find(|(id, _)| id == request_id)
            && frames.len() < 4
        {
            frames.push(frame.clone());
        }
    }
}

fn request_id_of(frame: &str) -> Option<String> {
    // Frames are small JSON objects built by the room; only those with a request_id matter.
    if !frame.contains("\"request_id\"") {
        return None;
    }
    serde_json::from_str::<Value>(frame)
        .ok()?
        .get("request_id")?
        .as_str()
        .map(str::to_owned)
}

/// Runs one signaling socket: the join, then the participant's session. Returns the
/// socket instead when its room runs on another node (cluster mode), for the caller to
/// relay there.
pub(crate) async fn session<S>(
    state: Arc<AppState>,
    mut ws: Ws<S>,
    local: Option<std::net::IpAddr>,
    mut guard: crate::lifecycle::SocketGuard,
    relayed: bool,
) -> Option<Relay<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let joining = tokio::select! {
        joined = join(&state, &mut ws, relayed) => Some(joined),
        () = guard.closing() => None,
    };
    let Some(joining) = joining else {
        close(&mut ws, CloseCode::Away, "server shutting down").await;
        return None;
    };
    let (joined, join_request) = match joining {
        None => return None,
        Some(Entered::Joined(joined, join_request)) => (joined, join_request),
        Some(Entered::Elsewhere { owner, first }) => {
            return Some(Relay {
                owner,
                first,
                ws,
                guard,
            });
        }
    };
    let counted = state.cluster.is_some();
    if counted && let Some(rtc) = &state.rtc {
        rtc.owned().joined(&joined.channel);
    }
    let room = joined.channel.clone();
    run_joined(ws, local, joined, join_request, guard).await;
    if counted && let Some(rtc) = &state.rtc {
        rtc.owned().left(&room);
    }
    None
}

/// A socket whose room runs on `owner`, with its first message, to relay there.
pub(crate) struct Relay<S> {
    pub(crate) owner: String,
    pub(crate) first: Utf8Bytes,
    pub(crate) ws: Ws<S>,
    pub(crate) guard: crate::lifecycle::SocketGuard,
}

/// Tells a socket that could not be relayed that the room did not answer (retryable).
pub(crate) async fn refuse_unavailable<S>(state: &AppState, ws: &mut Ws<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    refuse(state, ws, Some(JoinRefusal::Unavailable), None, None).await;
}

/// The owner's end of a relayed socket (cluster mode): the ordinary session, without a
/// signaling address (media is advertised on this node's public address), never relayed
/// again.
pub(crate) async fn relayed_session<S>(state: Arc<AppState>, ws: Ws<S>, guard: crate::lifecycle::SocketGuard)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // Never relayed again: the owner admits or refuses.
    let _ = session(state, ws, None, guard, true).await;
}

async fn run_joined<S>(
    ws: Ws<S>,
    local: Option<std::net::IpAddr>,
    joined: Joined,
    join_request: Option<String>,
    mut guard: crate::lifecycle::SocketGuard,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Joined {
        id,
        channel,
        outbox,
        shard,
    } = joined;
    let span = tracing::Span::current();
    span.record("channel", channel.as_str());
    span.record("participant", id.0.as_str());
    let responses = Mutex::new(Responses::default());
    if let Some(request_id) = &join_request {
        responses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .begin(request_id);
    }
    let (mut sink, mut stream) = ws.split();
    // Frames for the socket come from the room's outbox and from the session itself.
    let (local_tx, local_rx) = flume::bounded::<Utf8Bytes>(openchat_media::shard::OUTBOX_MAX);
    let own_requests: Mutex<Vec<String>> = Mutex::new(Vec::new());
    if let Some(request_id) = &join_request {
        own_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(request_id.clone());
    }
    let kicked = {
        let writer = async {
            let mut ping = tokio::time::interval(PING_INTERVAL);
            ping.tick().await;
            loop {
                tokio::select! {
                    frame = outbox.frames.recv_async() => match frame {
                        Ok(frame) => {
                            let text = Utf8Bytes::from(frame_to_string(&frame));
                            if let Some(request_id) = request_id_of(&frame)
                                && own_requests.lock().unwrap_or_else(|p| p.into_inner()).contains(&request_id)
                            {
                                responses.lock().unwrap_or_else(|p| p.into_inner()).record(&request_id, &text);
                            }
                            if sink.send(Message::Text(text)).await.is_err() { break }
                        }
                        Err(_) => break,
                    },
                    frame = local_rx.recv_async() => match frame {
                        Ok(text) => if sink.send(Message::Text(text)).await.is_err() { break },
                        Err(_) => break,
                    },
                    _ = ping.tick() => if sink.send(Message::Ping(bytes::Bytes::new())).await.is_err() { break },
                }
            }
        };
        let reader = async {
            loop {
                let text = match tokio::time::timeout(IDLE_DEADLINE, stream.next()).await {
                    Ok(Some(Ok(Message::Text(text)))) => text,
                    Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) => return LeaveReason::Left,
                    Ok(Some(Ok(_))) => continue,
                    Err(_) => {
                        tracing::debug!(participant = %id, "signaling idle deadline passed");
                        return LeaveReason::Left;
                    }
                };
                let envelope = match parse_signaling(text.as_bytes()) {
                    Ok(envelope) => envelope,
                    Err(err) => {
                        let message = match err {
                            WireError::UnknownType(kind) => format!("unsupported event type {kind:?}"),
                            other => other.to_string(),
                        };
                        let _ = local_tx.try_send(Utf8Bytes::from(rtc_error(
                            RtcErrorCode::UnknownEvent,
                            &message,
                            false,
                            None,
                            Some(channel.as_str()),
                        )));
                        continue;
                    }
                };
                let request_id = envelope.request_id.clone();
                if let Some(request_id) = &request_id {
                    let earlier = responses
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .seen(request_id)
                        .cloned();
                    if let Some(frames) = earlier {
                        // A retransmission: answer again, do not apply again.
                        for frame in frames {
                            let _ = local_tx.try_send(frame);
                        }
                        continue;
                    }
                    responses
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .begin(request_id);
                    let mut own = own_requests.lock().unwrap_or_else(|p| p.into_inner());
                    if own.len() >= RESPONSES_REMEMBERED_MAX {
                        own.remove(0);
                    }
                    own.push(request_id.clone());
                }
                let command = match envelope.message {
                    SignalingMessage::Join { .. } => {
                        let frame = Utf8Bytes::from(rtc_error(
                            RtcErrorCode::JoinDenied,
                            "already joined",
                            false,
                            request_id.as_deref(),
                            Some(channel.as_str()),
                        ));
                        responses
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .record(request_id.as_deref().unwrap_or(""), &frame);
                        let _ = local_tx.try_send(frame);
                        continue;
                    }
                    SignalingMessage::Leave { .. } => return LeaveReason::Left,
                    SignalingMessage::Ping => RoomCommand::Ping {
                        from: id.clone(),
                        request_id,
                    },
                    SignalingMessage::MediaState { stream_kind, payload } => RoomCommand::MediaState {
                        from: id.clone(),
                        stream_kind,
                        payload,
                        request_id,
                    },
                    // Offers for the SFU (no target): answered by the room's media path.
                    SignalingMessage::Description {
                        kind: openchat_core::protocol::DescriptionKind::Offer,
                        direction: Some(direction),
                        target: None,
                        sdp,
                        ..
                    } => {
                        let leg = match direction {
                            openchat_core::protocol::Direction::Publish => openchat_media::room::Leg::Publish,
                            openchat_core::protocol::Direction::Subscribe => {
                                openchat_media::room::Leg::Subscribe
                            }
                        };
                        RoomCommand::Offer {
                            from: id.clone(),
                            leg,
                            sdp,
                            request_id,
                            signaling_ip: local,
                        }
                    }
                    // Trickled candidates for the SFU connections.
                    SignalingMessage::IceCandidate {
                        target: None,
                        direction: Some(direction),
                        payload,
                    } => {
                        let candidate = match payload.get("candidate") {
                            Some(Value::String(s)) => s.clone(),
                            Some(Value::Object(o)) => o
                                .get("candidate")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                            _ => String::new(),
                        };
                        if candidate.is_empty() {
                            continue;
                        }
                        RoomCommand::Candidate {
                            from: id.clone(),
                            leg: match direction {
                                openchat_core::protocol::Direction::Publish => {
                                    openchat_media::room::Leg::Publish
                                }
                                openchat_core::protocol::Direction::Subscribe => {
                                    openchat_media::room::Leg::Subscribe
                                }
                            },
                            candidate,
                        }
                    }
                    // The SFU never offers, so an untargeted answer has nothing to do; a
                    // candidate without a direction names no connection.
                    SignalingMessage::Description { target: None, .. }
                    | SignalingMessage::IceCandidate { target: None, .. } => continue,
                    // Targeted messages: the legacy peer-to-peer relay (WIRE.md §5.4).
                    SignalingMessage::Description {
                        kind,
                        direction,
                        target,
                        payload,
                        ..
                    } => {
                        let kind = match (kind, direction) {
                            (openchat_core::protocol::DescriptionKind::Offer, Some(d)) => {
                                format!("rtc.offer.{}", d.as_str())
                            }
                            (openchat_core::protocol::DescriptionKind::Offer, None) => "rtc.offer".to_owned(),
                            (openchat_core::protocol::DescriptionKind::Answer, Some(d)) => {
                                format!("rtc.answer.{}", d.as_str())
                            }
                            (openchat_core::protocol::DescriptionKind::Answer, None) => {
                                "rtc.answer".to_owned()
                            }
                        };
                        RoomCommand::Relay {
                            from: id.clone(),
                            kind,
                            target,
                            payload,
                            request_id,
                        }
                    }
                    SignalingMessage::IceCandidate { target, payload, .. } => RoomCommand::Relay {
                        from: id.clone(),
                        kind: "rtc.ice.candidate".into(),
                        target,
                        payload,
                        request_id,
                    },
                };
                // Backpressure: the next message is read only once every recipient took this one.
                let (ack, acked) = flume::bounded(1);
                let command = ShardCommand::Room {
                    channel: channel.clone(),
                    command,
                    ack: Some(ack),
                };
                if shard.send_async(command).await.is_err() {
                    return LeaveReason::Left;
                }
                if tokio::time::timeout(SHARD_ACK_DEADLINE, acked.recv_async())
                    .await
                    .is_err()
                {
                    tracing::warn!(participant = %id, "shard did not acknowledge; closing");
                    return LeaveReason::Left;
                }
            }
        };
        // On shutdown the room tells everyone who left and then kicks each participant
        // (`server_shutdown`); if it cannot, the socket closes anyway after a short wait.
        let shutdown_fallback = async {
            guard.closing().await;
            tokio::time::sleep(SHUTDOWN_KICK_WAIT).await;
        };
        tokio::select! {
            () = writer => None,
            _reason = reader => None,
            reason = outbox.kick.recv_async() => Some(reason.unwrap_or_default()),
            () = shutdown_fallback => Some(SERVER_SHUTDOWN.to_owned()),
        }
    };
    // The room drops the outbox when it closes a participant, so the writer may see the end
    // of the frames before the kick is read: the kick's reason still decides.
    let kicked = kicked.or_else(|| outbox.kick.try_recv().ok());
    if kicked.is_none() {
        let leave = RoomCommand::Leave {
            participant: id.clone(),
            reason: LeaveReason::Left,
        };
        let _ = shard
            .send_async(ShardCommand::Room {
                channel: channel.clone(),
                command: leave,
                ack: None,
            })
            .await;
    }
    let reason = kicked.unwrap_or_else(|| "left".into());
    let code = if reason == SERVER_SHUTDOWN {
        // What the room queued before the kick (who left) goes out first; the outbox is
        // bounded and no longer filled, so this ends.
        while let Ok(frame) = outbox.frames.try_recv() {
            let text = Utf8Bytes::from(frame_to_string(&frame));
            if tokio::time::timeout(Duration::from_secs(1), sink.send(Message::Text(text)))
                .await
                .is_err()
            {
                break;
            }
        }
        // 1001: the client rejoins once the server is back (WIRE.md §0 item 7).
        CloseCode::Away
    } else {
        CloseCode::Normal
    };
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(Message::Close(Some(frame)))).await;
}

/// The kick reason of a room emptied for a shutdown (`LeaveReason::ServerShutdown`).
const SERVER_SHUTDOWN: &str = "server_shutdown";
/// How long a joined session waits for its room's shutdown kick before closing anyway.
const SHUTDOWN_KICK_WAIT: Duration = Duration::from_secs(3);

fn frame_to_string(frame: &Frame) -> String {
    frame.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtc::tickets::{RtcConfig, RtcState};
    use openchat_media::ShardSet;

    #[test]
    fn each_join_refusal_has_its_code_label_and_retryability_from_its_variant() {
        let cases = [
            (JoinRefusal::Timeout, "rtc_join_denied", None, false),
            (
                JoinRefusal::NotAJoin,
                "rtc_join_denied",
                Some("not_a_join"),
                false,
            ),
            (
                JoinRefusal::Ticket(TicketError::Replayed),
                "rtc_join_denied",
                Some("replayed"),
                false,
            ),
            (
                JoinRefusal::Ticket(TicketError::ReplayMemoryFull),
                "rtc_join_denied",
                Some("replay_memory_full"),
                false,
            ),
            (JoinRefusal::RoomFull(8), "rtc_room_full", Some("room_full"), true),
            (
                JoinRefusal::Unavailable,
                "rtc_unavailable",
                Some("unavailable"),
                true,
            ),
        ];
        for (refusal, code, reason, retryable) in cases {
            assert_eq!(refusal.code().as_str(), code, "{refusal:?}");
            assert_eq!(refusal.metric_reason(), reason, "{refusal:?}");
            assert_eq!(refusal.retryable(), retryable, "{refusal:?}");
        }
        assert_eq!(
            JoinRefusal::Ticket(TicketError::Expired).message(),
            "join ticket expired"
        );
    }
    use tokio_tungstenite::tungstenite::protocol::Role;

    fn state_with_one_shard() -> (tempfile::TempDir, Arc<AppState>) {
        let (dir, state) = crate::realtime::socket::tests::test_state();
        let mut state = Arc::try_unwrap(state).unwrap();
        let shards = Arc::new(ShardSet::start(&[0], 4, None).unwrap());
        let config = RtcConfig {
            signaling_path: "/v1/rtc/signaling".into(),
            ticket_secret: b"0123456789abcdef0123".to_vec(),
            ticket_ttl_seconds: 60,
            stun_urls: vec![],
            turn: None,
        };
        state.rtc = Some(RtcState::new(config, shards));
        (dir, Arc::new(state))
    }

    #[tokio::test(start_paused = true)]
    async fn a_socket_that_never_joins_is_refused_at_the_first_message_deadline() {
        let (_dir, state) = state_with_one_shard();
        let (client_io, server_io) = tokio::io::duplex(16 * 1024);
        let server_ws = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let guard = state.lifecycle.socket();
        let mut task = tokio::spawn(async move {
            let _ = session(state, server_ws, None, guard, false).await;
        });
        let early = FIRST_MESSAGE_DEADLINE - Duration::from_secs(1);
        assert!(
            tokio::time::timeout(early, &mut task).await.is_err(),
            "refused before the deadline"
        );
        assert!(
            tokio::time::timeout(Duration::from_secs(3), &mut task)
                .await
                .is_ok(),
            "still open after it"
        );
        let Some(Ok(Message::Text(text))) = client.next().await else {
            panic!("expected the refusal")
        };
        let refusal: Value = serde_json::from_str(text.as_str()).unwrap();
        assert_eq!(refusal["payload"]["code"], "rtc_join_denied");
    }

    #[test]
    fn signaling_urls_follow_the_public_origin() {
        let (_dir, state) = state_with_one_shard();
        let rtc = state.rtc.as_ref().unwrap();
        assert_eq!(
            rtc.signaling_url("http://localhost:8080"),
            "ws://localhost:8080/v1/rtc/signaling"
        );
        assert_eq!(
            rtc.signaling_url("https://chat.example.org/prefix"),
            "wss://chat.example.org/v1/rtc/signaling"
        );
    }
}
