//! Cluster mode (several nodes on one Postgres and one NATS): start-up rules, and a node's
//! NATS connection as `/readyz` reports it, through a NATS outage.

#![allow(clippy::unwrap_used)]

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::{NatsServer, PgDatabase, Server, Store, call, client, eventually, postgres_url};

fn readyz(server: &Server) -> (u16, Value) {
    let response = client().get(server.url("/readyz")).send().unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

#[test]
fn a_node_reports_nats_in_readyz_and_keeps_taking_writes_while_nats_is_down() {
    let Some(admin) = postgres_url() else { return };
    let Some(mut nats) = NatsServer::start() else {
        return;
    };
    let db = PgDatabase::create(&admin);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &Store::Postgres(db.url.clone()),
        &[("OPENCHAT_NATS_URL", &nats.url()), ("OPENCHAT_NODE_ID", "node-a")],
    );
    let ready = eventually("readyz with NATS connected", || {
        let (status, body) = readyz(&server);
        (status == 200).then_some(body)
    });
    assert_eq!(ready["store"], "postgres");
    assert_eq!(ready["node"], "node-a");
    assert_eq!(ready["nats"], "connected");

    nats.stop();
    let down = eventually("readyz saying NATS is down", || {
        let (status, body) = readyz(&server);
        (status == 503).then_some(body)
    });
    assert_eq!(down["code"], "nats_unavailable", "{down}");
    assert_eq!(down["retryable"], true, "{down}");
    // Postgres is the store of record: writes go on.
    let url = server.url("/v1/channels/ch_general/messages");
    let (status, posted) = call(
        Method::POST,
        &url,
        "uid_ana",
        Some(json!({"body": "while NATS is away"})),
    );
    assert_eq!(status, 201, "{posted}");

    nats.resume();
    eventually("readyz after NATS came back", || {
        let (status, body) = readyz(&server);
        (status == 200 && body["nats"] == "connected").then_some(())
    });
    let (status, history) = call(Method::GET, &url, "uid_ana", None);
    assert_eq!(status, 200);
    assert!(
        history["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["body"] == "while NATS is away"),
        "{history}"
    );
}
