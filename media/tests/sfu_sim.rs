//! The SFU core under a virtual clock with simulated str0m peers and an in-memory network:
//! no sockets. A publisher's audio reaches a subscriber intact, never echoes back to the
//! publisher, and stops the moment the subscriber leaves.

#![allow(clippy::unwrap_used)]
#![cfg(feature = "sfu")]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use openchat_media::demux::Demux;
use openchat_media::room::ParticipantId;
use openchat_media::sfu::{Leg, Sfu, SfuError};
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

struct Client {
    addr: SocketAddr,
    rtc: Rtc,
    received: Vec<Vec<u8>>,
    /// Video frames received: (payload, keyframe, first and last sequence number).
    video: Vec<(Vec<u8>, bool, u64, u64)>,
    keyframe_requests: usize,
    /// The simulcast layers keyframes were asked for, not yet sent.
    keyframes_wanted: Vec<Option<Rid>>,
    outbox: VecDeque<(SocketAddr, Vec<u8>)>,
}

impl Client {
    fn new(now: Instant, addr: &str) -> Self {
        let addr: SocketAddr = addr.parse().unwrap();
        let mut rtc = Rtc::new(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        Self {
            addr,
            rtc,
            received: Vec::new(),
            video: Vec::new(),
            keyframe_requests: 0,
            keyframes_wanted: Vec::new(),
            outbox: VecDeque::new(),
        }
    }

    fn drain(&mut self) {
        loop {
            match self.rtc.poll_output().unwrap() {
                Output::Timeout(_) => return,
                Output::Transmit(t) => self.outbox.push_back((t.destination, t.contents.into())),
                Output::Event(Event::MediaData(data)) => {
                    if !data.params.spec().codec.is_audio() {
                        let (first, last) = (**data.seq_range.start(), **data.seq_range.end());
                        self.video
                            .push((data.data.to_vec(), data.is_keyframe(), first, last));
                    }
                    self.received.push(data.data.to_vec());
                }
                Output::Event(Event::KeyframeRequest(request)) => {
                    self.keyframe_requests += 1;
                    self.keyframes_wanted.push(request.rid);
                }
                Output::Event(_) => {}
            }
        }
    }

    /// Offers one audio m-line in `direction`, answered by the SFU on `leg`.
    fn negotiate(
        &mut self,
        sfu: &mut Sfu,
        now: Instant,
        who: &ParticipantId,
        leg: Leg,
        direction: Direction,
    ) -> Mid {
        self.negotiate_kind(sfu, now, who, leg, direction, MediaKind::Audio)
    }

    fn negotiate_kind(
        &mut self,
        sfu: &mut Sfu,
        now: Instant,
        who: &ParticipantId,
        leg: Leg,
        direction: Direction,
        kind: MediaKind,
    ) -> Mid {
        let mut change = self.rtc.sdp_api();
        let mid = change.add_media(kind, direction, None, None, None);
        let (offer, pending) = change.apply().unwrap();
        let mut sdp = offer.to_sdp_string();
        if direction == Direction::RecvOnly {
            // str0m writes a=ssrc lines even for recvonly; browsers do not. Strip them.
            sdp = sdp
                .lines()
                .filter(|l| !l.starts_with("a=ssrc"))
                .map(|l| format!("{l}\r\n"))
                .collect();
        }
        let answer = sfu.accept_offer(now, who, leg, &sdp, &[], None).unwrap().sdp;
        self.rtc
            .sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .unwrap();
        self.drain();
        mid
    }
}

/// Moves every queued datagram once, then lets time pass to `now`.
fn step(
    sfu: &mut Sfu,
    demux: &mut Demux<()>,
    clients: &mut [&mut Client],
    now: Instant,
    sfu_addr: SocketAddr,
) {
    for _ in 0..8 {
        let mut moved = false;
        for client in clients.iter_mut() {
            client.rtc.handle_input(Input::Timeout(now)).unwrap();
            client.drain();
            while let Some((to, bytes)) = client.outbox.pop_front() {
                assert_eq!(to, sfu_addr, "clients only ever talk to the SFU");
                let _ = demux.deliver(sfu, now, client.addr, &bytes);
                moved = true;
            }
        }
        sfu.handle_timeout(now);
        while let Some(transmit) = sfu.poll_transmit() {
            let client = clients
                .iter_mut()
                .find(|c| c.addr == transmit.destination)
                .unwrap();
            let receive = Receive::new(Protocol::Udp, sfu_addr, client.addr, &transmit.contents).unwrap();
            client.rtc.handle_input(Input::Receive(now, receive)).unwrap();
            client.drain();
            moved = true;
        }
        if !moved {
            break;
        }
    }
}

#[test]
fn audio_is_forwarded_to_subscribers_only_and_stops_when_they_leave() {
    let start = Instant::now();
    let sfu_addr: SocketAddr = "10.0.0.1:5000".parse().unwrap();
    let mut sfu = Sfu::new(sfu_addr);
    let mut demux = Demux::new();
    let (alice, bob) = (ParticipantId("alice".into()), ParticipantId("bob".into()));
    let mut publisher = Client::new(start, "10.0.0.2:4000");
    let mut subscriber = Client::new(start, "10.0.0.3:4000");
    let mid = publisher.negotiate(&mut sfu, start, &alice, Leg::Publish, Direction::SendOnly);
    subscriber.negotiate(&mut sfu, start, &bob, Leg::Subscribe, Direction::RecvOnly);

    let tick = Duration::from_millis(20);
    let mut now = start;
    let mut sent = 0u32;
    let mut left_at_frame = None;
    for frame in 0..500u32 {
        now += tick;
        if publisher.rtc.is_connected() {
            let pt = publisher
                .rtc
                .codec_config()
                .find(|p| p.spec().codec == Codec::Opus)
                .unwrap()
                .pt();
            let mut payload = vec![0xA5u8; 40];
            payload[..4].copy_from_slice(&frame.to_be_bytes());
            let media_time = MediaTime::from_90khz(u64::from(frame) * 960);
            publisher
                .rtc
                .writer(mid)
                .unwrap()
                .write(pt, now, media_time, payload)
                .unwrap();
            sent += 1;
        }
        if frame == 400 {
            sfu.remove(&bob);
            left_at_frame = Some(frame);
        }
        step(
            &mut sfu,
            &mut demux,
            &mut [&mut publisher, &mut subscriber],
            now,
            sfu_addr,
        );
    }
    assert!(sent > 300, "the publisher connected and sent ({sent})");
    let frames: Vec<u32> = subscriber
        .received
        .iter()
        .map(|d| u32::from_be_bytes([d[0], d[1], d[2], d[3]]))
        .collect();
    assert!(
        frames.len() > 200,
        "the subscriber received the audio ({} frames)",
        frames.len()
    );
    for data in &subscriber.received {
        assert_eq!(data.len(), 40);
        assert!(data[4..].iter().all(|b| *b == 0xA5), "payload intact");
    }
    assert!(frames.windows(2).all(|w| w[0] < w[1]), "in order");
    let left = left_at_frame.unwrap();
    assert!(
        frames.iter().all(|f| *f <= left),
        "nothing after leaving: {:?}",
        frames.last()
    );
    assert!(publisher.received.is_empty(), "no echo to the publisher");
    assert!(sfu.stats().forwarded > 200);
}

#[test]
fn a_new_video_subscriber_makes_the_publisher_send_a_keyframe_rate_limited() {
    let start = Instant::now();
    let sfu_addr: SocketAddr = "10.0.0.1:5000".parse().unwrap();
    let mut sfu = Sfu::new(sfu_addr);
    let mut demux = Demux::new();
    let (alice, bob) = (ParticipantId("alice".into()), ParticipantId("bob".into()));
    let mut publisher = Client::new(start, "10.0.0.2:4000");
    let mut subscriber = Client::new(start, "10.0.0.3:4000");
    let mid = publisher.negotiate_kind(
        &mut sfu,
        start,
        &alice,
        Leg::Publish,
        Direction::SendOnly,
        MediaKind::Video,
    );
    subscriber.negotiate_kind(
        &mut sfu,
        start,
        &bob,
        Leg::Subscribe,
        Direction::RecvOnly,
        MediaKind::Video,
    );
    let mut now = start;
    for frame in 0..250u32 {
        now += Duration::from_millis(40);
        if publisher.rtc.is_connected() {
            let pt = publisher
                .rtc
                .codec_config()
                .find(|p| p.spec().codec == Codec::Vp8)
                .unwrap()
                .pt();
            let data = vec![0x10u8; 200];
            let time = MediaTime::from_90khz(u64::from(frame) * 3600);
            publisher
                .rtc
                .writer(mid)
                .unwrap()
                .write(pt, now, time, data)
                .unwrap();
        }
        step(
            &mut sfu,
            &mut demux,
            &mut [&mut publisher, &mut subscriber],
            now,
            sfu_addr,
        );
    }
    assert!(!subscriber.received.is_empty(), "video was forwarded");
    assert!(
        publisher.keyframe_requests >= 1,
        "the publisher was asked for a keyframe"
    );
    // 10 s of virtual time at one request per 500 ms at most, however often subscribers ask.
    assert!(
        sfu.stats().keyframes_requested <= 21,
        "{} requests",
        sfu.stats().keyframes_requested
    );
}

#[test]
fn a_simulcast_subscriber_gets_the_best_active_layer_and_switches_only_on_keyframes() {
    let start = Instant::now();
    let sfu_addr: SocketAddr = "10.0.0.1:5000".parse().unwrap();
    let mut sfu = Sfu::new(sfu_addr);
    let mut demux = Demux::new();
    let (alice, bob) = (ParticipantId("alice".into()), ParticipantId("bob".into()));
    let mut publisher = Client::new(start, "10.0.0.2:4000");
    let mut subscriber = Client::new(start, "10.0.0.3:4000");
    // The publisher offers one camera in two simulcast layers: "h" (big) and "l" (small).
    let mut change = publisher.rtc.sdp_api();
    let mut simulcast = Simulcast::new();
    simulcast.send.push(SimulcastLayer::new("h"));
    simulcast.send.push(SimulcastLayer::new("l"));
    let mid = change.add_media(
        MediaKind::Video,
        Direction::SendOnly,
        Some("cam".into()),
        Some("cam_track".into()),
        Some(simulcast),
    );
    let (offer, pending) = change.apply().unwrap();
    let answer = sfu
        .accept_offer(start, &alice, Leg::Publish, &offer.to_sdp_string(), &[], None)
        .unwrap()
        .sdp;
    assert!(
        answer.contains("a=simulcast:recv h;l"),
        "the SFU accepts both layers: {answer}"
    );
    publisher
        .rtc
        .sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
        .unwrap();
    subscriber.negotiate_kind(
        &mut sfu,
        start,
        &bob,
        Leg::Subscribe,
        Direction::RecvOnly,
        MediaKind::Video,
    );

    let (h, l): (Rid, Rid) = ("h".into(), "l".into());
    let mut started: Vec<Rid> = Vec::new();
    let mut now = start;
    // 10 s at 25 fps: both layers, then "h" paused (the publisher's uplink shrank), then both.
    for frame in 0..250u32 {
        now += Duration::from_millis(40);
        if publisher.rtc.is_connected() {
            let pt = publisher
                .rtc
                .codec_config()
                .find(|p| p.spec().codec == Codec::Vp8)
                .unwrap()
                .pt();
            let layers: &[Rid] = if (100..170).contains(&frame) {
                &[l]
            } else {
                &[h, l]
            };
            let wanted = std::mem::take(&mut publisher.keyframes_wanted);
            for &rid in layers {
                let key = !started.contains(&rid) || wanted.contains(&Some(rid)) || wanted.contains(&None);
                started.push(rid);
                let mut data = if key {
                    vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00]
                } else {
                    vec![0x11, 0x02, 0x00]
                };
                data.resize(if rid == h { 1100 } else { 300 }, 0x22);
                data.push(if rid == h { b'h' } else { b'l' });
                data.extend_from_slice(&frame.to_be_bytes());
                let time = MediaTime::from_90khz(u64::from(frame) * 3600);
                publisher
                    .rtc
                    .writer(mid)
                    .unwrap()
                    .rid(rid)
                    .write(pt, now, time, data)
                    .unwrap();
            }
        }
        step(
            &mut sfu,
            &mut demux,
            &mut [&mut publisher, &mut subscriber],
            now,
            sfu_addr,
        );
    }

