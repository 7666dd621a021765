//! The Postgres backend: one tokio-postgres connection driven by the storage thread's
//! current-thread runtime, re-established with exponential backoff whenever it is lost.
//!
//! Nothing waits on a dead database: while disconnected, a request either triggers one
//! bounded connection attempt (when the backoff has elapsed) or fails at once with
//! [`StorageError::Unavailable`]; every statement runs under [`STATEMENT_TIMEOUT`].

use std::collections::HashMap;
use std::error::Error as _;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, NoTls, Statement};

use crate::db::{Db, Param, Row, Value};
use crate::error::StorageError;

/// One connection attempt, including the start-up handshake.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// One statement, including its round trip.
pub(crate) const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Prepared statements kept per connection.
const STATEMENT_CACHE_MAX: usize = 256;

/// Serialises migrators across processes sharing one database ("openchat" in ASCII).
pub(crate) const MIGRATION_LOCK_SQL: &str = "SELECT pg_advisory_xact_lock(7957612157220611444)";

pub(crate) struct Postgres {
    config: tokio_postgres::Config,
    client: Option<Client>,
    statements: HashMap<String, Statement>,
    next_attempt: Instant,
    backoff: Duration,
    /// A `BEGIN` ran on the current connection and has not ended. A connection lost in
    /// this state is not replaced until the transaction is rolled back, so the rest of the
    /// transaction can never run, auto-committed, on a new connection.
    in_transaction: bool,
    tx_depth: u32,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("connected", &self.client.is_some())
            .finish_non_exhaustive()
    }
}

fn describe(err: &tokio_postgres::Error) -> String {
    match err.source() {
        Some(source) => format!("{err}: {source}"),
        None => err.to_string(),
    }
}

impl Postgres {
    /// Connects for the first time. Start-up fails (it does not retry forever) so that a
    /// wrong `OPENCHAT_DATABASE_URL` is reported at once.
    pub(crate) async fn connect(config: tokio_postgres::Config) -> Result<Self, StorageError> {
        let mut store = Self {
            config,
            client: None,
            statements: HashMap::new(),
            next_attempt: Instant::now(),
            backoff: BACKOFF_MIN,
            in_transaction: false,
            tx_depth: 0,
        };
        store.reconnect().await.map_err(|e| match e {
            StorageError::Unavailable(message) => StorageError::Open(message),
            other => other,
        })?;
        Ok(store)
    }

