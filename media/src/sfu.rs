//! The WebRTC forwarding core of a room: one str0m `Rtc` per PeerConnection (each
//! participant has a publish and a subscribe connection, WIRE.md §5.3), ICE-lite on the
//! shard's address, media from every publisher forwarded to every other participant's
//! subscribe connection.
//!
//! Sans-IO like str0m itself: datagrams in (`handle_datagram(now, connection, from, bytes)`),
//! timeouts in (`handle_timeout(now)`), datagrams out (`poll_transmit()`), next deadline out
//! (`poll_timeout()`). No sockets, no clock, no executor. The SFU does not demultiplex: the
//! caller's [`crate::demux::Demux`] maps a datagram to its connection once, from the
//! [`LinkChange`]s the SFU reports (a connection's local ICE ufrag when it opens, its end).
//!
//! Forwarding is RTP-level (str0m's RTP mode): a publisher's packet is never depacketised
//! or re-packetised. Its payload (`Arc<[u8]>`) is shared by every subscriber's write; per
//! subscriber m-line a [`Renumber`] keeps sequence numbers and RTP times continuous across
//! the tracks the m-line carries over time (gaps only where the source has them; packets
//! older than a track's start on that m-line are not sent). Payload types are mapped by
//! codec parameters, audio level / voice activity / video orientation extensions are
//! carried over, and video is NACK-able from str0m's send buffer. The per-subscriber work
//! is one SRTP protection and one datagram.
//!
//! Keyframes: a subscriber starting on a video track, and a subscriber's PLI, become a PLI
//! to the publisher, at most once per [`KEYFRAME_REQUEST_INTERVAL`] per publisher m-line.
//! Simulcast publishers: each subscriber m-line gets one layer, the active layer with the
//! highest rate (a layer idle for [`LAYER_IDLE`] is inactive); a switch waits for a
//! keyframe of the new layer (asked for) and continues the m-line's numbering.
//! Speaking: each published audio m-line has a [`SpeakingDetector`]; changes come out of
//! [`Sfu::poll_event`].

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use str0m::change::SdpOffer;
use str0m::format::PayloadParams;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Pt, Rid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, ExtensionValues, RtpPacket, RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};

use crate::participant::ParticipantId;
use crate::speaking::SpeakingDetector;

pub use crate::participant::Leg;

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

/// A connection datagrams can be routed to appeared or went away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkChange {
    /// A new connection; STUN binding requests for it carry `ufrag` as the first part of
    /// their USERNAME.
    Opened { connection: usize, ufrag: String },
    /// The connection is gone; its index may be reused by a later `Opened`.
    Closed { connection: usize },
}

/// Why the SFU refused something; the error concerns one peer only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SfuError {
    #[error("invalid SDP offer: {0}")]
    BadOffer(String),
    /// str0m could not negotiate the offer (or set up the connection's local candidate).
    #[error("negotiation failed: {0}")]
    Negotiation(String),
    /// The room holds as many connections as allowed.
    #[error("negotiation failed: too many connections in this room")]
    TooManyConnections,
    /// The connection has as many remote candidates as allowed.
    #[error("negotiation failed: too many remote candidates")]
    TooManyCandidates,
    #[error("negotiation failed: invalid candidate: {0}")]
    BadCandidate(String),
    /// A datagram str0m refused (it concerns that connection only).
    #[error("datagram refused: {0}")]
    BadDatagram(String),
    #[error("unknown connection")]
    UnknownPeer,
}

/// The SFU's answer, and for a subscribe answer how many published tracks it carries and
/// how many did not fit the offered m-lines (`[audio, video]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub sdp: String,
    /// The connection's local candidates (`candidate:...`), also trickled to the client,
    /// and the answer's first m-line they are announced on.
    pub candidates: Vec<String>,
    pub first_mid: Option<String>,
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

/// Something the room should tell its participants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SfuEvent {
    /// A publisher started or stopped speaking (from the audio-level header extension);
    /// `level` is the loudest level of the talk spurt in dBov.
    Speaking {
        participant: ParticipantId,
        speaking: bool,
        level: i8,
    },
}

/// Counters of one room's forwarding, for `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SfuStats {
    /// RTP packets written to subscribers.
    pub forwarded: u64,
    /// Packets that could not be forwarded to a subscriber that carries their track (no
    /// matching payload type on the subscriber, or older than the track's start there).
    pub dropped: u64,
    /// Times a (subscriber, track) pair found no free m-line.
    pub unfitted: u64,
    /// Keyframes asked of publishers.
    pub keyframes_requested: u64,
}

/// How a subscriber m-line renumbers the track it carries: sequence numbers and RTP times
/// continue where the previous track on the same m-line stopped, so the receiver sees one
/// gapless stream (gaps only where the publisher's own stream has them).
#[derive(Debug, Default)]
struct Renumber {
    seq_offset: u64,
    time_offset: u32,
    /// The first sequence number of the current source; older packets are not sent.
    first_in: Option<u64>,
    /// The highest sequence number and its time sent on this m-line.
    last_out: Option<(u64, u32)>,
}

