//! The storage conformance suite: every behaviour here is written once and run against
//! both backends (`sqlite::*` always, `postgres::*` when `OPENCHAT_TEST_DATABASE_URL` is
//! set; under `CI=true` it must be).

#![allow(clippy::unwrap_used)]

mod support;

use openchat_core::settings::ServerSettings;
use openchat_core::{ChannelKind, MemberStatus, ServerId, UserUid, seed};
use openchat_storage::queries;
use openchat_storage::{SCHEMA_VERSION, StorageError};
use support::Fixture;

const NOW: i64 = 1_790_000_000;

fn sid(raw: &str) -> ServerId {
    ServerId::parse(raw).unwrap()
}

conformance!(
    fresh_store_has_no_servers_and_no_instance_name,
    seeding_writes_the_default_community_in_order,
    seeding_happens_once_across_restarts,
    seeded_messages_keep_their_relative_ages,
    instance_reports_the_seed_name_and_primary_server,
    unknown_server_is_not_found_everywhere,
    settings_update_is_durable_across_restart,
    settings_update_of_unknown_server_changes_nothing,
    database_newer_than_the_binary_is_refused,
    a_newer_database_that_only_added_opens_for_a_rolling_upgrade,
    many_concurrent_callers_all_get_answers,
    handle_works_outside_any_tokio_runtime,
    requests_after_shutdown_are_unavailable_not_hung,
);

async fn fresh_store_has_no_servers_and_no_instance_name(fixture: Fixture) {
    let handle = fixture.handle();
    handle.run(queries::Ping).await.unwrap();
    let instance = handle.run(queries::Instance).await.unwrap();
    assert_eq!(instance.name, None);
    assert_eq!(instance.primary_server, None);
    assert!(
        handle
            .run(queries::Directory {
                viewer: None,
                limit: 100
            })
            .await
            .unwrap()
            .is_empty()
    );
    fixture.finish().await;
}

async fn seeding_writes_the_default_community_in_order(fixture: Fixture) {
    let handle = fixture.handle();
    assert!(
        handle
            .run(queries::SeedFirstRun {
                seed: seed::default_community(),
                now: NOW
            })
            .await
            .unwrap()
    );
    let expected = seed::default_community();

    let directory = handle
        .run(queries::Directory {
            viewer: None,
            limit: 100,
        })
        .await
        .unwrap();
    let ids: Vec<_> = directory.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["srv_harbor", "srv_testlab"]);
    assert_eq!(directory[0].display_name, "Harbor Guild");
    assert_eq!(directory[0].icon_text, "HG");
    assert_eq!(directory[1].display_name, "TestLab Server");
    assert_eq!(directory[0].banner_preset, "ocean");
    assert_eq!(
        handle
            .run(queries::Directory {
                viewer: None,
                limit: 1
            })
            .await
            .unwrap()
            .len(),
        1,
        "the limit is applied"
    );

    for server in &expected.servers {
        let layout = handle
            .run(queries::Layout {
                server: sid(server.id),
            })
            .await
            .unwrap();
        assert_eq!(layout.len(), server.groups.len());
        for (got, want) in layout.iter().zip(&server.groups) {
            assert_eq!(got.id.as_str(), want.id);
            assert_eq!(got.label, want.label);
            assert_eq!(got.kind, want.kind);
            let got_channels: Vec<_> = got
                .channels
                .iter()
                .map(|c| (c.id.as_str(), c.name.as_str(), c.kind))
                .collect();
            let want_channels: Vec<_> = want.channels.iter().map(|c| (c.id, c.name, want.kind)).collect();
            assert_eq!(got_channels, want_channels);
        }
        let members = handle
            .run(queries::Members {
                server: sid(server.id),
            })
            .await
            .unwrap();
        let got: Vec<_> = members
            .iter()
            .map(|m| (m.id.as_str(), m.name.as_str(), m.status))
            .collect();
        let want: Vec<_> = server.members.iter().map(|m| (m.id, m.name, m.status)).collect();
        assert_eq!(got, want);
    }
    let harbor = handle
        .run(queries::Layout {
            server: sid("srv_harbor"),
        })
        .await
        .unwrap();
    assert_eq!(harbor[2].kind, ChannelKind::Voice);
    assert_eq!(
        handle
            .run(queries::Members {
                server: sid("srv_harbor")
            })
            .await
            .unwrap()[3]
            .status,
        MemberStatus::Dnd
    );
    fixture.finish().await;
}

