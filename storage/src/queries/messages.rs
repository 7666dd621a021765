//! Messages, attachments, read acknowledgements and mention candidates.

use openchat_core::Denial;
use openchat_core::limits::{MENTION_RESULTS_MAX, MENTION_ROSTER_MAX};
use openchat_core::mention::{self, ChannelName, Mention, MentionKind, Notifies, Person};
use openchat_core::policy::may_delete_message;
use openchat_core::profile::reply_preview;
use openchat_core::{AttachmentId, ChannelId, ChannelKind, MessageId, ServerId, UnixSeconds, UserUid};

use super::corrupt;
use super::servers::channel;
use crate::db::{Db, Param, Row, in_transaction, lock_scope};
use crate::error::StorageError;
use crate::query::Query;
use crate::records::{
    AttachmentRecord, ChannelCounts, ChannelInfo, MentionRecord, MessagePage, MessageRecord, NewMessage,
    PageRequest, ReadAckRecord, ReplyRecord,
};

const MESSAGE_COLUMNS: &str = "m.id, m.author_uid, m.body, m.created_at, m.seq, m.reply_to_id, \
     r.author_uid, r.body, r.deleted_at, m.epoch_id, m.sender_device_id, m.ciphertext, m.nonce, m.aad";

/// Only messages of epochs the viewer (parameter `$n`) was a member of (E2EE.md §3 rule 1);
/// plain messages (no epoch) pass.
fn epoch_filter(n: usize) -> String {
    format!(
        "(m.epoch_id IS NULL OR EXISTS (SELECT 1 FROM channel_membership cm \
         WHERE cm.channel_id = m.channel_id AND cm.user_uid = ${n} AND cm.from_epoch <= m.epoch_id \
         AND (cm.to_epoch IS NULL OR cm.to_epoch >= m.epoch_id)))"
    )
}

fn message_id(raw: String) -> Result<MessageId, StorageError> {
    MessageId::parse_owned(raw).map_err(|e| corrupt("message id", e))
}

fn user(raw: String) -> Result<UserUid, StorageError> {
    UserUid::parse_owned(raw).map_err(|e| corrupt("user uid", e))
}

/// A message row (see [`MESSAGE_COLUMNS`]) and its sequence number.
fn message_from_row(channel: &ChannelInfo, row: &Row) -> Result<(i64, MessageRecord), StorageError> {
    let reply_to = match row.opt_text(5)? {
        None => None,
        Some(target) => {
            let target_author = row.opt_text(6)?;
            let available = target_author.is_some() && row.opt_int(8)?.is_none();
            Some(ReplyRecord {
                message_id: message_id(target)?,
                author_uid: if available {
                    target_author.map(user).transpose()?
                } else {
                    None
                },
                preview: if available {
                    row.opt_text(7)?.map(|body| reply_preview(&body))
                } else {
                    None
                },
                unavailable: !available,
            })
        }
    };
    Ok((
        row.int(4)?,
        MessageRecord {
            id: message_id(row.text(0)?)?,
            channel_id: channel.id.clone(),
            server_id: channel.server_id.clone(),
            author_uid: user(row.text(1)?)?,
            body: row.text(2)?,
            created_at: row.int(3)?,
            reply_to,
            attachments: Vec::new(),
            mentions: Vec::new(),
            envelope: match row.opt_int(9)? {
                None => None,
                Some(epoch_id) => Some(crate::e2ee::Envelope {
                    epoch_id,
                    sender_device_id: row.opt_text(10)?.unwrap_or_default(),
                    ciphertext: row.opt_text(11)?.unwrap_or_default(),
                    nonce: row.opt_text(12)?.unwrap_or_default(),
                    aad: row.opt_text(13)?.unwrap_or_default(),
                }),
            },
        },
    ))
}

fn attachment_from_row(
    channel: &ChannelId,
    row: &Row,
    offset: usize,
) -> Result<AttachmentRecord, StorageError> {
    Ok(AttachmentRecord {
        id: AttachmentId::parse_owned(row.text(offset)?).map_err(|e| corrupt("attachment id", e))?,
        channel_id: channel.clone(),
        file_name: row.text(offset + 1)?,
        content_type: row.text(offset + 2)?,
        bytes: row.int(offset + 3)?,
        width: row.int(offset + 4)?,
        height: row.int(offset + 5)?,
        sha256: row.text(offset + 6)?,
    })
}

