//! The embedded backend: one rusqlite connection in WAL mode, owned by the storage thread.
//!
//! The calls are synchronous; they run inside the storage thread's async loop only so that
//! both backends share one request loop and one implementation of the business logic.

use std::path::{Path, PathBuf};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{CachedStatement, Connection, OpenFlags, ToSql};

use crate::db::{Db, Param, Row, Value};
use crate::error::StorageError;

/// The database file inside `OPENCHAT_DATA_DIR`.
pub(crate) const DB_FILE_NAME: &str = "openchat.sqlite3";

/// How long a statement waits for another process' lock before failing.
const BUSY_TIMEOUT_MS: u64 = 5_000;
/// Prepared statements kept per connection.
const STATEMENT_CACHE_MAX: usize = 64;

pub(crate) struct Sqlite {
    conn: Connection,
    tx_depth: u32,
}

impl std::fmt::Debug for Sqlite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sqlite").finish_non_exhaustive()
    }
}

fn backend(err: rusqlite::Error) -> StorageError {
    match err {
        rusqlite::Error::SqliteFailure(code, _) if code.code == rusqlite::ErrorCode::ConstraintViolation => {
            StorageError::conflict("conflict", err.to_string())
        }
        rusqlite::Error::SqliteFailure(code, _)
            if matches!(
                code.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            StorageError::Unavailable(err.to_string())
        }
        other => StorageError::Backend(other.to_string()),
    }
}

impl Sqlite {
    /// Opens (creating when needed) the store in `data_dir`, after checking that the
    /// directory can be created and written, so a bad data dir fails at start-up.
    pub(crate) fn open(data_dir: &Path) -> Result<Self, StorageError> {
        let shown = data_dir.display();
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StorageError::Open(format!("cannot create data directory {shown}: {e}")))?;
        let probe: PathBuf = data_dir.join(".openchat-write-probe");
        std::fs::write(&probe, b"probe")
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|e| StorageError::Open(format!("data directory {shown} is not writable: {e}")))?;
        let path = data_dir.join(DB_FILE_NAME);
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StorageError::Open(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))
            .map_err(backend)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_MAX);
        // WAL: readers never block the writer. synchronous=FULL: a committed transaction
        // survives a crash of the process and of the machine.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(|e| StorageError::Open(format!("cannot enable WAL on {}: {e}", path.display())))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StorageError::Open(format!(
                "{} refused WAL mode (got {mode})",
                path.display()
            )));
        }
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(backend)?;
        Ok(Self { conn, tx_depth: 0 })
    }

    /// Checkpoints the WAL into the main file and closes the connection.
    pub(crate) fn close(self) -> Result<(), StorageError> {
        self.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(backend)?;
        self.conn.close().map_err(|(_, e)| backend(e))
    }
}

impl ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Param::Int(value) => ToSqlOutput::Borrowed(ValueRef::Integer(*value)),
            Param::Text(value) | Param::OptText(Some(value)) => {
                ToSqlOutput::Borrowed(ValueRef::Text(value.as_bytes()))
            }
            Param::OptText(None) => ToSqlOutput::Borrowed(ValueRef::Null),
        })
    }
}

fn value(raw: ValueRef<'_>) -> Result<Value, StorageError> {
    match raw {
        ValueRef::Null => Ok(Value::Null),
        ValueRef::Integer(value) => Ok(Value::Int(value)),
        ValueRef::Text(bytes) => String::from_utf8(bytes.to_vec())
            .map(Value::Text)
            .map_err(|e| StorageError::Corrupt(format!("text column is not UTF-8: {e}"))),
        other => Err(StorageError::Corrupt(format!(
            "unsupported column type {:?}",
            other.data_type()
        ))),
    }
}

/// Parameter names `$1`..`$32`: the shared SQL's positional parameters, which SQLite sees
/// as named ones.
const PARAM_NAMES: [&str; 32] = [
    "$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8", "$9", "$10", "$11", "$12", "$13", "$14", "$15", "$16",
    "$17", "$18", "$19", "$20", "$21", "$22", "$23", "$24", "$25", "$26", "$27", "$28", "$29", "$30", "$31",
    "$32",
];

/// Binds `$n` to `params[n - 1]` by name. SQLite numbers named parameters in order of first
/// appearance, so binding by position would be wrong whenever `$2` appears before `$1`.
fn bind(statement: &mut CachedStatement<'_>, params: &[Param<'_>]) -> Result<(), StorageError> {
    if params.len() > PARAM_NAMES.len() || params.len() != statement.parameter_count() {
        return Err(StorageError::Backend(format!(
            "statement takes {} parameters, {} given",
            statement.parameter_count(),
            params.len()
        )));
    }
    for (param, name) in params.iter().zip(PARAM_NAMES) {
        let index = statement
            .parameter_index(name)
            .map_err(backend)?
            .ok_or_else(|| StorageError::Backend(format!("statement has no parameter {name}")))?;
        statement.raw_bind_parameter(index, param).map_err(backend)?;
    }
    Ok(())
}

impl Db for Sqlite {
    fn tx_depth(&mut self) -> &mut u32 {
        &mut self.tx_depth
    }

    fn begin_sql(&self) -> &'static str {
        // IMMEDIATE takes the write lock up front, so two processes on one file never
        // deadlock upgrading a read transaction.
        "BEGIN IMMEDIATE"
    }

    async fn batch(&mut self, sql: &str) -> Result<(), StorageError> {
        self.conn.execute_batch(sql).map_err(backend)
    }

    async fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StorageError> {
        let mut statement = self.conn.prepare_cached(sql).map_err(backend)?;
        bind(&mut statement, params)?;
        let changed = statement.raw_execute().map_err(backend)?;
        Ok(changed as u64)
    }

    async fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StorageError> {
        let mut statement = self.conn.prepare_cached(sql).map_err(backend)?;
        let columns = statement.column_count();
        bind(&mut statement, params)?;
        let mut rows = statement.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(backend)? {
            let mut values = Vec::with_capacity(columns);
            for index in 0..columns {
                values.push(value(row.get_ref(index).map_err(backend)?)?);
            }
            out.push(Row(values));
        }
        Ok(out)
    }
}
