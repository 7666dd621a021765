//! [`ShardCore`]: one shard's rooms, their backlogs and acks, the media demultiplexer and
//! the room timers, as a sans-IO state machine. Time is a parameter of every call.
//!
//! Per-call work follows what happened, not what exists: rooms live in a slab and are
//! reached by key; a call into a room marks it on short lists (deadline to ask again,
//! datagrams to drain, backlog to flush) that the next step consumes; room deadlines sit in
//! a heap, so a timeout reaches only due rooms; a standing backlog is retried at its own
//! time. Nothing walks every room or clones every id per call.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use openchat_core::ChannelId;
use slab::Slab;

use super::{BACKLOG_RETRY, Now, Outbox, Probe, RoomPath, STALL_MAX, ShardCommand, ShardStats};
use crate::demux::{Demux, Lookup, Route};
use crate::room::{Frame, LeaveReason, ParticipantId, Room, RoomCommand, RoomError, RoomOutput};
use crate::sfu::Transmit;

/// Heap entries kept per room with a deadline (plus a slack) before the heap is rebuilt.
pub const TIMERS_PER_ROOM_MAX: usize = 4;
const TIMERS_SLACK: usize = 1024;

/// A room's place in the slab, with the serial that tells it from a later room in the
/// same place (list and heap entries of a room that is gone are recognised and skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    slot: usize,
    serial: u64,
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
        let errors = delta(self.negotiation_errors, now.negotiation_errors);
        if errors != 0 {
            stats.negotiation_errors.fetch_add(errors, Ordering::Relaxed);
        }
        let forwarded = delta(self.forwarded, now.forwarded);
        if forwarded != 0 {
            stats.forwarded.fetch_add(forwarded, Ordering::Relaxed);
        }
        let dropped = delta(self.dropped, now.dropped);
        if dropped != 0 {
            stats.forward_drops.fetch_add(dropped, Ordering::Relaxed);
        }
    }
}

struct Pending {
    frame: Frame,
    to: ParticipantId,
    /// When the frame was queued, for the stall cut-off.
    since: Instant,
}

enum Item {
    Send(Pending),
    Close { to: ParticipantId, reason: LeaveReason },
    Ack(flume::Sender<()>),
}

/// One room with its participants' outboxes, the frames not yet taken, and its place on the
/// core's per-call lists.
struct Slot {
    channel: ChannelId,
    serial: u64,
    room: Room,
    outboxes: HashMap<ParticipantId, Outbox>,
    /// Undelivered sends, in order; acks wait until everything queued before them is out.
    backlog: VecDeque<Item>,
    /// Test hook: the path on which this room panics.
    poison: Option<RoomPath>,
    /// On `touched`: called since its deadline was last asked.
    touched: bool,
    /// On `sending`: called since its transmits were last drained.
    sending: bool,
    /// On `fresh`: its backlog grew during the current call.
    fresh: bool,
    /// A standing backlog is retried at this time (the room is on `retrying`).
    retry_at: Option<Instant>,
    /// The room's deadline as last asked (the live entry in the heap).
    deadline: Option<Instant>,
}

/// The shard's rooms as a sans-IO state machine.
pub struct ShardCore {
    index: usize,
    participants_max: usize,
    stats: Arc<ShardStats>,
    /// The address advertised as the ICE-lite candidate of this shard's rooms, and whether
    /// its IP is fixed (else each participant's signaling address is advertised).
    media_addr: Option<SocketAddr>,
    fixed_media_ip: bool,
    rooms: Slab<Slot>,
    by_channel: HashMap<ChannelId, Key>,
    next_serial: u64,
    /// Remote address (or the ufrag of a binding request) -> (room, connection).
    demux: Demux<Key>,
    touched: Vec<Key>,
    sending: Vec<Key>,
    fresh: Vec<Key>,
    retrying: Vec<Key>,
    /// Each room's next deadline; an entry is stale when its room is gone or holds another
    /// deadline now.
    timers: BinaryHeap<Reverse<(Instant, Key)>>,
    deadlines: usize,
}

impl std::fmt::Debug for ShardCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardCore")
            .field("index", &self.index)
            .field("rooms", &self.rooms.len())
            .finish()
    }
}

