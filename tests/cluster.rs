//! Cluster mode (several nodes on one Postgres and one NATS): start-up rules, and a node's
//! NATS connection as `/readyz` reports it, through a NATS outage.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;

use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};
use support::peer::{close_code, join, mint, rooms_on};
use support::{HANG_GUARD, NatsServer, PgDatabase, Server, Store, call, client, eventually, postgres_url};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

type Ws = WebSocketStream<TcpStream>;

fn node(dir: &std::path::Path, db: &PgDatabase, nats: &NatsServer, id: &str) -> Server {
    node_with(dir, db, nats, id, &[])
}

fn node_with(
    dir: &std::path::Path,
    db: &PgDatabase,
    nats: &NatsServer,
    id: &str,
    extra: &[(&str, &str)],
) -> Server {
    let url = nats.url();
    let mut env = vec![
        ("OPENCHAT_NATS_URL", url.as_str()),
        ("OPENCHAT_NODE_ID", id),
        ("OPENCHAT_MEDIA_PUBLIC_IP", "127.0.0.1"),
    ];
    env.extend_from_slice(extra);
    Server::start(dir, &Store::Postgres(db.url.clone()), &env)
}

async fn realtime(server: &Server, user: &str) -> Ws {
    connect(
        server,
        &format!("server_id=srv_harbor&user_uid={user}&device_id=desktop_{user}"),
    )
    .await
}

async fn connect(server: &Server, query: &str) -> Ws {
    let url = format!("ws://{}/v1/realtime?{query}", server.addr);
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (ws, response) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    assert_eq!(response.status(), 101);
    ws
}

