//! `--media-mode webrtc`: the joiner as a real WebRTC participant, like the desktop client
//! (WIRE.md §5.3): the same ticket and signaling, a publish and a subscribe connection
//! (str0m), the client offering on both. The file is encoded by ffmpeg to Ogg Opus, its
//! Opus packets are read with the `ogg` crate and sent as RTP at real-time pace; with
//! `--write-received-dir`, each remote participant's audio is written to a playable
//! `<user_uid>.ogg` (Opus in Ogg, RFC 7845).

use std::collections::HashMap;
use std::io::Cursor;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use ogg::writing::{PacketWriteEndInfo, PacketWriter};
use serde_json::{Value, json};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message;

use super::flags::Flags;
use super::signal::{IDLE_TIMEOUT, JoinerError, connect, random_hex, ticket};

/// recvonly audio m-lines the subscribe connection offers (one per remote speaker).
pub const SUBSCRIBE_AUDIO_LINES: usize = 4;
/// Opus packets of one file held at most (about 5.5 hours at 20 ms).
pub const OPUS_PACKETS_MAX: usize = 1_000_000;
/// Largest UDP datagram read.
const DATAGRAM_BYTES_MAX: usize = 2048;
/// Samples per second of Opus timestamps.
const OPUS_RATE: u64 = 48_000;

/// Samples (at 48 kHz) in one Opus packet, from its TOC byte (RFC 6716 §3.1).
pub fn opus_packet_samples(packet: &[u8]) -> u64 {
    let Some(toc) = packet.first() else { return 0 };
    let config = toc >> 3;
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][(config % 4) as usize],
        12..=15 => [480, 960][(config % 2) as usize],
        _ => [120, 240, 480, 960][(config % 4) as usize],
    };
    let frames = match toc & 0x3 {
        0 => 1,
        1 | 2 => 2,
        _ => packet.get(1).map_or(1, |b| u64::from(b & 0x3f)),
    };
    frame * frames
}

/// The Opus packets of an Ogg Opus file (the OpusHead and OpusTags headers skipped).
pub fn opus_packets(ogg_bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut reader = ogg::PacketReader::new(Cursor::new(ogg_bytes));
    let mut packets = Vec::new();
    let mut index = 0usize;
    while let Some(packet) = reader.read_packet().map_err(|e| e.to_string())? {
        index += 1;
        if index == 1 && !packet.data.starts_with(b"OpusHead") {
            return Err("not an Ogg Opus stream".into());
        }
        if index <= 2 {
            continue;
        }
        if packets.len() >= OPUS_PACKETS_MAX {
            return Err(format!("more than {OPUS_PACKETS_MAX} Opus packets"));
        }
        packets.push(packet.data);
    }
    Ok(packets)
}

/// Writes one received Opus stream as Ogg Opus; the last packet waits so it can end the
/// stream.
pub struct OggOpusWriter {
    writer: PacketWriter<'static, std::io::BufWriter<std::fs::File>>,
    serial: u32,
    granule: u64,
    pending: Option<Vec<u8>>,
    packets: u64,
}

impl std::fmt::Debug for OggOpusWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OggOpusWriter")
            .field("serial", &self.serial)
            .field("packets", &self.packets)
            .finish()
    }
}

/// Pre-skip of the Opus decoder (RFC 7845 §4.2: typical encoder delay).
const PRE_SKIP: u16 = 312;

impl OggOpusWriter {
    pub fn create(path: &Path, serial: u32) -> std::io::Result<Self> {
        let file = std::fs::File::create(path)?;
        let mut writer = PacketWriter::new(std::io::BufWriter::new(file));
        let mut head = b"OpusHead".to_vec();
        head.push(1); // version
        head.push(1); // channels
        head.extend_from_slice(&PRE_SKIP.to_le_bytes());
        head.extend_from_slice(&48_000u32.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes()); // output gain
        head.push(0); // mapping family
        writer.write_packet(head, serial, PacketWriteEndInfo::EndPage, 0)?;
        let vendor = b"openchat-rtc-joiner";
        let mut tags = b"OpusTags".to_vec();
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor);
        tags.extend_from_slice(&0u32.to_le_bytes());
        writer.write_packet(tags, serial, PacketWriteEndInfo::EndPage, 0)?;
        Ok(Self {
            writer,
            serial,
            granule: u64::from(PRE_SKIP),
            pending: None,
            packets: 0,
        })
    }

    pub fn push(&mut self, packet: &[u8]) -> std::io::Result<()> {
        if let Some(previous) = self.pending.replace(packet.to_vec()) {
            self.granule += opus_packet_samples(&previous);
            self.packets += 1;
            // A page a second keeps seeking cheap.
            let end = if self.packets % 50 == 0 {
                PacketWriteEndInfo::EndPage
            } else {
                PacketWriteEndInfo::NormalPacket
            };
            self.writer
                .write_packet(previous, self.serial, end, self.granule)?;
        }
        Ok(())
    }

    /// Ends the stream; returns the packets written.
    pub fn finish(mut self) -> std::io::Result<u64> {
        if let Some(last) = self.pending.take() {
            self.granule += opus_packet_samples(&last);
            self.packets += 1;
            self.writer
                .write_packet(last, self.serial, PacketWriteEndInfo::EndStream, self.granule)?;
        }
        std::io::Write::flush(self.writer.inner_mut())?;
        Ok(self.packets)
    }
}

