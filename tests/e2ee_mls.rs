//! Real MLS group encryption (openmls, a test-only dependency) over the server's HTTP API
//! only: KeyPackages travel by publish/claim, commits by commit/fetch, Welcomes as key
//! envelopes, application messages as e2ee message envelopes. No MLS object passes between
//! the simulated clients in-process.
//!
//! Alice creates an e2ee channel and commits epoch 1; she claims Bob's KeyPackage, adds him,
//! commits and sends his Welcome as an envelope; both post and Bob decrypts Alice. Carol
//! joins later: Bob advances his MLS state from the fetched commit and decrypts Carol's post,
//! while Carol gets neither the old ciphertext nor old envelopes. Bob leaves, the epoch
//! rotates, and his device can neither post nor read the new epoch.

#![allow(clippy::unwrap_used)]

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::signatures::Signer as _;
use serde_json::{Value, json};
use support::{Server, Store};

const SUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).unwrap()
}

/// One user's device: an MLS client and its HTTP identity.
struct Client {
    user: &'static str,
    device: &'static str,
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
    group: Option<MlsGroup>,
}

impl Client {
    fn new(user: &'static str, device: &'static str) -> Self {
        let provider = OpenMlsRustCrypto::default();
        let signer = SignatureKeyPair::new(SUITE.signature_algorithm()).unwrap();
        signer.store(provider.storage()).unwrap();
        let credential = CredentialWithKey {
            credential: BasicCredential::new(user.as_bytes().to_vec()).into(),
            signature_key: signer.to_public_vec().into(),
        };
        Self {
            user,
            device,
            provider,
            signer,
            credential,
            group: None,
        }
    }

    fn group(&mut self) -> &mut MlsGroup {
        self.group.as_mut().unwrap()
    }

    fn key_package(&self) -> String {
        let bundle = KeyPackage::builder()
            .build(SUITE, &self.provider, &self.signer, self.credential.clone())
            .unwrap();
        b64(&bundle.key_package().tls_serialize_detached().unwrap())
    }

    fn encrypt(&mut self, text: &str) -> String {
        let (provider, signer) = (&self.provider, &self.signer);
        let message = self
            .group
            .as_mut()
            .unwrap()
            .create_message(provider, signer, text.as_bytes())
            .unwrap();
        b64(&message.to_bytes().unwrap())
    }

    /// Processes a fetched MLS message: an application message's plaintext, or a commit
    /// merged (then `None`).
    fn process(&mut self, bytes: &[u8]) -> Result<Option<String>, String> {
        let message = MlsMessageIn::tls_deserialize_exact(bytes).map_err(|e| e.to_string())?;
        let protocol = message.try_into_protocol_message().map_err(|e| e.to_string())?;
        let provider = &self.provider;
        let group = self.group.as_mut().unwrap();
        let processed = group
            .process_message(provider, protocol)
            .map_err(|e| e.to_string())?;
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(app) => {
                Ok(Some(String::from_utf8(app.into_bytes()).unwrap()))
            }
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                group
                    .merge_staged_commit(provider, *staged)
                    .map_err(|e| e.to_string())?;
                Ok(None)
            }
            _ => Err("unexpected MLS content".into()),
        }
    }

    fn join(&mut self, welcome: &[u8]) {
        let MlsMessageBodyIn::Welcome(welcome) =
            MlsMessageIn::tls_deserialize_exact(welcome).unwrap().extract()
        else {
            panic!("the envelope is not a Welcome");
        };
        let config = MlsGroupJoinConfig::builder()
            .use_ratchet_tree_extension(true)
            .build();
        let staged = StagedWelcome::new_from_welcome(&self.provider, &config, welcome, None).unwrap();
        self.group = Some(staged.into_group(&self.provider).unwrap());
    }

    fn who(&self) -> (&'static str, &'static str) {
        (self.user, self.device)
    }
}

struct Http<'a> {
    server: &'a Server,
    client: reqwest::Client,
}

