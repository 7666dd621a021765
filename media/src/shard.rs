//! The shard: a glommio executor pinned to one CPU that owns the rooms whose channels hash
//! to it, and does their I/O.
//!
//! Run loop: take a [`ShardCommand`] from the shard's bounded queue, hand it to the room
//! (creating the room on a join), drain the room's outputs into the participants' bounded
//! outboxes, reply. Outboxes that are full are not waited on (that would stall every room
//! of the shard): the room's later frames queue behind in a per-room backlog, retried every
//! [`BACKLOG_RETRY`], and the sender of a relayed message gets its acknowledgement only
//! once every recipient has taken the frame. So a fast sender slows to the pace of the
//! slowest reader (it reads its socket only after the ack) and nothing is dropped; a reader
//! whose outbox stays full for [`STALL_MAX`] is removed from the room and disconnected.
//!
//! A panic inside a room's state machine drops that room only: its participants get
//! `rtc.error` and are disconnected, and the shard keeps serving its other rooms.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openchat_core::{ChannelId, UnixSeconds};

use crate::room::{Frame, LeaveReason, ParticipantId, Room, RoomCommand, RoomError, RoomOutput};

/// Commands waiting for one shard.
pub const SHARD_QUEUE_MAX: usize = 4096;
/// Frames waiting for one participant's connection (WIRE.md: at most 256).
pub const OUTBOX_MAX: usize = 256;
/// How often a room with a backlog retries full outboxes.
pub const BACKLOG_RETRY: Duration = Duration::from_millis(5);
/// A participant whose outbox stays full this long is disconnected.
pub const STALL_MAX: Duration = Duration::from_secs(10);
/// glommio's registered I/O memory per shard; shards do no file I/O, so keep it small
/// (it is locked memory, counted against `ulimit -l`).
pub const SHARD_IO_MEMORY_BYTES: usize = 256 * 1024;

const _: () = assert!(OUTBOX_MAX <= 256);

/// Where a participant's frames go, and how it is told to go away.
#[derive(Debug, Clone)]
pub struct Outbox {
    pub frames: flume::Sender<Frame>,
    /// Receives one reason when the room disconnects the participant.
    pub kick: flume::Sender<String>,
}

/// The receiving ends of an [`Outbox`], for the participant's connection.
#[derive(Debug)]
pub struct OutboxReceiver {
    pub frames: flume::Receiver<Frame>,
    pub kick: flume::Receiver<String>,
}

/// A new outbox and its receiving ends.
pub fn outbox() -> (Outbox, OutboxReceiver) {
    let (frames_tx, frames_rx) = flume::bounded(OUTBOX_MAX);
    let (kick_tx, kick_rx) = flume::bounded(1);
    (
        Outbox {
            frames: frames_tx,
            kick: kick_tx,
        },
        OutboxReceiver {
            frames: frames_rx,
            kick: kick_rx,
        },
    )
}

/// Where a room runs, observed by the shard driver (not by the room).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub shard: usize,
    /// The CPU the shard's thread was running on when it answered.
    pub cpu: Option<usize>,
    pub room_exists: bool,
    pub participants: usize,
}

/// What the front-end asks of a shard.
#[derive(Debug)]
pub enum ShardCommand {
    /// Joins `participant` to `channel`'s room (created on demand). The reply tells whether
    /// the room took it.
    Join {
        channel: ChannelId,
        command: RoomCommand,
        outbox: Outbox,
        reply: flume::Sender<Result<(), RoomError>>,
    },
    /// Any other room command. `ack` is answered once every resulting frame has been
    /// taken by its recipient's outbox (or the recipient was disconnected).
    Room {
        channel: ChannelId,
        command: RoomCommand,
        ack: Option<flume::Sender<()>>,
    },
    Probe {
        channel: ChannelId,
        reply: flume::Sender<Probe>,
    },
    /// The server is shutting down: every room tells its participants that the others left
    /// and closes them (reason `server_shutdown`).
    Shutdown,
    /// Test hook: makes the room's state machine panic the next time the shard calls it on
    /// `path`.
    #[doc(hidden)]
    PanicRoom { channel: ChannelId, path: RoomPath },
}

/// The ways the shard calls into a room; every one goes through [`isolate`], so a room that
/// panics on any of them is dropped alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomPath {
    /// A signaling command (join, media state, offer, leave, ...).
    Command,
    /// A media datagram, and the address lookup on a demultiplexing miss.
    Datagram,
    /// Time passing (`handle_timeout`).
    Timeout,
    /// Asking when the room next needs time (`poll_timeout`).
    Deadline,
    /// Draining the datagrams the room wants sent (`poll_transmit`).
    Drain,
}

impl RoomPath {
    fn as_str(self) -> &'static str {
        match self {
            RoomPath::Command => "command",
            RoomPath::Datagram => "datagram",
            RoomPath::Timeout => "timeout",
            RoomPath::Deadline => "deadline",
            RoomPath::Drain => "drain",
        }
    }
}

