//! The hub: the registry of realtime sockets, the ordered log of recent events, and the
//! audience rule ([`visible`]) that live delivery and replay share. No socket I/O here.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use http::StatusCode;
use openchat_core::{ChannelId, ServerId, UserUid};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::error::ApiError;

/// Frames waiting to be written to one socket.
pub const SEND_QUEUE_MAX: usize = 256;
/// Events kept for replay.
pub const EVENT_LOG_MAX: usize = 4096;
/// Events replayed to one reconnecting socket; beyond this it must resync.
pub const REPLAY_MAX: usize = SEND_QUEUE_MAX / 2;
/// Channels one socket may be subscribed to at once (the client uses one).
pub const SUBSCRIPTIONS_MAX: usize = 32;
/// Open realtime sockets.
pub const SOCKETS_MAX: usize = 10_000;
/// The committed event that closes a revoked device's sockets on every node. It is an
/// instruction to hubs, never a frame for clients.
pub const DEVICE_REVOKED_EVENT: &str = "internal.device.revoked";

const _: () = assert!(REPLAY_MAX < SEND_QUEUE_MAX);

/// Who receives an event. Serialisable: in cluster mode committed events carry their
/// audience to every node (never `Subscribers`, whose socket id means one node).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// Subscribers of the channel, and every socket of the channel's server (§8.6).
    ChannelAndServer { channel: ChannelId, server: ServerId },
    /// Subscribers of the channel only, optionally not the socket that caused it.
    Subscribers { channel: ChannelId, except: Option<u64> },
    /// Every socket of the server.
    Server(ServerId),
    /// Every socket of one user.
    User(UserUid),
    /// Every socket of these users (an e2ee channel's members).
    Users(Arc<[UserUid]>),
    /// Like `ChannelAndServer`, but only sockets of these users: a message of an e2ee
    /// channel reaches only members of its epoch (E2EE.md §3 rule 1), live and on replay.
    ChannelMembers {
        channel: ChannelId,
        server: ServerId,
        users: Arc<[UserUid]>,
    },
    /// The sockets of one device.
    Device { user: UserUid, device: String },
    /// Every socket.
    Everyone,
}

/// What [`visible`] knows about a socket.
#[derive(Debug, Clone)]
pub struct SocketView {
    pub id: u64,
    pub server: Option<ServerId>,
    pub user_uid: UserUid,
    pub device_id: String,
    pub subscriptions: Vec<ChannelId>,
}

/// The one per-recipient visibility check, for live delivery and for replay alike.
pub fn visible(audience: &Audience, socket: &SocketView) -> bool {
    match audience {
        Audience::ChannelAndServer { channel, server } => {
            socket.subscriptions.contains(channel) || socket.server.as_ref() == Some(server)
        }
        Audience::Subscribers { channel, except } => {
            socket.subscriptions.contains(channel) && *except != Some(socket.id)
        }
        Audience::Server(server) => socket.server.as_ref() == Some(server),
        Audience::User(user) => socket.user_uid == *user,
        Audience::Users(users) => users.contains(&socket.user_uid),
        Audience::ChannelMembers {
            channel,
            server,
            users,
        } => {
            users.contains(&socket.user_uid)
                && (socket.subscriptions.contains(channel) || socket.server.as_ref() == Some(server))
        }
        Audience::Device { user, device } => socket.user_uid == *user && socket.device_id == *device,
        Audience::Everyone => true,
    }
}

/// A socket's identity on the wire (`member` in WIRE.md §4).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Member {
    pub client_id: String,
    pub user_uid: String,
    pub device_id: String,
}

pub(crate) struct Socket {
    pub(crate) view: SocketView,
    pub(crate) member: Member,
    tx: mpsc::Sender<Utf8Bytes>,
    kick: Arc<Notify>,
}

struct Logged {
    seq: u64,
    audience: Audience,
    frame: Utf8Bytes,
}

#[derive(Default)]
struct HubState {
    next_socket: u64,
    sockets: HashMap<u64, Socket>,
    seq: u64,
    log: VecDeque<Logged>,
    /// Sequence number of the newest event dropped from the log.
    evicted_upto: u64,
}

