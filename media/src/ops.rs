//! A byte-driven sequence of room operations with the room's invariants checked after each:
//! the fuzz target `room_ops` runs it on arbitrary bytes, and a normal test replays the
//! committed corpus through it.
//!
//! Each operation takes three bytes: the operation, the participant, the time step.

use std::collections::HashSet;

use openchat_core::ticket::Permissions;
use serde_json::{Map, Value, json};

use crate::room::{LeaveReason, ParticipantId, ParticipantInfo, Room, RoomCommand, RoomOutput};

/// Participants one fuzzed room may hold.
pub const OPS_ROOM_PARTICIPANTS_MAX: usize = 6;

const STREAM_KINDS: [Option<&str>; 5] = [
    None,
    Some("audio_microphone"),
    Some("video_camera"),
    Some("video_screen"),
    Some("audio_file_chunks"),
];

fn participant(who: u8, id_salt: u8) -> ParticipantInfo {
    ParticipantInfo {
        id: ParticipantId(format!("p{who}_{}", id_salt % 3)),
        server_id: "srv_fuzz".into(),
        user_uid: format!("uid_{}", who % 5),
        device_id: format!("d{}", who % 2),
        permissions: Permissions {
            speak: who & 1 == 0,
            video: who & 2 == 0,
            screenshare: who & 4 == 0,
        },
    }
}

/// Runs the operations encoded in `data`; panics if an invariant breaks.
pub fn run(data: &[u8]) {
    let mut room = Room::new("vc_fuzz", OPS_ROOM_PARTICIPANTS_MAX);
    // The media clock is not used by these commands; the wall clock advances per step.
    let start = std::time::Instant::now();
    let mut now = 0;
    for op in data.chunks(3) {
        let (code, who, step) = (
            op[0],
            op.get(1).copied().unwrap_or(0) % 16,
            op.get(2).copied().unwrap_or(0),
        );
        now += i64::from(step % 4);
        let id = ParticipantId(format!("p{who}_{}", step % 3));
        let command = match code % 6 {
            0 | 5 => RoomCommand::Join {
                participant: participant(who, step),
                request_id: Some(format!("join_{code}")),
            },
            1 => RoomCommand::Leave {
                participant: id,
                reason: [LeaveReason::Left, LeaveReason::Replaced, LeaveReason::TooSlow]
                    [usize::from(step % 3)],
            },
            2 => {
                let mut payload = Map::new();
                payload.insert("seq".into(), json!(step));
                RoomCommand::MediaState {
                    from: id,
                    stream_kind: STREAM_KINDS[usize::from(code % 5)].map(str::to_owned),
                    payload,
                    request_id: None,
                }
            }
            3 => RoomCommand::Relay {
                from: id,
                kind: "rtc.offer".into(),
                target: (step & 1 == 1).then(|| format!("p{}_{}", step % 16, code % 3)),
                payload: Map::new(),
                request_id: Some("r".into()),
            },
            _ => RoomCommand::Ping {
                from: id,
                request_id: None,
            },
        };
        let before: HashSet<ParticipantId> = room.participant_ids().cloned().collect();
        let _ = room.handle_command(crate::room::Now::new(start, now), command);
        let after: HashSet<ParticipantId> = room.participant_ids().cloned().collect();
        assert!(room.len() <= OPS_ROOM_PARTICIPANTS_MAX, "room over its limit");
        assert_eq!(after.len(), room.len(), "participant ids are unique");
        while let Some(output) = room.poll_output() {
            match output {
                RoomOutput::Send { to, frame } => {
                    assert!(
                        before.contains(&to) || after.contains(&to),
                        "a frame for a stranger"
                    );
                    let value: Value = serde_json::from_str(&frame).expect("frames are JSON");
                    assert!(value["type"].as_str().is_some_and(|t| t.starts_with("rtc.")));
                    assert_eq!(value["channel_id"], "vc_fuzz");
                }
                RoomOutput::Close { to, .. } => assert!(before.contains(&to), "closing a stranger"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_operation_kind_runs() {
        let ops: Vec<u8> = (0u8..=255)
            .flat_map(|i| [i, i.wrapping_mul(7), i.wrapping_mul(13)])
            .collect();
        super::run(&ops);
        super::run(&[]);
        super::run(&[0]);
    }
}
