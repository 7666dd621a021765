-- Join tickets are single-use across every node of a cluster: the first node to see a
-- ticket id records it here; any later use (on any node) finds it and is refused. Rows
-- are kept until the ticket expires.
CREATE TABLE used_tickets (
    jti        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX used_tickets_expiry ON used_tickets (expires_at);
