-- Tasks and the file-explorer memory (projections; issues on the executor and memory extend them).
CREATE TABLE tasks (
    id VARCHAR PRIMARY KEY,            -- the id of the task.created event
    kind VARCHAR NOT NULL,
    title VARCHAR NOT NULL,
    state VARCHAR NOT NULL,            -- pending | running | done | failed | cancelled
    priority INTEGER NOT NULL,
    key VARCHAR,                       -- deduplication key: one open task per key
    details VARCHAR NOT NULL,          -- JSON object
    created_by VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    result VARCHAR                     -- JSON, set by the last transition that carried one
);
CREATE TABLE memory_items (
    path VARCHAR PRIMARY KEY,
    id VARCHAR NOT NULL,               -- the id of the event that created it
    content_type VARCHAR NOT NULL,
    tags VARCHAR NOT NULL,             -- JSON array
    owner VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    deleted BOOLEAN NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE memory_versions (
    path VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    content VARCHAR NOT NULL,
    content_type VARCHAR NOT NULL,
    actor VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    event_id VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL
);
