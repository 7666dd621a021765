//! The request side of the storage thread: [`StorageHandle`] and the boxed job it sends.
//!
//! A [`Query`] travels as a [`Job`]: the query and its reply channel, boxed so that one
//! bounded queue carries every kind of operation. The storage thread runs the job against
//! its open backend; the job sends the typed answer back itself.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::oneshot;

use crate::db::StoreKind;
use crate::error::StorageError;
use crate::postgres::Postgres;
use crate::query::Query;
use crate::sqlite::Sqlite;

/// A job's work as the storage thread awaits it.
pub(crate) type JobFuture<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// One query with its reply channel, runnable on either backend.
pub(crate) trait Job: Send {
    fn on_sqlite(self: Box<Self>, db: &mut Sqlite) -> JobFuture<'_>;
    fn on_postgres(self: Box<Self>, db: &mut Postgres) -> JobFuture<'_>;
}

struct QueryJob<Q: Query> {
    query: Q,
    reply: oneshot::Sender<Result<Q::Output, StorageError>>,
}

impl<Q: Query> Job for QueryJob<Q> {
    fn on_sqlite(self: Box<Self>, db: &mut Sqlite) -> JobFuture<'_> {
        // A caller that gave up (dropped its reply receiver) is not an error.
        Box::pin(async move { drop(self.reply.send(self.query.run(db).await)) })
    }

    fn on_postgres(self: Box<Self>, db: &mut Postgres) -> JobFuture<'_> {
        Box::pin(async move { drop(self.reply.send(self.query.run(db).await)) })
    }
}

/// What the storage thread's queue carries.
pub(crate) enum Request {
    Job(Box<dyn Job>),
    Shutdown,
}

/// A cheap, cloneable way to reach the storage thread from any thread or executor.
///
/// [`run`](Self::run) sends one query and waits for its answer. If the queue is full the
/// caller waits for room (backpressure, not loss). If the thread has stopped, the answer is
/// [`StorageError::Unavailable`].
#[derive(Debug, Clone)]
pub struct StorageHandle {
    pub(crate) tx: flume::Sender<Request>,
    pub(crate) kind: StoreKind,
}

impl StorageHandle {
    /// Runs one operation on the storage thread and returns its typed answer.
    pub async fn run<Q: Query>(&self, query: Q) -> Result<Q::Output, StorageError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send_async(Request::Job(Box::new(QueryJob { query, reply })))
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
}
