//! The wire parsers: pure functions from the bytes of one inbound WebSocket message to a
//! validated message, for the RTC signaling socket (WIRE.md §5) and the realtime chat socket
//! (§4). No I/O and no async behind them, so they are cheap to fuzz (`fuzz/`).
//!
//! Envelopes are `{"type", "request_id"?, "channel_id"?, "payload"?}`. Unknown types are a
//! [`WireError::UnknownType`] (answered `rtc_unknown_event` / `chat_unknown_event`); a known
//! type with a bad field is a [`WireError::BadField`] naming the message and the field.

use serde_json::{Map, Value};

use crate::ids::{ChannelId, IdError};

/// Largest signaling message (WIRE.md §5.2: 1 MiB read limit).
pub const SIGNALING_MESSAGE_BYTES_MAX: usize = 1 << 20;
/// Largest realtime chat message.
pub const CHAT_MESSAGE_BYTES_MAX: usize = 64 * 1024;
/// Longest `request_id` kept and echoed.
pub const REQUEST_ID_BYTES_MAX: usize = 128;

/// Why bytes are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message exceeds {0} bytes")]
    TooLarge(usize),
    #[error("message is not a JSON object")]
    NotAnObject,
    #[error("message has no string \"type\"")]
    MissingType,
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("{kind}: field {field:?} is missing or invalid")]
    BadField { kind: &'static str, field: &'static str },
}

/// A parsed envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<T> {
    /// The client's request id, echoed in the answer (at most [`REQUEST_ID_BYTES_MAX`]).
    pub request_id: Option<String>,
    /// The channel the client says the message is about (signaling sets it on everything).
    pub channel_id: Option<String>,
    pub message: T,
}

/// Which of the client's two PeerConnections a description or candidate belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Publish,
    Subscribe,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Publish => "publish",
            Direction::Subscribe => "subscribe",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        match raw {
            "publish" => Some(Direction::Publish),
            "subscribe" => Some(Direction::Subscribe),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DescriptionKind {
    Offer,
    Answer,
}

/// A client -> server signaling message.
#[derive(Debug, Clone, PartialEq)]
pub enum SignalingMessage {
    /// `rtc.join {"ticket"}`.
    Join { ticket: String },
    /// `rtc.offer[.publish|.subscribe]` / `rtc.answer[...]`: an SDP with its direction
    /// (from the type name, or the payload's `direction`), and the legacy relay target.
    Description {
        kind: DescriptionKind,
        direction: Option<Direction>,
        sdp: String,
        target: Option<String>,
        payload: Map<String, Value>,
    },
    /// `rtc.ice.candidate`.
    IceCandidate {
        direction: Option<Direction>,
        target: Option<String>,
        payload: Map<String, Value>,
    },
    /// `rtc.media.state`: relayed intact; `stream_kind` decides the permission needed.
    MediaState {
        stream_kind: Option<String>,
        payload: Map<String, Value>,
    },
    /// `rtc.leave {"reason"?}`.
    Leave { reason: Option<String> },
    /// `rtc.ping`.
    Ping,
}

/// A client -> server realtime chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatMessage {
    Subscribe {
        channel: ChannelId,
    },
    /// An empty or invalid channel is ignored (as Go does), hence the `Option`.
    Unsubscribe {
        channel: Option<ChannelId>,
    },
    Typing {
        channel: Option<ChannelId>,
        is_typing: bool,
    },
    Ping,
}

struct Raw {
    kind: String,
    request_id: Option<String>,
    channel_id: Option<String>,
    payload: Map<String, Value>,
}

fn raw(bytes: &[u8], limit: usize) -> Result<Raw, WireError> {
    if bytes.len() > limit {
        return Err(WireError::TooLarge(limit));
    }
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(bytes) else {
        return Err(WireError::NotAnObject);
    };
    let kind = match object.remove("type") {
        Some(Value::String(kind)) => kind,
        _ => return Err(WireError::MissingType),
    };
    let request_id = match object.remove("request_id") {
        Some(Value::String(id)) if !id.is_empty() => {
            Some(id.chars().take(REQUEST_ID_BYTES_MAX).collect::<String>())
        }
        _ => None,
    };
    let request_id = request_id.filter(|id| id.len() <= REQUEST_ID_BYTES_MAX);
    let channel_id = match object.remove("channel_id") {
        Some(Value::String(id)) if !id.is_empty() => Some(id),
        _ => None,
    };
    let payload = match object.remove("payload") {
        Some(Value::Object(payload)) => payload,
        _ => Map::new(),
    };
    Ok(Raw {
        kind,
        request_id,
        channel_id,
        payload,
    })
}

