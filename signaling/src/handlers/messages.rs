//! Messages, attachments, mentions and read acks (WIRE.md §2.4).

use std::sync::Arc;

use http::{Response, StatusCode, header};
use openchat_core::limits::{
    ATTACHMENT_HEIGHT_PX_MAX, ATTACHMENT_PIXELS_MAX, ATTACHMENT_WIDTH_PX_MAX, ATTACHMENTS_PER_MESSAGE_MAX,
    JSON_BODY_BYTES_MAX, MENTION_RESULTS_MAX, MESSAGES_PAGE_DEFAULT, MESSAGES_PAGE_MAX,
};
use openchat_core::{AttachmentId, ChannelId, MessageId};
use openchat_storage::queries;
use openchat_storage::{AttachmentRecord, NewMessage, PageRequest};

use super::new_id;
use crate::body::{Body, full, json, parse_json, read_body};
use crate::dto::{
    CreateMessageBody, MentionDto, MentionsDto, MessageCreatedDto, MessageDto, MessagesDto, ReadAckBody,
    ReadAckDto, ReadAckEnvelopeDto, ReadAckPutDto,
};
use crate::error::ApiError;
use crate::error::GenericErrors;
use crate::realtime::Audience;
use crate::routes::BodyLimit;
use crate::state::{AppState, Ctx, Event};
use crate::upload::{self, FormLimits, Sniffed, UploadError};

fn channel_id(ctx: &Ctx) -> Result<ChannelId, ApiError> {
    ctx.id("channel_id", ChannelId::parse, "channel_not_found")
}

/// History cursors are opaque to clients: `c<sequence>`.
fn cursor(seq: i64) -> String {
    format!("c{seq}")
}

fn parse_cursor(name: &str, raw: &str) -> Result<i64, ApiError> {
    super::cursor_sequence(raw)
        .ok_or_else(|| ApiError::invalid_query(format!("{name} is not a cursor this server issued")))
}

/// The last `limit` messages, oldest first; `before`/`after` page through older or newer ones.
#[utoipa::path(get, path = "/v1/channels/{channel_id}/messages", tag = "messages",
    params(("channel_id" = String, Path), ("limit" = Option<usize>, Query), ("before" = Option<String>, Query), ("after" = Option<String>, Query)),
    responses((status = 200, body = MessagesDto), GenericErrors))]
pub(crate) async fn list_messages(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let channel = channel_id(&ctx)?;
    let mut page = PageRequest {
        limit: MESSAGES_PAGE_DEFAULT,
        before: None,
        after: None,
    };
    for (key, value) in ctx.query() {
        match key.as_str() {
            // Go ignored a limit it could not use; we say so (the client always sends 150).
            "limit" => {
                page.limit = super::query_number("limit", &value, 1, MESSAGES_PAGE_MAX as u64)? as usize
            }
            "before" => page.before = Some(parse_cursor("before", &value)?),
            "after" => page.after = Some(parse_cursor("after", &value)?),
            _ => {}
        }
    }
    // The caller's view: an e2ee channel shows only the epochs they belonged to. The route
    // is public (the client reads history without identity); without one, an e2ee channel
    // shows nothing.
    let viewer = match &ctx.identity {
        Some(identity) => Some(identity.user_uid.clone()),
        // Session mode never trusts headers.
        None if state.config.session_auth => None,
        None => crate::identity::identity(ctx.request.headers(), state.config.production)
            .ok()
            .map(|identity| identity.user_uid),
    };
    let result = state
        .run(queries::Messages {
            channel: channel.clone(),
            page,
            viewer,
        })
        .await?;
    let base = state.base_url();
    let body = MessagesDto {
        channel_id: channel.to_string(),
        messages: result.messages.iter().map(|m| MessageDto::new(base, m)).collect(),
        next_cursor: result.older_cursor.map(cursor),
    };
    Ok(json(StatusCode::OK, &body))
}

