//! A whole voice room under a virtual clock: a real `Room` (joins, offers, answers, track
//! announcements, leaves) with its SFU, eight simulated participants whose publish and
//! subscribe PeerConnections are str0m peers, and an in-memory network that loses 2 % of
//! all datagrams in both directions (seeded; the order in which a room emits datagrams can
//! differ between runs, as hash maps iterate in a random order, so which packets the loss
//! hits does too). No sockets.
//!
//! Shown over 60 s of virtual time: every connection comes up; every subscriber receives a
//! keyframe of every video track within a bound after its connection and the publisher's are
//! up; nothing reaches a participant after it left; each
//! subscriber's audio sequence numbers have no gaps beyond the datagrams the network
//! dropped on the way (publisher -> SFU and SFU -> subscriber); speaking is announced.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(feature = "sfu")]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use openchat_core::ticket::Permissions;
use openchat_media::demux::Demux;
use openchat_media::room::{
    LeaveReason, Leg, Now, ParticipantId, ParticipantInfo, Room, RoomCommand, RoomOutput,
};
use serde_json::Value;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

const LOSS_PERCENT: u64 = 2;
const PARTICIPANTS: usize = 8;
const VIDEO_PUBLISHERS: usize = 2;
const DURATION: Duration = Duration::from_secs(60);
const TICK: Duration = Duration::from_millis(10);
/// A subscriber sees a keyframe of every video track at most this long after its receiving
/// connection and the publisher's sending connection are both up.
const KEYFRAME_BOUND: Duration = Duration::from_secs(4);
/// Both legs are up this long after a join at most (DTLS retransmits a lost flight after
/// 1, 2, 4, 8 s; three losses of one flight in a row stay inside).
const CONNECT_BOUND: Duration = Duration::from_secs(20);

/// A deterministic xorshift generator: the loss pattern replays from the seed.
struct Lossy(u64);

impl Lossy {
    fn drop_next(&mut self) -> bool {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % 100 < LOSS_PERCENT
    }
}

/// The plaintext RTP header of an SRTP datagram: (ssrc, sequence number).
fn rtp_header(bytes: &[u8]) -> Option<(u32, u16)> {
    let is_rtp = bytes.len() >= 12 && bytes[0] >> 6 == 2 && !(72..=79).contains(&(bytes[1] & 0x7f));
    is_rtp.then(|| {
        (
            u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
            u16::from_be_bytes([bytes[2], bytes[3]]),
        )
    })
}

struct Peer {
    addr: SocketAddr,
    rtc: Rtc,
    outbox: Vec<(SocketAddr, Vec<u8>)>,
    /// When ICE and DTLS completed (the handshake's packets cross the lossy link too, and
    /// DTLS backs off 1, 2, 4 s on a lost flight).
    connected_at: Option<Instant>,
}

impl Peer {
    fn new(now: Instant, addr: SocketAddr) -> Self {
        let mut rtc = Rtc::new(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        Self {
            addr,
            rtc,
            outbox: Vec::new(),
            connected_at: None,
        }
    }
}

/// What a subscriber received of one publisher's track.
#[derive(Default)]
struct Received {
    /// Audio: (the publisher's audio frame number, the sequence number on the subscriber's
    /// m-line); one packet per frame.
    audio: Vec<(u32, u64)>,
    frames: usize,
    first_keyframe: Option<Instant>,
}

struct Participant {
    index: usize,
    id: ParticipantId,
    publish: Peer,
    subscribe: Peer,
    audio_mid: Option<Mid>,
    video_mid: Option<Mid>,
    joined_at: Option<Instant>,
    left_at: Option<Instant>,
    /// The publisher was asked for a keyframe.
    keyframe_wanted: bool,
    /// Per (publisher index, kind) as tagged in the payload.
    received: HashMap<(usize, MediaKind), Received>,
    /// Subscriber m-line -> publisher, from the payload tags (audio), for the gap check.
    audio_line: HashMap<Mid, usize>,
    /// Keyframe requests this subscriber made, per m-line, and when.
    asked: HashMap<Mid, Instant>,
    frames: Vec<Value>,
    frame_counter: u32,
    audio_counter: u32,
}

impl Participant {
    fn new(now: Instant, index: usize) -> Self {
        let publish: SocketAddr = format!("10.0.1.{}:4000", index + 10).parse().unwrap();
        let subscribe: SocketAddr = format!("10.0.2.{}:4000", index + 10).parse().unwrap();
        Self {
            index,
            id: ParticipantId(format!("p{index}")),
            publish: Peer::new(now, publish),
            subscribe: Peer::new(now, subscribe),
            audio_mid: None,
            video_mid: None,
            joined_at: None,
            left_at: None,
            keyframe_wanted: true,
            received: HashMap::new(),
            audio_line: HashMap::new(),
            asked: HashMap::new(),
            frames: Vec::new(),
            frame_counter: 0,
            audio_counter: 0,
        }
    }