impl Http<'_> {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        who: (&str, &str),
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, self.server.url(path))
            .header("X-OpenChat-User-UID", who.0)
            .header("X-OpenChat-Device-ID", who.1);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn ok(&self, method: reqwest::Method, path: &str, who: (&str, &str), body: Option<Value>) -> Value {
        let (status, value) = self.call(method, path, who, body).await;
        assert!((200..300).contains(&status), "{path}: {status} {value}");
        value
    }
}

/// Signs and posts the commit of `epoch`.
async fn post_commit(http: &Http<'_>, channel: &str, client: &Client, epoch: i64, commit: &[u8]) {
    let signature = client.signer.sign(commit).unwrap();
    http.ok(
        reqwest::Method::POST,
        &format!("/v1/channels/{channel}/membership/commit"),
        client.who(),
        Some(json!({"epoch_id": epoch, "committer_device_id": client.device, "commit_payload": b64(commit), "signature": b64(&signature)})),
    )
    .await;
}

async fn post_message(
    http: &Http<'_>,
    channel: &str,
    client: &mut Client,
    epoch: i64,
    text: &str,
) -> (u16, Value) {
    let ciphertext = client.encrypt(text);
    let body = json!({"envelope": {"epoch_id": epoch, "sender_device_id": client.device, "ciphertext": ciphertext, "nonce": "", "aad": ""}});
    http.call(
        reqwest::Method::POST,
        &format!("/v1/channels/{channel}/messages"),
        client.who(),
        Some(body),
    )
    .await
}

async fn history(http: &Http<'_>, channel: &str, who: (&str, &str)) -> Vec<(i64, Vec<u8>)> {
    let page = http
        .ok(
            reqwest::Method::GET,
            &format!("/v1/channels/{channel}/history?limit=200"),
            who,
            None,
        )
        .await;
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["envelope"]["epoch_id"].as_i64().unwrap(),
                unb64(m["envelope"]["ciphertext"].as_str().unwrap()),
            )
        })
        .collect()
}

/// Adds `who` to the channel (server epoch advances) and to Alice's MLS group with the
/// KeyPackage claimed over HTTP; posts the commit and the Welcome envelope.
async fn add(http: &Http<'_>, channel: &str, alice: &mut Client, who: &Client) -> i64 {
    let added = http
        .ok(
            reqwest::Method::POST,
            &format!("/v1/channels/{channel}/members"),
            alice.who(),
            Some(json!({"user_uid": who.user})),
        )
        .await;
    let epoch = added["current_epoch"].as_i64().unwrap();
    let claimed = http
        .ok(
            reqwest::Method::POST,
            "/v1/keys/packages/claim",
            alice.who(),
            Some(json!({"user_uid": who.user})),
        )
        .await;
    let bytes = unb64(claimed["packages"][0]["key_package"].as_str().unwrap());
    let key_package = KeyPackageIn::tls_deserialize_exact(bytes.as_slice())
        .unwrap()
        .validate(alice.provider.crypto(), ProtocolVersion::Mls10)
        .unwrap();
    let (provider, signer) = (&alice.provider, &alice.signer);
    let group = alice.group.as_mut().unwrap();
    let (commit, welcome, _) = group.add_members(provider, signer, &[key_package]).unwrap();
    group.merge_pending_commit(provider).unwrap();
    post_commit(http, channel, alice, epoch, &commit.to_bytes().unwrap()).await;
    let published = http
        .ok(
            reqwest::Method::POST,
            "/v1/keys/envelopes/publish",
            alice.who(),
            Some(json!({"channel_id": channel, "epoch_id": epoch, "envelopes": [
                {"target_device_id": who.device, "encrypted_key_blob": b64(&welcome.to_bytes().unwrap())}]})),
        )
        .await;
    assert_eq!(published["accepted"], 1, "{published}");
    epoch
}

/// The newest Welcome queued for a device, fetched and acknowledged over HTTP.
async fn take_welcome(http: &Http<'_>, client: &Client) -> Vec<u8> {
    let fetched = http
        .ok(
            reqwest::Method::GET,
            &format!("/v1/keys/envelopes?device_id={}", client.device),
            client.who(),
            None,
        )
        .await;
    let envelopes = fetched["envelopes"].as_array().unwrap();
    assert_eq!(envelopes.len(), 1, "{fetched}");
    http.ok(
        reqwest::Method::POST,
        "/v1/keys/envelopes/ack",
        client.who(),
        Some(json!({"device_id": client.device, "up_to_envelope_id": envelopes[0]["envelope_id"]})),
    )
    .await;
    unb64(envelopes[0]["encrypted_key_blob"].as_str().unwrap())
}