    let frames: Vec<(u8, u32, bool, u64, u64)> = subscriber
        .video
        .iter()
        .map(|(data, key, first, last)| {
            let tag = &data[data.len() - 5..];
            (
                tag[0],
                u32::from_be_bytes([tag[1], tag[2], tag[3], tag[4]]),
                *key,
                *first,
                *last,
            )
        })
        .collect();
    assert!(frames.len() > 150, "{} frames", frames.len());
    // One layer at a time: each run of a layer starts on a keyframe, and runs are few.
    let mut runs: Vec<(u8, u32)> = Vec::new();
    for (layer, number, key, _, _) in &frames {
        if runs.last().is_none_or(|(current, _)| current != layer) {
            assert!(
                key,
                "switched to layer {} at frame {number} without a keyframe",
                *layer as char
            );
            runs.push((*layer, *number));
        }
    }
    println!("layer runs (layer, first frame): {runs:?}");
    assert!(runs.len() <= 4, "layers flapped: {runs:?}");
    let layer_at = |n: u32| frames.iter().find(|f| f.1 == n).map(|f| f.0 as char);
    // Steady state with both layers: the bigger one; with "h" paused: "l"; then "h" again.
    assert_eq!(layer_at(90), Some('h'), "runs {runs:?}");
    assert_eq!(layer_at(160), Some('l'), "runs {runs:?}");
    assert_eq!(layer_at(240), Some('h'), "runs {runs:?}");
    // The subscriber's m-line numbering never jumps across the switches.
    for pair in frames.windows(2) {
        assert_eq!(
            pair[1].3,
            pair[0].4 + 1,
            "sequence gap between frames {} and {}",
            pair[0].1,
            pair[1].1
        );
    }
    // Numbers increase: no frame is delivered twice or out of order.
    assert!(frames.windows(2).all(|w| w[0].1 < w[1].1 || w[0].0 != w[1].0));
}

