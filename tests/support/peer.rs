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
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
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