fn upload_error(err: UploadError, limit: u64) -> ApiError {
    match err {
        UploadError::BodyTooLarge(_) => ApiError::payload_too_large(limit as usize),
        UploadError::FileTooLarge(max) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "attachment_too_large",
            format!("a file exceeds {max} bytes"),
        ),
        UploadError::TooManyFiles(max) => ApiError::bad_request(
            "attachment_count_exceeded",
            format!("at most {max} files per message"),
        ),
        UploadError::Malformed(reason) => ApiError::invalid_payload(reason),
        UploadError::TooSlow => ApiError::request_timeout(),
        UploadError::Io(err) => {
            tracing::error!(error = %err, "storing an upload failed");
            ApiError::internal()
        }
    }
}

const MESSAGE_IMAGE_TYPES: [&str; 3] = ["image/png", "image/jpeg", "image/gif"];

/// Checks an uploaded message image: the declared type (if any) and the sniffed bytes
/// must both be png, jpeg or gif, and the header must give its dimensions.
fn message_image(declared: Option<&str>, head: &[u8]) -> Result<upload::ImageInfo, ApiError> {
    let unsupported = || {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "attachment_type_unsupported",
            "images must be png, jpeg or gif",
        )
    };
    let declared = upload::declared_mime(declared);
    if declared
        .as_deref()
        .is_some_and(|mime| !MESSAGE_IMAGE_TYPES.contains(&mime))
    {
        return Err(unsupported());
    }
    match upload::sniff(head) {
        Sniffed::Image(info) if MESSAGE_IMAGE_TYPES.contains(&info.mime) => check_dimensions(info),
        Sniffed::Image(_) | Sniffed::OtherFormat => Err(unsupported()),
        Sniffed::Unreadable if declared.is_some() => Err(ApiError::bad_request(
            "attachment_invalid_image",
            "the image does not decode",
        )),
        Sniffed::Unreadable => Err(unsupported()),
    }
}

/// Refuses an image larger than the attachment limits, naming the limit it breaks.
fn check_dimensions(info: upload::ImageInfo) -> Result<upload::ImageInfo, ApiError> {
    let too_big = |what: String| ApiError::bad_request("attachment_invalid_image", what);
    if info.width > ATTACHMENT_WIDTH_PX_MAX {
        return Err(too_big(format!(
            "the image is {} pixels wide; at most {ATTACHMENT_WIDTH_PX_MAX} (max_attachment_width)",
            info.width
        )));
    }
    if info.height > ATTACHMENT_HEIGHT_PX_MAX {
        return Err(too_big(format!(
            "the image is {} pixels high; at most {ATTACHMENT_HEIGHT_PX_MAX} (max_attachment_height)",
            info.height
        )));
    }
    let pixels = u64::from(info.width) * u64::from(info.height);
    if pixels > ATTACHMENT_PIXELS_MAX {
        return Err(too_big(format!(
            "the image has {pixels} pixels; at most {ATTACHMENT_PIXELS_MAX} (max_attachment_pixels)"
        )));
    }
    Ok(info)
}

/// Posts a message: JSON `{body, reply_to_message_id?}` or `multipart/form-data` with up to
/// four image parts named `files`. Emits `chat.message.created` to the channel's
/// subscribers and to every socket of its server.
#[utoipa::path(post, path = "/v1/channels/{channel_id}/messages", tag = "messages", request_body = CreateMessageBody,
    params(("channel_id" = String, Path)),
    responses(
        (status = 201, body = MessageCreatedDto),
        (status = 415, description = "attachment_type_unsupported", body = crate::error::ErrorEnvelope),
        GenericErrors
    ))]
