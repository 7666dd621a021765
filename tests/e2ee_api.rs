//! The E2EE API through the real binary (headers mode), on both stores: e2ee channels,
//! membership and epochs, commits, envelope posts, membership-bound history and realtime
//! delivery, devices (revocation closes the device's socket), KeyPackages, key envelopes
//! with their realtime notice, backups, challenge/signature sessions; every error code the
//! contract names for these paths; and a trace-level log that contains none of the secrets
//! and blobs used.

#![allow(clippy::unwrap_used)]

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::{SinkExt, StreamExt};
use ring::signature::KeyPair as _;
use serde_json::{Value, json};
use support::{HANG_GUARD, Server, Store};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

type Ws = WebSocketStream<TcpStream>;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Every secret and blob the scenario uses, to grep the logs for.
#[derive(Default)]
struct Secrets(Vec<String>);

impl Secrets {
    fn blob(&mut self, label: &str) -> String {
        let value = b64(format!("secret-{label}-{}", uuid::Uuid::new_v4()).as_bytes());
        self.0.push(value.clone());
        value
    }
}

struct Api<'a> {
    server: &'a Server,
    http: reqwest::Client,
}

impl Api<'_> {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        who: (&str, &str),
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, self.server.url(path))
            .header("X-OpenChat-User-UID", who.0)
            .header("X-OpenChat-Device-ID", who.1);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, who: (&str, &str), body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, who, Some(body)).await
    }

    async fn get(&self, path: &str, who: (&str, &str)) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, who, None).await
    }

    async fn delete(&self, path: &str, who: (&str, &str)) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, path, who, None).await
    }
}

fn expect(got: (u16, Value), status: u16, code: &str) -> Value {
    assert_eq!(
        (got.0, got.1["code"].as_str().unwrap_or("")),
        (status, code),
        "{}",
        got.1
    );
    got.1
}

fn ok(got: (u16, Value), status: u16) -> Value {
    assert_eq!(got.0, status, "{}", got.1);
    got.1
}

async fn socket(server: &Server, user: &str, device: &str) -> Ws {
    let url = format!(
        "ws://{}/v1/realtime?server_id=srv_harbor&user_uid={user}&device_id={device}",
        server.addr
    );
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    ws
}

/// Events of `kind` received within `wait` (the socket must stay open).
async fn events_of(ws: &mut Ws, kind: &str, wait: std::time::Duration) -> Vec<Value> {
    let mut found = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, ws.next()).await {
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(text.as_str()).unwrap();
            if value["type"] == kind {
                found.push(value);
            }
        }
    }
    found
}

async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let message = tokio::time::timeout(HANG_GUARD, ws.next())
            .await
            .expect("an event within the hang guard")
            .expect("open")
            .expect("frame");
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(text.as_str()).unwrap();
            if value["type"] == kind {
                return value;
            }
        }
    }
}

const ALICE: (&str, &str) = ("uid_alice", "dev_alice");
const BOB: (&str, &str) = ("uid_bob", "dev_bob");
const CAROL: (&str, &str) = ("uid_carol", "dev_carol");

fn envelope(epoch: i64, device: &str, ciphertext: &str) -> Value {
    json!({"envelope": {"epoch_id": epoch, "sender_device_id": device, "ciphertext": ciphertext, "nonce": b64(b"nonce"), "aad": b64(b"aad")}})
}

#[test]
fn e2ee_api_enforces_the_contract_on_both_stores() {
    support::on_both_stores(scenario);
}

