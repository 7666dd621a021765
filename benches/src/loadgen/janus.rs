//! The Janus target: a fresh Janus process (Debian's `janus`, VideoRoom plugin) configured
//! for one local address (HTTP API on 127.0.0.1; ICE restricted to `--media-ip`, because
//! Janus never gathers candidates on a loopback interface, so the run happens in a network
//! namespace the script creates, with a veth address that only exists there; ICE-lite like
//! openchatd, one event loop for all handles), pinned to the server CPU, and peers that use
//! its JSON API over HTTP: one session, one handle per PeerConnection; publishers
//! `joinandconfigure` with an offer, subscribers `join` a feed, answer Janus's offer and
//! `start`. Events arrive on the session's long poll and are routed to their handle.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, Mid};
use tokio::sync::mpsc;

use super::peer::Peer;
use super::probe::Profile;
use super::{Keep, media_kind};

/// How long one API step may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// Events buffered per handle before the long poll drops them.
const HANDLE_EVENTS_MAX: usize = 64;
const ROOM: u64 = 4242;
const PLUGIN_DIRS: &str = "/usr/lib/x86_64-linux-gnu/janus";

type Routes = Arc<Mutex<HashMap<u64, mpsc::Sender<Value>>>>;

/// A running Janus with one API session and one VideoRoom room.
pub struct Janus {
    child: tokio::process::Child,
    pub pid: u32,
    base: String,
    session: u64,
    http: reqwest::Client,
    routes: Routes,
    poller: tokio::task::JoinHandle<()>,
    publisher_ids: Mutex<HashMap<u32, u64>>,
    media_ip: IpAddr,
    _dir: tempfile::TempDir,
}

fn write_config(dir: &Path, port: u16, media_ip: IpAddr) -> std::io::Result<()> {
    let janus = format!(
        r#"general: {{
  configs_folder = "{cfg}"
  plugins_folder = "{PLUGIN_DIRS}/plugins"
  transports_folder = "{PLUGIN_DIRS}/transports"
  events_folder = "{PLUGIN_DIRS}/events"
  loggers_folder = "{PLUGIN_DIRS}/loggers"
  debug_level = 2
  session_timeout = 120
  event_loops = 1
}}
certificates: {{ }}
media: {{ rtp_port_range = "20000-60000" }}
nat: {{
  ice_lite = true
  ice_enforce_list = "{media_ip}"
  ignore_mdns = true
  full_trickle = false
}}
plugins: {{ disable = "libjanus_audiobridge.so,libjanus_echotest.so,libjanus_lua.so,libjanus_duktape.so,libjanus_nosip.so,libjanus_recordplay.so,libjanus_sip.so,libjanus_streaming.so,libjanus_textroom.so,libjanus_videocall.so,libjanus_voicemail.so" }}
transports: {{ disable = "libjanus_websockets.so,libjanus_pfunix.so,libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_rabbitmq.so" }}
loggers: {{ disable = "libjanus_jsonlog.so" }}
events: {{ broadcast = false }}
"#,
        cfg = dir.display()
    );
    std::fs::write(dir.join("janus.jcfg"), janus)?;
    std::fs::write(
        dir.join("janus.transport.http.jcfg"),
        format!(
            "general: {{\n  json = \"plain\"\n  base_path = \"/janus\"\n  http = true\n  port = {port}\n  ip = \"127.0.0.1\"\n  https = false\n}}\nadmin: {{ admin_http = false admin_https = false }}\n"
        ),
    )?;
    std::fs::write(dir.join("janus.plugin.videoroom.jcfg"), "general: { }\n")?;
    Ok(())
}

