//! Presence and typing across nodes (cluster mode), over core NATS: WIRE.md's model kept
//! as it is (presence per socket, asked for by `chat.subscribe`, the existing event types
//! only), with the sockets of other nodes counted in.
//!
//! Every node publishes its local presence changes and typing as [`Note`]s on
//! `openchat.<version>.presence`, a heartbeat every [`PRESENCE_HEARTBEAT`], and on start,
//! after a NATS reconnect or when asked ([`NoteBody::Sync`]) its whole local presence in
//! parts ([`NoteBody::State`]), which replaces what others held for it. Each node keeps a
//! [`PresenceBook`] of the other nodes' sockets (`roster`, no I/O): a
//! subscriber's snapshot includes them, and changes become the usual `chat.presence.*` and
//! `chat.typing.updated` frames for the local subscribers. A node not heard for
//! [`PEER_SILENT_MAX`] is gone: its sockets leave (never while this node's own NATS
//! connection is down; after it comes back every node gets a fresh
//! [`PEER_SILENT_MAX`]). Core NATS may drop a note under overload; the next state
//! exchange (a reconnect or a restart) repairs the book.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use openchat_core::ChannelId;
use serde_json::json;

use crate::cluster::{NatsState, SUBJECT_VERSION};
use crate::realtime::hub::Audience;
pub use crate::realtime::roster::*;
use crate::state::AppState;

/// Entries per state part (a part stays far below NATS's 1 MiB payload limit).
pub const STATE_PART_ENTRIES_MAX: usize = 500;
/// The longest an announcement waits for the NATS client's queue.
pub const ANNOUNCE_DEADLINE: Duration = Duration::from_millis(250);

fn subject() -> String {
    format!("openchat.{SUBJECT_VERSION}.presence")
}

/// Publishes a local presence change or typing (cluster mode; nothing on one node). While
/// NATS is away nothing is sent: the state exchange after the reconnect catches up.
pub async fn announce(state: &AppState, body: NoteBody) {
    let Some(cluster) = &state.cluster else {
        return;
    };
    if cluster.state() != NatsState::Connected {
        return;
    }
    let note = Note {
        node: cluster.node_id().to_owned(),
        boot: state.hub.boot().to_owned(),
        body,
    };
    publish(cluster.client(), &note).await;
}

async fn publish(client: &async_nats::Client, note: &Note) {
    let Ok(payload) = serde_json::to_vec(note) else {
        return;
    };
    match tokio::time::timeout(ANNOUNCE_DEADLINE, client.publish(subject(), payload.into())).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::debug!(error = %err, "a presence note was not sent"),
        Err(_) => tracing::debug!("a presence note timed out"),
    }
}

/// Applies what a note means to this node's subscribers.
fn enact(state: &AppState, effects: Vec<Effect>) -> bool {
    let mut answer = false;
    for effect in effects {
        let (kind, channel, payload) = match effect {
            Effect::Joined(channel, member) => (
                "chat.presence.joined",
                channel.clone(),
                json!({"channel_id": channel, "member": member}),
            ),
            Effect::Left(channel, member) => (
                "chat.presence.left",
                channel.clone(),
                json!({"channel_id": channel, "member": member}),
            ),
            Effect::Typing(channel, member, is_typing) => (
                "chat.typing.updated",
                channel.clone(),
                json!({"channel_id": channel, "member": member, "is_typing": is_typing}),
            ),
            Effect::AnswerSync => {
                answer = true;
                continue;
            }
        };
        let audience = Audience::Subscribers {
            channel,
            except: None,
        };
        state.hub.publish(kind, audience, &payload);
    }
    answer
}

/// Publishes this node's whole local presence, in parts.
async fn publish_state(state: &AppState, client: &async_nats::Client, node: &str) {
    let entries = state.hub.local_presence();
    let parts: Vec<&[(ChannelId, Member)]> = if entries.is_empty() {
        vec![&[]]
    } else {
        entries.chunks(STATE_PART_ENTRIES_MAX).collect()
    };
    let count = parts.len();
    for (part, chunk) in parts.into_iter().enumerate() {
        let note = Note {
            node: node.to_owned(),
            boot: state.hub.boot().to_owned(),
            body: NoteBody::State {
                part: part as u32,
                last: part + 1 == count,
                entries: chunk.to_vec(),
            },
        };
        publish(client, &note).await;
    }
}

/// Starts the presence exchange on the current tokio runtime (cluster mode only).
pub fn start(state: Arc<AppState>) {
    let Some(cluster) = state.cluster.clone() else {
        return;
    };
    state.hub.track_remote_presence(cluster.node_id());
    tokio::spawn(async move {
        let client = cluster.client().clone();
        let node = cluster.node_id().to_owned();
        let mut notes = loop {
            match client.subscribe(subject()).await {
                Ok(subscriber) => break subscriber,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot subscribe to presence; retrying");
                    tokio::time::sleep(PRESENCE_HEARTBEAT).await;
                }
            }
        };
        let mut heartbeat = tokio::time::interval(PRESENCE_HEARTBEAT);
        // Disconnected at first, so the first connected tick asks for everyone's state.
        let mut was = NatsState::Disconnected;
        loop {
            tokio::select! {
                message = notes.next() => {
                    let Some(message) = message else { break };
                    let Ok(note) = serde_json::from_slice::<Note>(&message.payload) else {
                        tracing::debug!("dropped a presence note that does not parse");
                        continue;
                    };
                    let effects = state.hub.remote_presence(|book| book.apply(note, Instant::now()));
                    if enact(&state, effects) {
                        publish_state(&state, &client, &node).await;
                    }
                }
                _ = heartbeat.tick() => {
                    let now = Instant::now();
                    let nats = cluster.state();
                    if nats != NatsState::Connected {
                        state.hub.remote_presence(|book| book.heard_all(now));
                        was = nats;
                        continue;
                    }
                    if was != NatsState::Connected {
                        // Back (or new): notes may have been missed both ways.
                        state.hub.remote_presence(|book| book.heard_all(now));
                        let sync = Note { node: node.clone(), boot: state.hub.boot().to_owned(), body: NoteBody::Sync };
                        publish(&client, &sync).await;
                        publish_state(&state, &client, &node).await;
                        was = nats;
                    }
                    let alive = Note { node: node.clone(), boot: state.hub.boot().to_owned(), body: NoteBody::Alive };
                    publish(&client, &alive).await;
                    let effects = state.hub.remote_presence(|book| book.expire(now));
                    enact(&state, effects);
                }
            }
        }
        tracing::error!("the presence subscription ended");
    });
}
