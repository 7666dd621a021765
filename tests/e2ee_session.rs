//! `OPENCHAT_AUTH=session` through the real binary (E2EE.md §4): bearer sessions from signed
//! challenges on every authed route, identity headers that must match, link-scoped sessions
//! for pending devices, the realtime socket's first-frame `chat.auth`, and revocation
//! (a revoked token and a revoked device's tokens stop working; its socket closes).

#![allow(clippy::unwrap_used)]

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::{SinkExt, StreamExt};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde_json::{Value, json};
use support::{HANG_GUARD, Server, Store};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

type Ws = WebSocketStream<TcpStream>;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

async fn request(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, Value) {
    let mut builder = reqwest::Client::new().request(method, server.url(path));
    if let Some(token) = token {
        builder = builder.bearer_auth(token);
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    if let Some(body) = body {
        builder = builder.json(&body);
    }
    let response = builder.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Asks for a challenge and opens a session signed with `key`: the answer as it came.
async fn try_sign_in(server: &Server, user: &str, device: &str, key: &Ed25519KeyPair) -> (u16, Value) {
    let (status, challenge) = request(
        server,
        reqwest::Method::POST,
        "/v1/auth/challenge",
        None,
        &[],
        Some(json!({"user_uid": user, "device_id": device})),
    )
    .await;
    assert_eq!(status, 201, "{challenge}");
    let transcript = [
        "openchat-auth-v1",
        challenge["server_id"].as_str().unwrap(),
        challenge["challenge_id"].as_str().unwrap(),
        challenge["nonce"].as_str().unwrap(),
        user,
        device,
    ]
    .join("\n");
    let body = json!({
        "challenge_id": challenge["challenge_id"],
        "user_uid": user,
        "device_id": device,
        "device_pubkey": b64(key.public_key().as_ref()),
        "signature": b64(key.sign(transcript.as_bytes()).as_ref()),
    });
    request(
        server,
        reqwest::Method::POST,
        "/v1/auth/session",
        None,
        &[],
        Some(body),
    )
    .await
}

/// Signs in `device` of `user` with `key`; returns (token, scope).
async fn sign_in(server: &Server, user: &str, device: &str, key: &Ed25519KeyPair) -> (String, String) {
    let (status, session) = try_sign_in(server, user, device, key).await;
    assert_eq!(status, 201, "{session}");
    (
        session["session_token"].as_str().unwrap().to_owned(),
        session["scope"].as_str().unwrap().to_owned(),
    )
}

fn key() -> Ed25519KeyPair {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
}

async fn socket(server: &Server) -> Ws {
    let url = format!("ws://{}/v1/realtime?server_id=srv_harbor", server.addr);
    let stream = TcpStream::connect(server.addr).await.unwrap();
    tokio_tungstenite::client_async(url, stream).await.unwrap().0
}

async fn next_text(ws: &mut Ws) -> Option<Value> {
    loop {
        match tokio::time::timeout(HANG_GUARD, ws.next()).await.unwrap() {
            Some(Ok(Message::Text(text))) => return Some(serde_json::from_str(text.as_str()).unwrap()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

async fn closes(ws: &mut Ws) -> bool {
    tokio::time::timeout(HANG_GUARD, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_requires_signed_sessions_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &Store::Sqlite, &[("OPENCHAT_AUTH", "session")]);
    let get = reqwest::Method::GET;

    let (_, caps) = request(&server, get.clone(), "/v1/client/capabilities", None, &[], None).await;
    assert_eq!(caps["identity_handshake_modes"], json!(["challenge_signature"]));

    // No token, a made-up token, a token with someone else's headers: refused.
    let (status, body) = request(&server, get.clone(), "/v1/profile/me", None, &[], None).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("session_invalid")));
    let (status, body) = request(
        &server,
        get.clone(),
        "/v1/profile/me",
        None,
        &[("X-OpenChat-User-UID", "uid_alice")],
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("session_invalid")),
        "headers alone are not enough"
    );
    let (status, body) = request(
        &server,
        get.clone(),
        "/v1/profile/me",
        Some("ocs_madeup"),
        &[],
        None,
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (401, Some("session_invalid")));

    let alice_key = key();
    let (alice, scope) = sign_in(&server, "uid_alice", "dev_alice", &alice_key).await;
    assert_eq!(scope, "full", "a user's first device is active");
    let (status, me) = request(&server, get.clone(), "/v1/profile/me", Some(&alice), &[], None).await;
    assert_eq!(
        (status, me["user_uid"].as_str()),
        (200, Some("uid_alice")),
        "{me}"
    );
    let matching = [
        ("X-OpenChat-User-UID", "uid_alice"),
        ("X-OpenChat-Device-ID", "dev_alice"),
    ];
    let (status, _) = request(
        &server,
        get.clone(),
        "/v1/profile/me",
        Some(&alice),
        &matching,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = request(
        &server,
        get.clone(),
        "/v1/profile/me",
        Some(&alice),
        &[("X-OpenChat-User-UID", "uid_mallory")],
        None,
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (401, Some("identity_mismatch")));

    // A second device is pending: its session may only list devices and ask for a link.
    let (tab, scope) = sign_in(&server, "uid_alice", "dev_alice_tab", &key()).await;
    assert_eq!(scope, "link");
    let (status, _) = request(&server, get.clone(), "/v1/devices", Some(&tab), &[], None).await;
    assert_eq!(status, 200);
    let (status, body) = request(&server, get.clone(), "/v1/profile/me", Some(&tab), &[], None).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("scope_insufficient")));
    let (status, link) = request(
        &server,
        reqwest::Method::POST,
        "/v1/devices/link/start",
        Some(&tab),
        &[],
        Some(json!({"new_device_id": "dev_alice_tab"})),
    )
    .await;
    assert_eq!(status, 201, "{link}");
    // A known device must sign with its registered key.
    let (status, body) = try_sign_in(&server, "uid_alice", "dev_alice", &key()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("device_key_mismatch"))
    );
    // Alice's active device approves; the tab's same token is now a full session.
    let (status, confirmed) = request(
        &server,
        reqwest::Method::POST,
        "/v1/devices/link/confirm",
        Some(&alice),
        &[],
        Some(json!({"request_id": link["request_id"], "approve": true})),
    )
    .await;
    assert_eq!((status, confirmed["status"].as_str()), (200, Some("active")));
    let (status, _) = request(&server, get.clone(), "/v1/profile/me", Some(&tab), &[], None).await;
    assert_eq!(status, 200);

    // Realtime: the first frame must be chat.auth with a live session.
    let mut anonymous = socket(&server).await;
    anonymous
        .send(Message::text(
            json!({"type": "chat.subscribe", "payload": {"channel_id": "ch_general"}}).to_string(),
        ))
        .await
        .unwrap();
    let refused = next_text(&mut anonymous).await.unwrap();
    assert_eq!(
        (refused["type"].as_str(), refused["payload"]["code"].as_str()),
        (Some("chat.error"), Some("session_invalid"))
    );
    assert!(closes(&mut anonymous).await);
    let mut tab_ws = socket(&server).await;
    tab_ws
        .send(Message::text(
            json!({"type": "chat.auth", "payload": {"session_token": tab}}).to_string(),
        ))
        .await
        .unwrap();
    let authed = next_text(&mut tab_ws).await.unwrap();
    assert_eq!(
        (authed["type"].as_str(), authed["payload"]["device_id"].as_str()),
        (Some("chat.authenticated"), Some("dev_alice_tab"))
    );
    tab_ws
        .send(Message::text(
            json!({"type": "chat.subscribe", "request_id": "s", "payload": {"channel_id": "ch_general"}})
                .to_string(),
        ))
        .await
        .unwrap();
    loop {
        let event = next_text(&mut tab_ws).await.unwrap();
        if event["type"] == "chat.subscribed" {
            break;
        }
    }

    // Revoking the tab: its socket closes and its token stops working.
    let (status, _) = request(
        &server,
        reqwest::Method::DELETE,
        "/v1/devices/dev_alice_tab",
        Some(&alice),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(closes(&mut tab_ws).await, "the revoked device's socket closes");
    let (status, body) = request(&server, get.clone(), "/v1/profile/me", Some(&tab), &[], None).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("session_invalid")));
    // A revoked device cannot sign in again.
    let (status, body) = try_sign_in(&server, "uid_alice", "dev_alice_tab", &key()).await;
    assert!(
        matches!(
            (status, body["code"].as_str()),
            (403, Some("device_revoked")) | (401, Some("device_key_mismatch"))
        ),
        "{status} {body}"
    );

    // Signing out ends the session.
    let (status, _) = request(
        &server,
        reqwest::Method::DELETE,
        "/v1/auth/session",
        Some(&alice),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = request(&server, get, "/v1/profile/me", Some(&alice), &[], None).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("session_invalid")));
}