/// The lowest and highest sequence number of a page (`None` when it is empty).
fn seq_range(messages: &[(i64, MessageRecord)]) -> Option<(i64, i64)> {
    let (first, last) = (messages.first()?, messages.last()?);
    Some((first.0.min(last.0), first.0.max(last.0)))
}

/// Attaches each message's attachments (one query for the whole page).
async fn fill_attachments<D: Db>(
    db: &mut D,
    channel: &ChannelId,
    messages: &mut [(i64, MessageRecord)],
) -> Result<(), StorageError> {
    let Some((low, high)) = seq_range(messages) else {
        return Ok(());
    };
    let rows = db
        .query(
            "SELECT a.message_id, a.id, a.file_name, a.content_type, a.bytes, a.width, a.height, a.sha256 \
             FROM attachments a JOIN messages m ON m.id = a.message_id \
             WHERE m.channel_id = $1 AND m.seq >= $2 AND m.seq <= $3 ORDER BY m.seq, a.position",
            &[Param::Text(channel.as_str()), Param::Int(low), Param::Int(high)],
        )
        .await?;
    for row in &rows {
        let owner = row.text(0)?;
        if let Some((_, message)) = messages
            .iter_mut()
            .find(|(_, message)| message.id.as_str() == owner)
        {
            message.attachments.push(attachment_from_row(channel, row, 1)?);
        }
    }
    Ok(())
}

/// Attaches each message's mentions (one query for the whole page).
async fn fill_mentions<D: Db>(
    db: &mut D,
    channel: &ChannelId,
    messages: &mut [(i64, MessageRecord)],
) -> Result<(), StorageError> {
    let Some((low, high)) = seq_range(messages) else {
        return Ok(());
    };
    let rows = db
        .query(
            "SELECT x.message_id, x.kind, x.token, x.target_id, x.display_text, x.range_start, x.range_end \
             FROM message_mentions x JOIN messages m ON m.id = x.message_id \
             WHERE m.channel_id = $1 AND m.seq >= $2 AND m.seq <= $3 ORDER BY m.seq, x.position",
            &[Param::Text(channel.as_str()), Param::Int(low), Param::Int(high)],
        )
        .await?;
    for row in &rows {
        let owner = row.text(0)?;
        let kind = row.text(1)?;
        let mention = Mention {
            kind: MentionKind::parse(&kind).ok_or_else(|| corrupt("mention kind", kind.clone()))?,
            token: row.text(2)?,
            target_id: row.text(3)?,
            display_text: row.text(4)?,
            start: u32::try_from(row.int(5)?).map_err(|e| corrupt("mention range", e))?,
            end: u32::try_from(row.int(6)?).map_err(|e| corrupt("mention range", e))?,
        };
        if let Some((_, message)) = messages
            .iter_mut()
            .find(|(_, message)| message.id.as_str() == owner)
        {
            message.mentions.push(mention);
        }
    }
    Ok(())
}

/// Who may be mentioned by name in a channel: the server's current members and the
/// channel's authors who have a profile (the same people `mentions:resolve` offers), and
/// the server's text channels for `#name`.
async fn mention_roster<D: Db>(
    db: &mut D,
    info: &ChannelInfo,
) -> Result<(Vec<(String, String)>, Vec<(String, String)>), StorageError> {
    let people = db
        .query(
            "SELECT user_uid, display_name FROM server_members \
             WHERE server_id = $1 AND left_at IS NULL AND user_uid IS NOT NULL \
             UNION \
             SELECT p.user_uid, p.display_name FROM profiles p \
             WHERE p.user_uid IN (SELECT DISTINCT author_uid FROM messages WHERE channel_id = $2) \
             LIMIT $3",
            &[
                Param::Text(info.server_id.as_str()),
                Param::Text(info.id.as_str()),
                Param::Int(MENTION_ROSTER_MAX as i64),
            ],
        )
        .await?
        .iter()
        .map(|row| Ok((row.text(0)?, row.text(1)?)))
        .collect::<Result<Vec<_>, StorageError>>()?;
    let channels = db
        .query(
            "SELECT id, name FROM channels WHERE server_id = $1 AND kind = 'text'",
            &[Param::Text(info.server_id.as_str())],
        )
        .await?
        .iter()
        .map(|row| Ok((row.text(0)?, row.text(1)?)))
        .collect::<Result<Vec<_>, StorageError>>()?;
    Ok((people, channels))
}

