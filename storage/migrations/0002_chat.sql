-- Chat: per-user server leaves, ownership claims, attachments, avatar assets, read acks.

CREATE TABLE server_leaves (
    server_id TEXT NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    user_uid  TEXT NOT NULL,
    left_at   BIGINT NOT NULL,
    PRIMARY KEY (server_id, user_uid)
);

CREATE TABLE ownership_claims (
    token_hash     TEXT PRIMARY KEY,
    server_id      TEXT NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    created_by_uid TEXT NOT NULL,
    expires_at     BIGINT NOT NULL,
    claimed_by_uid TEXT,
    claimed_at     BIGINT
);

CREATE TABLE attachments (
    id           TEXT PRIMARY KEY,
    channel_id   TEXT NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    message_id   TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    position     BIGINT NOT NULL,
    file_name    TEXT NOT NULL,
    content_type TEXT NOT NULL,
    bytes        BIGINT NOT NULL,
    width        BIGINT NOT NULL,
    height       BIGINT NOT NULL,
    sha256       TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX attachments_by_message ON attachments (message_id, position);

CREATE TABLE avatar_assets (
    id              TEXT PRIMARY KEY,
    content_type    TEXT NOT NULL,
    bytes           BIGINT NOT NULL,
    width           BIGINT NOT NULL,
    height          BIGINT NOT NULL,
    sha256          TEXT NOT NULL,
    uploaded_by_uid TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);

CREATE TABLE read_acks (
    channel_id           TEXT NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    user_uid             TEXT NOT NULL,
    last_read_message_id TEXT,
    cursor_index         BIGINT NOT NULL,
    acked_at             BIGINT NOT NULL,
    PRIMARY KEY (channel_id, user_uid)
);

CREATE INDEX messages_live_by_channel ON messages (channel_id, seq) WHERE deleted_at IS NULL;
CREATE INDEX messages_by_author ON messages (channel_id, author_uid);
