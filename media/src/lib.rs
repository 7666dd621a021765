//! `openchat-media`: voice rooms and the thread-per-core shards that own them.
//!
//! Contract:
//! - [`room::Room`] is a sans-IO state machine for one voice channel: commands in
//!   (`handle_command(now, command)`), outputs out (`poll_output()`), no sockets, no clock,
//!   no executor. Everything about who hears what lives there.
//! - [`shard::ShardCore`] is one shard's rooms as a sans-IO state machine (time passed in,
//!   no sockets): commands, datagrams and timeouts in; frames into participants' bounded
//!   outboxes with backpressure instead of loss, datagrams and the next deadline out; one
//!   demultiplexing step ([`demux::Demux`]); every call into a room panic-isolated.
//!   [`shard::driver`] is its thin glommio shell, pinned to one CPU, owning the rooms whose
//!   channel ids [`openchat_core::shard::shard_for`] maps to it.
//! - [`ShardSet`] starts one shard per configured CPU and routes each channel to its shard.
//!   The front-end (tokio) and the shards (glommio) talk only through `flume` channels,
//!   which work from both runtimes.
//! - [`sfu::Sfu`] (feature `sfu`) is the room's sans-IO forwarding core over str0m in RTP
//!   mode: packets are forwarded without re-packetising, payloads shared between
//!   subscribers, sequence numbers and RTP times renumbered per subscriber m-line.
//!   [`speaking`] turns audio levels into speaking changes.
//!
//! Layers, bottom first: a module uses only modules of its own layer or below, and no
//! imports go in a circle (`tests/tidy.rs` checks both).
//! 1. `participant`, `speaking`: who is connected, and voice activity
//! 2. `sfu`: the forwarding core of one room
//! 3. `demux`: datagram to (room, connection)
//! 4. `room`: one voice channel's state machine
//! 5. `shard`: one shard's rooms (`ShardCore`), its batched UDP I/O and its glommio driver
//! 6. `shards`, `ops`: starting the shards; the fuzz harness over rooms (feature `fuzz`,
//!    not in the product build)

#[cfg(feature = "sfu")]
pub mod demux;
#[cfg(feature = "fuzz")]
pub mod ops;
pub mod participant;
pub mod room;
#[cfg(feature = "sfu")]
pub mod sfu;
#[cfg(feature = "shards")]
pub mod shard;
#[cfg(feature = "sfu")]
pub mod speaking;

#[cfg(feature = "shards")]
mod shards;
#[cfg(feature = "shards")]
pub use shards::{
    MEDIA_SOCKET_BUFFER_BYTES, MEMLOCK_MIN_BYTES, MediaNet, ShardError, ShardSet, ensure_locked_memory,
    holds_ipc_lock,
};
