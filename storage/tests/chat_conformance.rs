//! Conformance suite, chat part: server management, messages, read acks, profiles, run
//! against both backends like `conformance.rs`.

#![allow(clippy::unwrap_used)]

mod support;

use openchat_core::{
    AssetId, AttachmentId, ChannelId, ChannelKind, GroupId, MessageId, ServerId, UserUid, seed,
};
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
            .seed(seed::default_community(), NOW - 3600)
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
        .create_server(new_server("srv_new00001", "Night Owls", "uid_creator"))
        .await
        .unwrap();
    assert_eq!(created.display_name, "Night Owls");
    assert_eq!(created.owner_uid, None);
    let layout = handle.layout(sid("srv_new00001")).await.unwrap();
    assert_eq!(layout.len(), 2);
    assert_eq!(layout[0].kind, ChannelKind::Text);
    assert_eq!(layout[0].channels[0].name, "general");
    assert_eq!(layout[1].channels[0].kind, ChannelKind::Voice);
    // The first server created becomes the primary one on an unseeded store.
    assert_eq!(
        handle
            .instance()
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
        .create_server(new_server("srv_new00002", "Claimed", "uid_dir"))
        .await
        .unwrap();
    let server = sid("srv_new00002");
    assert!(matches!(
        handle
            .claim_ownership(server.clone(), "wrong".into(), uid("uid_owner"), NOW)
            .await,
        Err(StorageError::Forbidden(_))
    ));
    let claim = handle
        .claim_ownership(
            server.clone(),
            "hash_srv_new00002".into(),
            uid("uid_owner"),
            NOW + 1,
        )
        .await
        .unwrap();
    assert_eq!(
        (claim.owner_uid.as_str(), claim.claimed_at),
        ("uid_owner", NOW + 1)
    );
    // Idempotent for the claimer, a conflict for anyone else.
    let again = handle
        .claim_ownership(
            server.clone(),
            "hash_srv_new00002".into(),
            uid("uid_owner"),
            NOW + 9,
        )
        .await
        .unwrap();
    assert_eq!(again.claimed_at, NOW + 1);
    assert!(matches!(
        handle
            .claim_ownership(
                server.clone(),
                "hash_srv_new00002".into(),
                uid("uid_other"),
                NOW + 2
            )
            .await,
        Err(StorageError::Conflict {
            code: "ownership_already_claimed",
            ..
        })
    ));
    let settings = openchat_core::settings::ServerSettings::parse("Renamed", "", "").unwrap();
    assert!(matches!(
        handle
            .update_settings(server.clone(), settings.clone(), uid("uid_other"), NOW)
            .await,
        Err(StorageError::Forbidden(_))
    ));
    assert!(matches!(
        handle
            .create_category(
                server.clone(),
                gid("grp_x"),
                "x".into(),
                ChannelKind::Text,
                uid("uid_other"),
                NOW
            )
            .await,
        Err(StorageError::Forbidden(_))
    ));
    handle
        .update_settings(server.clone(), settings, uid("uid_owner"), NOW)
        .await
        .unwrap();
    // The operator's grant overrides.
    handle
        .grant_owner(server.clone(), uid("uid_other"))
        .await
        .unwrap();
    assert_eq!(
        handle.server(server).await.unwrap().owner_uid,
        Some(uid("uid_other"))
    );
    assert_eq!(
        handle.grant_owner(sid("srv_none"), uid("uid_x")).await,
        Err(StorageError::NotFound("server"))
    );
    fixture.finish().await;
}

