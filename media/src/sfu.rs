//! The WebRTC forwarding core of a room: one str0m `Rtc` per PeerConnection (each
//! participant has a publish and a subscribe connection, WIRE.md §5.3), ICE-lite on the
//! shard's address, media from every publisher forwarded to every other participant's
//! subscribe connection.
//!
//! Sans-IO like str0m itself: datagrams in (`handle_datagram(now, from, bytes)`), timeouts
//! in (`handle_timeout(now)`), datagrams out (`poll_transmit()`), next deadline out
//! (`poll_timeout()`). No sockets, no clock, no executor. Demultiplexing is O(1): a map from
//! the remote address to the connection, with str0m's `accepts` only on a miss (the first
//! STUN binding from a new address).
//!
//! Forwarding keeps the payload shared (`Arc<[u8]>` from str0m's `MediaData` is handed to
//! every subscriber's writer); the per-subscriber work is str0m's packetising, SRTP and send.
//!
//! Status: this is the forwarding core with its simulation test. The shard's UDP socket, the
//! signaling glue (answers, `rtc.track.published`, msid) and the browser test are the rest
//! of the SFU issue.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use str0m::change::SdpOffer;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

use crate::room::ParticipantId;

pub use crate::room::Leg;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msid_is_rewritten_only_on_the_named_m_lines() {
        let sdp = "v=0\r\na=group:BUNDLE 0 1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\na=msid:x y\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendonly\r\n";
        let mut msids = HashMap::new();
        msids.insert("0".to_owned(), ("stream_a".to_owned(), "track_a".to_owned()));
        msids.insert("1".to_owned(), ("stream_b".to_owned(), "track_v".to_owned()));
        let out = rewrite_msid(sdp, &msids);
        assert!(out.contains("a=mid:0\r\na=msid:stream_a track_a\r\n"), "{out}");
        assert!(!out.contains("a=msid:x y"));
        assert!(out.contains("a=mid:1\r\na=msid:stream_b track_v\r\n"), "{out}");
        assert!(out.starts_with("v=0\r\na=group:BUNDLE 0 1\r\n"));
        assert_eq!(rewrite_msid(sdp, &HashMap::new()), sdp);
    }
}

/// Why the SFU refused something; the error concerns one peer only.
#[derive(Debug, thiserror::Error)]
pub enum SfuError {
    #[error("invalid SDP offer: {0}")]
    BadOffer(String),
    #[error("negotiation failed: {0}")]
    Negotiation(String),
    #[error("unknown connection")]
    UnknownPeer,
}

/// The SFU's answer, and for a subscribe answer how many published tracks it carries and
/// how many did not fit the offered m-lines (`[audio, video]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub sdp: String,
    pub carried: [usize; 2],
    pub unfitted: [usize; 2],
}

/// A published track, as the subscribe answer should carry it.
#[derive(Debug, Clone, Copy)]
pub struct Route<'a> {
    pub owner: &'a ParticipantId,
    /// The publisher's m-line.
    pub mid: &'a str,
    /// `audio` or `video`.
    pub media_kind: &'a str,
    pub stream_id: &'a str,
    pub track_id: &'a str,
}

/// Sets `a=msid:<stream> <track>` on the m-lines named in `msids` (by `a=mid`), replacing
/// whatever msid they had. str0m lets only the offering side choose msid, so the SFU, which
/// answers, rewrites its answer.
pub fn rewrite_msid(sdp: &str, msids: &HashMap<String, (String, String)>) -> String {
    if msids.is_empty() {
        return sdp.to_owned();
    }
    let mut out = String::with_capacity(sdp.len() + 64 * msids.len());
    let mut section: Vec<&str> = Vec::new();
    let flush = |section: &mut Vec<&str>, out: &mut String| {
        let mid = section
            .iter()
            .find_map(|l| l.strip_prefix("a=mid:"))
            .map(str::trim);
        let msid = mid.and_then(|mid| msids.get(mid));
        for line in section.drain(..) {
            if msid.is_some() && line.starts_with("a=msid:") {
                continue;
            }
            out.push_str(line);
            out.push_str("\r\n");
            if let (Some((stream, track)), true) = (msid, line.starts_with("a=mid:")) {
                out.push_str(&format!("a=msid:{stream} {track}\r\n"));
            }
        }
    };
    for line in sdp.lines().map(|l| l.trim_end_matches('\r')) {
        if line.starts_with("m=") {
            flush(&mut section, &mut out);
        }
        section.push(line);
    }
    flush(&mut section, &mut out);
    out
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

struct Peer {
    participant: ParticipantId,
    leg: Leg,
    rtc: Rtc,
    /// For subscribe connections: which publisher track each sending m-line carries.
    sending: HashMap<Mid, (usize, Mid)>,
    /// Sending m-lines not yet carrying a track, by kind.
    free: Vec<(Mid, MediaKind)>,
    alive: bool,
}

/// The forwarding state of one room.
pub struct Sfu {
    local: SocketAddr,
    peers: Vec<Peer>,
    by_address: HashMap<SocketAddr, usize>,
    transmits: VecDeque<Transmit>,
    /// Packets forwarded to subscribers, and ones that found no subscriber m-line.
    pub forwarded: u64,
    pub unrouted: u64,
    /// Keyframes asked of publishers, and when last, per publisher m-line.
    pub keyframes_requested: u64,
    last_keyframe_request: HashMap<(usize, Mid), Instant>,
}

/// A publisher's video m-line is asked for a keyframe at most this often.
pub const KEYFRAME_REQUEST_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

impl std::fmt::Debug for Sfu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sfu")
            .field("local", &self.local)
            .field("peers", &self.peers.len())
            .finish()
    }
}

