//! `openchat-storage`: the storage thread, the only place in OpenChat that does database I/O.
//!
//! Contract:
//! - [`start`] spawns one dedicated OS thread ("openchat-storage"), opens the configured
//!   backend, runs the versioned migrations inside a transaction (refusing a database whose
//!   schema is newer than this binary) and only then returns a [`StorageHandle`].
//! - The rest of the process talks to that thread through a bounded request channel
//!   (`flume`, [`STORAGE_QUEUE_DEPTH_MAX`](openchat_core::limits::STORAGE_QUEUE_DEPTH_MAX)
//!   deep). Every request carries its own reply channel (`tokio::sync::oneshot`). Both
//!   channel types are runtime-agnostic, so the handle works from tokio tasks and from
//!   glommio executors alike; a full queue makes the caller wait, it never drops a request.
//! - Two backends answer the same requests with the same SQL: embedded SQLite (rusqlite,
//!   bundled, WAL) and Postgres (tokio-postgres on a current-thread tokio runtime inside the
//!   storage thread). The business logic ([`queries`]) is written once against the small
//!   [`db::Db`] trait; each backend only moves parameters and rows.
//! - Postgres may go away at any time: requests then fail fast with
//!   [`StorageError::Unavailable`] while the backend reconnects with exponential backoff;
//!   no request waits longer than the backend's statement timeout.
//! - [`StorageThread::shutdown`] drains nothing new, closes the database cleanly and joins.
//!
//! Run loop: `recv request -> run it (one transaction where it writes) -> send reply`.
//! Requests are processed one at a time, in arrival order.
//!
//! Layers, bottom first: a module uses only modules of its own layer or below, and no
//! imports go in a circle (`tests/tidy.rs` checks both).
//! 1. `error`, `e2ee`: errors and the E2EE operation vocabulary
//! 2. `db`, `records`: the backend trait and the typed records
//! 3. `queries`, `migrations`, `sqlite`, `postgres`: the business logic and the backends
//! 4. `handle`: what the rest of the process holds
//! 5. `thread`: the storage thread that serves the handle

mod db;
pub mod e2ee;
mod error;
mod handle;
mod migrations;
mod postgres;
mod queries;
mod records;
mod sqlite;
mod thread;

pub use db::StoreKind;
pub use error::StorageError;
pub use handle::StorageHandle;
pub use migrations::SCHEMA_VERSION;
pub use records::{
    AttachmentRecord, Avatar, AvatarMode, AvatarRecord, ChannelCounts, ChannelInfo, ChannelRecord,
    ClaimRecord, GroupRecord, InstanceRecord, MemberRecord, MentionRecord, MessagePage, MessageRecord,
    NewMessage, NewServer, PageRequest, ProfileRecord, ProfileUpdate, ReadAckRecord, ReplyRecord,
    ServerRecord, StarterIds,
};
pub use thread::{StorageThread, StoreConfig, start};
