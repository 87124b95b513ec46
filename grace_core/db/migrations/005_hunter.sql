-- Hunter: its rules and its alerts (projections of the hunter.* events).
CREATE TABLE hunter_rules (
    id VARCHAR PRIMARY KEY,
    position INTEGER NOT NULL,         -- order of evaluation: the pack's order, then rules as they were added
    description VARCHAR NOT NULL,
    severity VARCHAR NOT NULL,         -- info | low | medium | high | critical
    category VARCHAR NOT NULL,         -- secret | injection | code | sqli | traversal | other
    targets VARCHAR NOT NULL,          -- JSON array of chat, code, memory, file, task
    enabled BOOLEAN NOT NULL,
    source VARCHAR NOT NULL,           -- 'pack:<name>' or 'added'
    version INTEGER NOT NULL,          -- 1 when loaded or added, one more per update
    definition VARCHAR NOT NULL,       -- the rule as canonical JSON: what the scanner compiles
    updated_by VARCHAR NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    event_id VARCHAR NOT NULL          -- the event that last changed the rule
);
CREATE TABLE hunter_alerts (
    id VARCHAR PRIMARY KEY,            -- the id of the hunter.alert event
    ts TIMESTAMPTZ NOT NULL,
    rule VARCHAR NOT NULL,
    severity VARCHAR NOT NULL,
    target VARCHAR NOT NULL,
    actor VARCHAR NOT NULL,            -- whose text was screened
    resource VARCHAR,
    count INTEGER NOT NULL,            -- occurrences of the rule in that text
    scan VARCHAR NOT NULL,             -- alerts of one screened text share it
    excerpts VARCHAR NOT NULL,         -- JSON array of masked excerpts
    notified_at TIMESTAMPTZ,           -- set by the hunter.notification that ends the alert's fan-out
    task_id VARCHAR,
    memory_path VARCHAR
);