async fn scenario(store: Store) {
    let store = &store;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), store, &[("OPENCHAT_LOG", "trace")]);
    let api_owned = Api {
        server: &server,
        http: reqwest::Client::new(),
    };
    let api = &api_owned;
    let mut secrets = Secrets::default();

    // An e2ee text channel; voice channels cannot be.
    let created = ok(
        api.post(
            "/v1/servers/srv_harbor/channels",
            ALICE,
            json!({"name": "secret", "type": "text", "group_id": "grp_general", "e2ee": true}),
        )
        .await,
        201,
    );
    assert_eq!(created["channel"]["e2ee"], true);
    assert_eq!(created["channel"]["current_epoch"], 1);
    let channel = created["channel"]["id"].as_str().unwrap().to_owned();
    let ch = |path: &str| format!("/v1/channels/{channel}{path}");
    expect(
        api.post(
            "/v1/servers/srv_harbor/channels",
            ALICE,
            json!({"name": "v", "type": "voice", "group_id": "grp_general", "e2ee": true}),
        )
        .await,
        400,
        "invalid_channel_type",
    );

    // Devices: the body's device must be the caller's; keys are 32-byte Ed25519 keys.
    for (user, device) in [ALICE, BOB, CAROL] {
        let key = b64(&[user.len() as u8; 32]);
        let dev = ok(
            api.post(
                "/v1/devices",
                (user, device),
                json!({"device_id": device, "device_pubkey": key}),
            )
            .await,
            201,
        );
        assert_eq!(dev["device"]["status"], "active");
    }
    expect(
        api.post(
            "/v1/devices",
            ALICE,
            json!({"device_id": "dev_other", "device_pubkey": b64(&[1; 32])}),
        )
        .await,
        403,
        "device_mismatch",
    );
    expect(
        api.post(
            "/v1/devices",
            ("uid_alice", "dev_alice2"),
            json!({"device_id": "dev_alice2", "device_pubkey": b64(&[1; 5])}),
        )
        .await,
        400,
        "invalid_pubkey",
    );
    expect(
        api.post(
            "/v1/devices",
            ALICE,
            json!({"device_id": "dev_alice", "device_pubkey": b64(&[1; 32])}),
        )
        .await,
        409,
        "device_exists",
    );

    // Realtime: Bob watches the channel before he is a member.
    let mut bob_ws = socket(&server, "uid_bob", "dev_bob").await;
    bob_ws
        .send(Message::text(
            json!({"type": "chat.subscribe", "request_id": "s1", "payload": {"channel_id": channel}})
                .to_string(),
        ))
        .await
        .unwrap();
    next_of(&mut bob_ws, "chat.subscribed").await;

    // Posting needs the epoch's commit; the commit is the caller's device's.
    let first = secrets.blob("ciphertext-epoch-1");
    expect(
        api.post(&ch("/messages"), ALICE, envelope(1, "dev_alice", &first))
            .await,
        409,
        "epoch_commit_pending",
    );
    let payload = secrets.blob("commit-1");
    expect(
        api.post(
            &ch("/membership/commit"),
            ALICE,
            json!({"epoch_id": 1, "committer_device_id": "dev_bob", "commit_payload": payload, "signature": b64(b"s")}),
        )
        .await,
        403,
        "device_mismatch",
    );
    ok(
        api.post(
            &ch("/membership/commit"),
            ALICE,
            json!({"epoch_id": 1, "committer_device_id": "dev_alice", "commit_payload": payload, "signature": b64(b"s")}),
        )
        .await,
        201,
    );
    expect(
        api.post(
            &ch("/membership/commit"),
            ALICE,
            json!({"epoch_id": 1, "committer_device_id": "dev_alice", "commit_payload": payload, "signature": b64(b"s")}),
        )
        .await,
        409,
        "epoch_commit_exists",
    );
    expect(
        api.post(&ch("/messages"), ALICE, json!({"body": "plain words"}))
            .await,
        400,
        "plaintext_not_allowed",
    );
    expect(
        api.post(&ch("/messages"), ALICE, envelope(1, "dev_bob", &first))
            .await,
        403,
        "device_mismatch",
    );
    let posted = ok(
        api.post(&ch("/messages"), ALICE, envelope(1, "dev_alice", &first))
            .await,
        201,
    );
    assert!(
        posted["message"].get("body").is_none(),
        "an e2ee message has no body"
    );
    assert_eq!(posted["message"]["envelope"]["ciphertext"], first);
    expect(
        api.post(
            "/v1/channels/ch_general/messages",
            ALICE,
            envelope(1, "dev_alice", &first),
        )
        .await,
        400,
        "envelope_not_allowed",
    );
    // Bob, subscribed but no member, received nothing of it.
    assert!(
        events_of(
            &mut bob_ws,
            "chat.message.created",
            std::time::Duration::from_millis(300)
        )
        .await
        .is_empty(),
        "a non-member's socket got an e2ee message"
    );

    // Membership: Alice adds Bob (epoch 2); Bob is told; non-members are refused.
    expect(api.get(&ch("/epochs"), BOB).await, 403, "not_a_member");
    expect(api.get(&ch("/history"), BOB).await, 403, "not_a_member");
    expect(
        api.post(
            &ch("/members"),
            ("uid_dave", "dev_dave"),
            json!({"user_uid": "uid_bob"}),
        )
        .await,
        403,
        "not_a_member",
    );
    let added = ok(
        api.post(&ch("/members"), ALICE, json!({"user_uid": "uid_bob"}))
            .await,
        200,
    );
    assert_eq!(
        (added["from_epoch"].as_i64(), added["current_epoch"].as_i64()),
        (Some(2), Some(2))
    );
    let update = next_of(&mut bob_ws, "chat.membership.updated").await;
    assert_eq!(update["payload"]["change"], "join");
    expect(
        api.post(&ch("/members"), ALICE, json!({"user_uid": "uid_bob"}))
            .await,
        409,
        "already_member",
    );
    // A stale epoch tells the current one.
    let stale = expect(
        api.post(&ch("/messages"), ALICE, envelope(1, "dev_alice", &first))
            .await,
        409,
        "epoch_stale",
    );
    assert_eq!(stale["details"]["current_epoch"], 2);
    let payload2 = secrets.blob("commit-2");
    ok(
        api.post(
            &ch("/membership/commit"),
            BOB,
            json!({"epoch_id": 2, "committer_device_id": "dev_bob", "commit_payload": payload2, "signature": b64(b"s")}),
        )
        .await,
        201,
    );
    let committed = next_of(&mut bob_ws, "chat.epoch.committed").await;
    assert_eq!(committed["payload"]["epoch_id"], 2);
    let second = secrets.blob("ciphertext-epoch-2");
    ok(
        api.post(&ch("/messages"), ALICE, envelope(2, "dev_alice", &second))
            .await,
        201,
    );
    let live = next_of(&mut bob_ws, "chat.message.created").await;
    assert_eq!(live["payload"]["message"]["envelope"]["ciphertext"], second);
    // Resume replays through the same check: from the start of this boot, Bob gets the
    // epoch-2 message but not the epoch-1 one, Carol (no member) neither.
    let boot = update["event_id"]
        .as_str()
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .to_owned();
    for (user, device, expected) in [
        ("uid_bob", "dev_bob", vec![second.clone()]),
        ("uid_carol", "dev_carol", vec![]),
    ] {
        let url = format!(
            "ws://{}/v1/realtime?server_id=srv_harbor&user_uid={user}&device_id={device}&resume_from={boot}:1",
            server.addr
        );
        let stream = TcpStream::connect(server.addr).await.unwrap();
        let (mut replayed, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
        let got: Vec<String> = events_of(
            &mut replayed,
            "chat.message.created",
            std::time::Duration::from_millis(300),
        )
        .await
        .iter()
        .filter(|e| e["payload"]["message"]["channel_id"] == channel.as_str())
        .map(|e| {
            e["payload"]["message"]["envelope"]["ciphertext"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
        assert_eq!(got, expected, "replay for {user}");
    }
    // History for Bob: only epoch 2; for Alice: both. The WIRE messages route filters too.
    let history = ok(api.get(&ch("/history"), BOB).await, 200);
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["envelope"]["ciphertext"].as_str().unwrap())
        .collect();
    assert_eq!(texts, vec![second.as_str()]);
    assert_eq!(
        ok(api.get(&ch("/history"), ALICE).await, 200)["messages"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        ok(api.get(&ch("/messages"), BOB).await, 200)["messages"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    expect(
        api.get(&ch("/history?before=zz"), ALICE).await,
        400,
        "invalid_cursor",
    );
    let commit = ok(api.get(&ch("/epochs/2/commit"), BOB).await, 200);
    assert_eq!(commit["commit_payload"], payload2);
    expect(
        api.get(&ch("/epochs/1/commit"), CAROL).await,
        403,
        "not_a_member_of_epoch",
    );
    expect(
        api.get(&ch("/epochs/3/commit"), ALICE).await,
        404,
        "epoch_not_committed",
    );

    // KeyPackages: consumed once, the last resort kept.
    let (kp1, kp_last) = (secrets.blob("kp-1"), secrets.blob("kp-last"));
    expect(
        api.post(
            "/v1/keys/packages",
            CAROL,
            json!({"device_id": "dev_bob", "key_packages": [kp1]}),
        )
        .await,
        403,
        "device_mismatch",
    );
    let stored = ok(
        api.post(
            "/v1/keys/packages",
            CAROL,
            json!({"device_id": "dev_carol", "key_packages": [kp1], "last_resort": kp_last}),
        )
        .await,
        201,
    );
    assert_eq!(stored["stored"], 2);
    let claim = |n: u16| async move {
        let got = ok(
            api.post("/v1/keys/packages/claim", ALICE, json!({"user_uid": "uid_carol"}))
                .await,
            n,
        );
        got["packages"][0]["key_package"].as_str().unwrap().to_owned()
    };
    assert_eq!(claim(200).await, kp1);
    assert_eq!(claim(200).await, kp_last);
    assert_eq!(claim(200).await, kp_last);
    expect(
        api.post(
            "/v1/keys/packages/claim",
            ALICE,
            json!({"user_uid": "uid_nobody"}),
        )
        .await,
        404,
        "user_not_found",
    );

    // Carol joins at epoch 3: she gets the Welcome, never old envelopes or old ciphertext.
    let mut carol_ws = socket(&server, "uid_carol", "dev_carol").await;
    ok(
        api.post(&ch("/members"), ALICE, json!({"user_uid": "uid_carol"}))
            .await,
        200,
    );
    let welcome = secrets.blob("welcome-carol");
    let published = ok(
        api.post(
            "/v1/keys/envelopes/publish",
            ALICE,
            json!({"channel_id": channel, "epoch_id": 3, "envelopes": [
                {"target_device_id": "dev_carol", "encrypted_key_blob": welcome},
                {"target_device_id": "dev_ghost", "encrypted_key_blob": welcome}]}),
        )
        .await,
        201,
    );
    assert_eq!(published["accepted"], 1);
    assert_eq!(published["rejected"][0]["code"], "target_device_not_active");
    let notice = next_of(&mut carol_ws, "keys.envelopes.available").await;
    assert_eq!(
        (
            notice["payload"]["device_id"].as_str(),
            notice["payload"]["count"].as_i64()
        ),
        (Some("dev_carol"), Some(1))
    );
    let old = ok(
        api.post(
            "/v1/keys/envelopes/publish",
            ALICE,
            json!({"channel_id": channel, "epoch_id": 2, "envelopes": [{"target_device_id": "dev_carol", "encrypted_key_blob": welcome}]}),
        )
        .await,
        201,
    );
    assert_eq!(old["rejected"][0]["code"], "target_not_member_of_epoch");
    expect(
        api.post(
            "/v1/keys/envelopes/publish",
            CAROL,
            json!({"channel_id": channel, "epoch_id": 2, "envelopes": []}),
        )
        .await,
        403,
        "not_a_member_of_epoch",
    );
    let fetched = ok(
        api.get("/v1/keys/envelopes?device_id=dev_carol", CAROL).await,
        200,
    );
    let envelopes = fetched["envelopes"].as_array().unwrap();
    assert_eq!(envelopes.len(), 1);
    assert_eq!(envelopes[0]["encrypted_key_blob"], welcome);
    expect(
        api.get("/v1/keys/envelopes?device_id=dev_carol", BOB).await,
        403,
        "forbidden",
    );
    let acked = ok(
        api.post(
            "/v1/keys/envelopes/ack",
            CAROL,
            json!({"device_id": "dev_carol", "up_to_envelope_id": envelopes[0]["envelope_id"]}),
        )
        .await,
        200,
    );
    assert_eq!(acked["deleted"], 1);
    let carol_history = ok(api.get(&ch("/history"), CAROL).await, 200);
    assert!(
        carol_history["messages"].as_array().unwrap().is_empty(),
        "no ciphertext from before Carol"
    );

    // Bob leaves: epoch 4; his device can neither post nor read it.
    ok(api.delete(&ch("/members/uid_bob"), BOB).await, 200);
    expect(
        api.delete(&ch("/members/uid_bob"), ALICE).await,
        404,
        "member_not_found",
    );
    expect(
        api.delete(&ch("/members/uid_alice"), CAROL).await,
        403,
        "forbidden",
    );
    ok(
        api.post(
            &ch("/membership/commit"),
            ALICE,
            json!({"epoch_id": 4, "committer_device_id": "dev_alice", "commit_payload": secrets.blob("commit-4"), "signature": b64(b"s")}),
        )
        .await,
        201,
    );
    let fourth = secrets.blob("ciphertext-epoch-4");
    ok(
        api.post(&ch("/messages"), ALICE, envelope(4, "dev_alice", &fourth))
            .await,
        201,
    );
    expect(
        api.post(&ch("/messages"), BOB, envelope(4, "dev_bob", &fourth))
            .await,
        403,
        "not_a_member_of_epoch",
    );
    let bobs = ok(api.get(&ch("/history"), BOB).await, 200);
    assert!(
        bobs["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["envelope"]["epoch_id"] == 2),
        "{bobs}"
    );
    let rotated = ok(api.post(&ch("/epochs/rotate"), ALICE, json!({})).await, 200);
    assert_eq!(rotated["current_epoch"], 5);

    // Linking a second device; an expired or unknown request; revocation closes its socket.
    ok(
        api.post(
            "/v1/devices",
            ("uid_alice", "dev_alice_tab"),
            json!({"device_id": "dev_alice_tab", "device_pubkey": b64(&[7; 32])}),
        )
        .await,
        201,
    );
    expect(
        api.post(
            "/v1/devices/link/start",
            ALICE,
            json!({"new_device_id": "dev_alice"}),
        )
        .await,
        409,
        "device_not_pending",
    );
    let link = ok(
        api.post(
            "/v1/devices/link/start",
            ("uid_alice", "dev_alice_tab"),
            json!({"new_device_id": "dev_alice_tab"}),
        )
        .await,
        201,
    );
    expect(
        api.post(
            "/v1/devices/link/confirm",
            ALICE,
            json!({"request_id": "lnk_nothere", "approve": true}),
        )
        .await,
        404,
        "link_request_not_found",
    );
    expect(
        api.post(
            "/v1/devices/link/confirm",
            ("uid_alice", "dev_alice_tab"),
            json!({"request_id": link["request_id"], "approve": true}),
        )
        .await,
        403,
        "device_not_active",
    );
    let linked = ok(
        api.post(
            "/v1/devices/link/confirm",
            ALICE,
            json!({"request_id": link["request_id"], "approve": true}),
        )
        .await,
        200,
    );
    assert_eq!(linked["status"], "active");
    let mut tab_ws = socket(&server, "uid_alice", "dev_alice_tab").await;
    tab_ws
        .send(Message::text(
            json!({"type": "chat.subscribe", "request_id": "s2", "payload": {"channel_id": channel}})
                .to_string(),
        ))
        .await
        .unwrap();
    next_of(&mut tab_ws, "chat.subscribed").await;
    expect(
        api.delete("/v1/devices/dev_bob", ALICE).await,
        404,
        "device_not_found",
    );
    let revoked = ok(api.delete("/v1/devices/dev_alice_tab", ALICE).await, 200);
    assert_eq!(revoked["status"], "revoked");
    let closed = tokio::time::timeout(HANG_GUARD, async {
        loop {
            match tab_ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await
    .unwrap();
    assert!(closed, "the revoked device's socket was closed");
    expect(
        api.get(
            "/v1/keys/envelopes?device_id=dev_alice_tab",
            ("uid_alice", "dev_alice_tab"),
        )
        .await,
        403,
        "device_not_active",
    );

    // Size limits of key material (decoded bytes), and the claim rate limit per caller.
    let big = |bytes: usize| b64(&vec![7u8; bytes]);
    expect(
        api.post(
            &ch("/membership/commit"),
            ALICE,
            json!({"epoch_id": 5, "committer_device_id": "dev_alice", "commit_payload": big(256 * 1024 + 1), "signature": b64(b"s")}),
        )
        .await,
        413,
        "payload_too_large",
    );
    expect(
        api.post(
            "/v1/keys/packages",
            CAROL,
            json!({"device_id": "dev_carol", "key_packages": [big(16 * 1024 + 1)]}),
        )
        .await,
        413,
        "payload_too_large",
    );
    expect(
        api.post(
            "/v1/keys/backups",
            CAROL,
            json!({"ciphertext_blob": big(1024 * 1024 + 1), "kdf_metadata": {}}),
        )
        .await,
        413,
        "payload_too_large",
    );
    let mut limited = false;
    for _ in 0..40 {
        let (status, body) = api
            .post(
                "/v1/keys/packages/claim",
                ("uid_zed", "dev_zed"),
                json!({"user_uid": "uid_carol"}),
            )
            .await;
        if status == 429 {
            assert_eq!(body["code"], "rate_limited");
            limited = true;
            break;
        }
        assert_eq!(status, 200, "{body}");
    }
    assert!(limited, "KeyPackage claims are rate-limited per caller");

    // Backups.
    expect(
        api.get("/v1/keys/backups/latest", CAROL).await,
        404,
        "backup_not_found",
    );
    let backup = secrets.blob("backup");
    ok(
        api.post(
            "/v1/keys/backups",
            CAROL,
            json!({"ciphertext_blob": backup, "kdf_metadata": {"alg": "argon2id", "salt": "x"}}),
        )
        .await,
        201,
    );
    let latest = ok(api.get("/v1/keys/backups/latest", CAROL).await, 200);
    assert_eq!(latest["ciphertext_blob"], backup);
    assert_eq!(latest["kdf_metadata"]["alg"], "argon2id");

    // Challenge/signature sessions with a real Ed25519 key.
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let key = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let pubkey = b64(key.public_key().as_ref());
    let challenge = |user: &str, device: &str| {
        let body = json!({"user_uid": user, "device_id": device});
        async move { ok(api.post("/v1/auth/challenge", ("", ""), body).await, 201) }
    };
    let sign = |c: &Value, user: &str, device: &str, key: &ring::signature::Ed25519KeyPair| {
        let transcript = [
            "openchat-auth-v1",
            c["server_id"].as_str().unwrap(),
            c["challenge_id"].as_str().unwrap(),
            c["nonce"].as_str().unwrap(),
            user,
            device,
        ]
        .join("\n");
        b64(key.sign(transcript.as_bytes()).as_ref())
    };
    let c1 = challenge("uid_erin", "dev_erin").await;
    assert_eq!(c1["server_id"], "srv_harbor");
    let session_body = |c: &Value, signature: String| json!({"challenge_id": c["challenge_id"], "user_uid": "uid_erin", "device_id": "dev_erin", "device_pubkey": pubkey, "signature": signature});
    let bad_sig = sign(&c1, "uid_erin", "dev_other", &key);
    expect(
        api.post("/v1/auth/session", ("", ""), session_body(&c1, bad_sig))
            .await,
        401,
        "signature_invalid",
    );
    let good = sign(&c1, "uid_erin", "dev_erin", &key);
    let session = ok(
        api.post("/v1/auth/session", ("", ""), session_body(&c1, good.clone()))
            .await,
        201,
    );
    assert_eq!(session["scope"], "full");
    let token = session["session_token"].as_str().unwrap().to_owned();
    secrets.0.push(token.clone());
    expect(
        api.post("/v1/auth/session", ("", ""), session_body(&c1, good))
            .await,
        401,
        "challenge_invalid",
    );
    let revoke = |token: String| {
        let request = api.http.delete(server.url("/v1/auth/session")).bearer_auth(token);
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    ok(revoke(token.clone()).await, 200);
    expect(revoke(token).await, 401, "session_invalid");

    // No secret, blob, ciphertext or token ever reached the log (trace level).
    let (status, rest) = {
        let log = server.log.clone();
        let (status, rest) = server.terminate();
        (status, log.into_iter().chain(rest).collect::<Vec<String>>())
    };
    assert!(status.success());
    assert!(rest.len() > 20, "trace logging was on ({} lines)", rest.len());
    for secret in &secrets.0 {
        let leaked: Vec<&String> = rest
            .iter()
            .filter(|line| line.contains(secret.as_str()))
            .collect();
        assert!(leaked.is_empty(), "a secret reached the log: {leaked:?}");
    }
}

/// Issue 15: outside production any user could add itself to any e2ee channel and then
/// rotate its epoch at will, so every real member's next post failed with `epoch_stale`.
/// Self-join is the operator's choice (`OPENCHAT_E2EE_SELF_JOIN`, default off in every mode)
/// and rotations are rate-limited per member.
#[test]
fn self_join_needs_the_operator_switch_and_rotations_are_rate_limited_on_both_stores() {
    support::on_both_stores(self_join_and_rotation);
}

async fn self_join_and_rotation(store: Store) {
    let store = &store;
    const MALLORY: (&str, &str) = ("uid_mallory", "dev_mallory");
    for (self_join, env) in [
        (None, "development"),
        (Some("false"), "development"),
        (Some("true"), "production"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = vec![
            ("OPENCHAT_ENV", env),
            ("OPENCHAT_JOIN_TICKET_SECRET", "a-test-secret-of-enough-bytes"),
        ];
        if let Some(value) = self_join {
            settings.push(("OPENCHAT_E2EE_SELF_JOIN", value));
        }
        let server = Server::start(dir.path(), store, &settings);
        let api = Api {
            server: &server,
            http: reqwest::Client::new(),
        };
        let created = ok(
            api.post(
                "/v1/servers/srv_harbor/channels",
                ALICE,
                json!({"name": "private", "type": "text", "group_id": "grp_general", "e2ee": true}),
            )
            .await,
            201,
        );
        let channel = created["channel"]["id"].as_str().unwrap().to_owned();
        let ch = |path: &str| format!("/v1/channels/{channel}{path}");
        let joined = api
            .post(&ch("/members"), MALLORY, json!({"user_uid": MALLORY.0}))
            .await;
        if self_join == Some("true") {
            ok(joined, 200);
        } else {
            expect(joined, 403, "not_a_member");
            // Not a member: no rotation either.
            expect(
                api.post(&ch("/epochs/rotate"), ("uid_eve", "dev_eve"), json!({}))
                    .await,
                403,
                "not_a_member",
            );
            // A member adds Mallory the regular way.
            ok(
                api.post(&ch("/members"), ALICE, json!({"user_uid": MALLORY.0}))
                    .await,
                200,
            );
        }
        // A member may rotate a few times, then must wait; other members are not held up.
        for _ in 0..openchat_core::limits::EPOCH_ROTATIONS_BURST_MAX {
            ok(api.post(&ch("/epochs/rotate"), MALLORY, json!({})).await, 200);
        }
        let response = api
            .http
            .post(server.url(&ch("/epochs/rotate")))
            .header("X-OpenChat-User-UID", MALLORY.0)
            .header("X-OpenChat-Device-ID", MALLORY.1)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 429);
        let retry: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry >= 1, "{retry}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "rate_limited");
        ok(api.post(&ch("/epochs/rotate"), ALICE, json!({})).await, 200);
    }
}