/// Finds and stores the mentions of a new plain message.
async fn store_mentions<D: Db>(db: &mut D, info: &ChannelInfo, new: &NewMessage) -> Result<(), StorageError> {
    if !mention::may_mention(&new.body) {
        return Ok(());
    }
    let (people, channels) = mention_roster(db, info).await?;
    let people: Vec<Person<'_>> = people.iter().map(|(uid, name)| Person { uid, name }).collect();
    let channels: Vec<ChannelName<'_>> = channels
        .iter()
        .map(|(id, name)| ChannelName { id, name })
        .collect();
    let found = mention::parse(&new.body, info.id.as_str(), &people, &channels);
    for (position, mention) in found.iter().enumerate() {
        let notify = match mention.notifies() {
            Notifies::User(uid) => Some(uid),
            Notifies::Everyone => Some(NOTIFY_EVERYONE.to_owned()),
            Notifies::Nobody => None,
        };
        db.execute(
            "INSERT INTO message_mentions (message_id, channel_id, position, kind, token, target_id, \
             display_text, range_start, range_end, notify_uid) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                Param::Text(new.id.as_str()),
                Param::Text(info.id.as_str()),
                Param::Int(position as i64),
                Param::Text(mention.kind.as_str()),
                Param::Text(&mention.token),
                Param::Text(&mention.target_id),
                Param::Text(&mention.display_text),
                Param::Int(i64::from(mention.start)),
                Param::Int(i64::from(mention.end)),
                Param::OptText(notify.as_deref()),
            ],
        )
        .await?;
    }
    Ok(())
}

/// `notify_uid` of a channel-wide mention.
const NOTIFY_EVERYONE: &str = "*";

/// A reader's unread and mention counts for every text channel of a server that has any
/// (end-to-end-encrypted channels are left out: their history is bound to membership).
#[derive(Debug, Clone)]
pub struct UnreadCounts {
    pub server: ServerId,
    pub reader: UserUid,
}

impl Query for UnreadCounts {
    type Output = Vec<ChannelCounts>;
    const NAME: &'static str = "channel_counts";

    async fn run<D: Db>(self, db: &mut D) -> Result<Vec<ChannelCounts>, StorageError> {
        let UnreadCounts { server, reader } = self;
        let server = &server;
        let reader = &reader;
        let rows = db
        .query(
            "SELECT m.channel_id, COUNT(*), \
             SUM(CASE WHEN EXISTS (SELECT 1 FROM message_mentions x WHERE x.message_id = m.id \
                 AND x.channel_id = m.channel_id AND (x.notify_uid = $2 OR x.notify_uid = '*')) THEN 1 ELSE 0 END) \
             FROM messages m JOIN channels c ON c.id = m.channel_id \
             LEFT JOIN read_acks a ON a.channel_id = m.channel_id AND a.user_uid = $2 \
             LEFT JOIN messages r ON r.id = a.last_read_message_id \
             WHERE c.server_id = $1 AND c.kind = 'text' AND c.e2ee = 0 AND m.deleted_at IS NULL \
             AND m.author_uid <> $2 AND (r.seq IS NULL OR m.seq > r.seq) \
             GROUP BY m.channel_id",
            &[Param::Text(server.as_str()), Param::Text(reader.as_str())],
        )
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ChannelCounts {
                    channel_id: ChannelId::parse_owned(row.text(0)?).map_err(|e| corrupt("channel id", e))?,
                    unread: row.int(1)?,
                    mentions: row.int(2)?,
                })
            })
            .collect()
    }
}

