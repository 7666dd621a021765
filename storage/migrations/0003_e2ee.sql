-- End-to-end-encrypted channels (E2EE.md): membership timelines and epochs, envelopes on
-- messages, devices and link requests, KeyPackages, key envelopes, backups, challenges and
-- sessions. The server stores opaque blobs (base64url text); it never interprets them.

ALTER TABLE channels ADD COLUMN e2ee BIGINT NOT NULL DEFAULT 0;
ALTER TABLE channels ADD COLUMN current_epoch BIGINT;
ALTER TABLE channels ADD COLUMN created_by_uid TEXT;

-- Append-only: a user who leaves gets to_epoch; a later rejoin is a new row.
CREATE TABLE channel_membership (
    channel_id TEXT NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    user_uid   TEXT NOT NULL,
    from_epoch BIGINT NOT NULL,
    to_epoch   BIGINT,
    PRIMARY KEY (channel_id, user_uid, from_epoch)
);
CREATE INDEX channel_membership_by_user ON channel_membership (user_uid, channel_id);

-- One row per epoch; the commit columns are set exactly once (committed_at IS NULL guard).
CREATE TABLE channel_epochs (
    channel_id          TEXT NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    epoch_id            BIGINT NOT NULL,
    cause               TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    committer_device_id TEXT,
    commit_payload      TEXT,
    signature           TEXT,
    committed_at        BIGINT,
    PRIMARY KEY (channel_id, epoch_id)
);

ALTER TABLE messages ADD COLUMN epoch_id BIGINT;
ALTER TABLE messages ADD COLUMN sender_device_id TEXT;
ALTER TABLE messages ADD COLUMN ciphertext TEXT;
ALTER TABLE messages ADD COLUMN nonce TEXT;
ALTER TABLE messages ADD COLUMN aad TEXT;

CREATE TABLE devices (
    device_id     TEXT PRIMARY KEY,
    user_uid      TEXT NOT NULL,
    device_pubkey TEXT NOT NULL,
    device_name   TEXT,
    status        TEXT NOT NULL CHECK (status IN ('active', 'pending', 'revoked')),
    created_at    BIGINT NOT NULL,
    revoked_at    BIGINT
);
CREATE INDEX devices_by_user ON devices (user_uid, created_at);

CREATE TABLE device_links (
    request_id TEXT PRIMARY KEY,
    user_uid   TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    decided_at BIGINT
);

CREATE TABLE key_packages (
    id          BIGINT PRIMARY KEY,
    device_id   TEXT NOT NULL,
    user_uid    TEXT NOT NULL,
    key_package TEXT NOT NULL,
    last_resort BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX key_packages_by_device ON key_packages (device_id, last_resort, id);

CREATE TABLE key_envelopes (
    envelope_id      BIGINT PRIMARY KEY,
    target_device_id TEXT NOT NULL,
    channel_id       TEXT NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    epoch_id         BIGINT NOT NULL,
    sender_device_id TEXT NOT NULL,
    blob             TEXT NOT NULL,
    created_at       BIGINT NOT NULL
);
CREATE INDEX key_envelopes_by_target ON key_envelopes (target_device_id, envelope_id);

CREATE TABLE key_backups (
    backup_id       TEXT PRIMARY KEY,
    user_uid        TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    ciphertext_blob TEXT NOT NULL,
    kdf_metadata    TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX key_backups_by_user ON key_backups (user_uid, seq);

CREATE TABLE auth_challenges (
    challenge_id TEXT PRIMARY KEY,
    user_uid     TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    nonce        TEXT NOT NULL,
    expires_at   BIGINT NOT NULL,
    used_at      BIGINT
);

-- Session tokens are stored as SHA-256 digests only.
CREATE TABLE sessions (
    token_sha256 TEXT PRIMARY KEY,
    user_uid     TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    scope        TEXT NOT NULL CHECK (scope IN ('full', 'link')),
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);
CREATE INDEX sessions_by_device ON sessions (device_id);