/// Runs `call` on a slot's room with panic isolation: `None` when the room panicked (the
/// caller then drops it). The one place the shard enters a room.
fn isolate<T>(slot: &mut Slot, path: RoomPath, call: impl FnOnce(&mut Room) -> T) -> Option<T> {
    let poison = slot.poison;
    let room = &mut slot.room;
    std::panic::catch_unwind(AssertUnwindSafe(move || {
        assert!(poison != Some(path), "test hook: this room was told to panic");
        call(room)
    }))
    .ok()
}

/// Counters a shard keeps for `/metrics`, read from other threads.
#[derive(Debug, Default)]
pub struct ShardStats {
    pub packets_in: AtomicI64,
    pub packets_out: AtomicI64,
    pub bytes_in: AtomicI64,
    pub bytes_out: AtomicI64,
    pub packets_dropped: AtomicI64,
    pub packets_unknown: AtomicI64,
    pub rooms: AtomicI64,
    pub participants: AtomicI64,
    pub rooms_dropped_by_panic: AtomicI64,
    /// Published tracks in this shard's rooms.
    pub tracks: AtomicI64,
    /// Offers the SFU could not answer.
    pub negotiation_errors: AtomicI64,
    /// RTP packets written to subscribers, and ones that could not be.
    pub forwarded: AtomicI64,
    pub forward_drops: AtomicI64,
}

/// A room's counters before a step, to add the step's differences to the shard's stats.
#[derive(Debug, Clone, Copy)]
struct Counters {
    tracks: i64,
    negotiation_errors: u64,
    forwarded: u64,
    dropped: u64,
}

impl Counters {
    fn of(room: &Room) -> Self {
        let media = room.media_stats();
        Self {
            tracks: room.tracks().len() as i64,
            negotiation_errors: room.negotiation_errors(),
            forwarded: media.forwarded,
            dropped: media.dropped,
        }
    }

    /// Adds what changed since `self` to `stats`.
    fn settle(self, room: &Room, stats: &ShardStats) {
        let now = Self::of(room);
        let delta = |a: u64, b: u64| b.saturating_sub(a) as i64;
        if now.tracks != self.tracks {
            stats
                .tracks
                .fetch_add(now.tracks - self.tracks, Ordering::Relaxed);
        }
        stats.negotiation_errors.fetch_add(
            delta(self.negotiation_errors, now.negotiation_errors),
            Ordering::Relaxed,
        );
        stats
            .forwarded
            .fetch_add(delta(self.forwarded, now.forwarded), Ordering::Relaxed);
        stats
            .forward_drops
            .fetch_add(delta(self.dropped, now.dropped), Ordering::Relaxed);
    }
}

/// Queues a room's outputs in its backlog, in order.
fn queue_outputs(backlog: &mut VecDeque<Item>, outputs: Vec<RoomOutput>) {
    for output in outputs {
        let item = match output {
            RoomOutput::Send { to, frame } => Item::Send(Pending {
                frame,
                to,
                since: Instant::now(),
            }),
            RoomOutput::Close { to, reason } => Item::Close { to, reason },
        };
        backlog.push_back(item);
    }
}

fn take_outputs(room: &mut Room) -> Vec<RoomOutput> {
    let mut outputs = Vec::new();
    while let Some(output) = room.poll_output() {
        outputs.push(output);
    }
    outputs
}

struct Pending {
    frame: Frame,
    to: ParticipantId,
    since: Instant,
}

/// One room with its participants' outboxes and the frames not yet taken.
struct Slot {
    room: Room,
    outboxes: HashMap<ParticipantId, Outbox>,
    /// Undelivered sends, in order; acks wait until everything queued before them is out.
    backlog: VecDeque<Item>,
    /// Test hook: the path on which this room panics.
    poison: Option<RoomPath>,
}

enum Item {
    Send(Pending),
    Close { to: ParticipantId, reason: LeaveReason },
    Ack(flume::Sender<()>),
}

fn unix_now() -> UnixSeconds {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The CPU this thread runs on, from `/proc/thread-self/stat` (field 39, "processor").
pub fn current_cpu() -> Option<usize> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    // Field 3 is the first after the name; "processor" is field 39.
    after_name.split_whitespace().nth(39 - 3)?.parse().ok()
}

/// Remote addresses remembered for demultiplexing before stale ones are pruned.
pub const BY_ADDRESS_MAX: usize = 65_536;
/// Datagrams received but not yet handled by the shard loop; beyond this they are dropped
/// (counted), as a router would.
pub const DATAGRAM_QUEUE_MAX: usize = 4096;
/// Whether `contents` has the fixed header of a STUN message (RFC 8489 §5: the two top bits
/// zero, a length that is a multiple of 4 and fits, the magic cookie).
pub fn looks_like_stun(contents: &[u8]) -> bool {
    const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
    if contents.len() < 20 || contents[0] & 0xC0 != 0 || contents[4..8] != MAGIC_COOKIE {
        return false;
    }
    let length = usize::from(u16::from_be_bytes([contents[2], contents[3]]));
    length % 4 == 0 && 20 + length == contents.len()
}

