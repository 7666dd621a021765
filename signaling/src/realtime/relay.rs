//! Cluster mode's realtime path: committed events travel from this node's outbox through
//! NATS JetStream to the hub of every node (this one included).
//!
//! - The relay reads this node's outbox in order ([`OutboxPending`]), publishes each event
//!   to `openchat.v1.events` with the NATS message id `<node>:<seq>` and waits for the
//!   stream's acknowledgement, then deletes what was acknowledged ([`OutboxRelayed`]). A
//!   crash between the acknowledgement and the delete publishes the event again on the
//!   next pass; the stream's duplicate window ([`DUPLICATE_WINDOW`]) drops it. Events are
//!   published one at a time, so the stream holds them in commit order.
//! - The consumer follows the stream with an ordered consumer and hands each event, with
//!   its stream sequence number, to the local hub, which applies the one visibility rule
//!   to its own sockets. Event ids are `<stream tag>:<stream sequence>`, the same on every
//!   node, so a client resumes on any node. On start the consumer first reads the newest
//!   [`EVENT_LOG_MAX`] events into the log without sending them (`/readyz` waits for it),
//!   so redelivery covers events from before the node began; after an outage it goes on
//!   from the one after the last it delivered.
//! - While NATS is down both wait and retry; the outbox keeps every event meanwhile.
//! - A node that dies with events in its outbox does not strand them: once they are
//!   [`ORPHAN_AFTER_SECS`] old, any live node's relay publishes them under the dead
//!   node's message ids (so a repeat by the node itself, back within the duplicate
//!   window, is dropped) and deletes them.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, message::PublishMessage, stream};
use futures_util::StreamExt;
use openchat_storage::queries::outbox::OUTBOX_BATCH_MAX;
use openchat_storage::queries::{OutboxOrphans, OutboxPending, OutboxRecord, OutboxRelayed};
use serde_json::Value;

use crate::cluster::{Cluster, NatsState, SUBJECT_VERSION};
use crate::realtime::hub::{Audience, EVENT_LOG_MAX};
use crate::state::AppState;

/// The JetStream stream of committed events.
pub const EVENTS_STREAM: &str = "OPENCHAT_EVENTS_V1";
/// How long the stream keeps an event (the reach of a resume on any node).
pub const EVENTS_MAX_AGE: Duration = Duration::from_secs(10 * 60);
/// The stream's size bound; the oldest events go first.
pub const EVENTS_STREAM_BYTES_MAX: i64 = 256 * 1024 * 1024;
/// How long JetStream remembers a message id to drop a repeated publish.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(2 * 60);
/// How old another node's unrelayed event must be before this node relays it instead.
/// Well above a live node's relay delay, well below the duplicate window, so that a node
/// that was only slow has its repeats dropped.
pub const ORPHAN_AFTER_SECS: i64 = 10;
const _: () = assert!(ORPHAN_AFTER_SECS as u64 * 4 <= DUPLICATE_WINDOW.as_secs());
/// Other nodes' outboxes one pass relays at most.
pub const ORPHAN_NODES_MAX: usize = 8;
/// The relay's pass when nothing woke it, and the wait after a failure.
pub const RELAY_TICK: Duration = Duration::from_secs(1);

fn events_subject() -> String {
    format!("openchat.{SUBJECT_VERSION}.events")
}

/// An event as it crosses nodes.
#[derive(Debug, serde::Deserialize)]
struct WireEvent {
    kind: String,
    audience: Audience,
    payload: Value,
}

/// Starts the relay and the consumer on the current tokio runtime (cluster mode only).
pub fn start(state: Arc<AppState>) {
    let Some(cluster) = state.cluster.clone() else {
        return;
    };
    state.hub.set_caught_up(false);
    tokio::spawn(relay(state.clone(), cluster.clone()));
    tokio::spawn(consume(state, cluster));
}

async fn ensure_stream(js: &jetstream::Context) -> Result<stream::Stream, String> {
    js.get_or_create_stream(stream::Config {
        name: EVENTS_STREAM.to_owned(),
        subjects: vec![events_subject()],
        max_age: EVENTS_MAX_AGE,
        max_bytes: EVENTS_STREAM_BYTES_MAX,
        duplicate_window: DUPLICATE_WINDOW,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| e.to_string())
}

async fn relay(state: Arc<AppState>, cluster: Cluster) {
    let js = jetstream::new(cluster.client().clone());
    let node = cluster.node_id().to_owned();
    let mut stream_ready = false;
    loop {
        // A wake-up while a pass runs is kept by the Notify, so none is lost.
        let _ = tokio::time::timeout(RELAY_TICK, state.outbox_wake.notified()).await;
        if cluster.state() != NatsState::Connected {
            continue;
        }
        if !stream_ready {
            match ensure_stream(&js).await {
                Ok(_) => stream_ready = true,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot reach the events stream; retrying");
                    continue;
                }
            }
        }
        if relay_outbox(&state, &js, &node).await.is_err() {
            stream_ready = false;
            continue;
        }
        // Another node's events still waiting well after they committed: that node died
        // (or lost NATS) before relaying them. Relay them in its place; if it comes back
        // and relays them too, the stream's duplicate window drops the repeats.
        let orphans = state
            .run(OutboxOrphans {
                node_id: node.clone(),
                stored_before: crate::clock::unix_now() - ORPHAN_AFTER_SECS,
                limit: ORPHAN_NODES_MAX,
            })
            .await
            .unwrap_or_default();
        for orphan in orphans {
            tracing::info!(node = orphan, "relaying the events another node left behind");
            if relay_outbox(&state, &js, &orphan).await.is_err() {
                stream_ready = false;
                break;
            }
        }
    }
}

