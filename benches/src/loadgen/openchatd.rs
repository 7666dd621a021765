//! The openchatd target: a fresh server process (embedded store, one shard pinned to the
//! server CPU, limits raised for the load), and peers that join exactly as the desktop
//! client does: a join ticket over HTTP, the signaling WebSocket, `rtc.join`, then a
//! publish offer (after `rtc.media.state`) or a subscribe offer of recvonly m-lines.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, Mid};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::peer::Peer;
use super::probe::Profile;
use super::{Keep, media_kind};

type Ws = WebSocketStream<TcpStream>;

/// How long one signaling step (ticket, join, answer) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
const SERVER_ID: &str = "srv_harbor";
const CHANNEL_ID: &str = "vc_general";

/// A running `openchatd` started for one run.
pub struct Openchatd {
    child: tokio::process::Child,
    pub pid: u32,
    addr: SocketAddr,
    http: reqwest::Client,
    _data: tempfile::TempDir,
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

impl Openchatd {
    /// The forwarding-delay histogram from the server's `/metrics`.
    pub async fn forward_delay(&self) -> Option<super::ForwardDelay> {
        let url = format!("http://{}/metrics", self.addr);
        let response = self.http.get(url).send().await.ok()?;
        let text = response.text().await.ok()?;
        Some(super::ForwardDelay::parse(&text))
    }

    /// Starts `bin` pinned (with `taskset`) to `cpu`, its one shard on that CPU too.
    pub async fn start(bin: &Path, cpu: usize, participants_max: usize) -> Result<Self, String> {
        let data = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut command = tokio::process::Command::new("taskset");
        command.arg("-c").arg(cpu.to_string()).arg(bin);
        for (key, _) in std::env::vars() {
            if key.starts_with("OPENCHAT_") {
                command.env_remove(key);
            }
        }
        let secret = format!("loadgen-{:032x}", rand_u128());
        command
            .env("OPENCHAT_HTTP_ADDR", addr.to_string())
            .env("OPENCHAT_MEDIA_PORT_BASE", "0")
            .env("OPENCHAT_MEDIA_CPUS", cpu.to_string())
            .env("OPENCHAT_SHARDS", "1")
            .env("OPENCHAT_DATA_DIR", data.path())
            .env("OPENCHAT_JOIN_TICKET_SECRET", secret)
            .env("OPENCHAT_RATE_LIMIT_PER_MINUTE", "1000000")
            .env("OPENCHAT_MAX_CALL_PARTICIPANTS", participants_max.to_string())
            .env("OPENCHAT_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true);
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {} under taskset: {e}", bin.display()))?;
        let pid = child.id().ok_or("openchatd exited at once")?;
        let http = reqwest::Client::builder()
            .timeout(STEP_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        let mut server = Self {
            child,
            pid,
            addr,
            http,
            _data: data,
        };
        let ready = format!("http://{addr}/readyz");
        for _ in 0..300 {
            if let Some(status) = server.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("openchatd exited during start-up: {status}"));
            }
            if server
                .http
                .get(&ready)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err("openchatd did not become ready within 30 s".into())
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Ticket, signaling socket, `rtc.join` → `rtc.joined`.
    async fn join(&self, uid: &str) -> Result<(Ws, IpAddr), String> {
        let url = format!("http://{}/v1/rtc/channels/{CHANNEL_ID}/join-ticket", self.addr);
        let response = self
            .http
            .post(url)
            .header("X-OpenChat-User-UID", uid)
            .header("X-OpenChat-Device-ID", format!("loadgen_{uid}"))
            .json(&json!({"server_id": SERVER_ID}))
            .send()
            .await
            .map_err(|e| format!("join ticket: {e}"))?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| format!("join ticket: {e}"))?;
        if !status.is_success() {
            return Err(format!("join ticket refused ({status}): {body}"));
        }
        let (Some(ticket), Some(signaling)) = (body["ticket"].as_str(), body["signaling_url"].as_str())
        else {
            return Err(format!("join ticket without ticket or signaling_url: {body}"));
        };
        let stream = TcpStream::connect(self.addr).await.map_err(|e| e.to_string())?;
        let local = stream.local_addr().map_err(|e| e.to_string())?.ip();
        let (mut ws, _) = tokio_tungstenite::client_async(signaling, stream)
            .await
            .map_err(|e| format!("signaling: {e}"))?;
        send(&mut ws, json!({"type": "rtc.join", "request_id": "join_1", "channel_id": CHANNEL_ID, "payload": {"ticket": ticket}})).await?;
        next_of(&mut ws, "rtc.joined").await?;
        Ok((ws, local))
    }

    /// A publisher of `profile`, negotiated; returns its peer, m-line and signaling.
    pub async fn publisher(&self, index: u32, profile: Profile) -> Result<(Peer, Mid, Keep), String> {
        let uid = format!("uid_pub{index:05}");
        let (mut ws, ip) = self.join(&uid).await?;
        let mut peer = Peer::new(ip).await.map_err(|e| e.to_string())?;
        let (stream_id, track_id) = (format!("stream_{uid}"), format!("track_{uid}"));
        let stream_kind = match profile {
            Profile::Audio => "audio_microphone",
            Profile::Video => "video_camera",
        };
        send(&mut ws, json!({"type": "rtc.media.state", "request_id": "state_1", "channel_id": CHANNEL_ID,
            "payload": {"stream_id": stream_id, "track_id": track_id, "stream_kind": stream_kind, "action": "start", "mic_muted": false, "deafened": false}})).await?;
        let mut change = peer.rtc.sdp_api();
        let mid = change.add_media(
            media_kind(profile),
            Direction::SendOnly,
            Some(stream_id),
            Some(track_id),
            None,
        );
        let (offer, pending) = change.apply().ok_or("no publish offer")?;
        let answer = negotiate(&mut ws, "publish", offer.to_sdp_string()).await?;
        peer.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| format!("publish answer: {e}"))?;
        Ok((peer, mid, keep(ws)))
    }