/// Heap entries kept per room with a deadline (plus a slack) before the heap is rebuilt.
pub const TIMERS_PER_ROOM_MAX: usize = 4;
const TIMERS_SLACK: usize = 1024;
/// Largest datagram read from the media socket.
pub const DATAGRAM_BYTES_MAX: usize = 2048;

/// The shard's state, owned by its executor thread.
pub struct Shard {
    index: usize,
    participants_max: usize,
    rooms: HashMap<ChannelId, Slot>,
    stats: Arc<ShardStats>,
    /// The address advertised as the ICE-lite candidate of this shard's rooms, and whether
    /// its IP is fixed (else each participant's signaling address is advertised).
    media_addr: Option<std::net::SocketAddr>,
    fixed_media_ip: bool,
    /// O(1) demultiplexing: remote address -> room.
    by_address: HashMap<std::net::SocketAddr, ChannelId>,
    /// Per-turn work follows what happened, not what exists: rooms with a non-empty backlog,
    /// rooms called since their deadline was last asked, rooms that may have datagrams to
    /// send, and a heap of each room's next deadline (an entry is stale when `deadlines`
    /// holds another time for its room).
    backlogged: HashSet<ChannelId>,
    touched: HashSet<ChannelId>,
    sending: HashSet<ChannelId>,
    deadlines: HashMap<ChannelId, Instant>,
    timers: BinaryHeap<Reverse<(Instant, ChannelId)>>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("index", &self.index)
            .field("rooms", &self.rooms.len())
            .finish()
    }
}

impl Shard {
    pub fn new(index: usize, participants_max: usize, stats: Arc<ShardStats>) -> Self {
        Self {
            index,
            participants_max,
            rooms: HashMap::new(),
            stats,
            media_addr: None,
            fixed_media_ip: false,
            by_address: HashMap::new(),
            backlogged: HashSet::new(),
            touched: HashSet::new(),
            sending: HashSet::new(),
            deadlines: HashMap::new(),
            timers: BinaryHeap::new(),
        }
    }

    /// Notes that `channel`'s room was called: its deadline must be asked again, it may have
    /// datagrams to send, and its backlog may have grown.
    fn mark(&mut self, channel: &ChannelId) {
        let Some(slot) = self.rooms.get(channel) else {
            return;
        };
        if !slot.backlog.is_empty() && !self.backlogged.contains(channel) {
            self.backlogged.insert(channel.clone());
        }
        if !self.touched.contains(channel) {
            self.touched.insert(channel.clone());
        }
        if !self.sending.contains(channel) {
            self.sending.insert(channel.clone());
        }
    }

    /// Forgets a room that is gone (its heap entries become stale).
    fn forget(&mut self, channel: &ChannelId) {
        self.backlogged.remove(channel);
        self.touched.remove(channel);
        self.sending.remove(channel);
        self.deadlines.remove(channel);
    }

    /// Gives the shard's rooms a media path advertised at `addr`.
    pub fn with_media_addr(mut self, addr: std::net::SocketAddr, fixed_ip: bool) -> Self {
        self.media_addr = Some(addr);
        self.fixed_media_ip = fixed_ip;
        self
    }

    /// Routes one datagram to its room: by remote address, else by asking the rooms.
    pub fn handle_datagram(&mut self, now: Instant, from: std::net::SocketAddr, contents: &[u8]) {
        self.stats.packets_in.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_in
            .fetch_add(contents.len() as i64, Ordering::Relaxed);
        let channel = match self.by_address.get(&from) {
            Some(channel) if self.rooms.contains_key(channel) => Some(channel.clone()),
            // An address is learnt only from an ICE binding request: anything else from an
            // unknown address is dropped without asking the rooms (a flood of garbage from
            // spoofed addresses must not cost a scan over every room and peer).
            _ if !looks_like_stun(contents) => None,
            _ => {
                let mut found = None;
                let mut failed = Vec::new();
                for (channel, slot) in &mut self.rooms {
                    match isolate(slot, RoomPath::Datagram, |room| {
                        room.accepts_datagram(now, from, contents)
                    }) {
                        Some(true) => {
                            found = Some(channel.clone());
                            break;
                        }
                        Some(false) => {}
                        None => failed.push(channel.clone()),
                    }
                }
                for channel in failed {
                    self.drop_room(&channel, RoomPath::Datagram);
                }
                if let Some(channel) = &found {
                    if self.by_address.len() >= BY_ADDRESS_MAX {
                        self.by_address.retain(|_, c| self.rooms.contains_key(c));
                    }
                    self.by_address.insert(from, channel.clone());
                }
                found
            }
        };
        let Some(channel) = channel else {
            self.stats.packets_unknown.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if let Some(slot) = self.rooms.get_mut(&channel) {
            let before = Counters::of(&slot.room);
            let result = isolate(slot, RoomPath::Datagram, |room| {
                let result = room.handle_datagram(now, from, contents);
                (result, take_outputs(room))
            });
            if result.is_some() {
                before.settle(&slot.room, &self.stats);
            }
            match result {
                Some((Ok(()), outputs)) => {
                    queue_outputs(&mut slot.backlog, outputs);
                    self.mark(&channel);
                }
                Some((Err(err), outputs)) => {
                    queue_outputs(&mut slot.backlog, outputs);
                    self.mark(&channel);
                    tracing::trace!(shard = self.index, %from, error = %err, "datagram refused");
                }
                None => self.drop_room(&channel, RoomPath::Datagram),
            }
        }
    }

    /// Lets the media rooms whose deadline has come act on time passing (only those: the
    /// others are not called).
    pub fn handle_media_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.timers.peek()
            && *at <= now
        {
            let Some(Reverse((at, channel))) = self.timers.pop() else {
                break;
            };
            if self.deadlines.get(&channel) != Some(&at) {
                continue;
            }
            self.deadlines.remove(&channel);
            let Some(slot) = self.rooms.get_mut(&channel) else {
                continue;
            };
            let before = Counters::of(&slot.room);
            let outputs = isolate(slot, RoomPath::Timeout, |room| {
                room.handle_timeout(now);
                take_outputs(room)
            });
            match outputs {
                Some(outputs) => {
                    before.settle(&slot.room, &self.stats);
                    queue_outputs(&mut slot.backlog, outputs);
                    self.mark(&channel);
                }
                None => self.drop_room(&channel, RoomPath::Timeout),
            }
        }
    }

