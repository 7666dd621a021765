//! The real `openchatd` binary answers the front-door routes on both stores: health,
//! readiness, both capabilities paths, CORS on errors and preflights, metrics, body limits.

#![allow(clippy::unwrap_used)]

mod support;

use reqwest::StatusCode;
use serde_json::Value;
use support::{PgDatabase, Server, Store, client, postgres_url};

fn get_json(url: &str) -> (StatusCode, Value) {
    let response = client().get(url).send().unwrap();
    let status = response.status();
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "{url}"
    );
    (status, response.json().unwrap())
}

fn assert_cors(headers: &reqwest::header::HeaderMap) {
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert_eq!(
        headers["access-control-allow-headers"],
        "Content-Type, Authorization, If-Match, X-OpenChat-User-UID, X-OpenChat-Device-ID"
    );
    assert_eq!(
        headers["access-control-allow-methods"],
        "GET, POST, PUT, DELETE, OPTIONS"
    );
}

fn assert_error_envelope(body: &Value, code: &str, retryable: bool) {
    assert_eq!(body["code"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert_eq!(body["retryable"], retryable, "{body}");
}

enum Framing {
    /// `Content-Length: n`, and no body sent at all.
    Declared(usize),
    /// One chunk of n bytes of JSON whitespace, then the terminating chunk.
    Chunked(usize),
}

/// Sends one request over a raw socket; returns the status and the lower-cased response.
fn raw_request(addr: std::net::SocketAddr, method: &str, path: &str, framing: Framing) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let head = match framing {
        Framing::Declared(n) => format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {n}\r\n\r\n"
        ),
        Framing::Chunked(_) => {
            format!(
                "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
        }
    };
    stream.write_all(head.as_bytes()).unwrap();
    if let Framing::Chunked(n) = framing {
        let mut writer = stream.try_clone().unwrap();
        // Written from another thread: the server may stop reading once it has seen enough.
        std::thread::spawn(move || {
            let _ = writer.write_all(format!("{n:x}\r\n").as_bytes());
            let _ = writer.write_all(&vec![b' '; n]);
            let _ = writer.write_all(b"\r\n0\r\n\r\n");
        });
    }
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the JSON body has arrived (the server may keep the connection open).
    while !String::from_utf8_lossy(&response).contains("\"retryable\"") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(read) => response.extend_from_slice(&buf[..read]),
        }
    }
    let text = String::from_utf8_lossy(&response).to_lowercase();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn expected_commit() -> Option<String> {
    let output = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn check_capabilities(doc: &Value) {
    for key in [
        "server_name",
        "server_id",
        "api_version",
        "build_version",
        "build_commit",
        "user_uid_policy",
    ] {
        assert!(
            doc[key].as_str().is_some_and(|v| !v.is_empty()),
            "{key} must be a non-empty string: {doc}"
        );
    }
    assert_eq!(doc["server_id"], "srv_harbor");
    assert_eq!(doc["server_name"], "OpenChat Harbor");
    assert_eq!(doc["api_version"], "2026-02-14");
    assert_eq!(doc["build_version"], env!("OPENCHAT_BUILD_VERSION"));
    if let Some(commit) = expected_commit() {
        assert_eq!(doc["build_commit"], commit.as_str());
    }
    assert!(["server_scoped", "global", "either"].contains(&doc["user_uid_policy"].as_str().unwrap()));
    let modes = doc["identity_handshake_modes"]
        .as_array()
        .expect("identity_handshake_modes is an array");
    assert!(!modes.is_empty() && modes.iter().all(Value::is_string));
    for object in ["transport", "features", "limits", "security"] {
        assert!(doc[object].is_object(), "{object} must be an object: {doc}");
    }
    for flag in ["websocket", "sse", "polling"] {
        assert!(doc["transport"][flag].is_boolean(), "transport.{flag}");
    }
    for flag in [
        "messaging",
        "presence",
        "attachments",
        "notifications",
        "server_creation",
    ] {
        assert!(doc["features"][flag].is_boolean(), "features.{flag}");
    }
    assert_eq!(
        doc["limits"]["max_message_bytes"], 4096,
        "the configured value is reported"
    );
    assert_eq!(doc["limits"]["max_upload_bytes"], 52_428_800);
    assert_eq!(doc["limits"]["rate_limit_per_minute"], 180);
    assert_eq!(doc["limits"]["max_call_participants"], 200);
    assert!(doc["security"]["https_required"].is_boolean());
    // `profile` present means `display_name` must be an object (WIRE.md §3).
    if let Some(profile) = doc.get("profile") {
        assert!(profile["display_name"].is_object());
    }
    // Voice runs: the rtc block carries every object the client dereferences; simulcast is
    // advertised (layer selection is tested in media/tests/sfu_sim.rs).
    let rtc = &doc["rtc"];
    for object in ["features", "connection_policy", "subscribe_receive_policy"] {
        assert!(rtc[object].is_object(), "rtc.{object}: {doc}");
    }
    assert!(rtc["ice_servers"].is_array());
    assert!(
        rtc["signaling_url"]
            .as_str()
            .unwrap()
            .ends_with("/v1/rtc/signaling")
    );
    assert_eq!(rtc["features"]["voice"], true);
    assert_eq!(rtc["features"]["simulcast"], true);
}

fn exercise(store: &Store) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), store, &[("OPENCHAT_MAX_MESSAGE_BYTES", "4096")]);
    let http = client();

    let (status, body) = get_json(&server.url("/healthz"));
    assert_eq!(
        (status, body),
        (StatusCode::OK, serde_json::json!({"status": "ok"}))
    );

    let (status, body) = get_json(&server.url("/readyz"));
    assert_eq!(status, StatusCode::OK, "{body}");

    for path in ["/v1/client/capabilities", "/client/capabilities"] {
        let response = http.get(server.url(path)).send().unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_cors(response.headers());
        check_capabilities(&response.json().unwrap());
    }

    let response = http.get(server.url("/v1/definitely/not/here")).send().unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_cors(response.headers());
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_error_envelope(&response.json().unwrap(), "not_found", false);

    let response = http
        .request(reqwest::Method::OPTIONS, server.url("/v1/profile/me"))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_cors(response.headers());

    let response = http.post(server.url("/healthz")).send().unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_cors(response.headers());
    assert_error_envelope(&response.json().unwrap(), "method_not_allowed", false);

    let (status, body) = get_json(&server.url("/v1/servers/srv_nowhere/channels"));
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error_envelope(&body, "server_not_found", false);

    // Every route has a body limit. A declared oversize body is refused with 413 before it
    // is read; an undeclared (chunked) one is cut off at the limit and refused the same way.
    // Raw sockets, because an HTTP client may still be writing when the early answer comes.
    let (status, body) = raw_request(
        server.addr,
        "PUT",
        "/v1/servers/srv_harbor/settings",
        Framing::Declared(2 << 20),
    );
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("access-control-allow-origin: *"), "{body}");
    assert!(body.contains(r#""code":"payload_too_large""#), "{body}");
    let (status, body) = raw_request(
        server.addr,
        "PUT",
        "/v1/servers/srv_harbor/settings",
        Framing::Chunked(300 << 10),
    );
    assert_eq!(status, 413, "{body}");
    assert!(body.contains(r#""code":"payload_too_large""#), "{body}");
    let (status, _) = raw_request(server.addr, "GET", "/healthz", Framing::Declared(2 << 20));
    assert_eq!(status, 413, "GET routes have a body limit too");

    let response = http
        .put(server.url("/v1/servers/srv_harbor/settings"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_error_envelope(&response.json().unwrap(), "invalid_payload", false);

    let response = http
        .put(server.url("/v1/servers/srv_harbor/settings"))
        .json(&serde_json::json!({"display_name": "   ", "description": "", "banner_preset": "ocean"}))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let (status, directory) = get_json(&server.url("/v1/servers"));
    assert_eq!(status, StatusCode::OK);
    let servers = directory["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2);
    assert_eq!(servers[0]["server_id"], "srv_harbor");
    assert_eq!(servers[0]["trust_state"], "verified");
    assert_eq!(servers[0]["identity_handshake_strategy"], "challenge_signature");
    assert_eq!(servers[0]["user_identifier_policy"], "server_scoped");
    assert_eq!(servers[1]["icon_text"], "TL");

    let (status, members) = get_json(&server.url("/v1/servers/srv_harbor/members"));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        members["members"][3],
        serde_json::json!({"id": "mem_4", "name": "Calix", "status": "dnd"})
    );

    let metrics = http.get(server.url("/metrics")).send().unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = metrics.text().unwrap();
    assert!(
        text.contains(r#"openchat_http_requests_total{route="/healthz",method="GET",status="200"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"openchat_http_requests_total{route="unmatched",method="GET",status="404"} 1"#));
    assert!(text.contains("openchat_http_request_duration_seconds_bucket"));
    assert!(
        text.contains(r#"openchat_storage_request_duration_seconds_count{op="instance",outcome="ok"} 2"#),
        "{text}"
    );
    assert!(text.contains("openchat_build_info{"));
}

#[test]
fn front_door_answers_on_sqlite() {
    exercise(&Store::Sqlite);
}

#[test]
fn front_door_answers_on_postgres() {
    let Some(admin) = postgres_url() else { return };
    let db = PgDatabase::create(&admin);
    exercise(&Store::Postgres(db.url.clone()));
}