impl Renumber {
    /// A new source starts on this m-line at its next packet.
    fn restart(&mut self) {
        self.first_in = None;
    }

    /// Maps a source packet to the m-line's numbering; `None` for packets from before the
    /// source started here. `gap` is the RTP time step inserted at a source change.
    fn map(&mut self, seq: u64, time: u32, gap: u32) -> Option<(u64, u32)> {
        let first = match self.first_in {
            Some(first) => first,
            None => {
                let (next_seq, next_time) = match self.last_out {
                    Some((last_seq, last_time)) => (last_seq + 1, last_time.wrapping_add(gap)),
                    None => (seq, time),
                };
                self.seq_offset = next_seq.wrapping_sub(seq);
                self.time_offset = next_time.wrapping_sub(time);
                self.first_in = Some(seq);
                seq
            }
        };
        if seq < first {
            return None;
        }
        let out = (
            seq.wrapping_add(self.seq_offset),
            time.wrapping_add(self.time_offset),
        );
        if self.last_out.is_none_or(|(last, _)| out.0 > last) {
            self.last_out = Some(out);
        }
        Some(out)
    }
}

/// One simulcast layer (RID) a publisher sends on an m-line.
#[derive(Debug)]
struct Layer {
    rid: Rid,
    last_packet: Instant,
    window_start: Instant,
    window_bytes: u64,
    /// Payload bytes in the last complete [`LAYER_RATE_WINDOW`].
    rate: u64,
}

/// A simulcast layer without packets this long is inactive (the publisher paused it).
pub const LAYER_IDLE: std::time::Duration = std::time::Duration::from_millis(1000);
/// Layer rates are measured over windows this long.
pub const LAYER_RATE_WINDOW: std::time::Duration = std::time::Duration::from_millis(500);
/// Simulcast layers tracked per m-line; packets of further RIDs are not forwarded.
pub const LAYERS_MAX: usize = 4;

/// Notes a packet of `rid` on an m-line's layers; false when the layer cannot be tracked.
fn note_layer(layers: &mut Vec<Layer>, rid: Rid, now: Instant, bytes: usize) -> bool {
    let index = match layers.iter().position(|l| l.rid == rid) {
        Some(index) => index,
        None if layers.len() < LAYERS_MAX => {
            layers.push(Layer {
                rid,
                last_packet: now,
                window_start: now,
                window_bytes: 0,
                rate: 0,
            });
            layers.len() - 1
        }
        None => return false,
    };
    let layer = &mut layers[index];
    if now.saturating_duration_since(layer.window_start) >= LAYER_RATE_WINDOW {
        // A layer that paused for several windows starts again from nothing.
        let idle = now.saturating_duration_since(layer.last_packet) >= LAYER_IDLE;
        layer.rate = if idle { 0 } else { layer.window_bytes };
        layer.window_bytes = 0;
        layer.window_start = now;
    }
    layer.window_bytes += bytes as u64;
    layer.last_packet = now;
    true
}

/// The layer to forward: the active one with the highest rate (on a tie, `preferred`, else
/// the first the publisher sent).
fn best_layer(layers: &[Layer], now: Instant, preferred: Option<Rid>) -> Option<Rid> {
    layers
        .iter()
        .enumerate()
        .filter(|(_, l)| now.saturating_duration_since(l.last_packet) < LAYER_IDLE)
        .max_by_key(|(i, l)| (l.rate, Some(l.rid) == preferred, std::cmp::Reverse(*i)))
        .map(|(_, l)| l.rid)
}

/// Whether a packet starts a keyframe, so a subscriber can switch layers on it. Only VP8 is
/// inspected; for other codecs every packet is a switch point (the keyframe asked for at the
/// switch repairs the picture).
fn is_switch_point(params: &PayloadParams, payload: &[u8]) -> bool {
    if params.spec().codec != str0m::format::Codec::Vp8 {
        return true;
    }
    str0m::rtp::Vp8Descriptor::parse(payload).is_ok_and(|d| d.starts_keyframe(payload))
}

/// What a subscriber's sending m-line carries.
#[derive(Debug)]
struct Carried {
    /// The publisher's connection and m-line.
    source: (usize, Mid),
    renumber: Renumber,
    /// Publisher payload type -> this m-line's, learnt on first use.
    pts: Vec<(Pt, Option<Pt>)>,
    /// Simulcast: the layer forwarded, and the one waited for (its keyframe) to switch to.
    layer: Option<Rid>,
    pending: Option<Rid>,
}

