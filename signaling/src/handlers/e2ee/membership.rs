//! Membership and epochs: members, epoch rotation and commits, history.

use super::*;

#[derive(Debug, Deserialize, ToSchema)]
pub struct AddMemberBody {
    pub user_uid: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MembershipDto {
    pub channel_id: String,
    pub user_uid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_epoch: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_epoch: Option<i64>,
    pub current_epoch: i64,
}

/// `chat.membership.updated` to the members and the departed user.
fn membership_events(change: &openchat_storage::e2ee::MembershipChange) -> Vec<Event> {
    Event::only(
        "chat.membership.updated",
        Audience::Users(Arc::from(change.audience.clone())),
        &serde_json::json!({
            "channel_id": change.channel_id.as_str(),
            "user_uid": change.user_uid.as_str(),
            "change": change.change,
            "current_epoch": change.current_epoch,
        }),
    )
}

/// Adds a member to an e2ee channel (a member adds someone; a user may add itself only with
/// `OPENCHAT_E2EE_SELF_JOIN=true`, in every mode). The epoch advances.
#[utoipa::path(post, path = "/v1/channels/{channel_id}/members", tag = "e2ee", request_body = AddMemberBody,
    params(("channel_id" = String, Path)), responses((status = 200, body = MembershipDto), GenericErrors))]
pub(crate) async fn add_member(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let channel = channel_id(&ctx)?;
    let actor = actor(&ctx)?;
    let body: AddMemberBody = read_json(ctx.request, JSON_BODY_BYTES_MAX).await?;
    let user = user_field(&body.user_uid)?;
    let op = queries::e2ee::AddMember {
        actor,
        channel,
        user,
        self_join: state.config.e2ee_self_join,
        now: ctx.now,
    };
    let change = state.run_publishing(op, membership_events).await?;
    let body = MembershipDto {
        channel_id: change.channel_id.to_string(),
        user_uid: change.user_uid.to_string(),
        from_epoch: change.from_epoch,
        to_epoch: None,
        current_epoch: change.current_epoch,
    };
    Ok(json(StatusCode::OK, &body))
}

/// Removes a member (self: leave; someone else: the channel's creator or the server's
/// owner). The epoch advances.
#[utoipa::path(delete, path = "/v1/channels/{channel_id}/members/{user_uid}", tag = "e2ee",
    params(("channel_id" = String, Path), ("user_uid" = String, Path)),
    responses((status = 200, body = MembershipDto), GenericErrors))]
pub(crate) async fn remove_member(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let channel = channel_id(&ctx)?;
    let actor = actor(&ctx)?;
    let user = ctx.id("user_uid", UserUid::parse, "member_not_found")?;
    let op = queries::e2ee::RemoveMember {
        actor,
        channel,
        user,
        now: ctx.now,
    };
    let change = state.run_publishing(op, membership_events).await?;
    let body = MembershipDto {
        channel_id: change.channel_id.to_string(),
        user_uid: change.user_uid.to_string(),
        from_epoch: None,
        to_epoch: change.to_epoch,
        current_epoch: change.current_epoch,
    };
    Ok(json(StatusCode::OK, &body))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CurrentEpochDto {
    pub current_epoch: i64,
}

/// Starts a new epoch (any member; e.g. after a device revocation). Rate-limited per member
/// and channel (429).
#[utoipa::path(post, path = "/v1/channels/{channel_id}/epochs/rotate", tag = "e2ee",
    params(("channel_id" = String, Path)), responses((status = 200, body = CurrentEpochDto), GenericErrors))]
