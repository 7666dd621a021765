//! The request side of the storage thread: [`StorageHandle`] and the request enum.

use openchat_core::seed::Seed;
use openchat_core::settings::ServerSettings;
use openchat_core::{
    AssetId, AttachmentId, ChannelId, ChannelKind, GroupId, MessageId, ServerId, UnixSeconds, UserUid,
};
use tokio::sync::oneshot;

use crate::db::StoreKind;
use crate::error::StorageError;
use crate::records::{
    AttachmentRecord, AvatarRecord, ChannelCounts, ChannelInfo, ChannelRecord, ClaimRecord, GroupRecord,
    InstanceRecord, MemberRecord, MentionRecord, MessagePage, MessageRecord, NewMessage, NewServer,
    PageRequest, ProfileRecord, ProfileUpdate, ReadAckRecord, ServerRecord,
};

pub(crate) type Reply<T> = oneshot::Sender<Result<T, StorageError>>;

/// One request to the storage thread. Every variant but `Shutdown` carries its reply.
pub(crate) enum Request {
    Ping(Reply<()>),
    Seed {
        seed: Box<Seed>,
        now: UnixSeconds,
        reply: Reply<bool>,
    },
    Instance(Reply<InstanceRecord>),
    Directory {
        viewer: Option<UserUid>,
        limit: usize,
        reply: Reply<Vec<ServerRecord>>,
    },
    Server {
        server: ServerId,
        reply: Reply<ServerRecord>,
    },
    Layout {
        server: ServerId,
        reply: Reply<Vec<GroupRecord>>,
    },
    Members {
        server: ServerId,
        reply: Reply<Vec<MemberRecord>>,
    },
    UpdateSettings {
        server: ServerId,
        settings: ServerSettings,
        by: UserUid,
        now: UnixSeconds,
        reply: Reply<ServerRecord>,
    },
    CreateServer {
        new: Box<NewServer>,
        reply: Reply<ServerRecord>,
    },
    ClaimOwnership {
        server: ServerId,
        token_sha256: String,
        by: UserUid,
        now: UnixSeconds,
        reply: Reply<ClaimRecord>,
    },
    GrantOwner {
        server: ServerId,
        owner: UserUid,
        reply: Reply<ServerRecord>,
    },
    LeaveServer {
        server: ServerId,
        user: UserUid,
        now: UnixSeconds,
        reply: Reply<UnixSeconds>,
    },
    Channel {
        channel: ChannelId,
        reply: Reply<ChannelInfo>,
    },
    CreateChannel {
        server: ServerId,
        group: GroupId,
        channel: ChannelId,
        name: String,
        kind: ChannelKind,
        e2ee: bool,
        actor: UserUid,
        now: UnixSeconds,
        reply: Reply<ChannelRecord>,
    },
    CreateCategory {
        server: ServerId,
        group: GroupId,
        name: String,
        kind: ChannelKind,
        actor: UserUid,
        now: UnixSeconds,
        reply: Reply<GroupRecord>,
    },
    RenameCategory {
        server: ServerId,
        group: GroupId,
        name: String,
        actor: UserUid,
        reply: Reply<GroupRecord>,
    },
    DeleteCategory {
        server: ServerId,
        group: GroupId,
        actor: UserUid,
        reply: Reply<Vec<GroupRecord>>,
    },
    UpdateLayout {
        server: ServerId,
        order: Vec<(GroupId, Vec<ChannelId>)>,
        actor: UserUid,
        reply: Reply<Vec<GroupRecord>>,
    },
    Messages {
        channel: ChannelId,
        page: PageRequest,
        viewer: Option<UserUid>,
        reply: Reply<MessagePage>,
    },
    CreateMessage {
        new: Box<NewMessage>,
        reply: Reply<MessageRecord>,
    },
    DeleteMessage {
        channel: ChannelId,
        message: MessageId,
        actor: UserUid,
        now: UnixSeconds,
        reply: Reply<ChannelInfo>,
    },
    Attachment {
        channel: ChannelId,
        attachment: AttachmentId,
        reply: Reply<AttachmentRecord>,
    },
    ReadAck {
        channel: ChannelId,
        user: UserUid,
        reply: Reply<Option<ReadAckRecord>>,
    },
    PutReadAck {
        channel: ChannelId,
        user: UserUid,
        message: Option<MessageId>,
        now: UnixSeconds,
        reply: Reply<(ReadAckRecord, bool, ChannelInfo)>,
    },
    Mentions {
        channel: ChannelId,
        query: String,
        limit: usize,
        reply: Reply<Vec<MentionRecord>>,
    },
    ChannelCounts {
        server: ServerId,
        reader: UserUid,
        reply: Reply<Vec<ChannelCounts>>,
    },
    Profile {
        user: UserUid,
        now: UnixSeconds,
        reply: Reply<ProfileRecord>,
    },
    Profiles {
        users: Vec<UserUid>,
        now: UnixSeconds,
        reply: Reply<Vec<ProfileRecord>>,
    },
    UpdateProfile {
        update: Box<ProfileUpdate>,
        reply: Reply<ProfileRecord>,
    },
    InsertAvatar {
        avatar: Box<AvatarRecord>,
        reply: Reply<()>,
    },
    Avatar {
        asset: AssetId,
        reply: Reply<AvatarRecord>,
    },
    E2ee {
        op: Box<crate::e2ee::Op>,
        reply: Reply<crate::e2ee::Outcome>,
    },
    Shutdown,
}

