//! `openchat-benches`: the data plane measured in-process. [`Harness`] connects one
//! publisher and N subscribers (real str0m peers, DTLS-SRTP done) to a room's [`Sfu`] over
//! an in-memory network; a bench then feeds the SFU encrypted publisher datagrams and
//! counts the SRTP datagrams it emits. [`floor`] is the physical floor per outbound packet:
//! one payload copy plus one AES-256-GCM SRTP protection, the same crypto (`aes-gcm`) and
//! profile str0m negotiates between str0m peers.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_debug_implementations)]

pub mod bare;
pub mod loadgen;
pub mod shard;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use openchat_media::demux::Demux;
use openchat_media::room::ParticipantId;
use openchat_media::sfu::{Leg, Sfu};
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

/// An offer as a browser writes it for recvonly transceivers: without `a=ssrc` lines.
pub fn without_ssrc_lines(sdp: &str) -> String {
    sdp.lines()
        .filter(|l| !l.starts_with("a=ssrc"))
        .map(|l| format!("{l}\r\n"))
        .collect()
}

/// One simulated peer.
pub(crate) struct Peer {
    pub(crate) addr: SocketAddr,
    pub(crate) rtc: Rtc,
    pub(crate) outbox: VecDeque<Vec<u8>>,
}

impl Peer {
    pub(crate) fn new(now: Instant, addr: SocketAddr) -> Self {
        let mut rtc = Rtc::new(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        Self {
            addr,
            rtc,
            outbox: VecDeque::new(),
        }
    }

    pub(crate) fn drain(&mut self) -> usize {
        let mut media = 0;
        loop {
            match self.rtc.poll_output().unwrap() {
                Output::Timeout(_) => return media,
                Output::Transmit(t) => self.outbox.push_back(t.contents.into()),
                Output::Event(Event::MediaData(_)) => media += 1,
                Output::Event(_) => {}
            }
        }
    }
}

/// A room with one publisher and `fanout` subscribers, connected.
pub struct Harness {
    pub sfu: Sfu,
    /// The one demultiplexing step, as the shard does it.
    demux: Demux<()>,
    sfu_addr: SocketAddr,
    publisher: Peer,
    subscribers: Vec<Peer>,
    mid: Mid,
    codec: Codec,
    now: Instant,
    frame: u64,
}

impl Harness {
    /// Connects a publisher of `kind` (Opus audio or VP8 video) and `fanout` subscribers.
    pub fn new(fanout: usize, kind: MediaKind) -> Self {
        let start = Instant::now();
        let sfu_addr: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let mut sfu = Sfu::new(sfu_addr).with_participants_max(fanout + 1);
        let mut publisher = Peer::new(start, "10.1.0.1:4000".parse().unwrap());
        let mut change = publisher.rtc.sdp_api();
        let mid = change.add_media(
            kind,
            Direction::SendOnly,
            Some("s".into()),
            Some("t".into()),
            None,
        );
        let (offer, pending) = change.apply().unwrap();
        let answer = sfu
            .accept_offer(
                start,
                &ParticipantId("pub".into()),
                Leg::Publish,
                &offer.to_sdp_string(),
                &[],
                None,
            )
            .unwrap();
        publisher
            .rtc
            .sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer.sdp).unwrap())
            .unwrap();
        let mut subscribers = Vec::with_capacity(fanout);
        for i in 0..fanout {
            let addr: SocketAddr = format!("10.2.{}.{}:4000", i / 250, i % 250 + 1).parse().unwrap();
            let mut peer = Peer::new(start, addr);
            let mut change = peer.rtc.sdp_api();
            change.add_media(kind, Direction::RecvOnly, None, None, None);
            let (offer, pending) = change.apply().unwrap();
            let sdp = without_ssrc_lines(&offer.to_sdp_string());
            let answer = sfu
                .accept_offer(
                    start,
                    &ParticipantId(format!("sub{i}")),
                    Leg::Subscribe,
                    &sdp,
                    &[],
                    None,
                )
                .unwrap();
            peer.rtc
                .sdp_api()
                .accept_answer(pending, SdpAnswer::from_sdp_string(&answer.sdp).unwrap())
                .unwrap();
            subscribers.push(peer);
        }
        let codec = if kind == MediaKind::Audio {
            Codec::Opus
        } else {
            Codec::Vp8
        };
        let mut harness = Self {
            sfu,
            demux: Demux::new(),
            sfu_addr,
            publisher,
            subscribers,
            mid,
            codec,
            now: start,
            frame: 0,
        };
        // Connect everyone, then let a few packets establish the forwarding routes.
        for _ in 0..200 {
            harness.now += Duration::from_millis(10);
            harness.pump(true);
            if harness.publisher.rtc.is_connected()
                && harness.subscribers.iter().all(|s| s.rtc.is_connected())
            {
                break;
            }
        }
        assert!(harness.publisher.rtc.is_connected(), "the publisher connected");
        assert!(
            harness.subscribers.iter().all(|s| s.rtc.is_connected()),
            "every subscriber connected"
        );
        for _ in 0..20 {
            let datagram = harness.datagram(100);
            harness.forward(&datagram);
            harness.pump(true);
        }
        let probe = harness.datagram(100);
        assert_eq!(
            harness.forward(&probe),
            fanout,
            "every subscriber gets the publisher's packets"
        );
        harness
    }

    /// Moves every queued datagram until quiet; subscribers' answers go back to the SFU when
    /// `deliver` (during set-up), otherwise SFU output is counted and dropped.
    fn pump(&mut self, deliver: bool) -> usize {
        let mut emitted = 0;
        for _ in 0..16 {
            let mut moved = false;
            for peer in std::iter::once(&mut self.publisher).chain(self.subscribers.iter_mut()) {
                peer.rtc.handle_input(Input::Timeout(self.now)).unwrap();
                peer.drain();
                while let Some(bytes) = peer.outbox.pop_front() {
                    let _ = self.demux.deliver(&mut self.sfu, self.now, peer.addr, &bytes);
                    moved = true;
                }
            }
            self.sfu.handle_timeout(self.now);
            while let Some(t) = self.sfu.poll_transmit() {
                emitted += 1;
                moved = true;
                if !deliver {
                    continue;
                }
                let peer = std::iter::once(&mut self.publisher)
                    .chain(self.subscribers.iter_mut())
                    .find(|p| p.addr == t.destination)
                    .unwrap();
                let receive = Receive::new(Protocol::Udp, self.sfu_addr, peer.addr, &t.contents).unwrap();
                peer.rtc.handle_input(Input::Receive(self.now, receive)).unwrap();
                peer.drain();
            }
            if !moved {
                break;
            }
        }
        emitted
    }

    /// The publisher's next encrypted RTP datagram carrying `payload_bytes` (not timed).
    pub fn datagram(&mut self, payload_bytes: usize) -> Vec<u8> {
        self.frame += 1;
        let pt = self
            .publisher
            .rtc
            .codec_config()
            .find(|p| p.spec().codec == self.codec)
            .unwrap()
            .pt();
        let mut payload = vec![0x5Au8; payload_bytes];
        if self.codec == Codec::Vp8 {
            payload[0] = 0x11; // an inter frame
        }
        let time = MediaTime::from_90khz(self.frame * 3000);
        self.publisher
            .rtc
            .writer(self.mid)
            .unwrap()
            .write(pt, self.now, time, payload)
            .unwrap();
        // The packet leaves at the publisher's next poll (its pacer may want a tick first).
        let mut first = None;
        for _ in 0..10 {
            self.publisher.drain();
            while let Some(bytes) = self.publisher.outbox.pop_front() {
                if first.is_none() && bytes.len() >= payload_bytes {
                    first = Some(bytes);
                }
            }
            if first.is_some() {
                break;
            }
            self.now += Duration::from_millis(1);
            self.publisher.rtc.handle_input(Input::Timeout(self.now)).unwrap();
        }
        first.expect("the publisher emitted the packet")
    }

    /// The timed step: one publisher datagram into the SFU; returns the datagrams it sent.
    pub fn forward(&mut self, datagram: &[u8]) -> usize {
        let from = self.publisher.addr;
        self.demux
            .deliver(&mut self.sfu, self.now, from, datagram)
            .unwrap();
        let mut sent = 0;
        while self.sfu.poll_transmit().is_some() {
            sent += 1;
        }
        sent
    }

    pub fn fanout(&self) -> usize {
        self.subscribers.len()
    }
}

