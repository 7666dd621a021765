//! The realtime chat gateway, `GET /v1/realtime` (WIRE.md §4): one WebSocket per client
//! and server, the hub that fans events out to them, and replay on reconnect.
//!
//! The hub is a registry of sockets plus an ordered log of recent events. Every published
//! event gets an opaque `event_id` (`<boot id>:<sequence>`; the boot id is new each start,
//! so a restart never reuses one) and goes to the sockets that [`visible`] admits. A client
//! reconnecting with `?resume_from=<event_id>` gets the logged events after it that
//! [`visible`] admits for that socket, before any live event; live delivery and replay use
//! that one check, so later rules (e2ee membership) plug in at one place. Ephemeral events
//! (typing, presence) are never logged: the presence snapshot on subscribe restores them.
//!
//! Each socket has a bounded send queue ([`SEND_QUEUE_MAX`]); a socket whose queue is full
//! when an event arrives is disconnected (close 1008), never buffered without limit.
//!
//! [`hub`] holds the registry, the log and the audience rule (no I/O); [`socket`] runs one
//! WebSocket against it; [`relay`] carries committed events between nodes in cluster mode.

pub mod hub;
pub mod presence;
pub mod redelivery;
pub mod relay;
pub mod roster;
pub mod socket;

pub use hub::*;
pub use socket::*;