fn string<'a>(payload: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    payload.get(key).and_then(Value::as_str)
}

fn target(payload: &Map<String, Value>) -> Option<String> {
    string(payload, "target_participant_id")
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

/// Parses one signaling message.
pub fn parse_signaling(bytes: &[u8]) -> Result<Envelope<SignalingMessage>, WireError> {
    let Raw {
        kind,
        request_id,
        channel_id,
        payload,
    } = raw(bytes, SIGNALING_MESSAGE_BYTES_MAX)?;
    let description = |kind_name: &'static str, kind: DescriptionKind, named: Option<Direction>| {
        let direction = named.or_else(|| string(&payload, "direction").and_then(Direction::parse));
        let sdp = string(&payload, "sdp").filter(|sdp| !sdp.is_empty());
        let sdp = sdp.ok_or(WireError::BadField {
            kind: kind_name,
            field: "sdp",
        })?;
        Ok(SignalingMessage::Description {
            kind,
            direction,
            sdp: sdp.to_owned(),
            target: target(&payload),
            payload: payload.clone(),
        })
    };
    let message = match kind.as_str() {
        "rtc.join" => {
            let ticket = string(&payload, "ticket").filter(|t| !t.is_empty());
            let ticket = ticket.ok_or(WireError::BadField {
                kind: "rtc.join",
                field: "ticket",
            })?;
            SignalingMessage::Join {
                ticket: ticket.to_owned(),
            }
        }
        "rtc.offer" => description("rtc.offer", DescriptionKind::Offer, None)?,
        "rtc.offer.publish" => description(
            "rtc.offer.publish",
            DescriptionKind::Offer,
            Some(Direction::Publish),
        )?,
        "rtc.offer.subscribe" => description(
            "rtc.offer.subscribe",
            DescriptionKind::Offer,
            Some(Direction::Subscribe),
        )?,
        "rtc.answer" => description("rtc.answer", DescriptionKind::Answer, None)?,
        "rtc.answer.publish" => description(
            "rtc.answer.publish",
            DescriptionKind::Answer,
            Some(Direction::Publish),
        )?,
        "rtc.answer.subscribe" => description(
            "rtc.answer.subscribe",
            DescriptionKind::Answer,
            Some(Direction::Subscribe),
        )?,
        "rtc.ice.candidate" => {
            if !payload.contains_key("candidate") {
                return Err(WireError::BadField {
                    kind: "rtc.ice.candidate",
                    field: "candidate",
                });
            }
            let direction = string(&payload, "direction").and_then(Direction::parse);
            SignalingMessage::IceCandidate {
                direction,
                target: target(&payload),
                payload,
            }
        }
        "rtc.media.state" => {
            let stream_kind = string(&payload, "stream_kind")
                .filter(|k| !k.is_empty())
                .map(str::to_owned);
            SignalingMessage::MediaState { stream_kind, payload }
        }
        "rtc.leave" => SignalingMessage::Leave {
            reason: string(&payload, "reason").map(str::to_owned),
        },
        "rtc.ping" => SignalingMessage::Ping,
        _ => return Err(WireError::UnknownType(kind.chars().take(64).collect())),
    };
    Ok(Envelope {
        request_id,
        channel_id,
        message,
    })
}

fn channel(payload: &Map<String, Value>) -> Result<ChannelId, IdError> {
    ChannelId::parse(string(payload, "channel_id").map(str::trim).unwrap_or(""))
}

