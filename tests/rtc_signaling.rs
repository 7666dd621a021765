//! Voice signaling against the real binary with real WebSocket clients: joins and leaves,
//! ticket refusals, permissions, ordered relay of 10 000 file chunks, backpressure, rejoin
//! and retransmission.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use openchat_core::ticket::{Permissions, TicketClaims, TicketSigner};
use serde_json::{Value, json};
use support::{HANG_GUARD, Server, Store};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

type Ws = WebSocketStream<TcpStream>;

const SECRET: &str = "test-secret-for-signaling-0123456789";

fn start() -> (tempfile::TempDir, Server) {
    support::start_with_ticket_secret(SECRET)
}

async fn ticket(server: &Server, channel: &str, uid: &str, device: &str) -> Value {
    let response = reqwest::Client::new()
        .post(server.url(&format!("/v1/rtc/channels/{channel}/join-ticket")))
        .header("X-OpenChat-User-UID", uid)
        .header("X-OpenChat-Device-ID", device)
        .json(&json!({"server_id": "srv_harbor"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn connect(server: &Server) -> Ws {
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let url = format!("ws://{}/v1/rtc/signaling", server.addr);
    tokio_tungstenite::client_async(url, stream).await.unwrap().0
}

async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string())).await.unwrap();
}

/// The next text envelope; `None` when the socket closed.
async fn next_or_close(ws: &mut Ws) -> Option<Value> {
    loop {
        match tokio::time::timeout(HANG_GUARD, ws.next())
            .await
            .expect("a frame within the hang guard")
        {
            Some(Ok(Message::Text(text))) => return Some(serde_json::from_str(text.as_str()).unwrap()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let event = next_or_close(ws)
            .await
            .unwrap_or_else(|| panic!("closed while waiting for {kind}"));
        if event["type"] == kind {
            return event;
        }
    }
}

/// Joins with a fresh ticket; returns the socket and the `rtc.joined` payload.
async fn join(server: &Server, uid: &str, device: &str) -> (Ws, Value) {
    let ticket = ticket(server, "vc_general", uid, device).await;
    let mut ws = connect(server).await;
    send(&mut ws, json!({"type": "rtc.join", "request_id": format!("join_{uid}"), "channel_id": "vc_general", "payload": {"ticket": ticket["ticket"]}})).await;
    let joined = next_of(&mut ws, "rtc.joined").await;
    assert_eq!(joined["request_id"], format!("join_{uid}"));
    (ws, joined["payload"].clone())
}

async fn expect_denied(server: &Server, ticket: &str, channel: &str, reason: &str) {
    let mut ws = connect(server).await;
    send(&mut ws, json!({"type": "rtc.join", "request_id": "join_x", "channel_id": channel, "payload": {"ticket": ticket}})).await;
    let error = next_or_close(&mut ws).await.unwrap();
    assert_eq!(error["type"], "rtc.error");
    assert_eq!(error["payload"]["code"], "rtc_join_denied");
    assert_eq!(error["payload"]["message"], reason);
    assert_eq!(error["payload"]["retryable"], false);
    assert!(
        next_or_close(&mut ws).await.is_none(),
        "the socket closes after a denied join"
    );
}

fn forge(uid: &str, exp: i64, permissions: Permissions) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    TicketSigner::new(SECRET.as_bytes()).sign(&TicketClaims {
        server_id: "srv_harbor".into(),
        channel_id: "vc_general".into(),
        user_uid: uid.into(),
        device_id: "d".into(),
        permissions,
        exp: now + exp,
        iat: now,
        jti: uuid::Uuid::new_v4().to_string(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_participants_see_consistent_lists_and_leaves() {
    let (_dir, server) = start();
    let (mut a, joined_a) = join(&server, "uid_a", "da").await;
    assert_eq!(joined_a["participants"], json!([]));
    let a_id = joined_a["participant_id"].as_str().unwrap().to_owned();
    let (mut b, joined_b) = join(&server, "uid_b", "db").await;
    let (mut c, joined_c) = join(&server, "uid_c", "dc").await;
    let b_id = joined_b["participant_id"].as_str().unwrap().to_owned();
    let c_id = joined_c["participant_id"].as_str().unwrap().to_owned();
    assert_eq!(joined_b["participants"][0]["participant_id"], a_id.as_str());
    let others: Vec<&str> = joined_c["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["participant_id"].as_str().unwrap())
        .collect();
    assert_eq!(others, [a_id.as_str(), b_id.as_str()]);
    for key in [
        "participant_id",
        "channel_id",
        "user_uid",
        "device_id",
        "joined_at",
    ] {
        assert!(joined_c["participants"][0][key].is_string(), "{key}");
    }
    assert_eq!(
        joined_c["participants"][0]["permissions"],
        json!({"speak": true, "video": true, "screenshare": true})
    );
    assert_eq!(
        next_of(&mut a, "rtc.participant.joined").await["payload"]["participant"]["participant_id"],
        b_id.as_str()
    );
    assert_eq!(
        next_of(&mut a, "rtc.participant.joined").await["payload"]["participant"]["participant_id"],
        c_id.as_str()
    );
    assert_eq!(
        next_of(&mut b, "rtc.participant.joined").await["payload"]["participant"]["participant_id"],
        c_id.as_str()
    );
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("openchat_rtc_active_participants 3"),
        "{metrics}"
    );
    assert!(metrics.contains("openchat_rtc_active_rooms 1"));

    // An explicit leave...
    send(
        &mut b,
        json!({"type": "rtc.leave", "request_id": "leave_1", "payload": {}}),
    )
    .await;
    for ws in [&mut a, &mut c] {
        let left = next_of(ws, "rtc.participant.left").await;
        assert_eq!(left["payload"]["participant"]["participant_id"], b_id.as_str());
        assert_eq!(left["payload"]["participant"]["user_uid"], "uid_b");
    }
    // ...and a dropped socket both announce the departure.
    drop(c);
    let left = next_of(&mut a, "rtc.participant.left").await;
    assert_eq!(left["payload"]["participant"]["participant_id"], c_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tickets_are_denied_with_their_reason_and_the_socket_closes() {
    let (_dir, server) = start();
    expect_denied(
        &server,
        &forge("uid_x", -5, Permissions::ALL),
        "vc_general",
        "join ticket expired",
    )
    .await;
    let other_secret = TicketSigner::new(b"not-the-server-secret").sign(&TicketClaims {
        server_id: "srv_harbor".into(),
        channel_id: "vc_general".into(),
        user_uid: "uid_x".into(),
        device_id: "d".into(),
        permissions: Permissions::ALL,
        exp: i64::MAX / 2,
        iat: 0,
        jti: "j".into(),
    });
    expect_denied(&server, &other_secret, "vc_general", "invalid join ticket").await;
    let real = ticket(&server, "vc_general", "uid_y", "dy").await;
    let ticket = real["ticket"].as_str().unwrap();
    expect_denied(&server, ticket, "vc_party", "join ticket is for another channel").await;
    // The wrong-channel attempt did not consume it; its first real use does.
    let mut ws = connect(&server).await;
    send(
        &mut ws,
        json!({"type": "rtc.join", "channel_id": "vc_general", "payload": {"ticket": ticket}}),
    )
    .await;
    next_of(&mut ws, "rtc.joined").await;
    expect_denied(&server, ticket, "vc_general", "join ticket replayed").await;
    // A first message that is not a join is refused too.
    let mut ws = connect(&server).await;
    send(&mut ws, json!({"type": "rtc.ping"})).await;
    assert_eq!(
        next_or_close(&mut ws).await.unwrap()["payload"]["code"],
        "rtc_join_denied"
    );
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"openchat_rtc_join_fail_total{reason="replayed"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_states_need_their_permission_and_unknown_events_are_named() {
    let (_dir, server) = start();
    let mut muted = connect(&server).await;
    let silent = Permissions {
        speak: false,
        video: true,
        screenshare: false,
    };
    send(
        &mut muted,
        json!({"type": "rtc.join", "payload": {"ticket": forge("uid_m", 60, silent)}}),
    )
    .await;
    next_of(&mut muted, "rtc.joined").await;
    send(&mut muted, json!({"type": "rtc.media.state", "request_id": "mic_start_1", "payload": {"stream_kind": "audio_microphone", "action": "start"}})).await;
    let denied = next_of(&mut muted, "rtc.error").await;
    assert_eq!(
        (denied["payload"]["code"].as_str(), denied["request_id"].as_str()),
        (Some("rtc_media_denied"), Some("mic_start_1"))
    );
    send(
        &mut muted,
        json!({"type": "rtc.media.state", "payload": {"stream_kind": "video_screen", "action": "start"}}),
    )
    .await;
    assert_eq!(
        next_of(&mut muted, "rtc.error").await["payload"]["code"],
        "rtc_media_denied"
    );
    send(&mut muted, json!({"type": "rtc.media.state", "request_id": "video_1", "payload": {"stream_kind": "video_camera", "action": "start"}})).await;
    let relayed = next_of(&mut muted, "rtc.media.state").await;
    assert_eq!(
        (
            relayed["payload"]["user_uid"].as_str(),
            relayed["request_id"].as_str()
        ),
        (Some("uid_m"), Some("video_1"))
    );
    send(&mut muted, json!({"type": "rtc.teleport"})).await;
    let unknown = next_of(&mut muted, "rtc.error").await;
    assert_eq!(unknown["payload"]["code"], "rtc_unknown_event");
    assert!(
        unknown["payload"]["message"]
            .as_str()
            .unwrap()
            .contains("rtc.teleport")
    );
    send(
        &mut muted,
        json!({"type": "rtc.offer", "payload": {"target_participant_id": "ghost", "sdp": "v=0"}}),
    )
    .await;
    let missing = next_of(&mut muted, "rtc.error").await;
    assert_eq!(
        (
            missing["payload"]["code"].as_str(),
            missing["payload"]["retryable"].as_bool()
        ),
        (Some("rtc_target_not_found"), Some(true))
    );
    send(&mut muted, json!({"type": "rtc.ping", "request_id": "p1"})).await;
    assert_eq!(next_of(&mut muted, "rtc.pong").await["request_id"], "p1");
}

/// A joiner-style file-chunk media state.
fn chunk(seq: usize, total: usize, bytes: usize) -> Value {
    let body: String = (0..bytes)
        .map(|i| char::from(b'A' + ((seq * 7 + i) % 26) as u8))
        .collect();
    json!({
        "type": "rtc.media.state",
        "request_id": format!("media_1_{seq}"),
        "channel_id": "vc_general",
        "payload": {
            "stream_id": "stream_0000aaaa", "stream_kind": "audio_file_chunks", "file_name": "tone.mp3",
            "file_type": "audio/mpeg", "loop_iteration": 1, "seq": seq, "total_seq": total,
            "chunk_b64": body, "eof": seq + 1 == total, "transmitted_at": "2026-11-29T00:00:00.000000001Z",
            "transmitter_uid": "uid_sender",
        }
    })
}

/// Reads `total` chunks in order, checking each byte; optionally pausing now and then.
async fn read_chunks(mut ws: Ws, total: usize, bytes: usize, pause_every: Option<usize>) -> Ws {
    let mut seq = 0;
    while seq < total {
        let event = next_of(&mut ws, "rtc.media.state").await;
        let expected = chunk(seq, total, bytes);
        assert_eq!(event["payload"]["seq"], seq, "in order");
        assert_eq!(
            event["payload"]["chunk_b64"], expected["payload"]["chunk_b64"],
            "byte-identical at {seq}"
        );
        assert_eq!(event["payload"]["user_uid"], "uid_sender");
        seq += 1;
        if let Some(every) = pause_every
            && seq % every == 0
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_file_chunks_arrive_complete_in_order_and_identical() {
    let (_dir, server) = start();
    let (sender, _) = join(&server, "uid_sender", "ds").await;
    let (r1, _) = join(&server, "uid_r1", "d1").await;
    let (r2, _) = join(&server, "uid_r2", "d2").await;
    let total = 10_000;
    let readers = [
        tokio::spawn(read_chunks(r1, total, 64, None)),
        tokio::spawn(read_chunks(r2, total, 64, None)),
    ];
    // The sender's own echoes must be drained too, or its queue would throttle the room.
    let (mut sink, mut stream) = sender.split();
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
    for seq in 0..total {
        sink.send(Message::text(chunk(seq, total, 64).to_string()))
            .await
            .unwrap();
    }
    for reader in readers {
        tokio::time::timeout(Duration::from_secs(120), reader)
            .await
            .unwrap()
            .unwrap();
    }
    drain.abort();
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_slow_the_sender_and_a_stopped_reader_is_cut_off() {
    let (_dir, server) = start();
    let (sender, _) = join(&server, "uid_sender", "ds").await;
    let (slow, _) = join(&server, "uid_slow", "d1").await;
    let (fast, _) = join(&server, "uid_fast", "d2").await;
    let (mut stopped, _) = join(&server, "uid_stopped", "d3").await;
    let total = 10_000;
    let bytes = 8 * 1024;
    let started = Instant::now();
    let readers = [
        tokio::spawn(read_chunks(slow, total, bytes, Some(500))),
        tokio::spawn(read_chunks(fast, total, bytes, None)),
    ];
    let (mut sink, mut stream) = sender.split();
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
    let send_all = tokio::spawn(async move {
        for seq in 0..total {
            sink.send(Message::text(chunk(seq, total, bytes).to_string()))
                .await
                .unwrap();
        }
        sink
    });
    for reader in readers {
        tokio::time::timeout(Duration::from_secs(180), reader)
            .await
            .unwrap()
            .unwrap();
    }
    let _sink = send_all.await.unwrap();
    drain.abort();
    // The reader that never read was disconnected, after at least the 10 s stall limit.
    let mut closed = false;
    while let Ok(Some(message)) = tokio::time::timeout(HANG_GUARD, stopped.next()).await {
        match message {
            Ok(Message::Close(frame)) => {
                assert_eq!(frame.unwrap().reason.as_str(), "too_slow");
                closed = true;
                break;
            }
            Ok(_) => continue,
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "the stopped reader was disconnected");
    assert!(started.elapsed() >= Duration::from_secs(10));
    // 80 MB of chunks passed through; the server never held more than its bounded queues.
    let peak = rss_kib(server.pid());
    assert!(peak < 256 * 1024, "peak RSS {peak} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejoin_evicts_the_old_participant_and_retransmissions_apply_once() {
    let (_dir, server) = start();
    let (mut first, joined) = join(&server, "uid_a", "same_device").await;
    let old_id = joined["participant_id"].as_str().unwrap().to_owned();
    let (mut watcher, _) = join(&server, "uid_w", "dw").await;
    let (mut second, joined) = join(&server, "uid_a", "same_device").await;
    assert_eq!(
        joined["participants"].as_array().unwrap().len(),
        1,
        "only the watcher remains besides the new one"
    );
    let left = next_of(&mut watcher, "rtc.participant.left").await;
    assert_eq!(left["payload"]["participant"]["participant_id"], old_id.as_str());
    loop {
        match next_or_close(&mut first).await {
            None => break,
            Some(_) => continue,
        }
    }
    // Send the same request twice: applied once, answered twice.
    let media = json!({"type": "rtc.media.state", "request_id": "media_dup", "payload": {"stream_kind": "audio_file_chunks", "seq": 1}});
    send(&mut second, media.clone()).await;
    send(&mut second, media).await;
    send(&mut second, json!({"type": "rtc.media.state", "request_id": "media_next", "payload": {"stream_kind": "audio_file_chunks", "seq": 2}})).await;
    let first_seen = next_of(&mut watcher, "rtc.media.state").await;
    let second_seen = next_of(&mut watcher, "rtc.media.state").await;
    assert_eq!(
        (
            first_seen["payload"]["seq"].as_i64(),
            second_seen["payload"]["seq"].as_i64()
        ),
        (Some(1), Some(2)),
        "no duplicate"
    );
    // The sender sees its own relayed message (its answer); the retransmission is answered
    // from the remembered response when that was already sent, which may land before or
    // after the next message's echo. What must never happen is a second application.
    let mut echoes = Vec::new();
    while !echoes.iter().any(|id: &String| id == "media_next") {
        let event = next_of(&mut second, "rtc.media.state").await;
        echoes.push(event["request_id"].as_str().unwrap().to_owned());
    }
    assert!(
        echoes.iter().filter(|id| *id == "media_dup").count() >= 1,
        "{echoes:?}"
    );
    // A retransmitted join is answered with the earlier rtc.joined.
    send(
        &mut second,
        json!({"type": "rtc.join", "request_id": "join_uid_a", "payload": {"ticket": "whatever"}}),
    )
    .await;
    let again = next_of(&mut second, "rtc.joined").await;
    assert_eq!(again["payload"]["participant_id"], joined["participant_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_carry_configured_stun_and_ephemeral_turn_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &Store::Sqlite,
        &[
            ("OPENCHAT_STUN_URLS", "stun:stun.internal:3478"),
            (
                "OPENCHAT_TURN_URLS",
                "turn:turn.internal:3478?transport=udp,turns:turn.internal:5349",
            ),
            ("OPENCHAT_TURN_SECRET", "coturn-shared-secret"),
            ("OPENCHAT_TURN_TTL_SECONDS", "600"),
        ],
    );
    let ticket = ticket(&server, "vc_party", "uid_turn", "dt").await;
    assert!(
        ticket["signaling_url"]
            .as_str()
            .unwrap()
            .starts_with("ws://localhost:")
    );
    let ice = ticket["ice_servers"].as_array().unwrap();
    assert_eq!(ice[0]["urls"], json!(["stun:stun.internal:3478"]));
    let turn = &ice[1];
    assert_eq!(
        turn["urls"],
        json!([
            "turn:turn.internal:3478?transport=udp",
            "turns:turn.internal:5349"
        ])
    );
    assert_eq!(turn["credential_type"], "ephemeral");
    let username = turn["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, "uid_turn");
    let expiry: i64 = expiry.parse().unwrap();
    let (_, expected) = openchat_core::ticket::turn_credentials(b"coturn-shared-secret", "uid_turn", expiry);
    assert_eq!(turn["credential"], expected.as_str());
    // A text channel has no tickets.
    let response = reqwest::Client::new()
        .post(server.url("/v1/rtc/channels/ch_general/join-ticket"))
        .header("X-OpenChat-User-UID", "uid_turn")
        .json(&json!({"server_id": "srv_harbor"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "invalid_channel_type"
    );
    let response = reqwest::Client::new()
        .post(server.url("/v1/rtc/channels/vc_nowhere/join-ticket"))
        .header("X-OpenChat-User-UID", "uid_turn")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap()["code"]
                .as_str()
                .map(str::to_owned)
        ),
        (404, Some("channel_not_found".to_owned()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticket_minting_is_rate_limited_per_user() {
    let (_dir, server) = start();
    let mint = |uid: &'static str| {
        let url = server.url("/v1/rtc/channels/vc_general/join-ticket");
        async move {
            reqwest::Client::new()
                .post(url)
                .header("X-OpenChat-User-UID", uid)
                .json(&json!({"server_id": "srv_harbor"}))
                .send()
                .await
                .unwrap()
        }
    };
    for _ in 0..30 {
        assert_eq!(mint("uid_minter").await.status(), 200);
    }
    let refused = mint("uid_minter").await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(refused.json::<Value>().await.unwrap()["code"], "rate_limited");
    assert_eq!(
        mint("uid_other_user").await.status(),
        200,
        "the limit is per user"
    );
}