    /// The earliest time a media room needs [`Shard::handle_media_timeout`]. Only rooms
    /// called since they were last asked are asked again; the rest keep their deadline.
    pub fn media_deadline(&mut self, now: Instant) -> Option<Instant> {
        for channel in std::mem::take(&mut self.touched) {
            let Some(slot) = self.rooms.get_mut(&channel) else {
                continue;
            };
            match isolate(slot, RoomPath::Deadline, |room| room.poll_timeout(now)) {
                Some(deadline) => {
                    // Asking may drain connections, which queues datagrams.
                    if !self.sending.contains(&channel) {
                        self.sending.insert(channel.clone());
                    }
                    match deadline {
                        Some(at) if self.deadlines.get(&channel) != Some(&at) => {
                            self.deadlines.insert(channel.clone(), at);
                            self.timers.push(Reverse((at, channel)));
                        }
                        Some(_) => {}
                        None => {
                            self.deadlines.remove(&channel);
                        }
                    }
                }
                None => self.drop_room(&channel, RoomPath::Deadline),
            }
        }
        // Stale entries (a room gone, or its deadline moved) are discarded on the way; a heap
        // grown far beyond the rooms is rebuilt from the live deadlines.
        if self.timers.len() > TIMERS_PER_ROOM_MAX * self.deadlines.len() + TIMERS_SLACK {
            self.timers = self
                .deadlines
                .iter()
                .map(|(channel, at)| Reverse((*at, channel.clone())))
                .collect();
        }
        while let Some(Reverse((at, channel))) = self.timers.peek() {
            if self.deadlines.get(channel) == Some(at) {
                return Some(*at);
            }
            self.timers.pop();
        }
        None
    }

    /// Every datagram the rooms want sent (only rooms called since the last drain can have
    /// any).
    pub fn take_transmits(&mut self, out: &mut Vec<crate::sfu::Transmit>) {
        let mut failed = Vec::new();
        for channel in std::mem::take(&mut self.sending) {
            let Some(slot) = self.rooms.get_mut(&channel) else {
                continue;
            };
            let mark = out.len();
            let drained = isolate(slot, RoomPath::Drain, |room| {
                while let Some(transmit) = room.poll_transmit() {
                    out.push(transmit);
                }
            });
            if drained.is_none() {
                // What a failed room queued before it panicked is not sent.
                out.truncate(mark);
                failed.push(channel);
            }
        }
        for channel in failed {
            self.drop_room(&channel, RoomPath::Drain);
        }
    }

    fn has_backlog(&self) -> bool {
        !self.backlogged.is_empty()
    }

    /// Runs one room step with panic isolation; a panicking room is dropped.
    fn step(&mut self, channel: &ChannelId, command: RoomCommand) -> Result<(), RoomError> {
        let Some(slot) = self.rooms.get_mut(channel) else {
            return Err(RoomError::NotInRoom);
        };
        let now = unix_now();
        let before = Counters::of(&slot.room);
        let result = isolate(slot, RoomPath::Command, |room| {
            let result = room.handle_command(now, command);
            (result, take_outputs(room))
        });
        match result {
            Some((result, outputs)) => {
                before.settle(&slot.room, &self.stats);
                queue_outputs(&mut slot.backlog, outputs);
                self.mark(channel);
                result
            }
            None => {
                self.drop_room(channel, RoomPath::Command);
                Err(RoomError::NotInRoom)
            }
        }
    }

