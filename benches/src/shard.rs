//! [`ShardHarness`]: a [`ShardCore`] (not a bare SFU) holding one active room (a publisher
//! and N subscribers) beside idle rooms of connected str0m peers whose timers are live,
//! all over an in-memory network under a virtual clock. The timed step is what the shard
//! driver does per received datagram: `handle_datagram`, then the deadline query, due
//! timeouts and the transmit drain.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use openchat_core::ChannelId;
use openchat_core::ticket::Permissions;
use openchat_media::room::{Leg, Now, ParticipantId, ParticipantInfo, RoomCommand};
use openchat_media::sfu::Transmit;
use openchat_media::shard::{OutboxReceiver, ShardCommand, ShardCore, ShardStats, outbox};
use str0m::Input;
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};

use crate::{Peer, without_ssrc_lines};

/// The shard's media address in the simulation.
const SHARD_ADDR: &str = "10.0.0.1:5000";
/// Keepalive passes: every this much virtual time every peer's timers run and their
/// datagrams (ICE consent, RTCP) reach the shard, untimed (str0m's ICE-lite side drops a
/// pair after 15 s without a binding request).
const KEEPALIVE_EVERY: Duration = Duration::from_secs(2);

/// One active room beside idle rooms on one [`ShardCore`].
pub struct ShardHarness {
    pub core: ShardCore,
    pub stats: std::sync::Arc<ShardStats>,
    shard_addr: SocketAddr,
    now: Instant,
    unix: i64,
    peers: Vec<Peer>,
    by_addr: HashMap<SocketAddr, usize>,
    receivers: Vec<OutboxReceiver>,
    publisher: usize,
    mid: Mid,
    frame: u64,
    transmits: Vec<Transmit>,
    last_keepalive: Instant,
}

fn participant(id: &str) -> ParticipantInfo {
    ParticipantInfo {
        id: ParticipantId(id.into()),
        server_id: "srv_bench".into(),
        user_uid: format!("uid_{id}"),
        device_id: "d".into(),
        permissions: Permissions::ALL,
    }
}

impl ShardHarness {
    /// A shard with an active room of one audio publisher and `subscribers` subscribers,
    /// and `idle_rooms` rooms of `peers_per_room` connected publish connections that send
    /// nothing. Panics if a peer does not connect.
    pub fn new(subscribers: usize, idle_rooms: usize, peers_per_room: usize) -> Self {
        let stats = std::sync::Arc::new(ShardStats::default());
        let shard_addr: SocketAddr = SHARD_ADDR.parse().unwrap();
        let participants_max = (subscribers + 1).max(peers_per_room);
        let core = ShardCore::new(0, participants_max, stats.clone()).with_media_addr(shard_addr, true);
        let now = Instant::now();
        let mut harness = Self {
            core,
            stats,
            shard_addr,
            now,
            unix: 1_700_000_000,
            peers: Vec::new(),
            by_addr: HashMap::new(),
            receivers: Vec::new(),
            publisher: 0,
            mid: Mid::from("0"),
            frame: 0,
            transmits: Vec::new(),
            last_keepalive: now,
        };
        let active = ChannelId::parse("vc_active").unwrap();
        let (publisher, mid) = harness.connect(&active, "pub", Leg::Publish, [10, 9, 0, 1]);
        harness.publisher = publisher;
        harness.mid = mid;
        for i in 0..subscribers {
            let ip = [10, 9, (1 + i / 250) as u8, (i % 250 + 1) as u8];
            harness.connect(&active, &format!("sub{i}"), Leg::Subscribe, ip);
        }
        for room in 0..idle_rooms {
            let channel = ChannelId::parse_owned(format!("vc_idle_{room:05}")).unwrap();
            for p in 0..peers_per_room {
                let ip = [10, (10 + room / 250) as u8, (room % 250 + 1) as u8, (p + 1) as u8];
                harness.connect(&channel, &format!("idle{room}_{p}"), Leg::Publish, ip);
            }
        }
        // Let the forwarding routes settle.
        for _ in 0..20 {
            let datagram = harness.datagram(160);
            harness.step(&datagram);
            harness.keepalive_if_due();
        }
        let probe = harness.datagram(160);
        assert_eq!(
            harness.step(&probe),
            subscribers,
            "every subscriber gets the publisher's packets"
        );
        harness
    }