/// Parses one realtime chat message.
pub fn parse_chat(bytes: &[u8]) -> Result<Envelope<ChatMessage>, WireError> {
    let Raw {
        kind,
        request_id,
        channel_id,
        payload,
    } = raw(bytes, CHAT_MESSAGE_BYTES_MAX)?;
    let message = match kind.as_str() {
        "chat.subscribe" => ChatMessage::Subscribe {
            channel: channel(&payload).map_err(|_| WireError::BadField {
                kind: "chat.subscribe",
                field: "channel_id",
            })?,
        },
        "chat.unsubscribe" => ChatMessage::Unsubscribe {
            channel: channel(&payload).ok(),
        },
        "chat.typing.update" => ChatMessage::Typing {
            channel: channel(&payload).ok(),
            is_typing: payload.get("is_typing").and_then(Value::as_bool).unwrap_or(false),
        },
        "chat.ping" => ChatMessage::Ping,
        _ => return Err(WireError::UnknownType(kind.chars().take(64).collect())),
    };
    Ok(Envelope {
        request_id,
        channel_id,
        message,
    })
}

/// The `code` of every `rtc.error` frame the server sends (WIRE.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RtcErrorCode {
    /// The first message was not a valid `rtc.join`, or its ticket was refused.
    JoinDenied,
    /// The room holds as many participants as allowed.
    RoomFull,
    /// The voice room did not answer.
    Unavailable,
    /// The voice room failed and was dropped; rejoin.
    RoomFailed,
    /// The participant may not send that kind of media.
    MediaDenied,
    /// An offer could not be answered.
    NegotiationFailed,
    /// The legacy targeted relay named a participant not in the room.
    TargetNotFound,
    /// A message of a type the server does not take.
    UnknownEvent,
}

impl RtcErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JoinDenied => "rtc_join_denied",
            Self::RoomFull => "rtc_room_full",
            Self::Unavailable => "rtc_unavailable",
            Self::RoomFailed => "rtc_room_failed",
            Self::MediaDenied => "rtc_media_denied",
            Self::NegotiationFailed => "rtc_negotiation_failed",
            Self::TargetNotFound => "rtc_target_not_found",
            Self::UnknownEvent => "rtc_unknown_event",
        }
    }
}