impl Sfu {
    /// An SFU answering with one ICE-lite host candidate: `local` (the shard's socket,
    /// advertised with the public IP).
    pub fn new(local: SocketAddr) -> Self {
        Self {
            local,
            peers: Vec::new(),
            by_address: HashMap::new(),
            transmits: VecDeque::new(),
            forwarded: 0,
            unrouted: 0,
            keyframes_requested: 0,
            last_keyframe_request: HashMap::new(),
        }
    }

    /// Asks a publisher's video m-line for a keyframe (a subscriber starts receiving it),
    /// at most once per [`KEYFRAME_REQUEST_INTERVAL`].
    fn request_keyframe(&mut self, now: Instant, publisher: usize, mid: Mid) {
        let key = (publisher, mid);
        if self
            .last_keyframe_request
            .get(&key)
            .is_some_and(|last| now.duration_since(*last) < KEYFRAME_REQUEST_INTERVAL)
        {
            return;
        }
        let Some(peer) = self.peers.get_mut(publisher) else {
            return;
        };
        if peer.rtc.media(mid).is_none_or(|m| m.kind() != MediaKind::Video) {
            return;
        }
        if let Some(mut writer) = peer.rtc.writer(mid)
            && writer.request_keyframe(None, KeyframeRequestKind::Pli).is_ok()
        {
            self.keyframes_requested += 1;
            self.last_keyframe_request.insert(key, now);
            self.drain(now, publisher);
        }
    }

    fn find(&self, participant: &ParticipantId, leg: Leg) -> Option<usize> {
        self.peers
            .iter()
            .position(|p| p.alive && p.participant == *participant && p.leg == leg)
    }