/// The floor per outbound packet: copy the payload into a packet buffer behind a 12-byte
/// RTP header and protect it with AES-256-GCM (SRTP AEAD, RFC 7714), as the SFU must for
/// every subscriber at least once.
pub struct Floor {
    cipher: aes_gcm::Aes256Gcm,
    buffer: Vec<u8>,
    counter: u64,
}

impl Default for Floor {
    fn default() -> Self {
        use aes_gcm::KeyInit;
        Self {
            cipher: aes_gcm::Aes256Gcm::new_from_slice(&[7u8; 32]).unwrap(),
            buffer: Vec::with_capacity(2048),
            counter: 0,
        }
    }
}

impl Floor {
    /// One outbound packet's worth of work; returns its length.
    pub fn packet(&mut self, payload: &[u8]) -> usize {
        use aes_gcm::aead::AeadInPlace;
        self.counter += 1;
        let mut header = [0u8; 12];
        header[0] = 0x80;
        header[2..4].copy_from_slice(&(self.counter as u16).to_be_bytes());
        let mut nonce = [0u8; 12];
        nonce[4..12].copy_from_slice(&self.counter.to_be_bytes());
        self.buffer.clear();
        self.buffer.extend_from_slice(payload);
        self.cipher
            .encrypt_in_place(aes_gcm::Nonce::from_slice(&nonce), &header, &mut self.buffer)
            .unwrap();
        self.buffer.len() + header.len()
    }
}