/// Why a resume cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResyncReason {
    UnknownEventId,
    TooOld,
    TooMany,
}

impl ResyncReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ResyncReason::UnknownEventId => "unknown_event_id",
            ResyncReason::TooOld => "too_old",
            ResyncReason::TooMany => "too_many_missed_events",
        }
    }
}

/// A registered socket: its id, its send queue, its kick signal, and whether a requested
/// resume could not be served.
pub(crate) struct Registered {
    pub(crate) id: u64,
    pub(crate) rx: mpsc::Receiver<Utf8Bytes>,
    pub(crate) kick: Arc<Notify>,
    pub(crate) resync: Option<ResyncReason>,
}

/// The registry of realtime sockets and the replay log.
#[derive(Debug)]
pub struct Hub {
    boot: String,
    state: Mutex<HubState>,
}

impl std::fmt::Debug for HubState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubState")
            .field("sockets", &self.sockets.len())
            .field("seq", &self.seq)
            .finish()
    }
}

pub(crate) fn frame(
    kind: &str,
    request_id: Option<&str>,
    payload: &Value,
    event_id: Option<&str>,
) -> Utf8Bytes {
    let mut envelope = json!({"type": kind, "payload": payload});
    if let Some(request_id) = request_id {
        envelope["request_id"] = json!(request_id);
    }
    if let Some(event_id) = event_id {
        envelope["event_id"] = json!(event_id);
    }
    Utf8Bytes::from(envelope.to_string())
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    pub fn new() -> Self {
        Self {
            boot: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
            state: Mutex::new(HubState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        // A panic while holding the lock cannot leave the registry half-updated in a way
        // that matters more than losing realtime entirely; keep serving.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn sockets(&self) -> usize {
        self.lock().sockets.len()
    }

    /// Publishes an event: numbers it, logs it (unless ephemeral) and queues it for every
    /// visible socket. Sockets whose queue is full are disconnected.
    pub fn publish(&self, kind: &str, audience: Audience, payload: &Value, ephemeral: bool) {
        let mut state = self.lock();
        state.seq += 1;
        let seq = state.seq;
        let event_id = format!("{}:{seq}", self.boot);
        let frame = frame(kind, None, payload, Some(&event_id));
        let mut overflowed = Vec::new();
        for (id, socket) in &state.sockets {
            if visible(&audience, &socket.view) && socket.tx.try_send(frame.clone()).is_err() {
                overflowed.push(*id);
            }
        }
        if !ephemeral {
            state.log.push_back(Logged { seq, audience, frame });
            while state.log.len() > EVENT_LOG_MAX {
                if let Some(old) = state.log.pop_front() {
                    state.evicted_upto = old.seq;
                }
            }
        }
        for id in overflowed {
            if let Some(socket) = state.sockets.remove(&id) {
                tracing::info!(socket = id, "realtime socket too slow; disconnecting");
                socket.kick.notify_one();
            }
        }
    }

    /// Hands a committed change's event to this hub: [`DEVICE_REVOKED_EVENT`] closes the
    /// device's sockets, anything else is published (and logged for replay).
    pub fn deliver_committed(&self, kind: &str, audience: Audience, payload: &Value) {
        if kind == DEVICE_REVOKED_EVENT {
            if let Audience::Device { user, device } = &audience {
                self.kick_device(user, device);
            }
            return;
        }
        self.publish(kind, audience, payload, false);
    }

    /// Registers a socket and, for a resume, queues the missed events first, atomically
    /// with the registration so that no live event is lost or doubled.
    pub(crate) fn register(
        &self,
        server: Option<ServerId>,
        member: Member,
        user_uid: UserUid,
        resume_from: Option<&str>,
    ) -> Result<Registered, ApiError> {
        let mut state = self.lock();
        if state.sockets.len() >= SOCKETS_MAX {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_connections",
                "realtime is full",
            )
            .retryable());
        }
        state.next_socket += 1;
        let id = state.next_socket;
        let view = SocketView {
            id,
            server,
            user_uid,
            device_id: member.device_id.clone(),
            subscriptions: Vec::new(),
        };
        let (tx, rx) = mpsc::channel(SEND_QUEUE_MAX);
        let mut resync = None;
        if let Some(from) = resume_from {
            match self.replay(&state, &view, from) {
                Ok(frames) => {
                    for frame in frames {
                        // Cannot fail: the queue is new and REPLAY_MAX < SEND_QUEUE_MAX.
                        let _ = tx.try_send(frame);
                    }
                }
                Err(reason) => resync = Some(reason),
            }
        }
        let kick = Arc::new(Notify::new());
        state.sockets.insert(
            id,
            Socket {
                view,
                member,
                tx,
                kick: kick.clone(),
            },
        );
        Ok(Registered { id, rx, kick, resync })
    }

    fn replay(
        &self,
        state: &HubState,
        view: &SocketView,
        from: &str,
    ) -> Result<Vec<Utf8Bytes>, ResyncReason> {
        let (boot, seq) = from.rsplit_once(':').ok_or(ResyncReason::UnknownEventId)?;
        let seq: u64 = seq.parse().map_err(|_| ResyncReason::UnknownEventId)?;
        if boot != self.boot || seq > state.seq {
            return Err(ResyncReason::UnknownEventId);
        }
        if seq < state.evicted_upto {
            return Err(ResyncReason::TooOld);
        }
        let frames: Vec<Utf8Bytes> = state
            .log
            .iter()
            .filter(|logged| logged.seq > seq && visible(&logged.audience, view))
            .map(|logged| logged.frame.clone())
            .collect();
        if frames.len() > REPLAY_MAX {
            return Err(ResyncReason::TooMany);
        }
        Ok(frames)
    }

    /// Closes every socket of one device (it was revoked); returns how many.
    pub fn kick_device(&self, user: &UserUid, device: &str) -> usize {
        let mut state = self.lock();
        let ids: Vec<u64> = state
            .sockets
            .iter()
            .filter(|(_, s)| s.view.user_uid == *user && s.view.device_id == device)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            if let Some(socket) = state.sockets.remove(id) {
                socket.kick.notify_one();
            }
        }
        ids.len()
    }

    pub(crate) fn unregister(&self, id: u64) -> Option<Socket> {
        self.lock().sockets.remove(&id)
    }

    /// Queues a reply to one socket; a full queue disconnects it.
    pub(crate) fn reply(&self, id: u64, frame: Utf8Bytes) {
        let mut state = self.lock();
        let full = state
            .sockets
            .get(&id)
            .is_some_and(|socket| socket.tx.try_send(frame).is_err());
        if full && let Some(socket) = state.sockets.remove(&id) {
            socket.kick.notify_one();
        }
    }

    /// Adds a subscription; returns the channel's presence (including this socket) and
    /// whether the subscription is new.
    pub(crate) fn subscribe(
        &self,
        id: u64,
        channel: &ChannelId,
    ) -> Result<(Vec<Member>, bool), &'static str> {
        let mut state = self.lock();
        let Some(socket) = state.sockets.get_mut(&id) else {
            return Err("chat_not_connected");
        };
        let new = !socket.view.subscriptions.contains(channel);
        if new {
            if socket.view.subscriptions.len() >= SUBSCRIPTIONS_MAX {
                return Err("chat_too_many_subscriptions");
            }
            socket.view.subscriptions.push(channel.clone());
        }
        let members = state
            .sockets
            .values()
            .filter(|socket| socket.view.subscriptions.contains(channel))
            .map(|socket| socket.member.clone())
            .collect();
        Ok((members, new))
    }

    /// Removes a subscription; returns whether there was one.
    pub(crate) fn unsubscribe(&self, id: u64, channel: &ChannelId) -> bool {
        let mut state = self.lock();
        let Some(socket) = state.sockets.get_mut(&id) else {
            return false;
        };
        let before = socket.view.subscriptions.len();
        socket.view.subscriptions.retain(|c| c != channel);
        before != socket.view.subscriptions.len()
    }

    pub(crate) fn is_subscribed(&self, id: u64, channel: &ChannelId) -> bool {
        self.lock()
            .sockets
            .get(&id)
            .is_some_and(|socket| socket.view.subscriptions.contains(channel))
    }
}