async fn leaving_hides_the_server_from_that_user_only(fixture: Fixture) {
    seeded(&fixture).await;
    let handle = fixture.handle();
    let first = handle
        .leave_server(sid("srv_testlab"), uid("uid_leaver"), NOW)
        .await
        .unwrap();
    let second = handle
        .leave_server(sid("srv_testlab"), uid("uid_leaver"), NOW + 50)
        .await
        .unwrap();
    assert_eq!((first, second), (NOW, NOW), "idempotent, first leave time kept");
    let mine = handle.directory(Some(uid("uid_leaver")), 100).await.unwrap();
    assert_eq!(
        mine.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["srv_harbor"]
    );
    assert_eq!(
        handle
            .directory(Some(uid("uid_stayer")), 100)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(handle.directory(None, 100).await.unwrap().len(), 2);
    assert_eq!(
        handle.leave_server(sid("srv_gone"), uid("uid_leaver"), NOW).await,
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
        .create_category(
            server.clone(),
            gid("grp_new"),
            "projects".into(),
            ChannelKind::Text,
            actor.clone(),
            NOW,
        )
        .await
        .unwrap();
    assert!(group.channels.is_empty());
    let channel = handle
        .create_channel(
            server.clone(),
            gid("grp_new"),
            cid("ch_new"),
            "roadmap".into(),
            ChannelKind::Text,
            actor.clone(),
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(channel.name, "roadmap");
    assert_eq!(
        handle
            .create_channel(
                server.clone(),
                gid("grp_test_text"),
                cid("ch_x"),
                "x".into(),
                ChannelKind::Text,
                actor.clone(),
                NOW
            )
            .await,
        Err(StorageError::NotFound("group")),
        "a group of another server"
    );
    let renamed = handle
        .rename_category(server.clone(), gid("grp_new"), "plans".into(), actor.clone())
        .await
        .unwrap();
    assert_eq!((renamed.label.as_str(), renamed.channels.len()), ("plans", 1));
    assert!(matches!(
        handle
            .delete_category(server.clone(), gid("grp_new"), actor.clone())
            .await,
        Err(StorageError::Conflict {
            code: "category_not_empty",
            ..
        })
    ));
    let empty = handle
        .create_category(
            server.clone(),
            gid("grp_empty"),
            "empty".into(),
            ChannelKind::Voice,
            actor.clone(),
            NOW,
        )
        .await
        .unwrap();
    let layout = handle
        .delete_category(server.clone(), empty.id, actor.clone())
        .await
        .unwrap();
    assert!(layout.iter().all(|g| g.id.as_str() != "grp_empty"));
    assert_eq!(layout.last().unwrap().label, "plans");
    assert_eq!(handle.channel(cid("ch_new")).await.unwrap().server_id, server);
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
        .update_layout(server.clone(), order, actor.clone())
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
            handle.update_layout(server.clone(), bad, actor.clone()).await,
            Err(StorageError::Invalid {
                code: "invalid_payload",
                ..
            })
        ));
    }
    assert_eq!(
        handle.layout(server).await.unwrap(),
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
            .create_message(message(
                &format!("msg_p{i}"),
                "ch_release",
                "uid_a",
                &format!("m{i}"),
                None,
            ))
            .await
            .unwrap();
    }
    let latest = handle
        .messages(cid("ch_release"), page(3, None, None))
        .await
        .unwrap();
    let bodies: Vec<&str> = latest.messages.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["m4", "m5", "m6"]);
    let older = handle
        .messages(cid("ch_release"), page(3, latest.older_cursor, None))
        .await
        .unwrap();
    assert_eq!(
        older.messages.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["m1", "m2", "m3"]
    );
    let oldest = handle
        .messages(cid("ch_release"), page(3, older.older_cursor, None))
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
        .messages(cid("ch_release"), page(2, None, Some(1)))
        .await
        .unwrap();
    assert_eq!(
        newer.messages.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["m2", "m3"]
    );
    let seeded = handle
        .messages(cid("ch_general"), page(100, None, None))
        .await
        .unwrap();
    assert_eq!(
        seeded.messages.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        ["msg_seed_01", "msg_seed_02"]
    );
    assert_eq!(seeded.messages[0].server_id.as_str(), "srv_harbor");
    assert!(
        handle
            .messages(cid("vc_general"), page(10, None, None))
            .await
            .unwrap()
            .messages
            .is_empty()
    );
    assert_eq!(
        handle.messages(cid("ch_nowhere"), page(10, None, None)).await,
        Err(StorageError::NotFound("channel"))
    );
    fixture.finish().await;
}