struct Peer {
    participant: ParticipantId,
    leg: Leg,
    rtc: Rtc,
    /// The address advertised to this connection (and the datagrams' local address).
    local: SocketAddr,
    /// Subscribe connections: which publisher track each sending m-line carries.
    sending: HashMap<Mid, Carried>,
    /// Subscribe connections: sending m-lines not yet carrying a track, by kind.
    free: Vec<(Mid, MediaKind)>,
    /// Publish connections: the simulcast layers each m-line sends, with their rates.
    layers: HashMap<Mid, Vec<Layer>>,
    /// Publish connections: voice activity of the audio m-lines.
    voice: HashMap<Mid, SpeakingDetector>,
    /// Subscribe connections: the numbering of free m-lines that carried a track before,
    /// so a new track continues it.
    parked: HashMap<Mid, Renumber>,
    /// Remote candidates the client trickled (bounded by [`REMOTE_CANDIDATES_MAX`]).
    remote_candidates: usize,
    /// str0m's next timeout for this connection, as its last drain reported; `None` when
    /// the connection changed since (it is drained again before its deadline is used).
    /// Only connections whose deadline passed get a timeout: no pass over every
    /// connection each time any timer fires.
    deadline: Option<Instant>,
    /// RTP was written to this connection since its last timeout: it is in
    /// [`Sfu::written`] and gets one timeout (which releases every packet written) before
    /// the next transmit is taken.
    written: bool,
}

/// A subscribe connection negotiates no transport-wide congestion control: the SFU does not
/// estimate per-subscriber bandwidth (yet), and TWCC would cost a sequence registration per
/// forwarded packet plus a feedback report from every subscriber several times a second
/// (about a tenth of the shard's time in the load generator's profile). Publish
/// connections keep it: the browser's sender-side estimate relies on it.
fn subscribe_extensions(config: str0m::RtcConfig, leg: Leg) -> str0m::RtcConfig {
    if leg != Leg::Subscribe {
        return config;
    }
    let standard = str0m::rtp::ExtensionMap::standard();
    let keep = [
        Extension::AudioLevel,
        Extension::RtpMid,
        Extension::RtpStreamId,
        Extension::RepairedRtpStreamId,
        Extension::VideoOrientation,
    ];
    let mut config = config.clear_extension_map();
    for ext in keep {
        if let Some(id) = standard.id_of(ext.clone()) {
            config = config.set_extension(id, ext);
        }
    }
    config
}

/// Trickled remote candidates kept per connection; more are ignored.
pub const REMOTE_CANDIDATES_MAX: usize = 32;

/// The subscriber m-lines a publisher m-line's packets go to: `(connection, mid)`.
type Targets = std::sync::Arc<[(usize, Mid)]>;

/// The forwarding state of one room.
pub struct Sfu {
    /// The shard's socket address; its IP is advertised unless the offer names another.
    local: SocketAddr,
    /// Connections by index; a removed connection leaves `None` (indices are reused only
    /// after every reference to them is gone).
    peers: Vec<Option<Peer>>,
    /// Connections opened and closed since the caller last asked ([`Sfu::poll_link`]).
    links: VecDeque<LinkChange>,
    /// Publisher m-line -> the subscriber m-lines carrying it (the forwarding fan-out).
    /// Shared, so a forwarded packet takes its target list with a reference count, not a
    /// copy (the list can change while the packet is forwarded).
    routes: HashMap<(usize, Mid), Targets>,
    /// Publisher m-lines that have sent media, with their kind.
    sources: HashMap<(usize, Mid), MediaKind>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<SfuEvent>,
    stats: SfuStats,
    last_keyframe_request: HashMap<(usize, Mid, Option<Rid>), Instant>,
    /// At most this many connections (two per participant).
    peers_max: usize,
    /// Subscribe connections RTP was written to and not yet released, and the time of the
    /// latest write: str0m sends written RTP only after a timeout, and one timeout releases
    /// every packet written before it, so several packets forwarded to one subscriber in a
    /// step (a video frame, several speakers) cost one timeout pass, not one each.
    written: Vec<usize>,
    written_at: Option<Instant>,
}

/// A publisher's video m-line is asked for a keyframe at most this often.
pub const KEYFRAME_REQUEST_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Connections a room holds unless told otherwise ([`Sfu::with_participants_max`]).
pub const PEERS_MAX_DEFAULT: usize = 2 * 200;

impl std::fmt::Debug for Sfu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sfu")
            .field("local", &self.local)
            .field("peers", &self.peers.iter().flatten().count())
            .finish()
    }
}

fn media_kind(params: &PayloadParams) -> MediaKind {
    if params.spec().codec.is_audio() {
        MediaKind::Audio
    } else {
        MediaKind::Video
    }
}

impl Sfu {
    /// An SFU answering with one ICE-lite host candidate on `local` (the shard's socket,
    /// advertised with the public IP).
    pub fn new(local: SocketAddr) -> Self {
        Self {
            local,
            peers: Vec::new(),
            links: VecDeque::new(),
            routes: HashMap::new(),
            sources: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: SfuStats::default(),
            last_keyframe_request: HashMap::new(),
            peers_max: PEERS_MAX_DEFAULT,
            written: Vec::new(),
            written_at: None,
        }
    }

