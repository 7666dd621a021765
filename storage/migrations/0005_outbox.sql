-- The realtime outbox (cluster mode): an event is written in the same transaction as the
-- change it reports, then relayed to NATS JetStream and deleted. `(node_id, seq)` is the
-- event's NATS message id, so a relay repeated after a crash is dropped by JetStream's
-- duplicate window. `seq` comes from `outbox_counters` and is never reused, even after
-- the rows below it were relayed and deleted.
CREATE TABLE outbox_counters (
    node_id  TEXT PRIMARY KEY,
    last_seq BIGINT NOT NULL
);
CREATE TABLE realtime_outbox (
    node_id    TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    audience   TEXT NOT NULL,
    payload    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (node_id, seq)
);
