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

use std::collections::{HashMap, VecDeque};
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
    /// Test hook: makes the room's state machine panic on its next command.
    #[doc(hidden)]
    PanicRoom { channel: ChannelId },
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
    poisoned: bool,
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
        }
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
            _ => {
                let found = self
                    .rooms
                    .iter()
                    .find(|(_, slot)| slot.room.accepts_datagram(now, from, contents));
                let found = found.map(|(channel, _)| channel.clone());
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
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                let result = slot.room.handle_datagram(now, from, contents);
                (result, take_outputs(&mut slot.room))
            }));
            if result.is_ok() {
                before.settle(&slot.room, &self.stats);
            }
            match result {
                Ok((Ok(()), outputs)) => queue_outputs(&mut slot.backlog, outputs),
                Ok((Err(err), outputs)) => {
                    queue_outputs(&mut slot.backlog, outputs);
                    tracing::trace!(shard = self.index, %from, error = %err, "datagram refused");
                }
                Err(_) => {
                    tracing::error!(shard = self.index, channel = %channel, "room panicked on a datagram; dropping it");
                    self.drop_room(&channel);
                }
            }
        }
    }

    /// Lets every media room act on time passing.
    pub fn handle_media_timeout(&mut self, now: Instant) {
        for slot in self.rooms.values_mut() {
            let before = Counters::of(&slot.room);
            slot.room.handle_timeout(now);
            before.settle(&slot.room, &self.stats);
            let outputs = take_outputs(&mut slot.room);
            queue_outputs(&mut slot.backlog, outputs);
        }
    }

    /// The earliest time any media room needs [`Shard::handle_media_timeout`].
    pub fn media_deadline(&mut self, now: Instant) -> Option<Instant> {
        self.rooms
            .values_mut()
            .filter_map(|slot| slot.room.poll_timeout(now))
            .min()
    }

    /// Every datagram the rooms want sent.
    pub fn take_transmits(&mut self, out: &mut Vec<crate::sfu::Transmit>) {
        for slot in self.rooms.values_mut() {
            while let Some(transmit) = slot.room.poll_transmit() {
                out.push(transmit);
            }
        }
    }

    fn has_backlog(&self) -> bool {
        self.rooms.values().any(|slot| !slot.backlog.is_empty())
    }

    /// Runs one room step with panic isolation; a panicking room is dropped.
    fn step(&mut self, channel: &ChannelId, command: RoomCommand) -> Result<(), RoomError> {
        let Some(slot) = self.rooms.get_mut(channel) else {
            return Err(RoomError::NotInRoom);
        };
        let now = unix_now();
        let poisoned = slot.poisoned;
        let before = Counters::of(&slot.room);
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            assert!(!poisoned, "test hook: this room was told to panic");
            let result = slot.room.handle_command(now, command);
            (result, take_outputs(&mut slot.room))
        }));
        match result {
            Ok((result, outputs)) => {
                before.settle(&slot.room, &self.stats);
                queue_outputs(&mut slot.backlog, outputs);
                result
            }
            Err(_) => {
                tracing::error!(shard = self.index, channel = %channel, "room panicked; dropping it");
                self.drop_room(channel);
                Err(RoomError::NotInRoom)
            }
        }
    }

    fn drop_room(&mut self, channel: &ChannelId) {
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

    /// Moves each room's backlog into outboxes, as far as they have room.
    fn flush(&mut self) {
        let channels: Vec<ChannelId> = self.rooms.keys().cloned().collect();
        for channel in channels {
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
                        poisoned: false,
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
                        Some(slot) => slot.backlog.push_back(Item::Ack(ack)),
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
            ShardCommand::PanicRoom { channel } => {
                if let Some(slot) = self.rooms.get_mut(&channel) {
                    slot.poisoned = true;
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