/// A page of history, oldest first. Voice channels have none.
#[derive(Debug, Clone)]
pub struct Messages {
    pub channel: ChannelId,
    pub page: PageRequest,
    pub viewer: Option<UserUid>,
}

impl Query for Messages {
    type Output = MessagePage;
    const NAME: &'static str = "messages";

    async fn run<D: Db>(self, db: &mut D) -> Result<MessagePage, StorageError> {
        let Messages {
            channel: id,
            page,
            viewer,
        } = self;
        let id = &id;
        let viewer = viewer.as_ref();
        in_transaction(db, async |db: &mut D| {
        let info = channel(db, id).await?;
        // An e2ee channel shows each reader only the epochs they belonged to.
        let viewer = viewer.map(UserUid::as_str).unwrap_or("");
        if info.e2ee && !super::e2ee::ever_member(db, id, viewer).await? {
            return Err(StorageError::denied(Denial::NotAMember, "the caller is not a member of this channel"));
        }
        let before = page.before.unwrap_or(i64::MAX);
        let after = page.after.unwrap_or(-1);
        // With only `after`, read forward from the cursor; otherwise read the newest first.
        let order = if page.after.is_some() && page.before.is_none() { "ASC" } else { "DESC" };
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m LEFT JOIN messages r ON r.id = m.reply_to_id \
             WHERE m.channel_id = $1 AND m.deleted_at IS NULL AND m.seq < $2 AND m.seq > $3 AND {} \
             ORDER BY m.seq {order} LIMIT $4",
            epoch_filter(5)
        );
        let rows = db
            .query(
                &sql,
                &[
                    Param::Text(id.as_str()),
                    Param::Int(before),
                    Param::Int(after),
                    Param::Int(page.limit as i64),
                    Param::Text(viewer),
                ],
            )
            .await?;
        let mut messages = rows.iter().map(|row| message_from_row(&info, row)).collect::<Result<Vec<_>, _>>()?;
        messages.sort_by_key(|(seq, _)| *seq);
        fill_attachments(db, id, &mut messages).await?;
        fill_mentions(db, id, &mut messages).await?;
        let older_cursor = match messages.first() {
            None => None,
            Some((oldest, _)) => {
                // Whether anything older is visible: one row is enough (no COUNT scan).
                let probe = format!(
                    "SELECT 1 FROM messages m WHERE m.channel_id = $1 AND m.deleted_at IS NULL AND m.seq < $2 \
                     AND {} LIMIT 1",
                    epoch_filter(3)
                );
                let older = db
                    .query_opt(&probe, &[Param::Text(id.as_str()), Param::Int(*oldest), Param::Text(viewer)])
                    .await?
                    .is_some();
                older.then_some(*oldest)
            }
        };
        Ok(MessagePage { channel: info, messages: messages.into_iter().map(|(_, m)| m).collect(), older_cursor })
    })
    .await
    }
}

async fn read_message<D: Db>(
    db: &mut D,
    info: &ChannelInfo,
    id: &MessageId,
) -> Result<(i64, MessageRecord), StorageError> {
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m LEFT JOIN messages r ON r.id = m.reply_to_id \
         WHERE m.id = $1 AND m.channel_id = $2 AND m.deleted_at IS NULL"
    );
    let row = db
        .query_opt(&sql, &[Param::Text(id.as_str()), Param::Text(info.id.as_str())])
        .await?
        .ok_or(StorageError::NotFound("message"))?;
    let mut one = vec![message_from_row(info, &row)?];
    fill_attachments(db, &info.id, &mut one).await?;
    fill_mentions(db, &info.id, &mut one).await?;
    one.pop().ok_or_else(|| corrupt("message", "vanished"))
}

/// [`CreateMessage`], plus who may see the message, read in the same transaction: `None`
/// for a plain message (the channel's and server's audience), the members of its epoch
/// for an e2ee one (E2EE.md §3 rule 1).
#[derive(Debug, Clone)]
pub struct PostMessage {
    pub new: NewMessage,
}

impl Query for PostMessage {
    type Output = (MessageRecord, Option<Vec<UserUid>>);
    const NAME: &'static str = "create_message";

