//! The storage boundary's one error enum. The front-end maps it to HTTP in one place.

/// What went wrong with a storage request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The database cannot be reached right now (Postgres down, reconnecting, timed out,
    /// or the storage thread has stopped). Retrying later may succeed.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The named thing (server, channel, ...) does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A uniqueness or concurrency rule refused the write.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database was migrated by a newer openchatd.
    #[error(
        "database schema version {found} is newer than this binary supports ({supported}); run a newer openchatd"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    /// The store could not be opened at start-up (data dir, file, connection).
    #[error("{0}")]
    Open(String),
    /// Any other database error. Its text is for logs, not for clients.
    #[error("database error: {0}")]
    Backend(String),
    /// A row holds a value this binary cannot interpret.
    #[error("unexpected stored value: {0}")]
    Corrupt(String),
}
