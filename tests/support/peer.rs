//! A WebRTC peer on a real UDP socket (str0m), negotiating with the SFU over a signaling
//! WebSocket as one of the client's PeerConnections does.

use std::net::SocketAddr;
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::{TcpStream, UdpSocket};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::HANG_GUARD;

pub type Ws = WebSocketStream<TcpStream>;

pub async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string())).await.unwrap();
}

/// The next text envelope (other frames skipped), within the hang guard.
pub async fn next_text(ws: &mut Ws) -> Value {
    loop {
        let message = tokio::time::timeout(HANG_GUARD, ws.next())
            .await
            .expect("a frame")
            .expect("open")
            .expect("frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

pub async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    next_of_any(ws, &[kind]).await
}

/// A WebRTC peer like one of the client's PeerConnections, on a real UDP socket.
pub struct Peer {
    pub rtc: Rtc,
    pub socket: UdpSocket,
    pub addr: SocketAddr,
    pub received: Vec<Vec<u8>>,
}

impl Peer {
    pub async fn new() -> Self {
        Self::on("127.0.0.1".parse().unwrap()).await
    }

    /// A peer whose socket (and only candidate) is on `ip`.
    pub async fn on(ip: std::net::IpAddr) -> Self {
        let socket = UdpSocket::bind((ip, 0)).await.unwrap();
        let addr = socket.local_addr().unwrap();
        let mut rtc = Rtc::new(Instant::now());
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        Self {
            rtc,
            socket,
            addr,
            received: Vec::new(),
        }
    }

    /// Offers `media` on this connection over signaling and applies the SFU's answer.
    pub async fn negotiate(
        &mut self,
        ws: &mut Ws,
        direction: &str,
        media: &[(MediaKind, Direction, &str)],
    ) -> (Vec<Mid>, Value) {
        let mut change = self.rtc.sdp_api();
        let mids: Vec<Mid> = media
            .iter()
            .map(|(kind, dir, track)| {
                change.add_media(
                    *kind,
                    *dir,
                    Some("stream_test".into()),
                    Some((*track).into()),
                    None,
                )
            })
            .collect();
        let (offer, pending) = change.apply().unwrap();
        let mut sdp = offer.to_sdp_string();
        if direction == "subscribe" {
            // Like a browser's recvonly transceivers: no a=ssrc lines.
            sdp = sdp
                .lines()
                .filter(|l| !l.starts_with("a=ssrc"))
                .map(|l| format!("{l}\r\n"))
                .collect();
        }
        let request_id = format!("offer_{}_{direction}", uuid::Uuid::new_v4().simple());
        send(ws, json!({"type": format!("rtc.offer.{direction}"), "request_id": request_id, "channel_id": "vc_general",
                        "payload": {"type": "offer", "sdp": sdp, "direction": direction}})).await;
        let reply = next_of_any(ws, &[&format!("rtc.answer.{direction}"), "rtc.error"]).await;
        if reply["type"] == "rtc.error" {
            return (mids, reply);
        }
        assert_eq!(reply["request_id"], request_id);
        assert_eq!(reply["payload"]["direction"], direction);
        let answer = SdpAnswer::from_sdp_string(reply["payload"]["sdp"].as_str().unwrap()).unwrap();
        self.rtc.sdp_api().accept_answer(pending, answer).unwrap();
        (mids, reply)
    }

    /// Sends what str0m wants sent, keeps what it received; returns its next deadline.
    pub fn drain(&mut self) {
        loop {
            match self.rtc.poll_output().unwrap() {
                Output::Timeout(_) => return,
                Output::Transmit(t) => {
                    let _ = self.socket.try_send_to(&t.contents, t.destination);
                }
                Output::Event(Event::MediaData(data)) => self.received.push(data.data.to_vec()),
                Output::Event(_) => {}
            }
        }
    }

    /// Feeds every datagram waiting on the socket, then the time.
    pub fn pump(&mut self) {
        let mut buffer = [0u8; 2048];
        while let Ok((len, from)) = self.socket.try_recv_from(&mut buffer) {
            if let Ok(receive) = Receive::new(Protocol::Udp, from, self.addr, &buffer[..len]) {
                let _ = self.rtc.handle_input(Input::Receive(Instant::now(), receive));
            }
            self.drain();
        }
        self.rtc.handle_input(Input::Timeout(Instant::now())).unwrap();
        self.drain();
    }
}

pub async fn next_of_any(ws: &mut Ws, kinds: &[&str]) -> Value {
    loop {
        let value = next_text(ws).await;
        if kinds.iter().any(|k| value["type"] == *k) {
            return value;
        }
    }
}

/// `publisher` sends audio over its own connection and `subscriber` receives it: media goes
/// straight to the room's node whichever node relays either's signaling. Both peers' sockets
/// are on `ip`. Returns the publish and subscribe answers.
pub async fn audio_flows(
    publisher: &mut Ws,
    subscriber: &mut Ws,
    channel: &str,
    ip: std::net::IpAddr,
) -> (Value, Value) {
    send(publisher, json!({"type": "rtc.media.state", "channel_id": channel, "payload": {"stream_id": "stream_test", "track_id": "track_mic", "stream_kind": "audio_microphone", "action": "start"}})).await;
    let mut alice = Peer::on(ip).await;
    let (mids, publish_answer) = alice
        .negotiate(
            publisher,
            "publish",
            &[(MediaKind::Audio, Direction::SendOnly, "track_mic")],
        )
        .await;
    assert_eq!(publish_answer["type"], "rtc.answer.publish", "{publish_answer}");
    let mine = str0m::Candidate::host(alice.addr, "udp").unwrap().to_sdp_string();
    send(publisher, json!({"type": "rtc.ice.candidate", "channel_id": channel, "payload": {"candidate": mine, "direction": "publish", "sdp_mid": "0"}})).await;
    next_of(subscriber, "rtc.track.published").await;
    let mut bob = Peer::on(ip).await;
    let (_, subscribe_answer) = bob
        .negotiate(
            subscriber,
            "subscribe",
            &[(MediaKind::Audio, Direction::RecvOnly, "recv_audio")],
        )
        .await;
    assert_eq!(
        subscribe_answer["type"], "rtc.answer.subscribe",
        "{subscribe_answer}"
    );
    let frame = send_audio(&mut alice, &mut bob, mids[0], 20).await;
    assert!(
        bob.received.len() >= 20,
        "{} frames of {frame} arrived",
        bob.received.len()
    );
    assert!(
        bob.received
            .iter()
            .all(|data| data.len() == 60 && data[4..].iter().all(|b| *b == 0x5A))
    );
    (publish_answer, subscribe_answer)
}

/// Mints a join ticket for `channel` on `server` as `user` (device `dev_<user>`).
pub async fn mint(server: &super::Server, channel: &str, user: &str) -> String {
    let minted = reqwest::Client::new()
        .post(server.url(&format!("/v1/rtc/channels/{channel}/join-ticket")))
        .header("X-OpenChat-User-UID", user)
        .header("X-OpenChat-Device-ID", format!("dev_{user}"))
        .json(&json!({"server_id": "srv_harbor"}))
        .send()
        .await
        .unwrap();
    assert_eq!(minted.status(), 200);
    minted.json::<Value>().await.unwrap()["ticket"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Opens the signaling socket, sends `rtc.join` and returns the socket with its answer
/// (`rtc.joined` or `rtc.error`).
pub async fn join(server: &super::Server, ticket: &str) -> (Ws, Value) {
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let url = format!("ws://{}/v1/rtc/signaling", server.addr);
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    let join = json!({"type": "rtc.join", "request_id": "join_1", "payload": {"ticket": ticket}});
    ws.send(Message::text(join.to_string())).await.unwrap();
    loop {
        let frame = tokio::time::timeout(HANG_GUARD, ws.next())
            .await
            .expect("an answer");
        if let Some(Ok(Message::Text(text))) = frame {
            let value: Value = serde_json::from_str(text.as_str()).unwrap();
            if value["type"] == "rtc.joined" || value["type"] == "rtc.error" {
                return (ws, value);
            }
        }
    }
}

/// Voice rooms a node runs, from its metrics.
pub async fn rooms_on(server: &super::Server) -> f64 {
    metric(server, "openchat_rtc_shard_rooms").await
}

/// The sum of a metric's series (all label sets) in the `/metrics` text.
pub async fn metric(server: &super::Server, name: &str) -> f64 {
    labelled(server, name, "").await
}

/// The sum of `name`'s series whose labels contain `label` (every series for "").
pub async fn labelled(server: &super::Server, name: &str, label: &str) -> f64 {
    let text = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Reads until the socket closes; returns the close code (`None` when cut) and whether an
/// `rtc.error` came first.
pub async fn close_code(ws: &mut Ws) -> (Option<u16>, bool) {
    let mut errored = false;
    loop {
        match tokio::time::timeout(HANG_GUARD, ws.next())
            .await
            .expect("a close")
        {
            Some(Ok(Message::Close(frame))) => return (frame.map(|f| u16::from(f.code)), errored),
            Some(Ok(Message::Text(text))) => errored |= text.as_str().contains("\"rtc.error\""),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (None, errored),
        }
    }
}

/// Sends an Opus frame from `alice`'s `mid` every 20 ms (the frame's number in its first 4
/// bytes, then 0x5A up to 60 bytes) while pumping both peers, until `bob` received
/// `wanted` frames or the hang guard passed; returns how many were sent.
pub async fn send_audio(alice: &mut Peer, bob: &mut Peer, mid: Mid, wanted: usize) -> u32 {
    use std::time::Duration;
    use str0m::format::Codec;
    use str0m::media::MediaTime;
    let deadline = Instant::now() + HANG_GUARD;
    let mut frame = 0u32;
    let mut last_send = Instant::now();
    while bob.received.len() < wanted && Instant::now() < deadline {
        alice.pump();
        bob.pump();
        if alice.rtc.is_connected() && last_send.elapsed() >= Duration::from_millis(20) {
            last_send = Instant::now();
            let pt = alice
                .rtc
                .codec_config()
                .find(|p| p.spec().codec == Codec::Opus)
                .unwrap()
                .pt();
            let mut payload = vec![0x5Au8; 60];
            payload[..4].copy_from_slice(&frame.to_be_bytes());
            let time = MediaTime::from_90khz(u64::from(frame) * 1920);
            alice
                .rtc
                .writer(mid)
                .unwrap()
                .write(pt, Instant::now(), time, payload)
                .unwrap();
            frame += 1;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    frame
}