pub(crate) async fn create_message(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let channel = channel_id(&ctx)?;
    let author = ctx.user()?;
    let limits = state.config.limits;
    let content_type = ctx.header(header::CONTENT_TYPE.as_str()).map(str::to_owned);
    let body_limit = state.config.body_limit(BodyLimit::Message);
    let device = ctx.who()?.device_id.clone();
    let mut envelope = None;
    let (body, reply_to, files) = match upload::boundary(content_type.as_deref()) {
        Some(boundary) => {
            let form_limits = FormLimits {
                body_bytes_max: body_limit,
                file_bytes_max: limits.max_upload_bytes,
                files_max: ATTACHMENTS_PER_MESSAGE_MAX,
                file_field: "files",
            };
            let form = upload::read_form(ctx.request.into_body(), boundary, form_limits, &state.blobs)
                .await
                .map_err(|e| upload_error(e, body_limit))?;
            let body = form.text("body").unwrap_or_default().to_owned();
            let reply = form.text("reply_to_message_id").map(str::to_owned);
            (body, reply, form.files)
        }
        None => {
            let bytes = read_body(
                ctx.request,
                (limits.max_message_bytes as usize).saturating_mul(2) + JSON_BODY_BYTES_MAX,
            )
            .await?;
            let parsed: CreateMessageBody = parse_json(&bytes)?;
            if parsed.body.is_none() && parsed.envelope.is_none() {
                return Err(ApiError::invalid_payload("body is required"));
            }
            envelope = parsed.envelope;
            (
                parsed.body.unwrap_or_default(),
                parsed.reply_to_message_id,
                Vec::new(),
            )
        }
    };
    let body = body.trim().to_owned();
    let envelope = match envelope {
        None => None,
        Some(_) if !body.is_empty() => {
            return Err(ApiError::bad_request(
                "plaintext_not_allowed",
                "send either a body or an envelope, not both",
            ));
        }
        Some(envelope) => Some(super::e2ee::message_envelope(
            envelope,
            &device,
            limits.max_message_bytes,
        )?),
    };
    if body.len() as u64 > limits.max_message_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the message body exceeds {} bytes", limits.max_message_bytes),
        ));
    }
    if body.is_empty() && files.is_empty() && envelope.is_none() {
        return Err(ApiError::bad_request(
            "message_empty",
            "a message needs a body or an attachment",
        ));
    }
    let reply_to = match reply_to.as_deref().map(str::trim).filter(|id| !id.is_empty()) {
        None => None,
        Some(raw) => Some(MessageId::parse(raw).map_err(|_| {
            ApiError::bad_request(
                "reply_target_not_found",
                "the reply target is not in this channel",
            )
        })?),
    };
    // Validate every file before storing any: a refused message leaves nothing behind.
    let mut checked = Vec::with_capacity(files.len());
    for file in files {
        let info = message_image(file.declared_type.as_deref(), file.writer.head())?;
        checked.push((file, info));
    }
    let mut attachments = Vec::with_capacity(checked.len());
    for (file, info) in checked {
        let blob = file
            .writer
            .commit(&state.blobs)
            .await
            .map_err(|e| upload_error(UploadError::Io(e), body_limit))?;
        attachments.push(AttachmentRecord {
            id: AttachmentId::parse_owned(new_id("att")).map_err(|_| ApiError::internal())?,
            channel_id: channel.clone(),
            file_name: upload::file_name(file.file_name.as_deref(), info.mime),
            content_type: info.mime.to_owned(),
            bytes: blob.len as i64,
            width: i64::from(info.width),
            height: i64::from(info.height),
            sha256: blob.sha256,
        });
    }
    let new = NewMessage {
        id: MessageId::parse_owned(new_id("msg")).map_err(|_| ApiError::internal())?,
        channel: channel.clone(),
        author,
        body,
        reply_to,
        attachments,
        envelope,
        now: ctx.now,
    };
    // An e2ee message reaches only members of its epoch (live and on replay), read in the
    // write's transaction.
    let base = state.base_url().to_owned();
    let (message, _) = state
        .run_publishing(queries::PostMessage { new }, move |(message, epoch_members)| {
            let created = MessageCreatedDto {
                message: MessageDto::new(&base, message),
            };
            let audience = match epoch_members {
                None => Audience::ChannelAndServer {
                    channel: message.channel_id.clone(),
                    server: message.server_id.clone(),
                },
                Some(users) => Audience::ChannelMembers {
                    channel: message.channel_id.clone(),
                    server: message.server_id.clone(),
                    users: Arc::from(users.as_slice()),
                },
            };
            Event::only("chat.message.created", audience, &created)
        })
        .await?;
    let created = MessageCreatedDto {
        message: MessageDto::new(state.base_url(), &message),
    };
    Ok(json(StatusCode::CREATED, &created))
}

