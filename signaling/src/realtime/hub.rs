//! The hub: the registry of realtime sockets, the ordered log of recent events, and the
//! audience rule ([`visible`]) that live delivery and replay share. No socket I/O here.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http::StatusCode;
use openchat_core::{ChannelId, ServerId, UnixSeconds, UserUid};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Utf8Bytes;

pub use super::roster::Member;
use super::roster::PresenceBook;
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
/// How long after its socket went a device still gets what it missed on its next socket.
pub const REDELIVERY_WINDOW_SECS: UnixSeconds = 5 * 60;
/// Departed devices remembered for redelivery on this node.
pub const DEPARTED_MAX: usize = SOCKETS_MAX;
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

pub(crate) struct Socket {
    pub(crate) view: SocketView,
    pub(crate) member: Member,
    tx: mpsc::Sender<Outbound>,
    kick: Arc<Notify>,
    pub(crate) progress: Arc<Progress>,
}

/// One frame for one socket, with the log sequence number of the event it carries (0 for
/// replies and ephemeral events).
#[derive(Debug, Clone)]
pub struct Outbound {
    pub seq: u64,
    pub frame: Utf8Bytes,
}

impl Outbound {
    pub(crate) fn reply(frame: Utf8Bytes) -> Self {
        Self { seq: 0, frame }
    }
}

/// How far a socket got: what redelivery starts after when the device comes back.
///
/// `written` is the newest logged event the socket's writer put on the transport;
/// `confirmed` is the newest one the client provably had: the writer sends its floor (see
/// [`Progress::floor`]) as the payload of each ping, and a pong echoing it proves that
/// everything written before that ping arrived (one ordered stream).
#[derive(Debug, Default)]
pub struct Progress {
    written: AtomicU64,
    confirmed: AtomicU64,
}

impl Progress {
    fn starting_at(seq: u64) -> Self {
        Self {
            written: AtomicU64::new(seq),
            confirmed: AtomicU64::new(seq),
        }
    }

    /// The writer wrote the frame of logged event `seq`.
    pub fn wrote(&self, seq: u64) {
        if seq > 0 {
            self.written.fetch_max(seq, Ordering::Release);
        }
    }

    /// Everything visible up to this sequence number has been written: `published` (read
    /// from [`Hub::published`] *before* looking at the queue) when the queue is empty, else
    /// the last frame written (the queue is in order).
    pub fn floor(&self, published: u64, queue_empty: bool) -> u64 {
        if queue_empty {
            published.max(self.written.load(Ordering::Acquire))
        } else {
            self.written.load(Ordering::Acquire)
        }
    }

    /// A pong echoed a floor the writer sent; never beyond what was published.
    pub fn confirm(&self, seq: u64, published: u64) {
        self.confirmed.fetch_max(seq.min(published), Ordering::AcqRel);
    }

    pub fn confirmed(&self) -> u64 {
        self.confirmed.load(Ordering::Acquire)
    }
}

struct Logged {
    seq: u64,
    at: UnixSeconds,
    audience: Audience,
    frame: Utf8Bytes,
}

/// A device's socket on one server: what redelivery is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceKey {
    pub server: Option<ServerId>,
    pub user: UserUid,
    pub device: String,
}

#[derive(Debug, Clone, Copy)]
struct Departure {
    seq: u64,
    at: UnixSeconds,
}

