//! Conformance suite, chat part: server management, messages, read acks, profiles, run
//! against both backends like `conformance.rs`.

#![allow(clippy::unwrap_used)]

mod support;

use openchat_core::{
    AssetId, AttachmentId, ChannelId, ChannelKind, GroupId, MessageId, ServerId, UserUid, seed,
};
use openchat_storage::queries;
use openchat_storage::{
    AttachmentRecord, Avatar, AvatarMode, AvatarRecord, NewMessage, NewServer, PageRequest, ProfileUpdate,
    StarterIds, StorageError,
};
use support::Fixture;

const NOW: i64 = 1_790_000_000;

fn sid(raw: &str) -> ServerId {
    ServerId::parse(raw).unwrap()
}
fn cid(raw: &str) -> ChannelId {
    ChannelId::parse(raw).unwrap()
}
fn gid(raw: &str) -> GroupId {
    GroupId::parse(raw).unwrap()
}
fn uid(raw: &str) -> UserUid {
    UserUid::parse(raw).unwrap()
}
fn mid(raw: &str) -> MessageId {
    MessageId::parse(raw).unwrap()
}

fn message(id: &str, channel: &str, author: &str, body: &str, reply_to: Option<&str>) -> NewMessage {
    NewMessage {
        id: mid(id),
        channel: cid(channel),
        author: uid(author),
        body: body.into(),
        reply_to: reply_to.map(mid),
        attachments: Vec::new(),
        envelope: None,
        now: NOW,
    }
}

fn page(limit: usize, before: Option<i64>, after: Option<i64>) -> PageRequest {
    PageRequest { limit, before, after }
}

async fn seeded(fixture: &Fixture) {
    assert!(
        fixture
            .handle()
            .run(queries::SeedFirstRun {
                seed: seed::default_community(),
                now: NOW - 3600
            })
            .await
            .unwrap()
    );
}

conformance!(
    created_server_has_a_starter_layout_and_a_claim,
    claim_makes_the_holder_owner_and_restricts_management,
    leaving_hides_the_server_from_that_user_only,
    categories_and_channels_are_created_renamed_and_deleted,
    layout_must_be_a_complete_permutation,
    messages_are_paged_oldest_first_with_cursors,
    replies_must_target_the_same_channel_and_show_deletion,
    attachments_are_stored_with_their_message,
    only_authors_or_managers_delete_messages,
    read_acks_only_move_forward,
    profiles_are_created_with_defaults_and_versioned,
    mention_candidates_match_prefixes,
    seeded_authors_are_members_with_profiles,
    mentions_are_stored_with_their_message_and_counted_per_reader,
    voice_channels_refuse_messages,
);

async fn created_server_has_a_starter_layout_and_a_claim(fixture: Fixture) {
    let handle = fixture.handle();
    let created = handle
        .run(queries::CreateServer {
            new: new_server("srv_new00001", "Night Owls", "uid_creator"),
        })
        .await
        .unwrap();
    assert_eq!(created.display_name, "Night Owls");
    assert_eq!(created.owner_uid, None);
    let layout = handle
        .run(queries::Layout {
            server: sid("srv_new00001"),
        })
        .await
        .unwrap();
    assert_eq!(layout.len(), 2);
    assert_eq!(layout[0].kind, ChannelKind::Text);
    assert_eq!(layout[0].channels[0].name, "general");
    assert_eq!(layout[1].channels[0].kind, ChannelKind::Voice);
    // The first server created becomes the primary one on an unseeded store.
    assert_eq!(
        handle
            .run(queries::Instance)
            .await
            .unwrap()
            .primary_server
            .unwrap()
            .id
            .as_str(),
        "srv_new00001"
    );
    fixture.finish().await;
}

fn new_server(id: &str, name: &str, creator: &str) -> NewServer {
    let suffix = &id[id.len() - 4..];
    NewServer {
        id: sid(id),
        display_name: name.into(),
        description: String::new(),
        banner_preset: "ocean".into(),
        icon_text: "NO".into(),
        created_by: uid(creator),
        claim_token_sha256: format!("hash_{id}"),
        claim_expires_at: NOW + 3600,
        starter_ids: StarterIds {
            text_group: gid(&format!("grp_t{suffix}")),
            text_channel: cid(&format!("ch_{suffix}")),
            voice_group: gid(&format!("grp_v{suffix}")),
            voice_channel: cid(&format!("vc_{suffix}")),
        },
        now: NOW,
    }
}