    async fn reconnect(&mut self) -> Result<(), StorageError> {
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT, self.config.connect(NoTls)).await;
        let failure = match attempt {
            Ok(Ok((client, connection))) => {
                tokio::spawn(async move {
                    if let Err(err) = connection.await {
                        tracing::warn!(error = %describe(&err), "postgres connection ended");
                    }
                });
                if self.backoff > BACKOFF_MIN {
                    tracing::info!("postgres connection re-established");
                }
                self.client = Some(client);
                self.statements.clear();
                self.backoff = BACKOFF_MIN;
                return Ok(());
            }
            Ok(Err(err)) => format!("cannot connect to postgres: {}", describe(&err)),
            Err(_) => format!("cannot connect to postgres: no answer within {CONNECT_TIMEOUT:?}"),
        };
        self.next_attempt = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        Err(StorageError::Unavailable(failure))
    }

    /// The live client, reconnecting first when the backoff allows it.
    async fn client(&mut self) -> Result<&Client, StorageError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            tracing::warn!("postgres connection lost; reconnecting with backoff");
            self.client = None;
        }
        if self.client.is_none() {
            if self.in_transaction {
                return Err(StorageError::Unavailable(
                    "postgres connection lost mid-transaction".into(),
                ));
            }
            if Instant::now() < self.next_attempt {
                return Err(StorageError::Unavailable(
                    "postgres is unreachable; reconnecting".into(),
                ));
            }
            self.reconnect().await?;
        }
        self.client
            .as_ref()
            .ok_or_else(|| StorageError::Unavailable("postgres is unreachable".into()))
    }

    /// Classifies a failed statement, dropping the connection when it is no longer usable.
    fn fail(&mut self, err: tokio_postgres::Error) -> StorageError {
        if err.is_closed() || self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            return StorageError::Unavailable(describe(&err));
        }
        match err.code() {
            Some(code) if code == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION => {
                StorageError::conflict("conflict", describe(&err))
            }
            Some(code) if code.code().starts_with("08") || code.code().starts_with("57P") => {
                // Connection exceptions and operator intervention (shutdown, crash).
                self.client = None;
                StorageError::Unavailable(describe(&err))
            }
            _ => StorageError::Backend(describe(&err)),
        }
    }

    fn timed_out(&mut self) -> StorageError {
        // The connection's state is unknown after an abandoned statement: start over.
        self.client = None;
        StorageError::Unavailable(format!("postgres did not answer within {STATEMENT_TIMEOUT:?}"))
    }

    async fn statement(&mut self, sql: &str) -> Result<Statement, StorageError> {
        // Connect first: a reconnect empties the cache of the old connection's statements.
        self.client().await?;
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let client = self.client().await?;
        let prepared = tokio::time::timeout(STATEMENT_TIMEOUT, client.prepare(sql)).await;
        let statement = match prepared {
            Ok(Ok(statement)) => statement,
            Ok(Err(err)) => return Err(self.fail(err)),
            Err(_) => return Err(self.timed_out()),
        };
        if self.statements.len() >= STATEMENT_CACHE_MAX {
            self.statements.clear();
        }
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Param::Int(value) => value.to_sql(ty, out),
            Param::Text(value) => value.to_sql(ty, out),
            Param::OptText(value) => value.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <i64 as ToSql>::accepts(ty) || <&str as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

fn row(raw: &tokio_postgres::Row) -> Result<Row, StorageError> {
    let mut values = Vec::with_capacity(raw.len());
    for (index, column) in raw.columns().iter().enumerate() {
        let cell = match *column.type_() {
            Type::INT8 => raw.try_get::<_, Option<i64>>(index).map(|v| v.map(Value::Int)),
            Type::INT4 => raw
                .try_get::<_, Option<i32>>(index)
                .map(|v| v.map(|v| Value::Int(v.into()))),
            Type::INT2 => raw
                .try_get::<_, Option<i16>>(index)
                .map(|v| v.map(|v| Value::Int(v.into()))),
            Type::BOOL => raw
                .try_get::<_, Option<bool>>(index)
                .map(|v| v.map(|v| Value::Int(v.into()))),
            Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => raw
                .try_get::<_, Option<String>>(index)
                .map(|v| v.map(Value::Text)),
            ref other => return Err(StorageError::Corrupt(format!("unsupported column type {other}"))),
        };
        let cell = cell.map_err(|e| StorageError::Corrupt(describe(&e)))?;
        values.push(cell.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

impl Db for Postgres {
    fn tx_depth(&mut self) -> &mut u32 {
        &mut self.tx_depth
    }

    fn begin_sql(&self) -> &'static str {
        "BEGIN"
    }

    fn scope_lock_sql(&self) -> Option<&'static str> {
        Some("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
    }

    async fn batch(&mut self, sql: &str) -> Result<(), StorageError> {
        let ends_transaction = sql == "COMMIT" || sql == "ROLLBACK";
        if sql == "ROLLBACK" && self.client.is_none() {
            // The connection (and with it the open transaction) is already gone.
            self.in_transaction = false;
            return Ok(());
        }
        let client = self.client().await?;
        let result = match tokio::time::timeout(STATEMENT_TIMEOUT, client.batch_execute(sql)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(self.fail(err)),
            Err(_) => Err(self.timed_out()),
        };
        if ends_transaction {
            self.in_transaction = false;
        } else if sql == "BEGIN" && result.is_ok() {
            self.in_transaction = true;
        }
        result
    }

    async fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StorageError> {
        let statement = self.statement(sql).await?;
        let client = self.client().await?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        match tokio::time::timeout(STATEMENT_TIMEOUT, client.execute(&statement, &refs)).await {
            Ok(Ok(changed)) => Ok(changed),
            Ok(Err(err)) => Err(self.fail(err)),
            Err(_) => Err(self.timed_out()),
        }
    }

    async fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StorageError> {
        let statement = self.statement(sql).await?;
        let client = self.client().await?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        match tokio::time::timeout(STATEMENT_TIMEOUT, client.query(&statement, &refs)).await {
            Ok(Ok(rows)) => rows.iter().map(row).collect(),
            Ok(Err(err)) => Err(self.fail(err)),
            Err(_) => Err(self.timed_out()),
        }
    }
}
