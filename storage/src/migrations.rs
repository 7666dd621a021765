//! Versioned migrations, run at start-up inside one transaction.
//!
//! Architecture invariant: versions only grow and a released migration is never edited.
//! Each migration names the oldest schema version whose binary still runs on the schema it
//! leaves (`oldest_reader`: its own version minus one when it only adds), and the database
//! records that, cumulatively, per version (`schema_readers`, from version 6). A binary
//! that finds a newer database starts if the newest version's oldest reader is at or below
//! its own version, so releases N and N+1 run side by side during a rolling upgrade, and
//! refuses it otherwise (a newer release changed something this one cannot know about).

use crate::db::{Db, Param, in_transaction};
use crate::error::StorageError;

pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
    /// The oldest schema version whose binary runs correctly after this migration.
    pub(crate) oldest_reader: i64,
}

/// Every migration, in order. Both backends run the same portable SQL.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "base",
        sql: include_str!("../migrations/0001_base.sql"),
        oldest_reader: 1,
    },
    Migration {
        version: 2,
        name: "chat",
        sql: include_str!("../migrations/0002_chat.sql"),
        oldest_reader: 1,
    },
    Migration {
        version: 3,
        name: "e2ee",
        sql: include_str!("../migrations/0003_e2ee.sql"),
        oldest_reader: 2,
    },
    Migration {
        version: 4,
        name: "mentions",
        sql: include_str!("../migrations/0004_mentions.sql"),
        oldest_reader: 3,
    },
    Migration {
        version: 5,
        name: "outbox",
        sql: include_str!("../migrations/0005_outbox.sql"),
        oldest_reader: 4,
    },
    Migration {
        version: 6,
        name: "schema_readers",
        sql: include_str!("../migrations/0006_schema_readers.sql"),
        oldest_reader: 5,
    },
    Migration {
        version: 7,
        name: "used_tickets",
        sql: include_str!("../migrations/0007_used_tickets.sql"),
        oldest_reader: 6,
    },
];

/// The schema version this binary writes and understands.
pub const SCHEMA_VERSION: i64 = 7;

const _: () = assert!(MIGRATIONS[MIGRATIONS.len() - 1].version == SCHEMA_VERSION);

/// The migration that made `schema_readers`.
const READERS_TABLE_VERSION: i64 = 6;

/// The oldest reader of the schema after `version`: the newest `oldest_reader` of every
/// migration up to it (a binary must cope with all of them).
fn oldest_reader_after(version: i64) -> i64 {
    MIGRATIONS
        .iter()
        .filter(|m| m.version <= version)
        .map(|m| m.oldest_reader)
        .max()
        .unwrap_or(0)
}

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
            let oldest_reader = db
                .query_opt(
                    "SELECT oldest_reader FROM schema_readers WHERE version = $1",
                    &[Param::Int(current)],
                )
                .await?
                .map(|row| row.int(0))
                .transpose()?;
            return match oldest_reader {
                Some(oldest) if oldest <= SCHEMA_VERSION => {
                    tracing::warn!(
                        found = current,
                        supported = SCHEMA_VERSION,
                        "the database was migrated by a newer release that this one can run beside"
                    );
                    Ok(Vec::new())
                }
                _ => Err(StorageError::SchemaTooNew {
                    found: current,
                    supported: SCHEMA_VERSION,
                }),
            };
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
            if migration.version >= READERS_TABLE_VERSION {
                db.execute(
                    "INSERT INTO schema_readers (version, oldest_reader) VALUES ($1, $2)",
                    &[
                        Param::Int(migration.version),
                        Param::Int(oldest_reader_after(migration.version)),
                    ],
                )
                .await?;
            }
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
            assert!(migration.oldest_reader <= migration.version, "{}", migration.name);
        }
    }

    #[test]
    fn the_oldest_reader_is_the_strictest_of_the_migrations_so_far() {
        assert_eq!(oldest_reader_after(SCHEMA_VERSION), SCHEMA_VERSION - 1);
        assert_eq!(oldest_reader_after(1), 1);
    }
}