    fn drain(&mut self, now: Instant) {
        loop {
            match self.publish.rtc.poll_output().unwrap() {
                Output::Timeout(_) => break,
                Output::Transmit(t) => self.publish.outbox.push((t.destination, t.contents.into())),
                Output::Event(Event::KeyframeRequest(_)) => self.keyframe_wanted = true,
                Output::Event(Event::Connected) => {
                    self.publish.connected_at.get_or_insert(now);
                }
                Output::Event(_) => {}
            }
        }
        loop {
            match self.subscribe.rtc.poll_output().unwrap() {
                Output::Timeout(_) => break,
                Output::Transmit(t) => self.subscribe.outbox.push((t.destination, t.contents.into())),
                Output::Event(Event::Connected) => {
                    self.subscribe.connected_at.get_or_insert(now);
                }
                Output::Event(Event::MediaData(data)) => {
                    let bytes = &data.data;
                    let tag = &bytes[bytes.len() - 5..];
                    let publisher = usize::from(tag[0]);
                    let kind = if data.params.spec().codec.is_audio() {
                        MediaKind::Audio
                    } else {
                        MediaKind::Video
                    };
                    if kind == MediaKind::Audio {
                        self.audio_line.insert(data.mid, publisher);
                    }
                    let entry = self.received.entry((publisher, kind)).or_default();
                    entry.frames += 1;
                    if kind == MediaKind::Audio {
                        let number = u32::from_be_bytes([tag[1], tag[2], tag[3], tag[4]]);
                        assert_eq!(
                            data.seq_range.start(),
                            data.seq_range.end(),
                            "one packet per frame"
                        );
                        entry.audio.push((number, **data.seq_range.start()));
                    }
                    if kind == MediaKind::Video && data.is_keyframe() && entry.first_keyframe.is_none() {
                        entry.first_keyframe = Some(now);
                    }
                    // Like a browser's decoder: no keyframe yet, ask for one (once a second).
                    if kind == MediaKind::Video && entry.first_keyframe.is_none() {
                        let due = self
                            .asked
                            .get(&data.mid)
                            .is_none_or(|at| now.duration_since(*at) >= Duration::from_secs(1));
                        if due && let Some(mut writer) = self.subscribe.rtc.writer(data.mid) {
                            let _ = writer.request_keyframe(None, KeyframeRequestKind::Pli);
                            self.asked.insert(data.mid, now);
                        }
                    }
                }
                Output::Event(_) => {}
            }
        }
    }

