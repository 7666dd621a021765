//! The other nodes' sockets in cluster mode, as their presence notes describe them: the
//! notes' shape ([`Note`]) and the [`PresenceBook`] that applies them. No I/O and no
//! clock: time is passed in. [`super::presence`] carries the notes over NATS.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use openchat_core::ChannelId;

/// How often a node says it is alive.
pub const PRESENCE_HEARTBEAT: Duration = Duration::from_secs(1);
/// A node not heard for this long is gone, and its sockets with it.
pub const PEER_SILENT_MAX: Duration = Duration::from_secs(5);
/// Nodes a book keeps; notes of further nodes are dropped.
pub const PEERS_MAX: usize = 256;
/// Entries a book keeps for one node (its sockets' subscriptions); beyond it, dropped.
pub const PEER_ENTRIES_MAX: usize = 64 * 1024;

const _: () = assert!(PEER_SILENT_MAX.as_secs() >= 3 * PRESENCE_HEARTBEAT.as_secs());

/// A socket's identity on the wire (`member` in WIRE.md §4).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    pub client_id: String,
    pub user_uid: String,
    pub device_id: String,
}

/// One message on the presence subject: who sent it, and what.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Note {
    pub node: String,
    /// Changes at every start of the node, so that a restarted node's old sockets go.
    pub boot: String,
    #[serde(flatten)]
    pub body: NoteBody,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum NoteBody {
    Alive,
    Joined {
        channel: ChannelId,
        member: Member,
    },
    Left {
        channel: ChannelId,
        member: Member,
    },
    Typing {
        channel: ChannelId,
        member: Member,
        is_typing: bool,
    },
    /// Part `part` of the sender's whole local presence; `last` completes it.
    State {
        part: u32,
        last: bool,
        entries: Vec<(ChannelId, Member)>,
    },
    /// Asks every node for its state.
    Sync,
}

/// What applying a note means for this node's subscribers.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Joined(ChannelId, Member),
    Left(ChannelId, Member),
    Typing(ChannelId, Member, bool),
    /// Another node asked for every node's state.
    AnswerSync,
}

#[derive(Debug)]
struct Peer {
    boot: String,
    heard: Instant,
    entries: Vec<(ChannelId, Member)>,
    /// A state arriving in parts: the next part expected and what came so far.
    partial: Option<(u32, Vec<(ChannelId, Member)>)>,
}

impl Peer {
    fn new(boot: String, now: Instant) -> Self {
        Self {
            boot,
            heard: now,
            entries: Vec::new(),
            partial: None,
        }
    }

    fn position(&self, channel: &ChannelId, member: &Member) -> Option<usize> {
        self.entries
            .iter()
            .position(|(c, m)| c == channel && m.client_id == member.client_id)
    }
}

/// The other nodes' sockets, as their notes describe them.
#[derive(Debug)]
pub struct PresenceBook {
    me: String,
    peers: HashMap<String, Peer>,
}

impl PresenceBook {
    pub fn new(me: &str) -> Self {
        Self {
            me: me.to_owned(),
            peers: HashMap::new(),
        }
    }