/// Queues a room's outputs in its backlog, in order.
fn queue_outputs(room: &mut Room, backlog: &mut VecDeque<Item>, now: Instant) {
    while let Some(output) = room.poll_output() {
        let item = match output {
            RoomOutput::Send { to, frame } => Item::Send(Pending {
                frame,
                to,
                since: now,
            }),
            RoomOutput::Close { to, reason } => Item::Close { to, reason },
        };
        backlog.push_back(item);
    }
}

impl ShardCore {
    pub fn new(index: usize, participants_max: usize, stats: Arc<ShardStats>) -> Self {
        Self {
            index,
            participants_max,
            stats,
            media_addr: None,
            fixed_media_ip: false,
            rooms: Slab::new(),
            by_channel: HashMap::new(),
            next_serial: 0,
            demux: Demux::new(),
            touched: Vec::new(),
            sending: Vec::new(),
            fresh: Vec::new(),
            retrying: Vec::new(),
            timers: BinaryHeap::new(),
            deadlines: 0,
        }
    }

    /// Gives the shard's rooms a media path advertised at `addr`.
    pub fn with_media_addr(mut self, addr: SocketAddr, fixed_ip: bool) -> Self {
        self.media_addr = Some(addr);
        self.fixed_media_ip = fixed_ip;
        self
    }

    pub fn index(&self) -> usize {
        self.index
    }

    /// The counters this core keeps (shared with `/metrics` and the driver).
    pub fn stats(&self) -> Arc<ShardStats> {
        self.stats.clone()
    }

    fn live(&self, key: Key) -> Option<&Slot> {
        self.rooms.get(key.slot).filter(|s| s.serial == key.serial)
    }

    fn slot(&mut self, key: Key) -> Option<&mut Slot> {
        self.rooms.get_mut(key.slot).filter(|s| s.serial == key.serial)
    }

    /// Runs `call` on a room with panic isolation, the one place the core enters a room.
    /// Afterwards the room's outputs are queued (stamped `now`), its connection changes
    /// reach the demultiplexer, its counters the stats, and it is put on the lists of what
    /// to do next. `None` when the room panicked: it has been dropped.
    fn enter<T>(
        &mut self,
        key: Key,
        path: RoomPath,
        now: Instant,
        call: impl FnOnce(&mut Room) -> T,
    ) -> Option<T> {
        let slot = self.slot(key)?;
        let poison = slot.poison;
        let before = Counters::of(&slot.room);
        let room = &mut slot.room;
        let result = std::panic::catch_unwind(AssertUnwindSafe(move || {
            assert!(poison != Some(path), "test hook: this room was told to panic");
            call(room)
        }));
        let Ok(value) = result else {
            self.drop_room(key, path);
            return None;
        };
        let slot = self.rooms.get_mut(key.slot)?;
        before.settle(&slot.room, &self.stats);
        let queued = slot.backlog.len();
        queue_outputs(&mut slot.room, &mut slot.backlog, now);
        while let Some(change) = slot.room.poll_link() {
            self.demux.apply(key, change);
        }
        // Draining only pops queued datagrams and asking for the deadline changes none, so
        // neither makes the room ask again (else every room called once would be asked
        // and drained every turn forever).
        if !matches!(path, RoomPath::Deadline | RoomPath::Drain) && !slot.touched {
            slot.touched = true;
            self.touched.push(key);
        }
        if path != RoomPath::Drain && !slot.sending {
            slot.sending = true;
            self.sending.push(key);
        }
        if slot.backlog.len() > queued && !slot.fresh {
            slot.fresh = true;
            self.fresh.push(key);
        }
        Some(value)
    }