#[derive(Default)]
struct HubState {
    /// What event ids start with: this boot's id, or in cluster mode the events stream's.
    tag: String,
    next_socket: u64,
    sockets: HashMap<u64, Socket>,
    seq: u64,
    log: VecDeque<Logged>,
    /// Sequence number of the newest event dropped from the log.
    evicted_upto: u64,
    /// Devices whose socket went recently, and how far it got.
    departed: HashMap<DeviceKey, Departure>,
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

/// What a registering socket asks to be sent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume<'a> {
    /// Nothing asked: a device that left within [`REDELIVERY_WINDOW_SECS`] still gets what
    /// it missed (the desktop client never sends `resume_from`, WIRE.md §0 item 11).
    Fresh,
    /// `resume_from=<event_id>`: exactly the events after it, or a resync answer.
    From(&'a str),
    /// The device's previous socket (on any node) got up to this sequence number.
    Missed(u64),
}

/// A registered socket: its id, its send queue, its kick signal, its progress, and whether
/// a requested resume could not be served.
pub(crate) struct Registered {
    pub(crate) id: u64,
    pub(crate) rx: mpsc::Receiver<Outbound>,
    pub(crate) kick: Arc<Notify>,
    pub(crate) progress: Arc<Progress>,
    pub(crate) resync: Option<ResyncReason>,
}

/// The registry of realtime sockets and the replay log.
#[derive(Debug)]
pub struct Hub {
    /// New at every start: what other nodes tell this run of the node apart by.
    boot: String,
    state: Mutex<HubState>,
    /// Cluster mode: the other nodes' sockets (see [`super::presence`]).
    remote: Mutex<Option<PresenceBook>>,
    /// The newest sequence number whose frames are all queued (stored after queueing).
    published: AtomicU64,
    /// False while a cluster node reads the stream's recent events into its log on start.
    caught_up: AtomicBool,
}

impl std::fmt::Debug for HubState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubState")
            .field("tag", &self.tag)
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

impl HubState {
    /// Queues a frame to every socket the audience admits; returns those whose queue is full.
    fn fan_out(&self, audience: &Audience, seq: u64, frame: &Utf8Bytes) -> Vec<u64> {
        let mut overflowed = Vec::new();
        for (id, socket) in &self.sockets {
            if !visible(audience, &socket.view) {
                continue;
            }
            let out = Outbound {
                seq,
                frame: frame.clone(),
            };
            if socket.tx.try_send(out).is_err() {
                overflowed.push(*id);
            }
        }
        overflowed
    }

    fn kick_overflowed(&mut self, overflowed: Vec<u64>) {
        for id in overflowed {
            if let Some(socket) = self.sockets.remove(&id) {
                tracing::info!(socket = id, "realtime socket too slow; disconnecting");
                socket.kick.notify_one();
            }
        }
    }

    fn log(&mut self, logged: Logged) {
        self.log.push_back(logged);
        while self.log.len() > EVENT_LOG_MAX {
            if let Some(old) = self.log.pop_front() {
                self.evicted_upto = old.seq;
            }
        }
    }

    /// The logged events after `seq` that the socket may see.
    fn visible_after<'a>(
        &'a self,
        view: &'a SocketView,
        seq: u64,
    ) -> impl DoubleEndedIterator<Item = &'a Logged> + 'a {
        self.log
            .iter()
            .filter(move |logged| logged.seq > seq && visible(&logged.audience, view))
    }

    fn departed_recently(&mut self, key: &DeviceKey, now: UnixSeconds) -> Option<u64> {
        let departure = self.departed.remove(key)?;
        (now - departure.at <= REDELIVERY_WINDOW_SECS).then_some(departure.seq)
    }
}

impl Hub {
    pub fn new() -> Self {
        let boot = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        Self {
            state: Mutex::new(HubState {
                tag: boot.clone(),
                ..HubState::default()
            }),
            boot,
            remote: Mutex::new(None),
            published: AtomicU64::new(0),
            caught_up: AtomicBool::new(true),
        }
    }

    /// Whether the log holds the recent events (always, on one node).
    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    pub fn set_caught_up(&self, caught_up: bool) {
        self.caught_up.store(caught_up, Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        // A panic while holding the lock cannot leave the registry half-updated in a way
        // that matters more than losing realtime entirely; keep serving.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn sockets(&self) -> usize {
        self.lock().sockets.len()
    }

    /// The newest sequence number whose frames are all queued.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }

    /// This run of the node.
    pub fn boot(&self) -> &str {
        &self.boot
    }

    /// Cluster mode: starts keeping the other nodes' sockets (this node is `node`).
    pub fn track_remote_presence(&self, node: &str) {
        *self.remote.lock().unwrap_or_else(|p| p.into_inner()) = Some(PresenceBook::new(node));
    }

    /// Runs `f` on the book of other nodes' sockets (a default answer on one node).
    pub fn remote_presence<T: Default>(&self, f: impl FnOnce(&mut PresenceBook) -> T) -> T {
        match self.remote.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            Some(book) => f(book),
            None => T::default(),
        }
    }