/// Deletes a message: its author may, and on an unclaimed server anyone, on a claimed one
/// the owner. 204 on success.
#[utoipa::path(delete, path = "/v1/channels/{channel_id}/messages/{message_id}", tag = "messages",
    params(("channel_id" = String, Path), ("message_id" = String, Path)),
    responses((status = 204, description = "deleted"), GenericErrors))]
pub(crate) async fn delete_message(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let channel = channel_id(&ctx)?;
    let message = ctx.id("message_id", MessageId::parse, "message_not_found")?;
    let actor = ctx.user()?;
    state
        .run(queries::DeleteMessage {
            channel,
            message,
            actor,
            now: ctx.now,
        })
        .await?;
    let mut response = Response::new(full(bytes::Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

/// The raw bytes of an attachment with their stored content type (one `Range` honoured).
#[utoipa::path(get, path = "/v1/channels/{channel_id}/attachments/{attachment_id}", tag = "messages",
    params(("channel_id" = String, Path), ("attachment_id" = String, Path)),
    responses(
        (status = 200, description = "the image bytes", content_type = "image/*"),
        (status = 206, description = "the requested range of the image bytes", content_type = "image/*"),
        (status = 416, description = "the range is outside the file"),
        GenericErrors
    ))]
pub(crate) async fn attachment(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let channel = channel_id(&ctx)?;
    let id = ctx.id("attachment_id", AttachmentId::parse, "attachment_not_found")?;
    let record = state
        .run(queries::Attachment {
            channel,
            attachment: id,
        })
        .await?;
    let blob = StoredFile {
        sha256: &record.sha256,
        bytes: record.bytes,
        content_type: &record.content_type,
    };
    blob_response(state, &ctx, blob, "attachment_not_found").await
}

/// A stored blob as its metadata describes it.
pub(crate) struct StoredFile<'a> {
    pub sha256: &'a str,
    /// The length recorded when the blob was stored.
    pub bytes: i64,
    pub content_type: &'a str,
}

/// A byte range of a blob: `Range: bytes=a-b`, `bytes=a-` or `bytes=-n` (one range only;
/// anything else is served whole, as RFC 9110 allows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeRequest {
    Whole,
    Part { start: u64, end: u64 },
    Unsatisfiable,
}

pub(crate) fn range_request(header: Option<&str>, len: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeRequest::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let parse = |raw: &str| raw.parse::<u64>().ok();
    match (first.is_empty(), last.is_empty()) {
        (true, true) => RangeRequest::Whole,
        (true, false) => match parse(last) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(suffix) if len > 0 => RangeRequest::Part {
                start: len.saturating_sub(suffix),
                end: len - 1,
            },
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Whole,
        },
        (false, _) => {
            let Some(start) = parse(first) else {
                return RangeRequest::Whole;
            };
            let end = if last.is_empty() {
                Some(u64::MAX)
            } else {
                parse(last)
            };
            match end {
                None => RangeRequest::Whole,
                Some(end) if end < start => RangeRequest::Whole,
                Some(_) if start >= len => RangeRequest::Unsatisfiable,
                Some(end) => RangeRequest::Part {
                    start,
                    end: end.min(len - 1),
                },
            }
        }
    }
}

