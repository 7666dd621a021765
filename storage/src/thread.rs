//! Starting, running and stopping the storage thread.

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openchat_core::limits::STORAGE_QUEUE_DEPTH_MAX;

use crate::db::{Db, StoreKind};
use crate::error::StorageError;
use crate::handle::{Job, JobFuture, Request, StorageHandle};
use crate::migrations;
use crate::postgres::{MIGRATION_LOCK_SQL, Postgres};
use crate::sqlite::Sqlite;

/// Which database to open.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// Embedded SQLite in this directory (created when missing).
    Sqlite { data_dir: PathBuf },
    /// Postgres at this (parsed) connection configuration.
    Postgres { config: Box<tokio_postgres::Config> },
}

/// Owner of the storage thread; stop it with [`StorageThread::shutdown`].
#[derive(Debug)]
pub struct StorageThread {
    tx: flume::Sender<Request>,
    join: Option<JoinHandle<()>>,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Spawns the storage thread, opens the store and migrates it. Returns once the store is
/// ready, or with the reason it cannot be (bad data dir, unreachable database, schema newer
/// than this binary).
pub fn start(config: StoreConfig) -> Result<(StorageHandle, StorageThread), StorageError> {
    let kind = match config {
        StoreConfig::Sqlite { .. } => StoreKind::Sqlite,
        StoreConfig::Postgres { .. } => StoreKind::Postgres,
    };
    let (tx, rx) = flume::bounded(STORAGE_QUEUE_DEPTH_MAX);
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<(), StorageError>>(1);
    let join = std::thread::Builder::new()
        .name("openchat-storage".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(err) => {
                    let _ = ready_tx.send(Err(StorageError::Open(format!(
                        "cannot start storage runtime: {err}"
                    ))));
                    return;
                }
            };
            runtime.block_on(run(config, rx, ready_tx));
        })
        .map_err(|e| StorageError::Open(format!("cannot spawn the storage thread: {e}")))?;
    let ready = ready_rx.recv().unwrap_or_else(|_| {
        Err(StorageError::Open(
            "the storage thread exited during start-up".into(),
        ))
    });
    match ready {
        Ok(()) => Ok((
            StorageHandle { tx: tx.clone(), kind },
            StorageThread { tx, join: Some(join) },
        )),
        Err(err) => {
            let _ = join.join();
            Err(err)
        }
    }
}

async fn run(
    config: StoreConfig,
    rx: flume::Receiver<Request>,
    ready: std::sync::mpsc::SyncSender<Result<(), StorageError>>,
) {
    match config {
        StoreConfig::Sqlite { data_dir } => {
            let mut store = match Sqlite::open(&data_dir) {
                Ok(store) => store,
                Err(err) => {
                    let _ = ready.send(Err(err));
                    return;
                }
            };
            if let Err(err) = open(&mut store, None, &ready).await {
                let _ = ready.send(Err(err));
                return;
            }
            serve(&mut store, &rx).await;
            if let Err(err) = store.close() {
                tracing::warn!(error = %err, "closing the sqlite store failed");
            }
        }
        StoreConfig::Postgres { config } => {
            let mut store = match Postgres::connect(*config).await {
                Ok(store) => store,
                Err(err) => {
                    let _ = ready.send(Err(err));
                    return;
                }
            };
            if let Err(err) = open(&mut store, Some(MIGRATION_LOCK_SQL), &ready).await {
                let _ = ready.send(Err(err));
                return;
            }
            serve(&mut store, &rx).await;
        }
    }
    tracing::info!("storage thread stopped");
}

async fn open<D: Db>(
    store: &mut D,
    lock_sql: Option<&str>,
    ready: &std::sync::mpsc::SyncSender<Result<(), StorageError>>,
) -> Result<(), StorageError> {
    let applied = migrations::migrate(store, lock_sql, unix_now()).await?;
    if !applied.is_empty() {
        tracing::info!(?applied, "applied migrations");
    }
    let _ = ready.send(Ok(()));
    Ok(())
}

/// A backend the storage thread can run jobs on.
trait Backend: Db {
    fn accept(&mut self, job: Box<dyn Job>) -> JobFuture<'_>;
}

impl Backend for Sqlite {
    fn accept(&mut self, job: Box<dyn Job>) -> JobFuture<'_> {
        job.on_sqlite(self)
    }
}

impl Backend for Postgres {
    fn accept(&mut self, job: Box<dyn Job>) -> JobFuture<'_> {
        job.on_postgres(self)
    }
}

/// The run loop: one job at a time, in arrival order, until `Shutdown` or until every
/// sender is gone.
async fn serve<D: Backend>(db: &mut D, rx: &flume::Receiver<Request>) {
    while let Ok(request) = rx.recv_async().await {
        match request {
            Request::Shutdown => break,
            Request::Job(job) => db.accept(job).await,
        }
    }
}

impl StorageThread {
    /// Asks the thread to stop after the requests already queued, closes the database and
    /// waits for the thread, at most `grace`.
    pub fn shutdown(mut self, grace: Duration) -> Result<(), StorageError> {
        let deadline = Instant::now() + grace;
        self.tx.send_timeout(Request::Shutdown, grace).map_err(|_| {
            StorageError::Unavailable("the storage thread did not take the shutdown request".into())
        })?;
        let Some(join) = self.join.take() else {
            return Ok(());
        };
        while !join.is_finished() {
            if Instant::now() >= deadline {
                return Err(StorageError::Unavailable(format!(
                    "the storage thread did not stop within {grace:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        join.join()
            .map_err(|_| StorageError::Backend("the storage thread panicked".into()))
    }
}
