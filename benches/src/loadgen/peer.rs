//! One WebRTC peer of the load generator: str0m in RTP mode (no depacketising, no jitter
//! buffer) on its own UDP socket, and the loop that runs it as a publisher (stamped packets
//! on the profile's schedule) or a receiver.
//!
//! A receiver is full or light. A full receiver hands every datagram to str0m, which
//! decrypts it; the payload's stamp is checked, the packet counted once and its delay
//! recorded. A light receiver still does ICE, DTLS-SRTP and RTCP through str0m, and the
//! first packet of each incoming stream goes through str0m and the stamp check too, which
//! ties the stream's SSRC and RTP sequence numbers to the publisher and its stamp numbers;
//! after that its packets are checked from the clear RTP header only (SSRC, sequence
//! number, and the datagram's length, which must equal the checked first packet's) and
//! counted against the same window, without decryption. Loss stays exact either way; only
//! full receivers measure delay. Which receivers are full is chosen at random after they
//! have all connected (see `loadgen::run`), so a server cannot treat them differently.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use str0m::format::Codec;
use str0m::media::{MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::probe::{Profile, Stamp, check, payload, since_epoch};

/// Largest datagram read.
const DATAGRAM_BYTES_MAX: usize = 2048;
/// Datagrams read per wake-up before other work gets a turn.
const READS_PER_WAKE_MAX: usize = 64;
/// Largest latency recorded (anything later counts at this value).
pub const LATENCY_MAX: Duration = Duration::from_secs(10);

/// A str0m connection on its own socket.
pub struct Peer {
    pub rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
}

impl Peer {
    /// A peer with a host candidate on `ip` (an ephemeral port). `ice_lite` peers answer
    /// checks only; the generator's peers are full ICE agents (ICE-lite servers need that).
    pub async fn new(ip: IpAddr) -> std::io::Result<Self> {
        let socket = UdpSocket::bind((ip, 0)).await?;
        let local = socket.local_addr()?;
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(Instant::now());
        let candidate = Candidate::host(local, "udp").map_err(|e| std::io::Error::other(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        Ok(Self { rtc, socket, local })
    }

    /// Sends what str0m wants sent (a full socket buffer drops the datagram, as a network
    /// would); collects events; returns str0m's next deadline.
    fn drain(&mut self, events: &mut Vec<Event>) -> Result<Instant, String> {
        loop {
            match self.rtc.poll_output().map_err(|e| e.to_string())? {
                Output::Timeout(at) => return Ok(at),
                Output::Transmit(t) => {
                    let _ = self.socket.try_send_to(&t.contents, t.destination);
                }
                Output::Event(event) => events.push(event),
            }
        }
    }

    fn receive(&mut self, bytes: &[u8], from: SocketAddr) {
        if let Ok(receive) = Receive::new(Protocol::Udp, from, self.local, bytes) {
            let _ = self.rtc.handle_input(Input::Receive(Instant::now(), receive));
        }
    }
}

/// What all receivers of a run found, merged.
#[derive(Debug)]
pub struct Tally {
    /// Distinct in-window packets received (summed over receivers).
    pub received: u64,
    /// Packets received again (same publisher and sequence).
    pub duplicates: u64,
    /// Packets whose length, stamp or padding was wrong.
    pub damaged: u64,
    /// Delay from the publisher's send to the receiver's read, in microseconds (full
    /// receivers only).
    pub latency_us: Histogram<u64>,
    /// Receivers that decrypted and checked every packet.
    pub full_receivers: u64,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            received: 0,
            duplicates: 0,
            damaged: 0,
            latency_us: Histogram::new_with_bounds(1, LATENCY_MAX.as_micros() as u64, 3)
                .expect("valid histogram bounds"),
            full_receivers: 0,
        }
    }
}

/// The sequence numbers measured: `[first, first + count)` of every publisher.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub first: u64,
    pub count: u64,
}

/// A publisher's part in a run: sends `packets` stamped packets from the instant `start`
/// announces; `ready` counts publishers connected.
pub struct Publishing {
    pub index: u32,
    pub profile: Profile,
    pub packets: u64,
    pub start: watch::Receiver<Option<Instant>>,
    pub ready: Arc<AtomicUsize>,
}