    async fn run<D: Db>(self, db: &mut D) -> Result<(MessageRecord, Option<Vec<UserUid>>), StorageError> {
        let epoch = self.new.envelope.as_ref().map(|envelope| envelope.epoch_id);
        let channel_id = self.new.channel.clone();
        in_transaction(db, async |db: &mut D| {
            let record = CreateMessage { new: self.new }.run(db).await?;
            let members = match epoch {
                Some(epoch) => Some(super::e2ee::members_of_epoch(db, &channel_id, epoch).await?),
                None => None,
            };
            Ok((record, members))
        })
        .await
    }
}

/// Stores a message and its attachments in one transaction.
#[derive(Debug, Clone)]
pub struct CreateMessage {
    pub new: NewMessage,
}

impl Query for CreateMessage {
    type Output = MessageRecord;
    const NAME: &'static str = "create_message";

    async fn run<D: Db>(self, db: &mut D) -> Result<MessageRecord, StorageError> {
        let CreateMessage { new } = self;
        let new = &new;
        in_transaction(db, async |db: &mut D| {
        // One post per channel at a time, on every node: the channel's numbering (history
        // order, cursor order) and its epoch check see every earlier post.
        lock_scope(db, &format!("messages:{}", new.channel)).await?;
        let info = match channel(db, &new.channel).await {
            Ok(info) if info.kind == ChannelKind::Text => info,
            Ok(_) => return Err(StorageError::invalid("message_create_failed", "messages go to text channels only")),
            Err(StorageError::NotFound(_)) => {
                return Err(StorageError::invalid("message_create_failed", "unknown channel"));
            }
            Err(err) => return Err(err),
        };
        match (info.e2ee, &new.envelope) {
            (true, None) => {
                return Err(StorageError::invalid(
                    "plaintext_not_allowed",
                    "this channel is end-to-end encrypted: post an envelope, not a body",
                ));
            }
            (false, Some(_)) => {
                return Err(StorageError::invalid(
                    "envelope_not_allowed",
                    "this channel is not end-to-end encrypted",
                ));
            }
            (true, Some(envelope)) => {
                super::e2ee::check_post(db, &new.channel, &new.author, envelope.epoch_id, &envelope.sender_device_id)
                    .await?;
            }
            (false, None) => {}
        }
        if let Some(target) = &new.reply_to {
            let found = db
                .query_opt(
                    "SELECT id FROM messages WHERE id = $1 AND channel_id = $2",
                    &[Param::Text(target.as_str()), Param::Text(new.channel.as_str())],
                )
                .await?;
            if found.is_none() {
                return Err(StorageError::invalid("reply_target_not_found", "the reply target is not in this channel"));
            }
        }
        let seq = db
            .query_opt("SELECT COALESCE(MAX(seq), -1) + 1 FROM messages WHERE channel_id = $1", &[Param::Text(new.channel.as_str())])
            .await?
            .map(|row| row.int(0))
            .transpose()?
            .unwrap_or(0);
        let envelope = new.envelope.as_ref();
        let epoch = envelope.map(|e| e.epoch_id);
        db.execute(
            "INSERT INTO messages (id, channel_id, seq, author_uid, body, reply_to_id, created_at, epoch_id, \
             sender_device_id, ciphertext, nonce, aad) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            &[
                Param::Text(new.id.as_str()),
                Param::Text(new.channel.as_str()),
                Param::Int(seq),
                Param::Text(new.author.as_str()),
                Param::Text(if envelope.is_some() { "" } else { &new.body }),
                Param::OptText(new.reply_to.as_ref().map(MessageId::as_str)),
                Param::Int(new.now),
                match epoch {
                    Some(epoch) => Param::Int(epoch),
                    None => Param::OptText(None),
                },
                Param::OptText(envelope.map(|e| e.sender_device_id.as_str())),
                Param::OptText(envelope.map(|e| e.ciphertext.as_str())),
                Param::OptText(envelope.map(|e| e.nonce.as_str())),
                Param::OptText(envelope.map(|e| e.aad.as_str())),
            ],
        )
        .await?;
        for (position, attachment) in new.attachments.iter().enumerate() {
            db.execute(
                "INSERT INTO attachments (id, channel_id, message_id, position, file_name, content_type, bytes, \
                 width, height, sha256, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                &[
                    Param::Text(attachment.id.as_str()),
                    Param::Text(new.channel.as_str()),
                    Param::Text(new.id.as_str()),
                    Param::Int(position as i64),
                    Param::Text(&attachment.file_name),
                    Param::Text(&attachment.content_type),
                    Param::Int(attachment.bytes),
                    Param::Int(attachment.width),
                    Param::Int(attachment.height),
                    Param::Text(&attachment.sha256),
                    Param::Int(new.now),
                ],
            )
            .await?;
        }
        if envelope.is_none() {
            store_mentions(db, &info, new).await?;
        }
        read_message(db, &info, &new.id).await.map(|(_, message)| message)
    })
    .await
    }
}