/// An `rtc.error` frame, the one place one is built:
/// `{"type": "rtc.error", "channel_id"?, "request_id"?, "payload": {"code", "message", "retryable"}}`.
pub fn rtc_error(
    code: RtcErrorCode,
    message: &str,
    retryable: bool,
    request_id: Option<&str>,
    channel_id: Option<&str>,
) -> String {
    let mut envelope = serde_json::json!({
        "type": "rtc.error",
        "payload": {"code": code.as_str(), "message": message, "retryable": retryable},
    });
    if let Some(request_id) = request_id {
        envelope["request_id"] = Value::from(request_id);
    }
    if let Some(channel_id) = channel_id {
        envelope["channel_id"] = Value::from(channel_id);
    }
    envelope.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signaling_messages_of_the_client_parse() {
        let join =
            parse_signaling(br#"{"type":"rtc.join","request_id":"join_1","payload":{"ticket":"abc.def"}}"#)
                .unwrap();
        assert_eq!(join.request_id.as_deref(), Some("join_1"));
        assert_eq!(
            join.message,
            SignalingMessage::Join {
                ticket: "abc.def".into()
            }
        );
        let offer = parse_signaling(
            br#"{"type":"rtc.offer.publish","channel_id":"vc_1","payload":{"type":"offer","sdp":"v=0","direction":"publish"}}"#,
        )
        .unwrap();
        assert!(matches!(
            offer.message,
            SignalingMessage::Description {
                kind: DescriptionKind::Offer,
                direction: Some(Direction::Publish),
                ..
            }
        ));
        assert_eq!(offer.channel_id.as_deref(), Some("vc_1"));
        let legacy = parse_signaling(
            br#"{"type":"rtc.offer","payload":{"target_participant_id":"p2","description_type":"offer","sdp":"v=0"}}"#,
        )
        .unwrap();
        assert!(
            matches!(legacy.message, SignalingMessage::Description { target: Some(ref t), direction: None, .. } if t == "p2")
        );
        let media = parse_signaling(
            br#"{"type":"rtc.media.state","payload":{"stream_kind":"audio_file_chunks","seq":3}}"#,
        )
        .unwrap();
        assert!(
            matches!(media.message, SignalingMessage::MediaState { stream_kind: Some(ref k), .. } if k == "audio_file_chunks")
        );
        let ice = parse_signaling(
            br#"{"type":"rtc.ice.candidate","payload":{"candidate":"candidate:1","direction":"subscribe"}}"#,
        )
        .unwrap();
        assert!(matches!(
            ice.message,
            SignalingMessage::IceCandidate {
                direction: Some(Direction::Subscribe),
                ..
            }
        ));
        assert_eq!(
            parse_signaling(br#"{"type":"rtc.leave"}"#).unwrap().message,
            SignalingMessage::Leave { reason: None }
        );
    }

    #[test]
    fn malformed_signaling_is_a_typed_error() {
        assert_eq!(parse_signaling(b"not json"), Err(WireError::NotAnObject));
        assert_eq!(parse_signaling(b"[1]"), Err(WireError::NotAnObject));
        assert_eq!(parse_signaling(br#"{"payload":{}}"#), Err(WireError::MissingType));
        assert_eq!(
            parse_signaling(br#"{"type":"rtc.dance"}"#),
            Err(WireError::UnknownType("rtc.dance".into()))
        );
        assert_eq!(
            parse_signaling(br#"{"type":"rtc.join","payload":{"ticket":""}}"#),
            Err(WireError::BadField {
                kind: "rtc.join",
                field: "ticket"
            })
        );
        assert_eq!(
            parse_signaling(br#"{"type":"rtc.offer.publish","payload":{}}"#),
            Err(WireError::BadField {
                kind: "rtc.offer.publish",
                field: "sdp"
            })
        );
        assert_eq!(
            parse_signaling(&vec![b' '; SIGNALING_MESSAGE_BYTES_MAX + 1]),
            Err(WireError::TooLarge(SIGNALING_MESSAGE_BYTES_MAX))
        );
        let long_id = format!(r#"{{"type":"rtc.ping","request_id":"{}"}}"#, "r".repeat(500));
        assert_eq!(
            parse_signaling(long_id.as_bytes())
                .unwrap()
                .request_id
                .unwrap()
                .len(),
            REQUEST_ID_BYTES_MAX
        );
    }

    #[test]
    fn chat_messages_parse_with_go_semantics_for_empty_channels() {
        let sub = parse_chat(
            br#"{"type":"chat.subscribe","request_id":"sub_1","payload":{"channel_id":"ch_general"}}"#,
        )
        .unwrap();
        assert_eq!(
            sub.message,
            ChatMessage::Subscribe {
                channel: ChannelId::parse("ch_general").unwrap()
            }
        );
        assert_eq!(
            parse_chat(br#"{"type":"chat.subscribe","payload":{"channel_id":""}}"#),
            Err(WireError::BadField {
                kind: "chat.subscribe",
                field: "channel_id"
            })
        );
        assert_eq!(
            parse_chat(br#"{"type":"chat.unsubscribe"}"#).unwrap().message,
            ChatMessage::Unsubscribe { channel: None }
        );
        let typing =
            parse_chat(br#"{"type":"chat.typing.update","payload":{"channel_id":"ch_a","is_typing":true}}"#)
                .unwrap();
        assert_eq!(
            typing.message,
            ChatMessage::Typing {
                channel: Some(ChannelId::parse("ch_a").unwrap()),
                is_typing: true
            }
        );
        assert!(matches!(
            parse_chat(br#"{"type":"chat.dance"}"#),
            Err(WireError::UnknownType(_))
        ));
    }

    #[test]
    fn rtc_error_frames_carry_code_message_retryable_and_the_optional_ids() {
        let frame: Value = serde_json::from_str(&rtc_error(
            RtcErrorCode::RoomFull,
            "full (8)",
            true,
            Some("r1"),
            Some("vc_a"),
        ))
        .unwrap();
        assert_eq!(frame["type"], "rtc.error");
        assert_eq!(frame["payload"]["code"], "rtc_room_full");
        assert_eq!(frame["payload"]["message"], "full (8)");
        assert_eq!(frame["payload"]["retryable"], true);
        assert_eq!(
            (frame["request_id"].as_str(), frame["channel_id"].as_str()),
            (Some("r1"), Some("vc_a"))
        );
        let bare: Value =
            serde_json::from_str(&rtc_error(RtcErrorCode::JoinDenied, "no", false, None, None)).unwrap();
        assert!(bare.get("request_id").is_none() && bare.get("channel_id").is_none());
    }
}