    /// Applies another node's note (this node's own are ignored).
    pub fn apply(&mut self, note: Note, now: Instant) -> Vec<Effect> {
        if note.node == self.me {
            return Vec::new();
        }
        let mut effects = Vec::new();
        let restarted = self
            .peers
            .get(&note.node)
            .is_some_and(|peer| peer.boot != note.boot);
        if restarted && let Some(old) = self.peers.remove(&note.node) {
            effects.extend(old.entries.into_iter().map(|(c, m)| Effect::Left(c, m)));
        }
        if !self.peers.contains_key(&note.node) {
            if self.peers.len() >= PEERS_MAX {
                return effects;
            }
            self.peers
                .insert(note.node.clone(), Peer::new(note.boot.clone(), now));
        }
        let Some(peer) = self.peers.get_mut(&note.node) else {
            return effects;
        };
        peer.heard = now;
        match note.body {
            NoteBody::Alive => {}
            NoteBody::Sync => effects.push(Effect::AnswerSync),
            NoteBody::Joined { channel, member } => {
                if peer.position(&channel, &member).is_none() && peer.entries.len() < PEER_ENTRIES_MAX {
                    peer.entries.push((channel.clone(), member.clone()));
                    effects.push(Effect::Joined(channel, member));
                }
            }
            NoteBody::Left { channel, member } => {
                if let Some(at) = peer.position(&channel, &member) {
                    let (channel, member) = peer.entries.swap_remove(at);
                    effects.push(Effect::Left(channel, member));
                }
            }
            NoteBody::Typing {
                channel,
                member,
                is_typing,
            } => effects.push(Effect::Typing(channel, member, is_typing)),
            NoteBody::State { part, last, entries } => {
                let mut so_far = match peer.partial.take() {
                    Some((expected, so_far)) if expected == part => so_far,
                    _ if part == 0 => Vec::new(),
                    // A part went missing: wait for the next whole state.
                    _ => return effects,
                };
                so_far.extend(entries);
                so_far.truncate(PEER_ENTRIES_MAX);
                if !last {
                    peer.partial = Some((part + 1, so_far));
                    return effects;
                }
                let old = std::mem::replace(&mut peer.entries, so_far);
                for (channel, member) in &old {
                    if peer.position(channel, member).is_none() {
                        effects.push(Effect::Left(channel.clone(), member.clone()));
                    }
                }
                for (channel, member) in &peer.entries {
                    let known = old
                        .iter()
                        .any(|(c, m)| c == channel && m.client_id == member.client_id);
                    if !known {
                        effects.push(Effect::Joined(channel.clone(), member.clone()));
                    }
                }
            }
        }
        effects
    }

