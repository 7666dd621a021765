//! Tracing spans in the real binary's JSON log: the lines one request logs carry that
//! request's span (with its route template and status), a storage job's lines nest in it,
//! and no span field or line holds a user id, a client address or a ticket.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;

use serde_json::Value;
use support::{Server, Store, client};

const USER: &str = "uid_5ec2e7aa";

/// The JSON lines of the log that carry spans.
fn span_lines(log: &[String]) -> Vec<Value> {
    log.iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|value| value.get("spans").is_some())
        .collect()
}

#[test]
fn a_requests_log_lines_share_its_span_and_no_span_holds_an_identity_address_or_ticket() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &Store::Sqlite, &[("OPENCHAT_LOG", "debug")]);
    // An authed request that reads the store, twice, and a join ticket.
    for _ in 0..2 {
        let response = client()
            .get(server.url("/v1/profile/me"))
            .header("X-OpenChat-User-UID", USER)
            .header("X-OpenChat-Device-ID", "desktop_5ec2e7aa")
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let ticket = client()
        .post(server.url("/v1/rtc/channels/vc_general/join-ticket"))
        .header("X-OpenChat-User-UID", USER)
        .header("X-OpenChat-Device-ID", "desktop_5ec2e7aa")
        .json(&serde_json::json!({"server_id": "srv_harbor"}))
        .send()
        .unwrap();
    let ticket: Value = ticket.json().unwrap();
    let ticket = ticket["ticket"].as_str().map(str::to_owned);
    assert!(ticket.is_some(), "a join ticket was minted");
    let (status, log) = {
        let before = server.log.clone();
        let (status, rest) = server.terminate();
        (status, before.into_iter().chain(rest).collect::<Vec<String>>())
    };
    assert!(status.success());
    let lines = span_lines(&log);

    // Group by the outermost span when it is a request: its id.
    let mut by_request: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for line in &lines {
        let outer = &line["spans"][0];
        if outer["name"] == "request" {
            by_request
                .entry(outer["id"].as_u64().unwrap())
                .or_default()
                .push(line);
        }
    }
    let profile_requests: Vec<&Vec<&Value>> = by_request
        .values()
        .filter(|lines| lines.iter().any(|l| l["span"]["route"] == "/v1/profile/me"))
        .collect();
    assert_eq!(
        profile_requests.len(),
        2,
        "two profile requests, two spans: {by_request:?}"
    );
    for lines in profile_requests {
        // The storage job's line and the request's own line, in the same request span.
        assert!(
            lines
                .iter()
                .any(|l| l["message"] == "storage job" && l["spans"][1]["name"] == "storage"),
            "{lines:?}"
        );
        let end = lines.iter().find(|l| l["message"] == "request").unwrap();
        assert_eq!(end["span"]["status"], 200);
        assert_eq!(end["span"]["method"], "GET");
        assert!(end["span"]["micros"].as_u64().is_some());
        assert_eq!(
            end["span"]["peer"].as_str().map(str::len),
            Some(12),
            "the client address as a tag: {end}"
        );
    }

    // Nothing that identifies a person or grants access, anywhere in a line with spans.
    let mut secrets = vec![USER.to_owned(), "127.0.0.1".to_owned(), "5ec2e7aa".to_owned()];
    secrets.extend(ticket);
    for line in &lines {
        let text = line.to_string();
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{secret:?} reached the log: {text}"
            );
        }
    }
}
