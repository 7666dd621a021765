//! The JSON shapes of the REST API (WIRE.md §2), as serde types with OpenAPI schemas.
//! Field names are the wire names; every response is built from storage records here.

use openchat_storage::{
    AttachmentRecord, ChannelRecord, GroupRecord, MemberRecord, MessageRecord, ProfileRecord, ReadAckRecord,
    ServerRecord,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::clock::rfc3339;

/// `/healthz` (`status` only) and `/readyz` (with the store and, in cluster mode, this
/// node and its NATS connection).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StatusDto {
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats: Option<String>,
}

/// A directory entry.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ServerDto {
    pub server_id: String,
    pub display_name: String,
    pub icon_text: String,
    /// `verified` or `unverified`.
    pub trust_state: String,
    /// `challenge_signature` or `token_proof`.
    pub identity_handshake_strategy: String,
    /// `server_scoped`, `global` or `either`.
    pub user_identifier_policy: String,
    pub description: String,
    pub banner_preset: String,
}

impl From<&ServerRecord> for ServerDto {
    fn from(server: &ServerRecord) -> Self {
        Self {
            server_id: server.id.to_string(),
            display_name: server.display_name.clone(),
            icon_text: server.icon_text.clone(),
            trust_state: server.trust_state.as_str().into(),
            identity_handshake_strategy: server.handshake_strategy.as_str().into(),
            user_identifier_policy: server.uid_policy.as_str().into(),
            description: server.description.clone(),
            banner_preset: server.banner_preset.clone(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DirectoryDto {
    pub servers: Vec<ServerDto>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateServerBody {
    pub display_name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub banner_preset: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClaimTokenDto {
    pub token: String,
    pub expires_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ServerCreatedDto {
    pub server: ServerDto,
    pub created_by_uid: String,
    pub created_at: String,
    pub ownership_claim: ClaimTokenDto,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ClaimBody {
    pub claim_token: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClaimDto {
    pub server_id: String,
    pub owner_user_uid: String,
    pub claimed_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LeaveDto {
    pub server_id: String,
    pub user_uid: String,
    pub left: bool,
    pub left_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SettingsDto {
    pub server_id: String,
    pub display_name: String,
    pub description: String,
    pub banner_preset: String,
}

impl From<&ServerRecord> for SettingsDto {
    fn from(server: &ServerRecord) -> Self {
        Self {
            server_id: server.id.to_string(),
            display_name: server.display_name.clone(),
            description: server.description.clone(),
            banner_preset: server.banner_preset.clone(),
        }
    }
}

/// `PUT .../settings`; an absent field keeps its value.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SettingsBody {
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub banner_preset: Option<String>,
}

/// Settings after a change; also the `chat.server.updated` event payload.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SettingsUpdatedDto {
    #[serde(flatten)]
    pub settings: SettingsDto,
    pub updated_by_uid: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChannelDto {
    pub id: String,
    pub name: String,
    /// `text` or `voice`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Present (true) on end-to-end-encrypted channels, with their current epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e2ee: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_epoch: Option<i64>,
    /// The caller's unread messages (present when the caller's identity is known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unread_count: Option<i64>,
    /// Of those, the ones that mention the caller (present when the identity is known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mention_count: Option<i64>,
}

impl From<&ChannelRecord> for ChannelDto {
    fn from(channel: &ChannelRecord) -> Self {
        Self {
            id: channel.id.to_string(),
            name: channel.name.clone(),
            kind: channel.kind.as_str().into(),
            e2ee: channel.e2ee.map(|_| true),
            current_epoch: channel.e2ee,
            unread_count: None,
            mention_count: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupDto {
    pub id: String,
    pub label: String,
    /// `text` or `voice`.
    pub kind: String,
    pub channels: Vec<ChannelDto>,
}

impl From<&GroupRecord> for GroupDto {
    fn from(group: &GroupRecord) -> Self {
        Self {
            id: group.id.to_string(),
            label: group.label.clone(),
            kind: group.kind.as_str().into(),
            channels: group.channels.iter().map(ChannelDto::from).collect(),
        }
    }
}

pub fn groups(layout: &[GroupRecord]) -> Vec<GroupDto> {
    layout.iter().map(GroupDto::from).collect()
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LayoutDto {
    pub server_id: String,
    pub groups: Vec<GroupDto>,
}

/// A changed layout; also the `chat.channel.layout.updated` event payload.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LayoutChangedDto {
    pub server_id: String,
    pub groups: Vec<GroupDto>,
    pub updated_by_uid: String,
    pub updated_at: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateChannelBody {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub group_id: String,
    /// An end-to-end-encrypted text channel (E2EE.md).
    #[serde(default)]
    pub e2ee: bool,
}

/// A created channel; also the `chat.channel.created` event payload.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChannelCreatedDto {
    pub server_id: String,
    pub group_id: String,
    pub channel: ChannelDto,
    pub created_by_uid: String,
    pub created_at: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateCategoryBody {
    pub name: String,
    pub kind: String,
}

/// A created category; also the `chat.category.created` event payload.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CategoryCreatedDto {
    pub server_id: String,
    pub group: GroupDto,
    pub created_by_uid: String,
    pub created_at: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RenameCategoryBody {
    pub name: String,
}

/// A renamed category; also the `chat.category.updated` event payload.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CategoryUpdatedDto {
    pub server_id: String,
    pub group: GroupDto,
    pub updated_by_uid: String,
    pub updated_at: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LayoutGroupBody {
    pub id: String,
    pub channel_ids: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LayoutBody {
    pub groups: Vec<LayoutGroupBody>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MemberDto {
    pub id: String,
    pub name: String,
    /// `online`, `idle` or `dnd`.
    pub status: String,
}

impl From<&MemberRecord> for MemberDto {
    fn from(member: &MemberRecord) -> Self {
        Self {
            id: member.id.to_string(),
            name: member.name.clone(),
            status: member.status.as_str().into(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MembersDto {
    pub server_id: String,
    pub members: Vec<MemberDto>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttachmentDto {
    pub attachment_id: String,
    pub file_name: String,
    /// Absolute, built from `OPENCHAT_PUBLIC_BASE_URL`.
    pub url: String,
    pub width: i64,
    pub height: i64,
    pub content_type: String,
    pub bytes: i64,
}

impl AttachmentDto {
    pub fn new(base_url: &str, attachment: &AttachmentRecord) -> Self {
        Self {
            attachment_id: attachment.id.to_string(),
            file_name: attachment.file_name.clone(),
            url: format!(
                "{base_url}/v1/channels/{}/attachments/{}",
                attachment.channel_id, attachment.id
            ),
            width: attachment.width,
            height: attachment.height,
            content_type: attachment.content_type.clone(),
            bytes: attachment.bytes,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReplyDto {
    pub message_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author_uid: Option<String>,
    /// Go puts the author's uid here; so do we.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author_display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview_text: Option<String>,
    pub is_unavailable: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MessageDto {
    pub id: String,
    pub channel_id: String,
    pub author_uid: String,
    /// Absent in an e2ee channel, which carries `envelope` instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envelope: Option<EnvelopeDto>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<ReplyDto>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub attachments: Vec<AttachmentDto>,
    /// Mentions in `body`, with UTF-16 ranges (WIRE.md §2.4); omitted when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub mentions: Vec<MessageMentionDto>,
}

/// A mention inside a message body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MessageMentionDto {
    /// `user` or `channel`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text in the body (`@Lyra`, `@here`, `#design`).
    pub token: String,
    /// A user's uid, or the channel's id.
    pub target_id: String,
    pub display_text: String,
    pub range: MentionRangeDto,
}

/// UTF-16 code-unit offsets into the body, `[start, end)`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub struct MentionRangeDto {
    pub start: u32,
    pub end: u32,
}

impl MessageDto {
    pub fn new(base_url: &str, message: &MessageRecord) -> Self {
        Self {
            id: message.id.to_string(),
            channel_id: message.channel_id.to_string(),
            author_uid: message.author_uid.to_string(),
            body: message.envelope.is_none().then(|| message.body.clone()),
            envelope: message.envelope.as_ref().map(|e| EnvelopeDto {
                epoch_id: e.epoch_id,
                sender_device_id: e.sender_device_id.clone(),
                ciphertext: e.ciphertext.clone(),
                nonce: e.nonce.clone(),
                aad: e.aad.clone(),
            }),
            created_at: rfc3339(message.created_at),
            reply_to: message.reply_to.as_ref().map(|reply| ReplyDto {
                message_id: reply.message_id.to_string(),
                author_uid: reply.author_uid.as_ref().map(ToString::to_string),
                author_display_name: reply.author_uid.as_ref().map(ToString::to_string),
                preview_text: reply.preview.clone(),
                is_unavailable: reply.unavailable,
            }),
            attachments: message
                .attachments
                .iter()
                .map(|a| AttachmentDto::new(base_url, a))
                .collect(),
            mentions: message
                .mentions
                .iter()
                .map(|m| MessageMentionDto {
                    kind: m.kind.as_str().to_owned(),
                    token: m.token.clone(),
                    target_id: m.target_id.clone(),
                    display_text: m.display_text.clone(),
                    range: MentionRangeDto {
                        start: m.start,
                        end: m.end,
                    },
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MessagesDto {
    pub channel_id: String,
    pub messages: Vec<MessageDto>,
    /// Pass as `before` for the next older page; null at the start of the channel.
    pub next_cursor: Option<String>,
}

/// A created message; also the `chat.message.created` event payload.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MessageCreatedDto {
    pub message: MessageDto,
}

/// `POST .../messages` as JSON (the multipart form has the same text fields).
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateMessageBody {
    #[serde(default)]
    pub body: Option<String>,
    pub reply_to_message_id: Option<String>,
    /// For an e2ee channel (E2EE.md), instead of `body`.
    #[serde(default)]
    pub envelope: Option<EnvelopeDto>,
}

/// An e2ee message's encrypted content (base64url fields; opaque to the server).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnvelopeDto {
    #[serde(deserialize_with = "whole_number")]
    pub epoch_id: i64,
    pub sender_device_id: String,
    pub ciphertext: String,
    #[serde(default)]
    pub nonce: String,
    #[serde(default)]
    pub aad: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MentionDto {
    /// `user` or `channel`.
    #[serde(rename = "type")]
    pub kind: String,
    pub token: String,
    pub target_id: String,
    pub display_text: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MentionsDto {
    pub results: Vec<MentionDto>,
}

/// A read marker; also the flat `chat.read_ack.updated` event payload.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReadAckDto {
    pub channel_id: String,
    pub user_uid: String,
    pub last_read_message_id: Option<String>,
    pub acked_at: Option<String>,
    pub cursor_index: i64,
}

impl From<&ReadAckRecord> for ReadAckDto {
    fn from(ack: &ReadAckRecord) -> Self {
        Self {
            channel_id: ack.channel_id.to_string(),
            user_uid: ack.user_uid.to_string(),
            last_read_message_id: ack.last_read_message_id.as_ref().map(ToString::to_string),
            acked_at: Some(rfc3339(ack.acked_at)),
            cursor_index: ack.cursor_index,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReadAckEnvelopeDto {
    pub channel_id: String,
    pub read_ack: ReadAckDto,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReadAckPutDto {
    pub channel_id: String,
    pub read_ack: ReadAckDto,
    /// False when the ack was stale; `read_ack` is then the stored, newer one.
    pub applied: bool,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ReadAckBody {
    pub last_read_message_id: Option<String>,
}

/// A profile; every key is always present. Also the flat `profile_updated` event payload.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProfileDto {
    pub user_uid: String,
    pub display_name: String,
    /// `generated` or `uploaded`.
    pub avatar_mode: String,
    pub avatar_preset_id: Option<String>,
    pub avatar_asset_id: Option<String>,
    pub avatar_url: Option<String>,
    pub profile_version: i64,
    pub updated_at: String,
}

impl ProfileDto {
    pub fn new(base_url: &str, profile: &ProfileRecord) -> Self {
        Self {
            user_uid: profile.user_uid.to_string(),
            display_name: profile.display_name.clone(),
            avatar_mode: profile.avatar_mode.as_str().into(),
            avatar_preset_id: profile.avatar_preset_id.clone(),
            avatar_asset_id: profile.avatar_asset_id.as_ref().map(ToString::to_string),
            avatar_url: profile
                .avatar_asset_id
                .as_ref()
                .map(|id| format!("{base_url}/v1/profile/avatar/{id}")),
            profile_version: profile.profile_version,
            updated_at: rfc3339(profile.updated_at),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProfilesDto {
    pub profiles: Vec<ProfileDto>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ProfileBody {
    pub display_name: String,
    pub avatar_mode: String,
    pub avatar_preset_id: Option<String>,
    pub avatar_asset_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AvatarDto {
    pub avatar_asset_id: String,
    pub avatar_url: String,
    pub width: i64,
    pub height: i64,
    pub content_type: String,
    pub bytes: i64,
}

/// The largest integer a JSON number carries exactly through a double (2^53 - 1): integer
/// fields of request bodies are refused beyond it, so JavaScript clients and the server agree.
pub const SAFE_INTEGER_MAX: i64 = (1 << 53) - 1;

/// Reads an integer field that JSON may spell `282` or `282.0` (JSON Schema's "integer"
/// allows both), within ±[`SAFE_INTEGER_MAX`].
pub fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    use serde::de::Error;
    let number = serde_json::Number::deserialize(deserializer)?;
    let value = if let Some(int) = number.as_i64() {
        Some(int)
    } else {
        number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() <= SAFE_INTEGER_MAX as f64)
            .map(|f| f as i64)
    };
    match value {
        Some(value) if value.abs() <= SAFE_INTEGER_MAX => Ok(value),
        _ => Err(D::Error::custom(format!(
            "{number} is not a whole number within ±{SAFE_INTEGER_MAX}"
        ))),
    }
}
