//! The chat REST API of WIRE.md §2 against the real binary, on both stores: the client's
//! hydrate sequence, messages with replies and images, uploads across restarts, bad input,
//! authorization and rate limits.

#![allow(clippy::unwrap_used)]

mod support;

use reqwest::Method;
use reqwest::StatusCode;
use reqwest::blocking::multipart::{Form, Part};
use serde_json::{Value, json};
use support::{Server, Store, call, client, gif, png, stores, webp};

const ME: &str = "uid_0a1b2c3d";

fn is_rfc3339_z(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.len() == 20 && s.ends_with('Z') && s.as_bytes()[10] == b'T')
}

fn assert_profile_shape(profile: &Value) {
    for key in ["user_uid", "display_name", "avatar_mode", "updated_at"] {
        assert!(profile[key].is_string(), "{key}: {profile}");
    }
    for key in ["avatar_preset_id", "avatar_asset_id", "avatar_url"] {
        assert!(
            profile.get(key).is_some(),
            "{key} must always be present: {profile}"
        );
    }
    assert!(profile["profile_version"].as_i64().unwrap() >= 1);
    assert!(is_rfc3339_z(&profile["updated_at"]));
}

fn assert_message_shape(message: &Value) {
    for key in ["id", "channel_id", "author_uid", "body", "created_at"] {
        assert!(message[key].is_string(), "{key}: {message}");
    }
    assert!(is_rfc3339_z(&message["created_at"]));
}

fn upload_avatar(server: &Server, uid: &str, bytes: Vec<u8>, mime: &str) -> (StatusCode, Value) {
    let form = Form::new().part(
        "file",
        Part::bytes(bytes).file_name("avatar.img").mime_str(mime).unwrap(),
    );
    let response = client()
        .post(server.url("/v1/profile/avatar"))
        .header("X-OpenChat-User-UID", uid)
        .multipart(form)
        .send()
        .unwrap();
    (response.status(), response.json().unwrap())
}

fn post_images(
    server: &Server,
    channel: &str,
    uid: &str,
    body: &str,
    files: Vec<(Vec<u8>, &str, &str)>,
) -> (StatusCode, Value) {
    let mut form = Form::new().text("body", body.to_owned());
    for (bytes, name, mime) in files {
        let part = Part::bytes(bytes).file_name(name.to_owned());
        let part = if mime.is_empty() {
            part
        } else {
            part.mime_str(mime).unwrap()
        };
        form = form.part("files", part);
    }
    let response = client()
        .post(server.url(&format!("/v1/channels/{channel}/messages")))
        .header("X-OpenChat-User-UID", uid)
        .multipart(form)
        .send()
        .unwrap();
    let status = response.status();
    (status, response.json().unwrap())
}