async fn claim_makes_the_holder_owner_and_restricts_management(fixture: Fixture) {
    let handle = fixture.handle();
    handle
        .run(queries::CreateServer {
            new: new_server("srv_new00002", "Claimed", "uid_dir"),
        })
        .await
        .unwrap();
    let server = sid("srv_new00002");
    assert!(matches!(
        handle
            .run(queries::ClaimOwnership {
                server: server.clone(),
                token_sha256: "wrong".into(),
                by: uid("uid_owner"),
                now: NOW
            })
            .await,
        Err(StorageError::Forbidden(_))
    ));
    let claim = handle
        .run(queries::ClaimOwnership {
            server: server.clone(),
            token_sha256: "hash_srv_new00002".into(),
            by: uid("uid_owner"),
            now: NOW + 1,
        })
        .await
        .unwrap();
    assert_eq!(
        (claim.owner_uid.as_str(), claim.claimed_at),
        ("uid_owner", NOW + 1)
    );
    // Idempotent for the claimer, a conflict for anyone else.
    let again = handle
        .run(queries::ClaimOwnership {
            server: server.clone(),
            token_sha256: "hash_srv_new00002".into(),
            by: uid("uid_owner"),
            now: NOW + 9,
        })
        .await
        .unwrap();
    assert_eq!(again.claimed_at, NOW + 1);
    assert!(matches!(
        handle
            .run(queries::ClaimOwnership {
                server: server.clone(),
                token_sha256: "hash_srv_new00002".into(),
                by: uid("uid_other"),
                now: NOW + 2
            })
            .await,
        Err(StorageError::Conflict {
            code: "ownership_already_claimed",
            ..
        })
    ));
    let settings = openchat_core::settings::ServerSettings::parse("Renamed", "", "").unwrap();
    assert!(matches!(
        handle
            .run(queries::UpdateSettings {
                server: server.clone(),
                settings: settings.clone(),
                by: uid("uid_other"),
                now: NOW
            })
            .await,
        Err(StorageError::Forbidden(_))
    ));
    assert!(matches!(
        handle
            .run(queries::CreateCategory {
                server: server.clone(),
                group: gid("grp_x"),
                name: "x".into(),
                kind: ChannelKind::Text,
                actor: uid("uid_other"),
                now: NOW
            })
            .await,
        Err(StorageError::Forbidden(_))
    ));
    handle
        .run(queries::UpdateSettings {
            server: server.clone(),
            settings,
            by: uid("uid_owner"),
            now: NOW,
        })
        .await
        .unwrap();
    // The operator's grant overrides.
    handle
        .run(queries::GrantOwner {
            server: server.clone(),
            owner: uid("uid_other"),
        })
        .await
        .unwrap();
    assert_eq!(
        handle.run(queries::Server { server }).await.unwrap().owner_uid,
        Some(uid("uid_other"))
    );
    assert_eq!(
        handle
            .run(queries::GrantOwner {
                server: sid("srv_none"),
                owner: uid("uid_x")
            })
            .await,
        Err(StorageError::NotFound("server"))
    );
    fixture.finish().await;
}