    fn clock(&self) -> Now {
        Now::new(self.now, self.unix)
    }

    /// Joins `id` to `channel` with one connection on `leg` (an audio m-line) from `ip`,
    /// and connects it (ICE and DTLS done). Returns the peer and its m-line.
    fn connect(&mut self, channel: &ChannelId, id: &str, leg: Leg, ip: [u8; 4]) -> (usize, Mid) {
        let (tx, rx) = outbox();
        let (reply, answer) = flume::bounded(1);
        self.core.handle_command(
            self.clock(),
            ShardCommand::Join {
                channel: channel.clone(),
                command: RoomCommand::Join {
                    participant: participant(id),
                    request_id: None,
                },
                outbox: tx,
                reply,
            },
        );
        assert_eq!(answer.try_recv().unwrap(), Ok(()), "{id} joins");
        let addr = SocketAddr::from((ip, 4000));
        let mut peer = Peer::new(self.now, addr);
        let mut change = peer.rtc.sdp_api();
        let (direction, stream, track) = match leg {
            Leg::Publish => (
                Direction::SendOnly,
                Some(format!("s_{id}")),
                Some(format!("mic_{id}")),
            ),
            Leg::Subscribe => (Direction::RecvOnly, None, None),
        };
        let mid = change.add_media(MediaKind::Audio, direction, stream, track, None);
        let (offer, pending) = change.apply().unwrap();
        let sdp = match leg {
            Leg::Publish => offer.to_sdp_string(),
            Leg::Subscribe => without_ssrc_lines(&offer.to_sdp_string()),
        };
        self.core.handle_command(
            self.clock(),
            ShardCommand::Room {
                channel: channel.clone(),
                command: RoomCommand::Offer {
                    from: ParticipantId(id.into()),
                    leg,
                    sdp,
                    request_id: None,
                    signaling_ip: None,
                },
                ack: None,
            },
        );
        let kind = format!("rtc.answer.{}", leg.as_str());
        let answer = rx
            .frames
            .try_iter()
            .map(|f| serde_json::from_str::<serde_json::Value>(&f).unwrap())
            .find(|f| f["type"] == kind.as_str())
            .unwrap_or_else(|| panic!("no {kind} for {id}"));
        let sdp = answer["payload"]["sdp"].as_str().unwrap();
        peer.rtc
            .sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(sdp).unwrap())
            .unwrap();
        let index = self.peers.len();
        self.by_addr.insert(addr, index);
        self.peers.push(peer);
        self.receivers.push(rx);
        for _ in 0..200 {
            self.exchange(index..index + 1);
            if self.peers[index].rtc.is_connected() {
                break;
            }
            self.now += Duration::from_millis(1);
        }
        assert!(self.peers[index].rtc.is_connected(), "{id} connected");
        self.keepalive_if_due();
        (index, mid)
    }

    /// Moves datagrams between the peers in `range` and the shard until quiet (the shard's
    /// datagrams to other peers are dropped).
    fn exchange(&mut self, range: std::ops::Range<usize>) {
        for _ in 0..16 {
            let mut moved = false;
            for index in range.clone() {
                let peer = &mut self.peers[index];
                peer.rtc.handle_input(Input::Timeout(self.now)).unwrap();
                peer.drain();
                let from = peer.addr;
                let datagrams: Vec<Vec<u8>> = peer.outbox.drain(..).collect();
                for bytes in datagrams {
                    moved = true;
                    self.core.handle_datagram(self.clock(), from, &bytes);
                }
            }
            if moved {
                self.shard_turn();
            }
            for transmit in std::mem::take(&mut self.transmits) {
                let Some(&index) = self.by_addr.get(&transmit.destination) else {
                    continue;
                };
                if !range.contains(&index) {
                    continue;
                }
                moved = true;
                let peer = &mut self.peers[index];
                let receive =
                    Receive::new(Protocol::Udp, self.shard_addr, peer.addr, &transmit.contents).unwrap();
                peer.rtc.handle_input(Input::Receive(self.now, receive)).unwrap();
                peer.drain();
            }
            if !moved {
                break;
            }
        }
    }

    /// What the driver does after each input: deadline, due timeouts, drain. Returns the
    /// datagrams sent.
    fn shard_turn(&mut self) -> usize {
        if let Some(deadline) = self.core.poll_timeout(self.now)
            && deadline <= self.now
        {
            self.core.handle_timeout(self.clock());
        }
        let mark = self.transmits.len();
        self.core.take_transmits(self.now, &mut self.transmits);
        self.transmits.len() - mark
    }

    /// Every peer's timers run and its datagrams reach the shard (and back), if
    /// [`KEEPALIVE_EVERY`] passed; outboxes are emptied.
    fn keepalive_if_due(&mut self) {
        if self.now.duration_since(self.last_keepalive) < KEEPALIVE_EVERY {
            return;
        }
        self.last_keepalive = self.now;
        self.exchange(0..self.peers.len());
        for rx in &self.receivers {
            while rx.frames.try_recv().is_ok() {}
        }
    }

    /// The publisher's next encrypted RTP datagram carrying `payload_bytes` (untimed).
    pub fn datagram(&mut self, payload_bytes: usize) -> Vec<u8> {
        self.frame += 1;
        let publisher = &mut self.peers[self.publisher];
        let pt = publisher
            .rtc
            .codec_config()
            .find(|p| p.spec().codec == Codec::Opus)
            .unwrap()
            .pt();
        let time = MediaTime::from_90khz(self.frame * 3000);
        publisher
            .rtc
            .writer(self.mid)
            .unwrap()
            .write(pt, self.now, time, vec![0x5Au8; payload_bytes])
            .unwrap();
        let mut first = None;
        for _ in 0..10 {
            publisher.drain();
            while let Some(bytes) = publisher.outbox.pop_front() {
                if first.is_none() && bytes.len() >= payload_bytes {
                    first = Some(bytes);
                }
            }
            if first.is_some() {
                break;
            }
            self.now += Duration::from_millis(1);
            publisher.rtc.handle_input(Input::Timeout(self.now)).unwrap();
        }
        first.expect("the publisher emitted the packet")
    }

    /// The timed step: one publisher datagram into the shard, then the driver's turn.
    /// Returns the datagrams the shard sent (to subscribers, and any due timer output).
    pub fn step(&mut self, datagram: &[u8]) -> usize {
        let from = self.peers[self.publisher].addr;
        self.core.handle_datagram(self.clock(), from, datagram);
        let sent = self.shard_turn();
        self.transmits.clear();
        sent
    }

    /// Publisher datagrams in per second over `datagrams`, with the virtual clock following
    /// the real one (so idle rooms' timers fire at their real rate against the work). Runs
    /// a keepalive pass (untimed) first if one is due.
    pub fn packets_per_second(&mut self, datagrams: &[Vec<u8>]) -> f64 {
        self.keepalive_if_due();
        let base = self.now;
        let started = Instant::now();
        for datagram in datagrams {
            self.now = base + started.elapsed();
            std::hint::black_box(self.step(datagram));
        }
        let elapsed = started.elapsed();
        self.now = base + elapsed;
        datagrams.len() as f64 / elapsed.as_secs_f64()
    }

    /// Peers connected (the active room's and the idle rooms').
    pub fn peers(&self) -> usize {
        self.peers.len()
    }

    /// Whether every peer is still connected.
    pub fn all_connected(&self) -> bool {
        self.peers.iter().all(|p| p.rtc.is_connected())
    }
}