#[test]
fn limits_and_bad_input_are_refused_with_typed_errors() {
    let now = Instant::now();
    // One participant: two connections.
    let mut sfu = Sfu::new("10.0.0.1:5000".parse().unwrap()).with_participants_max(1);
    let (alice, bob) = (ParticipantId("alice".into()), ParticipantId("bob".into()));
    let mut publishing = Client::new(now, "10.0.0.2:4000");
    publishing.negotiate(&mut sfu, now, &alice, Leg::Publish, Direction::SendOnly);
    let mut subscribing = Client::new(now, "10.0.0.2:4001");
    subscribing.negotiate(&mut sfu, now, &alice, Leg::Subscribe, Direction::RecvOnly);
    let mut other = Client::new(now, "10.0.0.3:4000");
    let mut change = other.rtc.sdp_api();
    change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, _) = change.apply().unwrap();
    assert_eq!(
        sfu.accept_offer(now, &bob, Leg::Publish, &offer.to_sdp_string(), &[], None),
        Err(SfuError::TooManyConnections)
    );
    assert!(matches!(
        sfu.accept_offer(now, &bob, Leg::Publish, "not sdp", &[], None),
        Err(SfuError::BadOffer(_))
    ));
    assert!(matches!(
        sfu.add_remote_candidate(&alice, Leg::Publish, "candidate:garbage"),
        Err(SfuError::BadCandidate(_))
    ));
    assert_eq!(
        sfu.add_remote_candidate(&bob, Leg::Publish, "candidate:1 1 udp 1 10.0.0.3 4000 typ host"),
        Err(SfuError::UnknownPeer)
    );
}