    /// Every local socket's subscriptions, as presence entries.
    pub fn local_presence(&self) -> Vec<(ChannelId, Member)> {
        let state = self.lock();
        state
            .sockets
            .values()
            .flat_map(|socket| {
                socket
                    .view
                    .subscriptions
                    .iter()
                    .map(|channel| (channel.clone(), socket.member.clone()))
            })
            .collect()
    }

    /// What event ids start with now.
    pub fn tag(&self) -> String {
        self.lock().tag.clone()
    }

    /// Cluster mode: event ids become `<stream tag>:<stream sequence>`, the same on every
    /// node. A different tag (a new stream) empties the log and forgets departures, whose
    /// numbers meant the old stream.
    pub fn follow_stream(&self, tag: &str) {
        let mut state = self.lock();
        if state.tag != tag {
            state.tag = tag.to_owned();
            state.seq = 0;
            state.log.clear();
            state.evicted_upto = 0;
            state.departed.clear();
            self.published.store(0, Ordering::Release);
        }
    }

    /// Sends an ephemeral event (typing, presence) to every visible socket: never logged,
    /// never replayed, no event id. Sockets whose queue is full are disconnected.
    pub fn publish(&self, kind: &str, audience: Audience, payload: &Value) {
        let frame = frame(kind, None, payload, None);
        let mut state = self.lock();
        let overflowed = state.fan_out(&audience, 0, &frame);
        state.kick_overflowed(overflowed);
    }

    /// Hands a committed change's event to this hub (one node): it is numbered, logged for
    /// replay and queued for every visible socket. [`DEVICE_REVOKED_EVENT`] instead closes
    /// the device's sockets.
    pub fn deliver_committed(&self, kind: &str, audience: Audience, payload: &Value, now: UnixSeconds) {
        if self.revoke(kind, &audience, true) {
            return;
        }
        let mut state = self.lock();
        let seq = state.seq + 1;
        self.deliver_locked(&mut state, seq, now, kind, audience, payload, true);
    }

    /// Cluster mode: an event of the stream with its stream sequence number and publish
    /// time. `live` is false while catching up on start (logged for replay, not sent: the
    /// sockets here are newer than it). An event at or below the newest number is a
    /// repeat and ignored.
    pub fn deliver_numbered(
        &self,
        seq: u64,
        at: UnixSeconds,
        kind: &str,
        audience: Audience,
        payload: &Value,
        live: bool,
    ) {
        if self.revoke(kind, &audience, live) {
            return;
        }
        let mut state = self.lock();
        if seq > state.seq {
            self.deliver_locked(&mut state, seq, at, kind, audience, payload, live);
        }
    }