    /// Room for two connections per participant.
    pub fn with_participants_max(mut self, participants_max: usize) -> Self {
        self.peers_max = participants_max.saturating_mul(2).max(2);
        self
    }

    pub fn stats(&self) -> SfuStats {
        self.stats
    }

    fn peer(&mut self, index: usize) -> Option<&mut Peer> {
        self.peers.get_mut(index).and_then(Option::as_mut)
    }

    /// Asks a publisher's video m-line for a keyframe (a subscriber starts receiving it, or
    /// asked for one), at most once per [`KEYFRAME_REQUEST_INTERVAL`] per layer. `rid`: the
    /// simulcast layer (`None`: the best one, or the only stream).
    fn request_keyframe(&mut self, now: Instant, publisher: usize, mid: Mid, rid: Option<Rid>) {
        let rid = match (rid, self.peer(publisher)) {
            (Some(rid), _) => Some(rid),
            (None, Some(peer)) => peer
                .layers
                .get(&mid)
                .and_then(|layers| best_layer(layers, now, None)),
            (None, None) => None,
        };
        let key = (publisher, mid, rid);
        if self
            .last_keyframe_request
            .get(&key)
            .is_some_and(|last| now.duration_since(*last) < KEYFRAME_REQUEST_INTERVAL)
        {
            return;
        }
        let Some(peer) = self.peer(publisher) else {
            return;
        };
        if peer.rtc.media(mid).is_none_or(|m| m.kind() != MediaKind::Video) {
            return;
        }
        let mut api = peer.rtc.direct_api();
        let Some(stream) = api.stream_rx_by_mid(mid, rid) else {
            return;
        };
        stream.request_keyframe(KeyframeRequestKind::Pli);
        // str0m sends the PLI on a timeout; give the publisher one now rather than waiting
        // for its next deadline (only due connections get timeouts).
        if let Err(err) = peer.rtc.handle_input(Input::Timeout(now)) {
            tracing::debug!(error = %err, "publisher timeout handling failed");
        }
        self.stats.keyframes_requested += 1;
        self.last_keyframe_request.insert(key, now);
        self.drain(now, publisher);
    }

    fn find(&self, participant: &ParticipantId, leg: Leg) -> Option<usize> {
        self.peers.iter().position(|p| {
            p.as_ref()
                .is_some_and(|p| p.participant == *participant && p.leg == leg)
        })
    }