    /// Drops a room whose state machine panicked on `path`: its participants get
    /// `rtc_room_failed` and are disconnected; waiting acks are released; the rest of the
    /// shard goes on.
    fn drop_room(&mut self, channel: &ChannelId, path: RoomPath) {
        tracing::error!(shard = self.index, channel = %channel, path = path.as_str(), "room panicked; dropping it");
        self.forget(channel);
        if let Some(slot) = self.rooms.remove(channel) {
            self.stats.rooms.fetch_sub(1, Ordering::Relaxed);
            self.stats
                .participants
                .fetch_sub(slot.outboxes.len() as i64, Ordering::Relaxed);
            self.stats.rooms_dropped_by_panic.fetch_add(1, Ordering::Relaxed);
            self.stats
                .tracks
                .fetch_sub(slot.room.tracks().len() as i64, Ordering::Relaxed);
            let error = serde_json::json!({
                "type": "rtc.error",
                "channel_id": channel.as_str(),
                "payload": {"code": "rtc_room_failed", "message": "the voice room failed; rejoin", "retryable": true},
            });
            let frame: Frame = Arc::from(error.to_string());
            for outbox in slot.outboxes.values() {
                let _ = outbox.frames.try_send(frame.clone());
                let _ = outbox.kick.try_send("room failed".into());
            }
            for item in slot.backlog {
                if let Item::Ack(ack) = item {
                    let _ = ack.try_send(());
                }
            }
        }
    }

    /// Moves each room's backlog into outboxes, as far as they have room (the driver calls
    /// this after every turn).
    pub fn flush(&mut self) {
        for channel in std::mem::take(&mut self.backlogged) {
            let mut stalled: Vec<ParticipantId> = Vec::new();
            let mut closed: Vec<ParticipantId> = Vec::new();
            if let Some(slot) = self.rooms.get_mut(&channel) {
                while let Some(item) = slot.backlog.front() {
                    match item {
                        Item::Send(pending) => {
                            let Some(outbox) = slot.outboxes.get(&pending.to) else {
                                slot.backlog.pop_front();
                                continue;
                            };
                            match outbox.frames.try_send(pending.frame.clone()) {
                                Ok(()) | Err(flume::TrySendError::Disconnected(_)) => {
                                    slot.backlog.pop_front();
                                }
                                Err(flume::TrySendError::Full(_)) => {
                                    if pending.since.elapsed() >= STALL_MAX {
                                        stalled.push(pending.to.clone());
                                    }
                                    break;
                                }
                            }
                        }
                        Item::Close { to, reason } => {
                            if let Some(outbox) = slot.outboxes.remove(to) {
                                let _ = outbox.kick.try_send(reason.as_str().into());
                                closed.push(to.clone());
                            }
                            slot.backlog.pop_front();
                        }
                        Item::Ack(_) => {
                            if let Some(Item::Ack(ack)) = slot.backlog.pop_front() {
                                let _ = ack.try_send(());
                            }
                        }
                    }
                }
            }
            if self
                .rooms
                .get(&channel)
                .is_some_and(|slot| !slot.backlog.is_empty())
            {
                // Still waiting for a full outbox: tried again next turn.
                self.backlogged.insert(channel.clone());
            }
            self.stats
                .participants
                .fetch_sub(closed.len() as i64, Ordering::Relaxed);
            for to in stalled {
                tracing::info!(shard = self.index, channel = %channel, participant = %to, "outbox full too long; disconnecting");
                self.remove_participant(&channel, &to, LeaveReason::TooSlow);
            }
        }
    }

