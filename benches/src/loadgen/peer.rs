//! One WebRTC peer of the load generator: str0m in RTP mode (no depacketising, no jitter
//! buffer: a receiver decrypts, checks and counts each packet, which is all a load test
//! needs) on its own UDP socket, and the loop that runs it as a publisher (stamped packets
//! on the profile's schedule) or a receiver (every packet checked against its stamp,
//! counted once, its delay recorded).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Delay from the publisher's send to the receiver's read, in microseconds.
    pub latency_us: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            received: 0,
            duplicates: 0,
            damaged: 0,
            latency_us: Histogram::new_with_bounds(1, LATENCY_MAX.as_micros() as u64, 3)
                .expect("valid histogram bounds"),
        }
    }
}

/// The sequence numbers measured: `[first, first + count)` of every publisher.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub first: u64,
    pub count: u64,
}

/// What a peer does once negotiated.
pub enum Role {
    /// Sends `packets` stamped packets on m-line `mid` from the instant `start` announces;
    /// `ready` counts publishers connected.
    Publish {
        index: u32,
        profile: Profile,
        mid: Mid,
        packets: u64,
        start: watch::Receiver<Option<Instant>>,
        ready: Arc<AtomicUsize>,
    },
    /// Receives from `publishers` publishers; `ready` counts receivers connected.
    Receive {
        profile: Profile,
        publishers: u32,
        window: Window,
        ready: Arc<AtomicUsize>,
        tally: Arc<Mutex<Tally>>,
    },
}

/// A receiver's record of the window: one bit per (publisher, sequence).
struct Seen {
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

/// Runs a negotiated peer until `stop` turns true (or, for a publisher, its packets are all
/// sent and `stop` turns true). `keep` is the signaling side that must stay alive (its
/// end is an error: the peer's session is gone).
pub async fn run(
    mut peer: Peer,
    role: Role,
    keep: impl Future<Output = String>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let mut keep = std::pin::pin!(keep);
    let mut events = Vec::new();
    let mut buf = vec![0u8; DATAGRAM_BYTES_MAX];
    let (mut seen, mut schedule, mut start_rx) = (None, None, None);
    let mut publish = None;
    let mut receive = None;
    let connected: Arc<AtomicUsize>;
    match role {
        Role::Publish {
            index,
            profile,
            mid,
            packets,
            start,
            ready,
        } => {
            publish = Some((index, profile, mid, packets));
            start_rx = Some(start);
            connected = ready;
        }
        Role::Receive {
            profile,
            publishers,
            window,
            ready,
            tally,
        } => {
            seen = Some(Seen::new(window, publishers));
            connected = ready;
            receive = Some((profile, tally));
        }
    }
    let mut seq = 0u64;
    let result = loop {
        if *stop.borrow() {
            break Ok(());
        }
        let deadline = match peer.drain(&mut events) {
            Ok(at) => at,
            Err(e) => break Err(format!("media connection failed: {e}")),
        };
        for event in events.drain(..) {
            match event {
                Event::Connected => {
                    connected.fetch_add(1, Ordering::Relaxed);
                }
                Event::RtpPacket(packet) => {
                    if let (Some((profile, tally)), Some(seen)) = (&receive, &mut seen) {
                        let now = Instant::now();
                        match check(*profile, &packet.payload) {
                            Ok(stamp) => {
                                if seen.record(stamp) {
                                    let us = (since_epoch(now).saturating_sub(stamp.sent_ns) / 1000)
                                        .clamp(1, LATENCY_MAX.as_micros() as u64);
                                    let _ = tally.lock().expect("tally").latency_us.record(us);
                                }
                            }
                            Err(_) => seen.damaged += 1,
                        }
                    }
                }
                _ => {}
            }
        }
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
                if let Err(e) = peer.drain(&mut events) {
                    return Err(format!("media connection failed: {e}"));
                }
                plan.sent += 1;
            }
        }
        let now = Instant::now();
        let wake = tokio::time::Instant::from_std(wake.max(now));
        tokio::select! {
            biased;
            _ = stop.changed() => {}
            reason = &mut keep => break Err(reason),
            received = peer.socket.recv_from(&mut buf) => {
                // str0m keeps one input's outputs only until the next input: drain after
                // each datagram (a video frame's packets arrive together).
                if let Ok((n, from)) = received {
                    peer.receive(&buf[..n], from);
                    let _ = peer.drain(&mut events);
                    for _ in 0..READS_PER_WAKE_MAX {
                        match peer.socket.try_recv_from(&mut buf) {
                            Ok((n, from)) => {
                                peer.receive(&buf[..n], from);
                                let _ = peer.drain(&mut events);
                            }
                            Err(_) => break,
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                let _ = peer.rtc.handle_input(Input::Timeout(Instant::now()));
            }
            changed = async {
                match start_rx.as_mut() {
                    Some(rx) if schedule.is_none() => rx.changed().await.is_ok(),
                    _ => std::future::pending().await,
                }
            } => { let _ = changed; }
        }
    };
    if let (Some((_, tally)), Some(seen)) = (&receive, seen) {
        let mut tally = tally.lock().expect("tally");
        tally.received += seen.received;
        tally.duplicates += seen.duplicates;
        tally.damaged += seen.damaged;
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