/// A receiver's part in a run: receives from `publishers` publishers; `ready` counts
/// receivers connected. `full` says whether it decrypts and checks every packet (else it is
/// light: see the module documentation); it is read per datagram, so it can be set once
/// peers are connected.
pub struct Receiving {
    pub profile: Profile,
    pub publishers: u32,
    pub window: Window,
    pub ready: Arc<AtomicUsize>,
    pub tally: Arc<Mutex<Tally>>,
    pub full: Arc<AtomicBool>,
}

/// What a str0m peer does once negotiated.
pub enum Role {
    /// Publishes on m-line `Mid`.
    Publish(Publishing, Mid),
    Receive(Receiving),
}

/// A receiver's record of the window: one bit per (publisher, sequence).
pub(super) struct Seen {
    bits: Vec<u64>,
    window: Window,
    received: u64,
    duplicates: u64,
    damaged: u64,
}

impl Seen {
    fn new(window: Window, publishers: u32) -> Self {
        let bits = (window.count as usize * publishers as usize).div_ceil(64);
        Self {
            bits: vec![0; bits],
            window,
            received: 0,
            duplicates: 0,
            damaged: 0,
        }
    }

    /// Records a stamp; true when it is in the window and new.
    fn record(&mut self, stamp: Stamp) -> bool {
        if stamp.seq < self.window.first || stamp.seq >= self.window.first + self.window.count {
            return false;
        }
        let bit =
            stamp.publisher as usize * self.window.count as usize + (stamp.seq - self.window.first) as usize;
        let Some(word) = self.bits.get_mut(bit / 64) else {
            self.damaged += 1;
            return false;
        };
        if *word & (1 << (bit % 64)) != 0 {
            self.duplicates += 1;
            return false;
        }
        *word |= 1 << (bit % 64);
        self.received += 1;
        true
    }
}

/// The most incoming streams a light receiver tracks (one per publisher it hears).
const LIGHT_STREAMS_MAX: usize = 64;

/// The SSRC and sequence number from the clear header of a datagram that is an RTP packet
/// (RFC 7983: first byte 128..=191; RFC 5761: its second byte is not an RTCP packet type);
/// `None` for RTCP, STUN, DTLS and anything shorter than an RTP header.
pub fn rtp_header(bytes: &[u8]) -> Option<(u32, u16)> {
    let header = bytes.get(..12)?;
    if !(128..=191).contains(&header[0]) || (192..=223).contains(&header[1]) {
        return None;
    }
    let ssrc = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    Some((ssrc, u16::from_be_bytes([header[2], header[3]])))
}