    /// Removes a participant whose connection cannot keep up: its pending frames are
    /// dropped, the room is told, and its connection is kicked.
    fn remove_participant(&mut self, channel: &ChannelId, id: &ParticipantId, reason: LeaveReason) {
        if let Some(slot) = self.rooms.get_mut(channel) {
            slot.backlog
                .retain(|item| !matches!(item, Item::Send(p) if p.to == *id));
            if let Some(outbox) = slot.outboxes.remove(id) {
                let _ = outbox.kick.try_send(reason.as_str().into());
                self.stats.participants.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let _ = self.step(
            channel,
            RoomCommand::Leave {
                participant: id.clone(),
                reason: LeaveReason::Left,
            },
        );
        self.cleanup(channel);
    }

    fn cleanup(&mut self, channel: &ChannelId) {
        let empty = self
            .rooms
            .get(channel)
            .is_some_and(|slot| slot.room.is_empty() && slot.backlog.is_empty());
        if empty {
            self.rooms.remove(channel);
            self.forget(channel);
            self.stats.rooms.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Handles one command (the shard loop calls [`Shard::flush`] after it).
    pub fn handle(&mut self, command: ShardCommand) {
        match command {
            ShardCommand::Join {
                channel,
                command,
                outbox,
                reply,
            } => {
                let RoomCommand::Join { participant, .. } = &command else {
                    let _ = reply.try_send(Err(RoomError::NotInRoom));
                    return;
                };
                let id = participant.id.clone();
                if !self.rooms.contains_key(&channel) {
                    let slot = Slot {
                        room: match self.media_addr {
                            Some(addr) => Room::with_media(
                                channel.as_str(),
                                self.participants_max,
                                addr,
                                self.fixed_media_ip,
                            ),
                            None => Room::new(channel.as_str(), self.participants_max),
                        },
                        outboxes: HashMap::new(),
                        backlog: VecDeque::new(),
                        poison: None,
                    };
                    self.rooms.insert(channel.clone(), slot);
                    self.stats.rooms.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(slot) = self.rooms.get_mut(&channel) {
                    slot.outboxes.insert(id.clone(), outbox);
                }
                let result = self.step(&channel, command);
                match &result {
                    Ok(()) => {
                        self.stats.participants.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        if let Some(slot) = self.rooms.get_mut(&channel) {
                            slot.outboxes.remove(&id);
                        }
                        self.cleanup(&channel);
                    }
                }
                let _ = reply.try_send(result);
            }
            ShardCommand::Room {
                channel,
                command,
                ack,
            } => {
                let leaving = match &command {
                    RoomCommand::Leave { participant, .. } => Some(participant.clone()),
                    _ => None,
                };
                let result = self.step(&channel, command);
                if let Some(id) = leaving
                    && result.is_ok()
                    && let Some(slot) = self.rooms.get_mut(&channel)
                {
                    slot.backlog
                        .retain(|item| !matches!(item, Item::Send(p) if p.to == id));
                    if slot.outboxes.remove(&id).is_some() {
                        self.stats.participants.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                if let Some(ack) = ack {
                    match self.rooms.get_mut(&channel) {
                        Some(slot) => {
                            slot.backlog.push_back(Item::Ack(ack));
                            self.mark(&channel);
                        }
                        None => {
                            let _ = ack.try_send(());
                        }
                    }
                }
                self.cleanup(&channel);
            }
            ShardCommand::Probe { channel, reply } => {
                let slot = self.rooms.get(&channel);
                let _ = reply.try_send(Probe {
                    shard: self.index,
                    cpu: current_cpu(),
                    room_exists: slot.is_some(),
                    participants: slot.map_or(0, |slot| slot.room.len()),
                });
            }
            ShardCommand::Shutdown => {
                let channels: Vec<ChannelId> = self.rooms.keys().cloned().collect();
                for channel in channels {
                    let _ = self.step(&channel, RoomCommand::Shutdown);
                }
            }
            ShardCommand::PanicRoom { channel, path } => {
                if let Some(slot) = self.rooms.get_mut(&channel) {
                    slot.poison = Some(path);
                }
            }
        }
    }

    /// The executor's loop: until every sender of `commands` is gone. With a media socket,
    /// a receive task feeds datagrams in, and the rooms' transmits go out after each step.
    pub async fn run(
        mut self,
        commands: flume::Receiver<ShardCommand>,
        socket: Option<glommio::net::UdpSocket>,
    ) {
        let socket = socket.map(std::rc::Rc::new);
        let (datagram_tx, datagrams) = flume::bounded::<(std::net::SocketAddr, Vec<u8>)>(DATAGRAM_QUEUE_MAX);
        if let Some(socket) = socket.clone() {
            let stats = self.stats.clone();
            glommio::spawn_local(async move {
                let mut buffer = vec![0u8; DATAGRAM_BYTES_MAX];
                loop {
                    match socket.recv_from(&mut buffer).await {
                        Ok((len, from)) => {
                            if datagram_tx.try_send((from, buffer[..len].to_vec())).is_err() {
                                stats.packets_dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "media socket receive failed");
                            glommio::timer::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            })
            .detach();
        } else {
            drop(datagram_tx);
        }
        let mut transmits = Vec::new();
        loop {
            let now = Instant::now();
            let mut wait = Duration::from_secs(3600);
            if self.has_backlog() {
                wait = wait.min(BACKLOG_RETRY);
            }
            if let Some(deadline) = self.media_deadline(now) {
                wait = wait.min(deadline.saturating_duration_since(now));
            }
            match next_wake(&commands, &datagrams, socket.is_some(), wait).await {
                Wake::Command(Some(command)) => {
                    self.handle(command);
                    while let Ok(command) = commands.try_recv() {
                        self.handle(command);
                    }
                }
                Wake::Command(None) => break,
                Wake::Datagram((from, contents)) => {
                    let now = Instant::now();
                    self.handle_datagram(now, from, &contents);
                    while let Ok((from, contents)) = datagrams.try_recv() {
                        self.handle_datagram(now, from, &contents);
                    }
                }
                Wake::Timer => self.handle_media_timeout(Instant::now()),
            }
            self.flush();
            if let Some(socket) = &socket {
                self.take_transmits(&mut transmits);
                for transmit in transmits.drain(..) {
                    match socket.send_to(&transmit.contents, transmit.destination).await {
                        Ok(sent) => {
                            self.stats.packets_out.fetch_add(1, Ordering::Relaxed);
                            self.stats.bytes_out.fetch_add(sent as i64, Ordering::Relaxed);
                        }
                        Err(err) => tracing::trace!(error = %err, "media send failed"),
                    }
                }
            }
        }
        tracing::info!(shard = self.index, "shard stopped");
    }
}

enum Wake {
    Command(Option<ShardCommand>),
    Datagram((std::net::SocketAddr, Vec<u8>)),
    Timer,
}

/// Waits for the first of: a command, a datagram, the deadline.
async fn next_wake(
    commands: &flume::Receiver<ShardCommand>,
    datagrams: &flume::Receiver<(std::net::SocketAddr, Vec<u8>)>,
    media: bool,
    wait: Duration,
) -> Wake {
    use futures_util::future::{Either, select};
    let command = std::pin::pin!(async { Wake::Command(commands.recv_async().await.ok()) });
    let datagram = std::pin::pin!(async {
        match datagrams.recv_async().await {
            Ok(datagram) if media => Wake::Datagram(datagram),
            _ => std::future::pending().await,
        }
    });
    let timer = std::pin::pin!(async {
        glommio::timer::sleep(wait).await;
        Wake::Timer
    });
    match select(command, select(datagram, timer)).await {
        Either::Left((wake, _)) => wake,
        Either::Right((Either::Left((wake, _)), _)) | Either::Right((Either::Right((wake, _)), _)) => wake,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::ParticipantInfo;

    fn join(shard: &mut Shard, channel: &ChannelId, id: &str) -> OutboxReceiver {
        let (outbox, receiver) = outbox();
        let (reply, answer) = flume::bounded(1);
        shard.handle(ShardCommand::Join {
            channel: channel.clone(),
            command: RoomCommand::Join {
                participant: ParticipantInfo {
                    id: ParticipantId(id.into()),
                    server_id: "srv_1".into(),
                    user_uid: format!("uid_{id}"),
                    device_id: "d".into(),
                    permissions: openchat_core::ticket::Permissions::ALL,
                },
                request_id: None,
            },
            outbox,
            reply,
        });
        assert_eq!(answer.try_recv().unwrap(), Ok(()));
        shard.flush();
        receiver
    }

    fn frames(receiver: &OutboxReceiver) -> Vec<String> {
        receiver.frames.try_iter().map(|f| f.to_string()).collect()
    }

    /// A room that panics on `path` is dropped and its participant told; a second room on
    /// the same shard keeps working.
    fn a_panic_on(path: RoomPath, call: impl FnOnce(&mut Shard)) {
        let (stats, mut shard, [a, b], [in_a, in_b]) = two_media_rooms();
        frames(&in_a);
        frames(&in_b);
        shard.handle(ShardCommand::PanicRoom {
            channel: a.clone(),
            path,
        });
        call(&mut shard);
        shard.flush();
        assert!(
            frames(&in_a).iter().any(|f| f.contains("rtc_room_failed")),
            "{path:?}: the failed room's participant is told"
        );
        assert_eq!(in_a.kick.try_recv().as_deref(), Ok("room failed"));
        assert_eq!(stats.rooms_dropped_by_panic.load(Ordering::Relaxed), 1);
        assert_eq!(stats.rooms.load(Ordering::Relaxed), 1);
        // The other room still answers.
        shard.handle(ShardCommand::Room {
            channel: b.clone(),
            command: RoomCommand::Ping {
                from: ParticipantId("pb".into()),
                request_id: Some("ping_1".into()),
            },
            ack: None,
        });
        shard.flush();
        assert!(frames(&in_b).iter().any(|f| f.contains("ping_1")), "{path:?}");
        assert!(in_b.kick.try_recv().is_err());
    }

    fn ping(shard: &mut Shard, channel: &ChannelId, from: &str) {
        shard.handle(ShardCommand::Room {
            channel: channel.clone(),
            command: RoomCommand::Ping {
                from: ParticipantId(from.into()),
                request_id: None,
            },
            ack: None,
        });
    }

    fn media_shard(stats: &Arc<ShardStats>) -> Shard {
        Shard::new(0, 10, stats.clone()).with_media_addr("127.0.0.1:50000".parse().unwrap(), true)
    }

    /// A media shard with rooms `vc_a` (participant `pa`) and `vc_b` (`pb`).
    fn two_media_rooms() -> (Arc<ShardStats>, Shard, [ChannelId; 2], [OutboxReceiver; 2]) {
        let stats = Arc::new(ShardStats::default());
        let mut shard = media_shard(&stats);
        let (a, b) = (
            ChannelId::parse("vc_a").unwrap(),
            ChannelId::parse("vc_b").unwrap(),
        );
        let in_a = join(&mut shard, &a, "pa");
        let in_b = join(&mut shard, &b, "pb");
        (stats, shard, [a, b], [in_a, in_b])
    }

    #[test]
    fn only_rooms_whose_deadline_has_come_are_timed_out() {
        let (stats, mut shard, [_a, b], _receivers) = two_media_rooms();
        let t0 = Instant::now();
        let first = shard.media_deadline(t0).expect("media rooms have deadlines");
        // B is called later, so its deadline moves later than A's.
        let later = t0 + Duration::from_millis(50);
        ping(&mut shard, &b, "pb");
        assert_eq!(shard.media_deadline(later), Some(first), "A is still first");
        shard.handle(ShardCommand::PanicRoom {
            channel: b.clone(),
            path: RoomPath::Timeout,
        });
        shard.handle_media_timeout(first);
        assert_eq!(
            stats.rooms_dropped_by_panic.load(Ordering::Relaxed),
            0,
            "B is not due, so it was not called"
        );
        let next = shard
            .media_deadline(first)
            .expect("both rooms still have deadlines");
        assert!(next > first);
        shard.handle_media_timeout(later + Duration::from_secs(1));
        assert_eq!(
            stats.rooms_dropped_by_panic.load(Ordering::Relaxed),
            1,
            "B was due and called"
        );
    }

    #[test]
    fn only_rooms_called_since_the_last_drain_are_drained() {
        let (stats, mut shard, [a, b], _receivers) = two_media_rooms();
        let mut out = Vec::new();
        shard.media_deadline(Instant::now());
        shard.take_transmits(&mut out);
        shard.handle(ShardCommand::PanicRoom {
            channel: a.clone(),
            path: RoomPath::Drain,
        });
        ping(&mut shard, &b, "pb");
        shard.take_transmits(&mut out);
        assert_eq!(
            stats.rooms_dropped_by_panic.load(Ordering::Relaxed),
            0,
            "A had nothing new"
        );
        ping(&mut shard, &a, "pa");
        shard.take_transmits(&mut out);
        assert_eq!(
            stats.rooms_dropped_by_panic.load(Ordering::Relaxed),
            1,
            "A was called, then drained"
        );
        // The backlog set is empty once every frame is out: nothing left to flush.
        shard.flush();
        assert!(!shard.has_backlog());
    }

    #[test]
    fn stun_headers_are_recognised_and_everything_else_is_not() {
        let mut binding = vec![0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x42];
        binding.extend_from_slice(&[7; 12]);
        binding.extend_from_slice(&[0; 8]);
        assert!(looks_like_stun(&binding));
        let mut rtp = binding.clone();
        rtp[0] = 0x80;
        assert!(!looks_like_stun(&rtp), "RTP/RTCP start with version 2");
        let mut dtls = binding.clone();
        dtls[0] = 22;
        dtls[4] = 0xFE;
        assert!(!looks_like_stun(&dtls));
        assert!(!looks_like_stun(&binding[..19]));
        assert!(!looks_like_stun(&binding[..24]), "the length must match");
    }

    #[test]
    fn a_datagram_from_an_unknown_address_that_is_not_stun_asks_no_room() {
        let stats = Arc::new(ShardStats::default());
        let mut shard = media_shard(&stats);
        let a = ChannelId::parse("vc_a").unwrap();
        let _in_a = join(&mut shard, &a, "pa");
        // Any call into the room would now panic and drop it.
        shard.handle(ShardCommand::PanicRoom {
            channel: a.clone(),
            path: RoomPath::Datagram,
        });
        let from: std::net::SocketAddr = "203.0.113.7:40000".parse().unwrap();
        let mut garbage = vec![0x80u8; 172];
        garbage[1] = 111;
        shard.handle_datagram(Instant::now(), from, &garbage);
        assert_eq!(stats.packets_unknown.load(Ordering::Relaxed), 1);
        assert_eq!(
            stats.rooms_dropped_by_panic.load(Ordering::Relaxed),
            0,
            "no room was asked"
        );
        // A binding request is worth asking the rooms about.
        let mut binding = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
        binding.extend_from_slice(&[9; 12]);
        shard.handle_datagram(Instant::now(), from, &binding);
        assert_eq!(stats.rooms_dropped_by_panic.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_room_that_panics_on_a_command_is_dropped_alone() {
        a_panic_on(RoomPath::Command, |shard| {
            let a = ChannelId::parse("vc_a").unwrap();
            let ping = RoomCommand::Ping {
                from: ParticipantId("pa".into()),
                request_id: None,
            };
            shard.handle(ShardCommand::Room {
                channel: a,
                command: ping,
                ack: None,
            });
        });
    }

    #[test]
    fn a_room_that_panics_in_its_timeout_path_is_dropped_alone() {
        a_panic_on(RoomPath::Timeout, |shard| {
            let now = Instant::now();
            shard.media_deadline(now);
            shard.handle_media_timeout(now + Duration::from_secs(1));
        });
    }

    #[test]
    fn a_room_that_panics_while_its_deadline_is_asked_is_dropped_alone() {
        a_panic_on(RoomPath::Deadline, |shard| {
            shard.media_deadline(Instant::now());
        });
    }

    #[test]
    fn a_room_that_panics_while_draining_transmits_is_dropped_alone() {
        a_panic_on(RoomPath::Drain, |shard| {
            let mut out = Vec::new();
            shard.take_transmits(&mut out);
            assert!(out.is_empty());
        });
    }
}