/// A stored blob as a cacheable response, streamed from disk in bounded chunks.
pub(crate) async fn blob_response(
    state: &AppState,
    ctx: &Ctx,
    blob: StoredFile<'_>,
    missing_code: &'static str,
) -> Result<Response<Body>, ApiError> {
    let (file, len) = state.blobs.open_blob(blob.sha256).await.map_err(|err| {
        tracing::error!(error = %err, sha256 = blob.sha256, "a stored blob is missing");
        ApiError::not_found(missing_code, "the stored bytes are missing")
    })?;
    if u64::try_from(blob.bytes).ok() != Some(len) {
        tracing::error!(
            sha256 = blob.sha256,
            recorded = blob.bytes,
            on_disk = len,
            "a stored blob's length differs from its metadata"
        );
        return Err(ApiError::internal());
    }
    let range = range_request(ctx.header(header::RANGE.as_str()), len);
    let (status, start, count) = match range {
        RangeRequest::Whole => (StatusCode::OK, 0, len),
        RangeRequest::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        RangeRequest::Unsatisfiable => {
            let mut response = Response::new(full(bytes::Bytes::new()));
            *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            if let Ok(value) = header::HeaderValue::from_str(&format!("bytes */{len}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(response);
        }
    };
    let body = crate::blobs::stream_range(file, start, count)
        .await
        .map_err(|err| {
            tracing::error!(error = %err, "seeking in a blob failed");
            ApiError::internal()
        })?;
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(value) = header::HeaderValue::from_str(blob.content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from(count));
    headers.insert(header::ACCEPT_RANGES, header::HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(value) =
            header::HeaderValue::from_str(&format!("bytes {start}-{}/{len}", start + count - 1))
    {
        headers.insert(header::CONTENT_RANGE, value);
    }
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("public, max-age=300"),
    );
    headers.insert(
        "x-content-type-options",
        header::HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}

/// Mention candidates for the text after `@` (`[A-Za-z0-9_.-]*`, may be empty).
#[utoipa::path(get, path = "/v1/channels/{channel_id}/mentions:resolve", tag = "messages",
    params(("channel_id" = String, Path), ("query" = Option<String>, Query), ("limit" = Option<usize>, Query)),
    responses((status = 200, body = MentionsDto), GenericErrors))]
pub(crate) async fn mentions(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let channel = channel_id(&ctx)?;
    let mut query = String::new();
    let mut limit = 12;
    for (key, value) in ctx.query() {
        match key.as_str() {
            "query" => query = value,
            "limit" => limit = super::query_number("limit", &value, 1, MENTION_RESULTS_MAX as u64)? as usize,
            _ => {}
        }
    }
    let valid = query.len() <= 64
        && query
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !valid {
        return Err(ApiError::invalid_query("query must match [A-Za-z0-9_.-]{0,64}"));
    }
    let found = state
        .run(queries::Mentions {
            channel,
            query,
            limit,
        })
        .await?;
    let results = found
        .into_iter()
        .map(|m| MentionDto {
            kind: m.kind.into(),
            token: m.token,
            target_id: m.target_id,
            display_text: m.display_text,
        })
        .collect();
    Ok(json(StatusCode::OK, &MentionsDto { results }))
}

/// The caller's read marker in a channel (cursor 0 and no message when never acked).
#[utoipa::path(get, path = "/v1/channels/{channel_id}/read-ack", tag = "messages",
    params(("channel_id" = String, Path)), responses((status = 200, body = ReadAckEnvelopeDto), GenericErrors))]
pub(crate) async fn read_ack(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let channel = channel_id(&ctx)?;
    let who = ctx.user()?;
    let stored = state
        .run(queries::ReadAck {
            channel: channel.clone(),
            user: who.clone(),
        })
        .await?;
    let read_ack = stored
        .as_ref()
        .map(ReadAckDto::from)
        .unwrap_or_else(|| ReadAckDto {
            channel_id: channel.to_string(),
            user_uid: who.to_string(),
            last_read_message_id: None,
            acked_at: None,
            cursor_index: 0,
        });
    Ok(json(
        StatusCode::OK,
        &ReadAckEnvelopeDto {
            channel_id: channel.to_string(),
            read_ack,
        },
    ))
}

/// Moves the read marker forward (`{}` means "up to the latest message"); a stale ack
/// answers `applied: false` with the stored one. Emits `chat.read_ack.updated` to the
/// caller's sockets when applied.
#[utoipa::path(put, path = "/v1/channels/{channel_id}/read-ack", tag = "messages", request_body = ReadAckBody,
    params(("channel_id" = String, Path)), responses((status = 200, body = ReadAckPutDto), GenericErrors))]