/// `ffmpeg -v error -i <file> -vn -c:a libopus -b:a 64k -ac 1 -ar 48000 -f ogg pipe:1`.
async fn encode_opus(bin: &str, path: &str) -> Result<Vec<Vec<u8>>, JoinerError> {
    let failed = |reason: String| JoinerError::Ffmpeg {
        bin: bin.to_owned(),
        reason,
    };
    if let Err(e) = tokio::fs::metadata(path).await {
        return Err(JoinerError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        });
    }
    let output = tokio::process::Command::new(bin)
        .args([
            "-v", "error", "-i", path, "-vn", "-c:a", "libopus", "-b:a", "64k", "-ac", "1", "-ar", "48000",
            "-f", "ogg", "pipe:1",
        ])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| failed(e.to_string()))?;
    if !output.status.success() {
        return Err(failed(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    opus_packets(&output.stdout).map_err(failed)
}

/// One PeerConnection: str0m on its own UDP socket.
struct Leg {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    pending: Option<SdpPendingOffer>,
}

impl Leg {
    async fn new(ip: std::net::IpAddr) -> Result<Self, JoinerError> {
        let socket = UdpSocket::bind((ip, 0))
            .await
            .map_err(|e| JoinerError::Signaling(format!("cannot bind a media socket: {e}")))?;
        let local = socket
            .local_addr()
            .map_err(|e| JoinerError::Signaling(e.to_string()))?;
        let mut rtc = Rtc::new(Instant::now());
        let candidate = Candidate::host(local, "udp").map_err(|e| JoinerError::Signaling(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        Ok(Self {
            rtc,
            socket,
            local,
            pending: None,
        })
    }

    /// Sends what str0m wants sent; keeps media events; returns the next deadline.
    async fn drain(&mut self, events: &mut Vec<Event>) -> Instant {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => return at,
                Ok(Output::Transmit(t)) => {
                    let _ = self.socket.send_to(&t.contents, t.destination).await;
                }
                Ok(Output::Event(event)) => events.push(event),
                Err(err) => {
                    eprintln!("warning: media connection failed: {err}");
                    return Instant::now() + Duration::from_secs(3600);
                }
            }
        }
    }
}

/// Who sent a subscribe m-line's audio, from the answer's msid and `rtc.track.published`.
#[derive(Default)]
struct Names {
    /// mid -> track_id (from the subscribe answer's `a=msid`).
    tracks: HashMap<String, String>,
    /// track_id -> user_uid.
    owners: HashMap<String, String>,
}

impl Names {
    fn learn_answer(&mut self, sdp: &str) {
        let mut mid = None;
        for line in sdp.lines() {
            if line.starts_with("m=") {
                mid = None;
            } else if let Some(m) = line.strip_prefix("a=mid:") {
                mid = Some(m.trim().to_owned());
            } else if let (Some(m), Some(msid)) = (&mid, line.strip_prefix("a=msid:")) {
                if let Some(track) = msid.split_whitespace().nth(1) {
                    self.tracks.insert(m.clone(), track.to_owned());
                }
            }
        }
    }

    fn name(&self, mid: &str) -> String {
        let user = self.tracks.get(mid).and_then(|t| self.owners.get(t));
        let safe = |s: &str| {
            s.chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                .collect::<String>()
        };
        match user {
            Some(user) => format!("{}.ogg", safe(user)),
            None => format!("received_{}.ogg", safe(mid)),
        }
    }
}

fn offer_message(channel: &str, direction: &str, sdp: String) -> Value {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    json!({"type": format!("rtc.offer.{direction}"), "request_id": format!("offer_{millis}_{direction}"), "channel_id": channel,
           "payload": {"type": "offer", "sdp": sdp, "direction": direction}})
}

/// Offers the subscribe connection again with one more recvonly audio m-line.
async fn reoffer_subscribe<S>(subscribe: &mut Leg, channel: &str, sink: &mut S)
where
    S: futures_util::Sink<Message> + Unpin,
{
    let mut change = subscribe.rtc.sdp_api();
    change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    if let Some((offer, pending)) = change.apply() {
        subscribe.pending = Some(pending);
        let sdp: String = offer
            .to_sdp_string()
            .lines()
            .filter(|l| !l.starts_with("a=ssrc"))
            .map(|l| format!("{l}\r\n"))
            .collect();
        let _ = sink
            .send(Message::text(
                offer_message(channel, "subscribe", sdp).to_string(),
            ))
            .await;
    }
}

/// Joins as a WebRTC participant; publishes the file (if any) and records others.
pub async fn run(flags: Flags) -> Result<(), JoinerError> {
    let packets = match &flags.file {
        Some(path) => Some(encode_opus(&flags.ffmpeg_bin, path).await?),
        None => None,
    };
    let ticket = ticket(&flags).await?;
    let ws = connect(ticket["signaling_url"].as_str().unwrap_or("")).await?;
    // Media candidates use the address the signaling connection leaves from.
    let local_ip = ws
        .get_ref()
        .local_addr()
        .map_err(|e| JoinerError::Signaling(e.to_string()))?
        .ip();
    let (mut sink, mut stream) = ws.split();
    let channel = ticket["channel_id"]
        .as_str()
        .unwrap_or(&flags.channel_id)
        .to_owned();
    let send = |value: Value| Message::text(value.to_string());
    sink.send(send(json!({"type": "rtc.join", "request_id": format!("join_{}", random_hex(4)), "channel_id": channel, "payload": {"ticket": ticket["ticket"]}})))
        .await
        .map_err(|e| JoinerError::Closed(e.to_string()))?;

    let mut publish = Leg::new(local_ip).await?;
    let mut subscribe = Leg::new(local_ip).await?;
    let stream_id = format!("stream_{}", random_hex(4));
    let track_id = format!("mic_{}", random_hex(4));
    let mut names = Names::default();
    let mut writers: HashMap<Mid, (PathBuf, OggOpusWriter)> = HashMap::new();
    let mut mic: Option<Mid> = None;
    let mut joined = false;
    let mut me = String::new();
    // A subscribe re-offer is due (a track was announced while an offer was in flight).
    let mut reoffer = false;
    let mut sent_packets = 0usize;
    let mut send_clock: Option<(Instant, u64)> = None;
    let mut done_at: Option<Instant> = None;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| JoinerError::Signaling(e.to_string()))?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| JoinerError::Signaling(e.to_string()))?;
    let mut idle = tokio::time::Instant::now() + IDLE_TIMEOUT;
    let mut buffers = (vec![0u8; DATAGRAM_BYTES_MAX], vec![0u8; DATAGRAM_BYTES_MAX]);
    let mut events = Vec::new();
    let reason: &str = loop {
        let now = Instant::now();
        let mut wake = publish
            .drain(&mut events)
            .await
            .min(subscribe.drain(&mut events).await);
        // Received audio.
        for event in events.drain(..) {
            if let Event::MediaData(data) = event
                && let Some(dir) = &flags.write_received_dir
            {
                if !writers.contains_key(&data.mid) {
                    let dir = Path::new(dir);
                    if let Err(e) = std::fs::create_dir_all(dir) {
                        eprintln!("warning: cannot create {}: {e}", dir.display());
                        continue;
                    }
                    let part = dir.join(format!(".{}.ogg.part", data.mid));
                    match OggOpusWriter::create(&part, writers.len() as u32 + 1) {
                        Ok(writer) => {
                            eprintln!("receiving audio on m-line {}", data.mid);
                            writers.insert(data.mid, (part, writer));
                        }
                        Err(e) => {
                            eprintln!("warning: cannot write {}: {e}", part.display());
                            continue;
                        }
                    }
                }
                if let Some((_, writer)) = writers.get_mut(&data.mid)
                    && let Err(e) = writer.push(&data.data)
                {
                    eprintln!("warning: writing received audio failed: {e}");
                }
            }
        }
        // Outgoing audio at real-time pace.
        if let (Some(packets), Some(mid)) = (&packets, mic)
            && publish.rtc.is_connected()
            && sent_packets < packets.len()
        {
            let (start, _) = *send_clock.get_or_insert((now, 0));
            let pt = publish
                .rtc
                .codec_config()
                .find(|p| p.spec().codec == Codec::Opus)
                .map(|p| p.pt());
            while sent_packets < packets.len() {
                let samples = send_clock.map_or(0, |(_, s)| s);
                let due = start + Duration::from_micros(samples * 1_000_000 / OPUS_RATE);
                if due > now {
                    wake = wake.min(due);
                    break;
                }
                let packet = &packets[sent_packets];
                if let (Some(pt), Some(writer)) = (pt, publish.rtc.writer(mid))
                    && let Err(e) = writer.write(
                        pt,
                        now,
                        MediaTime::new(samples, str0m::media::Frequency::FORTY_EIGHT_KHZ),
                        packet.clone(),
                    )
                {
                    eprintln!("warning: sending audio failed: {e}");
                }
                send_clock = Some((start, samples + opus_packet_samples(packet)));
                sent_packets += 1;
                if sent_packets % 250 == 0 {
                    eprintln!("sent {:.1} s of audio", (samples as f64) / OPUS_RATE as f64);
                }
            }
            if sent_packets == packets.len() {
                let seconds = send_clock.map_or(0, |(_, s)| s) as f64 / OPUS_RATE as f64;
                eprintln!("sent {seconds:.1} s of audio ({} Opus packets)", packets.len());
                // Let the last packets and their retransmissions out before leaving.
                done_at = Some(now + Duration::from_millis(500));
            }
        }
        if let Some(at) = done_at {
            if flags.exit_after_send && now >= at {
                break "exit_after_send";
            }
            wake = wake.min(at);
        }
        let wake = tokio::time::Instant::from_std(wake.max(now));
        tokio::select! {
            _ = sigint.recv() => break "sigint",
            _ = sigterm.recv() => break "sigterm",
            () = tokio::time::sleep_until(idle) => {
                eprintln!("no data message for {}s; leaving", IDLE_TIMEOUT.as_secs());
                break "idle_timeout";
            }
            () = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                let _ = publish.rtc.handle_input(Input::Timeout(now));
                let _ = subscribe.rtc.handle_input(Input::Timeout(now));
            }
            received = publish.socket.recv_from(&mut buffers.0) => {
                if let Ok((n, from)) = received
                    && let Ok(receive) = Receive::new(Protocol::Udp, from, publish.local, &buffers.0[..n])
                {
                    let _ = publish.rtc.handle_input(Input::Receive(Instant::now(), receive));
                }
            }
            received = subscribe.socket.recv_from(&mut buffers.1) => {
                if let Ok((n, from)) = received
                    && let Ok(receive) = Receive::new(Protocol::Udp, from, subscribe.local, &buffers.1[..n])
                {
                    let _ = subscribe.rtc.handle_input(Input::Receive(Instant::now(), receive));
                }
            }
            next = stream.next() => {
                let text = match next {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(frame))) => {
                        return Err(JoinerError::Closed(frame.map(|f| f.reason.to_string()).unwrap_or_default()));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(JoinerError::Closed(e.to_string())),
                    None => return Err(JoinerError::Closed("the server ended the connection".into())),
                };
                idle = tokio::time::Instant::now() + IDLE_TIMEOUT;
                let Ok(envelope) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                let payload = &envelope["payload"];
                match envelope["type"].as_str().unwrap_or("") {
                    "rtc.joined" if !joined => {
                                                joined = true;
                        me = payload["participant_id"].as_str().unwrap_or("").to_owned();
                        let others = payload["participants"].as_array().map_or(0, Vec::len);
                        eprintln!("joined {channel} as {} ({others} other participant(s) present)", payload["participant_id"].as_str().unwrap_or(""));
                        // Subscribe: recvonly audio m-lines, like the client (no a=ssrc).
                        let mut change = subscribe.rtc.sdp_api();
                        for _ in 0..SUBSCRIBE_AUDIO_LINES {
                            change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
                        }
                        if let Some((offer, pending)) = change.apply() {
                            subscribe.pending = Some(pending);
                            let sdp: String = offer.to_sdp_string().lines().filter(|l| !l.starts_with("a=ssrc")).map(|l| format!("{l}\r\n")).collect();
                            let _ = sink.send(send(offer_message(&channel, "subscribe", sdp))).await;
                        }
                        if packets.is_some() {
                            let state = json!({"type": "rtc.media.state", "request_id": format!("mic_start_{}", random_hex(4)), "channel_id": channel,
                                "payload": {"stream_id": stream_id, "track_id": track_id, "stream_kind": "audio_microphone", "action": "start", "mic_muted": false, "deafened": false}});
                            let _ = sink.send(send(state)).await;
                            let mut change = publish.rtc.sdp_api();
                            mic = Some(change.add_media(MediaKind::Audio, Direction::SendOnly, Some(stream_id.clone()), Some(track_id.clone()), None));
                            if let Some((offer, pending)) = change.apply() {
                                publish.pending = Some(pending);
                                let _ = sink.send(send(offer_message(&channel, "publish", offer.to_sdp_string()))).await;
                            }
                        }
                    }
                    kind @ ("rtc.answer.publish" | "rtc.answer.subscribe") => {
                        let leg = if kind.ends_with("publish") { &mut publish } else { &mut subscribe };
                        let sdp = payload["sdp"].as_str().unwrap_or("");
                        if kind.ends_with("subscribe") {
                            names.learn_answer(sdp);
                        }
                                                match (leg.pending.take(), SdpAnswer::from_sdp_string(sdp)) {
                            (Some(pending), Ok(answer)) => {
                                if let Err(e) = leg.rtc.sdp_api().accept_answer(pending, answer) {
                                    eprintln!("warning: the {kind} could not be applied: {e}");
                                }
                            }
                            _ => eprintln!("warning: unexpected {kind}"),
                        }
                        if kind.ends_with("subscribe") && std::mem::take(&mut reoffer) {
                            reoffer_subscribe(&mut subscribe, &channel, &mut sink).await;
                        }
                    }
                    "rtc.track.published" => {
                        if let (Some(track), Some(user)) = (payload["track_id"].as_str(), payload["user_uid"].as_str()) {
                            names.owners.insert(track.to_owned(), user.to_owned());
                        }
                        // Like the client: a new remote track means a new subscribe offer (one
                        // more m-line), whose answer names the track on its m-line (msid).
                        let remote = payload["participant_id"].as_str().is_some_and(|p| p != me);
                        if remote && payload["media_kind"] == "audio" {
                            if subscribe.pending.is_some() {
                                reoffer = true;
                            } else {
                                reoffer_subscribe(&mut subscribe, &channel, &mut sink).await;
                            }
                        }
                    }
                    "rtc.participant.joined" => eprintln!("participant {} joined", payload["participant"]["participant_id"].as_str().unwrap_or("")),
                    "rtc.participant.left" => eprintln!("participant {} left", payload["participant"]["participant_id"].as_str().unwrap_or("")),
                    "rtc.error" => eprintln!("warning: rtc.error {}: {}", payload["code"].as_str().unwrap_or(""), payload["message"].as_str().unwrap_or("")),
                    _ => {}
                }
            }
        }
    };
    let leave = json!({"type": "rtc.leave", "request_id": format!("leave_{}", random_hex(4)), "channel_id": channel, "payload": {"reason": reason}});
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.send(send(leave))).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
    for (mid, (part, writer)) in writers {
        match writer.finish() {
            Ok(packets) => {
                let name = names.name(&mid.to_string());
                let target = part.with_file_name(&name);
                match std::fs::rename(&part, &target) {
                    Ok(()) => eprintln!("wrote {} ({packets} Opus packets)", target.display()),
                    Err(e) => eprintln!("warning: cannot name {}: {e}", target.display()),
                }
            }
            Err(e) => eprintln!("warning: finishing {} failed: {e}", part.display()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opus_packet_durations_follow_the_toc() {
        // config 27 (CELT FB 20 ms), one frame.
        assert_eq!(opus_packet_samples(&[27 << 3]), 960);
        // config 1 (SILK NB 20 ms), two frames (code 1).
        assert_eq!(opus_packet_samples(&[(1 << 3) | 1]), 1920);
        // config 16 (CELT NB 2.5 ms), code 3 with 4 frames.
        assert_eq!(opus_packet_samples(&[(16 << 3) | 3, 4]), 480);
        assert_eq!(opus_packet_samples(&[]), 0);
    }

    #[test]
    fn written_ogg_opus_reads_back_packet_for_packet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.ogg");
        let packets: Vec<Vec<u8>> = (0..120u8).map(|i| vec![27 << 3, i, i, i]).collect();
        let mut writer = OggOpusWriter::create(&path, 7).unwrap();
        for p in &packets {
            writer.push(p).unwrap();
        }
        assert_eq!(writer.finish().unwrap(), 120);
        let read = opus_packets(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(read, packets);
        assert!(opus_packets(b"not ogg at all").is_err());
    }

    #[test]
    fn received_files_are_named_after_the_publisher() {
        let mut names = Names::default();
        names.learn_answer("v=0\r\nm=audio 9 UDP 111\r\na=mid:0\r\na=msid:stream_a mic_a\r\nm=audio 9 UDP 111\r\na=mid:1\r\n");
        names.owners.insert("mic_a".into(), "uid_a/../x".into());
        assert_eq!(names.name("0"), "uid_ax.ogg");
        assert_eq!(names.name("1"), "received_1.ogg");
    }
}
