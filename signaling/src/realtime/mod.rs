//! The realtime chat gateway, `GET /v1/realtime` (WIRE.md §4): one WebSocket per client
//! and server, the hub that fans events out to them, and replay on reconnect.
//!
//! The hub is a registry of sockets plus an ordered log of recent committed events. Each
//! gets an opaque `event_id` (`<boot id>:<sequence>` on one node, the boot id new each
//! start so a restart never reuses one; `<stream tag>:<stream sequence>` in cluster mode,
//! the same on every node) and goes to the sockets that [`visible`] admits. A client
//! reconnecting with `?resume_from=<event_id>` gets the logged events after it that
//! [`visible`] admits for that socket, before any live event; a device that comes back
//! without asking (the desktop client) gets what its last socket missed, within
//! [`REDELIVERY_WINDOW_SECS`]. Live delivery and replay use that one check, so later rules
//! (e2ee membership) plug in at one place. Ephemeral events (typing, presence) are never
//! logged and carry no event id: the presence snapshot on subscribe restores them.
//!
//! Each socket has a bounded send queue ([`SEND_QUEUE_MAX`]); a socket whose queue is full
//! when an event arrives is disconnected (close 1008), never buffered without limit.
//!
//! [`hub`] holds the registry, the log and the audience rule (no I/O); [`socket`] runs one
//! WebSocket against it. In cluster mode [`relay`] carries committed events between nodes,
//! [`redelivery`] keeps each device's progress in NATS, and [`presence`] (over [`roster`],
//! no I/O) shares presence and typing.

pub mod hub;
pub mod presence;
pub mod redelivery;
pub mod relay;
pub mod roster;
pub mod socket;

pub use hub::*;
pub use socket::*;
