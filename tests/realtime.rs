//! The realtime gateway with several real WebSocket clients against the real binary:
//! fan-out by channel and server, typing, presence, replies, and resume after reconnect.
//!
//! Absence is shown by order, not by waiting: events reach a socket in publication order,
//! so a socket that must not see event X is checked to see a later event Y first.

#![allow(clippy::unwrap_used)]

mod support;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{HANG_GUARD, Server, Store};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

type Ws = WebSocketStream<TcpStream>;

async fn connect(server: &Server, query: &str) -> Ws {
    let url = format!("ws://{}/v1/realtime?{query}", server.addr);
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (ws, response) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    assert_eq!(response.status(), 101);
    ws
}

/// The next JSON envelope (pings are skipped), within the hang guard.
async fn next(ws: &mut Ws) -> Value {
    loop {
        let message = tokio::time::timeout(HANG_GUARD, ws.next())
            .await
            .expect("an event within the hang guard");
        match message.expect("socket open").expect("frame") {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Close(frame) => panic!("socket closed: {frame:?}"),
            _ => continue,
        }
    }
}

/// The next envelope of the given type, skipping others (presence noise).
async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let event = next(ws).await;
        if event["type"] == kind {
            return event;
        }
    }
}

async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string())).await.unwrap();
}

async fn subscribe(ws: &mut Ws, channel: &str) -> Value {
    send(ws, json!({"type": "chat.subscribe", "request_id": format!("sub_{channel}"), "payload": {"channel_id": channel}})).await;
    let subscribed = next_of(ws, "chat.subscribed").await;
    assert_eq!(subscribed["request_id"], format!("sub_{channel}"));
    next_of(ws, "chat.presence.snapshot").await
}