async fn leaving_hides_the_server_from_that_user_only(fixture: Fixture) {
    seeded(&fixture).await;
    let handle = fixture.handle();
    let first = handle
        .run(queries::LeaveServer {
            server: sid("srv_testlab"),
            user: uid("uid_leaver"),
            now: NOW,
        })
        .await
        .unwrap();
    let second = handle
        .run(queries::LeaveServer {
            server: sid("srv_testlab"),
            user: uid("uid_leaver"),
            now: NOW + 50,
        })
        .await
        .unwrap();
    assert_eq!((first, second), (NOW, NOW), "idempotent, first leave time kept");
    let mine = handle
        .run(queries::Directory {
            viewer: Some(uid("uid_leaver")),
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(
        mine.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["srv_harbor"]
    );
    assert_eq!(
        handle
            .run(queries::Directory {
                viewer: Some(uid("uid_stayer")),
                limit: 100
            })
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        handle
            .run(queries::Directory {
                viewer: None,
                limit: 100
            })
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        handle
            .run(queries::LeaveServer {
                server: sid("srv_gone"),
                user: uid("uid_leaver"),
                now: NOW
            })
            .await,
        Err(StorageError::NotFound("server"))
    );
    fixture.finish().await;
}

async fn categories_and_channels_are_created_renamed_and_deleted(fixture: Fixture) {
    seeded(&fixture).await;
    let handle = fixture.handle();
    let server = sid("srv_harbor");
    let actor = uid("uid_anyone");
    let group = handle
        .run(queries::CreateCategory {
            server: server.clone(),
            group: gid("grp_new"),
            name: "projects".into(),
            kind: ChannelKind::Text,
            actor: actor.clone(),
            now: NOW,
        })
        .await
        .unwrap();
    assert!(group.channels.is_empty());
    let channel = handle
        .run(queries::CreateChannel {
            server: server.clone(),
            group: gid("grp_new"),
            channel: cid("ch_new"),
            name: "roadmap".into(),
            kind: ChannelKind::Text,
            actor: actor.clone(),
            now: NOW,
            e2ee: false,
        })
        .await
        .unwrap();
    assert_eq!(channel.name, "roadmap");
    assert_eq!(
        handle
            .run(queries::CreateChannel {
                server: server.clone(),
                group: gid("grp_test_text"),
                channel: cid("ch_x"),
                name: "x".into(),
                kind: ChannelKind::Text,
                actor: actor.clone(),
                now: NOW,
                e2ee: false
            })
            .await,
        Err(StorageError::NotFound("group")),
        "a group of another server"
    );
    let renamed = handle
        .run(queries::RenameCategory {
            server: server.clone(),
            group: gid("grp_new"),
            name: "plans".into(),
            actor: actor.clone(),
        })
        .await
        .unwrap();
    assert_eq!((renamed.label.as_str(), renamed.channels.len()), ("plans", 1));
    assert!(matches!(
        handle
            .run(queries::DeleteCategory {
                server: server.clone(),
                group: gid("grp_new"),
                actor: actor.clone()
            })
            .await,
        Err(StorageError::Conflict {
            code: "category_not_empty",
            ..
        })
    ));
    let empty = handle
        .run(queries::CreateCategory {
            server: server.clone(),
            group: gid("grp_empty"),
            name: "empty".into(),
            kind: ChannelKind::Voice,
            actor: actor.clone(),
            now: NOW,
        })
        .await
        .unwrap();
    let layout = handle
        .run(queries::DeleteCategory {
            server: server.clone(),
            group: empty.id,
            actor: actor.clone(),
        })
        .await
        .unwrap();
    assert!(layout.iter().all(|g| g.id.as_str() != "grp_empty"));
    assert_eq!(layout.last().unwrap().label, "plans");
    assert_eq!(
        handle
            .run(queries::Channel {
                channel: cid("ch_new")
            })
            .await
            .unwrap()
            .server_id,
        server
    );
    fixture.finish().await;
}

async fn layout_must_be_a_complete_permutation(fixture: Fixture) {
    seeded(&fixture).await;
    let handle = fixture.handle();
    let server = sid("srv_testlab");
    let actor = uid("uid_anyone");
    let order = vec![
        (
            gid("grp_test_voice"),
            vec![cid("tl_vc_pairing"), cid("tl_vc_huddle"), cid("tl_ch_qa")],
        ),
        (gid("grp_test_text"), vec![cid("tl_ch_general")]),
    ];
    let layout = handle
        .run(queries::UpdateLayout {
            server: server.clone(),
            order,
            actor: actor.clone(),
        })
        .await
        .unwrap();
    let flat: Vec<(&str, Vec<&str>)> = layout
        .iter()
        .map(|g| (g.id.as_str(), g.channels.iter().map(|c| c.id.as_str()).collect()))
        .collect();
    assert_eq!(
        flat,
        vec![
            (
                "grp_test_voice",
                vec!["tl_vc_pairing", "tl_vc_huddle", "tl_ch_qa"]
            ),
            ("grp_test_text", vec!["tl_ch_general"])
        ]
    );
    for bad in [
        vec![(gid("grp_test_voice"), vec![cid("tl_vc_pairing")])],
        vec![
            (
                gid("grp_test_voice"),
                vec![
                    cid("tl_vc_pairing"),
                    cid("tl_vc_huddle"),
                    cid("tl_ch_qa"),
                    cid("ch_general"),
                ],
            ),
            (gid("grp_test_text"), vec![cid("tl_ch_general")]),
        ],
        vec![
            (
                gid("grp_test_voice"),
                vec![cid("tl_vc_pairing"), cid("tl_vc_pairing"), cid("tl_ch_qa")],
            ),
            (gid("grp_test_text"), vec![cid("tl_ch_general")]),
        ],
    ] {
        assert!(matches!(
            handle
                .run(queries::UpdateLayout {
                    server: server.clone(),
                    order: bad,
                    actor: actor.clone()
                })
                .await,
            Err(StorageError::Invalid {
                code: "invalid_payload",
                ..
            })
        ));
    }
    assert_eq!(
        handle.run(queries::Layout { server }).await.unwrap(),
        layout,
        "refused layouts change nothing"
    );
    fixture.finish().await;
}

async fn messages_are_paged_oldest_first_with_cursors(fixture: Fixture) {
    seeded(&fixture).await;
    let handle = fixture.handle();
    for i in 0..7 {
        handle
            .run(queries::CreateMessage {
                new: message(
                    &format!("msg_p{i}"),
                    "ch_release",
                    "uid_a",
                    &format!("m{i}"),
                    None,
                ),
            })
            .await
            .unwrap();
    }
    let latest = handle
        .run(queries::Messages {
            channel: cid("ch_release"),
            page: page(3, None, None),
            viewer: None,
        })
        .await
        .unwrap();
    let bodies: Vec<&str> = latest.messages.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["m4", "m5", "m6"]);
    let older = handle
        .run(queries::Messages {
            channel: cid("ch_release"),
            page: page(3, latest.older_cursor, None),
            viewer: None,
        })
        .await
        .unwrap();
    assert_eq!(
        older.messages.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["m1", "m2", "m3"]
    );
    let oldest = handle
        .run(queries::Messages {
            channel: cid("ch_release"),
            page: page(3, older.older_cursor, None),
            viewer: None,
        })
        .await
        .unwrap();
    assert_eq!(
        oldest
            .messages
            .iter()
            .map(|m| m.body.as_str())
            .collect::<Vec<_>>(),
        ["m0"]
    );
    assert_eq!(oldest.older_cursor, None, "null at the start");
    let newer = handle
        .run(queries::Messages {
            channel: cid("ch_release"),
            page: page(2, None, Some(1)),
            viewer: None,
        })
        .await
        .unwrap();
    assert_eq!(
        newer.messages.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["m2", "m3"]
    );
    let seeded = handle
        .run(queries::Messages {
            channel: cid("ch_general"),
            page: page(100, None, None),
            viewer: None,
        })
        .await
        .unwrap();
    assert_eq!(
        seeded.messages.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        ["msg_seed_01", "msg_seed_02"]
    );
    assert_eq!(seeded.messages[0].server_id.as_str(), "srv_harbor");
    assert!(
        handle
            .run(queries::Messages {
                channel: cid("vc_general"),
                page: page(10, None, None),
                viewer: None
            })
            .await
            .unwrap()
            .messages
            .is_empty()
    );
    assert_eq!(
        handle
            .run(queries::Messages {
                channel: cid("ch_nowhere"),
                page: page(10, None, None),
                viewer: None
            })
            .await,
        Err(StorageError::NotFound("channel"))
    );
    fixture.finish().await;
}

async fn replies_must_target_the_same_channel_and_show_deletion(fixture: Fixture) {
    seeded(&fixture).await;
    let handle = fixture.handle();
    assert!(matches!(
        handle
            .run(queries::CreateMessage {
                new: message("msg_r1", "ch_design", "uid_a", "hi", Some("msg_seed_01"))
            })
            .await,
        Err(StorageError::Invalid {
            code: "reply_target_not_found",
            ..
        })
    ));
    let long = "line one\n\n  line two  \n".to_owned() + &"x".repeat(300);
    handle
        .run(queries::CreateMessage {
            new: message("msg_long", "ch_general", "uid_b", &long, None),
        })
        .await
        .unwrap();
    let reply = handle
        .run(queries::CreateMessage {
            new: message("msg_r2", "ch_general", "uid_a", "re", Some("msg_long")),
        })
        .await
        .unwrap();
    let target = reply.reply_to.unwrap();
    assert_eq!(target.author_uid, Some(uid("uid_b")));
    let preview = target.preview.unwrap();
    assert!(preview.starts_with("line one line two x"));
    assert_eq!(preview.chars().count(), 220);
    assert!(!target.unavailable);
    handle
        .run(queries::DeleteMessage {
            channel: cid("ch_general"),
            message: mid("msg_long"),
            actor: uid("uid_b"),
            now: NOW,
        })
        .await
        .unwrap();
    let page = handle
        .run(queries::Messages {
            channel: cid("ch_general"),
            page: page(10, None, None),
            viewer: None,
        })
        .await
        .unwrap();
    assert!(
        page.messages.iter().all(|m| m.id.as_str() != "msg_long"),
        "deleted messages leave the history"
    );
    let reply = page.messages.iter().find(|m| m.id.as_str() == "msg_r2").unwrap();
    let target = reply.reply_to.as_ref().unwrap();
    assert!(target.unavailable);
    assert_eq!(
        (target.author_uid.as_ref(), target.preview.as_ref()),
        (None, None)
    );
    fixture.finish().await;
}

fn attachment(id: &str, channel: &str, name: &str) -> AttachmentRecord {
    AttachmentRecord {
        id: AttachmentId::parse(id).unwrap(),
        channel_id: cid(channel),
        file_name: name.into(),
        content_type: "image/png".into(),
        bytes: 68,
        width: 1,
        height: 2,
        sha256: "ab".repeat(32),
    }
}

async fn attachments_are_stored_with_their_message(fixture: Fixture) {
    seeded(&fixture).await;
    let handle = fixture.handle();
    let mut new = message("msg_img", "ch_design", "uid_a", "", None);
    new.attachments = vec![
        attachment("att_1", "ch_design", "a.png"),
        attachment("att_2", "ch_design", "b.png"),
    ];
    let created = handle.run(queries::CreateMessage { new }).await.unwrap();
    assert_eq!(
        created
            .attachments
            .iter()
            .map(|a| a.file_name.as_str())
            .collect::<Vec<_>>(),
        ["a.png", "b.png"]
    );
    let listed = handle
        .run(queries::Messages {
            channel: cid("ch_design"),
            page: page(10, None, None),
            viewer: None,
        })
        .await
        .unwrap();
    assert_eq!(listed.messages.last().unwrap().attachments, created.attachments);
    let one = handle
        .run(queries::Attachment {
            channel: cid("ch_design"),
            attachment: AttachmentId::parse("att_2").unwrap(),
        })
        .await
        .unwrap();
    assert_eq!((one.width, one.height, one.sha256.len()), (1, 2, 64));
    assert_eq!(
        handle
            .run(queries::Attachment {
                channel: cid("ch_general"),
                attachment: AttachmentId::parse("att_2").unwrap()
            })
            .await,
        Err(StorageError::NotFound("attachment")),
        "an attachment is found only in its own channel"
    );
    fixture.finish().await;
}

async fn only_authors_or_managers_delete_messages(fixture: Fixture) {
    seeded(&fixture).await;
    let handle = fixture.handle();
    handle
        .run(queries::CreateMessage {
            new: message("msg_d1", "ch_design", "uid_author", "x", None),
        })
        .await
        .unwrap();
    handle
        .run(queries::CreateMessage {
            new: message("msg_d2", "ch_design", "uid_author", "y", None),
        })
        .await
        .unwrap();
    // Unclaimed server: anyone may manage, so anyone may delete.
    handle
        .run(queries::DeleteMessage {
            channel: cid("ch_design"),
            message: mid("msg_d1"),
            actor: uid("uid_other"),
            now: NOW,
        })
        .await
        .unwrap();
    handle
        .run(queries::GrantOwner {
            server: sid("srv_harbor"),
            owner: uid("uid_owner"),
        })
        .await
        .unwrap();
    assert!(matches!(
        handle
            .run(queries::DeleteMessage {
                channel: cid("ch_design"),
                message: mid("msg_d2"),
                actor: uid("uid_other"),
                now: NOW
            })
            .await,
        Err(StorageError::Forbidden(_))
    ));
    handle
        .run(queries::DeleteMessage {
            channel: cid("ch_design"),
            message: mid("msg_d2"),
            actor: uid("uid_author"),
            now: NOW,
        })
        .await
        .unwrap();
    assert_eq!(
        handle
            .run(queries::DeleteMessage {
                channel: cid("ch_design"),
                message: mid("msg_d2"),
                actor: uid("uid_author"),
                now: NOW
            })
            .await,
        Err(StorageError::NotFound("message"))
    );
    fixture.finish().await;
}

async fn read_acks_only_move_forward(fixture: Fixture) {
    seeded(&fixture).await;
    let handle = fixture.handle();
    let me = uid("uid_reader");
    assert_eq!(
        handle
            .run(queries::ReadAck {
                channel: cid("ch_general"),
                user: me.clone()
            })
            .await
            .unwrap(),
        None
    );
    handle
        .run(queries::CreateMessage {
            new: message("msg_a3", "ch_general", "uid_a", "third", None),
        })
        .await
        .unwrap();
    let (ack, applied, _) = handle
        .run(queries::PutReadAck {
            channel: cid("ch_general"),
            user: me.clone(),
            message: Some(mid("msg_seed_02")),
            now: NOW,
        })
        .await
        .unwrap();
    assert!(applied);
    assert_eq!(
        (
            ack.cursor_index,
            ack.last_read_message_id.as_ref().map(MessageId::as_str)
        ),
        (1, Some("msg_seed_02"))
    );
    let (stale, applied, _) = handle
        .run(queries::PutReadAck {
            channel: cid("ch_general"),
            user: me.clone(),
            message: Some(mid("msg_seed_01")),
            now: NOW + 1,
        })
        .await
        .unwrap();
    assert!(!applied);
    assert_eq!(stale, ack, "a stale ack returns the stored, newer one");
    let (latest, applied, _) = handle
        .run(queries::PutReadAck {
            channel: cid("ch_general"),
            user: me.clone(),
            message: None,
            now: NOW + 2,
        })
        .await
        .unwrap();
    assert!(applied, "no message id means the latest message");
    assert_eq!(
        (latest.cursor_index, latest.last_read_message_id.unwrap().as_str()),
        (2, "msg_a3")
    );
    assert_eq!(
        handle
            .run(queries::ReadAck {
                channel: cid("ch_general"),
                user: me.clone()
            })
            .await
            .unwrap()
            .unwrap()
            .cursor_index,
        2
    );
    assert_eq!(
        handle
            .run(queries::PutReadAck {
                channel: cid("ch_general"),
                user: me.clone(),
                message: Some(mid("msg_seed_11")),
                now: NOW
            })
            .await
            .map(|r| r.1),
        Err(StorageError::NotFound("message")),
        "a message of another channel"
    );
    fixture.finish().await;
}

async fn profiles_are_created_with_defaults_and_versioned(fixture: Fixture) {
    let handle = fixture.handle();
    let me = uid("uid_0a1b2c3d");
    let profile = handle
        .run(queries::Profile {
            user: me.clone(),
            now: NOW,
        })
        .await
        .unwrap();
    assert_eq!(profile.display_name, "User 0a1b2c3d");
    assert_eq!(profile.avatar_mode, AvatarMode::Generated);
    assert_eq!(
        profile.avatar_preset_id.as_deref(),
        Some(openchat_core::profile::default_avatar_preset("uid_0a1b2c3d"))
    );
    assert_eq!(profile.profile_version, 1);
    let update = |expected: Option<i64>, avatar: Avatar| ProfileUpdate {
        user_uid: me.clone(),
        expected_version: expected,
        display_name: "Lyra".into(),
        avatar,
        now: NOW + 5,
    };
    let updated = handle
        .run(queries::UpdateProfile {
            update: update(Some(1), Avatar::Preset("mint".into())),
        })
        .await
        .unwrap();
    assert_eq!(
        (updated.profile_version, updated.display_name.as_str()),
        (2, "Lyra")
    );
    assert!(matches!(
        handle
            .run(queries::UpdateProfile {
                update: update(Some(1), Avatar::Preset("mint".into()))
            })
            .await,
        Err(StorageError::Conflict {
            code: "profile_conflict",
            ..
        })
    ));
    assert!(matches!(
        handle
            .run(queries::UpdateProfile {
                update: update(None, Avatar::Preset("preset_01".into()))
            })
            .await,
        Err(StorageError::Invalid {
            code: "avatar_mode_unsupported",
            ..
        })
    ));
    let asset = AssetId::parse("asset_0000abcd").unwrap();
    assert!(matches!(
        handle
            .run(queries::UpdateProfile {
                update: update(None, Avatar::Uploaded(asset.clone()))
            })
            .await,
        Err(StorageError::Invalid {
            code: "avatar_asset_not_found",
            ..
        })
    ));
    handle
        .run(queries::InsertAvatar {
            avatar: AvatarRecord {
                id: asset.clone(),
                content_type: "image/webp".into(),
                bytes: 10,
                width: 4,
                height: 4,
                sha256: "cd".repeat(32),
                uploaded_by: me.clone(),
                created_at: NOW,
            },
        })
        .await
        .unwrap();
    let uploaded = handle
        .run(queries::UpdateProfile {
            update: update(Some(2), Avatar::Uploaded(asset.clone())),
        })
        .await
        .unwrap();
    assert_eq!(
        (uploaded.avatar_mode, uploaded.avatar_asset_id.as_ref()),
        (AvatarMode::Uploaded, Some(&asset))
    );
    assert_eq!(uploaded.avatar_preset_id, None);
    assert_eq!(
        handle
            .run(queries::LoadAvatar { asset })
            .await
            .unwrap()
            .content_type,
        "image/webp"
    );
    let batch = handle
        .run(queries::Profiles {
            users: vec![me.clone(), uid("uid_new")],
            now: NOW,
        })
        .await
        .unwrap();
    assert_eq!(
        batch.iter().map(|p| p.profile_version).collect::<Vec<_>>(),
        [3, 1]
    );
    fixture.finish().await;
}

async fn mention_candidates_match_prefixes(fixture: Fixture) {
    seeded(&fixture).await;
    let handle = fixture.handle();
    let all = handle
        .run(queries::Mentions {
            channel: cid("ch_general"),
            query: String::new(),
            limit: 25,
        })
        .await
        .unwrap();
    assert_eq!(&all[0].token, "@here");
    assert!(all.iter().any(|m| m.display_text == "Lyra" && m.kind == "user"));
    assert!(all.iter().any(|m| m.token == "#design" && m.kind == "channel"));
    let ly = handle
        .run(queries::Mentions {
            channel: cid("ch_general"),
            query: "ly".into(),
            limit: 25,
        })
        .await
        .unwrap();
    assert_eq!(
        ly.iter().map(|m| m.display_text.as_str()).collect::<Vec<_>>(),
        ["Lyra"]
    );
    let none = handle
        .run(queries::Mentions {
            channel: cid("ch_general"),
            query: "zz_".into(),
            limit: 25,
        })
        .await
        .unwrap();
    assert!(none.is_empty(), "'_' is not a wildcard: {none:?}");
    assert_eq!(
        handle
            .run(queries::Mentions {
                channel: cid("ch_general"),
                query: String::new(),
                limit: 2
            })
            .await
            .unwrap()
            .len(),
        2
    );
    fixture.finish().await;
}

/// Issue 15: the seeded messages were by "User seed_1/2/3" while the member list and the
/// mention autocomplete offered Lyra, Orin, Mira and Calix, who matched no author.
async fn seeded_authors_are_members_with_profiles(fixture: Fixture) {
    seeded(&fixture).await;
    let handle = fixture.handle();
    for server in seed::default_community().servers {
        let members = handle
            .run(queries::Members {
                server: sid(server.id),
            })
            .await
            .unwrap();
        let authors: Vec<&str> = server
            .groups
            .iter()
            .flat_map(|g| &g.channels)
            .flat_map(|c| &c.messages)
            .map(|m| m.author_uid)
            .collect();
        assert!(!authors.is_empty());
        let profiles = handle
            .run(queries::Profiles {
                users: authors.iter().map(|a| uid(a)).collect(),
                now: NOW,
            })
            .await
            .unwrap();
        for author in authors {
            let profile = profiles.iter().find(|p| p.user_uid.as_str() == author).unwrap();
            assert!(
                members.iter().any(|m| m.name == profile.display_name),
                "{author} shows as {:?}, who is not in the member list",
                profile.display_name
            );
        }
    }
    // The autocomplete's Lyra is the author of the welcome message, once.
    let ly = handle
        .run(queries::Mentions {
            channel: cid("ch_general"),
            query: "ly".into(),
            limit: 25,
        })
        .await
        .unwrap();
    assert_eq!(
        ly.iter()
            .map(|m| (m.display_text.as_str(), m.target_id.as_str()))
            .collect::<Vec<_>>(),
        [("Lyra", "uid_seed_1")]
    );
    fixture.finish().await;
}

/// Issue 15: no message carried a `mentions` array, so a mentioned user got no highlight,
/// badge or notification.
async fn mentions_are_stored_with_their_message_and_counted_per_reader(fixture: Fixture) {
    seeded(&fixture).await;
    let handle = fixture.handle();
    // Someone with a space in their name, known as an author of the channel.
    handle
        .run(queries::CreateMessage {
            new: message("msg_m0", "ch_general", "uid_0000aaaa", "hello", None),
        })
        .await
        .unwrap();
    handle
        .run(queries::UpdateProfile {
            update: ProfileUpdate {
                user_uid: uid("uid_0000aaaa"),
                expected_version: None,
                display_name: "Mira Vale".into(),
                avatar: Avatar::Preset("mint".into()),
                now: NOW,
            },
        })
        .await
        .unwrap();
    let body = "Grüße 👋 @Lyra, @Mira_Vale and @here: see #design (mail x@y.z)";
    let created = handle
        .run(queries::CreateMessage {
            new: message("msg_m1", "ch_general", "uid_0000ffff", body, None),
        })
        .await
        .unwrap();
    let summary: Vec<(&str, &str, &str, u32, u32)> = created
        .mentions
        .iter()
        .map(|m| {
            (
                m.kind.as_str(),
                m.token.as_str(),
                m.target_id.as_str(),
                m.start,
                m.end,
            )
        })
        .collect();
    // "Grüße 👋 " is 9 UTF-16 units (the emoji is two).
    assert_eq!(
        summary,
        [
            ("user", "@Lyra", "uid_seed_1", 9, 14),
            ("user", "@Mira_Vale", "uid_0000aaaa", 16, 26),
            ("channel", "@here", "ch_general", 31, 36),
            ("channel", "#design", "ch_design", 42, 49),
        ]
    );
    let utf16: Vec<u16> = body.encode_utf16().collect();
    for m in &created.mentions {
        let slice = String::from_utf16(&utf16[m.start as usize..m.end as usize]).unwrap();
        assert_eq!(slice, m.token);
    }
    assert_eq!(created.mentions[1].display_text, "Mira Vale");
    // History carries the same mentions.
    let history = handle
        .run(queries::Messages {
            channel: cid("ch_general"),
            page: page(10, None, None),
            viewer: None,
        })
        .await
        .unwrap();
    let stored = history
        .messages
        .iter()
        .find(|m| m.id.as_str() == "msg_m1")
        .unwrap();
    assert_eq!(stored.mentions, created.mentions);
    // Counts per reader: Lyra is mentioned by name and by @here; a bystander only by @here;
    // the author is never counted for their own message.
    let counts = |reader: &'static str| {
        let handle = handle.clone();
        async move {
            let all = handle
                .run(queries::UnreadCounts {
                    server: sid("srv_harbor"),
                    reader: uid(reader),
                })
                .await
                .unwrap();
            all.into_iter()
                .find(|c| c.channel_id.as_str() == "ch_general")
                .map(|c| (c.unread, c.mentions))
        }
    };
    // ch_general: two seeded messages, msg_m0 and msg_m1.
    assert_eq!(
        counts("uid_seed_1").await,
        Some((3, 1)),
        "Lyra wrote one seeded message"
    );
    assert_eq!(counts("uid_0000bbbb").await, Some((4, 1)));
    assert_eq!(counts("uid_0000ffff").await, Some((3, 0)));
    handle
        .run(queries::CreateMessage {
            new: message("msg_m2", "ch_general", "uid_0000ffff", "@uid_seed_1 again", None),
        })
        .await
        .unwrap();
    assert_eq!(counts("uid_seed_1").await, Some((4, 2)));
    // Reading up to the latest message clears both.
    handle
        .run(queries::PutReadAck {
            channel: cid("ch_general"),
            user: uid("uid_seed_1"),
            message: None,
            now: NOW,
        })
        .await
        .unwrap();
    assert_eq!(counts("uid_seed_1").await, None);
    // A deleted message takes its mentions with it.
    handle
        .run(queries::DeleteMessage {
            channel: cid("ch_general"),
            message: mid("msg_m1"),
            actor: uid("uid_0000ffff"),
            now: NOW,
        })
        .await
        .unwrap();
    assert_eq!(counts("uid_0000bbbb").await, Some((4, 0)));
    fixture.finish().await;
}

async fn voice_channels_refuse_messages(fixture: Fixture) {
    seeded(&fixture).await;
    let handle = fixture.handle();
    for channel in ["vc_general", "ch_missing"] {
        assert!(matches!(
            handle
                .run(queries::CreateMessage {
                    new: message("msg_v", channel, "uid_a", "hi", None)
                })
                .await,
            Err(StorageError::Invalid {
                code: "message_create_failed",
                ..
            })
        ));
    }
    fixture.finish().await;
}
