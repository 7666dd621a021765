//! `openchat-storage`: the storage thread, the only place in OpenChat that does database I/O.
//!
//! Contract:
//! - [`start`] spawns one dedicated OS thread ("openchat-storage"), opens the configured
//!   backend, runs the versioned migrations inside a transaction (refusing a database whose
//!   schema is newer than this binary) and only then returns a [`StorageHandle`].
//! - The rest of the process reaches storage one way: [`StorageHandle::run`] with a
//!   [`Query`], a value that holds an operation's inputs and whose `run` is the operation's
//!   business logic, written once against the backend trait (`db::Db`) with a typed answer.
//!   The handle boxes the query with its reply channel (`tokio::sync::oneshot`) into a job
//!   and sends it through one bounded queue (`flume`,
//!   [`STORAGE_QUEUE_DEPTH_MAX`](openchat_core::limits::STORAGE_QUEUE_DEPTH_MAX) deep). Both
//!   channel types are runtime-agnostic, so the handle works from tokio tasks and from
//!   glommio executors alike; a full queue makes the caller wait, it never drops a request.
//!   The operations are in [`queries`] (chat) and [`queries::e2ee`] (E2EE.md).
//! - Two backends answer the same queries with the same SQL: embedded SQLite (rusqlite,
//!   bundled, WAL) and Postgres (tokio-postgres on a current-thread tokio runtime inside the
//!   storage thread); each backend only moves parameters and rows.
//! - Postgres may go away at any time: requests then fail fast with
//!   [`StorageError::Unavailable`] while the backend reconnects with exponential backoff;
//!   no request waits longer than the backend's statement timeout.
//! - [`StorageThread::shutdown`] drains nothing new, closes the database cleanly and joins.
//!
//! Run loop: `recv job -> run its query (one transaction where it writes) -> send reply`.
//! Jobs are processed one at a time, in arrival order. A job's work is an async function
//! over the connection, so running several at once (a pipeline, a small pool) changes only
//! the thread, not the queries.
//!
//! Layers, bottom first: a module uses only modules of its own layer or below, and no
//! imports go in a circle (`tests/tidy.rs` checks both).
//! 1. `error`, `e2ee`: errors and the E2EE records
//! 2. `db`, `records`, `query`: the backend trait, the typed records and the operation trait
//! 3. `queries`, `migrations`, `sqlite`, `postgres`: the operations and the backends
//! 4. `handle`: what the rest of the process holds, and the job it sends
//! 5. `thread`: the storage thread that serves the handle

mod db;
pub mod e2ee;
mod error;
mod handle;
mod migrations;
mod postgres;
pub mod queries;
mod query;
mod records;
mod sqlite;
mod thread;

pub use db::StoreKind;
pub use error::StorageError;
pub use handle::StorageHandle;
pub use migrations::SCHEMA_VERSION;
pub use query::Query;
pub use records::{
    AttachmentRecord, Avatar, AvatarMode, AvatarRecord, ChannelCounts, ChannelInfo, ChannelRecord,
    ClaimRecord, GroupRecord, InstanceRecord, MemberRecord, MentionRecord, MessagePage, MessageRecord,
    NewMessage, NewServer, PageRequest, ProfileRecord, ProfileUpdate, ReadAckRecord, ReplyRecord,
    ServerRecord, StarterIds,
};
pub use thread::{StorageThread, StoreConfig, start};