/// Relays one node's outbox in order until it is empty; `Err` when publishing failed.
async fn relay_outbox(state: &AppState, js: &jetstream::Context, node: &str) -> Result<(), ()> {
    loop {
        let batch = match state
            .run(OutboxPending {
                node_id: node.to_owned(),
                limit: OUTBOX_BATCH_MAX,
            })
            .await
        {
            Ok(batch) => batch,
            Err(err) => {
                tracing::warn!(error = ?err, "cannot read the outbox; retrying");
                return Ok(());
            }
        };
        let Some(last) = batch.last().map(|record| record.seq) else {
            return Ok(());
        };
        let mut relayed = None;
        let mut failed = false;
        for record in &batch {
            if let Err(err) = publish(js, record).await {
                tracing::warn!(seq = record.seq, error = %err, "relaying an event failed; retrying");
                failed = true;
                break;
            }
            relayed = Some(record.seq);
        }
        if let Some(up_to) = relayed {
            let deleted = state
                .run(OutboxRelayed {
                    node_id: node.to_owned(),
                    up_to,
                })
                .await;
            if let Err(err) = deleted {
                // Published but not deleted: the next pass publishes them again and the
                // stream drops the repeats.
                tracing::warn!(error = ?err, "cannot trim the outbox; retrying");
                return Ok(());
            }
        }
        if failed {
            return Err(());
        }
        if relayed != Some(last) {
            return Ok(());
        }
    }
}

async fn publish(js: &jetstream::Context, record: &OutboxRecord) -> Result<(), String> {
    let kind = serde_json::to_string(&record.event.kind).map_err(|e| e.to_string())?;
    let body = format!(
        r#"{{"kind":{kind},"audience":{},"payload":{}}}"#,
        record.event.audience, record.event.payload
    );
    let message = PublishMessage::build()
        .payload(body.into())
        .message_id(format!("{}:{}", record.node_id, record.seq));
    let ack = js
        .send_publish(events_subject(), message)
        .await
        .map_err(|e| e.to_string())?;
    ack.await.map(drop).map_err(|e| e.to_string())
}

async fn consume(state: Arc<AppState>, cluster: Cluster) {
    let js = jetstream::new(cluster.client().clone());
    // The stream sequence of the last event handed to the hub, and the stream it was of.
    let mut delivered: Option<(String, u64)> = None;
    loop {
        if let Err(err) = follow(&state, &js, &mut delivered).await {
            tracing::warn!(error = %err, "following the events stream failed; retrying");
        }
        tokio::time::sleep(RELAY_TICK).await;
    }
}

/// The events stream's identity: event ids carry it, so that ids of a stream that was
/// deleted and made again are never taken for the new one's.
fn stream_tag(info: &stream::Info) -> String {
    format!("s{:x}", info.created.unix_timestamp_nanos())
}

async fn follow(
    state: &AppState,
    js: &jetstream::Context,
    delivered: &mut Option<(String, u64)>,
) -> Result<(), String> {
    let mut stream = ensure_stream(js).await?;
    let info = stream.info().await.map_err(|e| e.to_string())?.clone();
    let tag = stream_tag(&info);
    state.hub.follow_stream(&tag);
    // On start (or a new stream) read the newest EVENT_LOG_MAX events into the log without
    // sending them, so redelivery and resume work for events from before this node began.
    let (start, backfill_upto) = match delivered {
        Some((seen, seq)) if *seen == tag => (*seq + 1, 0),
        _ => {
            let last = info.state.last_sequence;
            let first = info.state.first_sequence.max(1);
            (first.max(last.saturating_sub(EVENT_LOG_MAX as u64) + 1), last)
        }
    };
    if backfill_upto < start {
        state.hub.set_caught_up(true);
    }
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| e.to_string())?;
        let info = message.info().map_err(|e| e.to_string())?;
        let (seq, at) = (info.stream_sequence, info.published.unix_timestamp());
        *delivered = Some((tag.clone(), seq));
        match serde_json::from_slice::<WireEvent>(&message.payload) {
            Ok(event) => state.hub.deliver_numbered(
                seq,
                at,
                &event.kind,
                event.audience,
                &event.payload,
                seq > backfill_upto,
            ),
            Err(err) => tracing::warn!(error = %err, "dropped an event that does not parse"),
        }
        if seq >= backfill_upto {
            state.hub.set_caught_up(true);
        }
    }
    Err("the events stream ended".into())
}