/// A cheap, cloneable way to reach the storage thread from any thread or executor.
///
/// Every method sends one request and waits for its reply. If the queue is full the caller
/// waits for room (backpressure, not loss). If the thread has stopped, the answer is
/// [`StorageError::Unavailable`].
#[derive(Debug, Clone)]
pub struct StorageHandle {
    pub(crate) tx: flume::Sender<Request>,
    pub(crate) kind: StoreKind,
}

impl StorageHandle {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, StorageError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send_async(make(reply))
            .await
            .map_err(|_| StorageError::Unavailable("the storage thread has stopped".into()))?;
        answer
            .await
            .map_err(|_| StorageError::Unavailable("the storage thread stopped before answering".into()))?
    }

    /// Which backend answers.
    pub fn kind(&self) -> StoreKind {
        self.kind
    }

    /// Requests waiting in the queue right now (for metrics).
    pub fn queue_depth(&self) -> usize {
        self.tx.len()
    }

    /// Round trip to the database itself (readiness).
    pub async fn ping(&self) -> Result<(), StorageError> {
        self.call(Request::Ping).await
    }

    /// Writes the first-run community once; `Ok(false)` when the store was not empty or was
    /// seeded before.
    pub async fn seed(&self, seed: Seed, now: UnixSeconds) -> Result<bool, StorageError> {
        self.call(|reply| Request::Seed {
            seed: Box::new(seed),
            now,
            reply,
        })
        .await
    }

    pub async fn instance(&self) -> Result<InstanceRecord, StorageError> {
        self.call(Request::Instance).await
    }

    /// Servers in directory order, at most `limit`, without those `viewer` has left.
    pub async fn directory(
        &self,
        viewer: Option<UserUid>,
        limit: usize,
    ) -> Result<Vec<ServerRecord>, StorageError> {
        self.call(|reply| Request::Directory { viewer, limit, reply })
            .await
    }

    pub async fn server(&self, server: ServerId) -> Result<ServerRecord, StorageError> {
        self.call(|reply| Request::Server { server, reply }).await
    }

    /// The server's channel groups with their channels, in display order.
    pub async fn layout(&self, server: ServerId) -> Result<Vec<GroupRecord>, StorageError> {
        self.call(|reply| Request::Layout { server, reply }).await
    }

    pub async fn members(&self, server: ServerId) -> Result<Vec<MemberRecord>, StorageError> {
        self.call(|reply| Request::Members { server, reply }).await
    }

    /// Creates a server with a starter layout and a pending ownership claim.
    pub async fn create_server(&self, new: NewServer) -> Result<ServerRecord, StorageError> {
        self.call(|reply| Request::CreateServer {
            new: Box::new(new),
            reply,
        })
        .await
    }

    /// Redeems an ownership claim token (by its SHA-256, hex).
    pub async fn claim_ownership(
        &self,
        server: ServerId,
        token_sha256: String,
        by: UserUid,
        now: UnixSeconds,
    ) -> Result<ClaimRecord, StorageError> {
        self.call(|reply| Request::ClaimOwnership {
            server,
            token_sha256,
            by,
            now,
            reply,
        })
        .await
    }

    /// Makes `owner` the server's owner unconditionally (operator command).
    pub async fn grant_owner(&self, server: ServerId, owner: UserUid) -> Result<ServerRecord, StorageError> {
        self.call(|reply| Request::GrantOwner { server, owner, reply })
            .await
    }

    /// Records a leave; idempotent. Returns the (first) leave time.
    pub async fn leave_server(
        &self,
        server: ServerId,
        user: UserUid,
        now: UnixSeconds,
    ) -> Result<UnixSeconds, StorageError> {
        self.call(|reply| Request::LeaveServer {
            server,
            user,
            now,
            reply,
        })
        .await
    }

    pub async fn channel(&self, channel: ChannelId) -> Result<ChannelInfo, StorageError> {
        self.call(|reply| Request::Channel { channel, reply }).await
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn create_channel(
        &self,
        server: ServerId,
        group: GroupId,
        channel: ChannelId,
        name: String,
        kind: ChannelKind,
        actor: UserUid,
        now: UnixSeconds,
    ) -> Result<ChannelRecord, StorageError> {
        self.call(|reply| Request::CreateChannel {
            server,
            group,
            channel,
            name,
            kind,
            e2ee: false,
            actor,
            now,
            reply,
        })
        .await
    }

    /// Creates an end-to-end-encrypted text channel: epoch 1, `actor` its first member.
    pub async fn create_e2ee_channel(
        &self,
        server: ServerId,
        group: GroupId,
        channel: ChannelId,
        name: String,
        actor: UserUid,
        now: UnixSeconds,
    ) -> Result<ChannelRecord, StorageError> {
        self.call(|reply| Request::CreateChannel {
            server,
            group,
            channel,
            name,
            kind: ChannelKind::Text,
            e2ee: true,
            actor,
            now,
            reply,
        })
        .await
    }

    /// One end-to-end-encryption request (E2EE.md).
    pub async fn e2ee(&self, op: crate::e2ee::Op) -> Result<crate::e2ee::Outcome, StorageError> {
        self.call(|reply| Request::E2ee {
            op: Box::new(op),
            reply,
        })
        .await
    }

    pub async fn create_category(
        &self,
        server: ServerId,
        group: GroupId,
        name: String,
        kind: ChannelKind,
        actor: UserUid,
        now: UnixSeconds,
    ) -> Result<GroupRecord, StorageError> {
        self.call(|reply| Request::CreateCategory {
            server,
            group,
            name,
            kind,
            actor,
            now,
            reply,
        })
        .await
    }

    pub async fn rename_category(
        &self,
        server: ServerId,
        group: GroupId,
        name: String,
        actor: UserUid,
    ) -> Result<GroupRecord, StorageError> {
        self.call(|reply| Request::RenameCategory {
            server,
            group,
            name,
            actor,
            reply,
        })
        .await
    }

    /// Deletes an empty category; returns the remaining layout.
    pub async fn delete_category(
        &self,
        server: ServerId,
        group: GroupId,
        actor: UserUid,
    ) -> Result<Vec<GroupRecord>, StorageError> {
        self.call(|reply| Request::DeleteCategory {
            server,
            group,
            actor,
            reply,
        })
        .await
    }

    /// Applies a complete new order of categories and channels; returns the new layout.
    pub async fn update_layout(
        &self,
        server: ServerId,
        order: Vec<(GroupId, Vec<ChannelId>)>,
        actor: UserUid,
    ) -> Result<Vec<GroupRecord>, StorageError> {
        self.call(|reply| Request::UpdateLayout {
            server,
            order,
            actor,
            reply,
        })
        .await
    }

    pub async fn messages(&self, channel: ChannelId, page: PageRequest) -> Result<MessagePage, StorageError> {
        self.call(|reply| Request::Messages {
            channel,
            page,
            viewer: None,
            reply,
        })
        .await
    }

    /// A page of history as `viewer` may read it: in an e2ee channel only the epochs they
    /// were a member of (`not_a_member` if never).
    pub async fn messages_for(
        &self,
        channel: ChannelId,
        page: PageRequest,
        viewer: UserUid,
    ) -> Result<MessagePage, StorageError> {
        self.call(|reply| Request::Messages {
            channel,
            page,
            viewer: Some(viewer),
            reply,
        })
        .await
    }

    pub async fn create_message(&self, new: NewMessage) -> Result<MessageRecord, StorageError> {
        self.call(|reply| Request::CreateMessage {
            new: Box::new(new),
            reply,
        })
        .await
    }

    /// Deletes a message if `actor` may; returns its channel.
    pub async fn delete_message(
        &self,
        channel: ChannelId,
        message: MessageId,
        actor: UserUid,
        now: UnixSeconds,
    ) -> Result<ChannelInfo, StorageError> {
        self.call(|reply| Request::DeleteMessage {
            channel,
            message,
            actor,
            now,
            reply,
        })
        .await
    }

    pub async fn attachment(
        &self,
        channel: ChannelId,
        attachment: AttachmentId,
    ) -> Result<AttachmentRecord, StorageError> {
        self.call(|reply| Request::Attachment {
            channel,
            attachment,
            reply,
        })
        .await
    }

    pub async fn read_ack(
        &self,
        channel: ChannelId,
        user: UserUid,
    ) -> Result<Option<ReadAckRecord>, StorageError> {
        self.call(|reply| Request::ReadAck { channel, user, reply }).await
    }

    /// Moves the read ack forward; returns the stored ack, whether it moved, and the channel.
    pub async fn put_read_ack(
        &self,
        channel: ChannelId,
        user: UserUid,
        message: Option<MessageId>,
        now: UnixSeconds,
    ) -> Result<(ReadAckRecord, bool, ChannelInfo), StorageError> {
        self.call(|reply| Request::PutReadAck {
            channel,
            user,
            message,
            now,
            reply,
        })
        .await
    }

    /// `reader`'s unread and mention counts per text channel of `server` (channels with
    /// none are absent).
    pub async fn channel_counts(
        &self,
        server: ServerId,
        reader: UserUid,
    ) -> Result<Vec<ChannelCounts>, StorageError> {
        self.call(|reply| Request::ChannelCounts {
            server,
            reader,
            reply,
        })
        .await
    }

    pub async fn mentions(
        &self,
        channel: ChannelId,
        query: String,
        limit: usize,
    ) -> Result<Vec<MentionRecord>, StorageError> {
        self.call(|reply| Request::Mentions {
            channel,
            query,
            limit,
            reply,
        })
        .await
    }

    /// The profile of `user`, created with defaults on first sight.
    pub async fn profile(&self, user: UserUid, now: UnixSeconds) -> Result<ProfileRecord, StorageError> {
        self.call(|reply| Request::Profile { user, now, reply }).await
    }

    pub async fn profiles(
        &self,
        users: Vec<UserUid>,
        now: UnixSeconds,
    ) -> Result<Vec<ProfileRecord>, StorageError> {
        self.call(|reply| Request::Profiles { users, now, reply }).await
    }

    pub async fn update_profile(&self, update: ProfileUpdate) -> Result<ProfileRecord, StorageError> {
        self.call(|reply| Request::UpdateProfile {
            update: Box::new(update),
            reply,
        })
        .await
    }

    pub async fn insert_avatar(&self, avatar: AvatarRecord) -> Result<(), StorageError> {
        self.call(|reply| Request::InsertAvatar {
            avatar: Box::new(avatar),
            reply,
        })
        .await
    }

    pub async fn avatar(&self, asset: AssetId) -> Result<AvatarRecord, StorageError> {
        self.call(|reply| Request::Avatar { asset, reply }).await
    }

    /// Changes a server's settings if `by` may manage it.
    pub async fn update_settings(
        &self,
        server: ServerId,
        settings: ServerSettings,
        by: UserUid,
        now: UnixSeconds,
    ) -> Result<ServerRecord, StorageError> {
        self.call(|reply| Request::UpdateSettings {
            server,
            settings,
            by,
            now,
            reply,
        })
        .await
    }
}
