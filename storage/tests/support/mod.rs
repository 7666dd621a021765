//! The conformance suite's fixtures: one store per test, on either backend.
//!
//! SQLite stores live in a fresh temporary directory. Postgres stores live in a fresh
//! database (`oc_test_<uuid>`) created on the server named by `OPENCHAT_TEST_DATABASE_URL`
//! and dropped afterwards, so concurrent tests and runs never see each other's rows.

#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use openchat_storage::{StorageHandle, StorageThread, StoreConfig, start};

pub const DATABASE_URL_VAR: &str = "OPENCHAT_TEST_DATABASE_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The Postgres server for tests, or `None` (a skip, announced) outside CI. Under `CI=true`
/// a missing URL fails the test.
pub fn postgres_url() -> Option<String> {
    match std::env::var(DATABASE_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "{DATABASE_URL_VAR} is not set, but CI=true requires the Postgres backend to be tested"
                );
            }
            eprintln!("SKIP: {DATABASE_URL_VAR} is not set; Postgres conformance not run");
            None
        }
    }
}

pub struct Fixture {
    pub backend: Backend,
    pub config: StoreConfig,
    pub handle: Option<StorageHandle>,
    thread: Option<StorageThread>,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(tokio_postgres::Config, String)>,
}

async fn admin(config: &tokio_postgres::Config) -> tokio_postgres::Client {
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect to the test postgres");
    tokio::spawn(connection);
    client
}

impl Fixture {
    /// A fresh, started store; `None` when the backend is not available (outside CI).
    pub async fn new(backend: Backend) -> Option<Self> {
        let (config, dir, pg) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                (
                    StoreConfig::Sqlite {
                        data_dir: dir.path().join("data"),
                    },
                    Some(dir),
                    None,
                )
            }
            Backend::Postgres => {
                let url = postgres_url()?;
                let base: tokio_postgres::Config = url.parse().expect("OPENCHAT_TEST_DATABASE_URL parses");
                let name = format!("oc_test_{}", uuid::Uuid::new_v4().simple());
                admin(&base)
                    .await
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .await
                    .unwrap();
                let mut config = base.clone();
                config.dbname(&name);
                (
                    StoreConfig::Postgres {
                        config: Box::new(config),
                    },
                    None,
                    Some((base, name)),
                )
            }
        };
        let mut fixture = Self {
            backend,
            config,
            handle: None,
            thread: None,
            _dir: dir,
            pg,
        };
        fixture.start().await.expect("store starts");
        Some(fixture)
    }

    pub async fn start(&mut self) -> Result<(), openchat_storage::StorageError> {
        let config = self.config.clone();
        let (handle, thread) = tokio::task::spawn_blocking(move || start(config))
            .await
            .unwrap()?;
        self.handle = Some(handle);
        self.thread = Some(thread);
        Ok(())
    }

    pub fn handle(&self) -> &StorageHandle {
        self.handle.as_ref().unwrap()
    }

    pub async fn stop(&mut self) {
        self.handle = None;
        if let Some(thread) = self.thread.take() {
            tokio::task::spawn_blocking(move || thread.shutdown(Duration::from_secs(10)))
                .await
                .unwrap()
                .unwrap();
        }
    }

    pub async fn restart(&mut self) {
        self.stop().await;
        self.start().await.expect("store restarts");
    }

    /// Runs raw SQL against the store's database, outside the storage thread.
    pub async fn raw(&self, sql: &str) {
        match &self.config {
            StoreConfig::Sqlite { data_dir } => {
                let conn = rusqlite::Connection::open(data_dir.join("openchat.sqlite3")).unwrap();
                conn.execute_batch(sql).unwrap();
            }
            StoreConfig::Postgres { config } => admin(config).await.batch_execute(sql).await.unwrap(),
        }
    }

    /// Reads one integer with raw SQL, outside the storage thread.
    pub async fn raw_i64(&self, sql: &str) -> i64 {
        match &self.config {
            StoreConfig::Sqlite { data_dir } => {
                let conn = rusqlite::Connection::open(data_dir.join("openchat.sqlite3")).unwrap();
                conn.query_row(sql, [], |row| row.get(0)).unwrap()
            }
            StoreConfig::Postgres { config } => admin(config).await.query_one(sql, &[]).await.unwrap().get(0),
        }
    }

    pub async fn finish(mut self) {
        self.stop().await;
        if let Some((base, name)) = self.pg.take() {
            admin(&base)
                .await
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
                .unwrap();
        }
    }
}

/// Declares each listed test once per backend: `sqlite::<name>` and `postgres::<name>`.
#[macro_export]
macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let fixture = $crate::support::Fixture::new($crate::support::Backend::Sqlite).await.unwrap();
                    super::$name(fixture).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(fixture) = $crate::support::Fixture::new($crate::support::Backend::Postgres).await {
                        super::$name(fixture).await;
                    }
                }
            )+
        }
    };
}