    /// Sends this tick's media: audio every 20 ms, video (publishers 0 and 1) every 70 ms.
    fn send_media(&mut self, now: Instant, tick: u64) {
        if !self.publish.rtc.is_connected() {
            return;
        }
        let tag = |counter: u32, index: usize| {
            let mut tag = vec![index as u8];
            tag.extend_from_slice(&counter.to_be_bytes());
            tag
        };
        if tick % 2 == 0
            && let Some(mid) = self.audio_mid
        {
            let pt = self.pt(Codec::Opus);
            let mut payload = vec![0xA5u8; 60];
            payload.extend(tag(self.audio_counter, self.index));
            self.audio_counter += 1;
            // Participant k talks in the k-th of eight 5 s slots, silent otherwise.
            let slot = (tick / 500) as usize % PARTICIPANTS;
            let level = if slot == self.index { -20 } else { -100 };
            let time = MediaTime::from_90khz(tick * 900);
            self.publish
                .rtc
                .writer(mid)
                .unwrap()
                .audio_level(level, level > -50)
                .write(pt, now, time, payload)
                .unwrap();
        }
        if tick % 7 == 0
            && let Some(mid) = self.video_mid
        {
            let pt = self.pt(Codec::Vp8);
            let mut frame = if std::mem::take(&mut self.keyframe_wanted) {
                // A VP8 keyframe header (P bit clear), 320x240.
                let mut key = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
                key.resize(2400, 0x33);
                key
            } else {
                let mut inter = vec![0x11, 0x02, 0x00];
                inter.resize(900, 0x44);
                inter
            };
            frame.extend(tag(self.frame_counter, self.index));
            let time = MediaTime::from_90khz(tick * 900);
            self.publish
                .rtc
                .writer(mid)
                .unwrap()
                .write(pt, now, time, frame)
                .unwrap();
        }
        self.frame_counter += 1;
    }

    fn pt(&self, codec: Codec) -> str0m::media::Pt {
        self.publish
            .rtc
            .codec_config()
            .find(|p| p.spec().codec == codec)
            .unwrap()
            .pt()
    }
}

struct Sim {
    room: Room,
    demux: Demux<()>,
    sfu_addr: SocketAddr,
    people: Vec<Participant>,
    loss: Lossy,
    /// Dropped RTP datagrams: (destination or source address, ssrc) -> sequence numbers.
    dropped_to: HashMap<(SocketAddr, u32), HashSet<u16>>,
    dropped_from: HashMap<(SocketAddr, u32), HashSet<u16>>,
    /// The first RTP sequence number each (source address, ssrc) sent.
    first_seq: HashMap<(SocketAddr, u32), u16>,
    /// Media datagrams the SFU sent to each address after its participant left.
    after_leave: HashMap<SocketAddr, usize>,
    speaking: Vec<(String, bool)>,
}

fn info(index: usize) -> ParticipantInfo {
    ParticipantInfo {
        id: ParticipantId(format!("p{index}")),
        server_id: "srv_sim".into(),
        user_uid: format!("uid_{index}"),
        device_id: format!("dev_{index}"),
        permissions: Permissions::ALL,
    }
}

impl Sim {
    fn frames(&mut self) {
        while let Some(output) = self.room.poll_output() {
            if let RoomOutput::Send { to, frame } = output {
                let value: Value = serde_json::from_str(&frame).unwrap();
                if value["type"] == "rtc.speaking" {
                    let who = value["payload"]["participant_id"].as_str().unwrap().to_owned();
                    let speaking = value["payload"]["speaking"].as_bool().unwrap();
                    if to.0 == "p0" {
                        self.speaking.push((who, speaking));
                    }
                }
                if let Some(p) = self.people.iter_mut().find(|p| p.id == to) {
                    p.frames.push(value);
                }
            }
        }
    }