pub(crate) async fn put_read_ack(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let channel = channel_id(&ctx)?;
    let who = ctx.user()?;
    let bytes = read_body(ctx.request, JSON_BODY_BYTES_MAX).await?;
    let body: ReadAckBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        ReadAckBody::default()
    } else {
        parse_json(&bytes)?
    };
    let message = match body
        .last_read_message_id
        .as_deref()
        .map(str::trim)
        .filter(|id| !id.is_empty())
    {
        None => None,
        Some(raw) => Some(
            MessageId::parse(raw)
                .map_err(|_| ApiError::not_found("message_not_found", "message not found"))?,
        ),
    };
    let query = queries::PutReadAck {
        channel: channel.clone(),
        user: who.clone(),
        message,
        now: ctx.now,
    };
    let (ack, applied, _) = state
        .run_publishing(query, move |(ack, applied, _)| match applied {
            true => Event::only(
                "chat.read_ack.updated",
                Audience::User(who),
                &ReadAckDto::from(ack),
            ),
            false => Vec::new(),
        })
        .await?;
    let read_ack = ReadAckDto::from(&ack);
    Ok(json(
        StatusCode::OK,
        &ReadAckPutDto {
            channel_id: channel.to_string(),
            read_ack,
            applied,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_foreign_values() {
        assert_eq!(parse_cursor("before", &cursor(42)).unwrap(), 42);
        for bad in ["42", "c-1", "cx", ""] {
            assert_eq!(parse_cursor("before", bad).unwrap_err().code, "invalid_query");
        }
    }

    #[test]
    fn ranges_follow_rfc_9110_for_one_range() {
        use RangeRequest::*;
        let cases: &[(Option<&str>, u64, RangeRequest)] = &[
            (None, 10, Whole),
            (Some("bytes=0-3"), 10, Part { start: 0, end: 3 }),
            (Some("bytes=5-"), 10, Part { start: 5, end: 9 }),
            (Some("bytes=4-100"), 10, Part { start: 4, end: 9 }),
            (Some("bytes=-3"), 10, Part { start: 7, end: 9 }),
            (Some("bytes=-30"), 10, Part { start: 0, end: 9 }),
            (Some("bytes=10-"), 10, Unsatisfiable),
            (Some("bytes=-0"), 10, Unsatisfiable),
            (Some("bytes=0-"), 0, Unsatisfiable),
            (Some("bytes=5-2"), 10, Whole),
            (Some("bytes=0-1,4-5"), 10, Whole),
            (Some("items=0-1"), 10, Whole),
            (Some("bytes=x-1"), 10, Whole),
        ];
        for (header, len, want) in cases {
            assert_eq!(range_request(*header, *len), *want, "{header:?} of {len}");
        }
    }

    #[test]
    fn message_images_must_be_png_jpeg_or_gif_by_their_bytes() {
        let png = crate::upload::tests::png(2, 3);
        assert_eq!(message_image(Some("image/png"), &png).unwrap().height, 3);
        assert_eq!(message_image(None, &png).unwrap().mime, "image/png");
        assert_eq!(
            message_image(Some("text/html"), &png).unwrap_err().code,
            "attachment_type_unsupported"
        );
        assert_eq!(
            message_image(Some("image/png"), b"garbage").unwrap_err().code,
            "attachment_invalid_image"
        );
        assert_eq!(
            message_image(None, b"garbage").unwrap_err().code,
            "attachment_type_unsupported"
        );
    }

    #[test]
    fn message_images_beyond_the_pixel_limits_are_refused_naming_the_limit() {
        use crate::upload::tests::png;
        let edge = png(ATTACHMENT_WIDTH_PX_MAX, 1);
        assert!(message_image(Some("image/png"), &edge).is_ok());
        let cases = [
            (png(ATTACHMENT_WIDTH_PX_MAX + 1, 1), "max_attachment_width"),
            (png(1, ATTACHMENT_HEIGHT_PX_MAX + 1), "max_attachment_height"),
            (png(100_000, 100_000), "max_attachment_width"),
            (png(8_000, 5_001), "max_attachment_pixels"),
            (png(i32::MAX as u32, i32::MAX as u32), "max_attachment_width"),
        ];
        for (image, limit) in cases {
            let err = message_image(Some("image/png"), &image).unwrap_err();
            assert_eq!(err.code, "attachment_invalid_image");
            assert!(err.message.contains(limit), "{}", err.message);
        }
    }
}