    /// Drops the nodes not heard for [`PEER_SILENT_MAX`]; their sockets leave.
    pub fn expire(&mut self, now: Instant) -> Vec<Effect> {
        let gone: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, peer)| now.saturating_duration_since(peer.heard) > PEER_SILENT_MAX)
            .map(|(node, _)| node.clone())
            .collect();
        let mut effects = Vec::new();
        for node in gone {
            if let Some(peer) = self.peers.remove(&node) {
                tracing::info!(
                    node,
                    sockets = peer.entries.len(),
                    "a node went silent; its sockets leave"
                );
                effects.extend(peer.entries.into_iter().map(|(c, m)| Effect::Left(c, m)));
            }
        }
        effects
    }

    /// This node could not hear anyone (its own NATS connection was down): nobody is
    /// judged by that time.
    pub fn heard_all(&mut self, now: Instant) {
        for peer in self.peers.values_mut() {
            peer.heard = now;
        }
    }

    /// The other nodes' sockets subscribed to a channel.
    pub fn members(&self, channel: &ChannelId) -> Vec<Member> {
        self.peers
            .values()
            .flat_map(|peer| peer.entries.iter())
            .filter(|(c, _)| c == channel)
            .map(|(_, m)| m.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(client: &str) -> Member {
        Member {
            client_id: client.into(),
            user_uid: format!("uid_{client}"),
            device_id: "d".into(),
        }
    }

    fn note(node: &str, boot: &str, body: NoteBody) -> Note {
        Note {
            node: node.into(),
            boot: boot.into(),
            body,
        }
    }

    fn ch(id: &str) -> ChannelId {
        ChannelId::parse(id).unwrap()
    }

    #[test]
    fn other_nodes_sockets_join_leave_and_type_and_own_notes_are_ignored() {
        let t0 = Instant::now();
        let mut book = PresenceBook::new("a");
        let joined = NoteBody::Joined {
            channel: ch("ch_1"),
            member: member("m1"),
        };
        assert_eq!(
            book.apply(note("b", "1", joined.clone()), t0),
            [Effect::Joined(ch("ch_1"), member("m1"))]
        );
        assert!(
            book.apply(note("b", "1", joined.clone()), t0).is_empty(),
            "no repeat"
        );
        assert!(book.apply(note("a", "x", joined), t0).is_empty(), "own note");
        assert_eq!(book.members(&ch("ch_1")), [member("m1")]);
        assert!(book.members(&ch("ch_2")).is_empty());
        let typing = NoteBody::Typing {
            channel: ch("ch_1"),
            member: member("m1"),
            is_typing: true,
        };
        assert_eq!(
            book.apply(note("b", "1", typing), t0),
            [Effect::Typing(ch("ch_1"), member("m1"), true)]
        );
        let left = NoteBody::Left {
            channel: ch("ch_1"),
            member: member("m1"),
        };
        assert_eq!(
            book.apply(note("b", "1", left.clone()), t0),
            [Effect::Left(ch("ch_1"), member("m1"))]
        );
        assert!(book.apply(note("b", "1", left), t0).is_empty());
        assert_eq!(
            book.apply(note("c", "1", NoteBody::Sync), t0),
            [Effect::AnswerSync]
        );
    }

    #[test]
    fn a_state_in_parts_replaces_what_was_known_and_a_missing_part_changes_nothing() {
        let t0 = Instant::now();
        let mut book = PresenceBook::new("a");
        for m in ["m1", "m2"] {
            book.apply(
                note(
                    "b",
                    "1",
                    NoteBody::Joined {
                        channel: ch("ch_1"),
                        member: member(m),
                    },
                ),
                t0,
            );
        }
        let part = |part, last, ms: &[&str]| {
            note(
                "b",
                "1",
                NoteBody::State {
                    part,
                    last,
                    entries: ms.iter().map(|m| (ch("ch_1"), member(m))).collect(),
                },
            )
        };
        assert!(book.apply(part(0, false, &["m2"]), t0).is_empty());
        let effects = book.apply(part(1, true, &["m3"]), t0);
        assert_eq!(
            effects,
            [
                Effect::Left(ch("ch_1"), member("m1")),
                Effect::Joined(ch("ch_1"), member("m3"))
            ]
        );
        // Part 1 without part 0: ignored.
        assert!(book.apply(part(1, true, &[]), t0).is_empty());
        assert_eq!(book.members(&ch("ch_1")).len(), 2);
    }

    #[test]
    fn a_silent_or_restarted_node_takes_its_sockets_with_it_but_not_while_we_are_cut_off() {
        let t0 = Instant::now();
        let mut book = PresenceBook::new("a");
        let joined = |node: &str, boot: &str, m: &str| {
            note(
                node,
                boot,
                NoteBody::Joined {
                    channel: ch("ch_1"),
                    member: member(m),
                },
            )
        };
        book.apply(joined("b", "1", "m1"), t0);
        book.apply(joined("c", "1", "m2"), t0);
        // B restarts: its old socket leaves, the new one joins.
        assert_eq!(
            book.apply(joined("b", "2", "m3"), t0),
            [
                Effect::Left(ch("ch_1"), member("m1")),
                Effect::Joined(ch("ch_1"), member("m3"))
            ]
        );
        let later = t0 + PEER_SILENT_MAX + Duration::from_secs(1);
        book.apply(note("c", "1", NoteBody::Alive), later);
        // Our own connection was down: B is not judged by that.
        book.heard_all(later);
        assert!(book.expire(later).is_empty());
        let much_later = later + PEER_SILENT_MAX + Duration::from_secs(1);
        book.apply(note("c", "1", NoteBody::Alive), much_later);
        assert_eq!(book.expire(much_later), [Effect::Left(ch("ch_1"), member("m3"))]);
        assert_eq!(book.members(&ch("ch_1")), [member("m2")]);
    }
}
