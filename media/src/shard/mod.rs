//! The shard: the rooms whose channels hash to one CPU, as a sans-IO core
//! ([`ShardCore`]) driven by a thin glommio loop pinned to that CPU ([`driver::run`]).
//!
//! The core takes time as a parameter and never reads a clock or touches a socket:
//! `handle_command(now, ..)`, `handle_datagram(now, from, bytes)`, `handle_timeout(now)`,
//! then `poll_timeout(now)` and `take_transmits(..)`. Frames go into the participants'
//! bounded outboxes (in-memory queues handed over with each join). Outboxes that are full
//! are not waited on (that would stall every room of the shard): the room's later frames
//! queue behind in a per-room backlog, retried every [`BACKLOG_RETRY`], and the sender of a
//! relayed message gets its acknowledgement only once every recipient has taken the frame.
//! So a fast sender slows to the pace of the slowest reader (it reads its socket only after
//! the ack) and nothing is dropped; a reader whose outbox stays full for [`STALL_MAX`] is
//! removed from the room and disconnected.
//!
//! A panic inside a room's state machine, on any path the core calls it on, drops that
//! room only: its participants get `rtc.error` and are disconnected, and the shard keeps
//! serving its other rooms.

mod core;
pub mod delay;
pub mod driver;
pub mod udp;

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use openchat_core::ChannelId;

use crate::room::{Frame, RoomCommand, RoomError};

pub use self::core::ShardCore;
pub use crate::room::Now;

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
/// Largest datagram read from the media socket (longer ones are dropped and counted).
pub const DATAGRAM_BYTES_MAX: usize = 2048;

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

/// The ways the shard calls into a room; every one goes through one panic-isolating
/// wrapper, so a room that panics on any of them is dropped alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomPath {
    /// A signaling command (join, media state, offer, leave, ...).
    Command,
    /// A media datagram, and the check that a connection takes it.
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
    /// From the kernel's receive time of a publisher's RTP datagram to each copy handed to
    /// the kernel (see [`driver`] for how copies are matched to datagrams).
    pub forward_delay: delay::DelayHistogram,
    /// The same, for the last copy sent of each step's datagrams only.
    pub forward_delay_last: delay::DelayHistogram,
}

/// The CPU this thread runs on, from `/proc/thread-self/stat` (field 39, "processor").
pub fn current_cpu() -> Option<usize> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    // Field 3 is the first after the name; "processor" is field 39.
    after_name.split_whitespace().nth(39 - 3)?.parse().ok()
}