    /// Answers a client's offer for one of its connections (a new one, or a renegotiation).
    /// A subscribe answer carries the published `routes` on its sending m-lines, each with
    /// the publisher's `a=msid:<stream_id> <track_id>`, so the client maps what it receives
    /// to the right publisher (WIRE.md §5.3). `advertise`, when given, replaces the shard's
    /// IP in a new connection's candidate (the address the client's signaling arrived on).
    pub fn accept_offer(
        &mut self,
        now: Instant,
        participant: &ParticipantId,
        leg: Leg,
        sdp: &str,
        routes: &[Route<'_>],
        advertise: Option<IpAddr>,
    ) -> Result<Answer, SfuError> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| SfuError::BadOffer(e.to_string()))?;
        let index = match self.find(participant, leg) {
            Some(index) => index,
            None => {
                if self.peers.iter().flatten().count() >= self.peers_max {
                    return Err(SfuError::TooManyConnections);
                }
                let local = SocketAddr::new(advertise.unwrap_or(self.local.ip()), self.local.port());
                let mut rtc = subscribe_extensions(Rtc::builder().set_ice_lite(true).set_rtp_mode(true), leg)
                    .build(now);
                let candidate =
                    Candidate::host(local, "udp").map_err(|e| SfuError::Negotiation(e.to_string()))?;
                rtc.add_local_candidate(candidate);
                let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
                let peer = Peer {
                    participant: participant.clone(),
                    leg,
                    rtc,
                    local,
                    sending: HashMap::new(),
                    free: Vec::new(),
                    layers: HashMap::new(),
                    voice: HashMap::new(),
                    parked: HashMap::new(),
                    remote_candidates: 0,
                    deadline: None,
                    written: false,
                };
                let index = match self.peers.iter().position(Option::is_none) {
                    Some(slot) => {
                        self.peers[slot] = Some(peer);
                        slot
                    }
                    None => {
                        self.peers.push(Some(peer));
                        self.peers.len() - 1
                    }
                };
                self.links.push_back(LinkChange::Opened {
                    connection: index,
                    ufrag,
                });
                index
            }
        };
        let Some(peer) = self.peer(index) else {
            return Err(SfuError::UnknownPeer);
        };
        let answer = peer
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| SfuError::Negotiation(e.to_string()))?;
        self.drain(now, index);
        let answer = answer.to_sdp_string();
        let local = self.peer(index).map(|p| p.local).unwrap_or(self.local);
        let candidates = Candidate::host(local, "udp")
            .map(|c| vec![c.to_sdp_string()])
            .unwrap_or_default();
        let first_mid = answer
            .lines()
            .find_map(|l| l.trim_end().strip_prefix("a=mid:"))
            .map(str::to_owned);
        if leg != Leg::Subscribe {
            return Ok(Answer {
                sdp: answer,
                candidates,
                first_mid,
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
        if let Some(peer) = self.peer(index) {
            for mid in offered_mids {
                peer.add_free(mid);
            }
        }
        let mut msids: HashMap<String, (String, String)> = HashMap::new();
        let (mut carried, mut unfitted) = ([0usize; 2], [0usize; 2]);
        let mut started: Vec<(usize, Mid)> = Vec::new();
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
            let Some(peer) = self.peer(index) else { break };
            let mid = match peer.carrying(publisher, source) {
                Some(mid) => mid,
                None => match peer.assign(publisher, source, kind) {
                    Some(mid) => {
                        started.push((publisher, source));
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
        // Tracks already flowing that the room has not announced yet also get m-lines.
        started.extend(self.assign_sources_to(index));
        self.rebuild_routes();
        for (publisher, source) in started {
            self.request_keyframe(now, publisher, source, None);
        }
        Ok(Answer {
            sdp: rewrite_msid(&answer, &msids),
            candidates,
            first_mid,
            carried,
            unfitted,
        })
    }

    /// A candidate the client trickled for one of its connections (`candidate:...`, with or
    /// without `a=`). An ICE-lite server never sends checks; str0m keeps it for pairing.
    pub fn add_remote_candidate(
        &mut self,
        participant: &ParticipantId,
        leg: Leg,
        candidate: &str,
    ) -> Result<(), SfuError> {
        let index = self.find(participant, leg).ok_or(SfuError::UnknownPeer)?;
        let peer = self.peer(index).ok_or(SfuError::UnknownPeer)?;
        if peer.remote_candidates >= REMOTE_CANDIDATES_MAX {
            return Err(SfuError::TooManyCandidates);
        }
        let text = candidate.trim().trim_start_matches("a=");
        let candidate =
            Candidate::from_sdp_string(text).map_err(|e| SfuError::BadCandidate(e.to_string()))?;
        peer.rtc.add_remote_candidate(candidate);
        peer.remote_candidates += 1;
        peer.deadline = None;
        Ok(())
    }

    /// Gives subscriber `index` free m-lines for every flowing source it does not carry yet.
    fn assign_sources_to(&mut self, index: usize) -> Vec<(usize, Mid)> {
        let mut sources: Vec<((usize, Mid), MediaKind)> =
            self.sources.iter().map(|(k, v)| (*k, *v)).collect();
        sources.sort_by_key(|((p, m), _)| (*p, m.to_string()));
        let mut started = Vec::new();
        let participant = match self.peer(index) {
            Some(peer) if peer.leg == Leg::Subscribe => peer.participant.clone(),
            _ => return started,
        };
        for ((publisher, source), kind) in sources {
            if self.peer(publisher).is_none_or(|p| p.participant == participant) {
                continue;
            }
            let Some(peer) = self.peer(index) else { break };
            if peer.carrying(publisher, source).is_some() {
                continue;
            }
            if peer.assign(publisher, source, kind).is_some() {
                started.push((publisher, source));
            } else {
                self.stats.unfitted += 1;
            }
        }
        started
    }

    /// Recomputes the fan-out index from the subscribers' m-lines.
    fn rebuild_routes(&mut self) {
        let mut routes: HashMap<(usize, Mid), Vec<(usize, Mid)>> = HashMap::new();
        for (index, peer) in self.peers.iter().enumerate() {
            let Some(peer) = peer else { continue };
            for (mid, carried) in &peer.sending {
                routes.entry(carried.source).or_default().push((index, *mid));
            }
        }
        self.routes = routes.into_iter().map(|(k, v)| (k, v.into())).collect();
    }

    /// Removes a participant's connections; nothing is forwarded to it afterwards.
    pub fn remove(&mut self, participant: &ParticipantId) {
        let indices: Vec<usize> = self
            .peers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.as_ref().is_some_and(|p| p.participant == *participant))
            .map(|(i, _)| i)
            .collect();
        for index in indices {
            self.drop_peer(index);
        }
    }

    /// Forgets one connection and every reference to it.
    fn drop_peer(&mut self, index: usize) {
        let Some(mut peer) = self.peers.get_mut(index).and_then(Option::take) else {
            return;
        };
        peer.rtc.disconnect();
        for detector in peer.voice.values().filter(|d| d.is_speaking()) {
            let _ = detector;
            self.events.push_back(SfuEvent::Speaking {
                participant: peer.participant.clone(),
                speaking: false,
                level: -127,
            });
        }
        self.links.push_back(LinkChange::Closed { connection: index });
        self.sources.retain(|(p, _), _| *p != index);
        self.last_keyframe_request.retain(|(p, _, _), _| *p != index);
        // Subscribers stop carrying the departed publisher's tracks; the m-lines become free.
        for other in self.peers.iter_mut().flatten() {
            let freed: Vec<Mid> = other
                .sending
                .iter()
                .filter(|(_, c)| c.source.0 == index)
                .map(|(mid, _)| *mid)
                .collect();
            for mid in freed {
                if let Some(mut carried) = other.sending.remove(&mid) {
                    carried.renumber.restart();
                    other.parked.insert(mid, carried.renumber);
                }
                if let Some(media) = other.rtc.media(mid) {
                    other.free.push((mid, media.kind()));
                }
            }
        }
        self.rebuild_routes();
    }

    /// Whether str0m's connection `connection` takes a datagram from `from` (its nominated
    /// address, a viable candidate, or a STUN message with its credentials).
    pub fn accepts(&self, now: Instant, connection: usize, from: SocketAddr, contents: &[u8]) -> bool {
        self.peers
            .get(connection)
            .and_then(Option::as_ref)
            .is_some_and(|p| {
                Receive::new(Protocol::Udp, from, p.local, contents)
                    .is_ok_and(|receive| p.rtc.accepts(&Input::Receive(now, receive)))
            })
    }

    /// The next connection opened or closed since the last call, for the caller's
    /// demultiplexer.
    pub fn poll_link(&mut self) -> Option<LinkChange> {
        self.links.pop_front()
    }

    /// One datagram from the network for `connection` (the caller's demultiplexer found
    /// it); an error concerns that connection only.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        connection: usize,
        from: SocketAddr,
        contents: &[u8],
    ) -> Result<(), SfuError> {
        let index = connection;
        let peer = self.peer(index).ok_or(SfuError::UnknownPeer)?;
        let receive = Receive::new(Protocol::Udp, from, peer.local, contents)
            .map_err(|e| SfuError::BadDatagram(e.to_string()))?;
        peer.rtc
            .handle_input(Input::Receive(now, receive))
            .map_err(|e| SfuError::BadDatagram(e.to_string()))?;
        // What a datagram starts (a NACK or keyframe request to build, a retransmission
        // to release) str0m does on a timeout, and only due connections get timeouts: give
        // this one its timeout now (one per received datagram, not per forwarded packet).
        if let Err(err) = peer.rtc.handle_input(Input::Timeout(now)) {
            tracing::debug!(error = %err, "timeout after a datagram failed");
        }
        self.drain(now, index);
        Ok(())
    }

    /// Lets every connection whose deadline passed act on time passing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.release_written();
        for index in 0..self.peers.len() {
            let Some(peer) = self.peer(index) else { continue };
            if !peer.due(now) {
                continue;
            }
            if let Err(err) = peer.rtc.handle_input(Input::Timeout(now)) {
                tracing::debug!(error = %err, "peer timeout handling failed; dropping it");
                self.drop_peer(index);
                continue;
            }
            let participant = peer.participant.clone();
            let stopped: Vec<i8> = peer
                .voice
                .values_mut()
                .filter_map(|d| (d.on_timeout(now) == Some(false)).then(|| d.peak()))
                .collect();
            for level in stopped {
                self.events.push_back(SfuEvent::Speaking {
                    participant: participant.clone(),
                    speaking: false,
                    level,
                });
            }
            self.drain(now, index);
        }
    }

    /// The next datagram to send. Written RTP not yet released is released first (a caller
    /// that asks for the deadline first, as the shard does, finds nothing left to release).
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.release_written();
        self.transmits.pop_front()
    }

    /// Gives every connection RTP was written to since the last release its timeout (at
    /// the time of the latest write), so the written packets leave.
    fn release_written(&mut self) {
        let Some(now) = self.written_at.take() else {
            return;
        };
        // The list keeps its capacity between steps (no allocation per step).
        let mut written = std::mem::take(&mut self.written);
        for &index in &written {
            let Some(peer) = self.peer(index) else { continue };
            if !std::mem::take(&mut peer.written) {
                continue;
            }
            if let Err(err) = peer.rtc.handle_input(Input::Timeout(now)) {
                tracing::debug!(error = %err, "subscriber timeout handling failed");
            }
            self.drain(now, index);
        }
        written.clear();
        written.append(&mut self.written);
        self.written = written;
    }

    /// The next thing to tell the room.
    pub fn poll_event(&mut self) -> Option<SfuEvent> {
        self.events.pop_front()
    }

    /// The earliest time any connection needs [`Sfu::handle_timeout`]: each connection's
    /// remembered deadline (a connection changed since its last drain is drained now).
    pub fn poll_timeout(&mut self, now: Instant) -> Instant {
        // Connections changed since their last drain are drained first: a publisher's drain
        // forwards packets it released, which writes to subscribers; then every written
        // subscriber gets its timeout, so the deadlines read below are the ones after it.
        for index in 0..self.peers.len() {
            if self.peers[index].as_ref().is_some_and(|p| p.deadline.is_none()) {
                self.drain(now, index);
            }
        }
        self.release_written();
        let mut earliest = now + std::time::Duration::from_millis(100);
        for index in 0..self.peers.len() {
            let deadline = match self.peers[index].as_ref().map(|p| p.deadline) {
                None => continue,
                Some(Some(deadline)) => Some(deadline),
                Some(None) => self.drain(now, index),
            };
            if let Some(deadline) = deadline {
                earliest = earliest.min(deadline);
            }
            if let Some(peer) = self.peer(index) {
                for deadline in peer.voice.values().filter_map(SpeakingDetector::deadline) {
                    earliest = earliest.min(deadline);
                }
            }
        }
        earliest
    }

    /// Drains one connection's outputs: transmits are queued, events acted on (media is
    /// forwarded). Returns its next timeout.
    fn drain(&mut self, now: Instant, index: usize) -> Option<Instant> {
        loop {
            let peer = self.peer(index)?;
            let output = match peer.rtc.poll_output() {
                Ok(output) => output,
                Err(err) => {
                    tracing::debug!(error = %err, "peer failed; dropping it");
                    self.drop_peer(index);
                    return None;
                }
            };
            match output {
                Output::Timeout(deadline) => {
                    peer.deadline = Some(deadline);
                    return Some(deadline);
                }
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
                if let Some(peer) = self.peer(index)
                    && peer.leg == Leg::Subscribe
                {
                    peer.add_free(added.mid);
                    let started = self.assign_sources_to(index);
                    self.rebuild_routes();
                    for (publisher, source) in started {
                        self.request_keyframe(now, publisher, source, None);
                    }
                }
            }
            Event::RtpPacket(packet) => self.forward(now, index, packet),
            Event::KeyframeRequest(request) => {
                // A subscriber wants a keyframe: ask the publisher of that m-line's track (the
                // layer it receives).
                let Some((source, layer)) = self
                    .peer(index)
                    .and_then(|p| p.sending.get(&request.mid))
                    .map(|c| (c.source, c.layer))
                else {
                    return;
                };
                self.request_keyframe(now, source.0, source.1, layer);
            }
            _ => {}
        }
    }

    /// One RTP packet from a publisher, to every subscriber m-line carrying its track.
    fn forward(&mut self, now: Instant, index: usize, packet: RtpPacket) {
        let Some(peer) = self.peers.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        if peer.leg != Leg::Publish {
            return;
        }
        let ssrc = packet.header.ssrc;
        let Some((mid, rid)) = peer.rtc.direct_api().stream_rx(&ssrc).map(|s| (s.mid(), s.rid())) else {
            return;
        };
        // Simulcast: the layer's rate is tracked; each subscriber gets one layer (below).
        let best = match rid {
            Some(rid) => {
                let layers = peer.layers.entry(mid).or_default();
                if !note_layer(layers, rid, now, packet.payload.len()) {
                    return;
                }
                best_layer(layers, now, None)
            }
            None => None,
        };
        let Some(params) = peer
            .rtc
            .codec_config()
            .find(|p| p.pt() == packet.header.payload_type)
            .copied()
        else {
            self.stats.dropped += 1;
            return;
        };
        let kind = media_kind(&params);
        if kind == MediaKind::Audio {
            let change = peer
                .voice
                .entry(mid)
                .or_default()
                .on_level(now, packet.header.ext_vals.audio_level);
            if let Some(speaking) = change {
                let level = peer.voice.get(&mid).map_or(-127, SpeakingDetector::peak);
                self.events.push_back(SfuEvent::Speaking {
                    participant: peer.participant.clone(),
                    speaking,
                    level,
                });
            }
        }
        if let std::collections::hash_map::Entry::Vacant(entry) = self.sources.entry((index, mid)) {
            // A new track is flowing: subscribers with a free m-line of its kind take it.
            entry.insert(kind);
            let subscribers: Vec<usize> = (0..self.peers.len())
                .filter(|i| self.peers[*i].as_ref().is_some_and(|p| p.leg == Leg::Subscribe))
                .collect();
            for sub in subscribers {
                let _ = self.assign_sources_to(sub);
            }
            self.rebuild_routes();
            self.request_keyframe(now, index, mid, rid);
        }
        let Some(targets) = self.routes.get(&(index, mid)).cloned() else {
            return;
        };
        let gap = if kind == MediaKind::Audio { 960 } else { 3000 };
        let mut ext_vals = ExtensionValues::default();
        ext_vals.audio_level = packet.header.ext_vals.audio_level;
        ext_vals.voice_activity = packet.header.ext_vals.voice_activity;
        ext_vals.video_orientation = packet.header.ext_vals.video_orientation;
        let switch_point = rid.is_some() && is_switch_point(&params, &packet.payload);
        let mut keyframes_wanted: Vec<Rid> = Vec::new();
        for &(sub, sub_mid) in targets.iter() {
            let Some(peer) = self.peer(sub) else { continue };
            let Some(carried) = peer.sending.get_mut(&sub_mid) else {
                continue;
            };
            // Simulcast layer selection: keep forwarding the current layer until the best
            // one's keyframe arrives, then switch (the numbering continues seamlessly).
            if let (Some(rid), Some(best)) = (rid, best) {
                if carried.layer == Some(rid) {
                    if best != rid && carried.pending != Some(best) {
                        carried.pending = Some(best);
                        keyframes_wanted.push(best);
                    }
                } else if best == rid {
                    if switch_point {
                        carried.layer = Some(rid);
                        carried.pending = None;
                        carried.renumber.restart();
                    } else {
                        if carried.pending != Some(rid) {
                            carried.pending = Some(rid);
                            keyframes_wanted.push(rid);
                        }
                        continue;
                    }
                } else {
                    continue;
                }
            }
            let out_pt = match carried.pts.iter().find(|(p, _)| *p == params.pt()) {
                Some((_, out)) => *out,
                None => {
                    let out = peer.rtc.codec_config().match_params(params).map(|p| p.pt());
                    carried.pts.push((params.pt(), out));
                    out
                }
            };
            let mapped = carried.renumber.map(*packet.seq_no, packet.header.timestamp, gap);
            let (Some(out_pt), Some((seq, time))) = (out_pt, mapped) else {
                self.stats.dropped += 1;
                continue;
            };
            let mut api = peer.rtc.direct_api();
            let Some(stream) = api.stream_tx_by_mid(sub_mid, None) else {
                self.stats.dropped += 1;
                continue;
            };
            let write = RtpWrite::new(
                out_pt,
                SeqNo::from(seq),
                time,
                packet.timestamp,
                packet.payload.clone(),
            )
            .marker(packet.header.marker)
            .ext_vals(ext_vals.clone())
            .nackable(kind == MediaKind::Video);
            stream.write_rtp(write);
            // str0m releases written RTP on a timeout: this subscriber gets one before the
            // next transmit is taken (`release_written`), once however many packets were
            // written to it meanwhile, and no timeout pass reaches the other connections.
            if !std::mem::replace(&mut peer.written, true) {
                self.written.push(sub);
            }
            self.written_at = Some(self.written_at.map_or(now, |at| at.max(now)));
            self.stats.forwarded += 1;
        }
        keyframes_wanted.dedup();
        for rid in keyframes_wanted {
            self.request_keyframe(now, index, mid, Some(rid));
        }
    }
}

