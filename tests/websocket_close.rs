//! WebSockets end with a close frame that says why (issue 15): an oversized realtime frame
//! is 1009; SIGTERM closes every realtime and signaling socket with 1001 (Going Away, so
//! the client rejoins a call: WIRE.md §0 item 7), after each voice room told its
//! participants that the others left. Before, every client saw 1006.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{HANG_GUARD, Server};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

type Ws = WebSocketStream<TcpStream>;

const SECRET: &str = "test-secret-for-signaling-0123456789";

fn start() -> (tempfile::TempDir, Server) {
    support::start_with_ticket_secret(SECRET)
}

async fn connect(server: &Server, path: &str) -> Ws {
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let url = format!("ws://{}{path}", server.addr);
    tokio_tungstenite::client_async(url, stream).await.unwrap().0
}

/// Every text envelope until the close frame, and the close code (`None`: no close frame,
/// i.e. 1006 to a browser).
async fn until_close(ws: &mut Ws) -> (Vec<Value>, Option<CloseCode>) {
    let mut events = Vec::new();
    loop {
        let next = tokio::time::timeout(HANG_GUARD, ws.next())
            .await
            .expect("a frame within the hang guard");
        match next {
            Some(Ok(Message::Text(text))) => events.push(serde_json::from_str(text.as_str()).unwrap()),
            Some(Ok(Message::Close(frame))) => {
                eprintln!("close frame: {frame:?}");
                return (events, frame.map(|f| f.code));
            }
            Some(Ok(_)) => {}
            None | Some(Err(_)) => return (events, None),
        }
    }
}

async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let next = tokio::time::timeout(HANG_GUARD, ws.next())
            .await
            .expect("a frame within the hang guard");
        match next {
            Some(Ok(Message::Text(text))) => {
                let event: Value = serde_json::from_str(text.as_str()).unwrap();
                if event["type"] == kind {
                    return event;
                }
            }
            Some(Ok(_)) => {}
            other => panic!("closed while waiting for {kind}: {other:?}"),
        }
    }
}

async fn join_voice(server: &Server, uid: &str) -> (Ws, String) {
    let response = reqwest::Client::new()
        .post(server.url("/v1/rtc/channels/vc_general/join-ticket"))
        .header("X-OpenChat-User-UID", uid)
        .header("X-OpenChat-Device-ID", "desktop_close")
        .json(&json!({"server_id": "srv_harbor"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let ticket: Value = response.json().await.unwrap();
    let mut ws = connect(server, "/v1/rtc/signaling").await;
    let join = json!({"type": "rtc.join", "request_id": "j", "channel_id": "vc_general", "payload": {"ticket": ticket["ticket"]}});
    ws.send(Message::text(join.to_string())).await.unwrap();
    let joined = next_of(&mut ws, "rtc.joined").await;
    let id = joined["payload"]["participant_id"].as_str().unwrap().to_owned();
    (ws, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_realtime_frame_closes_the_socket_with_1009() {
    let (_dir, server) = start();
    let mut ws = connect(&server, "/v1/realtime?server_id=srv_harbor&user_uid=uid_0000beef").await;
    let huge = format!(
        r#"{{"type":"chat.typing","payload":{{"channel_id":"ch_general","pad":"{}"}}}}"#,
        "x".repeat(200 * 1024)
    );
    // The server may close while the frame is still being written.
    let _ = ws.send(Message::text(huge)).await;
    let (_, code) = until_close(&mut ws).await;
    assert_eq!(code, Some(CloseCode::Size));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_every_socket_with_1001_after_rooms_say_who_left() {
    let (_dir, server) = start();
    let mut chat = connect(&server, "/v1/realtime?server_id=srv_harbor&user_uid=uid_0000cafe").await;
    let subscribe =
        json!({"type": "chat.subscribe", "request_id": "s", "payload": {"channel_id": "ch_general"}});
    chat.send(Message::text(subscribe.to_string())).await.unwrap();
    next_of(&mut chat, "chat.subscribed").await;
    let mut voice = Vec::new();
    for uid in ["uid_000000a1", "uid_000000b2", "uid_000000c3"] {
        voice.push(join_voice(&server, uid).await);
    }
    // A signaling socket that has not joined yet.
    let mut waiting = connect(&server, "/v1/rtc/signaling").await;
    // Everyone has seen everyone join (so the room is settled).
    for (i, (ws, _)) in voice.iter_mut().enumerate() {
        for _ in i + 1..3 {
            next_of(ws, "rtc.participant.joined").await;
        }
    }

    server.signal_term();

    let ids: Vec<String> = voice.iter().map(|(_, id)| id.clone()).collect();
    for (ws, me) in &mut voice {
        let (events, code) = until_close(ws).await;
        let left: BTreeSet<&str> = events
            .iter()
            .filter(|e| e["type"] == "rtc.participant.left")
            .map(|e| e["payload"]["participant"]["participant_id"].as_str().unwrap())
            .collect();
        let others: BTreeSet<&str> = ids.iter().map(String::as_str).filter(|id| id != me).collect();
        assert_eq!(left, others, "each participant hears that the others left");
        assert!(
            events
                .iter()
                .filter(|e| e["type"] == "rtc.participant.left")
                .all(|e| e["payload"]["reason"] == "server_shutdown"),
            "{events:?}"
        );
        assert!(
            !events.iter().any(|e| e["type"] == "rtc.error"),
            "no rtc.error before the close (the client would not rejoin): {events:?}"
        );
        assert_eq!(code, Some(CloseCode::Away));
    }
    let (_, code) = until_close(&mut waiting).await;
    assert_eq!(code, Some(CloseCode::Away), "a signaling socket before its join");
    let (_, code) = until_close(&mut chat).await;
    assert_eq!(code, Some(CloseCode::Away), "the realtime socket");
    let status = server.wait_exit();
    assert!(status.success(), "{status:?}");
}
