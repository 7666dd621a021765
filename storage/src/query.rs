//! The one way to reach storage: an operation is a value that implements [`Query`].
//!
//! A query type holds the operation's inputs; its [`Query::run`] is the operation's
//! business logic, written once against the backend trait [`Db`] and run by the storage
//! thread on whichever backend is open. Its answer is typed ([`Query::Output`]): no request
//! enum, no answer enum, nothing to match on the way back. The front-end sends one with
//! [`StorageHandle::run`](crate::StorageHandle::run).
//!
//! `Db` is public only so that it can appear in this trait's signature; it is not
//! re-exported, so no type outside this crate can implement `Query`.

use crate::db::Db;
use crate::error::StorageError;

/// One storage operation and its typed answer.
pub trait Query: Send + 'static {
    /// What the operation answers.
    type Output: Send + 'static;
    /// The operation's name in spans and `/metrics` (`openchat_storage_*{op=..}`).
    const NAME: &'static str;

    /// Runs the operation on one connection: writes in one transaction, reads on one
    /// snapshot where they issue several statements. Futures here run on the storage
    /// thread's own single-threaded runtime, so they need not be `Send`.
    #[allow(async_fn_in_trait)]
    async fn run<D: Db>(self, db: &mut D) -> Result<Self::Output, StorageError>;
}
