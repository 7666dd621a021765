//! Voice: join tickets (WIRE.md §2.6, §5.1) and the signaling WebSocket (§5.2-§5.4).
//!
//! The session of one signaling socket runs on the front-end's runtime. It checks the
//! ticket of the first message, joins the room on the shard that owns the channel, then
//! shuttles: parsed client messages become room commands (relays wait for the shard's
//! acknowledgement before the next message is read: that is the backpressure), and frames
//! from the participant's outbox become WebSocket messages.
//!
//! [`tickets`] holds what the front-end keeps for voice (configuration, ticket signer and
//! replay memory, the shards); [`session`] runs one signaling socket. In cluster mode
//! [`placement`] (no I/O) decides where a room runs, [`records`] keeps the node registry
//! and room records in NATS, and [`bridge`] relays a socket to the room's node.

pub mod bridge;
pub mod placement;
pub mod records;
pub mod session;
pub mod tickets;

pub use bridge::upgrade;
pub use session::*;
pub use tickets::*;