async fn post(server: &Server, channel: &str, uid: &str, body: &str) -> Value {
    let response = reqwest::Client::new()
        .post(server.url(&format!("/v1/channels/{channel}/messages")))
        .header("X-OpenChat-User-UID", uid)
        .json(&json!({"body": body}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["message"].clone()
}

fn start() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &Store::Sqlite, &[]);
    (dir, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_channel_subscribers_and_the_same_server_not_other_servers() {
    let (_dir, server) = start();
    // A: another server's socket, but subscribed to the channel. B: same server, not
    // subscribed. C: the other server only.
    let mut a = connect(
        &server,
        "server_id=srv_testlab&user_uid=uid_aaaa0001&device_id=desktop_a",
    )
    .await;
    subscribe(&mut a, "ch_general").await;
    let mut b = connect(
        &server,
        "server_id=srv_harbor&user_uid=uid_bbbb0002&device_id=desktop_b",
    )
    .await;
    let mut c = connect(
        &server,
        "server_id=srv_testlab&user_uid=uid_cccc0003&device_id=desktop_c",
    )
    .await;

    let message = post(&server, "ch_general", "uid_bbbb0002", "hello harbor").await;
    for ws in [&mut a, &mut b] {
        let event = next_of(ws, "chat.message.created").await;
        assert_eq!(event["payload"]["message"], message);
        let event_id = event["event_id"].as_str().unwrap();
        assert!(event_id.contains(':'), "{event_id}");
    }
    let other = post(&server, "tl_ch_general", "uid_cccc0003", "hello testlab").await;
    let first_for_c = next_of(&mut c, "chat.message.created").await;
    assert_eq!(
        first_for_c["payload"]["message"]["id"], other["id"],
        "C never saw the harbor message"
    );
    // B is not on testlab and not subscribed: its next message event is the next harbor one.
    let later = post(&server, "ch_design", "uid_aaaa0001", "design note").await;
    assert_eq!(
        next_of(&mut b, "chat.message.created").await["payload"]["message"]["id"],
        later["id"]
    );

    // profile_updated goes to everyone; chat.read_ack.updated only to that user's sockets.
    let response = reqwest::Client::new()
        .put(server.url("/v1/channels/ch_general/read-ack"))
        .header("X-OpenChat-User-UID", "uid_cccc0003")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let ack = next_of(&mut c, "chat.read_ack.updated").await;
    assert_eq!(
        (
            ack["payload"]["user_uid"].as_str(),
            ack["payload"]["channel_id"].as_str()
        ),
        (Some("uid_cccc0003"), Some("ch_general"))
    );
    let response = reqwest::Client::new()
        .put(server.url("/v1/profile/me"))
        .header("X-OpenChat-User-UID", "uid_aaaa0001")
        .json(&json!({"display_name": "Ada", "avatar_mode": "generated", "avatar_preset_id": "reef"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for ws in [&mut a, &mut b] {
        // A and B reach the profile event without ever seeing C's read ack.
        let event = loop {
            let event = next(ws).await;
            assert_ne!(
                event["type"], "chat.read_ack.updated",
                "read acks go to their user only"
            );
            if event["type"] == "profile_updated" {
                break event;
            }
        };
        assert_eq!(
            (
                event["payload"]["user_uid"].as_str(),
                event["payload"]["display_name"].as_str()
            ),
            (Some("uid_aaaa0001"), Some("Ada"))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_includes_self_and_typing_excludes_the_sender() {
    let (_dir, server) = start();
    let mut a = connect(
        &server,
        "server_id=srv_harbor&user_uid=uid_aaaa0001&device_id=desktop_a",
    )
    .await;
    let snapshot = subscribe(&mut a, "ch_design").await;
    let members = snapshot["payload"]["members"].as_array().unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(
        (members[0]["user_uid"].as_str(), members[0]["device_id"].as_str()),
        (Some("uid_aaaa0001"), Some("desktop_a"))
    );
    let a_client = members[0]["client_id"].as_str().unwrap().to_owned();

    let mut b = connect(
        &server,
        "server_id=srv_harbor&user_uid=uid_bbbb0002&device_id=desktop_b",
    )
    .await;
    let snapshot = subscribe(&mut b, "ch_design").await;
    let users: Vec<&str> = snapshot["payload"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user_uid"].as_str().unwrap())
        .collect();
    assert_eq!(users.len(), 2);
    assert!(users.contains(&"uid_aaaa0001") && users.contains(&"uid_bbbb0002"));
    let joined = next_of(&mut a, "chat.presence.joined").await;
    assert_eq!(joined["payload"]["member"]["user_uid"], "uid_bbbb0002");

    send(&mut a, json!({"type": "chat.typing.update", "request_id": "typing_1", "payload": {"channel_id": "ch_design", "is_typing": true}})).await;
    let typing = next_of(&mut b, "chat.typing.updated").await;
    assert_eq!(typing["payload"]["member"]["client_id"], a_client.as_str());
    assert_eq!(typing["payload"]["is_typing"], true);
    send(
        &mut b,
        json!({"type": "chat.typing.update", "payload": {"channel_id": "ch_design", "is_typing": false}}),
    )
    .await;
    let first_typing_for_a = next_of(&mut a, "chat.typing.updated").await;
    assert_eq!(
        first_typing_for_a["payload"]["member"]["user_uid"], "uid_bbbb0002",
        "A never got its own typing"
    );

    // Requests without a subscription, pings and unknown events.
    send(&mut a, json!({"type": "chat.typing.update", "request_id": "t2", "payload": {"channel_id": "ch_general", "is_typing": true}})).await;
    let error = next_of(&mut a, "chat.error").await;
    assert_eq!(
        (error["payload"]["code"].as_str(), error["request_id"].as_str()),
        (Some("chat_not_subscribed"), Some("t2"))
    );
    send(&mut a, json!({"type": "chat.ping", "request_id": "p1"})).await;
    let pong = next_of(&mut a, "chat.pong").await;
    assert_eq!(pong["request_id"], "p1");
    assert!(
        pong["payload"]["ts"].as_str().unwrap().contains('.'),
        "nanosecond timestamp"
    );
    send(&mut a, json!({"type": "chat.dance"})).await;
    assert_eq!(
        next_of(&mut a, "chat.error").await["payload"]["code"],
        "chat_unknown_event"
    );
    a.send(Message::text("not json")).await.unwrap();
    assert_eq!(
        next_of(&mut a, "chat.error").await["payload"]["code"],
        "chat_invalid_message"
    );
    send(
        &mut a,
        json!({"type": "chat.subscribe", "payload": {"channel_id": ""}}),
    )
    .await;
    assert_eq!(
        next_of(&mut a, "chat.error").await["payload"]["code"],
        "chat_channel_required"
    );

    // B leaves by closing: A sees it go.
    b.close(None).await.unwrap();
    let left = next_of(&mut a, "chat.presence.left").await;
    assert_eq!(left["payload"]["member"]["user_uid"], "uid_bbbb0002");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_replays_exactly_the_missed_events() {
    let (_dir, server) = start();
    let query = "server_id=srv_harbor&user_uid=uid_aaaa0001&device_id=desktop_a";
    let mut a = connect(&server, query).await;
    post(&server, "ch_general", "uid_x", "one").await;
    let seen = next_of(&mut a, "chat.message.created").await;
    let last = seen["event_id"].as_str().unwrap().to_owned();
    a.close(None).await.unwrap();
    drop(a);

    let two = post(&server, "ch_general", "uid_x", "two").await;
    post(&server, "tl_ch_general", "uid_x", "not for harbor").await;
    let three = post(&server, "ch_design", "uid_x", "three").await;

    let mut a = connect(&server, &format!("{query}&resume_from={last}")).await;
    let first = next(&mut a).await;
    let second = next(&mut a).await;
    assert_eq!(
        [
            first["payload"]["message"]["id"].clone(),
            second["payload"]["message"]["id"].clone()
        ],
        [two["id"].clone(), three["id"].clone()]
    );
    let four = post(&server, "ch_general", "uid_x", "four").await;
    let live = next(&mut a).await;
    assert_eq!(
        live["payload"]["message"]["id"], four["id"],
        "live events follow the replay without duplicates"
    );

    let mut stranger = connect(&server, "server_id=srv_harbor&resume_from=abc:1").await;
    let resync = next(&mut stranger).await;
    assert_eq!(
        (resync["type"].as_str(), resync["payload"]["reason"].as_str()),
        (Some("chat.resync_required"), Some("unknown_event_id"))
    );
}

async fn call_json(
    method: reqwest::Method,
    server: &Server,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, server.url(path))
        .header("X-OpenChat-User-UID", "uid_aaaa0001");
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

/// The client drops a category event whose channels are not all valid (WIRE.md §4).
fn assert_valid_group(group: &Value) {
    assert!(group["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(group["label"].is_string());
    assert!(["text", "voice"].contains(&group["kind"].as_str().unwrap()));
    for channel in group["channels"].as_array().unwrap() {
        assert!(channel["id"].as_str().is_some_and(|id| !id.is_empty()));
        assert!(channel["name"].as_str().is_some_and(|name| !name.is_empty()));
        assert!(["text", "voice"].contains(&channel["type"].as_str().unwrap()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_management_answers_and_announces_valid_shapes() {
    use reqwest::Method;
    let (_dir, server) = start();
    let mut watcher = connect(
        &server,
        "server_id=srv_harbor&user_uid=uid_watch001&device_id=desktop_w",
    )
    .await;

    let (status, category) = call_json(
        Method::POST,
        &server,
        "/v1/servers/srv_harbor/categories",
        Some(json!({"name": "Projects", "kind": "text"})),
    )
    .await;
    assert_eq!(status, 201, "{category}");
    assert_valid_group(&category["group"]);
    let group_id = category["group"]["id"].as_str().unwrap().to_owned();
    let event = next_of(&mut watcher, "chat.category.created").await;
    assert_eq!(event["payload"]["server_id"], "srv_harbor");
    assert_valid_group(&event["payload"]["group"]);

    let body = json!({"name": "roadmap", "type": "text", "group_id": group_id});
    let (status, created) = call_json(
        Method::POST,
        &server,
        "/v1/servers/srv_harbor/channels",
        Some(body),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        (created["group_id"].as_str(), created["channel"]["name"].as_str()),
        (Some(group_id.as_str()), Some("roadmap"))
    );
    assert_eq!(created["created_by_uid"], "uid_aaaa0001");
    let channel_id = created["channel"]["id"].as_str().unwrap().to_owned();
    assert!(channel_id.starts_with("ch_"));
    let event = next_of(&mut watcher, "chat.channel.created").await;
    assert_eq!(event["payload"]["channel"]["id"], channel_id.as_str());

    let (status, renamed) = call_json(
        Method::PUT,
        &server,
        &format!("/v1/servers/srv_harbor/categories/{group_id}"),
        Some(json!({"name": "Plans"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(renamed["group"]["label"], "Plans");
    assert_eq!(
        renamed["group"]["channels"][0]["id"],
        channel_id.as_str(),
        "a rename keeps the channels"
    );
    assert_valid_group(&next_of(&mut watcher, "chat.category.updated").await["payload"]["group"]);

    // Move the new channel to the front of "general" and the empty category to the front.
    let (_, layout) = call_json(Method::GET, &server, "/v1/servers/srv_harbor/channels", None).await;
    let mut groups: Vec<Value> = Vec::new();
    for group in layout["groups"].as_array().unwrap() {
        let mut ids: Vec<String> = group["channels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect();
        ids.retain(|id| *id != channel_id);
        if group["id"] == "grp_general" {
            ids.insert(0, channel_id.clone());
        }
        groups.push(json!({"id": group["id"], "channel_ids": ids}));
    }
    let moved = groups.pop().unwrap();
    groups.insert(0, moved);
    let (status, changed) = call_json(
        Method::PUT,
        &server,
        "/v1/servers/srv_harbor/channel-layout",
        Some(json!({"groups": groups})),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["groups"][0]["id"], group_id.as_str());
    let general = changed["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == "grp_general")
        .unwrap();
    assert_eq!(general["channels"][0]["id"], channel_id.as_str());
    changed["groups"]
        .as_array()
        .unwrap()
        .iter()
        .for_each(assert_valid_group);
    let event = next_of(&mut watcher, "chat.channel.layout.updated").await;
    assert_eq!(event["payload"]["groups"], changed["groups"]);

    let (status, after_delete) = call_json(
        Method::DELETE,
        &server,
        &format!("/v1/servers/srv_harbor/categories/{group_id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "the category is empty now: {after_delete}");
    assert!(
        after_delete["groups"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["id"] != group_id.as_str())
    );
    next_of(&mut watcher, "chat.channel.layout.updated").await;

    let (status, settings) = call_json(
        Method::PUT,
        &server,
        "/v1/servers/srv_harbor/settings",
        Some(json!({"display_name": "Harbor Two", "description": "d", "banner_preset": "teal"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            settings["updated_by_uid"].as_str(),
            settings["banner_preset"].as_str()
        ),
        (Some("uid_aaaa0001"), Some("teal"))
    );
    let event = next_of(&mut watcher, "chat.server.updated").await;
    assert_eq!(event["payload"]["display_name"], "Harbor Two");

    let (status, mentions) = call_json(
        Method::GET,
        &server,
        "/v1/channels/ch_general/mentions:resolve?query=&limit=12",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let results = mentions["results"].as_array().unwrap();
    assert!(!results.is_empty() && results.len() <= 12);
    for result in results {
        assert!(["user", "channel"].contains(&result["type"].as_str().unwrap()));
        for key in ["token", "target_id", "display_text"] {
            assert!(
                result[key].as_str().is_some_and(|v| !v.is_empty()),
                "{key}: {result}"
            );
        }
    }
    let (_, mira) = call_json(
        Method::GET,
        &server,
        "/v1/channels/ch_general/mentions:resolve?query=mi",
        None,
    )
    .await;
    assert_eq!(mira["results"][0]["display_text"], "Mira");

    let (status, openapi) = call_json(Method::GET, &server, "/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(openapi["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(openapi["paths"]["/v1/profiles:batch"]["get"].is_object());
}

async fn get_as(server: &Server, path: &str, uid: Option<&str>) -> Value {
    let mut request = reqwest::Client::new().get(server.url(path));
    if let Some(uid) = uid {
        request = request
            .header("X-OpenChat-User-UID", uid)
            .header("X-OpenChat-Device-ID", "desktop_m");
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

fn ch_general_counts(layout: &Value) -> (Value, Value) {
    let channel = layout["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["channels"].as_array().unwrap())
        .find(|c| c["id"] == "ch_general")
        .unwrap();
    (channel["unread_count"].clone(), channel["mention_count"].clone())
}

/// Issue 15: picking `@Name` or `@here` from the autocomplete sent the message, but no
/// message carried `mentions`, so the mentioned user got no highlight, badge or
/// notification. The client's sequence: resolve, insert the token, post; the mention must be
/// in the 201, the live event and history, with UTF-16 ranges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mentions_picked_from_the_autocomplete_reach_the_reply_live_events_history_and_counts() {
    let (_dir, server) = start();
    // Lyra (a seeded member) is online, looking at another channel of the server.
    let mut lyra = connect(
        &server,
        "server_id=srv_harbor&user_uid=uid_seed_1&device_id=desktop_l",
    )
    .await;
    subscribe(&mut lyra, "ch_design").await;
    // Someone whose name has a space, known in the channel as an author.
    post(&server, "ch_general", "uid_0000aaaa", "hi all").await;
    let me = get_as(&server, "/v1/profile/me", Some("uid_0000aaaa")).await;
    let response = reqwest::Client::new()
        .put(server.url("/v1/profile/me"))
        .header("X-OpenChat-User-UID", "uid_0000aaaa")
        .header("If-Match", me["profile_version"].to_string())
        .json(&json!({"display_name": "Mira Vale", "avatar_mode": "generated", "avatar_preset_id": "mint"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // The composer: `@` + query, pick the candidate, insert its token.
    let resolve = |query: &'static str, pick: &'static str| {
        let server = &server;
        async move {
            let found = get_as(
                server,
                &format!("/v1/channels/ch_general/mentions:resolve?query={query}&limit=12"),
                Some("uid_0000ffff"),
            )
            .await;
            found["results"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["type"] == "user" && r["display_text"] == pick)
                .unwrap_or_else(|| panic!("no candidate {pick} for {query}: {found}"))
                .clone()
        }
    };
    let lyra_pick = resolve("Ly", "Lyra").await;
    assert_eq!(lyra_pick["target_id"], "uid_seed_1");
    // The seeded Mira is offered too; the user picks Mira Vale.
    let mira_pick = resolve("Mira", "Mira Vale").await;
    assert_eq!(mira_pick["target_id"], "uid_0000aaaa");
    let body = format!(
        "Grüße 👋 {} and {} — @here",
        lyra_pick["token"].as_str().unwrap(),
        mira_pick["token"].as_str().unwrap()
    );
    let created = post(&server, "ch_general", "uid_0000ffff", &body).await;
    let mentions = created["mentions"]
        .as_array()
        .expect("mentions in the 201")
        .clone();
    let utf16: Vec<u16> = body.encode_utf16().collect();
    let summary: Vec<(String, String, String)> = mentions
        .iter()
        .map(|m| {
            let (start, end) = (
                m["range"]["start"].as_u64().unwrap(),
                m["range"]["end"].as_u64().unwrap(),
            );
            let text = String::from_utf16(&utf16[start as usize..end as usize]).unwrap();
            assert_eq!(text, m["token"].as_str().unwrap(), "the range covers the token");
            (
                m["type"].as_str().unwrap().to_owned(),
                m["target_id"].as_str().unwrap().to_owned(),
                m["display_text"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("user".into(), "uid_seed_1".into(), "Lyra".into()),
            ("user".into(), "uid_0000aaaa".into(), "Mira Vale".into()),
            ("channel".into(), "ch_general".into(), "here".into()),
        ]
    );
    assert_eq!(mentions[0]["range"]["start"], 9, "the emoji is two UTF-16 units");

    // The live event on Lyra's socket (another channel of the same server) carries them.
    let live = loop {
        let event = next_of(&mut lyra, "chat.message.created").await;
        if event["payload"]["message"]["id"] == created["id"] {
            break event;
        }
    };
    assert_eq!(live["payload"]["message"]["mentions"], created["mentions"]);
    // So does history, as the client loads it (no identity).
    let history = get_as(&server, "/v1/channels/ch_general/messages?limit=150", None).await;
    let stored = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == created["id"])
        .unwrap()
        .clone();
    assert_eq!(stored["mentions"], created["mentions"]);
    assert!(
        history["messages"][0].get("mentions").is_none(),
        "a message without mentions has no array"
    );

    // Counts: with identity, Lyra has one mention in ch_general; without, no counts at all.
    let layout = get_as(&server, "/v1/servers/srv_harbor/channels", Some("uid_seed_1")).await;
    let (unread, mention) = ch_general_counts(&layout);
    assert_eq!(mention, 1);
    assert!(unread.as_i64().unwrap() >= 2, "{unread}");
    let anonymous = get_as(&server, "/v1/servers/srv_harbor/channels", None).await;
    assert_eq!(ch_general_counts(&anonymous), (Value::Null, Value::Null));
    // Once Lyra has read the channel, the badge is gone.
    let response = reqwest::Client::new()
        .put(server.url("/v1/channels/ch_general/read-ack"))
        .header("X-OpenChat-User-UID", "uid_seed_1")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let layout = get_as(&server, "/v1/servers/srv_harbor/channels", Some("uid_seed_1")).await;
    assert_eq!(ch_general_counts(&layout), (json!(0), json!(0)));
}

/// The upgrade's status and error body, from a hand-written request (a WebSocket client
/// will not send a header value that is not text).
async fn refused_upgrade(server: &Server, query: &str, headers: &[(&str, &[u8])]) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut request = format!(
        "GET /v1/realtime?{query} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        server.addr
    )
    .into_bytes();
    for (name, value) in headers {
        request.extend_from_slice(name.as_bytes());
        request.extend_from_slice(b": ");
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(&request).await.unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let answer = tokio::time::timeout(HANG_GUARD, async {
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            received.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&received).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_owned())
                    })
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if body.len() >= length || n == 0 {
                    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
                    return (
                        status,
                        serde_json::from_str(&body[..length]).unwrap_or(Value::Null),
                    );
                }
            }
            assert!(n > 0, "connection closed before an answer: {text:?}");
        }
    })
    .await;
    answer.expect("an answer within the hang guard")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_realtime_socket_derives_identity_as_every_request_does() {
    let (_dir, server) = start();
    // An identity header that is not text is an error, not the default identity.
    let (status, body) = refused_upgrade(
        &server,
        "server_id=srv_harbor&user_uid=uid_0000000a",
        &[("x-openchat-user-uid", b"uid_\xff")],
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_identity_header"))
    );
    // An over-long device id is refused, not cut short.
    let long = "d".repeat(openchat_core::limits::ID_BYTES_MAX + 1);
    let (status, body) = refused_upgrade(
        &server,
        &format!("server_id=srv_harbor&user_uid=uid_0000000a&device_id={long}"),
        &[],
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    // A valid query identity still connects.
    let _ws = connect(
        &server,
        "server_id=srv_harbor&user_uid=uid_0000000a&device_id=dev_a",
    )
    .await;
}

/// The desktop client never sends `resume_from` and does not refetch history on
/// reconnect (WIRE.md §0 item 11): its next socket gets what the device missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_device_gets_what_it_missed_without_asking() {
    let (_dir, server) = start();
    let query = "server_id=srv_harbor&user_uid=uid_dana&device_id=desktop_dana";
    let mut dana = connect(&server, query).await;
    post(&server, "ch_general", "uid_x", "seen").await;
    next_of(&mut dana, "chat.message.created").await;
    dana.close(None).await.unwrap();
    // Closed: wait until the server has let the socket go.
    while let Ok(Some(Ok(_))) = tokio::time::timeout(HANG_GUARD, dana.next()).await {}
    drop(dana);
    let missed = post(&server, "ch_general", "uid_x", "missed").await;
    post(&server, "tl_ch_general", "uid_x", "another server").await;

    let mut dana = connect(&server, query).await;
    let first = next_of(&mut dana, "chat.message.created").await;
    assert_eq!(first["payload"]["message"]["id"], missed["id"], "{first}");
    let live = post(&server, "ch_general", "uid_x", "live").await;
    let next = next_of(&mut dana, "chat.message.created").await;
    assert_eq!(
        next["payload"]["message"]["id"], live["id"],
        "no repeat, nothing else"
    );

    // Another device of the same user starts fresh.
    let mut other = connect(
        &server,
        "server_id=srv_harbor&user_uid=uid_dana&device_id=laptop_dana",
    )
    .await;
    let live = post(&server, "ch_general", "uid_x", "for both").await;
    let first = next_of(&mut other, "chat.message.created").await;
    assert_eq!(first["payload"]["message"]["id"], live["id"], "{first}");
}
