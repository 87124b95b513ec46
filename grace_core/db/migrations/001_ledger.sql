-- The spine: the hash-chained ledger, the workspace's own metadata and secrets, mesh cursors and dead letters,
-- checkpoints, loop parameters and sampled metrics.
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER NOT NULL,
    name VARCHAR NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL
);

-- No primary key or index on purpose: an ART index halves append throughput, and DuckDB scans are fast.
-- Tampering is caught by the hash chain, not by constraints.
CREATE TABLE events (
    seq BIGINT NOT NULL,
    id VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    topic VARCHAR NOT NULL,
    actor VARCHAR NOT NULL,
    resource VARCHAR,
    payload VARCHAR NOT NULL,          -- canonical JSON text, exactly the bytes that were hashed
    parent_id VARCHAR,
    correlation_id VARCHAR NOT NULL,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL
);

-- Not projections: operational state that never goes on the ledger.
CREATE TABLE workspace_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
CREATE TABLE workspace_secrets (name VARCHAR PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE cursors (name VARCHAR PRIMARY KEY, seq BIGINT NOT NULL);

-- Projections (rebuilt by replay).
CREATE TABLE signing_keys (
    key_name VARCHAR NOT NULL,
    verifier_key VARCHAR NOT NULL,
    event_id VARCHAR NOT NULL
);
CREATE TABLE checkpoints (
    size BIGINT NOT NULL,
    root BLOB NOT NULL,
    chain_hash BLOB NOT NULL,
    note VARCHAR NOT NULL,
    event_id VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL
);
CREATE TABLE dead_letters (
    event_id VARCHAR NOT NULL,          -- the delivery_failed event
    failed_event_id VARCHAR NOT NULL,
    failed_seq BIGINT NOT NULL,
    topic VARCHAR NOT NULL,
    subscriber VARCHAR NOT NULL,
    attempts INTEGER NOT NULL,
    error VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    replayed_at TIMESTAMPTZ
);
CREATE TABLE loop_params (
    loop VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    value VARCHAR NOT NULL,             -- JSON
    event_id VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL
);
CREATE TABLE metric_samples (
    ts TIMESTAMPTZ NOT NULL,
    name VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,              -- gauge | counter | histogram (an observation)
    labels VARCHAR NOT NULL,            -- canonical JSON object
    value DOUBLE NOT NULL,
    event_id VARCHAR NOT NULL
);
