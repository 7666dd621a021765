//! The room: a sans-IO state machine for one voice channel.
//!
//! It never touches sockets, clocks or executors: the shard calls
//! [`Room::handle_command`] with the time and a command, then drains [`Room::poll_output`]
//! until it returns `None`, and carries each output out (frames to participants' queues,
//! closes). Frames are the JSON envelopes of WIRE.md §5, built once and shared (`Arc<str>`)
//! by every recipient.

use std::collections::VecDeque;
use std::sync::Arc;

use openchat_core::UnixSeconds;
use openchat_core::protocol::{RtcErrorCode, rtc_error};
use openchat_core::ticket::Permissions;
use serde_json::{Map, Value, json};

pub use crate::participant::{Leg, ParticipantId};

/// The time a room step runs at, read once by the caller's I/O loop: the monotonic instant
/// the media state machines run on, and the wall-clock second frames are stamped with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub instant: std::time::Instant,
    pub unix: UnixSeconds,
}

impl Now {
    pub fn new(instant: std::time::Instant, unix: UnixSeconds) -> Self {
        Self { instant, unix }
    }

    /// `self`, `by` later (both clocks).
    pub fn later(self, by: std::time::Duration) -> Self {
        Self {
            instant: self.instant + by,
            unix: self.unix + by.as_secs() as UnixSeconds,
        }
    }
}

/// Who joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantInfo {
    pub id: ParticipantId,
    pub server_id: String,
    pub user_uid: String,
    pub device_id: String,
    pub permissions: Permissions,
}

/// One JSON text frame, shared by all its recipients.
pub type Frame = Arc<str>;

/// Track kinds remembered per room from `rtc.media.state` before their tracks are offered.
pub const STREAM_KINDS_REMEMBERED_MAX: usize = 1024;

/// A track a participant publishes, as announced with `rtc.track.published`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    pub owner: ParticipantId,
    /// The publisher's m-line carrying it.
    pub mid: String,
    pub track_id: String,
    pub stream_id: String,
    /// `audio` or `video`.
    pub media_kind: &'static str,
    /// `audio_microphone`, `video_camera`, `video_screen`, ... (from `rtc.media.state`).
    pub stream_kind: String,
}

/// A sending m-line of an offer: its kind and its `a=msid:<stream> <track>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedTrack {
    pub mid: String,
    pub media_kind: &'static str,
    pub stream_id: String,
    pub track_id: String,
}

/// One m-line section while an SDP is read.
struct Section {
    media_kind: &'static str,
    mid: String,
    msid: Option<(String, String)>,
    sending: bool,
}

impl Section {
    fn finish(self, out: &mut Vec<OfferedTrack>) {
        if let (Some((stream_id, track_id)), true, false) =
            (self.msid, self.sending, self.media_kind == "other")
        {
            out.push(OfferedTrack {
                mid: self.mid,
                media_kind: self.media_kind,
                stream_id,
                track_id,
            });
        }
    }
}

/// The tracks an offer sends (m-lines that are `sendonly`/`sendrecv` with an `a=msid`).
pub fn offered_tracks(sdp: &str) -> Vec<OfferedTrack> {
    let mut tracks = Vec::new();
    let mut current: Option<Section> = None;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(rest) = line.strip_prefix("m=") {
            if let Some(section) = current.take() {
                section.finish(&mut tracks);
            }
            let media_kind = match rest.split_whitespace().next() {
                Some("audio") => "audio",
                Some("video") => "video",
                _ => "other",
            };
            // Without a direction attribute an m-line is sendrecv (RFC 4566).
            current = Some(Section {
                media_kind,
                mid: String::new(),
                msid: None,
                sending: true,
            });
        } else if let Some(section) = current.as_mut() {
            if let Some(value) = line.strip_prefix("a=mid:") {
                section.mid = value.to_owned();
            } else if let Some(value) = line.strip_prefix("a=msid:") {
                let mut parts = value.split_whitespace();
                if let (Some(stream), Some(track)) = (parts.next(), parts.next()) {
                    section.msid = Some((stream.to_owned(), track.to_owned()));
                }
            } else if line == "a=recvonly" || line == "a=inactive" {
                section.sending = false;
            }
        }
    }
    if let Some(section) = current.take() {
        section.finish(&mut tracks);
    }
    tracks
}

/// Why a participant leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    /// `rtc.leave` or the socket closed.
    Left,
    /// A new join by the same user and device replaced it.
    Replaced,
    /// Its send queue stayed full too long.
    TooSlow,
    /// The server is shutting down (SIGTERM): everyone leaves at once.
    ServerShutdown,
}

