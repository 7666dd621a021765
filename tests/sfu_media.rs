//! WebRTC media through the real binary: str0m peers in the test publish and subscribe over
//! real UDP on loopback, exactly as the client's two PeerConnections do (the client offers
//! on both, the SFU answers). Audio from the publisher reaches the subscriber intact; tracks
//! are announced; a ticket without `video` cannot publish video; garbage datagrams on the
//! media port harm nobody.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;

use openchat_core::ticket::{Permissions, TicketClaims, TicketSigner};
use serde_json::{Value, json};
use str0m::Candidate;
use str0m::media::{Direction, MediaKind};
use support::peer::{Peer, Ws, labelled, metric, next_of, next_text, send, send_audio};
use support::{Server, Store};
use tokio::net::{TcpStream, UdpSocket};

const SECRET: &str = "test-secret-for-the-sfu-0123456789";

async fn signaling(server: &Server, permissions: Permissions, uid: &str) -> (Ws, Value) {
    signaling_via(server.addr, permissions, uid).await
}

/// Joins through the signaling socket at `addr` (the server may listen on other loopback
/// addresses than 127.0.0.1).
async fn signaling_via(addr: SocketAddr, permissions: Permissions, uid: &str) -> (Ws, Value) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let ticket = TicketSigner::new(SECRET.as_bytes()).sign(&TicketClaims {
        server_id: "srv_harbor".into(),
        channel_id: "vc_general".into(),
        user_uid: uid.into(),
        device_id: format!("desktop_{uid}"),
        permissions,
        exp: now + 60,
        iat: now,
        jti: uuid::Uuid::new_v4().to_string(),
    });
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/v1/rtc/signaling"), stream)
        .await
        .unwrap();
    send(&mut ws, json!({"type": "rtc.join", "request_id": "join_1", "channel_id": "vc_general", "payload": {"ticket": ticket}})).await;
    let joined = next_of(&mut ws, "rtc.joined").await;
    (ws, joined)
}