    /// Answers a client's offer for one of its connections (a new one, or a renegotiation).
    /// A subscribe answer carries the published `routes` on its sending m-lines, each with
    /// the publisher's `a=msid:<stream_id> <track_id>`, so the client maps what it receives
    /// to the right publisher (WIRE.md §5.3).
    pub fn accept_offer(
        &mut self,
        now: Instant,
        participant: &ParticipantId,
        leg: Leg,
        sdp: &str,
        routes: &[Route<'_>],
    ) -> Result<Answer, SfuError> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| SfuError::BadOffer(e.to_string()))?;
        let index = match self.find(participant, leg) {
            Some(index) => index,
            None => {
                let mut rtc = Rtc::builder().set_ice_lite(true).build(now);
                let candidate =
                    Candidate::host(self.local, "udp").map_err(|e| SfuError::Negotiation(e.to_string()))?;
                rtc.add_local_candidate(candidate);
                self.peers.push(Peer {
                    participant: participant.clone(),
                    leg,
                    rtc,
                    sending: HashMap::new(),
                    free: Vec::new(),
                    alive: true,
                });
                self.peers.len() - 1
            }
        };
        let answer = self.peers[index]
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| SfuError::Negotiation(e.to_string()))?;
        self.drain(now, index);
        let answer = answer.to_sdp_string();
        if leg != Leg::Subscribe {
            return Ok(Answer {
                sdp: answer,
                carried: [0, 0],
                unfitted: [0, 0],
            });
        }
        // str0m reports new m-lines (MediaAdded) only once the connection is up; the answer
        // needs them now, so read them from the offer's a=mid lines.
        let offered_mids: Vec<Mid> = sdp
            .lines()
            .filter_map(|l| l.trim_end().strip_prefix("a=mid:"))
            .map(Mid::from)
            .collect();
        let peer = &mut self.peers[index];
        for mid in offered_mids {
            let known = peer.sending.contains_key(&mid) || peer.free.iter().any(|(m, _)| *m == mid);
            if let Some(media) = peer.rtc.media(mid)
                && !known
                && matches!(media.direction(), Direction::SendOnly | Direction::SendRecv)
            {
                peer.free.push((mid, media.kind()));
            }
        }
        let mut msids: HashMap<String, (String, String)> = HashMap::new();
        let (mut carried, mut unfitted) = ([0usize; 2], [0usize; 2]);
        let mut new_video: Vec<(usize, Mid)> = Vec::new();
        for route in routes.iter().filter(|r| r.owner != participant) {
            let Some(publisher) = self.find(route.owner, Leg::Publish) else {
                continue;
            };
            let source = Mid::from(route.mid);
            let kind = if route.media_kind == "audio" {
                MediaKind::Audio
            } else {
                MediaKind::Video
            };
            let slot = usize::from(kind == MediaKind::Video);
            let peer = &mut self.peers[index];
            let already = peer
                .sending
                .iter()
                .find(|(_, track)| **track == (publisher, source))
                .map(|(mid, _)| *mid);
            let mid = match already {
                Some(mid) => mid,
                None => match peer.free.iter().position(|(_, k)| *k == kind) {
                    Some(free) => {
                        let (mid, _) = peer.free.remove(free);
                        peer.sending.insert(mid, (publisher, source));
                        new_video.push((publisher, source));
                        mid
                    }
                    // More tracks than the client offered m-lines: counted, so the room can
                    // ask the client to re-offer (`rtc.subscribe.refresh`).
                    None => {
                        unfitted[slot] += 1;
                        continue;
                    }
                },
            };
            carried[slot] += 1;
            msids.insert(
                mid.to_string(),
                (route.stream_id.to_owned(), route.track_id.to_owned()),
            );
        }
        for (publisher, source) in new_video {
            self.request_keyframe(now, publisher, source);
        }
        Ok(Answer {
            sdp: rewrite_msid(&answer, &msids),
            carried,
            unfitted,
        })
    }

    /// Removes a participant's connections; nothing is forwarded to it afterwards.
    pub fn remove(&mut self, participant: &ParticipantId) {
        for (index, peer) in self.peers.iter_mut().enumerate() {
            if peer.participant == *participant && peer.alive {
                peer.alive = false;
                peer.rtc.disconnect();
                self.by_address.retain(|_, i| *i != index);
            }
        }
        // Subscribers stop carrying the departed publisher's tracks.
        let gone: Vec<usize> = self
            .peers
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.alive)
            .map(|(i, _)| i)
            .collect();
        for peer in self.peers.iter_mut().filter(|p| p.alive) {
            let freed: Vec<Mid> = peer
                .sending
                .iter()
                .filter(|(_, (pub_index, _))| gone.contains(pub_index))
                .map(|(mid, _)| *mid)
                .collect();
            for mid in freed {
                peer.sending.remove(&mid);
                if let Some(media) = peer.rtc.media(mid) {
                    peer.free.push((mid, media.kind()));
                }
            }
        }
    }

    /// Whether a datagram from `from` belongs to one of these connections.
    pub fn accepts(&self, now: Instant, from: SocketAddr, contents: &[u8]) -> bool {
        if self.by_address.contains_key(&from) {
            return true;
        }
        let Ok(receive) = Receive::new(Protocol::Udp, from, self.local, contents) else {
            return false;
        };
        let input = Input::Receive(now, receive);
        self.peers.iter().any(|p| p.alive && p.rtc.accepts(&input))
    }

    /// One datagram from the network; an error concerns the peer that sent it only.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        contents: &[u8],
    ) -> Result<(), SfuError> {
        let receive = Receive::new(Protocol::Udp, from, self.local, contents)
            .map_err(|e| SfuError::Negotiation(e.to_string()))?;
        let input = Input::Receive(now, receive);
        let index = match self.by_address.get(&from) {
            Some(index) => *index,
            None => {
                let index = self
                    .peers
                    .iter()
                    .position(|p| p.alive && p.rtc.accepts(&input))
                    .ok_or(SfuError::UnknownPeer)?;
                self.by_address.insert(from, index);
                index
            }
        };
        self.peers[index]
            .rtc
            .handle_input(input)
            .map_err(|e| SfuError::Negotiation(e.to_string()))?;
        self.drain(now, index);
        Ok(())
    }

    /// Lets every connection act on time passing.
    pub fn handle_timeout(&mut self, now: Instant) {
        for index in 0..self.peers.len() {
            if self.peers[index].alive {
                if let Err(err) = self.peers[index].rtc.handle_input(Input::Timeout(now)) {
                    tracing::debug!(error = %err, "peer timeout handling failed");
                    self.peers[index].alive = false;
                }
                self.drain(now, index);
            }
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The earliest time any connection needs [`Sfu::handle_timeout`].
    pub fn poll_timeout(&mut self, now: Instant) -> Instant {
        let mut earliest = now + std::time::Duration::from_millis(100);
        for index in 0..self.peers.len() {
            if self.peers[index].alive
                && let Some(deadline) = self.drain(now, index)
            {
                earliest = earliest.min(deadline);
            }
        }
        earliest
    }

    /// Drains one connection's outputs: transmits are queued, events acted on (media is
    /// forwarded). Returns its next timeout.
    fn drain(&mut self, now: Instant, index: usize) -> Option<Instant> {
        loop {
            let output = match self.peers[index].rtc.poll_output() {
                Ok(output) => output,
                Err(err) => {
                    tracing::debug!(error = %err, "peer failed; dropping it");
                    self.peers[index].alive = false;
                    return None;
                }
            };
            match output {
                Output::Timeout(deadline) => return Some(deadline),
                Output::Transmit(transmit) => {
                    self.transmits.push_back(Transmit {
                        destination: transmit.destination,
                        contents: transmit.contents.into(),
                    });
                }
                Output::Event(event) => self.handle_event(now, index, event),
            }
        }
    }

    fn handle_event(&mut self, now: Instant, index: usize, event: Event) {
        match event {
            Event::MediaAdded(added) => {
                let peer = &mut self.peers[index];
                let known =
                    peer.sending.contains_key(&added.mid) || peer.free.iter().any(|(m, _)| *m == added.mid);
                if peer.leg == Leg::Subscribe
                    && !known
                    && matches!(added.direction, Direction::SendOnly | Direction::SendRecv)
                {
                    peer.free.push((added.mid, added.kind));
                }
            }
            Event::MediaData(data) => {
                if self.peers[index].leg != Leg::Publish {
                    return;
                }
                let publisher = self.peers[index].participant.clone();
                let kind = if data.params.spec().codec.is_audio() {
                    MediaKind::Audio
                } else {
                    MediaKind::Video
                };
                let mut started = false;
                for sub in 0..self.peers.len() {
                    let peer = &mut self.peers[sub];
                    if !peer.alive || peer.leg != Leg::Subscribe || peer.participant == publisher {
                        continue;
                    }
                    let mid = match peer
                        .sending
                        .iter()
                        .find(|(_, track)| **track == (index, data.mid))
                        .map(|(mid, _)| *mid)
                    {
                        Some(mid) => mid,
                        None => match peer.free.iter().position(|(_, k)| *k == kind) {
                            Some(free) => {
                                let (mid, _) = peer.free.remove(free);
                                peer.sending.insert(mid, (index, data.mid));
                                started = true;
                                mid
                            }
                            None => {
                                self.unrouted += 1;
                                continue;
                            }
                        },
                    };
                    let Some(writer) = peer.rtc.writer(mid) else {
                        continue;
                    };
                    let Some(pt) = writer.match_params(data.params) else {
                        continue;
                    };
                    match writer.write(pt, data.network_time, data.time, data.data.clone()) {
                        Ok(()) => self.forwarded += 1,
                        Err(err) => tracing::trace!(error = %err, "forward write failed"),
                    }
                    self.drain(now, sub);
                }
                // A subscriber started receiving this track: a decoder needs a keyframe.
                if started {
                    self.request_keyframe(now, index, data.mid);
                }
            }
            Event::KeyframeRequest(request) => {
                // A subscriber wants a keyframe: ask the publisher of that m-line's track.
                let Some((publisher, source_mid)) = self.peers[index].sending.get(&request.mid).copied()
                else {
                    return;
                };
                if let Some(mut writer) = self
                    .peers
                    .get_mut(publisher)
                    .and_then(|p| p.rtc.writer(source_mid))
                {
                    let _ = writer.request_keyframe(None, KeyframeRequestKind::Pli);
                }
            }
            _ => {}
        }
    }
}
