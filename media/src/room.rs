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
use openchat_core::ticket::Permissions;
use serde_json::{Map, Value, json};

/// A participant id (a UUID v4 string chosen by the front-end).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(pub String);

impl std::fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
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

/// Why a participant leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    /// `rtc.leave` or the socket closed.
    Left,
    /// A new join by the same user and device replaced it.
    Replaced,
    /// Its send queue stayed full too long.
    TooSlow,
}

impl LeaveReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaveReason::Left => "left",
            LeaveReason::Replaced => "replaced",
            LeaveReason::TooSlow => "too_slow",
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
        }
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
        code: &str,
        message: &str,
        retryable: bool,
    ) {
        let frame = self.frame(
            "rtc.error",
            request_id,
            json!({"code": code, "message": message, "retryable": retryable}),
        );
        self.send_to(to, frame);
    }

    fn position(&self, id: &ParticipantId) -> Option<usize> {
        self.participants.iter().position(|p| p.info.id == *id)
    }

    fn remove(&mut self, id: &ParticipantId, reason: LeaveReason) -> Result<(), RoomError> {
        let index = self.position(id).ok_or(RoomError::NotInRoom)?;
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

    /// Applies one command at time `now`; its effects are queued for [`Room::poll_output`].
    pub fn handle_command(&mut self, now: UnixSeconds, command: RoomCommand) -> Result<(), RoomError> {
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
                Ok(())
            }
            RoomCommand::Leave { participant, reason } => self.remove(&participant, reason),
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
                        "rtc_media_denied",
                        &format!("not permitted to send {kind}"),
                        false,
                    );
                    return Ok(());
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
                                "rtc_target_not_found",
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

#[cfg(test)]
mod tests {
    use super::*;

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
            10,
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
    fn a_full_room_refuses_joins() {
        let mut room = Room::new("vc_1", 1);
        join(&mut room, "p1", "uid_1");
        let refused = room.handle_command(
            1,
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
            1,
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
            2,
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
            3,
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
        room.handle_command(1, relay(Some("p2"))).unwrap();
        let out = drain(&mut room);
        assert_eq!(
            (
                out[0].0.as_str(),
                out[0].1["payload"]["from_participant_id"].as_str()
            ),
            ("p2", Some("p1"))
        );
        room.handle_command(1, relay(Some("ghost"))).unwrap();
        let out = drain(&mut room);
        assert_eq!(
            (out[0].0.as_str(), out[0].1["payload"]["code"].as_str()),
            ("p1", Some("rtc_target_not_found"))
        );
        assert_eq!(out[0].1["payload"]["retryable"], true);
    }

    #[test]
    fn timestamps_are_rfc3339_utc_seconds() {
        assert_eq!(rfc3339(1_771_094_651), "2026-02-14T18:44:11Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
