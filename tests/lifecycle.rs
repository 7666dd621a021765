//! Durability and restarts of the real binary on both stores: a write survives SIGKILL,
//! seeding happens once across restarts, SIGTERM stops cleanly.

#![allow(clippy::unwrap_used)]

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Server, Store, client, stores};

fn get(server: &Server, path: &str) -> Value {
    let response = client().get(server.url(path)).send().unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().unwrap()
}

#[test]
fn settings_written_before_sigkill_are_read_back_after_restart() {
    for (store, _db) in stores() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path(), &store, &[]);
        let response = client()
            .put(server.url("/v1/servers/srv_testlab/settings"))
            .header("X-OpenChat-User-UID", "uid_12345678")
            .json(&json!({"display_name": "Durable Lab", "description": "survives kill -9", "banner_preset": "forest"}))
            .send()
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{store:?}");
        let written: Value = response.json().unwrap();
        assert_eq!(written["updated_by_uid"], "uid_12345678");
        // The 200 above means committed: kill without any shutdown code running.
        server.kill_hard();

        let server = Server::start(dir.path(), &store, &[]);
        let settings = get(&server, "/v1/servers/srv_testlab/settings");
        assert_eq!(
            settings,
            json!({"server_id": "srv_testlab", "display_name": "Durable Lab",
                   "description": "survives kill -9", "banner_preset": "forest"}),
            "{store:?}"
        );
        let directory = get(&server, "/v1/servers");
        assert_eq!(directory["servers"][1]["display_name"], "Durable Lab");
    }
}

#[test]
fn seeding_is_idempotent_across_restarts() {
    for (store, _db) in stores() {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Server::start(dir.path(), &store, &[]);
        assert!(
            server
                .log
                .iter()
                .any(|line| line.contains("seeded the default community")),
            "{store:?}"
        );
        let first_layout = get(&server, "/v1/servers/srv_harbor/channels");
        let first_directory = get(&server, "/v1/servers");
        let (status, _) = server.terminate();
        assert!(status.success());
        for _ in 0..2 {
            server = Server::start(dir.path(), &store, &[]);
            assert!(
                !server
                    .log
                    .iter()
                    .any(|line| line.contains("seeded the default community")),
                "{store:?}"
            );
            assert_eq!(get(&server, "/v1/servers/srv_harbor/channels"), first_layout);
            assert_eq!(get(&server, "/v1/servers"), first_directory);
            server.kill_hard();
        }
    }
}

#[test]
fn seed_none_leaves_the_store_empty() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &Store::Sqlite, &[("OPENCHAT_SEED", "none")]);
    assert_eq!(get(&server, "/v1/servers"), json!({"servers": []}));
    let capabilities = get(&server, "/v1/client/capabilities");
    assert_eq!(capabilities["server_id"], "");
    assert!(capabilities["features"].is_object());
}

#[test]
fn sigterm_stops_cleanly_and_checkpoints_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &Store::Sqlite, &[]);
    assert_eq!(
        client().get(server.url("/healthz")).send().unwrap().status(),
        StatusCode::OK
    );
    let (status, log) = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(log.iter().any(|line| line.contains("storage closed")), "{log:?}");
    // A clean close checkpoints the write-ahead log into the database file.
    let wal = dir.path().join("openchat.sqlite3-wal");
    assert!(
        !wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0,
        "WAL left behind"
    );
}
