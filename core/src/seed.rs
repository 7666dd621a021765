//! The first-run community of WIRE.md §1.6, as plain data.
//!
//! The storage thread writes it once, on an empty store, when `OPENCHAT_SEED=default`.
//! Message times are ages relative to the moment of seeding, which the caller passes in.

use crate::model::{ChannelKind, HandshakeStrategy, MemberStatus, TrustState, UidPolicy};

/// The whole seed: the instance's name (the capabilities `server_name`) and its servers.
/// The first server is the instance's primary community (the capabilities `server_id`).
#[derive(Debug, Clone)]
pub struct Seed {
    pub instance_name: &'static str,
    pub servers: Vec<SeedServer>,
}

#[derive(Debug, Clone)]
pub struct SeedServer {
    pub id: &'static str,
    pub display_name: &'static str,
    pub icon_text: &'static str,
    pub trust_state: TrustState,
    pub handshake_strategy: HandshakeStrategy,
    pub uid_policy: UidPolicy,
    pub groups: Vec<SeedGroup>,
    pub members: Vec<SeedMember>,
}

#[derive(Debug, Clone)]
pub struct SeedGroup {
    pub id: &'static str,
    pub label: &'static str,
    pub kind: ChannelKind,
    pub channels: Vec<SeedChannel>,
}

#[derive(Debug, Clone)]
pub struct SeedChannel {
    pub id: &'static str,
    pub name: &'static str,
    pub messages: Vec<SeedMessage>,
}

#[derive(Debug, Clone)]
pub struct SeedMember {
    pub id: &'static str,
    /// The member's user: seeded messages are written by these users, and each gets a
    /// profile with the member's name, so authors, the member list and mention candidates
    /// name the same people.
    pub user_uid: &'static str,
    pub name: &'static str,
    pub status: MemberStatus,
}

#[derive(Debug, Clone)]
pub struct SeedMessage {
    pub id: &'static str,
    pub author_uid: &'static str,
    /// How long before the seeding moment the message was "sent".
    pub age_seconds: i64,
    pub body: &'static str,
}

fn channel(id: &'static str, name: &'static str, messages: Vec<SeedMessage>) -> SeedChannel {
    SeedChannel { id, name, messages }
}

fn message(id: &'static str, author_uid: &'static str, age_minutes: i64, body: &'static str) -> SeedMessage {
    SeedMessage {
        id,
        author_uid,
        age_seconds: age_minutes * 60,
        body,
    }
}

fn member(id: &'static str, user_uid: &'static str, name: &'static str, status: MemberStatus) -> SeedMember {
    SeedMember {
        id,
        user_uid,
        name,
        status,
    }
}

fn group(id: &'static str, label: &'static str, kind: ChannelKind, channels: Vec<SeedChannel>) -> SeedGroup {
    SeedGroup {
        id,
        label,
        kind,
        channels,
    }
}