    /// Offers through the room and applies its answer.
    fn negotiate(&mut self, now: Instant, who: usize, leg: Leg, sdp: String, pending: SdpPendingOffer) {
        let from = self.people[who].id.clone();
        self.room
            .handle_command(
                Now::new(now, 0),
                RoomCommand::Offer {
                    from,
                    leg,
                    sdp,
                    request_id: Some(format!("offer_{who}_{}", leg.as_str())),
                    signaling_ip: None,
                },
            )
            .unwrap();
        self.frames();
        let kind = format!("rtc.answer.{}", leg.as_str());
        let answer = self.people[who]
            .frames
            .iter()
            .rev()
            .find(|f| f["type"] == kind.as_str())
            .unwrap_or_else(|| panic!("no {kind} for p{who}: {:?}", self.people[who].frames.last()));
        let sdp = answer["payload"]["sdp"].as_str().unwrap().to_owned();
        let peer = match leg {
            Leg::Publish => &mut self.people[who].publish,
            Leg::Subscribe => &mut self.people[who].subscribe,
        };
        peer.rtc
            .sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&sdp).unwrap())
            .unwrap();
    }

    fn join(&mut self, now: Instant, who: usize) {
        self.room
            .handle_command(
                Now::new(now, 0),
                RoomCommand::Join {
                    participant: info(who),
                    request_id: None,
                },
            )
            .unwrap();
        self.frames();
        self.people[who].joined_at = Some(now);
        // Publish: a microphone, and a camera for the first publishers.
        let p = &mut self.people[who];
        let mut change = p.publish.rtc.sdp_api();
        let stream = format!("stream_{who}");
        let audio = change.add_media(
            MediaKind::Audio,
            Direction::SendOnly,
            Some(stream.clone()),
            Some(format!("mic_{who}")),
            None,
        );
        let video = (who < VIDEO_PUBLISHERS).then(|| {
            change.add_media(
                MediaKind::Video,
                Direction::SendOnly,
                Some(stream.clone()),
                Some(format!("cam_{who}")),
                None,
            )
        });
        let (offer, pending) = change.apply().unwrap();
        p.audio_mid = Some(audio);
        p.video_mid = video;
        self.negotiate(now, who, Leg::Publish, offer.to_sdp_string(), pending);
        // Subscribe: recvonly m-lines for everyone else, as the client sizes them.
        let p = &mut self.people[who];
        let mut change = p.subscribe.rtc.sdp_api();
        for _ in 0..PARTICIPANTS - 1 {
            change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        }
        for _ in 0..VIDEO_PUBLISHERS {
            change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        }
        let (offer, pending) = change.apply().unwrap();
        // Browsers write no a=ssrc lines for recvonly m-lines.
        let sdp: String = offer
            .to_sdp_string()
            .lines()
            .filter(|l| !l.starts_with("a=ssrc"))
            .map(|l| format!("{l}\r\n"))
            .collect();
        self.negotiate(now, who, Leg::Subscribe, sdp, pending);
    }

    fn leave(&mut self, now: Instant, who: usize) {
        let participant = self.people[who].id.clone();
        self.room
            .handle_command(
                Now::new(now, 0),
                RoomCommand::Leave {
                    participant,
                    reason: LeaveReason::Left,
                },
            )
            .unwrap();
        self.frames();
        self.people[who].left_at = Some(now);
    }

    /// One tick: timers, then datagrams moved (each may be lost) until the network is quiet.
    fn step(&mut self, now: Instant) {
        for p in self
            .people
            .iter_mut()
            .filter(|p| p.joined_at.is_some() && p.left_at.is_none())
        {
            p.publish.rtc.handle_input(Input::Timeout(now)).unwrap();
            p.subscribe.rtc.handle_input(Input::Timeout(now)).unwrap();
            p.drain(now);
        }
        self.room.handle_timeout(now);
        for _ in 0..16 {
            let mut moved = false;
            for i in 0..self.people.len() {
                let p = &mut self.people[i];
                let datagrams: Vec<(SocketAddr, SocketAddr, Vec<u8>)> = [&mut p.publish, &mut p.subscribe]
                    .into_iter()
                    .flat_map(|peer| {
                        let from = peer.addr;
                        peer.outbox.drain(..).map(move |(to, bytes)| (from, to, bytes))
                    })
                    .collect();
                for (from, to, bytes) in datagrams {
                    assert_eq!(to, self.sfu_addr, "clients only talk to the SFU");
                    moved = true;
                    let header = rtp_header(&bytes);
                    if let Some((ssrc, seq)) = header {
                        self.first_seq.entry((from, ssrc)).or_insert(seq);
                    }
                    if self.loss.drop_next() {
                        if let Some((ssrc, seq)) = header {
                            self.dropped_from.entry((from, ssrc)).or_default().insert(seq);
                        }
                        continue;
                    }
                    let _ = self.demux.deliver(&mut self.room, now, from, &bytes);
                }
            }
            while let Some(transmit) = self.room.poll_transmit() {
                moved = true;
                let to = transmit.destination;
                let Some(p) = self
                    .people
                    .iter_mut()
                    .find(|p| p.publish.addr == to || p.subscribe.addr == to)
                else {
                    panic!("the SFU sent to an unknown address {to}");
                };
                if p.left_at.is_some() {
                    *self.after_leave.entry(to).or_default() += 1;
                    continue;
                }
                if self.loss.drop_next() {
                    if let Some((ssrc, seq)) = rtp_header(&transmit.contents) {
                        self.dropped_to.entry((to, ssrc)).or_default().insert(seq);
                    }
                    continue;
                }
                let peer = if p.publish.addr == to {
                    &mut p.publish
                } else {
                    &mut p.subscribe
                };
                let receive = Receive::new(Protocol::Udp, self.sfu_addr, to, &transmit.contents).unwrap();
                peer.rtc.handle_input(Input::Receive(now, receive)).unwrap();
                p.drain(now);
            }
            self.frames();
            if !moved {
                break;
            }
        }
    }
}