/// The bodies of the `chat.message.created` events this socket gets, until `until` is
/// among them (within the hang guard).
async fn bodies_until(ws: &mut Ws, until: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    loop {
        let frame = tokio::time::timeout(HANG_GUARD, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no {until:?} within the hang guard; got {bodies:?}"));
        let Message::Text(text) = frame.expect("socket open").expect("frame") else {
            continue;
        };
        let event: Value = serde_json::from_str(text.as_str()).unwrap();
        if event["type"] == "chat.message.created" {
            let body = event["payload"]["message"]["body"].as_str().unwrap().to_owned();
            let done = body == until;
            bodies.push(body);
            if done {
                return bodies;
            }
        }
    }
}

async fn post(server: &Server, body: &str) {
    let response = reqwest::Client::new()
        .post(server.url("/v1/channels/ch_general/messages"))
        .header("X-OpenChat-User-UID", "uid_ana")
        .json(&json!({"body": body}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{body}");
}

/// The next event of type `kind` on this socket (within the hang guard).
async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let frame = tokio::time::timeout(HANG_GUARD, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no {kind} within the hang guard"));
        let Message::Text(text) = frame.expect("socket open").expect("frame") else {
            continue;
        };
        let event: Value = serde_json::from_str(text.as_str()).unwrap();
        if event["type"] == kind {
            return event;
        }
    }
}

fn counts(bodies: &[String]) -> HashMap<&str, usize> {
    let mut counts = HashMap::new();
    for body in bodies {
        *counts.entry(body.as_str()).or_default() += 1;
    }
    counts
}

/// Polls `/readyz` until it answers `status`; returns that answer's body.
fn readyz_until(server: &Server, status: u16) -> Value {
    let mut body = Value::Null;
    eventually(&format!("/readyz answering {status}"), || {
        let (answered, answer) = readyz(server);
        body = answer;
        answered == status
    });
    body
}

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
    let server = node(dir.path(), &db, &nats, "node-a");
    let ready = readyz_until(&server, 200);
    assert_eq!(ready["store"], "postgres");
    assert_eq!(ready["node"], "node-a");
    assert_eq!(ready["nats"], "connected");

    nats.stop();
    let down = readyz_until(&server, 503);
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
    assert_eq!(readyz_until(&server, 200)["nats"], "connected");
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

#[test]
fn messages_reach_sockets_on_every_node_once_also_across_a_nats_outage() {
    let Some(admin) = postgres_url() else { return };
    let Some(mut nats) = NatsServer::start() else {
        return;
    };
    let db = PgDatabase::create(&admin);
    // One data directory for both, as the chart's shared volume: uploads live there.
    let shared = tempfile::tempdir().unwrap();
    let a = node(shared.path(), &db, &nats, "node-a");
    let b = node(shared.path(), &db, &nats, "node-b");
    for server in [&a, &b] {
        readyz_until(server, 200);
    }
    an_upload_through_one_node_loads_through_the_other(&a, &b);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(a_ticket_used_on_one_node_is_refused_on_another(&a, &b));
    runtime.block_on(callers_on_two_nodes_meet_in_one_room(&a, &b));
    runtime.block_on(two_nodes_scenario(&a, &b, &mut nats));
    let since = runtime.block_on(resume_and_redelivery_across_nodes(&a, &b));
    // A node started after the events still serves a resume from before it began.
    let dir_c = tempfile::tempdir().unwrap();
    let c = node(dir_c.path(), &db, &nats, "node-c");
    readyz_until(&c, 200);
    runtime.block_on(async {
        let mut on_c = connect(&c, &format!("{RITA}&resume_from={since}")).await;
        assert_eq!(
            bodies_until(&mut on_c, "r5").await,
            ["r1", "r2", "r3", "r4", "r5"],
            "a resume on a new node gets exactly what followed"
        );
    });
    runtime.block_on(presence_across_nodes(&a, c));
    runtime.block_on(a_dead_nodes_outbox_is_relayed_by_a_live_one(&a, b, &mut nats));
    drop(a);

    // SIGTERM: the node with a call keeps it for the drain, joins follow it there, and then
    // the call ends with 1001 and no rtc.error.
    let drain = [("OPENCHAT_DRAIN_SECONDS", "4")];
    let (dir_d, dir_e) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let d = node_with(dir_d.path(), &db, &nats, "node-d", &drain);
    let e = node_with(dir_e.path(), &db, &nats, "node-e", &drain);
    for server in [&d, &e] {
        readyz_until(server, 200);
    }
    let survivor = runtime.block_on(a_join_during_a_drain_lands_in_the_same_room(d, e));
    let dir_h = tempfile::tempdir().unwrap();
    let h = node(dir_h.path(), &db, &nats, "node-h");
    readyz_until(&h, 200);
    runtime.block_on(a_killed_owner_ends_its_relayed_calls_and_the_room_moves(
        survivor, h,
    ));
    drop(runtime);
    drop(db);
}

/// SIGKILL of the node that runs a call: the socket relayed through the other node closes
/// with 1012 (no rtc.error), and the next join makes the room again on a live node.
async fn a_killed_owner_ends_its_relayed_calls_and_the_room_moves(x: Server, h: Server) {
    let channel = "tl_vc_pairing";
    let (mut first, joined) = join(&x, &mint(&x, channel, "uid_fay").await).await;
    assert_eq!(joined["type"], "rtc.joined", "{joined}");
    let (owner, survivor) = if rooms_on(&x).await > 0.0 { (x, h) } else { (h, x) };
    let (mut relayed, joined) = join(&survivor, &mint(&survivor, channel, "uid_gus").await).await;
    assert_eq!(
        joined["payload"]["participants"].as_array().unwrap().len(),
        1,
        "{joined}"
    );
    support::peer::audio_flows(&mut first, &mut relayed, channel, "127.0.0.1".parse().unwrap()).await;
    owner.kill_hard();
    let (code, errored) = close_code(&mut relayed).await;
    assert_eq!(
        code,
        Some(1012),
        "the relaying node closes as WIRE.md §0 item 7 asks"
    );
    assert!(!errored, "an rtc.error came before the close");
    // The client rejoins with a new ticket: the room is made again, on the live node.
    let (_again, joined) = join(&survivor, &mint(&survivor, channel, "uid_gus").await).await;
    assert_eq!(joined["type"], "rtc.joined", "{joined}");
    assert_eq!(joined["payload"]["participants"], json!([]), "{joined}");
    assert_eq!(rooms_on(&survivor).await, 1.0);
}

/// Returns the node that did not drain.
async fn a_join_during_a_drain_lands_in_the_same_room(d: Server, e: Server) -> Server {
    let channel = "tl_vc_huddle";
    let (mut first, joined) = join(&d, &mint(&d, channel, "uid_dot").await).await;
    assert_eq!(joined["type"], "rtc.joined", "{joined}");
    let (owner, other) = if rooms_on(&d).await > 0.0 { (d, e) } else { (e, d) };
    assert_eq!(rooms_on(&other).await, 0.0, "one room, on one node");
    owner.signal_term();
    let started = std::time::Instant::now();
    loop {
        let status = reqwest::get(owner.url("/readyz")).await.unwrap().status();
        if status == 503 {
            break;
        }
        assert!(started.elapsed() < HANG_GUARD, "/readyz never said draining");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Through the node that is not draining: it follows the record to the draining owner.
    let (mut second, joined) = join(&other, &mint(&other, channel, "uid_eve").await).await;
    assert_eq!(joined["type"], "rtc.joined", "{joined}");
    let others = joined["payload"]["participants"].as_array().unwrap();
    assert_eq!(others.len(), 1, "the same room as before the drain: {joined}");
    assert_eq!(rooms_on(&other).await, 0.0, "no second room on the other node");
    // The drain ends: both calls close as WIRE.md §0 item 7 asks (1001), no rtc.error.
    for ws in [&mut first, &mut second] {
        let (code, errored) = close_code(ws).await;
        assert_eq!(code, Some(1001));
        assert!(!errored, "an rtc.error came before the close");
    }
    assert!(owner.wait_exit().success());
    other
}

/// B commits while NATS is away and dies before it can relay: A relays B's events.
async fn a_dead_nodes_outbox_is_relayed_by_a_live_one(a: &Server, b: Server, nats: &mut NatsServer) {
    let mut watcher = connect(a, "server_id=srv_harbor&user_uid=uid_wes&device_id=dev_wes").await;
    nats.stop();
    for n in 1..=3 {
        post(&b, &format!("left behind {n}")).await;
    }
    b.kill_hard();
    nats.resume();
    let mut seen = bodies_until(&mut watcher, "left behind 3").await;
    post(a, "after the orphans").await;
    seen.extend(bodies_until(&mut watcher, "after the orphans").await);
    let orphans: Vec<&String> = seen.iter().filter(|s| s.starts_with("left behind")).collect();
    assert_eq!(
        orphans,
        ["left behind 1", "left behind 2", "left behind 3"],
        "in order, once"
    );
}

async fn subscribe(ws: &mut Ws) -> Value {
    let subscribe =
        json!({"type": "chat.subscribe", "request_id": "s1", "payload": {"channel_id": "ch_general"}});
    ws.send(Message::text(subscribe.to_string())).await.unwrap();
    next_of(ws, "chat.presence.snapshot").await
}

/// Presence and typing between sockets on two nodes; the node that dies takes its
/// sockets' presence with it.
async fn presence_across_nodes(a: &Server, c: Server) {
    let mut pia = connect(a, "server_id=srv_harbor&user_uid=uid_pia&device_id=dev_pia").await;
    let own = subscribe(&mut pia).await;
    let pia_id = own["payload"]["members"][0]["client_id"].clone();
    let mut cody = connect(&c, "server_id=srv_harbor&user_uid=uid_cody&device_id=dev_cody").await;
    let snapshot = subscribe(&mut cody).await;
    // Pia is in Cody's snapshot, or (if A's note reaches C after the subscribe) joins.
    let in_snapshot = snapshot["payload"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["client_id"] == pia_id);
    if !in_snapshot {
        let joined = next_of(&mut cody, "chat.presence.joined").await;
        assert_eq!(joined["payload"]["member"]["client_id"], pia_id, "{joined}");
    }
    let joined = next_of(&mut pia, "chat.presence.joined").await;
    assert_eq!(joined["payload"]["member"]["user_uid"], "uid_cody", "{joined}");
    let cody_id = joined["payload"]["member"]["client_id"].clone();

    let typing = json!({"type": "chat.typing.update", "request_id": "t1", "payload": {"channel_id": "ch_general", "is_typing": true}});
    cody.send(Message::text(typing.to_string())).await.unwrap();
    let typed = next_of(&mut pia, "chat.typing.updated").await;
    assert_eq!(typed["payload"]["member"]["client_id"], cody_id, "{typed}");
    assert_eq!(typed["payload"]["is_typing"], true);

    // Node C dies without a word: within seconds Cody is gone for Pia.
    c.kill_hard();
    let left = next_of(&mut pia, "chat.presence.left").await;
    assert_eq!(left["payload"]["member"]["client_id"], cody_id, "{left}");
    drop(cody);
}

fn an_upload_through_one_node_loads_through_the_other(a: &Server, b: &Server) {
    use reqwest::blocking::multipart::{Form, Part};
    let image = support::png(32, 32);
    let form = Form::new().part(
        "file",
        Part::bytes(image.clone())
            .file_name("avatar.png")
            .mime_str("image/png")
            .unwrap(),
    );
    let uploaded = client()
        .post(a.url("/v1/profile/avatar"))
        .header("X-OpenChat-User-UID", "uid_ana")
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(uploaded.status(), 201);
    let uploaded: Value = uploaded.json().unwrap();
    let asset = uploaded["avatar_asset_id"].as_str().unwrap();
    let loaded = client()
        .get(b.url(&format!("/v1/profile/avatar/{asset}")))
        .send()
        .unwrap();
    assert_eq!(loaded.status(), 200);
    assert_eq!(loaded.bytes().unwrap().as_ref(), image.as_slice());
}

async fn signaling_join(server: &Server, ticket: &str) -> Value {
    join(server, ticket).await.1
}

/// Two callers whose signaling sockets land on different nodes meet in one room: the node
/// without the room relays its socket to the room's node.
async fn callers_on_two_nodes_meet_in_one_room(a: &Server, b: &Server) {
    let (mut on_a, joined) = join(a, &mint(a, "vc_party", "uid_una").await).await;
    assert_eq!(joined["type"], "rtc.joined", "{joined}");
    assert_eq!(joined["payload"]["participants"], json!([]), "{joined}");
    let (mut on_b, joined) = join(b, &mint(b, "vc_party", "uid_ben").await).await;
    assert_eq!(joined["type"], "rtc.joined", "{joined}");
    let others = joined["payload"]["participants"].as_array().unwrap();
    assert_eq!(others.len(), 1, "one room, not two: {joined}");
    assert_eq!(others[0]["user_uid"], "uid_una");
    let seen = next_of(&mut on_a, "rtc.participant.joined").await;
    assert_eq!(seen["payload"]["participant"]["user_uid"], "uid_ben", "{seen}");
    // A third caller, through A again, sees both.
    let (_on_a2, joined) = join(a, &mint(a, "vc_party", "uid_cy").await).await;
    assert_eq!(
        joined["payload"]["participants"].as_array().unwrap().len(),
        2,
        "{joined}"
    );
    // Leaving through B reaches A.
    on_b.close(None).await.unwrap();
    let left = next_of(&mut on_a, "rtc.participant.left").await;
    assert_eq!(left["payload"]["participant"]["user_uid"], "uid_ben", "{left}");
}

/// A join ticket is single-use across the cluster, not per node.
async fn a_ticket_used_on_one_node_is_refused_on_another(a: &Server, b: &Server) {
    let ticket = mint(a, "vc_general", "uid_tess").await;
    let joined = signaling_join(a, &ticket).await;
    assert_eq!(joined["type"], "rtc.joined", "{joined}");
    let replayed = signaling_join(b, &ticket).await;
    assert_eq!(replayed["type"], "rtc.error", "{replayed}");
    assert_eq!(
        replayed["payload"]["message"], "join ticket replayed",
        "{replayed}"
    );
    let again = signaling_join(a, &ticket).await;
    assert_eq!(again["payload"]["message"], "join ticket replayed", "{again}");
}

/// Posts each node takes while NATS goes away and comes back.
const LOAD_POSTS_PER_NODE: usize = 60;

const RITA: &str = "server_id=srv_harbor&user_uid=uid_rita&device_id=desktop_rita";

/// Returns the event id of `r0`, from which everything after it was posted.
async fn resume_and_redelivery_across_nodes(a: &Server, b: &Server) -> String {
    let mut rita = connect(a, RITA).await;
    post(a, "r0").await;
    let seen = next_of(&mut rita, "chat.message.created").await;
    assert_eq!(seen["payload"]["message"]["body"], "r0");
    let since = seen["event_id"].as_str().unwrap().to_owned();
    rita.close(None).await.unwrap();
    drop(rita);
    post(b, "r1").await;
    post(a, "r2").await;

    // Event ids mean the same on every node: resume on B from an id A sent.
    let mut rita = connect(b, &format!("{RITA}&resume_from={since}")).await;
    assert_eq!(bodies_until(&mut rita, "r2").await, ["r1", "r2"]);
    post(a, "r3").await;
    assert_eq!(
        bodies_until(&mut rita, "r3").await,
        ["r3"],
        "live after replay, no repeat"
    );
    rita.close(None).await.unwrap();
    drop(rita);

    // The desktop client never sends resume_from: what the device missed comes anyway,
    // on whichever node it lands (here A again), possibly with repeats it drops by id.
    post(b, "r4").await;
    let mut rita = connect(a, RITA).await;
    post(a, "r5").await;
    let got = bodies_until(&mut rita, "r5").await;
    let missed = ["r1", "r2", "r3", "r4", "r5"];
    assert!(
        got.ends_with(&["r4".to_owned(), "r5".to_owned()])
            && got.iter().all(|b| missed.contains(&b.as_str())),
        "{got:?}"
    );
    // A socket that vanishes without a close handshake: what it may not have had comes too.
    drop(rita);
    post(b, "r6").await;
    let mut rita = connect(b, RITA).await;
    post(b, "r7").await;
    let got = bodies_until(&mut rita, "r7").await;
    assert!(got.iter().any(|body| body == "r6"), "{got:?}");
    drop(rita);
    since
}

async fn two_nodes_scenario(a: &Server, b: &Server, nats: &mut NatsServer) {
    let mut on_a = realtime(a, "uid_aaaa0001").await;
    let mut on_b = realtime(b, "uid_bbbb0002").await;
    // The consumers start from the events after they subscribed: wait until a probe
    // posted now reaches both sockets before counting.
    post(a, "probe").await;
    bodies_until(&mut on_a, "probe").await;
    bodies_until(&mut on_b, "probe").await;

    post(a, "from a").await;
    post(b, "from b").await;
    for ws in [&mut on_a, &mut on_b] {
        let mut seen = bodies_until(ws, "from a").await;
        if !seen.iter().any(|body| body == "from b") {
            seen.extend(bodies_until(ws, "from b").await);
        }
        assert_eq!(counts(&seen).get("from a"), Some(&1), "{seen:?}");
        assert_eq!(counts(&seen).get("from b"), Some(&1), "{seen:?}");
    }

    // Every committed change crosses nodes the same way: a category made through B.
    let response = reqwest::Client::new()
        .post(b.url("/v1/servers/srv_harbor/categories"))
        .header("X-OpenChat-User-UID", "uid_ana")
        .json(&json!({"name": "Projects", "kind": "text"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    for ws in [&mut on_a, &mut on_b] {
        let created = next_of(ws, "chat.category.created").await;
        assert_eq!(created["payload"]["group"]["label"], "Projects", "{created}");
    }

    // A device revoked through A loses its sockets on B.
    let device =
        json!({"device_id": "dev_solo", "device_pubkey": "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE"});
    let http = reqwest::Client::new();
    let registered = http
        .post(a.url("/v1/devices"))
        .header("X-OpenChat-User-UID", "uid_solo")
        .header("X-OpenChat-Device-ID", "dev_solo")
        .json(&device)
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201, "{}", registered.text().await.unwrap());
    let url = format!(
        "ws://{}/v1/realtime?server_id=srv_harbor&user_uid=uid_solo&device_id=dev_solo",
        b.addr
    );
    let stream = TcpStream::connect(b.addr).await.unwrap();
    let (mut solo_on_b, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    // Registered on B once it answers.
    solo_on_b
        .send(Message::text(
            json!({"type": "chat.ping", "request_id": "p1"}).to_string(),
        ))
        .await
        .unwrap();
    next_of(&mut solo_on_b, "chat.pong").await;
    let revoked = http
        .delete(a.url("/v1/devices/dev_solo"))
        .header("X-OpenChat-User-UID", "uid_solo")
        .header("X-OpenChat-Device-ID", "dev_solo")
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let closed = tokio::time::timeout(HANG_GUARD, async {
        loop {
            match solo_on_b.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the revoked device's socket on the other node stayed open"
    );

    // NATS goes away and comes back while both nodes take posts: writes still commit
    // (their events wait in each node's outbox) ...
    let load = |server: &Server, prefix: &'static str| {
        let url = server.url("/v1/channels/ch_general/messages");
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for n in 1..=LOAD_POSTS_PER_NODE {
                let response = http
                    .post(&url)
                    .header("X-OpenChat-User-UID", "uid_ana")
                    .json(&json!({"body": format!("{prefix}{n}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 201, "{prefix}{n}");
            }
        })
    };
    let (load_a, load_b) = (load(a, "load a"), load(b, "load b"));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    nats.stop();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    nats.resume();
    load_a.await.unwrap();
    load_b.await.unwrap();
    // ... and every one of them reaches both nodes' sockets, once, in commit order per node.
    let expected: Vec<String> = ["load a", "load b"]
        .iter()
        .flat_map(|prefix| (1..=LOAD_POSTS_PER_NODE).map(move |n| format!("{prefix}{n}")))
        .collect();
    let mut seen_by = Vec::new();
    for ws in [&mut on_a, &mut on_b] {
        let mut seen: Vec<String> = Vec::new();
        while !expected.iter().all(|body| seen.contains(body)) {
            let next = tokio::time::timeout(HANG_GUARD, ws.next()).await;
            let Ok(Some(Ok(Message::Text(text)))) = next else {
                assert!(next.is_ok(), "missing events after NATS came back; got {seen:?}");
                continue;
            };
            let event: Value = serde_json::from_str(text.as_str()).unwrap();
            if event["type"] == "chat.message.created" {
                seen.push(event["payload"]["message"]["body"].as_str().unwrap().to_owned());
            }
        }
        for prefix in ["load a", "load b"] {
            let order: Vec<&String> = seen.iter().filter(|s| s.starts_with(prefix)).collect();
            let sent: Vec<String> = (1..=LOAD_POSTS_PER_NODE)
                .map(|n| format!("{prefix}{n}"))
                .collect();
            assert!(order.iter().copied().eq(sent.iter()), "{prefix}: {order:?}");
        }
        seen_by.push(seen);
    }
    // Nothing doubled: markers posted now on both nodes arrive after any repeat would.
    post(a, "marker a").await;
    post(b, "marker b").await;
    for (ws, seen) in [&mut on_a, &mut on_b].into_iter().zip(&mut seen_by) {
        seen.extend(bodies_until(ws, "marker a").await);
        if !seen.iter().any(|body| body == "marker b") {
            seen.extend(bodies_until(ws, "marker b").await);
        }
        for body in &expected {
            assert_eq!(counts(seen).get(body.as_str()), Some(&1), "{body}: {seen:?}");
        }
    }
}
