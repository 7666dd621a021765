//! What the storage thread hands back: plain owned records, no database types.

use openchat_core::{
    ChannelId, ChannelKind, GroupId, HandshakeStrategy, MemberId, MemberStatus, ServerId, TrustState,
    UidPolicy, UnixSeconds, UserUid,
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