async fn replies_must_target_the_same_channel_and_show_deletion(fixture: Fixture) {
    seeded(&fixture).await;
    let handle = fixture.handle();
    assert!(matches!(
        handle
            .create_message(message("msg_r1", "ch_design", "uid_a", "hi", Some("msg_seed_01")))
            .await,
        Err(StorageError::Invalid {
            code: "reply_target_not_found",
            ..
        })
    ));
    let long = "line one\n\n  line two  \n".to_owned() + &"x".repeat(300);
    handle
        .create_message(message("msg_long", "ch_general", "uid_b", &long, None))
        .await
        .unwrap();
    let reply = handle
        .create_message(message("msg_r2", "ch_general", "uid_a", "re", Some("msg_long")))
        .await
        .unwrap();
    let target = reply.reply_to.unwrap();
    assert_eq!(target.author_uid, Some(uid("uid_b")));
    let preview = target.preview.unwrap();
    assert!(preview.starts_with("line one line two x"));
    assert_eq!(preview.chars().count(), 220);
    assert!(!target.unavailable);
    handle
        .delete_message(cid("ch_general"), mid("msg_long"), uid("uid_b"), NOW)
        .await
        .unwrap();
    let page = handle
        .messages(cid("ch_general"), page(10, None, None))
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
    let created = handle.create_message(new).await.unwrap();
    assert_eq!(
        created
            .attachments
            .iter()
            .map(|a| a.file_name.as_str())
            .collect::<Vec<_>>(),
        ["a.png", "b.png"]
    );
    let listed = handle
        .messages(cid("ch_design"), page(10, None, None))
        .await
        .unwrap();
    assert_eq!(listed.messages.last().unwrap().attachments, created.attachments);
    let one = handle
        .attachment(cid("ch_design"), AttachmentId::parse("att_2").unwrap())
        .await
        .unwrap();
    assert_eq!((one.width, one.height, one.sha256.len()), (1, 2, 64));
    assert_eq!(
        handle
            .attachment(cid("ch_general"), AttachmentId::parse("att_2").unwrap())
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
        .create_message(message("msg_d1", "ch_design", "uid_author", "x", None))
        .await
        .unwrap();
    handle
        .create_message(message("msg_d2", "ch_design", "uid_author", "y", None))
        .await
        .unwrap();
    // Unclaimed server: anyone may manage, so anyone may delete.
    handle
        .delete_message(cid("ch_design"), mid("msg_d1"), uid("uid_other"), NOW)
        .await
        .unwrap();
    handle
        .grant_owner(sid("srv_harbor"), uid("uid_owner"))
        .await
        .unwrap();
    assert!(matches!(
        handle
            .delete_message(cid("ch_design"), mid("msg_d2"), uid("uid_other"), NOW)
            .await,
        Err(StorageError::Forbidden(_))
    ));
    handle
        .delete_message(cid("ch_design"), mid("msg_d2"), uid("uid_author"), NOW)
        .await
        .unwrap();
    assert_eq!(
        handle
            .delete_message(cid("ch_design"), mid("msg_d2"), uid("uid_author"), NOW)
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
        handle.read_ack(cid("ch_general"), me.clone()).await.unwrap(),
        None
    );
    handle
        .create_message(message("msg_a3", "ch_general", "uid_a", "third", None))
        .await
        .unwrap();
    let (ack, applied, _) = handle
        .put_read_ack(cid("ch_general"), me.clone(), Some(mid("msg_seed_02")), NOW)
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
        .put_read_ack(cid("ch_general"), me.clone(), Some(mid("msg_seed_01")), NOW + 1)
        .await
        .unwrap();
    assert!(!applied);
    assert_eq!(stale, ack, "a stale ack returns the stored, newer one");
    let (latest, applied, _) = handle
        .put_read_ack(cid("ch_general"), me.clone(), None, NOW + 2)
        .await
        .unwrap();
    assert!(applied, "no message id means the latest message");
    assert_eq!(
        (latest.cursor_index, latest.last_read_message_id.unwrap().as_str()),
        (2, "msg_a3")
    );
    assert_eq!(
        handle
            .read_ack(cid("ch_general"), me.clone())
            .await
            .unwrap()
            .unwrap()
            .cursor_index,
        2
    );
    assert_eq!(
        handle
            .put_read_ack(cid("ch_general"), me.clone(), Some(mid("msg_seed_11")), NOW)
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
    let profile = handle.profile(me.clone(), NOW).await.unwrap();
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
        .update_profile(update(Some(1), Avatar::Preset("mint".into())))
        .await
        .unwrap();
    assert_eq!(
        (updated.profile_version, updated.display_name.as_str()),
        (2, "Lyra")
    );
    assert!(matches!(
        handle
            .update_profile(update(Some(1), Avatar::Preset("mint".into())))
            .await,
        Err(StorageError::Conflict {
            code: "profile_conflict",
            ..
        })
    ));
    assert!(matches!(
        handle
            .update_profile(update(None, Avatar::Preset("preset_01".into())))
            .await,
        Err(StorageError::Invalid {
            code: "avatar_mode_unsupported",
            ..
        })
    ));
    let asset = AssetId::parse("asset_0000abcd").unwrap();
    assert!(matches!(
        handle
            .update_profile(update(None, Avatar::Uploaded(asset.clone())))
            .await,
        Err(StorageError::Invalid {
            code: "avatar_asset_not_found",
            ..
        })
    ));
    handle
        .insert_avatar(AvatarRecord {
            id: asset.clone(),
            content_type: "image/webp".into(),
            bytes: 10,
            width: 4,
            height: 4,
            sha256: "cd".repeat(32),
            uploaded_by: me.clone(),
            created_at: NOW,
        })
        .await
        .unwrap();
    let uploaded = handle
        .update_profile(update(Some(2), Avatar::Uploaded(asset.clone())))
        .await
        .unwrap();
    assert_eq!(
        (uploaded.avatar_mode, uploaded.avatar_asset_id.as_ref()),
        (AvatarMode::Uploaded, Some(&asset))
    );
    assert_eq!(uploaded.avatar_preset_id, None);
    assert_eq!(handle.avatar(asset).await.unwrap().content_type, "image/webp");
    let batch = handle
        .profiles(vec![me.clone(), uid("uid_new")], NOW)
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
        .mentions(cid("ch_general"), String::new(), 25)
        .await
        .unwrap();
    assert_eq!(&all[0].token, "@here");
    assert!(all.iter().any(|m| m.display_text == "Lyra" && m.kind == "user"));
    assert!(all.iter().any(|m| m.token == "#design" && m.kind == "channel"));
    let ly = handle.mentions(cid("ch_general"), "ly".into(), 25).await.unwrap();
    assert_eq!(
        ly.iter().map(|m| m.display_text.as_str()).collect::<Vec<_>>(),
        ["Lyra"]
    );
    let none = handle
        .mentions(cid("ch_general"), "zz_".into(), 25)
        .await
        .unwrap();
    assert!(none.is_empty(), "'_' is not a wildcard: {none:?}");
    assert_eq!(
        handle
            .mentions(cid("ch_general"), String::new(), 2)
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
        let members = handle.members(sid(server.id)).await.unwrap();
        let authors: Vec<&str> = server
            .groups
            .iter()
            .flat_map(|g| &g.channels)
            .flat_map(|c| &c.messages)
            .map(|m| m.author_uid)
            .collect();
        assert!(!authors.is_empty());
        let profiles = handle
            .profiles(authors.iter().map(|a| uid(a)).collect(), NOW)
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
    let ly = handle.mentions(cid("ch_general"), "ly".into(), 25).await.unwrap();
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
        .create_message(message("msg_m0", "ch_general", "uid_0000aaaa", "hello", None))
        .await
        .unwrap();
    handle
        .update_profile(ProfileUpdate {
            user_uid: uid("uid_0000aaaa"),
            expected_version: None,
            display_name: "Mira Vale".into(),
            avatar: Avatar::Preset("mint".into()),
            now: NOW,
        })
        .await
        .unwrap();
    let body = "Grüße 👋 @Lyra, @Mira_Vale and @here: see #design (mail x@y.z)";
    let created = handle
        .create_message(message("msg_m1", "ch_general", "uid_0000ffff", body, None))
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
        .messages(cid("ch_general"), page(10, None, None))
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
                .channel_counts(sid("srv_harbor"), uid(reader))
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
        .create_message(message(
            "msg_m2",
            "ch_general",
            "uid_0000ffff",
            "@uid_seed_1 again",
            None,
        ))
        .await
        .unwrap();
    assert_eq!(counts("uid_seed_1").await, Some((4, 2)));
    // Reading up to the latest message clears both.
    handle
        .put_read_ack(cid("ch_general"), uid("uid_seed_1"), None, NOW)
        .await
        .unwrap();
    assert_eq!(counts("uid_seed_1").await, None);
    // A deleted message takes its mentions with it.
    handle
        .delete_message(cid("ch_general"), mid("msg_m1"), uid("uid_0000ffff"), NOW)
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
                .create_message(message("msg_v", channel, "uid_a", "hi", None))
                .await,
            Err(StorageError::Invalid {
                code: "message_create_failed",
                ..
            })
        ));
    }
    fixture.finish().await;
}
