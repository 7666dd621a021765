//! Conformance suite, cluster part: a change and its events commit together or not at all,
//! events come back in order per node, relayed events are deleted, a number is never
//! handed out twice, and a join ticket is used once. Run on both backends.

#![allow(clippy::unwrap_used)]

mod support;

use openchat_core::{ChannelId, MessageId, UserUid, seed};
use openchat_storage::queries::{self, OutboxEvent, OutboxOrphans, OutboxPending, OutboxRelayed, Outboxed};
use openchat_storage::{MessageRecord, NewMessage, PageRequest, StorageError};
use support::Fixture;

const NOW: i64 = 1_790_000_000;

fn message(id: &str, channel: &str) -> NewMessage {
    NewMessage {
        id: MessageId::parse(id).unwrap(),
        channel: ChannelId::parse(channel).unwrap(),
        author: UserUid::parse("uid_ana").unwrap(),
        body: format!("body of {id}"),
        reply_to: None,
        attachments: Vec::new(),
        envelope: None,
        now: NOW,
    }
}

fn posted(node: &str, new: NewMessage) -> Outboxed<queries::CreateMessage> {
    Outboxed {
        query: queries::CreateMessage { new },
        node_id: node.into(),
        now: NOW,
        events: Box::new(|record: &MessageRecord| {
            vec![OutboxEvent {
                kind: "chat.message.created".into(),
                audience: format!("{{\"channel\":\"{}\"}}", record.channel_id),
                payload: format!("{{\"id\":\"{}\"}}", record.id),
            }]
        }),
    }
}

async fn seeded(fixture: &Fixture) {
    let seeded = fixture
        .handle()
        .run(queries::SeedFirstRun {
            seed: seed::default_community(),
            now: NOW - 3600,
        })
        .await;
    assert!(seeded.unwrap());
}

conformance!(
    a_change_and_its_events_commit_together,
    a_refused_change_leaves_no_event,
    relayed_events_are_deleted_and_numbers_never_reused,
    each_node_has_its_own_numbering,
    orphans_are_other_nodes_with_events_older_than_asked,
    a_ticket_is_used_once_and_forgotten_after_it_expires,
    two_nodes_posting_to_one_channel_at_once_never_collide,
);

async fn pending(fixture: &Fixture, node: &str) -> Vec<(i64, String, String)> {
    fixture
        .handle()
        .run(OutboxPending {
            node_id: node.into(),
            limit: 100,
        })
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.seq, r.event.kind, r.event.payload))
        .collect()
}

async fn seqs(fixture: &Fixture, node: &str) -> Vec<i64> {
    pending(fixture, node).await.into_iter().map(|e| e.0).collect()
}

