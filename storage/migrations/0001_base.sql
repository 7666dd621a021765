-- Base schema: the instance, servers (communities), channel groups, channels, server
-- members, profiles and plain messages. Shared by SQLite and Postgres: only portable SQL,
-- BIGINT for every integer (SQLite gives it INTEGER affinity), times in Unix seconds.

CREATE TABLE instance_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE servers (
    id                 TEXT PRIMARY KEY,
    display_name       TEXT NOT NULL,
    description        TEXT NOT NULL DEFAULT '',
    banner_preset      TEXT NOT NULL DEFAULT 'ocean',
    icon_text          TEXT NOT NULL,
    trust_state        TEXT NOT NULL CHECK (trust_state IN ('verified', 'unverified')),
    handshake_strategy TEXT NOT NULL CHECK (handshake_strategy IN ('challenge_signature', 'token_proof')),
    uid_policy         TEXT NOT NULL CHECK (uid_policy IN ('server_scoped', 'global', 'either')),
    owner_uid          TEXT,
    created_by_uid     TEXT,
    created_at         BIGINT NOT NULL,
    updated_by_uid     TEXT,
    updated_at         BIGINT NOT NULL,
    position           BIGINT NOT NULL
);

CREATE TABLE channel_groups (
    id         TEXT PRIMARY KEY,
    server_id  TEXT NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    label      TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('text', 'voice')),
    position   BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX channel_groups_by_server ON channel_groups (server_id, position);

CREATE TABLE channels (
    id         TEXT PRIMARY KEY,
    server_id  TEXT NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    group_id   TEXT NOT NULL REFERENCES channel_groups (id),
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('text', 'voice')),
    position   BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX channels_by_group ON channels (group_id, position);
CREATE INDEX channels_by_server ON channels (server_id);

CREATE TABLE server_members (
    server_id    TEXT NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    member_id    TEXT NOT NULL,
    user_uid     TEXT,
    display_name TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('online', 'idle', 'dnd')),
    position     BIGINT NOT NULL,
    joined_at    BIGINT NOT NULL,
    left_at      BIGINT,
    PRIMARY KEY (server_id, member_id)
);
CREATE UNIQUE INDEX server_members_by_uid ON server_members (server_id, user_uid) WHERE user_uid IS NOT NULL;

CREATE TABLE profiles (
    user_uid         TEXT PRIMARY KEY,
    display_name     TEXT NOT NULL,
    avatar_mode      TEXT NOT NULL CHECK (avatar_mode IN ('generated', 'uploaded')),
    avatar_preset_id TEXT,
    avatar_asset_id  TEXT,
    profile_version  BIGINT NOT NULL CHECK (profile_version >= 1),
    updated_at       BIGINT NOT NULL
);

CREATE TABLE messages (
    id          TEXT PRIMARY KEY,
    channel_id  TEXT NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    seq         BIGINT NOT NULL,
    author_uid  TEXT NOT NULL,
    body        TEXT NOT NULL,
    reply_to_id TEXT,
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT,
    UNIQUE (channel_id, seq)
);