fn transaction() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    format!("t{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

impl Janus {
    /// Starts `bin` pinned to `cpu` with a loopback-only configuration, creates the session
    /// and a room for `publishers` publishers.
    pub async fn start(bin: &Path, cpu: usize, publishers: u32, media_ip: IpAddr) -> Result<Self, String> {
        if media_ip.is_loopback() {
            return Err(format!(
                "janus gathers no candidates on loopback ({media_ip}): give --media-ip an address of a non-loopback interface inside a network namespace (benches/loadgen.sh makes one)"
            ));
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            l.local_addr().map_err(|e| e.to_string())?.port()
        };
        write_config(dir.path(), port, media_ip).map_err(|e| e.to_string())?;
        let log: PathBuf = dir.path().join("janus.log");
        let mut command = tokio::process::Command::new("taskset");
        command
            .arg("-c")
            .arg(cpu.to_string())
            .arg(bin)
            .arg("--config")
            .arg(dir.path().join("janus.jcfg"))
            .arg("--configs-folder")
            .arg(dir.path())
            .arg("--log-file")
            .arg(&log)
            .arg("--disable-stdout")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {} under taskset: {e}", bin.display()))?;
        let pid = child.id().ok_or("janus exited at once")?;
        let http = reqwest::Client::builder()
            .timeout(STEP_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        let base = format!("http://127.0.0.1:{port}/janus");
        let mut created = None;
        for _ in 0..300 {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("janus exited during start-up: {status}\n{tail}"));
            }
            if let Ok(r) = http
                .post(&base)
                .json(&json!({"janus": "create", "transaction": transaction()}))
                .send()
                .await
                && let Ok(v) = r.json::<Value>().await
                && let Some(id) = v["data"]["id"].as_u64()
            {
                created = Some(id);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let session = created.ok_or("janus did not answer on its HTTP API within 30 s")?;
        let routes: Routes = Arc::default();
        let poller = tokio::spawn(long_poll(
            http.clone(),
            format!("{base}/{session}"),
            routes.clone(),
        ));
        let janus = Self {
            child,
            pid,
            base,
            session,
            http,
            routes,
            poller,
            publisher_ids: Mutex::new(HashMap::new()),
            media_ip,
            _dir: dir,
        };
        let handle = janus.attach().await?.0;
        let created = janus
            .request(
                handle,
                json!({"request": "create", "room": ROOM, "publishers": publishers.max(1),
                "audiocodec": "opus", "videocodec": "vp8", "bitrate": 0, "notify_joining": false}),
                None,
            )
            .await?;
        if created["plugindata"]["data"]["videoroom"] != "created" {
            return Err(format!("janus: creating the room failed: {created}"));
        }
        Ok(janus)
    }

    pub async fn stop(mut self) {
        self.poller.abort();
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    async fn post(&self, url: &str, body: Value) -> Result<Value, String> {
        let response = self
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("janus: {e}"))?;
        let value: Value = response.json().await.map_err(|e| format!("janus: {e}"))?;
        if value["janus"] == "error" {
            return Err(format!("janus: {}", value["error"]));
        }
        Ok(value)
    }

    /// A new VideoRoom handle and the channel its events arrive on.
    async fn attach(&self) -> Result<(u64, mpsc::Receiver<Value>), String> {
        let v = self
            .post(
                &format!("{}/{}", self.base, self.session),
                json!({"janus": "attach", "plugin": "janus.plugin.videoroom", "transaction": transaction()}),
            )
            .await?;
        let handle = v["data"]["id"]
            .as_u64()
            .ok_or_else(|| format!("janus attach: {v}"))?;
        let (tx, rx) = mpsc::channel(HANDLE_EVENTS_MAX);
        self.routes.lock().expect("routes").insert(handle, tx);
        Ok((handle, rx))
    }

    /// A plugin message; synchronous requests answer at once, others with an "ack".
    async fn request(&self, handle: u64, body: Value, jsep: Option<Value>) -> Result<Value, String> {
        let mut message = json!({"janus": "message", "body": body, "transaction": transaction()});
        if let Some(jsep) = jsep {
            message["jsep"] = jsep;
        }
        let v = self
            .post(&format!("{}/{}/{handle}", self.base, self.session), message)
            .await?;
        if let Some(error) = v["plugindata"]["data"]["error"].as_str() {
            return Err(format!("janus videoroom: {error}"));
        }
        Ok(v)
    }

    /// Tells Janus this handle has no more candidates (they are all in the SDP).
    async fn candidates_done(&self, handle: u64) -> Result<(), String> {
        self.post(
            &format!("{}/{}/{handle}", self.base, self.session),
            json!({"janus": "trickle", "candidate": {"completed": true}, "transaction": transaction()}),
        )
        .await
        .map(|_| ())
    }

    pub async fn publisher(&self, index: u32, profile: Profile) -> Result<(Peer, Mid, Keep), String> {
        let (handle, mut events) = self.attach().await?;
        let mut peer = Peer::new(self.media_ip).await.map_err(|e| e.to_string())?;
        let mut change = peer.rtc.sdp_api();
        let mid = change.add_media(
            media_kind(profile),
            Direction::SendOnly,
            Some(format!("stream_{index}")),
            Some(format!("track_{index}")),
            None,
        );
        let (offer, pending) = change.apply().ok_or("no publish offer")?;
        let body = json!({"request": "joinandconfigure", "room": ROOM, "ptype": "publisher",
            "display": format!("pub{index}"), "audio": true, "video": true});
        self.request(
            handle,
            body,
            Some(json!({"type": "offer", "sdp": offer.to_sdp_string()})),
        )
        .await?;
        self.candidates_done(handle).await?;
        let event = wait_event(&mut events, |e| e["jsep"]["type"] == "answer").await?;
        let id = event["plugindata"]["data"]["id"]
            .as_u64()
            .ok_or_else(|| format!("janus publisher id missing: {event}"))?;
        self.publisher_ids.lock().expect("ids").insert(index, id);
        let answer = SdpAnswer::from_sdp_string(event["jsep"]["sdp"].as_str().unwrap_or(""))
            .map_err(|e| format!("janus answer: {e}"))?;
        peer.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| format!("janus answer: {e}"))?;
        Ok((peer, mid, drain(events)))
    }

    /// A subscriber of every publisher's feed (one handle, one m-line per feed).
    pub async fn subscriber(
        &self,
        _index: usize,
        _profile: Profile,
        publishers: u32,
    ) -> Result<(Peer, Keep), String> {
        let feeds: Vec<Value> = {
            let ids = self.publisher_ids.lock().expect("ids");
            (0..publishers)
                .filter_map(|i| ids.get(&i))
                .map(|id| json!({"feed": id}))
                .collect()
        };
        let (handle, mut events) = self.attach().await?;
        self.request(
            handle,
            json!({"request": "join", "room": ROOM, "ptype": "subscriber", "streams": feeds}),
            None,
        )
        .await?;
        let event = wait_event(&mut events, |e| e["jsep"]["type"] == "offer").await?;
        let offer = SdpOffer::from_sdp_string(event["jsep"]["sdp"].as_str().unwrap_or(""))
            .map_err(|e| format!("janus offer: {e}"))?;
        let mut peer = Peer::new(self.media_ip).await.map_err(|e| e.to_string())?;
        let answer = peer
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| format!("janus offer: {e}"))?;
        self.request(
            handle,
            json!({"request": "start", "room": ROOM}),
            Some(json!({"type": "answer", "sdp": answer.to_sdp_string()})),
        )
        .await?;
        self.candidates_done(handle).await?;
        Ok((peer, drain(events)))
    }
}

