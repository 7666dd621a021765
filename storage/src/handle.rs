//! The request side of the storage thread: [`StorageHandle`] and the request enum.

use openchat_core::seed::Seed;
use openchat_core::settings::ServerSettings;
use openchat_core::{ServerId, UnixSeconds, UserUid};
use tokio::sync::oneshot;

use crate::error::StorageError;
use crate::records::{GroupRecord, InstanceRecord, MemberRecord, ServerRecord};
use crate::thread::StoreKind;

pub(crate) type Reply<T> = oneshot::Sender<Result<T, StorageError>>;

/// One request to the storage thread. Every variant but `Shutdown` carries its reply.
pub(crate) enum Request {
    Ping(Reply<()>),
    Seed {
        seed: Box<Seed>,
        now: UnixSeconds,
        reply: Reply<bool>,
    },
    Instance(Reply<InstanceRecord>),
    Directory {
        limit: usize,
        reply: Reply<Vec<ServerRecord>>,
    },
    Server {
        server: ServerId,
        reply: Reply<ServerRecord>,
    },
    Layout {
        server: ServerId,
        reply: Reply<Vec<GroupRecord>>,
    },
    Members {
        server: ServerId,
        reply: Reply<Vec<MemberRecord>>,
    },
    UpdateSettings {
        server: ServerId,
        settings: ServerSettings,
        by: UserUid,
        now: UnixSeconds,
        reply: Reply<ServerRecord>,
    },
    Shutdown,
}

/// A cheap, cloneable way to reach the storage thread from any thread or executor.
///
/// Every method sends one request and waits for its reply. If the queue is full the caller
/// waits for room (backpressure, not loss). If the thread has stopped, the answer is
/// [`StorageError::Unavailable`].
#[derive(Debug, Clone)]
pub struct StorageHandle {
    pub(crate) tx: flume::Sender<Request>,
    pub(crate) kind: StoreKind,
}

impl StorageHandle {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, StorageError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send_async(make(reply))
            .await
            .map_err(|_| StorageError::Unavailable("the storage thread has stopped".into()))?;
        answer
            .await
            .map_err(|_| StorageError::Unavailable("the storage thread stopped before answering".into()))?
    }

    /// Which backend answers.
    pub fn kind(&self) -> StoreKind {
        self.kind
    }

    /// Requests waiting in the queue right now (for metrics).
    pub fn queue_depth(&self) -> usize {
        self.tx.len()
    }

    /// Round trip to the database itself (readiness).
    pub async fn ping(&self) -> Result<(), StorageError> {
        self.call(Request::Ping).await
    }

    /// Writes the first-run community once; `Ok(false)` when the store was not empty or was
    /// seeded before.
    pub async fn seed(&self, seed: Seed, now: UnixSeconds) -> Result<bool, StorageError> {
        self.call(|reply| Request::Seed {
            seed: Box::new(seed),
            now,
            reply,
        })
        .await
    }

    pub async fn instance(&self) -> Result<InstanceRecord, StorageError> {
        self.call(Request::Instance).await
    }

    /// Servers in directory order, at most `limit`.
    pub async fn directory(&self, limit: usize) -> Result<Vec<ServerRecord>, StorageError> {
        self.call(|reply| Request::Directory { limit, reply }).await
    }

    pub async fn server(&self, server: ServerId) -> Result<ServerRecord, StorageError> {
        self.call(|reply| Request::Server { server, reply }).await
    }

    /// The server's channel groups with their channels, in display order.
    pub async fn layout(&self, server: ServerId) -> Result<Vec<GroupRecord>, StorageError> {
        self.call(|reply| Request::Layout { server, reply }).await
    }

    pub async fn members(&self, server: ServerId) -> Result<Vec<MemberRecord>, StorageError> {
        self.call(|reply| Request::Members { server, reply }).await
    }

    pub async fn update_settings(
        &self,
        server: ServerId,
        settings: ServerSettings,
        by: UserUid,
        now: UnixSeconds,
    ) -> Result<ServerRecord, StorageError> {
        self.call(|reply| Request::UpdateSettings {
            server,
            settings,
            by,
            now,
            reply,
        })
        .await
    }
}