#[test]
fn mls_clients_talk_through_the_server_and_history_follows_membership() {
    support::on_both_stores(scenario);
}

async fn scenario(store: Store) {
    let store = &store;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), store, &[]);
    let http = Http {
        server: &server,
        client: reqwest::Client::new(),
    };
    let (mut alice, mut bob, mut carol) = (
        Client::new("uid_alice", "dev_alice"),
        Client::new("uid_bob", "dev_bob"),
        Client::new("uid_carol", "dev_carol"),
    );
    for client in [&alice, &bob, &carol] {
        http.ok(
            reqwest::Method::POST,
            "/v1/devices",
            client.who(),
            Some(json!({"device_id": client.device, "device_pubkey": b64(&client.signer.to_public_vec())})),
        )
        .await;
        http.ok(
            reqwest::Method::POST,
            "/v1/keys/packages",
            client.who(),
            Some(json!({"device_id": client.device, "key_packages": [client.key_package()]})),
        )
        .await;
    }

    // Alice: the channel, her group, and the commit of epoch 1.
    let created = http
        .ok(
            reqwest::Method::POST,
            "/v1/servers/srv_harbor/channels",
            alice.who(),
            Some(json!({"name": "mls", "type": "text", "group_id": "grp_general", "e2ee": true})),
        )
        .await;
    let channel = created["channel"]["id"].as_str().unwrap().to_owned();
    let config = MlsGroupCreateConfig::builder()
        .ciphersuite(SUITE)
        .use_ratchet_tree_extension(true)
        .build();
    alice.group =
        Some(MlsGroup::new(&alice.provider, &alice.signer, &config, alice.credential.clone()).unwrap());
    let (provider, signer) = (&alice.provider, &alice.signer);
    let bundle = alice
        .group
        .as_mut()
        .unwrap()
        .self_update(provider, signer, LeafNodeParameters::default())
        .unwrap();
    let (commit, _, _) = bundle.into_messages();
    alice
        .group
        .as_mut()
        .unwrap()
        .merge_pending_commit(provider)
        .unwrap();
    post_commit(&http, &channel, &alice, 1, &commit.to_bytes().unwrap()).await;
    let (status, _) = post_message(&http, &channel, &mut alice, 1, "before Bob").await;
    assert_eq!(status, 201);

    // Bob: claimed, added, welcomed; both post; Bob reads Alice.
    let epoch = add(&http, &channel, &mut alice, &bob).await;
    assert_eq!(epoch, 2);
    bob.join(&take_welcome(&http, &bob).await);
    assert_eq!(
        post_message(&http, &channel, &mut alice, 2, "hello Bob").await.0,
        201
    );
    assert_eq!(
        post_message(&http, &channel, &mut bob, 2, "hello Alice").await.0,
        201
    );
    let seen_by_bob = history(&http, &channel, bob.who()).await;
    assert_eq!(seen_by_bob.len(), 2, "Bob sees epoch 2 only");
    assert!(seen_by_bob.iter().all(|(epoch, _)| *epoch == 2));
    assert_eq!(
        bob.process(&seen_by_bob[0].1).unwrap().as_deref(),
        Some("hello Bob")
    );
    let seen_by_alice = history(&http, &channel, alice.who()).await;
    assert_eq!(seen_by_alice.len(), 3);
    assert_eq!(
        alice.process(&seen_by_alice[2].1).unwrap().as_deref(),
        Some("hello Alice")
    );

    // Carol joins at epoch 3: Bob advances from the fetched commit and reads Carol.
    let epoch = add(&http, &channel, &mut alice, &carol).await;
    assert_eq!(epoch, 3);
    let commit3 = http
        .ok(
            reqwest::Method::GET,
            &format!("/v1/channels/{channel}/epochs/3/commit"),
            bob.who(),
            None,
        )
        .await;
    assert_eq!(
        bob.process(&unb64(commit3["commit_payload"].as_str().unwrap()))
            .unwrap(),
        None
    );
    carol.join(&take_welcome(&http, &carol).await);
    assert_eq!(
        post_message(&http, &channel, &mut carol, 3, "hi all, Carol here")
            .await
            .0,
        201
    );
    let seen_by_bob = history(&http, &channel, bob.who()).await;
    let carols = seen_by_bob.iter().find(|(epoch, _)| *epoch == 3).unwrap();
    assert_eq!(
        bob.process(&carols.1).unwrap().as_deref(),
        Some("hi all, Carol here")
    );
    // Carol: none of the old ciphertext, no old commit, no old envelope.
    let seen_by_carol = history(&http, &channel, carol.who()).await;
    assert_eq!(seen_by_carol.len(), 1);
    assert_eq!(seen_by_carol[0].0, 3);
    let (status, _) = http
        .call(
            reqwest::Method::GET,
            &format!("/v1/channels/{channel}/epochs/2/commit"),
            carol.who(),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let old = http
        .ok(
            reqwest::Method::POST,
            "/v1/keys/envelopes/publish",
            alice.who(),
            Some(json!({"channel_id": channel, "epoch_id": 2, "envelopes": [{"target_device_id": "dev_carol", "encrypted_key_blob": b64(b"old epoch key")}]})),
        )
        .await;
    assert_eq!(old["rejected"][0]["code"], "target_not_member_of_epoch");
    let queued = http
        .ok(
            reqwest::Method::GET,
            "/v1/keys/envelopes?device_id=dev_carol",
            carol.who(),
            None,
        )
        .await;
    assert!(queued["envelopes"].as_array().unwrap().is_empty());

    // Bob leaves: epoch 4, Alice removes him from the MLS group, Carol follows the commit.
    let left = http
        .ok(
            reqwest::Method::DELETE,
            &format!("/v1/channels/{channel}/members/uid_bob"),
            bob.who(),
            None,
        )
        .await;
    assert_eq!(left["current_epoch"], 4);
    let bob_leaf = alice
        .group()
        .members()
        .find(|m| m.credential.serialized_content() == b"uid_bob")
        .unwrap()
        .index;
    let (provider, signer) = (&alice.provider, &alice.signer);
    let group = alice.group.as_mut().unwrap();
    let (commit, _, _) = group.remove_members(provider, signer, &[bob_leaf]).unwrap();
    group.merge_pending_commit(provider).unwrap();
    post_commit(&http, &channel, &alice, 4, &commit.to_bytes().unwrap()).await;
    let commit4 = http
        .ok(
            reqwest::Method::GET,
            &format!("/v1/channels/{channel}/epochs/4/commit"),
            carol.who(),
            None,
        )
        .await;
    assert_eq!(
        carol
            .process(&unb64(commit4["commit_payload"].as_str().unwrap()))
            .unwrap(),
        None
    );
    let (status, posted) = post_message(&http, &channel, &mut alice, 4, "after Bob").await;
    assert_eq!(status, 201);
    let seen_by_carol = history(&http, &channel, carol.who()).await;
    let last = seen_by_carol.last().unwrap();
    assert_eq!(last.0, 4);
    assert_eq!(carol.process(&last.1).unwrap().as_deref(), Some("after Bob"));
    // Bob's device can neither post in epoch 4 nor read it, and could not decrypt it anyway.
    let (status, refused) = post_message(&http, &channel, &mut bob, 4, "still here?").await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (403, Some("not_a_member_of_epoch"))
    );
    let seen_by_bob = history(&http, &channel, bob.who()).await;
    assert!(
        seen_by_bob.iter().all(|(epoch, _)| *epoch <= 3),
        "Bob reads nothing of epoch 4"
    );
    let ciphertext = unb64(posted["message"]["envelope"]["ciphertext"].as_str().unwrap());
    assert!(
        bob.process(&ciphertext).is_err(),
        "a removed member cannot decrypt the new epoch"
    );
}