    /// One command at time `now`.
    pub fn handle_command(&mut self, now: Now, command: ShardCommand) {
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
                let key = self.room_for(&channel);
                if let Some(slot) = self.slot(key) {
                    slot.outboxes.insert(id.clone(), outbox);
                }
                let result = self.step(now, key, command);
                match &result {
                    Ok(()) => {
                        self.stats.participants.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        if let Some(slot) = self.slot(key) {
                            slot.outboxes.remove(&id);
                        }
                    }
                }
                let _ = reply.try_send(result);
                self.cleanup(key);
            }
            ShardCommand::Room {
                channel,
                command,
                ack,
            } => {
                let Some(key) = self.by_channel.get(&channel).copied() else {
                    if let Some(ack) = ack {
                        let _ = ack.try_send(());
                    }
                    return;
                };
                let leaving = match &command {
                    RoomCommand::Leave { participant, .. } => Some(participant.clone()),
                    _ => None,
                };
                let result = self.step(now, key, command);
                if let Some(id) = leaving
                    && result.is_ok()
                    && let Some(slot) = self.slot(key)
                {
                    slot.backlog
                        .retain(|item| !matches!(item, Item::Send(p) if p.to == id));
                    if slot.outboxes.remove(&id).is_some() {
                        self.stats.participants.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                if let Some(ack) = ack {
                    match self.slot(key) {
                        Some(slot) => {
                            slot.backlog.push_back(Item::Ack(ack));
                            if !slot.fresh {
                                slot.fresh = true;
                                self.fresh.push(key);
                            }
                        }
                        None => {
                            let _ = ack.try_send(());
                        }
                    }
                }
                self.cleanup(key);
            }
            ShardCommand::Probe { channel, reply } => {
                let _ = reply.try_send(self.probe(&channel, None));
            }
            ShardCommand::Shutdown => {
                let keys: Vec<Key> = self.by_channel.values().copied().collect();
                for key in keys {
                    let _ = self.step(now, key, RoomCommand::Shutdown);
                    self.cleanup(key);
                }
            }
            ShardCommand::PanicRoom { channel, path } => {
                if let Some(key) = self.by_channel.get(&channel).copied()
                    && let Some(slot) = self.slot(key)
                {
                    slot.poison = Some(path);
                }
            }
        }
        self.flush_fresh(now);
    }

    /// What a probe of `channel` answers; `cpu` is where the driver runs.
    pub fn probe(&self, channel: &ChannelId, cpu: Option<usize>) -> Probe {
        let slot = self
            .by_channel
            .get(channel)
            .and_then(|key| self.rooms.get(key.slot));
        Probe {
            shard: self.index,
            cpu,
            room_exists: slot.is_some(),
            participants: slot.map_or(0, |slot| slot.room.len()),
        }
    }

    /// The room of `channel`, created if there is none.
    fn room_for(&mut self, channel: &ChannelId) -> Key {
        if let Some(key) = self.by_channel.get(channel) {
            return *key;
        }
        self.next_serial += 1;
        let room = match self.media_addr {
            Some(addr) => {
                Room::with_media(channel.as_str(), self.participants_max, addr, self.fixed_media_ip)
            }
            None => Room::new(channel.as_str(), self.participants_max),
        };
        let slot = self.rooms.insert(Slot {
            channel: channel.clone(),
            serial: self.next_serial,
            room,
            outboxes: HashMap::new(),
            backlog: VecDeque::new(),
            poison: None,
            touched: false,
            sending: false,
            fresh: false,
            retry_at: None,
            deadline: None,
        });
        let key = Key {
            slot,
            serial: self.next_serial,
        };
        self.by_channel.insert(channel.clone(), key);
        self.stats.rooms.fetch_add(1, Ordering::Relaxed);
        key
    }

    /// Runs one room command.
    fn step(&mut self, now: Now, key: Key, command: RoomCommand) -> Result<(), RoomError> {
        self.enter(key, RoomPath::Command, now.instant, |room| {
            room.handle_command(now, command)
        })
        .unwrap_or(Err(RoomError::NotInRoom))
    }

