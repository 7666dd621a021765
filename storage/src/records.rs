//! What the storage thread hands back: plain owned records, no database types.

use openchat_core::{
    AssetId, AttachmentId, ChannelId, ChannelKind, GroupId, HandshakeStrategy, MemberId, MemberStatus,
    MessageId, ServerId, TrustState, UidPolicy, UnixSeconds, UserUid,
};

/// A server (community) with its directory fields and settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRecord {
    pub id: ServerId,
    pub display_name: String,
    pub description: String,
    pub banner_preset: String,
    pub icon_text: String,
    pub trust_state: TrustState,
    pub handshake_strategy: HandshakeStrategy,
    pub uid_policy: UidPolicy,
    /// The user who claimed ownership, if anyone has.
    pub owner_uid: Option<UserUid>,
    pub created_at: UnixSeconds,
    pub updated_by_uid: Option<UserUid>,
    pub updated_at: UnixSeconds,
}

/// A channel group with its channels, both in display order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    pub id: GroupId,
    pub label: String,
    pub kind: ChannelKind,
    pub channels: Vec<ChannelRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRecord {
    pub id: ChannelId,
    pub name: String,
    pub kind: ChannelKind,
    /// For an end-to-end-encrypted channel, its current epoch.
    pub e2ee: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    pub id: MemberId,
    pub name: String,
    pub status: MemberStatus,
}

/// Who this instance is: the capabilities `server_name` and `server_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    /// The instance's own name, when one was set (the seed sets "OpenChat Harbor").
    pub name: Option<String>,
    /// The primary community: the one recorded as primary, else the first server created.
    pub primary_server: Option<ServerRecord>,
}

/// A channel with the server and group it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    pub id: ChannelId,
    pub server_id: ServerId,
    pub group_id: GroupId,
    pub name: String,
    pub kind: ChannelKind,
    pub e2ee: bool,
}

/// A message as the history and the realtime events show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    pub id: MessageId,
    pub channel_id: ChannelId,
    pub server_id: ServerId,
    pub author_uid: UserUid,
    pub body: String,
    pub created_at: UnixSeconds,
    pub reply_to: Option<ReplyRecord>,
    pub attachments: Vec<AttachmentRecord>,
    /// In an e2ee channel: the encrypted content (`body` is empty).
    pub envelope: Option<crate::e2ee::Envelope>,
    /// Mentions found in the body when it was posted, in body order.
    pub mentions: Vec<openchat_core::mention::Mention>,
}

/// What a reply shows of its target. `unavailable` when the target was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyRecord {
    pub message_id: MessageId,
    pub author_uid: Option<UserUid>,
    pub preview: Option<String>,
    pub unavailable: bool,
}

/// An image attached to a message; its bytes are the blob named by `sha256`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentRecord {
    pub id: AttachmentId,
    pub channel_id: ChannelId,
    pub file_name: String,
    pub content_type: String,
    pub bytes: i64,
    pub width: i64,
    pub height: i64,
    pub sha256: String,
}

/// One page of history, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessagePage {
    pub channel: ChannelInfo,
    pub messages: Vec<MessageRecord>,
    /// The sequence number to pass as `before` for the next older page; `None` at the start.
    pub older_cursor: Option<i64>,
}

/// Which part of a channel's history to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: usize,
    /// Only messages older than this sequence number (newest of those first).
    pub before: Option<i64>,
    /// Only messages newer than this sequence number (oldest of those first).
    pub after: Option<i64>,
}

/// A message to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub id: MessageId,
    pub channel: ChannelId,
    pub author: UserUid,
    pub body: String,
    pub reply_to: Option<MessageId>,
    pub attachments: Vec<AttachmentRecord>,
    /// In an e2ee channel: the encrypted content instead of `body`.
    pub envelope: Option<crate::e2ee::Envelope>,
    pub now: UnixSeconds,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadAckRecord {
    pub channel_id: ChannelId,
    pub user_uid: UserUid,
    pub last_read_message_id: Option<MessageId>,
    pub cursor_index: i64,
    pub acked_at: UnixSeconds,
}

/// A user profile (WIRE.md §2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileRecord {
    pub user_uid: UserUid,
    pub display_name: String,
    pub avatar_mode: AvatarMode,
    pub avatar_preset_id: Option<String>,
    pub avatar_asset_id: Option<AssetId>,
    pub profile_version: i64,
    pub updated_at: UnixSeconds,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AvatarMode {
    Generated,
    Uploaded,
}

impl AvatarMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AvatarMode::Generated => "generated",
            AvatarMode::Uploaded => "uploaded",
        }
    }
}

/// A profile change; the avatar is either a preset or an uploaded asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileUpdate {
    pub user_uid: UserUid,
    /// The `If-Match` version, when the client sent one.
    pub expected_version: Option<i64>,
    pub display_name: String,
    pub avatar: Avatar,
    pub now: UnixSeconds,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Avatar {
    Preset(String),
    Uploaded(AssetId),
}

/// An uploaded avatar image; its bytes are the blob named by `sha256`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvatarRecord {
    pub id: AssetId,
    pub content_type: String,
    pub bytes: i64,
    pub width: i64,
    pub height: i64,
    pub sha256: String,
    pub uploaded_by: UserUid,
    pub created_at: UnixSeconds,
}

/// A reader's counts for one channel of the channel list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelCounts {
    pub channel_id: ChannelId,
    /// Live messages by others after the reader's read marker.
    pub unread: i64,
    /// Of those, the ones that mention the reader (by name or uid, or `@here`/`@channel`/`@everyone`).
    pub mentions: i64,
}

/// A mention candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MentionRecord {
    /// `user` or `channel`.
    pub kind: &'static str,
    pub token: String,
    pub target_id: String,
    pub display_text: String,
}

/// A server to create, with the hash of its ownership claim token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewServer {
    pub id: ServerId,
    pub display_name: String,
    pub description: String,
    pub banner_preset: String,
    pub icon_text: String,
    pub created_by: UserUid,
    pub claim_token_sha256: String,
    pub claim_expires_at: UnixSeconds,
    /// Ids for the starter layout: a text group with one channel, a voice group with one.
    pub starter_ids: StarterIds,
    pub now: UnixSeconds,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StarterIds {
    pub text_group: GroupId,
    pub text_channel: ChannelId,
    pub voice_group: GroupId,
    pub voice_channel: ChannelId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRecord {
    pub server_id: ServerId,
    pub owner_uid: UserUid,
    pub claimed_at: UnixSeconds,
}