async fn seeding_happens_once_across_restarts(mut fixture: Fixture) {
    assert!(
        fixture
            .handle()
            .run(queries::SeedFirstRun {
                seed: seed::default_community(),
                now: NOW
            })
            .await
            .unwrap()
    );
    assert!(
        !fixture
            .handle()
            .run(queries::SeedFirstRun {
                seed: seed::default_community(),
                now: NOW + 5
            })
            .await
            .unwrap()
    );
    fixture.restart().await;
    assert!(
        !fixture
            .handle()
            .run(queries::SeedFirstRun {
                seed: seed::default_community(),
                now: NOW + 10
            })
            .await
            .unwrap()
    );
    assert_eq!(
        fixture
            .handle()
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
        fixture
            .handle()
            .run(queries::Layout {
                server: sid("srv_harbor")
            })
            .await
            .unwrap()
            .len(),
        3
    );
    // Even with every server gone, a store that was seeded is never seeded again.
    fixture.raw("DELETE FROM servers").await;
    assert!(
        !fixture
            .handle()
            .run(queries::SeedFirstRun {
                seed: seed::default_community(),
                now: NOW + 20
            })
            .await
            .unwrap()
    );
    assert!(
        fixture
            .handle()
            .run(queries::Directory {
                viewer: None,
                limit: 100
            })
            .await
            .unwrap()
            .is_empty()
    );
    fixture.finish().await;
}

async fn seeded_messages_keep_their_relative_ages(fixture: Fixture) {
    fixture
        .handle()
        .run(queries::SeedFirstRun {
            seed: seed::default_community(),
            now: NOW,
        })
        .await
        .unwrap();
    // Messages have no read request yet (the chat API adds one); check the rows directly.
    assert_eq!(fixture.raw_i64("SELECT COUNT(*) FROM messages").await, 6);
    assert_eq!(
        fixture
            .raw_i64("SELECT created_at FROM messages WHERE id = 'msg_seed_01'")
            .await,
        NOW - 30 * 60
    );
    assert_eq!(
        fixture
            .raw_i64("SELECT created_at FROM messages WHERE id = 'msg_tl_11'")
            .await,
        NOW - 9 * 60
    );
    assert_eq!(
        fixture
            .raw_i64("SELECT seq FROM messages WHERE id = 'msg_seed_02'")
            .await,
        1
    );
    fixture.finish().await;
}

async fn instance_reports_the_seed_name_and_primary_server(fixture: Fixture) {
    fixture
        .handle()
        .run(queries::SeedFirstRun {
            seed: seed::default_community(),
            now: NOW,
        })
        .await
        .unwrap();
    let instance = fixture.handle().run(queries::Instance).await.unwrap();
    assert_eq!(instance.name.as_deref(), Some("OpenChat Harbor"));
    let primary = instance.primary_server.unwrap();
    assert_eq!(primary.id.as_str(), "srv_harbor");
    assert_eq!(primary.created_at, NOW);
    fixture.finish().await;
}

async fn unknown_server_is_not_found_everywhere(fixture: Fixture) {
    let handle = fixture.handle();
    handle
        .run(queries::SeedFirstRun {
            seed: seed::default_community(),
            now: NOW,
        })
        .await
        .unwrap();
    let missing = sid("srv_missing");
    assert_eq!(
        handle
            .run(queries::Layout {
                server: missing.clone()
            })
            .await,
        Err(StorageError::NotFound("server"))
    );
    assert_eq!(
        handle
            .run(queries::Members {
                server: missing.clone()
            })
            .await,
        Err(StorageError::NotFound("server"))
    );
    assert_eq!(
        handle.run(queries::Server { server: missing }).await,
        Err(StorageError::NotFound("server"))
    );
    fixture.finish().await;
}

async fn settings_update_is_durable_across_restart(mut fixture: Fixture) {
    fixture
        .handle()
        .run(queries::SeedFirstRun {
            seed: seed::default_community(),
            now: NOW,
        })
        .await
        .unwrap();
    let settings = ServerSettings::parse("Harbor Renamed", "A quieter harbor", "gold").unwrap();
    let by = UserUid::parse("uid_0badcafe").unwrap();
    let updated = fixture
        .handle()
        .run(queries::UpdateSettings {
            server: sid("srv_harbor"),
            settings,
            by: by.clone(),
            now: NOW + 60,
        })
        .await
        .unwrap();
    assert_eq!(updated.display_name, "Harbor Renamed");
    assert_eq!(updated.updated_at, NOW + 60);
    fixture.restart().await;
    let server = fixture
        .handle()
        .run(queries::Server {
            server: sid("srv_harbor"),
        })
        .await
        .unwrap();
    assert_eq!(server.display_name, "Harbor Renamed");
    assert_eq!(server.description, "A quieter harbor");
    assert_eq!(server.banner_preset, "gold");
    assert_eq!(server.updated_by_uid, Some(by));
    assert_eq!(server.created_at, NOW, "creation time is untouched");
    fixture.finish().await;
}