    /// [`DEVICE_REVOKED_EVENT`] is an instruction, not a frame: it closes the device's
    /// sockets (when live) and is never logged. Returns whether `kind` was that.
    fn revoke(&self, kind: &str, audience: &Audience, live: bool) -> bool {
        if kind != DEVICE_REVOKED_EVENT {
            return false;
        }
        if live && let Audience::Device { user, device } = audience {
            self.kick_device(user, device);
        }
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn deliver_locked(
        &self,
        state: &mut HubState,
        seq: u64,
        at: UnixSeconds,
        kind: &str,
        audience: Audience,
        payload: &Value,
        live: bool,
    ) {
        state.seq = seq;
        let event_id = format!("{}:{seq}", state.tag);
        let frame = frame(kind, None, payload, Some(&event_id));
        let overflowed = if live {
            state.fan_out(&audience, seq, &frame)
        } else {
            Vec::new()
        };
        state.log(Logged {
            seq,
            at,
            audience,
            frame,
        });
        self.published.store(seq, Ordering::Release);
        state.kick_overflowed(overflowed);
    }

    /// Registers a socket and queues what it asked for (or missed) first, atomically with
    /// the registration so that no live event is lost or doubled.
    pub(crate) fn register(
        &self,
        server: Option<ServerId>,
        member: Member,
        user_uid: UserUid,
        resume: Resume<'_>,
        now: UnixSeconds,
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
        let key = DeviceKey {
            server: view.server.clone(),
            user: view.user_uid.clone(),
            device: view.device_id.clone(),
        };
        let local = state.departed_recently(&key, now);
        let (tx, rx) = mpsc::channel(SEND_QUEUE_MAX);
        let mut resync = None;
        let mut start = state.seq;
        let replay: Vec<Outbound> = match resume {
            Resume::From(from) => match Self::replay(&state, &view, from) {
                Ok((from, frames)) => {
                    start = from;
                    frames
                }
                Err(reason) => {
                    resync = Some(reason);
                    Vec::new()
                }
            },
            Resume::Missed(seq) => {
                start = seq.min(state.seq);
                Self::missed(&state, &view, start, now)
            }
            Resume::Fresh => match local {
                Some(seq) => {
                    start = seq.min(state.seq);
                    Self::missed(&state, &view, start, now)
                }
                None => Vec::new(),
            },
        };
        for out in replay {
            // Cannot fail: the queue is new and holds more than REPLAY_MAX.
            let _ = tx.try_send(out);
        }
        let kick = Arc::new(Notify::new());
        let progress = Arc::new(Progress::starting_at(start));
        state.sockets.insert(
            id,
            Socket {
                view,
                member,
                tx,
                kick: kick.clone(),
                progress: progress.clone(),
            },
        );
        Ok(Registered {
            id,
            rx,
            kick,
            progress,
            resync,
        })
    }

    fn replay(state: &HubState, view: &SocketView, from: &str) -> Result<(u64, Vec<Outbound>), ResyncReason> {
        let (tag, seq) = from.rsplit_once(':').ok_or(ResyncReason::UnknownEventId)?;
        let seq: u64 = seq.parse().map_err(|_| ResyncReason::UnknownEventId)?;
        if tag != state.tag || seq > state.seq {
            return Err(ResyncReason::UnknownEventId);
        }
        if seq < state.evicted_upto {
            return Err(ResyncReason::TooOld);
        }
        let frames: Vec<Outbound> = state
            .visible_after(view, seq)
            .take(REPLAY_MAX + 1)
            .map(|logged| Outbound {
                seq: logged.seq,
                frame: logged.frame.clone(),
            })
            .collect();
        if frames.len() > REPLAY_MAX {
            return Err(ResyncReason::TooMany);
        }
        Ok((seq, frames))
    }

    /// What a returning device missed: the visible events after `seq` from the last
    /// [`REDELIVERY_WINDOW_SECS`], the newest [`REPLAY_MAX`] of them, in order. Best effort
    /// by design (the client has no resync): it may repeat events the device had, which
    /// the client drops by id.
    fn missed(state: &HubState, view: &SocketView, seq: u64, now: UnixSeconds) -> Vec<Outbound> {
        let mut frames: Vec<Outbound> = state
            .visible_after(view, seq)
            .rev()
            .take_while(|logged| now - logged.at <= REDELIVERY_WINDOW_SECS)
            .take(REPLAY_MAX)
            .map(|logged| Outbound {
                seq: logged.seq,
                frame: logged.frame.clone(),
            })
            .collect();
        frames.reverse();
        frames
    }

    /// Remembers how far a departed device's socket got, for [`Resume::Fresh`] on this
    /// node; at most [`DEPARTED_MAX`] devices, the expired ones dropped first.
    pub(crate) fn record_departure(&self, key: DeviceKey, seq: u64, now: UnixSeconds) {
        let mut state = self.lock();
        if state.departed.len() >= DEPARTED_MAX && !state.departed.contains_key(&key) {
            state
                .departed
                .retain(|_, departure| now - departure.at <= REDELIVERY_WINDOW_SECS);
            if state.departed.len() >= DEPARTED_MAX {
                return;
            }
        }
        state.departed.insert(key, Departure { seq, at: now });
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
            .is_some_and(|socket| socket.tx.try_send(Outbound::reply(frame)).is_err());
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
        let mut members: Vec<Member> = state
            .sockets
            .values()
            .filter(|socket| socket.view.subscriptions.contains(channel))
            .map(|socket| socket.member.clone())
            .collect();
        drop(state);
        members.extend(self.remote_presence(|book| book.members(channel)));
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