async fn a_change_and_its_events_commit_together(fixture: Fixture) {
    seeded(&fixture).await;
    let handle = fixture.handle();
    let record = handle
        .run(posted("node-a", message("msg_o1", "ch_general")))
        .await
        .unwrap();
    assert_eq!(record.id.as_str(), "msg_o1");
    handle
        .run(posted("node-a", message("msg_o2", "ch_general")))
        .await
        .unwrap();
    assert_eq!(
        pending(&fixture, "node-a").await,
        vec![
            (1, "chat.message.created".into(), r#"{"id":"msg_o1"}"#.into()),
            (2, "chat.message.created".into(), r#"{"id":"msg_o2"}"#.into()),
        ]
    );
    let history = handle
        .run(queries::Messages {
            channel: ChannelId::parse("ch_general").unwrap(),
            page: PageRequest {
                limit: 100,
                before: None,
                after: None,
            },
            viewer: None,
        })
        .await
        .unwrap();
    assert!(history.messages.iter().any(|m| m.id.as_str() == "msg_o2"));
    fixture.finish().await;
}

async fn a_refused_change_leaves_no_event(fixture: Fixture) {
    seeded(&fixture).await;
    let handle = fixture.handle();
    // A voice channel takes no messages: the write fails, so its event must not exist.
    let refused = handle.run(posted("node-a", message("msg_v", "vc_general"))).await;
    assert!(
        matches!(refused, Err(StorageError::Invalid { .. })),
        "{refused:?}"
    );
    // A duplicate message id is refused, and leaves no event either.
    handle
        .run(posted("node-a", message("msg_d", "ch_general")))
        .await
        .unwrap();
    let duplicate = handle.run(posted("node-a", message("msg_d", "ch_general"))).await;
    assert!(duplicate.is_err());
    assert_eq!(pending(&fixture, "node-a").await.len(), 1);
    fixture.finish().await;
}

async fn relayed_events_are_deleted_and_numbers_never_reused(fixture: Fixture) {
    seeded(&fixture).await;
    let handle = fixture.handle();
    for n in 1..=3 {
        handle
            .run(posted("node-a", message(&format!("msg_r{n}"), "ch_general")))
            .await
            .unwrap();
    }
    let relayed = handle
        .run(OutboxRelayed {
            node_id: "node-a".into(),
            up_to: 2,
        })
        .await
        .unwrap();
    assert_eq!(relayed, 2);
    assert_eq!(seqs(&fixture, "node-a").await, vec![3]);
    handle
        .run(OutboxRelayed {
            node_id: "node-a".into(),
            up_to: 3,
        })
        .await
        .unwrap();
    assert!(pending(&fixture, "node-a").await.is_empty());
    // The outbox is empty, yet the next event gets 4: its NATS message id was never used.
    handle
        .run(posted("node-a", message("msg_r4", "ch_general")))
        .await
        .unwrap();
    assert_eq!(seqs(&fixture, "node-a").await, vec![4]);
    fixture.finish().await;
}

async fn each_node_has_its_own_numbering(fixture: Fixture) {
    seeded(&fixture).await;
    let handle = fixture.handle();
    handle
        .run(posted("node-a", message("msg_a1", "ch_general")))
        .await
        .unwrap();
    handle
        .run(posted("node-b", message("msg_b1", "ch_general")))
        .await
        .unwrap();
    handle
        .run(posted("node-a", message("msg_a2", "ch_general")))
        .await
        .unwrap();
    let a = seqs(&fixture, "node-a").await;
    let b = seqs(&fixture, "node-b").await;
    assert_eq!((a, b), (vec![1, 2], vec![1]));
    fixture.finish().await;
}

async fn orphans_are_other_nodes_with_events_older_than_asked(fixture: Fixture) {
    seeded(&fixture).await;
    let handle = fixture.handle();
    for (node, id) in [("node-a", "msg_o1"), ("node-c", "msg_o2"), ("node-b", "msg_o3")] {
        handle.run(posted(node, message(id, "ch_general"))).await.unwrap();
    }
    let orphans = |stored_before, limit| OutboxOrphans {
        node_id: "node-a".into(),
        stored_before,
        limit,
    };
    assert_eq!(
        handle.run(orphans(NOW + 1, 10)).await.unwrap(),
        ["node-b", "node-c"],
        "never the asking node itself"
    );
    assert!(
        handle.run(orphans(NOW, 10)).await.unwrap().is_empty(),
        "not old enough"
    );
    assert_eq!(handle.run(orphans(NOW + 1, 1)).await.unwrap(), ["node-b"]);
    handle
        .run(OutboxRelayed {
            node_id: "node-b".into(),
            up_to: 1,
        })
        .await
        .unwrap();
    assert_eq!(handle.run(orphans(NOW + 1, 10)).await.unwrap(), ["node-c"]);
    fixture.finish().await;
}

async fn a_ticket_is_used_once_and_forgotten_after_it_expires(fixture: Fixture) {
    let handle = fixture.handle();
    let use_ticket = |jti: &str, expires_at, now| queries::UseTicket {
        jti: jti.into(),
        expires_at,
        now,
    };
    assert!(
        handle.run(use_ticket("t-1", NOW + 60, NOW)).await.unwrap(),
        "first use"
    );
    assert!(
        !handle.run(use_ticket("t-1", NOW + 60, NOW + 1)).await.unwrap(),
        "replayed"
    );
    assert!(handle.run(use_ticket("t-2", NOW + 60, NOW + 1)).await.unwrap());
    // Once expired the record goes (the ticket itself is refused as expired before this).
    assert!(handle.run(use_ticket("t-1", NOW + 200, NOW + 61)).await.unwrap());
    let too_long = "x".repeat(65);
    assert!(handle.run(use_ticket(&too_long, NOW, NOW)).await.is_err());
    fixture.finish().await;
}

/// Two storage threads on one database (two nodes) post to one channel at once: every post
/// commits, and the channel's numbering stays dense and unique.
async fn two_nodes_posting_to_one_channel_at_once_never_collide(fixture: Fixture) {
    seeded(&fixture).await;
    let config = fixture.config.clone();
    let (second, thread) = tokio::task::spawn_blocking(move || openchat_storage::start(config))
        .await
        .unwrap()
        .unwrap();
    let nodes = [fixture.handle().clone(), second];
    let mut posts = tokio::task::JoinSet::new();
    for n in 0..40 {
        let handle = nodes[n % 2].clone();
        posts.spawn(async move {
            handle
                .run(posted(
                    if n % 2 == 0 { "node-a" } else { "node-b" },
                    message(&format!("msg_c{n}"), "ch_general"),
                ))
                .await
        });
    }
    while let Some(result) = posts.join_next().await {
        result.unwrap().expect("no post collides with another node's");
    }
    let count = fixture
        .raw_i64("SELECT COUNT(*) FROM messages WHERE channel_id = 'ch_general' AND id LIKE 'msg_c%'")
        .await;
    let distinct = fixture
        .raw_i64("SELECT COUNT(DISTINCT seq) FROM messages WHERE channel_id = 'ch_general'")
        .await;
    let total = fixture
        .raw_i64("SELECT COUNT(*) FROM messages WHERE channel_id = 'ch_general'")
        .await;
    let top = fixture
        .raw_i64("SELECT MAX(seq) FROM messages WHERE channel_id = 'ch_general'")
        .await;
    assert_eq!(count, 40);
    assert_eq!((distinct, top + 1), (total, total), "numbers unique and dense");
    drop(nodes);
    let stopped = tokio::task::spawn_blocking(move || thread.shutdown(std::time::Duration::from_secs(10)));
    assert!(
        stopped.await.unwrap().is_ok(),
        "the second node's store stops cleanly"
    );
    fixture.finish().await;
}