#[test]
fn eight_participants_on_a_lossy_link_for_a_minute_of_virtual_time() {
    let start = Instant::now();
    let sfu_addr: SocketAddr = "10.0.0.1:5000".parse().unwrap();
    let mut sim = Sim {
        room: Room::with_media("chan_sim", 16, sfu_addr, true),
        demux: Demux::new(),
        sfu_addr,
        people: (0..PARTICIPANTS).map(|i| Participant::new(start, i)).collect(),
        loss: Lossy(0x5eed_1234_abcd_ef01),
        dropped_to: HashMap::new(),
        dropped_from: HashMap::new(),
        first_seq: HashMap::new(),
        after_leave: HashMap::new(),
        speaking: Vec::new(),
    };
    // Six join at once; p6 and p7 join later (p7 after the video is long flowing); p5 leaves.
    let joins: HashMap<u64, Vec<usize>> =
        HashMap::from([(0, vec![0, 1, 2, 3, 4, 5]), (2000, vec![6]), (3000, vec![7])]);
    let leave_p5_at_tick = 4500;
    let ticks = DURATION.as_millis() as u64 / TICK.as_millis() as u64;
    for tick in 0..ticks {
        let now = start + TICK * tick as u32;
        if let Some(who) = joins.get(&tick) {
            for &who in who {
                sim.join(now, who);
            }
        }
        if tick == leave_p5_at_tick {
            sim.leave(now, 5);
        }
        for p in sim
            .people
            .iter_mut()
            .filter(|p| p.joined_at.is_some() && p.left_at.is_none())
        {
            p.send_media(now, tick);
        }
        sim.step(now);
    }

    // Track announcements reached everyone (p7 learns every earlier track on join).
    let p7_announced = sim.people[7]
        .frames
        .iter()
        .filter(|f| f["type"] == "rtc.track.published")
        .count();
    assert!(
        p7_announced >= PARTICIPANTS - 1 + VIDEO_PUBLISHERS,
        "p7 saw {p7_announced} announcements"
    );

    // The SSRCs: each publisher's microphone, and each subscriber m-line's receive stream.
    let mut pub_ssrcs: HashMap<usize, u32> = HashMap::new();
    let mut sub_ssrcs: HashMap<(usize, Mid), u32> = HashMap::new();
    for p in sim.people.iter_mut() {
        let mid = p.audio_mid.unwrap();
        let ssrc = p
            .publish
            .rtc
            .direct_api()
            .stream_tx_by_mid(mid, None)
            .unwrap()
            .ssrc();
        pub_ssrcs.insert(p.index, *ssrc);
        let lines: Vec<Mid> = p.audio_line.keys().copied().collect();
        for mid in lines {
            if let Some(rx) = p.subscribe.rtc.direct_api().stream_rx_by_mid(mid, None) {
                sub_ssrcs.insert((p.index, mid), *rx.ssrc());
            }
        }
    }
    let mut lost_frames = 0;
    let mut worst_keyframe = Duration::ZERO;
    let mut worst_connect = Duration::ZERO;
    let mut audio_checked = 0;
    for sub in &sim.people {
        let joined = sub.joined_at.unwrap();
        for publisher in &sim.people {
            if publisher.index == sub.index {
                assert!(
                    !sub.received.contains_key(&(sub.index, MediaKind::Audio)),
                    "p{} heard itself",
                    sub.index
                );
                continue;
            }
            // Overlap: the publisher was in the room and sending while the subscriber was.
            let audio = sub.received.get(&(publisher.index, MediaKind::Audio));
            let audio =
                audio.unwrap_or_else(|| panic!("p{} got no audio from p{}", sub.index, publisher.index));
            assert!(
                audio.frames > 100,
                "p{} <- p{}: {} frames",
                sub.index,
                publisher.index,
                audio.frames
            );
            // Sequence numbers: the subscriber's m-line numbers the publisher's packets with
            // one constant offset (no jumps), and every frame missing in between was dropped
            // by the network, upstream or downstream.
            let line = sub
                .audio_line
                .iter()
                .filter(|(_, p)| **p == publisher.index)
                .map(|(mid, _)| *mid)
                .collect::<Vec<_>>();
            assert_eq!(
                line.len(),
                1,
                "one m-line carries p{} to p{}",
                publisher.index,
                sub.index
            );
            let mut sub_rtc_ssrc = None;
            let mut publisher_ssrc = None;
            let (sub_peer, pub_peer) = (&sub.subscribe, &publisher.publish);
            if let (Some(s), Some(p)) = (
                sub_ssrcs.get(&(sub.index, line[0])),
                pub_ssrcs.get(&publisher.index),
            ) {
                sub_rtc_ssrc = Some(*s);
                publisher_ssrc = Some(*p);
            }
            let (sub_ssrc, pub_ssrc) = (sub_rtc_ssrc.unwrap(), publisher_ssrc.unwrap());
            let s0 = sim.first_seq[&(pub_peer.addr, pub_ssrc)];
            let mut frames = audio.audio.clone();
            frames.sort_unstable();
            let (k0, q0) = frames[0];
            let offset = q0.wrapping_sub(u64::from(k0));
            for (k, q) in &frames {
                assert_eq!(
                    q.wrapping_sub(u64::from(*k)),
                    offset,
                    "p{} <- p{}: frame {k} arrived as sequence number {q}, off the track's numbering",
                    sub.index,
                    publisher.index
                );
            }
            let got: HashSet<u32> = frames.iter().map(|(k, _)| *k).collect();
            let (first, last) = (frames[0].0, frames[frames.len() - 1].0);
            let empty = HashSet::new();
            let up = sim.dropped_from.get(&(pub_peer.addr, pub_ssrc)).unwrap_or(&empty);
            let down = sim.dropped_to.get(&(sub_peer.addr, sub_ssrc)).unwrap_or(&empty);
            let mut missing = 0;
            for k in (first..=last).filter(|k| !got.contains(k)) {
                missing += 1;
                let sent_as = s0.wrapping_add(k as u16);
                let forwarded_as = (u64::from(k).wrapping_add(offset)) as u16;
                assert!(
                    up.contains(&sent_as) || down.contains(&forwarded_as),
                    "p{} <- p{}: frame {k} is missing, but the network dropped neither its packet {sent_as} \
                     upstream nor {forwarded_as} downstream",
                    sub.index,
                    publisher.index
                );
            }
            lost_frames += missing;
            audio_checked += 1;
            if let Some(mid) = publisher.video_mid {
                let _ = mid;
                let video = sub
                    .received
                    .get(&(publisher.index, MediaKind::Video))
                    .unwrap_or_else(|| panic!("p{} got no video from p{}", sub.index, publisher.index));
                let keyframe = video.first_keyframe.unwrap_or_else(|| {
                    panic!("p{} never got a keyframe from p{}", sub.index, publisher.index)
                });
                // Counted from when both legs were up: the SFU cannot forward a keyframe
                // before the DTLS handshakes it does not control have crossed the lossy link.
                let connected = |peer: &Peer| {
                    peer.connected_at
                        .unwrap_or_else(|| panic!("{} never connected", peer.addr))
                };
                let ready = joined
                    .max(connected(&sub.subscribe))
                    .max(connected(&publisher.publish));
                worst_connect = worst_connect.max(ready.duration_since(joined));
                assert!(
                    ready.duration_since(joined) <= CONNECT_BOUND,
                    "p{} <- p{}: the connections took {:?} to come up",
                    sub.index,
                    publisher.index,
                    ready.duration_since(joined)
                );
                let after = keyframe.duration_since(ready);
                worst_keyframe = worst_keyframe.max(after);
                assert!(
                    after <= KEYFRAME_BOUND,
                    "p{} waited {after:?} for p{}'s keyframe",
                    sub.index,
                    publisher.index
                );
            }
        }
    }
    assert_eq!(audio_checked, PARTICIPANTS * (PARTICIPANTS - 1));
    let dropped: usize = sim
        .dropped_from
        .values()
        .chain(sim.dropped_to.values())
        .map(HashSet::len)
        .sum();
    assert!(
        lost_frames > 100,
        "losses reached the subscribers ({lost_frames} audio frames)"
    );
    assert!(
        dropped > 1000,
        "the link was lossy ({dropped} RTP datagrams dropped)"
    );

    // Nothing reached p5 after it left, and everyone else learnt of the departure.
    let p5 = &sim.people[5];
    for addr in [p5.publish.addr, p5.subscribe.addr] {
        assert_eq!(
            sim.after_leave.get(&addr),
            None,
            "datagrams sent to p5 at {addr} after it left"
        );
    }
    for p in sim.people.iter().filter(|p| p.index != 5) {
        assert!(
            p.frames.iter().any(|f| f["type"] == "rtc.participant.left"
                && f["payload"]["participant"]["participant_id"] == "p5"),
            "p{} was not told p5 left",
            p.index
        );
    }

    // Speaking: each participant talked in its own 5 s slot; starts and stops were announced.
    for p in 0..PARTICIPANTS {
        let id = format!("p{p}");
        let starts = sim.speaking.iter().filter(|(w, s)| *w == id && *s).count();
        let stops = sim.speaking.iter().filter(|(w, s)| *w == id && !*s).count();
        assert!(starts >= 1, "{id} never started speaking: {:?}", sim.speaking);
        assert!(stops + 1 >= starts, "{id}: {starts} starts, {stops} stops");
    }
    let stats = sim.room.media_stats();
    assert!(stats.forwarded > 100_000, "{stats:?}");
    println!(
        "forwarded {} packets, {} RTP datagrams dropped by the network, {lost_frames} audio frames lost, \
         worst keyframe wait {worst_keyframe:?} after both legs were up ({worst_connect:?} after \
         joining), stats {stats:?}",
        stats.forwarded, dropped
    );
}