/// WIRE.md §1.7, step by step, checking each response as the client parses it.
fn hydrate(store: &Store) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), store, &[]);
    // 1. capabilities
    let (status, caps) = call(Method::GET, &server.url("/v1/client/capabilities"), ME, None);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(caps["server_id"], "srv_harbor");
    assert_eq!(caps["profile"]["enabled"], true);
    assert_eq!(caps["features"]["messaging"], true);
    assert_eq!(caps["transport"]["websocket"], true);
    // 2. profile sync: GET me, upload avatar, PUT me with If-Match
    let (status, me) = call(Method::GET, &server.url("/v1/profile/me"), ME, None);
    assert_eq!(status, StatusCode::OK);
    assert_profile_shape(&me);
    assert_eq!(me["display_name"], "User 0a1b2c3d");
    let (status, avatar) = upload_avatar(&server, ME, png(64, 64), "image/png");
    assert_eq!(status, StatusCode::CREATED, "{avatar}");
    let asset = avatar["avatar_asset_id"].as_str().unwrap().to_owned();
    assert!(asset.starts_with("asset_") && asset.len() == 14, "{asset}");
    assert_eq!(
        avatar["avatar_url"],
        format!(
            "http://localhost:{}/v1/profile/avatar/{asset}",
            server.addr.port()
        )
    );
    assert_eq!(
        (avatar["width"].as_i64(), avatar["height"].as_i64()),
        (Some(64), Some(64))
    );
    let response = client()
        .put(server.url("/v1/profile/me"))
        .header("X-OpenChat-User-UID", ME)
        .header("If-Match", me["profile_version"].to_string())
        .json(&json!({"display_name": "Lyra Q", "avatar_mode": "uploaded", "avatar_preset_id": null, "avatar_asset_id": asset}))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let me: Value = response.json().unwrap();
    assert_profile_shape(&me);
    assert_eq!(
        (me["profile_version"].as_i64(), me["avatar_mode"].as_str()),
        (Some(2), Some("uploaded"))
    );
    let avatar_bytes = client()
        .get(
            me["avatar_url"]
                .as_str()
                .unwrap()
                .replace("localhost", "127.0.0.1"),
        )
        .send()
        .unwrap();
    assert_eq!(avatar_bytes.headers()["content-type"], "image/png");
    assert_eq!(avatar_bytes.bytes().unwrap().as_ref(), png(64, 64).as_slice());
    // 3. channels and members, without headers
    let channels: Value = client()
        .get(server.url("/v1/servers/srv_harbor/channels"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let first_text = channels["groups"][0]["channels"][0].clone();
    assert_eq!(
        (first_text["id"].as_str(), first_text["type"].as_str()),
        (Some("ch_general"), Some("text"))
    );
    let members = client()
        .get(server.url("/v1/servers/srv_harbor/members"))
        .send()
        .unwrap();
    assert!(members.status().is_success());
    // 5. own profile
    let (status, batch) = call(
        Method::GET,
        &server.url(&format!("/v1/profiles:batch?user_uid={ME}")),
        ME,
        None,
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(batch["profiles"][0]["display_name"], "Lyra Q");
    // 6. history, no headers
    let history: Value = client()
        .get(server.url("/v1/channels/ch_general/messages?limit=150"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(history["channel_id"], "ch_general");
    let messages = history["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    messages.iter().for_each(assert_message_shape);
    assert!(
        messages[0].get("reply_to").is_none() && messages[0].get("attachments").is_none(),
        "omitted when empty"
    );
    assert_eq!(history["next_cursor"], Value::Null);
    // 7. read ack, then the authors' profiles
    let (status, ack) = call(
        Method::GET,
        &server.url("/v1/channels/ch_general/read-ack"),
        ME,
        None,
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ack["read_ack"]["cursor_index"], 0);
    assert_eq!(ack["read_ack"]["user_uid"], ME);
    let authors = "user_uid=uid_seed_1&user_uid=uid_seed_2&user_uid=uid_seed_1&user_uid=";
    let (status, batch) = call(
        Method::GET,
        &server.url(&format!("/v1/profiles:batch?{authors}")),
        ME,
        None,
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        batch["profiles"].as_array().unwrap().len(),
        2,
        "deduplicated, empty skipped"
    );
    batch["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .for_each(assert_profile_shape);
    // The seeded authors are the seeded members (issue 15), not "User seed_1".
    let mut names: Vec<&str> = batch["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["display_name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["Lyra", "Orin"]);
    // 9. PUT read-ack with {} = up to the latest message
    let (status, put) = call(
        Method::PUT,
        &server.url("/v1/channels/ch_general/read-ack"),
        ME,
        Some(json!({})),
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(put["applied"], true);
    assert_eq!(put["read_ack"]["last_read_message_id"], "msg_seed_02");
    assert_eq!(put["read_ack"]["cursor_index"], 1);
    assert!(is_rfc3339_z(&put["read_ack"]["acked_at"]));
    let (_, stale) = call(
        Method::PUT,
        &server.url("/v1/channels/ch_general/read-ack"),
        ME,
        Some(json!({"last_read_message_id": "msg_seed_01"})),
    );
    assert_eq!(
        (
            stale["applied"].as_bool(),
            stale["read_ack"]["cursor_index"].as_i64()
        ),
        (Some(false), Some(1))
    );
}

#[test]
fn client_hydrate_sequence_works_on_both_stores() {
    for (store, _db) in stores() {
        hydrate(&store);
    }
}

#[test]
fn messages_with_replies_images_and_cursors_survive_sigkill() {
    for (store, _db) in stores() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path(), &store, &[]);
        let url = server.url("/v1/channels/ch_design/messages");
        let (status, created) = call(Method::POST, &url, ME, Some(json!({"body": "  first  "})));
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let first = created["message"].clone();
        assert_message_shape(&first);
        assert_eq!(first["body"], "first");
        assert!(first["id"].as_str().unwrap().starts_with("msg_"));
        let (status, reply) = call(
            Method::POST,
            &url,
            ME,
            Some(json!({"body": "second", "reply_to_message_id": first["id"]})),
        );
        assert_eq!(status, StatusCode::CREATED);
        let reply_to = &reply["message"]["reply_to"];
        assert_eq!(reply_to["message_id"], first["id"]);
        assert_eq!(
            (
                reply_to["preview_text"].as_str(),
                reply_to["is_unavailable"].as_bool()
            ),
            (Some("first"), Some(false))
        );
        let image = png(3, 2);
        let (status, with_images) = post_images(
            &server,
            "ch_design",
            ME,
            "look",
            vec![
                (image.clone(), "dir/shot.png", "image/png"),
                (gif(5, 7), "anim.gif", ""),
            ],
        );
        assert_eq!(status, StatusCode::CREATED, "{with_images}");
        let attachments = with_images["message"]["attachments"].as_array().unwrap().clone();
        assert_eq!(attachments.len(), 2);
        assert_eq!(attachments[0]["file_name"], "shot.png");
        assert_eq!(
            (
                attachments[0]["width"].as_i64(),
                attachments[0]["height"].as_i64()
            ),
            (Some(3), Some(2))
        );
        assert_eq!(
            attachments[1]["content_type"], "image/gif",
            "sniffed when undeclared"
        );
        let att_url = attachments[0]["url"].as_str().unwrap().to_owned();
        assert!(att_url.starts_with(&format!(
            "http://localhost:{}/v1/channels/ch_design/attachments/att_",
            server.addr.port()
        )));
        let local = att_url.replace("localhost", "127.0.0.1");

        // Cursor paging toward older messages (the seeded one is the oldest).
        let page: Value = client()
            .get(server.url("/v1/channels/ch_design/messages?limit=2"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(page["messages"].as_array().unwrap().len(), 2);
        let before = page["next_cursor"].as_str().unwrap().to_owned();
        let older: Value = client()
            .get(server.url(&format!(
                "/v1/channels/ch_design/messages?limit=2&before={before}"
            )))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let ids: Vec<&str> = older["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["msg_seed_11", first["id"].as_str().unwrap()]);
        assert_eq!(older["next_cursor"], Value::Null);

        // Acknowledged with 201: still there after SIGKILL, with identical image bytes.
        server.kill_hard();
        let server = Server::start(dir.path(), &store, &[]);
        let history: Value = client()
            .get(server.url("/v1/channels/ch_design/messages"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let bodies: Vec<&str> = history["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["body"].as_str().unwrap())
            .collect();
        assert_eq!(
            bodies,
            ["Design channel ready for discussion.", "first", "second", "look"],
            "{store:?}"
        );
        let local = local.replace(
            &format!(":{}", local.split(':').nth(2).unwrap().split('/').next().unwrap()),
            &format!(":{}", server.addr.port()),
        );
        let response = client().get(&local).send().unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{local}");
        assert_eq!(response.headers()["content-type"], "image/png");
        assert_eq!(response.headers()["cache-control"], "public, max-age=300");
        assert_eq!(response.headers()["access-control-allow-origin"], "*");
        assert_eq!(response.bytes().unwrap().as_ref(), image.as_slice());
        let wrong_channel = local.replace("/ch_design/", "/ch_general/");
        assert_eq!(
            client().get(&wrong_channel).send().unwrap().status(),
            StatusCode::NOT_FOUND
        );

        // Deleting: the author may; the message leaves the history.
        let id = first["id"].as_str().unwrap();
        let (status, _) = call(
            Method::DELETE,
            &server.url(&format!("/v1/channels/ch_design/messages/{id}")),
            ME,
            None,
        );
        assert_eq!(status, StatusCode::NO_CONTENT);
        let history: Value = client()
            .get(server.url("/v1/channels/ch_design/messages"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let second = history["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["body"] == "second")
            .unwrap()
            .clone();
        assert_eq!(second["reply_to"]["is_unavailable"], true);
    }
}

/// (method, path, body, expected status, expected code)
type Case = (Method, &'static str, Option<Value>, u16, &'static str);

#[test]
fn bad_input_gets_the_documented_status_and_code_and_stores_nothing() {
    for (store, _db) in stores() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path(), &store, &[("OPENCHAT_MAX_MESSAGE_BYTES", "64")]);
        let cases: Vec<Case> = vec![
            (
                Method::POST,
                "/v1/channels/ch_general/messages",
                Some(json!({"body": "   "})),
                400,
                "message_empty",
            ),
            (
                Method::POST,
                "/v1/channels/ch_general/messages",
                Some(json!({"body": 5})),
                400,
                "invalid_payload",
            ),
            (
                Method::POST,
                "/v1/channels/ch_general/messages",
                Some(json!({})),
                400,
                "invalid_payload",
            ),
            (
                Method::POST,
                "/v1/channels/ch_general/messages",
                Some(json!({"body": "x".repeat(65)})),
                413,
                "payload_too_large",
            ),
            (
                Method::POST,
                "/v1/channels/vc_general/messages",
                Some(json!({"body": "hi"})),
                400,
                "message_create_failed",
            ),
            (
                Method::POST,
                "/v1/channels/ch_nope/messages",
                Some(json!({"body": "hi"})),
                400,
                "message_create_failed",
            ),
            (
                Method::POST,
                "/v1/channels/ch_general/messages",
                Some(json!({"body": "hi", "reply_to_message_id": "msg_seed_11"})),
                400,
                "reply_target_not_found",
            ),
            (
                Method::GET,
                "/v1/channels/ch_nope/messages",
                None,
                404,
                "channel_not_found",
            ),
            (
                Method::GET,
                "/v1/channels/ch_general/messages?before=12",
                None,
                400,
                "invalid_query",
            ),
            (
                Method::GET,
                "/v1/channels/ch_general/attachments/att_nope",
                None,
                404,
                "attachment_not_found",
            ),
            (
                Method::GET,
                "/v1/channels/ch_general/mentions:resolve?query=a%20b",
                None,
                400,
                "invalid_query",
            ),
            (Method::GET, "/v1/profiles:batch", None, 400, "invalid_query"),
            (
                Method::GET,
                "/v1/profile/avatar/asset_nope",
                None,
                404,
                "avatar_asset_not_found",
            ),
            (
                Method::PUT,
                "/v1/profile/me",
                Some(json!({"display_name": "x", "avatar_mode": "generated", "avatar_preset_id": "mint"})),
                400,
                "display_name_invalid",
            ),
            (
                Method::PUT,
                "/v1/profile/me",
                Some(
                    json!({"display_name": "Okay", "avatar_mode": "generated", "avatar_preset_id": "preset_01"}),
                ),
                400,
                "avatar_mode_unsupported",
            ),
            (
                Method::PUT,
                "/v1/profile/me",
                Some(json!({"display_name": "Okay", "avatar_mode": "painted"})),
                400,
                "avatar_mode_unsupported",
            ),
            (
                Method::PUT,
                "/v1/profile/me",
                Some(
                    json!({"display_name": "Okay", "avatar_mode": "uploaded", "avatar_asset_id": "asset_00000000"}),
                ),
                400,
                "avatar_asset_not_found",
            ),
            (
                Method::PUT,
                "/v1/channels/ch_general/read-ack",
                Some(json!({"last_read_message_id": "msg_seed_11"})),
                404,
                "message_not_found",
            ),
            (
                Method::PUT,
                "/v1/servers/srv_harbor/settings",
                Some(json!({"display_name": ""})),
                400,
                "invalid_payload",
            ),
            (
                Method::PUT,
                "/v1/servers/srv_harbor/settings",
                Some(json!({"banner_preset": "neon"})),
                400,
                "invalid_payload",
            ),
            (
                Method::GET,
                "/v1/servers/srv_nope/settings",
                None,
                404,
                "server_not_found",
            ),
            (
                Method::POST,
                "/v1/servers/srv_harbor/channels",
                Some(json!({"name": "x", "type": "stage", "group_id": "grp_general"})),
                400,
                "invalid_channel_type",
            ),
            (
                Method::POST,
                "/v1/servers/srv_harbor/channels",
                Some(json!({"name": " ", "type": "text", "group_id": "grp_general"})),
                400,
                "invalid_payload",
            ),
            (
                Method::POST,
                "/v1/servers/srv_harbor/channels",
                Some(json!({"name": "x", "type": "text", "group_id": "grp_test_text"})),
                409,
                "category_not_found",
            ),
            (
                Method::POST,
                "/v1/servers/srv_harbor/categories",
                Some(json!({"name": "x"})),
                400,
                "invalid_payload",
            ),
            (
                Method::DELETE,
                "/v1/servers/srv_harbor/categories/grp_general",
                None,
                409,
                "category_not_empty",
            ),
            (
                Method::PUT,
                "/v1/servers/srv_harbor/categories/grp_nope",
                Some(json!({"name": "x"})),
                404,
                "category_not_found",
            ),
            (
                Method::PUT,
                "/v1/servers/srv_harbor/channel-layout",
                Some(json!({"groups": [{"id": "grp_general", "channel_ids": []}]})),
                400,
                "invalid_payload",
            ),
            (
                Method::POST,
                "/v1/servers",
                Some(json!({"display_name": ""})),
                400,
                "invalid_payload",
            ),
            (
                Method::POST,
                "/v1/servers/srv_harbor/ownership:claim",
                Some(json!({"claim_token": "nope"})),
                403,
                "forbidden",
            ),
            (
                Method::DELETE,
                "/v1/servers/srv_nope/membership",
                None,
                404,
                "server_not_found",
            ),
            (
                Method::DELETE,
                "/v1/channels/ch_general/messages/msg_nope",
                None,
                404,
                "message_not_found",
            ),
        ];
        for (method, path, body, status, code) in cases {
            let (got, answer) = call(method.clone(), &server.url(path), ME, body);
            assert_eq!(
                (got.as_u16(), answer["code"].as_str()),
                (status, Some(code)),
                "{method} {path}: {answer}"
            );
            assert!(answer["message"].is_string());
        }
        // Framing-level failures.
        let raw = |content_type: &str, body: Vec<u8>| {
            client()
                .post(server.url("/v1/channels/ch_general/messages"))
                .header("X-OpenChat-User-UID", ME)
                .header("content-type", content_type)
                .body(body)
                .send()
                .unwrap()
        };
        let response = raw("application/json", b"{\"body\": \"\xff\xfe\"}".to_vec());
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "invalid UTF-8");
        let response = raw(
            "multipart/form-data; boundary=XYZ",
            b"--XYZ\r\nContent-Disposition: form-data; name=\"body\"\r\n\r\nhi".to_vec(),
        );
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "malformed multipart");
        assert_eq!(response.json::<Value>().unwrap()["code"], "invalid_payload");
        let (status, answer) = post_images(
            &server,
            "ch_general",
            ME,
            "",
            vec![(b"<html>".to_vec(), "x.png", "image/png")],
        );
        assert_eq!(
            (status.as_u16(), answer["code"].as_str()),
            (400, Some("attachment_invalid_image"))
        );
        let (status, answer) = post_images(
            &server,
            "ch_general",
            ME,
            "",
            vec![(png(1, 1), "x.txt", "text/plain")],
        );
        assert_eq!(
            (status.as_u16(), answer["code"].as_str()),
            (415, Some("attachment_type_unsupported"))
        );
        let (status, answer) = post_images(
            &server,
            "ch_general",
            ME,
            "",
            vec![(webp(1, 1), "x.webp", "image/webp")],
        );
        assert_eq!(
            (status.as_u16(), answer["code"].as_str()),
            (415, Some("attachment_type_unsupported")),
            "webp is for avatars"
        );
        let five = (0..5).map(|_| (png(1, 1), "p.png", "image/png")).collect();
        let (status, answer) = post_images(&server, "ch_general", ME, "", five);
        assert_eq!(
            (status.as_u16(), answer["code"].as_str()),
            (400, Some("attachment_count_exceeded"))
        );
        let (status, answer) = upload_avatar(&server, ME, b"GIF89a".to_vec(), "image/gif");
        assert_eq!(
            (status.as_u16(), answer["code"].as_str()),
            (415, Some("avatar_type_unsupported"))
        );
        let (status, answer) = upload_avatar(&server, ME, png(2000, 10), "image/png");
        assert_eq!(
            (status.as_u16(), answer["code"].as_str()),
            (400, Some("avatar_dimensions_exceeded"))
        );
        // Just over the 2 MiB file limit, under the body limit: refused while reading.
        let (status, answer) = upload_avatar(&server, ME, vec![0u8; (2 << 20) + 100], "image/png");
        assert_eq!(
            (status.as_u16(), answer["code"].as_str()),
            (413, Some("avatar_too_large"))
        );
        let (status, answer) = upload_avatar(&server, ME, webp(512, 512), "image/webp");
        assert_eq!(status, StatusCode::CREATED, "webp avatars are accepted: {answer}");
        let response = client()
            .put(server.url("/v1/profile/me"))
            .header("X-OpenChat-User-UID", ME)
            .header("If-Match", "W/\"zero\"")
            .json(&json!({"display_name": "Okay", "avatar_mode": "generated", "avatar_preset_id": "mint"}))
            .send()
            .unwrap();
        assert_eq!(response.json::<Value>().unwrap()["code"], "invalid_if_match");
        let response = client()
            .put(server.url("/v1/profile/me"))
            .header("X-OpenChat-User-UID", ME)
            .header("If-Match", "7")
            .json(&json!({"display_name": "Okay", "avatar_mode": "generated", "avatar_preset_id": "mint"}))
            .send()
            .unwrap();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        let conflict: Value = response.json().unwrap();
        assert_eq!(
            (conflict["code"].as_str(), conflict["retryable"].as_bool()),
            (Some("profile_conflict"), Some(true))
        );

        // Nothing was stored by any refused request.
        let history: Value = client()
            .get(server.url("/v1/channels/ch_general/messages"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(history["messages"].as_array().unwrap().len(), 2, "{store:?}");
        let (_, me) = call(Method::GET, &server.url("/v1/profile/me"), ME, None);
        assert_eq!(me["profile_version"], 1);
        let layout: Value = client()
            .get(server.url("/v1/servers/srv_harbor/channels"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(layout["groups"].as_array().unwrap().len(), 3);
        let blobs: Vec<_> = walk(&dir.path().join("blobs"));
        assert_eq!(
            blobs.len(),
            1,
            "only the accepted webp avatar left a blob: {blobs:?}"
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn an_ownership_claim_restricts_management_to_the_owner() {
    for (store, _db) in stores() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path(), &store, &[]);
        let (status, created) = call(
            Method::POST,
            &server.url("/v1/servers"),
            "uid_directory",
            Some(json!({"display_name": "Night Owls", "description": "", "banner_preset": "ocean"})),
        );
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let id = created["server"]["server_id"].as_str().unwrap().to_owned();
        assert_eq!(created["server"]["icon_text"], "NO");
        let token = created["ownership_claim"]["token"].as_str().unwrap().to_owned();
        assert!(is_rfc3339_z(&created["ownership_claim"]["expires_at"]));
        let owner = "uid_0000aaaa";
        let (status, claim) = call(
            Method::POST,
            &server.url(&format!("/v1/servers/{id}/ownership:claim")),
            owner,
            Some(json!({"claim_token": token})),
        );
        assert_eq!(status, StatusCode::OK, "{claim}");
        assert_eq!(claim["owner_user_uid"], owner);
        let layout: Value = client()
            .get(server.url(&format!("/v1/servers/{id}/channels")))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let group = layout["groups"][0]["id"].as_str().unwrap().to_owned();
        let channel = layout["groups"][0]["channels"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let (status, owners_message) = call(
            Method::POST,
            &server.url(&format!("/v1/channels/{channel}/messages")),
            owner,
            Some(json!({"body": "rules"})),
        );
        assert_eq!(status, StatusCode::CREATED);
        let intruder = "uid_0000bbbb";
        let settings = json!({"display_name": "Taken"});
        let new_channel = json!({"name": "side", "type": "text", "group_id": group});
        let message_path = format!(
            "/v1/channels/{channel}/messages/{}",
            owners_message["message"]["id"].as_str().unwrap()
        );
        for (method, path, body) in [
            (
                Method::PUT,
                format!("/v1/servers/{id}/settings"),
                Some(settings.clone()),
            ),
            (
                Method::POST,
                format!("/v1/servers/{id}/channels"),
                Some(new_channel.clone()),
            ),
            (Method::DELETE, message_path.clone(), None),
        ] {
            let (status, answer) = call(method.clone(), &server.url(&path), intruder, body);
            assert_eq!(
                (status, answer["code"].as_str()),
                (StatusCode::FORBIDDEN, Some("forbidden")),
                "{method} {path}"
            );
        }
        // The intruder may still delete their own message.
        let (_, own) = call(
            Method::POST,
            &server.url(&format!("/v1/channels/{channel}/messages")),
            intruder,
            Some(json!({"body": "hi"})),
        );
        let own_path = format!(
            "/v1/channels/{channel}/messages/{}",
            own["message"]["id"].as_str().unwrap()
        );
        assert_eq!(
            call(Method::DELETE, &server.url(&own_path), intruder, None).0,
            StatusCode::NO_CONTENT
        );
        // The owner's requests succeed.
        assert_eq!(
            call(
                Method::PUT,
                &server.url(&format!("/v1/servers/{id}/settings")),
                owner,
                Some(settings)
            )
            .0,
            StatusCode::OK
        );
        assert_eq!(
            call(
                Method::POST,
                &server.url(&format!("/v1/servers/{id}/channels")),
                owner,
                Some(new_channel)
            )
            .0,
            StatusCode::CREATED
        );
        assert_eq!(
            call(Method::DELETE, &server.url(&message_path), owner, None).0,
            StatusCode::NO_CONTENT
        );
        // A second claim by someone else is a conflict.
        let (status, _) = call(
            Method::POST,
            &server.url(&format!("/v1/servers/{id}/ownership:claim")),
            intruder,
            Some(json!({"claim_token": token})),
        );
        assert_eq!(status, StatusCode::CONFLICT);
        // Leaving hides the server from that user's directory only.
        let (status, left) = call(
            Method::DELETE,
            &server.url(&format!("/v1/servers/{id}/membership")),
            intruder,
            None,
        );
        assert_eq!((status, left["left"].as_bool()), (StatusCode::OK, Some(true)));
        let (_, theirs) = call(Method::GET, &server.url("/v1/servers"), intruder, None);
        assert!(
            theirs["servers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["server_id"] != id.as_str())
        );
        let (_, mine) = call(Method::GET, &server.url("/v1/servers"), owner, None);
        assert!(
            mine["servers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["server_id"] == id.as_str())
        );
    }
}

#[test]
fn admin_grant_owner_restricts_a_seeded_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &Store::Sqlite, &[]);
    let mut command = support::command(dir.path(), &Store::Sqlite);
    command
        .args([
            "admin",
            "grant-owner",
            "--server",
            "srv_harbor",
            "--user",
            "uid_boss",
        ])
        .stdout(std::process::Stdio::piped());
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("srv_harbor is now owned by uid_boss"));
    let body = Some(json!({"name": "x", "type": "text", "group_id": "grp_general"}));
    assert_eq!(
        call(
            Method::POST,
            &server.url("/v1/servers/srv_harbor/channels"),
            ME,
            body.clone()
        )
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(
            Method::POST,
            &server.url("/v1/servers/srv_harbor/channels"),
            "uid_boss",
            body
        )
        .0,
        StatusCode::CREATED
    );
    let mut missing = support::command(dir.path(), &Store::Sqlite);
    missing.args([
        "admin",
        "grant-owner",
        "--server",
        "srv_none",
        "--user",
        "uid_boss",
    ]);
    assert!(!missing.output().unwrap().status.success());
}

#[test]
fn rate_limits_answer_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &Store::Sqlite,
        &[("OPENCHAT_RATE_LIMIT_PER_MINUTE", "3")],
    );
    for _ in 0..3 {
        assert_eq!(
            call(Method::GET, &server.url("/v1/profile/me"), ME, None).0,
            StatusCode::OK
        );
    }
    let response = client()
        .get(server.url("/v1/profile/me"))
        .header("X-OpenChat-User-UID", ME)
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=61).contains(&retry));
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    assert_eq!(response.json::<Value>().unwrap()["code"], "rate_limited");
    assert_eq!(
        call(
            Method::GET,
            &server.url("/v1/profile/me"),
            "uid_someone_else",
            None
        )
        .0,
        StatusCode::OK
    );
    // Public routes are limited per client IP, at ten times the per-user rate.
    for _ in 0..30 {
        let status = client()
            .get(server.url("/v1/servers/srv_harbor/channels"))
            .send()
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::OK);
    }
    let response = client()
        .get(server.url("/v1/servers/srv_harbor/members"))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    // Probes are never limited.
    assert_eq!(
        client().get(server.url("/healthz")).send().unwrap().status(),
        StatusCode::OK
    );
}
