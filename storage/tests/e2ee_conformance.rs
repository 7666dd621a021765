//! Conformance suite, end-to-end-encryption part (E2EE.md §3): epochs and membership,
//! exactly one commit per epoch (also concurrently), the posting rules, membership-bound
//! history, devices and links, KeyPackages consumed once, key envelopes bound to epoch
//! membership, backups, challenges and sessions. Run on both backends.

#![allow(clippy::unwrap_used)]

mod support;

use openchat_core::{ChannelId, ChannelKind, GroupId, MessageId, ServerId, UserUid, seed};
use openchat_storage::e2ee::{Actor, ChallengeRecord, DeviceStatus, Envelope, EnvelopeIn, MembershipChange};
use openchat_storage::queries;
use openchat_storage::{NewMessage, PageRequest, StorageError, StorageHandle};
use support::Fixture;

const NOW: i64 = 1_790_000_000;
const QUEUE_MAX: usize = 10_000;

fn cid(raw: &str) -> ChannelId {
    ChannelId::parse(raw).unwrap()
}
fn uid(raw: &str) -> UserUid {
    UserUid::parse(raw).unwrap()
}
fn actor(user: &str, device: &str) -> Actor {
    Actor {
        user: uid(user),
        device: device.into(),
    }
}
fn code<T: std::fmt::Debug>(result: Result<T, StorageError>) -> &'static str {
    match result {
        Err(StorageError::Denied { denial, .. }) => denial.code(),
        Err(StorageError::Invalid { code, .. }) => code,
        Err(StorageError::NotFound(what)) => what,
        other => panic!("expected a refusal, got {other:?}"),
    }
}
fn denied_epoch<T: std::fmt::Debug>(result: Result<T, StorageError>) -> (&'static str, Option<i64>) {
    match result {
        Err(StorageError::Denied {
            denial,
            current_epoch,
            ..
        }) => (denial.code(), current_epoch),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn setup(fixture: &Fixture) -> StorageHandle {
    let handle = fixture.handle();
    assert!(
        handle
            .run(queries::SeedFirstRun {
                seed: seed::default_community(),
                now: NOW - 3600
            })
            .await
            .unwrap()
    );
    handle
        .run(queries::CreateChannel {
            server: ServerId::parse("srv_harbor").unwrap(),
            group: GroupId::parse("grp_general").unwrap(),
            channel: cid("ch_secret"),
            name: "secret".into(),
            actor: uid("uid_alice"),
            now: NOW,
            kind: ChannelKind::Text,
            e2ee: true,
        })
        .await
        .unwrap();
    for (user, device) in [
        ("uid_alice", "dev_alice"),
        ("uid_bob", "dev_bob"),
        ("uid_carol", "dev_carol"),
    ] {
        register(handle, user, device).await;
    }
    handle.clone()
}

async fn register(handle: &StorageHandle, user: &str, device: &str) -> openchat_storage::e2ee::DeviceRecord {
    handle
        .run(queries::e2ee::RegisterDevice {
            user: uid(user),
            device_id: device.into(),
            device_pubkey: format!("pk_{device}"),
            device_name: None,
            limit: 10,
            now: NOW,
        })
        .await
        .unwrap()
}

async fn add(handle: &StorageHandle, by: &str, user: &str) -> MembershipChange {
    handle
        .run(queries::e2ee::AddMember {
            actor: actor(by, &format!("dev_{}", &by[4..])),
            channel: cid("ch_secret"),
            user: uid(user),
            self_join: false,
            now: NOW,
        })
        .await
        .unwrap()
}

async fn commit(
    handle: &StorageHandle,
    user: &str,
    epoch: i64,
) -> Result<openchat_storage::e2ee::Committed, StorageError> {
    handle
        .run(queries::e2ee::Commit {
            actor: actor(user, &format!("dev_{}", &user[4..])),
            channel: cid("ch_secret"),
            epoch_id: epoch,
            commit_payload: format!("commit_{epoch}_{user}"),
            signature: "sig".into(),
            now: NOW,
        })
        .await
}

fn post(id: &str, user: &str, epoch: i64) -> NewMessage {
    NewMessage {
        id: MessageId::parse(id).unwrap(),
        channel: cid("ch_secret"),
        author: uid(user),
        body: String::new(),
        reply_to: None,
        attachments: Vec::new(),
        envelope: Some(Envelope {
            epoch_id: epoch,
            sender_device_id: format!("dev_{}", &user[4..]),
            ciphertext: format!("ct_{id}"),
            nonce: "n".into(),
            aad: "a".into(),
        }),
        now: NOW,
    }
}

async fn visible(handle: &StorageHandle, user: &str) -> Result<Vec<String>, StorageError> {
    let page = PageRequest {
        limit: 100,
        before: None,
        after: None,
    };
    let page = handle
        .run(queries::Messages {
            channel: cid("ch_secret"),
            page,
            viewer: Some(uid(user)),
        })
        .await?;
    Ok(page
        .messages
        .into_iter()
        .map(|m| m.id.as_str().to_owned())
        .collect())
}

conformance!(
    an_e2ee_channel_starts_at_epoch_one_with_its_creator,
    membership_changes_advance_the_epoch_and_check_who_may_change_it,
    exactly_one_commit_per_epoch_even_concurrently,
    posts_need_a_member_an_active_device_the_current_epoch_and_its_commit,
    history_shows_each_reader_only_the_epochs_they_belonged_to,
    a_membership_change_abandons_an_uncommitted_epoch,
    devices_register_link_and_revoke,
    key_packages_are_consumed_once_and_the_last_resort_is_kept,
    key_envelopes_go_only_to_active_devices_of_members_of_their_epoch,
    backups_return_the_latest,
    challenges_are_single_use_and_sessions_end_with_their_device,
);

async fn an_e2ee_channel_starts_at_epoch_one_with_its_creator(fixture: Fixture) {
    let handle = setup(&fixture).await;
    let list = handle
        .run(queries::e2ee::Epochs {
            actor: actor("uid_alice", "dev_alice"),
            channel: cid("ch_secret"),
        })
        .await
        .unwrap();
    assert_eq!(list.current_epoch, 1);
    assert_eq!(list.my_membership, vec![(1, None)]);
    assert_eq!(list.epochs.len(), 1);
    assert!(!list.epochs[0].committed);
    let layout = handle
        .run(queries::Layout {
            server: ServerId::parse("srv_harbor").unwrap(),
        })
        .await
        .unwrap();
    let channel = layout
        .iter()
        .flat_map(|g| &g.channels)
        .find(|c| c.id.as_str() == "ch_secret")
        .unwrap();
    assert_eq!(channel.e2ee, Some(1));
    assert_eq!(
        code(
            handle
                .run(queries::e2ee::Epochs {
                    actor: actor("uid_bob", "dev_bob"),
                    channel: cid("ch_secret"),
                })
                .await
        ),
        "not_a_member"
    );
    // A plain channel has no epochs.
    assert_eq!(
        code(
            handle
                .run(queries::e2ee::Epochs {
                    actor: actor("uid_alice", "dev_alice"),
                    channel: cid("ch_general"),
                })
                .await
        ),
        "channel_not_e2ee"
    );
}

async fn membership_changes_advance_the_epoch_and_check_who_may_change_it(fixture: Fixture) {
    let handle = setup(&fixture).await;
    let added = add(&handle, "uid_alice", "uid_bob").await;
    assert_eq!((added.from_epoch, added.current_epoch), (Some(2), 2));
    assert_eq!(added.audience, vec![uid("uid_alice"), uid("uid_bob")]);
    let again = handle
        .run(queries::e2ee::AddMember {
            actor: actor("uid_alice", "dev_alice"),
            channel: cid("ch_secret"),
            user: uid("uid_bob"),
            self_join: false,
            now: NOW,
        })
        .await;
    assert_eq!(code(again), "already_member");
    // Carol is no member: she can neither add nor rotate nor remove.
    let by_carol = handle
        .run(queries::e2ee::AddMember {
            actor: actor("uid_carol", "dev_carol"),
            channel: cid("ch_secret"),
            user: uid("uid_dave"),
            self_join: false,
            now: NOW,
        })
        .await;
    assert_eq!(code(by_carol), "not_a_member");
    let rotate = handle
        .run(queries::e2ee::Rotate {
            actor: actor("uid_carol", "dev_carol"),
            channel: cid("ch_secret"),
            now: NOW,
        })
        .await;
    assert_eq!(code(rotate), "not_a_member");
    // In dev mode a user may add itself.
    let carol = handle
        .run(queries::e2ee::AddMember {
            actor: actor("uid_carol", "dev_carol"),
            channel: cid("ch_secret"),
            user: uid("uid_carol"),
            self_join: true,
            now: NOW,
        })
        .await
        .unwrap();
    assert_eq!(carol.current_epoch, 3);
    // Bob (not the creator, not the owner) may not remove Carol; Alice (creator) may.
    let remove = |by: &str, who: &str| queries::e2ee::RemoveMember {
        actor: actor(by, &format!("dev_{}", &by[4..])),
        channel: cid("ch_secret"),
        user: uid(who),
        now: NOW,
    };
    assert_eq!(
        code(handle.run(remove("uid_bob", "uid_carol")).await),
        "forbidden"
    );
    assert_eq!(code(handle.run(remove("uid_alice", "uid_dave")).await), "member");
    let removed = handle.run(remove("uid_alice", "uid_carol")).await.unwrap();
    assert_eq!(
        (removed.change, removed.to_epoch, removed.current_epoch),
        ("remove", Some(3), 4)
    );
    assert!(
        removed.audience.contains(&uid("uid_carol")),
        "the removed user hears of it"
    );
    // Bob leaves himself.
    let left = handle.run(remove("uid_bob", "uid_bob")).await.unwrap();
    assert_eq!(
        (left.change, left.to_epoch, left.current_epoch),
        ("leave", Some(4), 5)
    );
    let (rotated, _) = handle
        .run(queries::e2ee::Rotate {
            actor: actor("uid_alice", "dev_alice"),
            channel: cid("ch_secret"),
            now: NOW,
        })
        .await
        .unwrap();
    assert_eq!(rotated, 6);
    let list = handle
        .run(queries::e2ee::Epochs {
            actor: actor("uid_bob", "dev_bob"),
            channel: cid("ch_secret"),
        })
        .await
        .unwrap();
    assert_eq!(list.my_membership, vec![(2, Some(4))]);
    assert_eq!(
        list.epochs.iter().map(|e| e.epoch_id).collect::<Vec<_>>(),
        vec![2, 3, 4],
        "only the epochs Bob belonged to"
    );
}

async fn exactly_one_commit_per_epoch_even_concurrently(fixture: Fixture) {
    let handle = setup(&fixture).await;
    assert!(commit(&handle, "uid_alice", 1).await.is_ok());
    assert_eq!(
        denied_epoch(commit(&handle, "uid_alice", 1).await),
        ("epoch_commit_exists", Some(1))
    );
    add(&handle, "uid_alice", "uid_bob").await;
    // Two members race for epoch 2: exactly one wins, the other gets epoch_commit_exists.
    let (a, b) = tokio::join!(commit(&handle, "uid_alice", 2), commit(&handle, "uid_bob", 2));
    let outcomes = [a, b];
    assert_eq!(outcomes.iter().filter(|r| r.is_ok()).count(), 1, "{outcomes:?}");
    let loser = outcomes.into_iter().find(|r| r.is_err()).unwrap();
    assert_eq!(denied_epoch(loser), ("epoch_commit_exists", Some(2)));
    // Many concurrent attempts on the next epoch: still one.
    add(&handle, "uid_alice", "uid_carol").await;
    let attempts = futures_join(&handle, 3).await;
    assert_eq!(attempts.iter().filter(|r| r.is_ok()).count(), 1, "{attempts:?}");
    // Not current, not a member, no active device.
    assert_eq!(
        denied_epoch(commit(&handle, "uid_alice", 7).await).0,
        "epoch_not_current"
    );
    assert_eq!(
        denied_epoch(commit(&handle, "uid_dave", 3).await).0,
        "not_a_member_of_epoch"
    );
    let inactive = handle
        .run(queries::e2ee::Commit {
            actor: actor("uid_alice", "dev_unknown"),
            channel: cid("ch_secret"),
            epoch_id: 3,
            commit_payload: "p".into(),
            signature: "s".into(),
            now: NOW,
        })
        .await;
    assert_eq!(code(inactive), "device_not_active");
    // The stored commit is what the winner sent, fetchable by members of it or the epoch before.
    let stored = handle
        .run(queries::e2ee::FetchCommit {
            actor: actor("uid_bob", "dev_bob"),
            channel: cid("ch_secret"),
            epoch_id: 2,
        })
        .await
        .unwrap();
    assert!(stored.commit_payload.starts_with("commit_2_"));
    let carol_fetch = handle
        .run(queries::e2ee::FetchCommit {
            actor: actor("uid_carol", "dev_carol"),
            channel: cid("ch_secret"),
            epoch_id: 1,
        })
        .await;
    assert_eq!(code(carol_fetch), "not_a_member_of_epoch");
    let not_committed = handle
        .run(queries::e2ee::FetchCommit {
            actor: actor("uid_alice", "dev_alice"),
            channel: cid("ch_secret"),
            epoch_id: 4,
        })
        .await;
    assert_eq!(code(not_committed), "epoch_commit");
}

/// Alice, Bob and Carol commit epoch 3 at once.
async fn futures_join(
    handle: &StorageHandle,
    epoch: i64,
) -> Vec<Result<openchat_storage::e2ee::Committed, StorageError>> {
    let (a, b, c) = tokio::join!(
        commit(handle, "uid_alice", epoch),
        commit(handle, "uid_bob", epoch),
        commit(handle, "uid_carol", epoch)
    );
    vec![a, b, c]
}

async fn posts_need_a_member_an_active_device_the_current_epoch_and_its_commit(fixture: Fixture) {
    let handle = setup(&fixture).await;
    assert_eq!(
        denied_epoch(
            handle
                .run(queries::CreateMessage {
                    new: post("msg_e1", "uid_alice", 1)
                })
                .await
        ),
        ("epoch_commit_pending", Some(1))
    );
    commit(&handle, "uid_alice", 1).await.unwrap();
    let stored = handle
        .run(queries::CreateMessage {
            new: post("msg_e1", "uid_alice", 1),
        })
        .await
        .unwrap();
    assert_eq!(stored.body, "");
    assert_eq!(stored.envelope.unwrap().ciphertext, "ct_msg_e1");
    add(&handle, "uid_alice", "uid_bob").await;
    commit(&handle, "uid_alice", 2).await.unwrap();
    assert_eq!(
        denied_epoch(
            handle
                .run(queries::CreateMessage {
                    new: post("msg_e2", "uid_alice", 1)
                })
                .await
        ),
        ("epoch_stale", Some(2))
    );
    assert_eq!(
        denied_epoch(
            handle
                .run(queries::CreateMessage {
                    new: post("msg_e3", "uid_carol", 2)
                })
                .await
        ),
        ("not_a_member_of_epoch", Some(2))
    );
    let mut other_device = post("msg_e4", "uid_bob", 2);
    other_device.envelope.as_mut().unwrap().sender_device_id = "dev_alice".into();
    assert_eq!(
        denied_epoch(handle.run(queries::CreateMessage { new: other_device }).await).0,
        "device_not_active"
    );
    let mut plaintext = post("msg_e5", "uid_bob", 2);
    plaintext.envelope = None;
    plaintext.body = "hello".into();
    assert!(matches!(
        handle.run(queries::CreateMessage { new: plaintext }).await,
        Err(StorageError::Invalid {
            code: "plaintext_not_allowed",
            ..
        })
    ));
    let mut in_plain = post("msg_e6", "uid_bob", 2);
    in_plain.channel = cid("ch_general");
    assert!(matches!(
        handle.run(queries::CreateMessage { new: in_plain }).await,
        Err(StorageError::Invalid {
            code: "envelope_not_allowed",
            ..
        })
    ));
    assert!(
        handle
            .run(queries::CreateMessage {
                new: post("msg_e7", "uid_bob", 2)
            })
            .await
            .is_ok()
    );
}

async fn history_shows_each_reader_only_the_epochs_they_belonged_to(fixture: Fixture) {
    let handle = setup(&fixture).await;
    commit(&handle, "uid_alice", 1).await.unwrap();
    handle
        .run(queries::CreateMessage {
            new: post("msg_before_bob", "uid_alice", 1),
        })
        .await
        .unwrap();
    add(&handle, "uid_alice", "uid_bob").await;
    commit(&handle, "uid_alice", 2).await.unwrap();
    handle
        .run(queries::CreateMessage {
            new: post("msg_with_bob", "uid_alice", 2),
        })
        .await
        .unwrap();
    handle
        .run(queries::CreateMessage {
            new: post("msg_from_bob", "uid_bob", 2),
        })
        .await
        .unwrap();
    handle
        .run(queries::e2ee::RemoveMember {
            actor: actor("uid_bob", "dev_bob"),
            channel: cid("ch_secret"),
            user: uid("uid_bob"),
            now: NOW,
        })
        .await
        .unwrap();
    commit(&handle, "uid_alice", 3).await.unwrap();
    handle
        .run(queries::CreateMessage {
            new: post("msg_after_bob", "uid_alice", 3),
        })
        .await
        .unwrap();
    assert_eq!(
        visible(&handle, "uid_alice").await.unwrap(),
        vec!["msg_before_bob", "msg_with_bob", "msg_from_bob", "msg_after_bob"]
    );
    assert_eq!(
        visible(&handle, "uid_bob").await.unwrap(),
        vec!["msg_with_bob", "msg_from_bob"]
    );
    assert!(matches!(
        visible(&handle, "uid_carol").await,
        Err(StorageError::Denied {
            denial: openchat_core::Denial::NotAMember,
            ..
        })
    ));
    // Without a viewer (the plain read path) an e2ee channel shows nothing.
    assert!(
        handle
            .run(queries::Messages {
                channel: cid("ch_secret"),
                page: PageRequest {
                    limit: 10,
                    before: None,
                    after: None
                },
                viewer: None
            })
            .await
            .is_err()
    );
    // Paging for Bob: one per page, the cursor skips what he may not see.
    let first = handle
        .run(queries::Messages {
            channel: cid("ch_secret"),
            page: PageRequest {
                limit: 1,
                before: None,
                after: None,
            },
            viewer: Some(uid("uid_bob")),
        })
        .await
        .unwrap();
    assert_eq!(first.messages[0].id.as_str(), "msg_from_bob");
    let second = handle
        .run(queries::Messages {
            channel: cid("ch_secret"),
            page: PageRequest {
                limit: 1,
                before: first.older_cursor,
                after: None,
            },
            viewer: Some(uid("uid_bob")),
        })
        .await
        .unwrap();
    assert_eq!(second.messages[0].id.as_str(), "msg_with_bob");
    assert_eq!(second.older_cursor, None, "nothing older that Bob may read");
}

async fn a_membership_change_abandons_an_uncommitted_epoch(fixture: Fixture) {
    let handle = setup(&fixture).await;
    commit(&handle, "uid_alice", 1).await.unwrap();
    add(&handle, "uid_alice", "uid_bob").await; // epoch 2, never committed
    add(&handle, "uid_alice", "uid_carol").await; // epoch 3
    assert_eq!(
        denied_epoch(commit(&handle, "uid_alice", 2).await),
        ("epoch_not_current", Some(3))
    );
    assert_eq!(
        denied_epoch(
            handle
                .run(queries::CreateMessage {
                    new: post("msg_x", "uid_bob", 2)
                })
                .await
        ),
        ("epoch_stale", Some(3))
    );
    assert!(commit(&handle, "uid_bob", 3).await.is_ok());
    let list = handle
        .run(queries::e2ee::Epochs {
            actor: actor("uid_alice", "dev_alice"),
            channel: cid("ch_secret"),
        })
        .await
        .unwrap();
    let committed: Vec<(i64, bool)> = list.epochs.iter().map(|e| (e.epoch_id, e.committed)).collect();
    assert_eq!(committed, vec![(1, true), (2, false), (3, true)]);
}

async fn devices_register_link_and_revoke(fixture: Fixture) {
    let handle = setup(&fixture).await;
    let second = register(&handle, "uid_alice", "dev_alice_phone").await;
    assert_eq!(
        second.status,
        DeviceStatus::Pending,
        "later devices wait for a link"
    );
    let exists = handle
        .run(queries::e2ee::RegisterDevice {
            user: uid("uid_bob"),
            device_id: "dev_alice".into(),
            device_pubkey: "pk".into(),
            device_name: None,
            limit: 10,
            now: NOW,
        })
        .await;
    assert_eq!(code(exists), "device_exists");
    let limited = handle
        .run(queries::e2ee::RegisterDevice {
            user: uid("uid_alice"),
            device_id: "dev_alice_3".into(),
            device_pubkey: "pk".into(),
            device_name: None,
            limit: 2,
            now: NOW,
        })
        .await;
    assert_eq!(code(limited), "device_limit");
    // Only the pending device may start a link; only an active one confirms.
    let start = |device: &str, id: &str, now: i64| queries::e2ee::LinkStart {
        actor: actor("uid_alice", device),
        request_id: id.into(),
        ttl: 600,
        now,
    };
    assert_eq!(
        code(handle.run(start("dev_alice", "lr_bad", NOW)).await),
        "device_not_pending"
    );
    handle.run(start("dev_alice_phone", "lr_1", NOW)).await.unwrap();
    let confirm = |device: &str, id: &str, now: i64| queries::e2ee::LinkConfirm {
        actor: actor("uid_alice", device),
        request_id: id.into(),
        approve: true,
        now,
    };
    assert_eq!(
        code(handle.run(confirm("dev_alice_phone", "lr_1", NOW)).await),
        "device_not_active"
    );
    assert_eq!(
        code(handle.run(confirm("dev_alice", "lr_1", NOW + 600)).await),
        "link_request_expired"
    );
    handle.run(start("dev_alice_phone", "lr_2", NOW)).await.unwrap();
    assert_eq!(
        code(handle.run(confirm("dev_alice", "lr_nope", NOW)).await),
        "link_request"
    );
    let linked = handle.run(confirm("dev_alice", "lr_2", NOW + 1)).await.unwrap();
    assert_eq!(linked.status, DeviceStatus::Active);
    assert_eq!(
        code(handle.run(confirm("dev_alice", "lr_2", NOW + 2)).await),
        "link_request",
        "used once"
    );
    let devices = handle
        .run(queries::e2ee::Devices {
            user: uid("uid_alice"),
        })
        .await
        .unwrap();
    assert_eq!(devices.len(), 2);
    // Revoking someone else's device: not found. One's own: revoked.
    let revoke = |user: &str, device: &str| queries::e2ee::RevokeDevice {
        user: uid(user),
        device_id: device.into(),
        now: NOW,
    };
    assert_eq!(
        code(handle.run(revoke("uid_bob", "dev_alice_phone")).await),
        "device"
    );
    let revoked = handle.run(revoke("uid_alice", "dev_alice_phone")).await.unwrap();
    assert_eq!(revoked.status, DeviceStatus::Revoked);
}

async fn key_packages_are_consumed_once_and_the_last_resort_is_kept(fixture: Fixture) {
    let handle = setup(&fixture).await;
    let stored = handle
        .run(queries::e2ee::PublishKeyPackages {
            actor: actor("uid_bob", "dev_bob"),
            key_packages: vec!["kp_1".into(), "kp_2".into()],
            last_resort: Some("kp_last".into()),
            now: NOW,
        })
        .await
        .unwrap();
    assert_eq!(stored, 3);
    let claim = || queries::e2ee::ClaimKeyPackages { user: uid("uid_bob") };
    let mut got = Vec::new();
    for _ in 0..4 {
        let packages = handle.run(claim()).await.unwrap();
        assert_eq!(packages.len(), 1);
        assert_eq!(packages[0].device_id, "dev_bob");
        got.push(packages[0].key_package.clone());
    }
    assert_eq!(got, vec!["kp_1", "kp_2", "kp_last", "kp_last"]);
    // Concurrent claims never hand out the same one-time package twice.
    handle
        .run(queries::e2ee::PublishKeyPackages {
            actor: actor("uid_bob", "dev_bob"),
            key_packages: vec!["kp_3".into(), "kp_4".into()],
            last_resort: None,
            now: NOW,
        })
        .await
        .unwrap();
    let (a, b) = tokio::join!(handle.run(claim()), handle.run(claim()));
    let mut pair: Vec<String> = [a, b]
        .into_iter()
        .map(|r| r.unwrap()[0].key_package.clone())
        .collect();
    pair.sort();
    assert_eq!(pair, vec!["kp_3", "kp_4"]);
    assert_eq!(
        code(
            handle
                .run(queries::e2ee::ClaimKeyPackages {
                    user: uid("uid_nobody")
                })
                .await
        ),
        "user"
    );
}

async fn key_envelopes_go_only_to_active_devices_of_members_of_their_epoch(fixture: Fixture) {
    let handle = setup(&fixture).await;
    add(&handle, "uid_alice", "uid_bob").await; // Bob from epoch 2
    add(&handle, "uid_alice", "uid_carol").await; // Carol from epoch 3
    register(&handle, "uid_bob", "dev_bob_new").await; // pending for now
    let publish = |epoch: i64, targets: &[&str]| queries::e2ee::PublishEnvelopes {
        actor: actor("uid_alice", "dev_alice"),
        channel: cid("ch_secret"),
        epoch_id: epoch,
        envelopes: targets
            .iter()
            .map(|t| EnvelopeIn {
                target_device_id: (*t).into(),
                encrypted_key_blob: format!("blob_{epoch}_{t}"),
            })
            .collect(),
        queue_max: QUEUE_MAX,
        now: NOW,
    };
    let out = handle
        .run(publish(2, &["dev_bob", "dev_carol", "dev_bob_new", "dev_ghost"]))
        .await
        .unwrap();
    assert_eq!(out.accepted, 1);
    assert_eq!(
        out.rejected,
        vec![
            ("dev_carol".to_owned(), "target_not_member_of_epoch"),
            ("dev_bob_new".to_owned(), "target_device_not_active"),
            ("dev_ghost".to_owned(), "target_device_not_active"),
        ]
    );
    // Bob's new device, once linked, can receive envelopes for his past epochs (rule 4).
    handle
        .run(queries::e2ee::LinkStart {
            actor: actor("uid_bob", "dev_bob_new"),
            request_id: "lr_bob".into(),
            ttl: 600,
            now: NOW,
        })
        .await
        .unwrap();
    handle
        .run(queries::e2ee::LinkConfirm {
            actor: actor("uid_bob", "dev_bob"),
            request_id: "lr_bob".into(),
            approve: true,
            now: NOW,
        })
        .await
        .unwrap();
    let out = handle.run(publish(2, &["dev_bob_new"])).await.unwrap();
    assert_eq!(out.accepted, 1);
    // Carol's devices never get envelopes for epochs before she joined.
    let out = handle.run(publish(1, &["dev_carol"])).await.unwrap();
    assert_eq!(
        out.rejected,
        vec![("dev_carol".to_owned(), "target_not_member_of_epoch")]
    );
    // A non-member of the epoch may not send its keys.
    let by_carol = handle
        .run(queries::e2ee::PublishEnvelopes {
            actor: actor("uid_carol", "dev_carol"),
            channel: cid("ch_secret"),
            epoch_id: 2,
            envelopes: Vec::new(),
            queue_max: QUEUE_MAX,
            now: NOW,
        })
        .await;
    assert_eq!(code(by_carol), "not_a_member_of_epoch");
    // Queue bound.
    let mut small = publish(3, &["dev_carol", "dev_carol"]);
    small.queue_max = 1;
    let out = handle.run(small).await.unwrap();
    assert_eq!(out.accepted, 1);
    assert_eq!(out.rejected, vec![("dev_carol".to_owned(), "target_queue_full")]);
    // Fetch: own device only, increasing ids; ack deletes.
    let fetch = |user: &str, device: &str, asked: &str| queries::e2ee::FetchEnvelopes {
        actor: actor(user, device),
        device_id: asked.into(),
        after: 0,
        limit: 100,
    };
    assert_eq!(
        code(handle.run(fetch("uid_carol", "dev_carol", "dev_bob")).await),
        "forbidden"
    );
    let bobs = handle.run(fetch("uid_bob", "dev_bob", "dev_bob")).await.unwrap();
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0].encrypted_key_blob, "blob_2_dev_bob");
    let deleted = handle
        .run(queries::e2ee::AckEnvelopes {
            actor: actor("uid_bob", "dev_bob"),
            device_id: "dev_bob".into(),
            up_to: bobs[0].envelope_id,
        })
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    // A revoked device receives nothing more (its queue is dropped, new ones refused).
    handle
        .run(queries::e2ee::RevokeDevice {
            user: uid("uid_bob"),
            device_id: "dev_bob_new".into(),
            now: NOW,
        })
        .await
        .unwrap();
    let out = handle.run(publish(2, &["dev_bob_new"])).await.unwrap();
    assert_eq!(
        out.rejected,
        vec![("dev_bob_new".to_owned(), "target_device_not_active")]
    );
    assert_eq!(
        code(handle.run(fetch("uid_bob", "dev_bob_new", "dev_bob_new")).await),
        "device_not_active"
    );
}