/// The default community: `srv_harbor` (primary) and `srv_testlab`.
pub fn default_community() -> Seed {
    use ChannelKind::{Text, Voice};
    use MemberStatus::{Dnd, Idle, Online};
    let harbor = SeedServer {
        id: "srv_harbor",
        display_name: "Harbor Guild",
        icon_text: "HG",
        trust_state: TrustState::Verified,
        handshake_strategy: HandshakeStrategy::ChallengeSignature,
        uid_policy: UidPolicy::ServerScoped,
        groups: vec![
            group(
                "grp_general",
                "general",
                Text,
                vec![
                    channel(
                        "ch_general",
                        "general",
                        vec![
                            message("msg_seed_01", "uid_seed_1", 30, "Welcome to OpenChat Harbor."),
                            message("msg_seed_02", "uid_seed_2", 24, "Realtime messaging is enabled."),
                        ],
                    ),
                    channel(
                        "ch_design",
                        "design",
                        vec![message(
                            "msg_seed_11",
                            "uid_seed_3",
                            18,
                            "Design channel ready for discussion.",
                        )],
                    ),
                    channel("ch_release", "release-notes", vec![]),
                ],
            ),
            group(
                "grp_ops",
                "ops",
                Text,
                vec![channel("ch_outage", "outage-watch", vec![])],
            ),
            group(
                "grp_voice",
                "Voice Channels",
                Voice,
                vec![
                    channel("vc_general", "General Voice", vec![]),
                    channel("vc_party", "Party Chat", vec![]),
                ],
            ),
        ],
        members: vec![
            member("mem_1", "uid_seed_1", "Lyra", Online),
            member("mem_2", "uid_seed_2", "Orin", Idle),
            member("mem_3", "uid_seed_3", "Mira", Online),
            member("mem_4", "uid_seed_4", "Calix", Dnd),
        ],
    };
    let testlab = SeedServer {
        id: "srv_testlab",
        display_name: "TestLab Server",
        icon_text: "TL",
        trust_state: TrustState::Verified,
        handshake_strategy: HandshakeStrategy::ChallengeSignature,
        uid_policy: UidPolicy::ServerScoped,
        groups: vec![
            group(
                "grp_test_text",
                "test boards",
                Text,
                vec![
                    channel(
                        "tl_ch_general",
                        "test-general",
                        vec![
                            message("msg_tl_01", "uid_tl_1", 22, "TestLab server online."),
                            message(
                                "msg_tl_02",
                                "uid_tl_2",
                                15,
                                "Use this channel for integration testing.",
                            ),
                        ],
                    ),
                    channel(
                        "tl_ch_qa",
                        "qa-playground",
                        vec![message(
                            "msg_tl_11",
                            "uid_tl_3",
                            9,
                            "QA board ready for smoke checks.",
                        )],
                    ),
                ],
            ),
            group(
                "grp_test_voice",
                "Voice Channels",
                Voice,
                vec![
                    channel("tl_vc_huddle", "Huddle Room", vec![]),
                    channel("tl_vc_pairing", "Pairing Booth", vec![]),
                ],
            ),
        ],
        members: vec![
            member("mem_t1", "uid_tl_1", "Devon", Online),
            member("mem_t2", "uid_tl_2", "Rhea", Idle),
            member("mem_t3", "uid_tl_3", "Pax", Online),
        ],
    };
    Seed {
        instance_name: "OpenChat Harbor",
        servers: vec![harbor, testlab],
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::ids::{ChannelId, GroupId, ServerId};

    #[test]
    fn seed_ids_are_valid_and_unique() {
        let seed = default_community();
        let mut seen = HashSet::new();
        for server in &seed.servers {
            assert!(ServerId::parse(server.id).is_ok());
            assert!(seen.insert(server.id));
            for group in &server.groups {
                assert!(GroupId::parse(group.id).is_ok());
                assert!(seen.insert(group.id), "duplicate {}", group.id);
                for channel in &group.channels {
                    assert!(ChannelId::parse(channel.id).is_ok());
                    assert!(seen.insert(channel.id), "duplicate {}", channel.id);
                    for message in &channel.messages {
                        assert!(seen.insert(message.id), "duplicate {}", message.id);
                    }
                }
            }
        }
    }

    #[test]
    fn every_seeded_author_is_a_member_of_the_server_with_a_valid_uid() {
        for server in default_community().servers {
            let members: HashSet<&str> = server.members.iter().map(|m| m.user_uid).collect();
            assert_eq!(members.len(), server.members.len(), "one user per member");
            for uid in &members {
                assert!(crate::ids::UserUid::parse(uid).is_ok(), "{uid}");
            }
            for group in &server.groups {
                for channel in &group.channels {
                    for message in &channel.messages {
                        assert!(
                            members.contains(message.author_uid),
                            "{} is by {}, who is not a member of {}",
                            message.id,
                            message.author_uid,
                            server.id
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn seed_primary_server_has_a_text_channel_first() {
        let seed = default_community();
        let primary = &seed.servers[0];
        assert_eq!(primary.id, "srv_harbor");
        assert_eq!(primary.groups[0].kind, ChannelKind::Text);
        assert_eq!(primary.groups[0].channels[0].id, "ch_general");
    }
}
