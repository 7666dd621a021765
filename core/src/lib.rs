//! `openchat-core`: the vocabulary and the rules of OpenChat, with no I/O.
//!
//! Contract: nothing in this crate touches the network, the disk, a clock or an async
//! runtime. It holds the newtype ids that cross threads, the closed enums that every other
//! crate speaks (channel kinds, member statuses, directory enums), the named limits, the
//! validation rules for client input (server settings) and the first-run seed community.
//! Every function is pure: the same input gives the same output, so the rules can be
//! tested without sockets and reused by the storage thread, the front-end and the shards.
//!
//! Time enters as plain numbers (`UnixSeconds`) passed in by a caller that read the clock.
//!
//! Layers, bottom first: a module uses only modules of its own layer or below, and no
//! imports go in a circle (`tests/tidy.rs` checks both).
//! 1. `limits`, `model`, `denial`
//! 2. `ids`, `mention`, `profile`, `settings`, `seed`, `ticket`
//! 3. `policy`, `protocol`, `shard`

pub mod denial;
pub mod ids;
pub mod limits;
pub mod mention;
pub mod model;
pub mod policy;
pub mod profile;
pub mod protocol;
pub mod seed;
pub mod settings;
pub mod shard;
pub mod ticket;

pub use denial::Denial;
pub use ids::{
    AssetId, AttachmentId, ChannelId, GroupId, IdError, MemberId, MessageId, ServerId, UserUid, short_id,
};
pub use model::{ChannelKind, HandshakeStrategy, MemberStatus, TrustState, UidPolicy, UnixSeconds};