async fn backups_return_the_latest(fixture: Fixture) {
    let handle = setup(&fixture).await;
    assert_eq!(
        code(
            handle
                .run(queries::e2ee::LatestBackup { user: uid("uid_bob") })
                .await
        ),
        "backup"
    );
    for (id, blob) in [("bk_1", "first"), ("bk_2", "second"), ("bk_3", "third")] {
        handle
            .run(queries::e2ee::PutBackup {
                user: uid("uid_bob"),
                backup_id: id.into(),
                ciphertext_blob: blob.into(),
                kdf_metadata: "{\"alg\":\"argon2id\"}".into(),
                now: NOW,
            })
            .await
            .unwrap();
    }
    let latest = handle
        .run(queries::e2ee::LatestBackup { user: uid("uid_bob") })
        .await
        .unwrap();
    assert_eq!(
        (latest.backup_id.as_str(), latest.ciphertext_blob.as_str()),
        ("bk_3", "third")
    );
}

async fn challenges_are_single_use_and_sessions_end_with_their_device(fixture: Fixture) {
    let handle = setup(&fixture).await;
    let challenge = |id: &str, user: &str, device: &str, expires_at: i64| queries::e2ee::CreateChallenge {
        challenge: ChallengeRecord {
            challenge_id: id.into(),
            user_uid: uid(user),
            device_id: device.into(),
            nonce: format!("nonce_{id}"),
            expires_at,
        },
    };
    let open = |id: &str, user: &str, device: &str, key: &str, token: &str| queries::e2ee::OpenSession {
        challenge_id: id.into(),
        user: uid(user),
        device_id: device.into(),
        device_pubkey: key.into(),
        token_sha256: token.into(),
        ttl: 3600,
        device_limit: 10,
        now: NOW,
    };
    handle
        .run(challenge("ch_1", "uid_alice", "dev_alice", NOW + 60))
        .await
        .unwrap();
    let pending = handle
        .run(queries::e2ee::Challenge {
            challenge_id: "ch_1".into(),
            now: NOW,
        })
        .await
        .unwrap();
    assert_eq!(pending.challenge_id, "ch_1");
    let (device, session) = handle
        .run(open("ch_1", "uid_alice", "dev_alice", "pk_dev_alice", "tok_1"))
        .await
        .unwrap();
    assert_eq!(
        (device.status, session.scope.as_str()),
        (DeviceStatus::Active, "full")
    );
    // Replayed challenge, expired challenge, wrong key.
    assert_eq!(
        code(
            handle
                .run(open("ch_1", "uid_alice", "dev_alice", "pk_dev_alice", "tok_2"))
                .await
        ),
        "challenge_invalid"
    );
    handle
        .run(challenge("ch_old", "uid_alice", "dev_alice", NOW))
        .await
        .unwrap();
    assert_eq!(
        code(
            handle
                .run(open("ch_old", "uid_alice", "dev_alice", "pk_dev_alice", "tok_3"))
                .await
        ),
        "challenge_invalid"
    );
    handle
        .run(challenge("ch_2", "uid_alice", "dev_alice", NOW + 60))
        .await
        .unwrap();
    assert_eq!(
        code(
            handle
                .run(open("ch_2", "uid_alice", "dev_alice", "pk_other", "tok_4"))
                .await
        ),
        "device_key_mismatch"
    );
    // A new device of an existing user gets a link-scoped session.
    handle
        .run(challenge("ch_3", "uid_alice", "dev_alice_tab", NOW + 60))
        .await
        .unwrap();
    let (tab, tab_session) = handle
        .run(open("ch_3", "uid_alice", "dev_alice_tab", "pk_tab", "tok_tab"))
        .await
        .unwrap();
    assert_eq!(
        (tab.status, tab_session.scope.as_str()),
        (DeviceStatus::Pending, "link")
    );
    // Sessions: live, then revoked; a revoked device's sessions end with it.
    let lookup = |token: &str| queries::e2ee::Session {
        token_sha256: token.into(),
        now: NOW + 1,
    };
    let Some(live) = handle.run(lookup("tok_1")).await.unwrap() else {
        panic!()
    };
    assert_eq!(live.user_uid, uid("uid_alice"));
    handle
        .run(queries::e2ee::RevokeSession {
            token_sha256: "tok_1".into(),
            now: NOW,
        })
        .await
        .unwrap();
    assert_eq!(handle.run(lookup("tok_1")).await.unwrap(), None);
    handle
        .run(queries::e2ee::RevokeDevice {
            user: uid("uid_alice"),
            device_id: "dev_alice_tab".into(),
            now: NOW,
        })
        .await
        .unwrap();
    assert_eq!(handle.run(lookup("tok_tab")).await.unwrap(), None);
    let expired = queries::e2ee::Session {
        token_sha256: "tok_tab".into(),
        now: NOW + 7200,
    };
    assert_eq!(handle.run(expired).await.unwrap(), None);
    handle
        .run(challenge("ch_4", "uid_alice", "dev_alice_tab", NOW + 60))
        .await
        .unwrap();
    assert_eq!(
        code(
            handle
                .run(open("ch_4", "uid_alice", "dev_alice_tab", "pk_tab", "tok_5"))
                .await
        ),
        "device_revoked"
    );
}