/// Deletes (tombstones) a message if `actor` may; replies to it then show it unavailable.
/// Returns the server the channel belongs to.
#[derive(Debug, Clone)]
pub struct DeleteMessage {
    pub channel: ChannelId,
    pub message: MessageId,
    pub actor: UserUid,
    pub now: UnixSeconds,
}

impl Query for DeleteMessage {
    type Output = ChannelInfo;
    const NAME: &'static str = "delete_message";

    async fn run<D: Db>(self, db: &mut D) -> Result<ChannelInfo, StorageError> {
        let DeleteMessage {
            channel: channel_id,
            message: id,
            actor,
            now,
        } = self;
        let channel_id = &channel_id;
        let id = &id;
        let actor = &actor;
        in_transaction(db, async |db: &mut D| {
        let info = channel(db, channel_id).await?;
        let row = db
            .query_opt(
                "SELECT m.author_uid, s.owner_uid FROM messages m JOIN channels c ON c.id = m.channel_id \
                 JOIN servers s ON s.id = c.server_id WHERE m.id = $1 AND m.channel_id = $2 AND m.deleted_at IS NULL",
                &[Param::Text(id.as_str()), Param::Text(channel_id.as_str())],
            )
            .await?
            .ok_or(StorageError::NotFound("message"))?;
        let author = user(row.text(0)?)?;
        let owner = row.opt_text(1)?.map(user).transpose()?;
        if !may_delete_message(&author, owner.as_ref(), actor) {
            return Err(StorageError::Forbidden("only the author or the server owner may delete this message".into()));
        }
        db.execute(
            "UPDATE messages SET deleted_at = $2, body = '' WHERE id = $1",
            &[Param::Text(id.as_str()), Param::Int(now)],
        )
        .await?;
        db.execute("DELETE FROM attachments WHERE message_id = $1", &[Param::Text(id.as_str())]).await?;
        db.execute("DELETE FROM message_mentions WHERE message_id = $1", &[Param::Text(id.as_str())]).await?;
        Ok(info)
    })
    .await
    }
}

#[derive(Debug, Clone)]
pub struct Attachment {
    pub channel: ChannelId,
    pub attachment: AttachmentId,
}

impl Query for Attachment {
    type Output = AttachmentRecord;
    const NAME: &'static str = "attachment";

    async fn run<D: Db>(self, db: &mut D) -> Result<AttachmentRecord, StorageError> {
        let Attachment {
            channel: channel_id,
            attachment: id,
        } = self;
        let channel_id = &channel_id;
        let id = &id;
        let row = db
            .query_opt(
                "SELECT id, file_name, content_type, bytes, width, height, sha256 FROM attachments \
             WHERE id = $1 AND channel_id = $2",
                &[Param::Text(id.as_str()), Param::Text(channel_id.as_str())],
            )
            .await?
            .ok_or(StorageError::NotFound("attachment"))?;
        attachment_from_row(channel_id, &row, 0)
    }
}