    /// A subscriber with one recvonly m-line per publisher, negotiated.
    pub async fn subscriber(
        &self,
        index: usize,
        profile: Profile,
        publishers: u32,
    ) -> Result<(Peer, Keep), String> {
        let uid = format!("uid_sub{index:05}");
        let (mut ws, ip) = self.join(&uid).await?;
        let mut peer = Peer::new(ip).await.map_err(|e| e.to_string())?;
        let mut change = peer.rtc.sdp_api();
        for _ in 0..publishers {
            change.add_media(media_kind(profile), Direction::RecvOnly, None, None, None);
        }
        let (offer, pending) = change.apply().ok_or("no subscribe offer")?;
        // Like a browser's recvonly transceivers: no a=ssrc lines.
        let sdp = crate::without_ssrc_lines(&offer.to_sdp_string());
        let answer = negotiate(&mut ws, "subscribe", sdp).await?;
        peer.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| format!("subscribe answer: {e}"))?;
        Ok((peer, keep(ws)))
    }
}

fn rand_u128() -> u128 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    t ^ (u128::from(std::process::id()) << 64)
}

async fn send(ws: &mut Ws, value: Value) -> Result<(), String> {
    ws.send(Message::text(value.to_string()))
        .await
        .map_err(|e| format!("signaling send: {e}"))
}

/// The next envelope of type `kind` (others skipped); `rtc.error` is an error.
async fn next_of(ws: &mut Ws, kind: &str) -> Result<Value, String> {
    let wait = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                    if value["type"] == kind {
                        return Ok(value);
                    }
                    if value["type"] == "rtc.error" {
                        return Err(format!("{kind}: rtc.error {}", value["payload"]));
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("signaling: {e}")),
                None => return Err("signaling closed".into()),
            }
        }
    };
    tokio::time::timeout(STEP_TIMEOUT, wait)
        .await
        .map_err(|_| format!("no {kind} within {STEP_TIMEOUT:?}"))?
}

async fn negotiate(ws: &mut Ws, direction: &str, sdp: String) -> Result<SdpAnswer, String> {
    send(ws, json!({"type": format!("rtc.offer.{direction}"), "request_id": format!("offer_{direction}"), "channel_id": CHANNEL_ID,
        "payload": {"type": "offer", "sdp": sdp, "direction": direction}})).await?;
    let answer = next_of(ws, &format!("rtc.answer.{direction}")).await?;
    SdpAnswer::from_sdp_string(answer["payload"]["sdp"].as_str().unwrap_or(""))
        .map_err(|e| format!("{direction} answer: {e}"))
}

/// Reads the signaling socket for as long as the peer runs (answering pings, dropping the
/// room's events); ends with the reason it closed.
fn keep(mut ws: Ws) -> Keep {
    Box::pin(async move {
        loop {
            match ws.next().await {
                Some(Ok(_)) => {}
                Some(Err(e)) => return format!("signaling failed: {e}"),
                None => return "signaling closed".into(),
            }
        }
    })
}
