//! The realtime outbox (cluster mode): events written in the same transaction as the
//! change they report ([`Outboxed`]), read back in order by the node's relay
//! ([`OutboxPending`]) and deleted once NATS has them ([`OutboxRelayed`]).
//!
//! Event contents are opaque text here (the front-end's JSON); storage only keeps them in
//! order, per node.

use openchat_core::UnixSeconds;

use crate::db::{Db, Param, in_transaction};
use crate::error::StorageError;
use crate::query::Query;

/// Events one relay pass reads at most.
pub const OUTBOX_BATCH_MAX: usize = 256;

/// One event to relay: its type, audience and payload, as the front-end serialised them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    pub kind: String,
    pub audience: String,
    pub payload: String,
}

/// A stored event, numbered per node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    pub node_id: String,
    pub seq: i64,
    pub event: OutboxEvent,
    pub created_at: UnixSeconds,
}

/// The events a change produces, built from its answer inside its transaction.
pub type EventsOf<T> = Box<dyn FnOnce(&T) -> Vec<OutboxEvent> + Send>;

/// Runs `query` and stores the events `events` builds from its answer, in one
/// transaction: the change and its events commit together or not at all.
pub struct Outboxed<Q: Query> {
    pub query: Q,
    pub node_id: String,
    pub now: UnixSeconds,
    pub events: EventsOf<Q::Output>,
}

impl<Q: Query> std::fmt::Debug for Outboxed<Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outboxed")
            .field("op", &Q::NAME)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl<Q: Query> Query for Outboxed<Q> {
    type Output = Q::Output;
    const NAME: &'static str = Q::NAME;

    async fn run<D: Db>(self, db: &mut D) -> Result<Q::Output, StorageError> {
        let Outboxed {
            query,
            node_id,
            now,
            events,
        } = self;
        in_transaction(db, async |db: &mut D| {
            let output = query.run(db).await?;
            for event in events(&output) {
                let seq = db
                    .query_opt(
                        "INSERT INTO outbox_counters (node_id, last_seq) VALUES ($1, 1) \
                         ON CONFLICT (node_id) DO UPDATE SET last_seq = outbox_counters.last_seq + 1 \
                         RETURNING last_seq",
                        &[Param::Text(&node_id)],
                    )
                    .await?
                    .ok_or_else(|| StorageError::Corrupt("outbox counter: no row".into()))?
                    .int(0)?;
                db.execute(
                    "INSERT INTO realtime_outbox (node_id, seq, kind, audience, payload, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        Param::Text(&node_id),
                        Param::Int(seq),
                        Param::Text(&event.kind),
                        Param::Text(&event.audience),
                        Param::Text(&event.payload),
                        Param::Int(now),
                    ],
                )
                .await?;
            }
            Ok(output)
        })
        .await
    }
}

/// The node's events not yet relayed, oldest first, at most `limit`
/// ([`OUTBOX_BATCH_MAX`] at most).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxPending {
    pub node_id: String,
    pub limit: usize,
}

impl Query for OutboxPending {
    type Output = Vec<OutboxRecord>;
    const NAME: &'static str = "outbox_pending";

    async fn run<D: Db>(self, db: &mut D) -> Result<Vec<OutboxRecord>, StorageError> {
        let rows = db
            .query(
                "SELECT seq, kind, audience, payload, created_at FROM realtime_outbox \
                 WHERE node_id = $1 ORDER BY seq LIMIT $2",
                &[
                    Param::Text(&self.node_id),
                    Param::Int(self.limit.min(OUTBOX_BATCH_MAX) as i64),
                ],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(OutboxRecord {
                    node_id: self.node_id.clone(),
                    seq: row.int(0)?,
                    event: OutboxEvent {
                        kind: row.text(1)?,
                        audience: row.text(2)?,
                        payload: row.text(3)?,
                    },
                    created_at: row.int(4)?,
                })
            })
            .collect()
    }
}

/// Deletes the node's events up to and including `up_to` (NATS has them); returns how
/// many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRelayed {
    pub node_id: String,
    pub up_to: i64,
}

impl Query for OutboxRelayed {
    type Output = usize;
    const NAME: &'static str = "outbox_relayed";

    async fn run<D: Db>(self, db: &mut D) -> Result<usize, StorageError> {
        let deleted = db
            .execute(
                "DELETE FROM realtime_outbox WHERE node_id = $1 AND seq <= $2",
                &[Param::Text(&self.node_id), Param::Int(self.up_to)],
            )
            .await?;
        Ok(deleted as usize)
    }
}

/// Nodes other than `node_id` whose oldest unrelayed event was stored before
/// `stored_before`: a node that died (or lost NATS) with events in its outbox, whose
/// events a live node relays instead. At most `limit` nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxOrphans {
    pub node_id: String,
    pub stored_before: UnixSeconds,
    pub limit: usize,
}

impl Query for OutboxOrphans {
    type Output = Vec<String>;
    const NAME: &'static str = "outbox_orphans";

    async fn run<D: Db>(self, db: &mut D) -> Result<Vec<String>, StorageError> {
        let rows = db
            .query(
                "SELECT DISTINCT node_id FROM realtime_outbox \
                 WHERE node_id <> $1 AND created_at < $2 ORDER BY node_id LIMIT $3",
                &[
                    Param::Text(&self.node_id),
                    Param::Int(self.stored_before),
                    Param::Int(self.limit as i64),
                ],
            )
            .await?;
        rows.iter().map(|row| row.text(0)).collect()
    }
}