    /// One datagram from the network, received at `now`: routed by remote address, or
    /// for a STUN binding request from a new address by the ufrag it names.
    pub fn handle_datagram(&mut self, now: Now, from: SocketAddr, contents: &[u8]) {
        self.stats.packets_in.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_in
            .fetch_add(contents.len() as i64, Ordering::Relaxed);
        let (route, new) = match self.demux.lookup(from, contents) {
            Lookup::Known(route) => (route, false),
            Lookup::Candidate(route) => (route, true),
            Lookup::Unknown => {
                self.stats.packets_unknown.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let Route { room, connection } = route;
        let at = now.instant;
        let result = self.enter(room, RoomPath::Datagram, at, |room| {
            if new && !room.accepts_datagram(at, connection, from, contents) {
                return None;
            }
            Some(room.handle_datagram(at, connection, from, contents))
        });
        match result {
            Some(Some(Ok(()))) if new => self.demux.learn(from, route),
            Some(Some(Ok(()))) => {}
            Some(Some(Err(err))) => {
                tracing::trace!(shard = self.index, %from, error = %err, "datagram refused");
            }
            Some(None) => {
                self.stats.packets_unknown.fetch_add(1, Ordering::Relaxed);
            }
            None => {}
        }
        self.flush_fresh(now);
    }

    /// Time passing: the rooms whose deadline has come act on it (only those are called),
    /// and standing backlogs due for a retry are retried.
    pub fn handle_timeout(&mut self, now: Now) {
        let at = now.instant;
        while let Some(Reverse((deadline, key))) = self.timers.peek().copied()
            && deadline <= at
        {
            self.timers.pop();
            let Some(slot) = self.slot(key) else { continue };
            if slot.deadline != Some(deadline) {
                continue;
            }
            slot.deadline = None;
            self.deadlines -= 1;
            let _ = self.enter(key, RoomPath::Timeout, at, |room| room.handle_timeout(at));
        }
        if self
            .retrying
            .iter()
            .any(|key| self.live(*key).and_then(|s| s.retry_at).is_some_and(|t| t <= at))
        {
            let due: Vec<Key> = std::mem::take(&mut self.retrying);
            for key in due {
                let Some(slot) = self.slot(key) else { continue };
                match slot.retry_at {
                    Some(t) if t <= at => {
                        slot.retry_at = None;
                        if !slot.fresh {
                            slot.fresh = true;
                            self.fresh.push(key);
                        }
                    }
                    Some(_) => self.retrying.push(key),
                    None => {}
                }
            }
        }
        self.flush_fresh(now);
    }

    /// The earliest time the core needs [`ShardCore::handle_timeout`]. Only rooms called
    /// since they were last asked are asked again; the rest keep their deadline.
    pub fn poll_timeout(&mut self, now: Instant) -> Option<Instant> {
        for key in std::mem::take(&mut self.touched) {
            let Some(slot) = self.slot(key) else { continue };
            slot.touched = false;
            let Some(deadline) = self.enter(key, RoomPath::Deadline, now, |room| room.poll_timeout(now))
            else {
                continue;
            };
            let Some(slot) = self.slot(key) else { continue };
            if slot.deadline == deadline {
                continue;
            }
            let previous = std::mem::replace(&mut slot.deadline, deadline);
            match (previous, deadline) {
                (None, Some(_)) => self.deadlines += 1,
                (Some(_), None) => self.deadlines -= 1,
                _ => {}
            }
            if let Some(at) = deadline {
                self.timers.push(Reverse((at, key)));
            }
        }
        // Stale entries (a room gone, or its deadline moved) are discarded on the way; a heap
        // grown far beyond the rooms is rebuilt from the live deadlines.
        if self.timers.len() > TIMERS_PER_ROOM_MAX * self.deadlines + TIMERS_SLACK {
            self.timers = self
                .rooms
                .iter()
                .filter_map(|(slot, room)| {
                    let key = Key {
                        slot,
                        serial: room.serial,
                    };
                    room.deadline.map(|at| Reverse((at, key)))
                })
                .collect();
        }
        let mut earliest = None;
        while let Some(Reverse((at, key))) = self.timers.peek().copied() {
            if self.slot(key).is_some_and(|s| s.deadline == Some(at)) {
                earliest = Some(at);
                break;
            }
            self.timers.pop();
        }
        if !self.fresh.is_empty() {
            // Asking a room queued frames: they are flushed on the next call.
            return Some(now);
        }
        let retry = self
            .retrying
            .iter()
            .filter_map(|key| self.live(*key).and_then(|s| s.retry_at))
            .min();
        match (earliest, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Every datagram the rooms want sent (only rooms called since the last drain can have
    /// any), appended to `out`.
    pub fn take_transmits(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        for key in std::mem::take(&mut self.sending) {
            let Some(slot) = self.slot(key) else { continue };
            slot.sending = false;
            let mark = out.len();
            let drained = self.enter(key, RoomPath::Drain, now, |room| {
                while let Some(transmit) = room.poll_transmit() {
                    out.push(transmit);
                }
            });
            if drained.is_none() {
                // What a failed room queued before it panicked is not sent.
                out.truncate(mark);
            }
        }
    }

    /// Whether any room waits on a full outbox.
    pub fn has_backlog(&self) -> bool {
        !self.fresh.is_empty()
            || self
                .retrying
                .iter()
                .any(|key| self.live(*key).is_some_and(|s| s.retry_at.is_some()))
    }

    /// Moves the backlogs that grew during this call into outboxes, as far as they have
    /// room; what is left is retried after [`BACKLOG_RETRY`].
    fn flush_fresh(&mut self, now: Now) {
        while !self.fresh.is_empty() {
            for key in std::mem::take(&mut self.fresh) {
                if let Some(slot) = self.slot(key) {
                    slot.fresh = false;
                    self.flush(now, key);
                }
            }
        }
    }

    /// Moves one room's backlog into outboxes; a reader stalled for [`STALL_MAX`] is
    /// removed.
    fn flush(&mut self, now: Now, key: Key) {
        let mut stalled: Vec<ParticipantId> = Vec::new();
        let mut closed = 0;
        let Some(slot) = self.slot(key) else { return };
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
                            if now.instant.saturating_duration_since(pending.since) >= STALL_MAX {
                                stalled.push(pending.to.clone());
                            }
                            break;
                        }
                    }
                }
                Item::Close { to, reason } => {
                    if let Some(outbox) = slot.outboxes.remove(to) {
                        let _ = outbox.kick.try_send(reason.as_str().into());
                        closed += 1;
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
        if slot.backlog.is_empty() {
            // Its entry on `retrying` is dropped when next looked at.
            slot.retry_at = None;
        } else if slot.retry_at.is_none() {
            // Still waiting for a full outbox: tried again later.
            slot.retry_at = Some(now.instant + BACKLOG_RETRY);
            self.retrying.push(key);
        }
        self.stats.participants.fetch_sub(closed, Ordering::Relaxed);
        for to in stalled {
            tracing::info!(shard = self.index, participant = %to, "outbox full too long; disconnecting");
            self.remove_participant(now, key, &to, LeaveReason::TooSlow);
        }
        self.cleanup(key);
    }

    /// Removes a participant whose connection cannot keep up: its pending frames are
    /// dropped, the room is told, and its connection is kicked.
    fn remove_participant(&mut self, now: Now, key: Key, id: &ParticipantId, reason: LeaveReason) {
        if let Some(slot) = self.slot(key) {
            slot.backlog
                .retain(|item| !matches!(item, Item::Send(p) if p.to == *id));
            if let Some(outbox) = slot.outboxes.remove(id) {
                let _ = outbox.kick.try_send(reason.as_str().into());
                self.stats.participants.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let _ = self.step(
            now,
            key,
            RoomCommand::Leave {
                participant: id.clone(),
                reason: LeaveReason::Left,
            },
        );
    }

    /// Removes a room that is empty and has nothing left to deliver.
    fn cleanup(&mut self, key: Key) {
        let empty = self
            .slot(key)
            .is_some_and(|slot| slot.room.is_empty() && slot.backlog.is_empty());
        if empty {
            self.remove(key);
            self.stats.rooms.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Takes a room out of every index (its list and heap entries become stale).
    fn remove(&mut self, key: Key) -> Option<Slot> {
        self.slot(key)?;
        let slot = self.rooms.remove(key.slot);
        self.by_channel.remove(&slot.channel);
        self.demux.forget_room(key);
        if slot.deadline.is_some() {
            self.deadlines -= 1;
        }
        Some(slot)
    }

    /// Drops a room whose state machine panicked on `path`: its participants get
    /// `rtc_room_failed` and are disconnected; waiting acks are released; the rest of the
    /// shard goes on.
    fn drop_room(&mut self, key: Key, path: RoomPath) {
        let Some(slot) = self.remove(key) else { return };
        tracing::error!(shard = self.index, channel = %slot.channel, path = path.as_str(), "room panicked; dropping it");
        self.stats.rooms.fetch_sub(1, Ordering::Relaxed);
        self.stats
            .participants
            .fetch_sub(slot.outboxes.len() as i64, Ordering::Relaxed);
        self.stats.rooms_dropped_by_panic.fetch_add(1, Ordering::Relaxed);
        self.stats
            .tracks
            .fetch_sub(slot.room.tracks().len() as i64, Ordering::Relaxed);
        let frame: Frame = Arc::from(openchat_core::protocol::rtc_error(
            openchat_core::protocol::RtcErrorCode::RoomFailed,
            "the voice room failed; rejoin",
            true,
            None,
            Some(slot.channel.as_str()),
        ));
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::room::ParticipantInfo;
    use crate::shard::{OUTBOX_MAX, OutboxReceiver, outbox};

    /// A virtual clock: tests move it by hand; nothing here reads the real one after start.
    fn t0() -> Now {
        Now::new(Instant::now(), 1_700_000_000)
    }

    fn channel(name: &str) -> ChannelId {
        ChannelId::parse(name).unwrap()
    }

    fn join(core: &mut ShardCore, now: Now, channel: &ChannelId, id: &str) -> OutboxReceiver {
        let (outbox, receiver) = outbox();
        let (reply, answer) = flume::bounded(1);
        core.handle_command(
            now,
            ShardCommand::Join {
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
            },
        );
        assert_eq!(answer.try_recv().unwrap(), Ok(()));
        receiver
    }

    fn frames(receiver: &OutboxReceiver) -> Vec<String> {
        receiver.frames.try_iter().map(|f| f.to_string()).collect()
    }

    fn relay(
        core: &mut ShardCore,
        now: Now,
        channel: &ChannelId,
        from: &str,
        to: &str,
        n: usize,
    ) -> flume::Receiver<()> {
        let (ack, acked) = flume::bounded(1);
        let mut payload = serde_json::Map::new();
        payload.insert("n".into(), n.into());
        core.handle_command(
            now,
            ShardCommand::Room {
                channel: channel.clone(),
                command: RoomCommand::Relay {
                    from: ParticipantId(from.into()),
                    kind: "rtc.offer".into(),
                    target: Some(to.into()),
                    payload,
                    request_id: None,
                },
                ack: Some(ack),
            },
        );
        acked
    }

    fn ping(core: &mut ShardCore, now: Now, channel: &ChannelId, from: &str) {
        core.handle_command(
            now,
            ShardCommand::Room {
                channel: channel.clone(),
                command: RoomCommand::Ping {
                    from: ParticipantId(from.into()),
                    request_id: Some(format!("ping_{from}")),
                },
                ack: None,
            },
        );
    }

    fn media_core(stats: &Arc<ShardStats>) -> ShardCore {
        ShardCore::new(0, 10, stats.clone()).with_media_addr("127.0.0.1:50000".parse().unwrap(), true)
    }

    /// A media core with rooms `vc_a` (participant `pa`) and `vc_b` (`pb`).
    fn two_media_rooms(now: Now) -> (Arc<ShardStats>, ShardCore, [ChannelId; 2], [OutboxReceiver; 2]) {
        let stats = Arc::new(ShardStats::default());
        let mut core = media_core(&stats);
        let (a, b) = (channel("vc_a"), channel("vc_b"));
        let in_a = join(&mut core, now, &a, "pa");
        let in_b = join(&mut core, now, &b, "pb");
        frames(&in_a);
        frames(&in_b);
        (stats, core, [a, b], [in_a, in_b])
    }

    /// A room that panics on `path` is dropped and its participant told; a second room on
    /// the same core keeps working.
    fn a_panic_on(path: RoomPath, call: impl FnOnce(&mut ShardCore, Now)) {
        let now = t0();
        let (stats, mut core, [a, b], [in_a, in_b]) = two_media_rooms(now);
        core.handle_command(now, ShardCommand::PanicRoom { channel: a, path });
        call(&mut core, now);
        assert!(
            frames(&in_a).iter().any(|f| f.contains("rtc_room_failed")),
            "{path:?}: the failed room's participant is told"
        );
        assert_eq!(in_a.kick.try_recv().as_deref(), Ok("room failed"));
        assert_eq!(stats.rooms_dropped_by_panic.load(Ordering::Relaxed), 1);
        assert_eq!(stats.rooms.load(Ordering::Relaxed), 1);
        ping(&mut core, now, &b, "pb");
        assert!(frames(&in_b).iter().any(|f| f.contains("ping_pb")), "{path:?}");
        assert!(in_b.kick.try_recv().is_err());
    }

    #[test]
    fn a_room_that_panics_on_a_command_is_dropped_alone() {
        a_panic_on(RoomPath::Command, |core, now| {
            ping(core, now, &channel("vc_a"), "pa")
        });
    }

    #[test]
    fn a_room_that_panics_in_its_timeout_path_is_dropped_alone() {
        a_panic_on(RoomPath::Timeout, |core, now| {
            core.poll_timeout(now.instant);
            core.handle_timeout(now.later(Duration::from_secs(1)));
        });
    }

    #[test]
    fn a_room_that_panics_while_its_deadline_is_asked_is_dropped_alone() {
        a_panic_on(RoomPath::Deadline, |core, now| {
            core.poll_timeout(now.instant);
        });
    }

    #[test]
    fn a_room_that_panics_while_draining_transmits_is_dropped_alone() {
        a_panic_on(RoomPath::Drain, |core, now| {
            let mut out = Vec::new();
            core.take_transmits(now.instant, &mut out);
            assert!(out.is_empty());
        });
    }

    #[test]
    fn only_rooms_whose_deadline_has_come_are_timed_out() {
        let now = t0();
        let (stats, mut core, [_a, b], _receivers) = two_media_rooms(now);
        let first = core
            .poll_timeout(now.instant)
            .expect("media rooms have deadlines");
        // B is called later, so its deadline moves later than A's.
        let later = now.later(Duration::from_millis(50));
        ping(&mut core, later, &b, "pb");
        assert_eq!(core.poll_timeout(later.instant), Some(first), "A is still first");
        core.handle_command(
            later,
            ShardCommand::PanicRoom {
                channel: b.clone(),
                path: RoomPath::Timeout,
            },
        );
        core.handle_timeout(Now::new(first, now.unix));
        assert_eq!(
            stats.rooms_dropped_by_panic.load(Ordering::Relaxed),
            0,
            "B is not due, so it was not called"
        );
        let next = core.poll_timeout(first).expect("both rooms still have deadlines");
        assert!(next > first);
        core.handle_timeout(later.later(Duration::from_secs(1)));
        assert_eq!(
            stats.rooms_dropped_by_panic.load(Ordering::Relaxed),
            1,
            "B was due and called"
        );
    }

    #[test]
    fn only_rooms_called_since_the_last_drain_are_drained() {
        let now = t0();
        let (stats, mut core, [a, b], _receivers) = two_media_rooms(now);
        let mut out = Vec::new();
        core.poll_timeout(now.instant);
        core.take_transmits(now.instant, &mut out);
        core.handle_command(
            now,
            ShardCommand::PanicRoom {
                channel: a.clone(),
                path: RoomPath::Drain,
            },
        );
        ping(&mut core, now, &b, "pb");
        core.take_transmits(now.instant, &mut out);
        // Asking for deadlines and draining again finds nothing new in A either.
        core.poll_timeout(now.instant);
        core.take_transmits(now.instant, &mut out);
        assert_eq!(
            stats.rooms_dropped_by_panic.load(Ordering::Relaxed),
            0,
            "A had nothing new"
        );
        ping(&mut core, now, &a, "pa");
        core.take_transmits(now.instant, &mut out);
        assert_eq!(
            stats.rooms_dropped_by_panic.load(Ordering::Relaxed),
            1,
            "A was called, then drained"
        );
        assert!(!core.has_backlog());
    }

    #[test]
    fn a_full_outbox_holds_later_frames_back_in_order_and_loses_none() {
        let now = t0();
        let stats = Arc::new(ShardStats::default());
        let mut core = ShardCore::new(0, 10, stats);
        let room = channel("vc_chat");
        let _a = join(&mut core, now, &room, "pa");
        let b = join(&mut core, now, &room, "pb");
        frames(&b);
        let total = OUTBOX_MAX + 40;
        let acks: Vec<_> = (0..total)
            .map(|n| relay(&mut core, now, &room, "pa", "pb", n))
            .collect();
        assert!(core.has_backlog());
        assert!(
            acks[OUTBOX_MAX - 1].try_recv().is_ok(),
            "frames that fit are acked"
        );
        assert!(
            acks[OUTBOX_MAX].try_recv().is_err(),
            "the first held frame is not"
        );
        let retry = core
            .poll_timeout(now.instant)
            .expect("a backlog asks to be retried");
        assert_eq!(retry, now.instant + BACKLOG_RETRY);
        // The reader takes what it has; nothing moves until the retry time.
        let mut seen: Vec<u64> = Vec::new();
        let take = |b: &OutboxReceiver, seen: &mut Vec<u64>| {
            for frame in frames(b) {
                let value: serde_json::Value = serde_json::from_str(&frame).unwrap();
                seen.push(value["payload"]["n"].as_u64().unwrap());
            }
        };
        take(&b, &mut seen);
        assert_eq!(seen.len(), OUTBOX_MAX);
        core.handle_timeout(now.later(BACKLOG_RETRY));
        take(&b, &mut seen);
        assert_eq!(
            seen,
            (0..total as u64).collect::<Vec<_>>(),
            "every frame, in order"
        );
        assert!(
            acks.iter()
                .all(|ack| ack.try_recv().is_ok() || ack.is_disconnected())
        );
        assert!(!core.has_backlog());
    }

    #[test]
    fn a_reader_stalled_past_the_limit_is_removed_and_the_sender_released() {
        let now = t0();
        let stats = Arc::new(ShardStats::default());
        let mut core = ShardCore::new(0, 10, stats.clone());
        let room = channel("vc_chat");
        let a = join(&mut core, now, &room, "pa");
        let b = join(&mut core, now, &room, "pb");
        frames(&a);
        for n in 0..OUTBOX_MAX {
            relay(&mut core, now, &room, "pa", "pb", n);
        }
        let held = relay(&mut core, now, &room, "pa", "pb", OUTBOX_MAX);
        // Retries before the limit change nothing.
        for second in 1..STALL_MAX.as_secs() {
            core.handle_timeout(now.later(Duration::from_secs(second)));
            assert!(held.try_recv().is_err());
            assert!(b.kick.try_recv().is_err());
        }
        core.handle_timeout(now.later(STALL_MAX));
        assert_eq!(b.kick.try_recv().as_deref(), Ok("too_slow"));
        assert!(held.try_recv().is_ok(), "the sender is released");
        assert!(
            frames(&a).iter().any(|f| f.contains("rtc.participant.left")),
            "the others are told"
        );
        assert_eq!(stats.participants.load(Ordering::Relaxed), 1);
        assert!(!core.has_backlog());
    }

    #[test]
    fn an_ack_for_a_room_that_does_not_exist_is_answered_at_once() {
        let stats = Arc::new(ShardStats::default());
        let mut core = ShardCore::new(0, 10, stats);
        let acked = relay(&mut core, t0(), &channel("vc_none"), "pa", "pb", 0);
        assert!(acked.try_recv().is_ok());
    }

    #[test]
    fn the_last_leaver_removes_the_room_and_its_slot_is_reused_cleanly() {
        let now = t0();
        let stats = Arc::new(ShardStats::default());
        let mut core = media_core(&stats);
        let (a, b) = (channel("vc_a"), channel("vc_b"));
        let _in_a = join(&mut core, now, &a, "pa");
        core.poll_timeout(now.instant);
        core.handle_command(
            now,
            ShardCommand::Room {
                channel: a.clone(),
                command: RoomCommand::Leave {
                    participant: ParticipantId("pa".into()),
                    reason: LeaveReason::Left,
                },
                ack: None,
            },
        );
        assert_eq!(stats.rooms.load(Ordering::Relaxed), 0);
        assert!(!core.probe(&a, None).room_exists);
        // B takes A's slot; A's old timer entry must not reach B.
        let in_b = join(&mut core, now, &b, "pb");
        core.handle_command(
            now,
            ShardCommand::PanicRoom {
                channel: b.clone(),
                path: RoomPath::Timeout,
            },
        );
        core.handle_timeout(now.later(Duration::from_millis(1)));
        assert_eq!(stats.rooms_dropped_by_panic.load(Ordering::Relaxed), 0);
        assert!(frames(&in_b).iter().any(|f| f.contains("rtc.joined")));
    }

    #[test]
    fn a_datagram_from_an_unknown_address_that_is_not_stun_asks_no_room() {
        let now = t0();
        let (stats, mut core, [a, _b], _receivers) = two_media_rooms(now);
        core.handle_command(
            now,
            ShardCommand::PanicRoom {
                channel: a,
                path: RoomPath::Datagram,
            },
        );
        let from: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        let mut garbage = vec![0x80u8; 172];
        garbage[1] = 111;
        core.handle_datagram(now, from, &garbage);
        let mut binding = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
        binding.extend_from_slice(&[9; 12]);
        core.handle_datagram(now, from, &binding);
        assert_eq!(stats.packets_unknown.load(Ordering::Relaxed), 2);
        assert_eq!(
            stats.rooms_dropped_by_panic.load(Ordering::Relaxed),
            0,
            "no room was asked: no connection has that ufrag"
        );
    }
}