impl Peer {
    /// Whether str0m's deadline or a voice detector's has passed (or is unknown).
    fn due(&self, now: Instant) -> bool {
        self.deadline.is_none_or(|d| d <= now)
            || self
                .voice
                .values()
                .filter_map(SpeakingDetector::deadline)
                .any(|d| d <= now)
    }

    /// The m-line carrying `(publisher, source)`, if any.
    fn carrying(&self, publisher: usize, source: Mid) -> Option<Mid> {
        self.sending
            .iter()
            .find(|(_, c)| c.source == (publisher, source))
            .map(|(mid, _)| *mid)
    }

    /// Puts a track on a free m-line of its kind.
    fn assign(&mut self, publisher: usize, source: Mid, kind: MediaKind) -> Option<Mid> {
        let free = self.free.iter().position(|(_, k)| *k == kind)?;
        let (mid, _) = self.free.remove(free);
        let renumber = self.parked.remove(&mid).unwrap_or_default();
        self.sending.insert(
            mid,
            Carried {
                source: (publisher, source),
                renumber,
                pts: Vec::new(),
                layer: None,
                pending: None,
            },
        );
        Some(mid)
    }

    /// A sending m-line the client offered becomes available for tracks.
    fn add_free(&mut self, mid: Mid) {
        let known = self.sending.contains_key(&mid) || self.free.iter().any(|(m, _)| *m == mid);
        if let Some(media) = self.rtc.media(mid)
            && !known
            && media.direction().is_sending()
        {
            self.free.push((mid, media.kind()));
        }
    }
}

impl crate::demux::Connections for Sfu {
    fn poll_link(&mut self) -> Option<LinkChange> {
        Sfu::poll_link(self)
    }

    fn accepts(&self, now: Instant, connection: usize, from: SocketAddr, contents: &[u8]) -> bool {
        Sfu::accepts(self, now, connection, from, contents)
    }

    fn handle_datagram(
        &mut self,
        now: Instant,
        connection: usize,
        from: SocketAddr,
        contents: &[u8],
    ) -> Result<(), SfuError> {
        Sfu::handle_datagram(self, now, connection, from, contents)
    }
}
