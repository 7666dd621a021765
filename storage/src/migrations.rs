//! Versioned migrations, run at start-up inside one transaction.
//!
//! Architecture invariant: versions only grow, a released migration is never edited, and a
//! database whose recorded version is above [`SCHEMA_VERSION`] is refused, because an older
//! binary cannot know what a newer one changed.

use crate::db::{Db, Param, in_transaction};
use crate::error::StorageError;

pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
}

/// Every migration, in order. Both backends run the same portable SQL.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "base",
        sql: include_str!("../migrations/0001_base.sql"),
    },
    Migration {
        version: 2,
        name: "chat",
        sql: include_str!("../migrations/0002_chat.sql"),
    },
    Migration {
        version: 3,
        name: "e2ee",
        sql: include_str!("../migrations/0003_e2ee.sql"),
    },
    Migration {
        version: 4,
        name: "mentions",
        sql: include_str!("../migrations/0004_mentions.sql"),
    },
    Migration {
        version: 5,
        name: "outbox",
        sql: include_str!("../migrations/0005_outbox.sql"),
    },
];

/// The schema version this binary writes and understands.
pub const SCHEMA_VERSION: i64 = 5;

const _: () = assert!(MIGRATIONS[MIGRATIONS.len() - 1].version == SCHEMA_VERSION);

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)";

/// Brings the schema to [`SCHEMA_VERSION`]; returns the versions it applied.
///
/// `lock_sql` serialises concurrent migrators where the backend needs it (Postgres: an
/// advisory transaction lock; SQLite: `BEGIN IMMEDIATE` already holds the write lock).
pub(crate) async fn migrate<D: Db>(
    db: &mut D,
    lock_sql: Option<&str>,
    now: i64,
) -> Result<Vec<i64>, StorageError> {
    in_transaction(db, async |db: &mut D| {
        if let Some(lock_sql) = lock_sql {
            db.batch(lock_sql).await?;
        }
        db.batch(CREATE_TABLE).await?;
        let current = db
            .query_opt("SELECT MAX(version) FROM schema_migrations", &[])
            .await?
            .map(|row| match row.0.first() {
                Some(crate::db::Value::Int(version)) => Ok(*version),
                Some(crate::db::Value::Null) | None => Ok(0),
                Some(other) => Err(StorageError::Corrupt(format!("schema version {other:?}"))),
            })
            .transpose()?
            .unwrap_or(0);
        if current > SCHEMA_VERSION {
            return Err(StorageError::SchemaTooNew {
                found: current,
                supported: SCHEMA_VERSION,
            });
        }
        let mut applied = Vec::new();
        for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
            db.batch(migration.sql).await?;
            db.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                &[
                    Param::Int(migration.version),
                    Param::Text(migration.name),
                    Param::Int(now),
                ],
            )
            .await?;
            applied.push(migration.version);
        }
        Ok(applied)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_versions_are_strictly_increasing_from_one() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version, index as i64 + 1, "{}", migration.name);
        }
    }
}
