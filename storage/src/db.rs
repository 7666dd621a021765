//! The narrow waist between the business logic and the two backends.
//!
//! Both backends run the same SQL text: positional parameters are written `$1`, `$2`, ...
//! in order of first use (Postgres' syntax; SQLite reads them as named parameters and
//! numbers them in order of first appearance, which is the same thing). Values cross as
//! [`Param`] (borrowed, in) and [`Value`] (owned, out), so neither backend's types leak.

use crate::error::StorageError;

/// The backend behind a handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

impl StoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
        }
    }
}

/// A statement parameter.
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    Int(i64),
    Text(&'a str),
    OptText(Option<&'a str>),
}

/// A column value read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
}

/// One result row.
#[derive(Debug, Clone)]
pub struct Row(pub(crate) Vec<Value>);

impl Row {
    fn column(&self, index: usize) -> Result<&Value, StorageError> {
        self.0
            .get(index)
            .ok_or_else(|| StorageError::Corrupt(format!("row has no column {index}")))
    }

    pub(crate) fn int(&self, index: usize) -> Result<i64, StorageError> {
        match self.column(index)? {
            Value::Int(value) => Ok(*value),
            other => Err(StorageError::Corrupt(format!(
                "column {index}: expected integer, got {other:?}"
            ))),
        }
    }

    pub(crate) fn text(&self, index: usize) -> Result<String, StorageError> {
        match self.column(index)? {
            Value::Text(value) => Ok(value.clone()),
            other => Err(StorageError::Corrupt(format!(
                "column {index}: expected text, got {other:?}"
            ))),
        }
    }

    pub(crate) fn opt_int(&self, index: usize) -> Result<Option<i64>, StorageError> {
        match self.column(index)? {
            Value::Null => Ok(None),
            Value::Int(value) => Ok(Some(*value)),
            other => Err(StorageError::Corrupt(format!(
                "column {index}: expected integer, got {other:?}"
            ))),
        }
    }

    pub(crate) fn opt_text(&self, index: usize) -> Result<Option<String>, StorageError> {
        match self.column(index)? {
            Value::Null => Ok(None),
            Value::Text(value) => Ok(Some(value.clone())),
            other => Err(StorageError::Corrupt(format!(
                "column {index}: expected text, got {other:?}"
            ))),
        }
    }
}

/// A database connection as the business logic sees it.
///
/// Transactions are plain `BEGIN`/`COMMIT`/`ROLLBACK` statements: the storage thread runs
/// one request at a time on one connection, so nothing else can interleave.
///
/// Public only to appear in [`Query`](crate::Query)'s signature (it is not re-exported);
/// its futures run on the storage thread's single-threaded runtime and need not be `Send`.
#[allow(async_fn_in_trait)]
pub trait Db {
    /// How many [`in_transaction`] calls are running on this connection (0: none).
    fn tx_depth(&mut self) -> &mut u32;
    /// The statement that opens a write transaction.
    fn begin_sql(&self) -> &'static str;
    /// A statement taking a transaction-scoped lock on the scope named by its one text
    /// parameter, where the backend needs one (see [`lock_scope`]).
    fn scope_lock_sql(&self) -> Option<&'static str> {
        None
    }
    /// Runs one or more statements without parameters or results (migrations, BEGIN...).
    async fn batch(&mut self, sql: &str) -> Result<(), StorageError>;
    /// Runs one statement; returns the number of rows it changed.
    async fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StorageError>;
    /// Runs one query; returns every row.
    async fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StorageError>;

    async fn query_opt(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>, StorageError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }
}

/// Serialises the transactions that allocate within one scope (a channel's message
/// numbers, a table's ids: `MAX(..) + 1`) across connections, so that two nodes writing at
/// once never pick the same number: Postgres takes a transaction-scoped advisory lock on
/// the scope; SQLite's write transaction already excludes every other writer. Call it
/// inside [`in_transaction`], before reading the maximum.
pub(crate) async fn lock_scope<D: Db>(db: &mut D, scope: &str) -> Result<(), StorageError> {
    if let Some(sql) = db.scope_lock_sql() {
        db.execute(sql, &[Param::Text(scope)]).await?;
    }
    Ok(())
}

/// Runs `work` inside a transaction: commits on `Ok`, rolls back on `Err`.
///
/// Inside another `in_transaction` on the same connection, `work` joins the outer
/// transaction (no `BEGIN`/`COMMIT` of its own; its error rolls the outer one back when
/// the outer returns it), so an operation can run inside a larger one, as
/// `queries::Outboxed` does.
pub(crate) async fn in_transaction<D: Db, T>(
    db: &mut D,
    work: impl AsyncFnOnce(&mut D) -> Result<T, StorageError>,
) -> Result<T, StorageError> {
    if *db.tx_depth() > 0 {
        *db.tx_depth() += 1;
        let result = work(db).await;
        *db.tx_depth() -= 1;
        return result;
    }
    let begin = db.begin_sql();
    db.batch(begin).await?;
    *db.tx_depth() = 1;
    let result = work(db).await;
    *db.tx_depth() = 0;
    match result {
        Ok(value) => {
            db.batch("COMMIT").await?;
            Ok(value)
        }
        Err(err) => {
            // A failed rollback (connection gone) changes nothing for the caller: the
            // transaction did not commit either way.
            let _ = db.batch("ROLLBACK").await;
            Err(err)
        }
    }
}