impl LeaveReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaveReason::Left => "left",
            LeaveReason::Replaced => "replaced",
            LeaveReason::TooSlow => "too_slow",
            LeaveReason::ServerShutdown => "server_shutdown",
        }
    }
}

/// A command for a room.
#[derive(Debug, Clone, PartialEq)]
pub enum RoomCommand {
    Join {
        participant: ParticipantInfo,
        request_id: Option<String>,
    },
    Leave {
        participant: ParticipantId,
        reason: LeaveReason,
    },
    /// `rtc.media.state`, relayed to the whole room (sender included) when permitted.
    MediaState {
        from: ParticipantId,
        stream_kind: Option<String>,
        payload: Map<String, Value>,
        request_id: Option<String>,
    },
    /// A legacy relayed signaling message (`rtc.offer`, `rtc.answer.*`, `rtc.ice.candidate`):
    /// to `target`, or to everyone else without one.
    Relay {
        from: ParticipantId,
        kind: String,
        target: Option<String>,
        payload: Map<String, Value>,
        request_id: Option<String>,
    },
    /// `rtc.ping`.
    Ping {
        from: ParticipantId,
        request_id: Option<String>,
    },
    /// `rtc.offer.publish` / `rtc.offer.subscribe` for the SFU.
    Offer {
        from: ParticipantId,
        leg: Leg,
        sdp: String,
        request_id: Option<String>,
        /// The local address the participant's signaling connection arrived on: advertised
        /// as the media candidate's IP unless the shard has a fixed public IP.
        signaling_ip: Option<std::net::IpAddr>,
    },
    /// `rtc.ice.candidate` with a `direction` and no target: a trickled candidate for one of
    /// the participant's SFU connections.
    Candidate {
        from: ParticipantId,
        leg: Leg,
        candidate: String,
    },
    /// The server is going away: every participant is told that every other one left, then
    /// every connection is closed.
    Shutdown,
}

/// What the shard must do.
#[derive(Debug, Clone, PartialEq)]
pub enum RoomOutput {
    /// Queue `frame` for `to`.
    Send { to: ParticipantId, frame: Frame },
    /// Close `to`'s connection (after the frames already queued for it).
    Close { to: ParticipantId, reason: LeaveReason },
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    #[error("the room is full ({0} participants)")]
    Full(usize),
    #[error("participant is not in the room")]
    NotInRoom,
}

#[derive(Debug, Clone)]
struct Participant {
    info: ParticipantInfo,
    joined_at: UnixSeconds,
}

/// One voice channel's room.
#[derive(Debug)]
pub struct Room {
    channel_id: String,
    participants_max: usize,
    /// In join order.
    participants: Vec<Participant>,
    outputs: VecDeque<RoomOutput>,
    /// Published tracks, in publication order.
    tracks: Vec<Track>,
    /// `track_id -> stream_kind` learnt from `rtc.media.state` (it may precede the offer).
    stream_kinds: std::collections::HashMap<String, String>,
    /// The WebRTC forwarding core, when the shard has a media socket.
    #[cfg(feature = "sfu")]
    sfu: Option<crate::sfu::Sfu>,
    /// Whether the SFU's candidate IP is fixed (`OPENCHAT_MEDIA_PUBLIC_IP`) rather than the
    /// signaling address of each participant.
    #[cfg(feature = "sfu")]
    fixed_media_ip: bool,
    /// Offers the SFU could not answer (for `/metrics`).
    negotiation_errors: u64,
}