/// The length of an RTP packet's header: fixed part, CSRCs and header extension (RFC 3550
/// §5.1, §5.3.1); `None` when the datagram is shorter than that.
pub fn rtp_header_len(bytes: &[u8]) -> Option<usize> {
    let first = *bytes.first()?;
    let mut len = 12 + 4 * usize::from(first & 0x0f);
    if first & 0x10 != 0 {
        let words = bytes.get(len + 2..len + 4)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    (bytes.len() >= len).then_some(len)
}

/// Bytes of `datagram` after its RTP header and a payload of `payload` bytes (the SRTP tag).
pub fn trailer(datagram: &[u8], payload: usize) -> Option<usize> {
    datagram.len().checked_sub(rtp_header_len(datagram)? + payload)
}

/// The extended sequence number of `seq` nearest to `last` (RFC 3550 A.1's rollover).
pub fn extend_seq(last: u64, seq: u16) -> u64 {
    let delta = i64::from(seq.wrapping_sub(last as u16) as i16);
    (last as i64).saturating_add(delta).max(0) as u64
}

/// One incoming stream a light receiver checks from headers.
#[derive(Debug, Clone, Copy)]
struct LightStream {
    ssrc: u32,
    publisher: u32,
    /// Stamp number minus extended RTP sequence number (wrapping).
    offset: u64,
    /// Highest extended RTP sequence number seen.
    highest: u64,
    /// Bytes after header and payload (the SRTP tag), from the checked first packet: every
    /// packet of the stream must be its header, the profile's payload, then this many
    /// bytes (the header's extensions may change: str0m stops sending some after a while).
    trailer: usize,
}

/// What a light receiver knows of its incoming streams.
#[derive(Debug, Default)]
struct Light {
    streams: Vec<LightStream>,
}

impl Light {
    /// Ties a stream to the publisher from a packet that was decrypted and passed the
    /// stamp check: `seq` is its extended RTP sequence number, `trailer` what its datagram
    /// had after header and payload ([`trailer`]).
    fn learn(&mut self, ssrc: u32, seq: u64, stamp: Stamp, trailer: usize) {
        if self.streams.iter().any(|s| s.ssrc == ssrc) || self.streams.len() >= LIGHT_STREAMS_MAX {
            return;
        }
        self.streams.push(LightStream {
            ssrc,
            publisher: stamp.publisher,
            offset: stamp.seq.wrapping_sub(seq),
            highest: seq,
            trailer,
        });
    }

    /// Checks and counts a datagram of a known stream; false when it is not one (the caller
    /// hands it to str0m instead).
    fn count(&mut self, bytes: &[u8], payload: usize, seen: &mut Seen) -> bool {
        let Some((ssrc, seq)) = rtp_header(bytes) else {
            return false;
        };
        let Some(stream) = self.streams.iter_mut().find(|s| s.ssrc == ssrc) else {
            return false;
        };
        let seq = extend_seq(stream.highest, seq);
        stream.highest = stream.highest.max(seq);
        if rtp_header_len(bytes).map(|h| h + payload + stream.trailer) != Some(bytes.len()) {
            seen.damaged += 1;
        } else {
            seen.record(Stamp {
                publisher: stream.publisher,
                seq: seq.wrapping_add(stream.offset),
                sent_ns: 0,
            });
        }
        true
    }
}

/// The publisher's clock: which packet is due when.
struct Schedule {
    profile: Profile,
    start: Instant,
    sent: u64,
    packets: u64,
}

impl Schedule {
    fn due(&self) -> Option<Instant> {
        (self.sent < self.packets).then(|| {
            let frame = self.sent / self.profile.packets_per_frame();
            self.start + self.profile.frame_interval() * frame as u32
        })
    }
}

fn payload_type(rtc: &Rtc, kind: MediaKind) -> Option<str0m::format::PayloadParams> {
    let want = if kind == MediaKind::Audio {
        Codec::Opus
    } else {
        Codec::Vp8
    };
    rtc.codec_config().find(|p| p.spec().codec == want).copied()
}

/// A receiver's state: what it has seen, how it checks, where its results go.
pub(super) struct Receiver {
    profile: Profile,
    seen: Seen,
    light: Light,
    full: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
}

impl Receiver {
    pub(super) fn new(plan: &Receiving) -> Self {
        Self {
            profile: plan.profile,
            seen: Seen::new(plan.window, plan.publishers),
            light: Light::default(),
            full: plan.full.clone(),
            tally: plan.tally.clone(),
        }
    }

    /// Whether this receiver decrypts and checks every packet.
    pub(super) fn full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    /// A light receiver's check of a datagram from its clear header: true when it was a
    /// packet of a known stream (counted, or found damaged), false when it must be
    /// decrypted (not RTP, a stream not yet known, or a full receiver).
    pub(super) fn count_light(&mut self, datagram: &[u8]) -> bool {
        !self.full()
            && self
                .light
                .count(datagram, self.profile.payload_bytes(), &mut self.seen)
    }

    /// A packet decrypted: `payload` of stream `ssrc` with extended sequence number `seq`,
    /// its datagram's [`trailer`] if known. Its stamp is checked, the packet counted once
    /// and a full receiver records its delay; a light receiver learns the stream from it.
    pub(super) fn decrypted(&mut self, ssrc: u32, seq: u64, payload: &[u8], trailer: Option<usize>) {
        let full = self.full();
        match check(self.profile, payload) {
            Ok(stamp) => {
                if let (false, Some(trailer)) = (full, trailer) {
                    self.light.learn(ssrc, seq, stamp, trailer);
                }
                if self.seen.record(stamp) && full {
                    let us = (since_epoch(Instant::now()).saturating_sub(stamp.sent_ns) / 1000)
                        .clamp(1, LATENCY_MAX.as_micros() as u64);
                    let _ = self.tally.lock().expect("tally").latency_us.record(us);
                }
            }
            Err(_) => self.seen.damaged += 1,
        }
    }

    /// A datagram that could not be read at all (failed authentication, say).
    pub(super) fn damaged(&mut self) {
        self.seen.damaged += 1;
    }

    /// Adds what this receiver found to the run's tally.
    pub(super) fn finish(self) {
        let mut tally = self.tally.lock().expect("tally");
        tally.received += self.seen.received;
        tally.duplicates += self.seen.duplicates;
        tally.damaged += self.seen.damaged;
        if self.full() {
            tally.full_receivers += 1;
        }
    }
}

/// Handles what str0m reported after one input; `datagram` is the datagram that input was
/// (empty for a timeout or a write).
fn take_events(
    events: &mut Vec<Event>,
    receiver: &mut Option<Receiver>,
    connected: &AtomicUsize,
    datagram: &[u8],
) {
    for event in events.drain(..) {
        match event {
            Event::Connected => {
                connected.fetch_add(1, Ordering::Relaxed);
            }
            Event::RtpPacket(packet) => {
                if let Some(receiver) = receiver {
                    let trailer = trailer(datagram, packet.payload.len());
                    receiver.decrypted(*packet.header.ssrc, *packet.seq_no, &packet.payload, trailer);
                }
            }
            _ => {}
        }
    }
}

/// A task aborted when its handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs a negotiated peer until `stop` turns true (or, for a publisher, its packets are all
/// sent and `stop` turns true). `keep` is the signaling side that must stay alive (its
/// end is an error: the peer's session is gone).
pub async fn run(
    mut peer: Peer,
    role: Role,
    keep: super::Keep,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    // The signaling side runs as its own task, woken only by its own socket: polled here on
    // every datagram, a WebSocket read costs more than the datagram (tungstenite clears its
    // read buffer on each poll). It ends with the peer.
    let mut keep = AbortOnDrop(tokio::spawn(keep));
    let mut events = Vec::new();
    let mut buf = vec![0u8; DATAGRAM_BYTES_MAX];
    let (mut schedule, mut start_rx) = (None, None);
    let mut publish = None;
    let mut receiver = None;
    let connected: Arc<AtomicUsize>;
    match role {
        Role::Publish(plan, mid) => {
            publish = Some((plan.index, plan.profile, mid, plan.packets));
            start_rx = Some(plan.start);
            connected = plan.ready;
        }
        Role::Receive(plan) => {
            receiver = Some(Receiver::new(&plan));
            connected = plan.ready;
        }
    }
    let mut seq = 0u64;
    // str0m's next deadline; polled again only after str0m was given input.
    let mut deadline = Instant::now();
    let mut fed = true;
    let result = loop {
        if *stop.borrow() {
            break Ok(());
        }
        if std::mem::take(&mut fed) {
            deadline = match peer.drain(&mut events) {
                Ok(at) => at,
                Err(e) => break Err(format!("media connection failed: {e}")),
            };
        }
        take_events(&mut events, &mut receiver, &connected, &[]);
        // A publisher starts when told, then sends what is due.
        if let (Some((_, profile, _, packets)), None) = (publish, &schedule)
            && let Some(start) = start_rx.as_ref().and_then(|rx| *rx.borrow())
        {
            schedule = Some(Schedule {
                profile,
                start,
                sent: 0,
                packets,
            });
        }
        let mut wake = deadline;
        if let (Some((index, profile, mid, _)), Some(plan)) = (publish, &mut schedule) {
            let now = Instant::now();
            let kind = if profile == Profile::Audio {
                MediaKind::Audio
            } else {
                MediaKind::Video
            };
            let pt = payload_type(&peer.rtc, kind).map(|p| p.pt());
            while let Some(due) = plan.due() {
                if due > now {
                    wake = wake.min(due);
                    break;
                }
                let frame = plan.sent / profile.packets_per_frame();
                let first = plan.sent % profile.packets_per_frame() == 0;
                let last = (plan.sent + 1) % profile.packets_per_frame() == 0;
                let stamp = Stamp {
                    publisher: index,
                    seq: plan.sent,
                    sent_ns: since_epoch(Instant::now()),
                };
                let bytes: Arc<[u8]> = payload(profile, stamp, first).into();
                let time = (frame as u32).wrapping_mul(profile.ticks_per_frame());
                let mut api = peer.rtc.direct_api();
                if let (Some(pt), Some(stream)) = (pt, api.stream_tx_by_mid(mid, None)) {
                    stream.write_rtp(RtpWrite::new(pt, SeqNo::from(seq), time, now, bytes).marker(last));
                    seq += 1;
                }
                let _ = peer.rtc.handle_input(Input::Timeout(Instant::now()));
                match peer.drain(&mut events) {
                    Ok(at) => deadline = at,
                    Err(e) => return Err(format!("media connection failed: {e}")),
                }
                take_events(&mut events, &mut receiver, &connected, &[]);
                plan.sent += 1;
            }
        }
        let now = Instant::now();
        let wake = tokio::time::Instant::from_std(wake.max(now));
        tokio::select! {
            biased;
            _ = stop.changed() => {}
            reason = &mut keep.0 => break Err(reason.unwrap_or_else(|e| format!("signaling task: {e}"))),
            received = peer.socket.recv_from(&mut buf) => {
                // str0m keeps one input's outputs only until the next input: drain after
                // each datagram given to it (a video frame's packets arrive together). A
                // light receiver counts its known streams' packets without str0m.
                if let Ok((n, from)) = received {
                    let mut next = Some((n, from));
                    let mut reads = 0;
                    while let Some((n, from)) = next.take() {
                        let bytes = &buf[..n];
                        let counted = receiver.as_mut().is_some_and(|r| r.count_light(bytes));
                        if !counted {
                            peer.receive(bytes, from);
                            match peer.drain(&mut events) {
                                Ok(at) => deadline = at,
                                Err(_) => {
                                    // Reported by the drain at the top of the loop.
                                    fed = true;
                                    break;
                                }
                            }
                            take_events(&mut events, &mut receiver, &connected, bytes);
                        }
                        reads += 1;
                        if reads < READS_PER_WAKE_MAX {
                            next = peer.socket.try_recv_from(&mut buf).ok();
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                let _ = peer.rtc.handle_input(Input::Timeout(Instant::now()));
                fed = true;
            }
            changed = async {
                match start_rx.as_mut() {
                    Some(rx) if schedule.is_none() => rx.changed().await.is_ok(),
                    _ => std::future::pending().await,
                }
            } => { let _ = changed; }
        }
    };
    if let Some(receiver) = receiver {
        receiver.finish();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receiver_counts_each_windowed_packet_once() {
        let mut seen = Seen::new(
            Window {
                first: 10,
                count: 100,
            },
            2,
        );
        let stamp = |publisher, seq| Stamp {
            publisher,
            seq,
            sent_ns: 0,
        };
        assert!(!seen.record(stamp(0, 9)), "before the window");
        assert!(seen.record(stamp(0, 10)));
        assert!(seen.record(stamp(1, 10)), "another publisher's packet 10");
        assert!(!seen.record(stamp(0, 10)), "a duplicate");
        assert!(seen.record(stamp(1, 109)));
        assert!(!seen.record(stamp(1, 110)), "after the window");
        assert!(!seen.record(stamp(5, 50)), "an unknown publisher");
        assert_eq!((seen.received, seen.duplicates, seen.damaged), (3, 1, 1));
    }

    /// An SRTP-like datagram: a 12-byte RTP header, then `body` bytes.
    fn datagram(ssrc: u32, seq: u16, body: usize) -> Vec<u8> {
        let mut d = vec![0u8; 12 + body];
        d[0] = 0x80;
        d[1] = 111;
        d[2..4].copy_from_slice(&seq.to_be_bytes());
        d[8..12].copy_from_slice(&ssrc.to_be_bytes());
        d
    }

    #[test]
    fn rtp_headers_are_read_and_rtcp_stun_and_dtls_are_not_rtp() {
        assert_eq!(
            rtp_header(&datagram(0xdead_beef, 513, 10)),
            Some((0xdead_beef, 513))
        );
        let mut rtcp = datagram(1, 1, 10);
        rtcp[1] = 201; // receiver report
        assert_eq!(rtp_header(&rtcp), None);
        let mut stun = datagram(1, 1, 10);
        stun[0] = 0x00;
        assert_eq!(rtp_header(&stun), None);
        let mut dtls = datagram(1, 1, 10);
        dtls[0] = 22;
        assert_eq!(rtp_header(&dtls), None);
        assert_eq!(rtp_header(&[0x80; 11]), None, "shorter than a header");
    }

    #[test]
    fn header_lengths_count_csrcs_and_extensions() {
        assert_eq!(rtp_header_len(&datagram(1, 1, 10)), Some(12));
        let mut csrcs = datagram(1, 1, 10);
        csrcs[0] |= 2;
        assert_eq!(rtp_header_len(&csrcs), Some(20));
        let mut extension = datagram(1, 1, 20);
        extension[0] |= 0x10;
        extension[15] = 2; // two words after the 4-byte extension header
        assert_eq!(rtp_header_len(&extension), Some(24));
        assert_eq!(trailer(&extension, 4), Some(4));
        extension[15] = 200;
        assert_eq!(rtp_header_len(&extension), None, "longer than the datagram");
    }

    #[test]
    fn extended_sequence_numbers_follow_rollover_both_ways() {
        assert_eq!(extend_seq(10, 11), 11);
        assert_eq!(extend_seq(65_535, 0), 65_536);
        assert_eq!(
            extend_seq(65_536, 65_535),
            65_535,
            "a late packet before the wrap"
        );
        assert_eq!(extend_seq(3 * 65_536 + 5, 2), 3 * 65_536 + 2);
        assert_eq!(extend_seq(2, 65_000), 0, "never below zero");
    }

    #[test]
    fn a_light_receiver_counts_a_learned_stream_from_headers_and_once() {
        let window = Window {
            first: 100,
            count: 50,
        };
        let mut seen = Seen::new(window, 2);
        let mut light = Light::default();
        // Publisher 1's stamp 90 arrived (decrypted) as RTP sequence 65_530: a 32-byte
        // payload and a 16-byte tag after the header.
        let learned = Stamp {
            publisher: 1,
            seq: 90,
            sent_ns: 0,
        };
        assert!(
            !light.count(&datagram(7, 65_531, 48), 32, &mut seen),
            "not learned yet"
        );
        light.learn(7, 65_530, learned, 16);
        // Stamp 100 is sequence 65_540, which wraps to 4.
        assert!(light.count(&datagram(7, 4, 48), 32, &mut seen));
        assert!(
            light.count(&datagram(7, 4, 48), 32, &mut seen),
            "a duplicate is still its stream's"
        );
        assert!(light.count(&datagram(7, 5, 47), 32, &mut seen), "wrong length");
        assert!(
            light.count(&datagram(7, 65_535, 48), 32, &mut seen),
            "before the window"
        );
        // A header extension (one word) makes the datagram longer, not damaged.
        let mut extended = datagram(7, 6, 8 + 48);
        extended[0] |= 0x10;
        extended[15] = 1;
        assert!(light.count(&extended, 32, &mut seen));
        assert!(!light.count(&datagram(8, 4, 48), 32, &mut seen), "another stream");
        let mut rtcp = datagram(7, 4, 48);
        rtcp[1] = 200;
        assert!(!light.count(&rtcp, 32, &mut seen), "RTCP goes to str0m");
        assert_eq!((seen.received, seen.duplicates, seen.damaged), (2, 1, 1));
        // The packet counted is publisher 1's stamp 100: the window's first of publisher 1.
        assert!(!seen.record(Stamp {
            publisher: 1,
            seq: 100,
            sent_ns: 0
        }));
        assert!(seen.record(Stamp {
            publisher: 0,
            seq: 100,
            sent_ns: 0
        }));
    }

    #[test]
    fn the_schedule_sends_frames_at_the_profile_interval() {
        let start = Instant::now();
        let mut plan = Schedule {
            profile: Profile::Video,
            start,
            sent: 0,
            packets: 9,
        };
        assert_eq!(plan.due(), Some(start));
        plan.sent = 4;
        assert_eq!(plan.due(), Some(start + Duration::from_micros(33_333)));
        plan.sent = 9;
        assert_eq!(plan.due(), None);
    }
}