/// The session's long poll: every event goes to its handle's channel (a full channel
/// drops it: those are media reports nobody waits for).
async fn long_poll(http: reqwest::Client, url: String, routes: Routes) {
    let url = format!("{url}?maxev=100");
    loop {
        let Ok(response) = http.get(&url).send().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(value) = response.json::<Value>().await else {
            continue;
        };
        let events = match value {
            Value::Array(list) => list,
            other => vec![other],
        };
        for event in events {
            if let Some(sender) = event["sender"].as_u64() {
                let route = routes.lock().expect("routes").get(&sender).cloned();
                if let Some(tx) = route {
                    let _ = tx.try_send(event);
                }
            }
        }
    }
}

async fn wait_event(
    events: &mut mpsc::Receiver<Value>,
    want: impl Fn(&Value) -> bool,
) -> Result<Value, String> {
    let wait = async {
        while let Some(event) = events.recv().await {
            if want(&event) {
                return Ok(event);
            }
            if event["janus"] == "hangup" || event["plugindata"]["data"]["error"].is_string() {
                return Err(format!("janus: {event}"));
            }
        }
        Err("janus: event route closed".to_string())
    };
    tokio::time::timeout(STEP_TIMEOUT, wait)
        .await
        .map_err(|_| format!("janus: no answer within {STEP_TIMEOUT:?}"))?
}

/// A handle's later events: a hangup ends the peer.
fn drain(mut events: mpsc::Receiver<Value>) -> Keep {
    Box::pin(async move {
        while let Some(event) = events.recv().await {
            if event["janus"] == "hangup" {
                return format!("janus hung up: {}", event["reason"]);
            }
        }
        std::future::pending::<String>().await
    })
}