fn rfc3339(at: UnixSeconds) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(at.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// The permission a media state needs, by its `stream_kind` (WIRE.md §5.3 point 6).
pub fn media_permission(stream_kind: Option<&str>, permissions: Permissions) -> bool {
    match stream_kind {
        Some("video_camera") => permissions.video,
        Some("video_screen") => permissions.screenshare,
        Some(kind) if kind.starts_with("audio") => permissions.speak,
        _ => true,
    }
}

impl Room {
    pub fn new(channel_id: impl Into<String>, participants_max: usize) -> Self {
        Self {
            channel_id: channel_id.into(),
            participants_max,
            participants: Vec::new(),
            outputs: VecDeque::new(),
            tracks: Vec::new(),
            stream_kinds: std::collections::HashMap::new(),
            #[cfg(feature = "sfu")]
            sfu: None,
            #[cfg(feature = "sfu")]
            fixed_media_ip: false,
            negotiation_errors: 0,
        }
    }

    /// A room whose media goes through the SFU, advertising `media_addr` as its ICE-lite
    /// host candidate; unless `fixed_ip`, each participant's candidate carries the IP its
    /// signaling arrived on instead (same port).
    #[cfg(feature = "sfu")]
    pub fn with_media(
        channel_id: impl Into<String>,
        participants_max: usize,
        media_addr: std::net::SocketAddr,
        fixed_ip: bool,
    ) -> Self {
        let mut room = Self::new(channel_id, participants_max);
        room.sfu = Some(crate::sfu::Sfu::new(media_addr).with_participants_max(participants_max));
        room.fixed_media_ip = fixed_ip;
        room
    }

    /// Offers the SFU refused so far.
    pub fn negotiation_errors(&self) -> u64 {
        self.negotiation_errors
    }

    /// The tracks published in the room.
    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    fn track_frame(&self, kind: &str, track: &Track) -> Frame {
        let owner = self.participants.iter().find(|p| p.info.id == track.owner);
        self.frame(
            kind,
            None,
            json!({
                "participant_id": track.owner.0,
                "track_id": track.track_id,
                "media_kind": track.media_kind,
                "stream_id": track.stream_id,
                "stream_kind": track.stream_kind,
                "user_uid": owner.map(|p| p.info.user_uid.as_str()),
                "device_id": owner.map(|p| p.info.device_id.as_str()),
            }),
        )
    }

    /// Replaces a publisher's track list, announcing what appeared and what went away.
    fn set_tracks(&mut self, owner: &ParticipantId, offered: Vec<OfferedTrack>) {
        let old: Vec<Track> = self
            .tracks
            .iter()
            .filter(|t| t.owner == *owner)
            .cloned()
            .collect();
        for gone in old
            .iter()
            .filter(|t| !offered.iter().any(|o| o.track_id == t.track_id))
        {
            let frame = self.track_frame("rtc.track.unpublished", gone);
            self.broadcast(&frame, Some(owner));
            self.tracks
                .retain(|t| !(t.owner == *owner && t.track_id == gone.track_id));
        }
        for new in offered
            .iter()
            .filter(|o| !old.iter().any(|t| t.track_id == o.track_id))
        {
            let stream_kind = self.stream_kinds.get(&new.track_id).cloned().unwrap_or_else(|| {
                if new.media_kind == "audio" {
                    "audio_microphone".into()
                } else {
                    "video_camera".into()
                }
            });
            let track = Track {
                owner: owner.clone(),
                mid: new.mid.clone(),
                track_id: new.track_id.clone(),
                stream_id: new.stream_id.clone(),
                media_kind: new.media_kind,
                stream_kind,
            };
            let frame = self.track_frame("rtc.track.published", &track);
            self.broadcast(&frame, Some(owner));
            self.tracks.push(track);
        }
    }

    /// Answers an offer through the SFU.
    fn offer(
        &mut self,
        from: ParticipantId,
        leg: Leg,
        sdp: String,
        request_id: Option<String>,
        at: std::time::Instant,
        signaling_ip: Option<std::net::IpAddr>,
    ) -> Result<(), RoomError> {
        let index = self.position(&from).ok_or(RoomError::NotInRoom)?;
        let permissions = self.participants[index].info.permissions;
        let rid = request_id.as_deref();
        let offered = if leg == Leg::Publish {
            offered_tracks(&sdp)
        } else {
            Vec::new()
        };
        for track in &offered {
            let kind = self.stream_kinds.get(&track.track_id).map(String::as_str);
            let allowed = match (track.media_kind, kind) {
                ("audio", _) => permissions.speak,
                (_, Some("video_screen")) => permissions.screenshare,
                (_, Some("video_camera")) => permissions.video,
                _ => permissions.video || permissions.screenshare,
            };
            if !allowed {
                let message = format!(
                    "not permitted to publish {} track {}",
                    track.media_kind, track.track_id
                );
                self.error(&from, rid, RtcErrorCode::MediaDenied, &message, false);
                return Ok(());
            }
        }
        #[cfg(feature = "sfu")]
        if let Some(sfu) = self.sfu.as_mut() {
            let routes: Vec<crate::sfu::Route<'_>> = self
                .tracks
                .iter()
                .map(|t| crate::sfu::Route {
                    owner: &t.owner,
                    mid: &t.mid,
                    media_kind: t.media_kind,
                    stream_id: &t.stream_id,
                    track_id: &t.track_id,
                })
                .collect();
            let advertise = if self.fixed_media_ip {
                None
            } else {
                signaling_ip.map(|ip| ip.to_canonical())
            };
            match sfu.accept_offer(at, &from, leg, &sdp, &routes, advertise) {
                Ok(answer) => {
                    let kind = format!("rtc.answer.{}", leg.as_str());
                    let frame = self.frame(
                        &kind,
                        rid,
                        json!({"type": "answer", "sdp": answer.sdp, "direction": leg.as_str()}),
                    );
                    self.send_to(&from, frame);
                    // Trickle the server's candidate too (it is also in the answer).
                    for candidate in &answer.candidates {
                        let frame = self.frame(
                            "rtc.ice.candidate",
                            None,
                            json!({"candidate": candidate, "direction": leg.as_str(), "sdp_mid": answer.first_mid, "sdp_mline_index": 0}),
                        );
                        self.send_to(&from, frame);
                    }
                    // More tracks than offered m-lines, within the receive policy: ask the
                    // client for a new subscribe offer with more transceivers.
                    let caps = [
                        openchat_core::limits::SUBSCRIBE_AUDIO_TRACKS_MAX,
                        openchat_core::limits::SUBSCRIBE_VIDEO_TRACKS_MAX,
                    ];
                    let short = (0..2).any(|k| answer.unfitted[k] > 0 && answer.carried[k] < caps[k]);
                    if leg == Leg::Subscribe && short {
                        let refresh = self.frame(
                            "rtc.subscribe.refresh",
                            None,
                            json!({"reason": "more_tracks_than_m_lines"}),
                        );
                        self.send_to(&from, refresh);
                    }
                    if leg == Leg::Publish {
                        self.set_tracks(&from, offered);
                    }
                }
                Err(err) => {
                    self.negotiation_errors += 1;
                    self.error(
                        &from,
                        rid,
                        RtcErrorCode::NegotiationFailed,
                        &err.to_string(),
                        false,
                    );
                }
            }
            return Ok(());
        }
        let _ = (at, sdp, offered, signaling_ip);
        self.error(
            &from,
            rid,
            RtcErrorCode::NegotiationFailed,
            "this room has no media path",
            false,
        );
        Ok(())
    }

    pub fn channel_id(&self) -> &str {
        &self.channel_id
    }

    pub fn is_empty(&self) -> bool {
        self.participants.is_empty()
    }

    pub fn len(&self) -> usize {
        self.participants.len()
    }

    pub fn participant_ids(&self) -> impl Iterator<Item = &ParticipantId> {
        self.participants.iter().map(|p| &p.info.id)
    }

    /// The next thing to do, in order; drain until `None` after every command.
    pub fn poll_output(&mut self) -> Option<RoomOutput> {
        self.outputs.pop_front()
    }

    fn frame(&self, kind: &str, request_id: Option<&str>, payload: Value) -> Frame {
        let mut envelope = json!({"type": kind, "channel_id": self.channel_id, "payload": payload});
        if let Some(request_id) = request_id {
            envelope["request_id"] = json!(request_id);
        }
        Arc::from(envelope.to_string())
    }

    fn summary(&self, participant: &Participant) -> Value {
        json!({
            "participant_id": participant.info.id.0,
            "channel_id": self.channel_id,
            "user_uid": participant.info.user_uid,
            "device_id": participant.info.device_id,
            "permissions": participant.info.permissions,
            "joined_at": rfc3339(participant.joined_at),
        })
    }

    fn send_to(&mut self, to: &ParticipantId, frame: Frame) {
        self.outputs.push_back(RoomOutput::Send {
            to: to.clone(),
            frame,
        });
    }

    fn broadcast(&mut self, frame: &Frame, except: Option<&ParticipantId>) {
        let targets: Vec<ParticipantId> = self
            .participant_ids()
            .filter(|id| Some(*id) != except)
            .cloned()
            .collect();
        for to in targets {
            self.send_to(&to, frame.clone());
        }
    }

    fn error(
        &mut self,
        to: &ParticipantId,
        request_id: Option<&str>,
        code: RtcErrorCode,
        message: &str,
        retryable: bool,
    ) {
        let frame = rtc_error(code, message, retryable, request_id, Some(&self.channel_id));
        self.send_to(to, Arc::from(frame));
    }

    fn position(&self, id: &ParticipantId) -> Option<usize> {
        self.participants.iter().position(|p| p.info.id == *id)
    }

    fn remove(&mut self, id: &ParticipantId, reason: LeaveReason) -> Result<(), RoomError> {
        let index = self.position(id).ok_or(RoomError::NotInRoom)?;
        self.set_tracks(id, Vec::new());
        #[cfg(feature = "sfu")]
        if let Some(sfu) = self.sfu.as_mut() {
            sfu.remove(id);
        }
        let gone = self.participants.remove(index);
        let frame = self.frame(
            "rtc.participant.left",
            None,
            json!({"participant": {"participant_id": gone.info.id.0, "user_uid": gone.info.user_uid}, "reason": reason.as_str()}),
        );
        self.broadcast(&frame, None);
        if reason != LeaveReason::Left {
            self.outputs.push_back(RoomOutput::Close {
                to: gone.info.id,
                reason,
            });
        }
        Ok(())
    }

    /// Empties the room: each participant hears that each other one left (so every client
    /// sees the call end, whichever order the sockets close in), then all are closed.
    fn shut_down(&mut self) {
        let reason = LeaveReason::ServerShutdown;
        let everyone: Vec<(ParticipantId, String)> = self
            .participants
            .iter()
            .map(|p| (p.info.id.clone(), p.info.user_uid.clone()))
            .collect();
        for (to, _) in &everyone {
            for (gone, user_uid) in everyone.iter().filter(|(id, _)| id != to) {
                let frame = self.frame(
                    "rtc.participant.left",
                    None,
                    json!({"participant": {"participant_id": gone.0, "user_uid": user_uid}, "reason": reason.as_str()}),
                );
                self.send_to(to, frame);
            }
        }
        for (id, _) in everyone {
            self.set_tracks(&id, Vec::new());
            #[cfg(feature = "sfu")]
            if let Some(sfu) = self.sfu.as_mut() {
                sfu.remove(&id);
            }
            self.participants.retain(|p| p.info.id != id);
            self.outputs.push_back(RoomOutput::Close { to: id, reason });
        }
    }

    /// Applies one command at time `now`; its effects are queued for [`Room::poll_output`].
    pub fn handle_command(&mut self, now: Now, command: RoomCommand) -> Result<(), RoomError> {
        let Now { instant, unix: now } = now;
        match command {
            RoomCommand::Join {
                participant,
                request_id,
            } => {
                // A new join by the same user and device replaces the old participant.
                let previous = self
                    .participants
                    .iter()
                    .find(|p| {
                        p.info.user_uid == participant.user_uid && p.info.device_id == participant.device_id
                    })
                    .map(|p| p.info.id.clone());
                if let Some(previous) = previous {
                    self.remove(&previous, LeaveReason::Replaced)?;
                }
                if self.participants.len() >= self.participants_max {
                    return Err(RoomError::Full(self.participants_max));
                }
                let joined = Participant {
                    info: participant,
                    joined_at: now,
                };
                let others: Vec<Value> = self.participants.iter().map(|p| self.summary(p)).collect();
                let summary = self.summary(&joined);
                let welcome = self.frame(
                    "rtc.joined",
                    request_id.as_deref(),
                    json!({"participant_id": joined.info.id.0, "channel_id": self.channel_id, "participants": others, "joined_at": rfc3339(now)}),
                );
                let announce = self.frame("rtc.participant.joined", None, json!({"participant": summary}));
                let id = joined.info.id.clone();
                self.broadcast(&announce, None);
                self.participants.push(joined);
                self.send_to(&id, welcome);
                // The newcomer learns every track already published.
                let existing: Vec<Frame> = self
                    .tracks
                    .iter()
                    .map(|t| self.track_frame("rtc.track.published", t))
                    .collect();
                for frame in existing {
                    self.send_to(&id, frame);
                }
                Ok(())
            }
            RoomCommand::Leave { participant, reason } => self.remove(&participant, reason),
            RoomCommand::Shutdown => {
                self.shut_down();
                Ok(())
            }
            RoomCommand::Offer {
                from,
                leg,
                sdp,
                request_id,
                signaling_ip,
            } => self.offer(from, leg, sdp, request_id, instant, signaling_ip),
            RoomCommand::Candidate { from, leg, candidate } => {
                self.position(&from).ok_or(RoomError::NotInRoom)?;
                #[cfg(feature = "sfu")]
                if let Some(sfu) = self.sfu.as_mut()
                    && let Err(err) = sfu.add_remote_candidate(&from, leg, &candidate)
                {
                    // Trickling is an optimisation for an ICE-lite server: a bad or surplus
                    // candidate is dropped, never a fatal error for the client.
                    tracing::debug!(participant = %from, error = %err, "remote candidate ignored");
                }
                let _ = (leg, candidate);
                Ok(())
            }
            RoomCommand::MediaState {
                from,
                stream_kind,
                mut payload,
                request_id,
            } => {
                let index = self.position(&from).ok_or(RoomError::NotInRoom)?;
                let sender = self.participants[index].info.clone();
                if !media_permission(stream_kind.as_deref(), sender.permissions) {
                    let kind = stream_kind.unwrap_or_default();
                    self.error(
                        &from,
                        request_id.as_deref(),
                        RtcErrorCode::MediaDenied,
                        &format!("not permitted to send {kind}"),
                        false,
                    );
                    return Ok(());
                }
                // Learn the track's kind (the client tells screen from camera only by this); a
                // published track whose kind changes is announced again.
                if let (Some(track_id), Some(kind)) = (
                    payload.get("track_id").and_then(Value::as_str),
                    stream_kind.as_deref(),
                ) && !track_id.is_empty()
                {
                    if self.stream_kinds.len() < STREAM_KINDS_REMEMBERED_MAX
                        || self.stream_kinds.contains_key(track_id)
                    {
                        self.stream_kinds.insert(track_id.to_owned(), kind.to_owned());
                    }
                    let changed = self
                        .tracks
                        .iter_mut()
                        .find(|t| t.owner == from && t.track_id == track_id && t.stream_kind != kind)
                        .map(|t| {
                            t.stream_kind = kind.to_owned();
                            t.clone()
                        });
                    if let Some(track) = changed {
                        let frame = self.track_frame("rtc.track.published", &track);
                        self.broadcast(&frame, Some(&from));
                    }
                }
                payload.insert("participant_id".into(), json!(sender.id.0));
                payload.insert("user_uid".into(), json!(sender.user_uid));
                let frame = self.frame("rtc.media.state", request_id.as_deref(), Value::Object(payload));
                self.broadcast(&frame, None);
                Ok(())
            }
            RoomCommand::Relay {
                from,
                kind,
                target,
                mut payload,
                request_id,
            } => {
                self.position(&from).ok_or(RoomError::NotInRoom)?;
                payload.insert("from_participant_id".into(), json!(from.0));
                let frame = self.frame(&kind, request_id.as_deref(), Value::Object(payload));
                match target {
                    Some(target) => {
                        let target = ParticipantId(target);
                        if self.position(&target).is_some() {
                            self.send_to(&target, frame);
                        } else {
                            self.error(
                                &from,
                                request_id.as_deref(),
                                RtcErrorCode::TargetNotFound,
                                "target participant is not in the room",
                                true,
                            );
                        }
                    }
                    None => self.broadcast(&frame, Some(&from)),
                }
                Ok(())
            }
            RoomCommand::Ping { from, request_id } => {
                self.position(&from).ok_or(RoomError::NotInRoom)?;
                let frame = self.frame("rtc.pong", request_id.as_deref(), json!({"ts": rfc3339(now)}));
                self.send_to(&from, frame);
                Ok(())
            }
        }
    }
}

/// The media path of a room (with the `sfu` feature): datagrams, timeouts, transmits.
#[cfg(feature = "sfu")]
impl Room {
    pub fn has_media(&self) -> bool {
        self.sfu.is_some()
    }

    /// Whether this room's connection `connection` takes a datagram from `from`.
    pub fn accepts_datagram(
        &self,
        now: std::time::Instant,
        connection: usize,
        from: std::net::SocketAddr,
        contents: &[u8],
    ) -> bool {
        self.sfu
            .as_ref()
            .is_some_and(|sfu| sfu.accepts(now, connection, from, contents))
    }

    /// One datagram for this room's connection `connection` (the shard's demultiplexer
    /// found it); an error concerns that connection only.
    pub fn handle_datagram(
        &mut self,
        now: std::time::Instant,
        connection: usize,
        from: std::net::SocketAddr,
        contents: &[u8],
    ) -> Result<(), crate::sfu::SfuError> {
        let result = match self.sfu.as_mut() {
            Some(sfu) => sfu.handle_datagram(now, connection, from, contents),
            None => Err(crate::sfu::SfuError::UnknownPeer),
        };
        self.take_sfu_events();
        result
    }

    /// The next media connection opened or closed, for the shard's demultiplexer.
    pub fn poll_link(&mut self) -> Option<crate::sfu::LinkChange> {
        self.sfu.as_mut()?.poll_link()
    }

    pub fn handle_timeout(&mut self, now: std::time::Instant) {
        if let Some(sfu) = self.sfu.as_mut() {
            sfu.handle_timeout(now);
        }
        self.take_sfu_events();
    }

    /// The forwarding counters (zero without a media path).
    pub fn media_stats(&self) -> crate::sfu::SfuStats {
        self.sfu.as_ref().map(crate::sfu::Sfu::stats).unwrap_or_default()
    }

    /// Turns the SFU's events into frames: `rtc.speaking` to the whole room.
    fn take_sfu_events(&mut self) {
        while let Some(event) = self.sfu.as_mut().and_then(crate::sfu::Sfu::poll_event) {
            match event {
                crate::sfu::SfuEvent::Speaking {
                    participant,
                    speaking,
                    level,
                } => {
                    let Some(index) = self.position(&participant) else {
                        continue;
                    };
                    let user_uid = self.participants[index].info.user_uid.clone();
                    let frame = self.frame(
                        "rtc.speaking",
                        None,
                        json!({"participant_id": participant.0, "user_uid": user_uid, "speaking": speaking, "audio_level_dbov": level}),
                    );
                    self.broadcast(&frame, None);
                }
            }
        }
    }

    pub fn poll_transmit(&mut self) -> Option<crate::sfu::Transmit> {
        self.sfu.as_mut()?.poll_transmit()
    }

    pub fn poll_timeout(&mut self, now: std::time::Instant) -> Option<std::time::Instant> {
        self.sfu.as_mut().map(|sfu| sfu.poll_timeout(now))
    }
}

#[cfg(feature = "sfu")]
impl crate::demux::Connections for Room {
    fn poll_link(&mut self) -> Option<crate::sfu::LinkChange> {
        Room::poll_link(self)
    }

    fn accepts(
        &self,
        now: std::time::Instant,
        connection: usize,
        from: std::net::SocketAddr,
        contents: &[u8],
    ) -> bool {
        self.accepts_datagram(now, connection, from, contents)
    }

    fn handle_datagram(
        &mut self,
        now: std::time::Instant,
        connection: usize,
        from: std::net::SocketAddr,
        contents: &[u8],
    ) -> Result<(), crate::sfu::SfuError> {
        Room::handle_datagram(self, now, connection, from, contents)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step at wall-clock second `unix`.
    fn at(unix: UnixSeconds) -> Now {
        Now::new(std::time::Instant::now(), unix)
    }

    fn info(id: &str, user: &str, device: &str, permissions: Permissions) -> ParticipantInfo {
        ParticipantInfo {
            id: ParticipantId(id.into()),
            server_id: "srv_harbor".into(),
            user_uid: user.into(),
            device_id: device.into(),
            permissions,
        }
    }

    fn drain(room: &mut Room) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        while let Some(output) = room.poll_output() {
            match output {
                RoomOutput::Send { to, frame } => out.push((to.0, serde_json::from_str(&frame).unwrap())),
                RoomOutput::Close { to, reason } => out.push((to.0, json!({"close": reason.as_str()}))),
            }
        }
        out
    }

    fn join(room: &mut Room, id: &str, user: &str) -> Vec<(String, Value)> {
        room.handle_command(
            at(10),
            RoomCommand::Join {
                participant: info(id, user, "d", Permissions::ALL),
                request_id: Some(format!("join_{id}")),
            },
        )
        .unwrap();
        drain(room)
    }

    #[test]
    fn joiners_see_the_others_and_the_others_see_the_joiner() {
        let mut room = Room::new("vc_1", 10);
        let out = join(&mut room, "p1", "uid_1");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1["type"], "rtc.joined");
        assert_eq!(out[0].1["request_id"], "join_p1");
        assert_eq!(out[0].1["payload"]["participants"], json!([]));
        let out = join(&mut room, "p2", "uid_2");
        assert_eq!(out[0], ("p1".into(), out[0].1.clone()));
        assert_eq!(out[0].1["type"], "rtc.participant.joined");
        assert_eq!(out[0].1["payload"]["participant"]["participant_id"], "p2");
        assert_eq!(out[1].0, "p2");
        assert_eq!(out[1].1["payload"]["participants"][0]["participant_id"], "p1");
        assert_eq!(
            out[1].1["payload"]["participants"][0]["joined_at"],
            "1970-01-01T00:00:10Z"
        );
    }

    #[test]
    fn a_rejoin_by_the_same_user_and_device_evicts_the_old_participant() {
        let mut room = Room::new("vc_1", 10);
        join(&mut room, "p1", "uid_1");
        join(&mut room, "p2", "uid_2");
        let out = join(&mut room, "p1b", "uid_1");
        let left: Vec<&(String, Value)> = out
            .iter()
            .filter(|(_, v)| v["type"] == "rtc.participant.left")
            .collect();
        assert_eq!(left.len(), 1, "the other participant sees the old one leave");
        assert_eq!(left[0].0, "p2");
        assert!(out.iter().any(|(to, v)| to == "p1" && v["close"] == "replaced"));
        assert_eq!(room.len(), 2);
    }

    #[test]
    fn a_shutdown_tells_everyone_who_left_then_closes_everyone() {
        let mut room = Room::new("vc_1", 10);
        for (id, user) in [("p1", "uid_1"), ("p2", "uid_2"), ("p3", "uid_3")] {
            join(&mut room, id, user);
        }
        room.handle_command(at(20), RoomCommand::Shutdown).unwrap();
        let out = drain(&mut room);
        for me in ["p1", "p2", "p3"] {
            let mut heard: Vec<&str> = out
                .iter()
                .filter(|(to, v)| to == me && v["type"] == "rtc.participant.left")
                .map(|(_, v)| v["payload"]["participant"]["participant_id"].as_str().unwrap())
                .collect();
            heard.sort_unstable();
            let others: Vec<&str> = ["p1", "p2", "p3"].into_iter().filter(|p| *p != me).collect();
            assert_eq!(heard, others, "{me}");
            // The close comes after every frame for that participant.
            let close = out
                .iter()
                .position(|(to, v)| to == me && v["close"] == "server_shutdown");
            let last_frame = out
                .iter()
                .rposition(|(to, v)| to == me && v.get("close").is_none());
            assert!(close > last_frame, "{me}: {out:?}");
        }
        assert!(room.is_empty());
    }

    #[test]
    fn a_full_room_refuses_joins() {
        let mut room = Room::new("vc_1", 1);
        join(&mut room, "p1", "uid_1");
        let refused = room.handle_command(
            at(1),
            RoomCommand::Join {
                participant: info("p2", "uid_2", "d", Permissions::ALL),
                request_id: None,
            },
        );
        assert_eq!(refused, Err(RoomError::Full(1)));
    }

    #[test]
    fn media_state_goes_to_everyone_with_sender_ids_unless_denied() {
        let mut room = Room::new("vc_1", 10);
        let silent = Permissions {
            speak: false,
            video: true,
            screenshare: false,
        };
        room.handle_command(
            at(1),
            RoomCommand::Join {
                participant: info("p1", "uid_1", "d", silent),
                request_id: None,
            },
        )
        .unwrap();
        join(&mut room, "p2", "uid_2");
        drain(&mut room);
        let mut payload = Map::new();
        payload.insert("seq".into(), json!(7));
        room.handle_command(
            at(2),
            RoomCommand::MediaState {
                from: ParticipantId("p2".into()),
                stream_kind: Some("audio_file_chunks".into()),
                payload: payload.clone(),
                request_id: Some("m1".into()),
            },
        )
        .unwrap();
        let out = drain(&mut room);
        assert_eq!(out.len(), 2);
        for (_, frame) in &out {
            assert_eq!(
                (
                    frame["payload"]["participant_id"].as_str(),
                    frame["payload"]["seq"].as_i64()
                ),
                (Some("p2"), Some(7))
            );
        }
        room.handle_command(
            at(3),
            RoomCommand::MediaState {
                from: ParticipantId("p1".into()),
                stream_kind: Some("audio_microphone".into()),
                payload,
                request_id: Some("m2".into()),
            },
        )
        .unwrap();
        let out = drain(&mut room);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].0.as_str(), out[0].1["payload"]["code"].as_str()),
            ("p1", Some("rtc_media_denied"))
        );
        assert!(!media_permission(Some("video_screen"), silent));
        assert!(media_permission(Some("video_camera"), silent));
    }

    #[test]
    fn relays_go_to_their_target_or_report_it_missing() {
        let mut room = Room::new("vc_1", 10);
        join(&mut room, "p1", "uid_1");
        join(&mut room, "p2", "uid_2");
        drain(&mut room);
        let relay = |target: Option<&str>| RoomCommand::Relay {
            from: ParticipantId("p1".into()),
            kind: "rtc.offer".into(),
            target: target.map(str::to_owned),
            payload: Map::new(),
            request_id: None,
        };
        room.handle_command(at(1), relay(Some("p2"))).unwrap();
        let out = drain(&mut room);
        assert_eq!(
            (
                out[0].0.as_str(),
                out[0].1["payload"]["from_participant_id"].as_str()
            ),
            ("p2", Some("p1"))
        );
        room.handle_command(at(1), relay(Some("ghost"))).unwrap();
        let out = drain(&mut room);
        assert_eq!(
            (out[0].0.as_str(), out[0].1["payload"]["code"].as_str()),
            ("p1", Some("rtc_target_not_found"))
        );
        assert_eq!(out[0].1["payload"]["retryable"], true);
    }

    #[test]
    fn offered_tracks_are_the_sending_m_lines_with_msid() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\na=msid:streamA trackA\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=msid:streamA trackV\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=recvonly\r\na=msid:- x\r\n\
                   m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:3\r\n";
        let tracks = offered_tracks(sdp);
        assert_eq!(tracks.len(), 2);
        assert_eq!(
            (
                tracks[0].mid.as_str(),
                tracks[0].media_kind,
                tracks[0].track_id.as_str()
            ),
            ("0", "audio", "trackA")
        );
        assert_eq!(
            (tracks[1].media_kind, tracks[1].stream_id.as_str()),
            ("video", "streamA")
        );
        assert!(offered_tracks("garbage").is_empty());
    }

    #[test]
    fn timestamps_are_rfc3339_utc_seconds() {
        assert_eq!(rfc3339(1_771_094_651), "2026-02-14T18:44:11Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
