-- Sandbox runs and remedy proposals: projections of the sandbox.* and remedy.* events.
CREATE TABLE sandbox_executions (
    id VARCHAR PRIMARY KEY,            -- the id of the sandbox.execution_requested event
    seq BIGINT NOT NULL,               -- its ledger sequence number
    actor VARCHAR NOT NULL,
    language VARCHAR NOT NULL,
    code_digest VARCHAR NOT NULL,      -- sha256 of the code as submitted
    code VARCHAR,                      -- as stored: secrets masked, at most 64 KiB
    code_truncated BOOLEAN NOT NULL,
    masked BOOLEAN NOT NULL,
    limits VARCHAR NOT NULL,           -- JSON object
    status VARCHAR NOT NULL,           -- requested | refused | completed | failed
    exit_code INTEGER,
    signal INTEGER,
    limit_hit VARCHAR,
    stdout VARCHAR,                    -- excerpts, secrets masked
    stderr VARCHAR,
    stdout_truncated BOOLEAN,
    stderr_truncated BOOLEAN,
    duration_ms DOUBLE,
    peak_memory_kb BIGINT,
    isolation VARCHAR,                 -- JSON array of the layers used
    missing_layers VARCHAR,            -- JSON object: layer -> why it was missing
    reason VARCHAR,                    -- why a refused run was refused
    result_event VARCHAR,
    requested_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ
);
CREATE TABLE remedy_proposals (
    id VARCHAR PRIMARY KEY,            -- the id of the remedy.proposed event
    seq BIGINT NOT NULL,               -- its ledger sequence number
    execution VARCHAR NOT NULL,        -- the failed run it is for
    kind VARCHAR NOT NULL,             -- missing_import | misspelled_name | syntax | lint | timeout | memory | ...
    summary VARCHAR NOT NULL,
    line INTEGER,
    diff VARCHAR NOT NULL,             -- unified diff; empty for advice
    patched_code VARCHAR,              -- NULL for advice
    state VARCHAR NOT NULL,            -- proposed | worked | failed | advice
    applied_execution VARCHAR,
    applied_by VARCHAR,
    proposed_at TIMESTAMPTZ NOT NULL,
    applied_at TIMESTAMPTZ
);