pub(crate) async fn rotate_epoch(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let channel = channel_id(&ctx)?;
    state
        .limiters
        .check_rotation(channel.as_str(), ctx.user()?.as_str())
        .map_err(ApiError::rate_limited)?;
    let op = queries::e2ee::Rotate {
        actor: actor(&ctx)?,
        channel,
        now: ctx.now,
    };
    let (current_epoch, _) = state.run(op).await?;
    Ok(json(StatusCode::OK, &CurrentEpochDto { current_epoch }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EpochDto {
    pub epoch_id: i64,
    pub cause: String,
    pub committed: bool,
    pub created_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SpanDto {
    pub from_epoch: i64,
    pub to_epoch: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EpochsDto {
    pub channel_id: String,
    pub current_epoch: i64,
    pub epochs: Vec<EpochDto>,
    pub my_membership: Vec<SpanDto>,
}

/// The epochs the caller belonged to.
#[utoipa::path(get, path = "/v1/channels/{channel_id}/epochs", tag = "e2ee",
    params(("channel_id" = String, Path)), responses((status = 200, body = EpochsDto), GenericErrors))]
pub(crate) async fn epochs(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let op = queries::e2ee::Epochs {
        actor: actor(&ctx)?,
        channel: channel_id(&ctx)?,
    };
    let list = state.run(op).await?;
    Ok(json(
        StatusCode::OK,
        &EpochsDto {
            channel_id: list.channel_id.to_string(),
            current_epoch: list.current_epoch,
            epochs: list
                .epochs
                .into_iter()
                .map(|e| EpochDto {
                    epoch_id: e.epoch_id,
                    cause: e.cause,
                    committed: e.committed,
                    created_at: rfc3339(e.created_at),
                })
                .collect(),
            my_membership: list
                .my_membership
                .into_iter()
                .map(|(from_epoch, to_epoch)| SpanDto { from_epoch, to_epoch })
                .collect(),
        },
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CommitBody {
    #[serde(deserialize_with = "crate::dto::whole_number")]
    pub epoch_id: i64,
    pub committer_device_id: String,
    pub commit_payload: String,
    pub signature: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CommittedDto {
    pub epoch_id: i64,
    pub committed_at: String,
}

/// Stores the one commit of the current epoch (exactly one per epoch; the loser of a race
/// gets `epoch_commit_exists`).
#[utoipa::path(post, path = "/v1/channels/{channel_id}/membership/commit", tag = "e2ee", request_body = CommitBody,
    params(("channel_id" = String, Path)), responses((status = 201, body = CommittedDto), GenericErrors))]
pub(crate) async fn commit(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let channel = channel_id(&ctx)?;
    let actor = actor(&ctx)?;
    let body: CommitBody = read_json(ctx.request, KEY_BODY_BYTES_MAX).await?;
    same_device(&actor, &body.committer_device_id)?;
    blob("commit_payload", &body.commit_payload, COMMIT_PAYLOAD_BYTES_MAX)?;
    blob("signature", &body.signature, E2EE_SMALL_BLOB_BYTES_MAX)?;
    let op = queries::e2ee::Commit {
        actor,
        channel: channel.clone(),
        epoch_id: body.epoch_id,
        commit_payload: body.commit_payload,
        signature: body.signature,
        now: ctx.now,
    };
    let done = state
        .run_publishing(op, move |done| {
            Event::only(
                "chat.epoch.committed",
                Audience::Users(Arc::from(done.audience.as_slice())),
                &serde_json::json!({"channel_id": channel.as_str(), "epoch_id": done.epoch_id}),
            )
        })
        .await?;
    Ok(json(
        StatusCode::CREATED,
        &CommittedDto {
            epoch_id: done.epoch_id,
            committed_at: rfc3339(done.committed_at),
        },
    ))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CommitDto {
    pub epoch_id: i64,
    pub committer_device_id: String,
    pub commit_payload: String,
    pub signature: String,
    pub committed_at: String,
}

/// An epoch's commit, for members of that epoch or the one before.
#[utoipa::path(get, path = "/v1/channels/{channel_id}/epochs/{epoch_id}/commit", tag = "e2ee",
    params(("channel_id" = String, Path), ("epoch_id" = i64, Path)),
    responses((status = 200, body = CommitDto), GenericErrors))]
pub(crate) async fn fetch_commit(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let channel = channel_id(&ctx)?;
    let epoch_id: i64 = ctx
        .params
        .get("epoch_id")
        .parse()
        .map_err(|_| ApiError::not_found("epoch_not_committed", "no such epoch"))?;
    let op = queries::e2ee::FetchCommit {
        actor: actor(&ctx)?,
        channel,
        epoch_id,
    };
    let c = state.run(op).await?;
    Ok(json(
        StatusCode::OK,
        &CommitDto {
            epoch_id: c.epoch_id,
            committer_device_id: c.committer_device_id,
            commit_payload: c.commit_payload,
            signature: c.signature,
            committed_at: rfc3339(c.committed_at),
        },
    ))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HistoryDto {
    pub channel_id: String,
    pub messages: Vec<MessageDto>,
    /// Pass as `before` for the next older page; null at the start.
    pub next_cursor: Option<String>,
}

fn history_cursor(name: &str, raw: &str) -> Result<i64, ApiError> {
    super::super::cursor_sequence(raw).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_cursor",
            format!("{name} is not a cursor this server issued"),
        )
    })
}

/// A page of history, oldest first, as the caller may read it (an e2ee channel shows only
/// the epochs the caller was a member of).
#[utoipa::path(get, path = "/v1/channels/{channel_id}/history", tag = "e2ee",
    params(("channel_id" = String, Path), ("before" = Option<String>, Query), ("after" = Option<String>, Query), ("limit" = Option<usize>, Query)),
    responses((status = 200, body = HistoryDto), GenericErrors))]
pub(crate) async fn history(state: &Arc<AppState>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let channel = channel_id(&ctx)?;
    let viewer = ctx.user()?;
    let mut page = PageRequest {
        limit: HISTORY_PAGE_DEFAULT,
        before: None,
        after: None,
    };
    for (key, value) in ctx.query() {
        match key.as_str() {
            "limit" => {
                page.limit = super::super::query_number("limit", &value, 1, HISTORY_PAGE_MAX as u64)? as usize
            }
            "before" => page.before = Some(history_cursor("before", &value)?),
            "after" => page.after = Some(history_cursor("after", &value)?),
            _ => {}
        }
    }
    let result = state
        .run(queries::Messages {
            channel: channel.clone(),
            page,
            viewer: Some(viewer),
        })
        .await?;
    let base = state.base_url();
    Ok(json(
        StatusCode::OK,
        &HistoryDto {
            channel_id: channel.to_string(),
            messages: result.messages.iter().map(|m| MessageDto::new(base, m)).collect(),
            next_cursor: result.older_cursor.map(|seq| format!("c{seq}")),
        },
    ))
}