fn read_ack_from_row(
    channel_id: &ChannelId,
    user_uid: &UserUid,
    row: &Row,
) -> Result<ReadAckRecord, StorageError> {
    Ok(ReadAckRecord {
        channel_id: channel_id.clone(),
        user_uid: user_uid.clone(),
        last_read_message_id: row.opt_text(0)?.map(message_id).transpose()?,
        cursor_index: row.int(1)?,
        acked_at: row.int(2)?,
    })
}

async fn stored_ack<D: Db>(
    db: &mut D,
    channel_id: &ChannelId,
    user_uid: &UserUid,
) -> Result<Option<ReadAckRecord>, StorageError> {
    db.query_opt(
        "SELECT last_read_message_id, cursor_index, acked_at FROM read_acks WHERE channel_id = $1 AND user_uid = $2",
        &[Param::Text(channel_id.as_str()), Param::Text(user_uid.as_str())],
    )
    .await?
    .as_ref()
    .map(|row| read_ack_from_row(channel_id, user_uid, row))
    .transpose()
}

/// The stored ack, or an empty one (`cursor_index` 0, nothing read) for a channel that exists.
#[derive(Debug, Clone)]
pub struct ReadAck {
    pub channel: ChannelId,
    pub user: UserUid,
}

impl Query for ReadAck {
    type Output = Option<ReadAckRecord>;
    const NAME: &'static str = "read_ack";

    async fn run<D: Db>(self, db: &mut D) -> Result<Option<ReadAckRecord>, StorageError> {
        let ReadAck {
            channel: channel_id,
            user: user_uid,
        } = self;
        let channel_id = &channel_id;
        let user_uid = &user_uid;
        channel(db, channel_id).await?;
        stored_ack(db, channel_id, user_uid).await
    }
}

/// Moves the ack forward to `message` (or to the latest message when `None`). Returns the
/// stored ack and whether this call moved it; a stale ack leaves the newer one in place.
#[derive(Debug, Clone)]
pub struct PutReadAck {
    pub channel: ChannelId,
    pub user: UserUid,
    pub message: Option<MessageId>,
    pub now: UnixSeconds,
}

impl Query for PutReadAck {
    type Output = (ReadAckRecord, bool, ChannelInfo);
    const NAME: &'static str = "put_read_ack";

    async fn run<D: Db>(self, db: &mut D) -> Result<(ReadAckRecord, bool, ChannelInfo), StorageError> {
        let PutReadAck {
            channel: channel_id,
            user: user_uid,
            message,
            now,
        } = self;
        let channel_id = &channel_id;
        let user_uid = &user_uid;
        let message = message.as_ref();
        in_transaction(db, async |db: &mut D| {
        let info = channel(db, channel_id).await?;
        let target = match message {
            Some(id) => db
                .query_opt(
                    "SELECT id, seq FROM messages WHERE id = $1 AND channel_id = $2 AND deleted_at IS NULL",
                    &[Param::Text(id.as_str()), Param::Text(channel_id.as_str())],
                )
                .await?
                .ok_or(StorageError::NotFound("message"))
                .map(Some)?,
            None => {
                db.query_opt(
                    "SELECT id, seq FROM messages WHERE channel_id = $1 AND deleted_at IS NULL ORDER BY seq DESC LIMIT 1",
                    &[Param::Text(channel_id.as_str())],
                )
                .await?
            }
        };
        let (target_id, index) = match target {
            Some(row) => {
                let seq = row.int(1)?;
                let index = db
                    .query_opt(
                        "SELECT COUNT(*) FROM messages WHERE channel_id = $1 AND deleted_at IS NULL AND seq < $2",
                        &[Param::Text(channel_id.as_str()), Param::Int(seq)],
                    )
                    .await?
                    .map(|row| row.int(0))
                    .transpose()?
                    .unwrap_or(0);
                (Some(row.text(0)?), index)
            }
            None => (None, 0),
        };
        let stored = stored_ack(db, channel_id, user_uid).await?;
        if let Some(stored) = stored {
            let newer = match (&stored.last_read_message_id, &target_id) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(old), Some(new)) => index > stored.cursor_index || (index == stored.cursor_index && old.as_str() != new),
            };
            if !newer {
                return Ok((stored, false, info));
            }
        }
        db.execute(
            "INSERT INTO read_acks (channel_id, user_uid, last_read_message_id, cursor_index, acked_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (channel_id, user_uid) DO UPDATE \
             SET last_read_message_id = $3, cursor_index = $4, acked_at = $5",
            &[
                Param::Text(channel_id.as_str()),
                Param::Text(user_uid.as_str()),
                Param::OptText(target_id.as_deref()),
                Param::Int(index),
                Param::Int(now),
            ],
        )
        .await?;
        let record = ReadAckRecord {
            channel_id: channel_id.clone(),
            user_uid: user_uid.clone(),
            last_read_message_id: target_id.map(message_id).transpose()?,
            cursor_index: index,
            acked_at: now,
        };
        Ok((record, true, info))
    })
    .await
    }
}