fn sfu_candidate(answer: &Value) -> SocketAddr {
    let sdp = answer["payload"]["sdp"].as_str().unwrap();
    let line = sdp
        .lines()
        .find(|l| l.starts_with("a=candidate"))
        .expect("the SFU answers with its candidate");
    let parts: Vec<&str> = line.split_whitespace().collect();
    format!("{}:{}", parts[4], parts[5]).parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_audio_reaches_the_subscriber_through_the_sfu() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &Store::Sqlite,
        &[
            ("OPENCHAT_JOIN_TICKET_SECRET", SECRET),
            ("OPENCHAT_MEDIA_PORT_BASE", "0"),
        ],
    );
    let (mut alice_ws, _) = signaling(&server, Permissions::ALL, "uid_alice").await;
    // The client announces its mic before or after its offer; here before.
    send(&mut alice_ws, json!({"type": "rtc.media.state", "payload": {"stream_id": "stream_test", "track_id": "track_mic", "stream_kind": "audio_microphone", "action": "start"}})).await;
    let mut alice = Peer::new().await;
    let (mids, answer) = alice
        .negotiate(
            &mut alice_ws,
            "publish",
            &[(MediaKind::Audio, Direction::SendOnly, "track_mic")],
        )
        .await;
    assert_eq!(answer["type"], "rtc.answer.publish", "{answer}");
    let sfu = sfu_candidate(&answer);
    assert_eq!(sfu.ip().to_string(), "127.0.0.1", "loopback candidates only");
    // The server trickles its candidate for the publish connection, with the direction.
    let trickled = next_of(&mut alice_ws, "rtc.ice.candidate").await;
    assert_eq!(trickled["payload"]["direction"], "publish", "{trickled}");
    let candidate = trickled["payload"]["candidate"].as_str().unwrap();
    assert!(candidate.starts_with("candidate:"), "{candidate}");
    assert!(
        candidate.contains(&format!(" {} {} typ host", sfu.ip(), sfu.port())),
        "{candidate}"
    );
    // The client trickles its own (and an unparsable one, which is dropped silently).
    let mine = Candidate::host(alice.addr, "udp").unwrap().to_sdp_string();
    for candidate in [mine.as_str(), "candidate:garbage"] {
        send(&mut alice_ws, json!({"type": "rtc.ice.candidate", "payload": {"candidate": candidate, "direction": "publish", "sdp_mid": "0"}})).await;
    }

    // Garbage on the media port first: it must harm nobody.
    let junk = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for size in [0usize, 1, 12, 100, 1500] {
        junk.send_to(&vec![0xFFu8; size], sfu).await.unwrap();
    }

    let (mut bob_ws, joined) = signaling(&server, Permissions::ALL, "uid_bob").await;
    assert_eq!(joined["payload"]["participants"].as_array().unwrap().len(), 1);
    let published = next_of(&mut bob_ws, "rtc.track.published").await;
    let track = &published["payload"];
    assert_eq!(track["track_id"], "track_mic");
    assert_eq!(track["stream_id"], "stream_test");
    assert_eq!(track["media_kind"], "audio");
    assert_eq!(track["stream_kind"], "audio_microphone");
    assert_eq!(track["user_uid"], "uid_alice");
    let mut bob = Peer::new().await;
    let (_, answer) = bob
        .negotiate(
            &mut bob_ws,
            "subscribe",
            &[(MediaKind::Audio, Direction::RecvOnly, "recv_audio")],
        )
        .await;
    assert_eq!(answer["type"], "rtc.answer.subscribe", "{answer}");
    // The forwarded track keeps the publisher's stream and track ids as its msid.
    let sdp = answer["payload"]["sdp"].as_str().unwrap();
    assert!(sdp.contains("a=msid:stream_test track_mic"), "{sdp}");

    let frame = send_audio(&mut alice, &mut bob, mids[0], 50).await;
    assert!(
        bob.received.len() >= 50,
        "bob received {} frames of {frame} sent",
        bob.received.len()
    );
    for data in &bob.received {
        assert_eq!(data.len(), 60);
        assert!(data[4..].iter().all(|b| *b == 0x5A), "payload intact");
    }
    assert!(alice.received.is_empty(), "nothing comes back to the publisher");
    // The shard counts what it forwarded and the track it carries.
    assert_eq!(metric(&server, "openchat_rtc_shard_tracks").await, 1.0);
    assert!(metric(&server, "openchat_rtc_forwarded_packets_total").await >= 50.0);
    assert!(metric(&server, "openchat_rtc_media_packets_in_total").await >= 50.0);
    assert!(metric(&server, "openchat_rtc_media_bytes_out_total").await >= 50.0 * 60.0);
    // Every forwarded copy has a delay from the kernel's receive stamp of alice's datagram;
    // the last copy of each step is counted apart (one subscriber: one copy per step).
    let delay = "openchat_rtc_forward_delay_seconds";
    let each = labelled(&server, &format!("{delay}_count"), r#"copy="each""#).await;
    let last = labelled(&server, &format!("{delay}_count"), r#"copy="last""#).await;
    assert!(each >= 50.0, "{each} copies timed");
    assert!(last >= 1.0 && last <= each, "{last} last copies of {each}");
    let sum = labelled(&server, &format!("{delay}_sum"), r#"copy="each""#).await;
    // Positive, and on the same clock as the kernel's stamps (a mix-up of clocks would be
    // off by years).
    assert!(sum > 0.0 && sum / each < 60.0, "mean delay {}", sum / each);

    // Leaving unpublishes the track at the others.
    send(&mut alice_ws, json!({"type": "rtc.leave", "payload": {}})).await;
    let unpublished = next_of(&mut bob_ws, "rtc.track.unpublished").await;
    assert_eq!(unpublished["payload"]["track_id"], "track_mic");
    next_of(&mut bob_ws, "rtc.participant.left").await;
    assert_eq!(metric(&server, "openchat_rtc_shard_tracks").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_candidates_advertise_the_address_the_signaling_arrived_on_unless_one_is_set() {
    // The server listens on 127.0.0.2 only; without OPENCHAT_MEDIA_PUBLIC_IP the candidate
    // carries the address the client reached, not a fixed 127.0.0.1.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &Store::Sqlite,
        &[
            ("OPENCHAT_JOIN_TICKET_SECRET", SECRET),
            ("OPENCHAT_HTTP_ADDR", "127.0.0.2:0"),
        ],
    );
    let (mut ws, _) = signaling_via(server.addr, Permissions::ALL, "uid_dora").await;
    let mut dora = Peer::new().await;
    let (_, answer) = dora
        .negotiate(
            &mut ws,
            "publish",
            &[(MediaKind::Audio, Direction::SendOnly, "track_mic")],
        )
        .await;
    assert_eq!(sfu_candidate(&answer).ip().to_string(), "127.0.0.2", "{answer}");
    drop(server);

    // With OPENCHAT_MEDIA_PUBLIC_IP set, that address is advertised whatever the client reached.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &Store::Sqlite,
        &[
            ("OPENCHAT_JOIN_TICKET_SECRET", SECRET),
            ("OPENCHAT_HTTP_ADDR", "127.0.0.2:0"),
            ("OPENCHAT_MEDIA_PUBLIC_IP", "127.0.0.3"),
        ],
    );
    let (mut ws, _) = signaling_via(server.addr, Permissions::ALL, "uid_dora").await;
    let mut dora = Peer::new().await;
    let (_, answer) = dora
        .negotiate(
            &mut ws,
            "publish",
            &[(MediaKind::Audio, Direction::SendOnly, "track_mic")],
        )
        .await;
    assert_eq!(sfu_candidate(&answer).ip().to_string(), "127.0.0.3", "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_without_video_cannot_publish_a_camera_and_bad_offers_fail_alone() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &Store::Sqlite,
        &[
            ("OPENCHAT_JOIN_TICKET_SECRET", SECRET),
            ("OPENCHAT_MEDIA_PORT_BASE", "0"),
        ],
    );
    let audio_only = Permissions {
        speak: true,
        video: false,
        screenshare: false,
    };
    let (mut ws, _) = signaling(&server, audio_only, "uid_carol").await;
    let mut carol = Peer::new().await;
    let (_, reply) = carol
        .negotiate(
            &mut ws,
            "publish",
            &[(MediaKind::Video, Direction::SendOnly, "track_cam")],
        )
        .await;
    assert_eq!(reply["type"], "rtc.error");
    assert_eq!(reply["payload"]["code"], "rtc_media_denied");
    // A malformed offer fails for this peer with rtc_negotiation_failed...
    send(&mut ws, json!({"type": "rtc.offer.publish", "request_id": "bad", "payload": {"type": "offer", "sdp": "v=0 this is not sdp", "direction": "publish"}})).await;
    let error = next_of(&mut ws, "rtc.error").await;
    assert_eq!(
        (error["payload"]["code"].as_str(), error["request_id"].as_str()),
        (Some("rtc_negotiation_failed"), Some("bad"))
    );
    assert_eq!(
        metric(&server, "openchat_rtc_negotiation_errors_total").await,
        1.0
    );
    // ...and an offer for an unknown direction is an unknown event; the socket stays usable.
    send(
        &mut ws,
        json!({"type": "rtc.offer.sideways", "payload": {"sdp": "v=0"}}),
    )
    .await;
    assert_eq!(
        next_of(&mut ws, "rtc.error").await["payload"]["code"],
        "rtc_unknown_event"
    );
    // A fresh connection offering audio only is answered: speak is allowed.
    let mut carol = Peer::new().await;
    let (_, reply) = carol
        .negotiate(
            &mut ws,
            "publish",
            &[(MediaKind::Audio, Direction::SendOnly, "track_mic")],
        )
        .await;
    assert_eq!(reply["type"], "rtc.answer.publish", "audio is allowed: {reply}");
}

/// Reads frames until `kind`; returns whether `unwanted` came first.
async fn seen_before(ws: &mut Ws, unwanted: &str, kind: &str) -> bool {
    let mut seen = false;
    loop {
        let value = next_text(ws).await;
        seen |= value["type"] == unwanted;
        if value["type"] == kind {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_tracks_than_offered_m_lines_ask_for_a_new_subscribe_offer() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &Store::Sqlite,
        &[
            ("OPENCHAT_JOIN_TICKET_SECRET", SECRET),
            ("OPENCHAT_MEDIA_PORT_BASE", "0"),
        ],
    );
    let mut publishers = Vec::new();
    for (uid, track) in [("uid_p1", "track_one"), ("uid_p2", "track_two")] {
        let (mut ws, _) = signaling(&server, Permissions::ALL, uid).await;
        let mut peer = Peer::new().await;
        let (_, answer) = peer
            .negotiate(
                &mut ws,
                "publish",
                &[(MediaKind::Audio, Direction::SendOnly, track)],
            )
            .await;
        assert_eq!(answer["type"], "rtc.answer.publish", "{answer}");
        publishers.push((ws, peer));
    }
    let (mut ws, _) = signaling(&server, Permissions::ALL, "uid_listener").await;
    let mut listener = Peer::new().await;
    let (_, answer) = listener
        .negotiate(
            &mut ws,
            "subscribe",
            &[(MediaKind::Audio, Direction::RecvOnly, "a1")],
        )
        .await;
    assert_eq!(answer["type"], "rtc.answer.subscribe");
    let refresh = next_of(&mut ws, "rtc.subscribe.refresh").await;
    assert_eq!(refresh["payload"]["reason"], "more_tracks_than_m_lines");
    // A renegotiation with room for both carries both msids and asks for nothing more.
    let (_, answer) = listener
        .negotiate(
            &mut ws,
            "subscribe",
            &[(MediaKind::Audio, Direction::RecvOnly, "a2")],
        )
        .await;
    let sdp = answer["payload"]["sdp"].as_str().unwrap();
    assert!(
        sdp.contains("a=msid:stream_test track_one") && sdp.contains("a=msid:stream_test track_two"),
        "{sdp}"
    );
    send(&mut ws, json!({"type": "rtc.ping", "request_id": "after"})).await;
    assert!(
        !seen_before(&mut ws, "rtc.subscribe.refresh", "rtc.pong").await,
        "no refresh once everything fits"
    );
}
