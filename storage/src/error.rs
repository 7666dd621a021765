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
    /// A uniqueness or concurrency rule refused the write; `code` names the rule
    /// (`conflict` for a plain uniqueness violation).
    #[error("{code}: {message}")]
    Conflict { code: &'static str, message: String },
    /// The request breaks a rule of the data (a reply to a message elsewhere, a layout that
    /// is not a permutation, ...); `code` names the rule for the client.
    #[error("{code}: {message}")]
    Invalid { code: &'static str, message: String },
    /// An end-to-end-encryption rule refused the request (E2EE.md): `denial` says which,
    /// `current_epoch` the channel's epoch where the client needs it to recover. The
    /// front-end maps denials to statuses.
    #[error("{denial}: {message}")]
    Denied {
        denial: openchat_core::Denial,
        message: String,
        current_epoch: Option<i64>,
    },
    /// The actor may not make this change (see `openchat_core::policy`).
    #[error("forbidden: {0}")]
    Forbidden(String),
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

impl StorageError {
    pub(crate) fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn denied(denial: openchat_core::Denial, message: impl Into<String>) -> Self {
        Self::Denied {
            denial,
            message: message.into(),
            current_epoch: None,
        }
    }

    pub(crate) fn denied_at(
        denial: openchat_core::Denial,
        message: impl Into<String>,
        current_epoch: i64,
    ) -> Self {
        Self::Denied {
            denial,
            message: message.into(),
            current_epoch: Some(current_epoch),
        }
    }

    pub(crate) fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
        }
    }
}