/// `query` as a case-insensitive LIKE prefix pattern, with LIKE's wildcards escaped.
fn like_prefix(query: &str) -> String {
    let mut pattern = String::with_capacity(query.len() + 1);
    for c in query.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Candidates for `@query` in a channel: `@here`/`@channel`, then members and authors of
/// the channel's server whose name starts with the query, then text channels.
#[derive(Debug, Clone)]
pub struct Mentions {
    pub channel: ChannelId,
    pub query: String,
    pub limit: usize,
}

impl Query for Mentions {
    type Output = Vec<MentionRecord>;
    const NAME: &'static str = "mentions";

    async fn run<D: Db>(self, db: &mut D) -> Result<Vec<MentionRecord>, StorageError> {
        let Mentions {
            channel: channel_id,
            query,
            limit,
        } = self;
        let channel_id = &channel_id;
        let query = query.as_str();
        let info = channel(db, channel_id).await?;
        let limit = limit.min(MENTION_RESULTS_MAX);
        let lowered = query.to_lowercase();
        let mut results = Vec::new();
        for special in ["here", "channel"] {
            if special.starts_with(&lowered) {
                results.push(MentionRecord {
                    kind: "channel",
                    token: format!("@{special}"),
                    target_id: channel_id.to_string(),
                    display_text: special.to_owned(),
                });
            }
        }
        let pattern = like_prefix(query);
        let people = db
            .query(
                "SELECT COALESCE(user_uid, member_id), display_name, position FROM server_members \
             WHERE server_id = $1 AND left_at IS NULL AND LOWER(display_name) LIKE $2 ESCAPE '\\' \
             UNION \
             SELECT p.user_uid, p.display_name, 1000000 FROM profiles p \
             WHERE p.user_uid IN (SELECT DISTINCT author_uid FROM messages WHERE channel_id = $3) \
             AND p.user_uid NOT IN (SELECT user_uid FROM server_members \
                 WHERE server_id = $1 AND user_uid IS NOT NULL AND left_at IS NULL) \
             AND (LOWER(p.display_name) LIKE $2 ESCAPE '\\' OR LOWER(p.user_uid) LIKE $2 ESCAPE '\\') \
             ORDER BY 3, 2 LIMIT $4",
                &[
                    Param::Text(info.server_id.as_str()),
                    Param::Text(&pattern),
                    Param::Text(channel_id.as_str()),
                    Param::Int(limit as i64),
                ],
            )
            .await?;
        for row in &people {
            let name = row.text(1)?;
            results.push(MentionRecord {
                kind: "user",
                token: format!("@{}", name.split_whitespace().collect::<Vec<_>>().join("_")),
                target_id: row.text(0)?,
                display_text: name,
            });
        }
        let channels = db
        .query(
            "SELECT id, name FROM channels WHERE server_id = $1 AND kind = 'text' AND LOWER(name) LIKE $2 ESCAPE '\\' \
             ORDER BY position, id LIMIT $3",
            &[Param::Text(info.server_id.as_str()), Param::Text(&pattern), Param::Int(limit as i64)],
        )
        .await?;
        for row in &channels {
            let name = row.text(1)?;
            results.push(MentionRecord {
                kind: "channel",
                token: format!("#{name}"),
                target_id: row.text(0)?,
                display_text: name,
            });
        }
        results.truncate(limit);
        Ok(results)
    }
}
