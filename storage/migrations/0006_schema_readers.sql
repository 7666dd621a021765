-- Rolling upgrades: for each schema version, the oldest schema version whose binary still
-- runs correctly on it. A binary that finds the database newer than itself starts when
-- the newest version's `oldest_reader` is at or below its own version (the newer release
-- only added), and refuses otherwise.
CREATE TABLE schema_readers (
    version       BIGINT PRIMARY KEY,
    oldest_reader BIGINT NOT NULL
);
