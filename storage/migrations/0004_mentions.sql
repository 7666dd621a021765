-- Mentions parsed from message bodies (WIRE.md §2.4): one row per mention, in body order,
-- with whom it notifies (`notify_uid`: a user, '*' for @here/@channel/@everyone, NULL for a
-- #channel reference) so a reader's mention count is one indexed count.
CREATE TABLE message_mentions (
    message_id   TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    channel_id   TEXT NOT NULL,
    position     BIGINT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('user', 'channel')),
    token        TEXT NOT NULL,
    target_id    TEXT NOT NULL,
    display_text TEXT NOT NULL,
    range_start  BIGINT NOT NULL,
    range_end    BIGINT NOT NULL,
    notify_uid   TEXT,
    PRIMARY KEY (message_id, position)
);
CREATE INDEX message_mentions_by_notify ON message_mentions (channel_id, notify_uid);
