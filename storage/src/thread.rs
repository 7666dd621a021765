//! Starting, running and stopping the storage thread.

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openchat_core::limits::STORAGE_QUEUE_DEPTH_MAX;

use crate::db::{Db, StoreKind};
use crate::error::StorageError;
use crate::handle::{Request, StorageHandle};
use crate::postgres::{MIGRATION_LOCK_SQL, Postgres};
use crate::queries::{messages, profiles, servers};
use crate::sqlite::Sqlite;
use crate::{migrations, queries};

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

/// The run loop: one request at a time, in arrival order, until `Shutdown` or until every
/// sender is gone.
async fn serve<D: Db>(db: &mut D, rx: &flume::Receiver<Request>) {
    while let Ok(request) = rx.recv_async().await {
        // A caller that gave up (dropped its reply receiver) is not an error.
        match request {
            Request::Shutdown => break,
            Request::Ping(reply) => drop(reply.send(queries::ping(db).await)),
            Request::Seed { seed, now, reply } => drop(reply.send(queries::seed(db, &seed, now).await)),
            Request::Instance(reply) => drop(reply.send(queries::instance(db).await)),
            Request::Directory { viewer, limit, reply } => {
                drop(reply.send(queries::directory(db, viewer.as_ref(), limit).await))
            }
            Request::Server { server, reply } => drop(reply.send(queries::server(db, &server).await)),
            Request::Layout { server, reply } => drop(reply.send(queries::layout(db, &server).await)),
            Request::Members { server, reply } => drop(reply.send(queries::members(db, &server).await)),
            Request::UpdateSettings {
                server,
                settings,
                by,
                now,
                reply,
            } => drop(reply.send(queries::update_settings(db, &server, &settings, &by, now).await)),
            Request::CreateServer { new, reply } => drop(reply.send(servers::create_server(db, &new).await)),
            Request::ClaimOwnership {
                server,
                token_sha256,
                by,
                now,
                reply,
            } => drop(reply.send(servers::claim_ownership(db, &server, &token_sha256, &by, now).await)),
            Request::GrantOwner { server, owner, reply } => {
                drop(reply.send(servers::grant_owner(db, &server, &owner).await))
            }
            Request::LeaveServer {
                server,
                user,
                now,
                reply,
            } => drop(reply.send(servers::leave_server(db, &server, &user, now).await)),
            Request::Channel { channel, reply } => drop(reply.send(servers::channel(db, &channel).await)),
            Request::CreateChannel {
                server,
                group,
                channel,
                name,
                kind,
                e2ee,
                actor,
                now,
                reply,
            } => drop(reply.send(
                servers::create_channel(db, &server, &group, &channel, &name, kind, e2ee, &actor, now).await,
            )),
            Request::CreateCategory {
                server,
                group,
                name,
                kind,
                actor,
                now,
                reply,
            } => drop(
                reply.send(servers::create_category(db, &server, &group, &name, kind, &actor, now).await),
            ),
            Request::RenameCategory {
                server,
                group,
                name,
                actor,
                reply,
            } => drop(reply.send(servers::rename_category(db, &server, &group, &name, &actor).await)),
            Request::DeleteCategory {
                server,
                group,
                actor,
                reply,
            } => drop(reply.send(servers::delete_category(db, &server, &group, &actor).await)),
            Request::UpdateLayout {
                server,
                order,
                actor,
                reply,
            } => drop(reply.send(servers::update_layout(db, &server, &order, &actor).await)),
            Request::Messages {
                channel,
                page,
                viewer,
                reply,
            } => drop(reply.send(messages::list_messages(db, &channel, page, viewer.as_ref()).await)),
            Request::CreateMessage { new, reply } => {
                drop(reply.send(messages::create_message(db, &new).await))
            }
            Request::DeleteMessage {
                channel,
                message,
                actor,
                now,
                reply,
            } => drop(reply.send(messages::delete_message(db, &channel, &message, &actor, now).await)),
            Request::Attachment {
                channel,
                attachment,
                reply,
            } => drop(reply.send(messages::attachment(db, &channel, &attachment).await)),
            Request::ReadAck { channel, user, reply } => {
                drop(reply.send(messages::read_ack(db, &channel, &user).await))
            }
            Request::PutReadAck {
                channel,
                user,
                message,
                now,
                reply,
            } => drop(reply.send(messages::put_read_ack(db, &channel, &user, message.as_ref(), now).await)),
            Request::Mentions {
                channel,
                query,
                limit,
                reply,
            } => drop(reply.send(messages::mention_candidates(db, &channel, &query, limit).await)),
            Request::ChannelCounts {
                server,
                reader,
                reply,
            } => drop(reply.send(messages::channel_counts(db, &server, &reader).await)),
            Request::Profile { user, now, reply } => {
                drop(reply.send(profiles::profile(db, &user, now).await))
            }
            Request::Profiles { users, now, reply } => {
                drop(reply.send(profiles::profiles(db, &users, now).await))
            }
            Request::UpdateProfile { update, reply } => {
                drop(reply.send(profiles::update_profile(db, &update).await))
            }
            Request::InsertAvatar { avatar, reply } => {
                drop(reply.send(profiles::insert_avatar(db, &avatar).await))
            }
            Request::Avatar { asset, reply } => drop(reply.send(profiles::avatar(db, &asset).await)),
            Request::E2ee { op, reply } => drop(reply.send(queries::e2ee::run(db, *op).await)),
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
