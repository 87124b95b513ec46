-- Reflection and learning: projections of the reflection.* and learning.* events (replay rebuilds them).
CREATE TABLE insights (
    id VARCHAR PRIMARY KEY,            -- the id of the reflection.insight event
    kind VARCHAR NOT NULL,             -- chat_topic | failure_rate | alert_rate | unanswered | anomaly
    "key" VARCHAR NOT NULL,            -- the pattern it is about, e.g. alert:secret.aws_key
    text VARCHAR NOT NULL,
    score DOUBLE NOT NULL,
    evidence VARCHAR[] NOT NULL,       -- ids of the events it rests on (complete)
    evidence_count INTEGER NOT NULL,
    reflection INTEGER NOT NULL,       -- the number of the reflection that wrote it (1, 2, ...)
    trigger VARCHAR NOT NULL,          -- interval | importance
    window_start TIMESTAMPTZ NOT NULL,
    window_end TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE reflections (
    n INTEGER PRIMARY KEY,             -- 1, 2, ... in ledger order
    id VARCHAR NOT NULL,               -- the id of the reflection.completed event
    trigger VARCHAR NOT NULL,
    importance DOUBLE NOT NULL,        -- summed importance of the window's events
    events INTEGER NOT NULL,
    insights INTEGER NOT NULL,
    from_seq BIGINT NOT NULL,          -- the window is the events with from_seq < seq <= to_seq
    to_seq BIGINT NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    window_end TIMESTAMPTZ NOT NULL,
    baseline VARCHAR NOT NULL          -- JSON {topic: events per minute}, the rolling baseline after it
);
CREATE TABLE learned_rules (
    id VARCHAR PRIMARY KEY,            -- the id of its learning.rule_added event
    "key" VARCHAR NOT NULL,            -- the pattern the lesson is about
    text VARCHAR NOT NULL,
    votes INTEGER NOT NULL,
    state VARCHAR NOT NULL,            -- active | dropped (votes reached zero)
    support INTEGER NOT NULL,          -- insights that supported it
    last_reflection INTEGER NOT NULL,  -- the last reflection whose insights supported it
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE learned_rule_history (
    rule_id VARCHAR NOT NULL,
    seq BIGINT NOT NULL,
    event_id VARCHAR NOT NULL,
    op VARCHAR NOT NULL,               -- add | agree | edit | remove
    delta INTEGER NOT NULL,
    votes INTEGER NOT NULL,            -- after the operation
    text VARCHAR NOT NULL,
    insight VARCHAR,                   -- the insight behind it, if any
    reflection INTEGER NOT NULL,
    ts TIMESTAMPTZ NOT NULL
);