async fn settings_update_of_unknown_server_changes_nothing(fixture: Fixture) {
    let handle = fixture.handle();
    handle
        .run(queries::SeedFirstRun {
            seed: seed::default_community(),
            now: NOW,
        })
        .await
        .unwrap();
    let before = handle
        .run(queries::Directory {
            viewer: None,
            limit: 100,
        })
        .await
        .unwrap();
    let settings = ServerSettings::parse("Nope", "", "").unwrap();
    let by = UserUid::parse("uid_00000001").unwrap();
    assert_eq!(
        handle
            .run(queries::UpdateSettings {
                server: sid("srv_nope"),
                settings,
                by,
                now: NOW
            })
            .await,
        Err(StorageError::NotFound("server"))
    );
    assert_eq!(
        handle
            .run(queries::Directory {
                viewer: None,
                limit: 100
            })
            .await
            .unwrap(),
        before
    );
    fixture.finish().await;
}

async fn database_newer_than_the_binary_is_refused(mut fixture: Fixture) {
    fixture.stop().await;
    let future = SCHEMA_VERSION + 1;
    fixture
        .raw(&format!(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ({future}, 'future', 0)"
        ))
        .await;
    match fixture.start().await {
        Err(StorageError::SchemaTooNew { found, supported }) => {
            assert_eq!((found, supported), (future, SCHEMA_VERSION));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    fixture
        .raw(&format!("DELETE FROM schema_migrations WHERE version = {future}"))
        .await;
    fixture
        .start()
        .await
        .expect("the same database opens again once it is not newer");
    fixture.finish().await;
}

async fn a_newer_database_that_only_added_opens_for_a_rolling_upgrade(mut fixture: Fixture) {
    fixture.stop().await;
    let future = SCHEMA_VERSION + 1;
    // Release N+1 migrated and says release N (this binary) can still run on it.
    fixture
        .raw(&format!(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ({future}, 'future', 0);\
             INSERT INTO schema_readers (version, oldest_reader) VALUES ({future}, {SCHEMA_VERSION})"
        ))
        .await;
    fixture
        .start()
        .await
        .expect("release N runs beside N+1 on N+1's schema");
    fixture.stop().await;
    // A release that changed something N cannot know about says so: refused.
    fixture
        .raw(&format!(
            "UPDATE schema_readers SET oldest_reader = {future} WHERE version = {future}"
        ))
        .await;
    match fixture.start().await {
        Err(StorageError::SchemaTooNew { found, .. }) => assert_eq!(found, future),
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    fixture
        .raw(&format!(
            "DELETE FROM schema_readers WHERE version = {future};\
             DELETE FROM schema_migrations WHERE version = {future}"
        ))
        .await;
    fixture.start().await.expect("opens again");
    fixture.finish().await;
}

async fn many_concurrent_callers_all_get_answers(fixture: Fixture) {
    let handle = fixture.handle().clone();
    handle
        .run(queries::SeedFirstRun {
            seed: seed::default_community(),
            now: NOW,
        })
        .await
        .unwrap();
    // More callers than the queue holds: the surplus waits for room instead of failing.
    let callers = openchat_core::limits::STORAGE_QUEUE_DEPTH_MAX + 200;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..callers {
        let handle = handle.clone();
        tasks.spawn(async move {
            if i % 2 == 0 {
                handle
                    .run(queries::Layout {
                        server: sid("srv_testlab"),
                    })
                    .await
                    .map(|groups| groups.len())
            } else {
                handle
                    .run(queries::Members {
                        server: sid("srv_harbor"),
                    })
                    .await
                    .map(|members| members.len())
            }
        });
    }
    let mut answered = 0;
    while let Some(result) = tasks.join_next().await {
        let len = result.unwrap().unwrap();
        assert!(len == 2 || len == 4, "{len}");
        answered += 1;
    }
    assert_eq!(answered, callers);
    fixture.finish().await;
}

async fn handle_works_outside_any_tokio_runtime(fixture: Fixture) {
    let handle = fixture.handle().clone();
    handle
        .run(queries::SeedFirstRun {
            seed: seed::default_community(),
            now: NOW,
        })
        .await
        .unwrap();
    // A plain OS thread with a minimal executor stands in for a glommio shard: the handle
    // must not need a tokio reactor on the calling side.
    let layout = std::thread::spawn(move || {
        pollster::block_on(handle.run(queries::Layout {
            server: sid("srv_harbor"),
        }))
    })
    .join()
    .unwrap()
    .unwrap();
    assert_eq!(layout[0].channels[0].id.as_str(), "ch_general");
    fixture.finish().await;
}

async fn requests_after_shutdown_are_unavailable_not_hung(mut fixture: Fixture) {
    let handle = fixture.handle().clone();
    fixture.stop().await;
    assert!(matches!(
        handle.run(queries::Ping).await,
        Err(StorageError::Unavailable(_))
    ));
    fixture.start().await.unwrap();
    fixture.finish().await;
}
