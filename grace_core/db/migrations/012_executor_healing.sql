-- Task executor and self-healing: projections of task.*, executor.* and healing.* events (replay rebuilds them).
ALTER TABLE tasks ADD COLUMN attempts INTEGER DEFAULT 0;        -- runs started (task.state_changed to running)
ALTER TABLE tasks ADD COLUMN last_error VARCHAR;                -- the error of the last failed attempt
ALTER TABLE tasks ADD COLUMN next_attempt_at TIMESTAMPTZ;       -- a retry waits until then (NULL: due now)
ALTER TABLE tasks ADD COLUMN note VARCHAR;                      -- why a pending task waits (e.g. no handler)
-- Per-kind overrides set by remediation or an operator (executor.kind_adjusted): backoff factor and pause.
CREATE TABLE executor_kinds (
    kind VARCHAR PRIMARY KEY,
    backoff_factor DOUBLE NOT NULL,    -- multiplies the handler's backoff (1 = as registered)
    paused_until TIMESTAMPTZ,          -- no task of the kind starts before then (NULL: not paused)
    reason VARCHAR NOT NULL,
    changed_by VARCHAR NOT NULL,
    event_id VARCHAR NOT NULL,
    changed_at TIMESTAMPTZ NOT NULL
);
-- The last recorded health of each component (healing.checked / healing.status_changed).
CREATE TABLE health_status (
    component VARCHAR PRIMARY KEY,     -- e.g. loop:executor, ledger, mesh, executor, workspace, chat
    status VARCHAR NOT NULL,           -- ok | warn | critical
    detail VARCHAR NOT NULL,
    checked_at TIMESTAMPTZ NOT NULL,
    since TIMESTAMPTZ NOT NULL         -- when it entered this status
);
-- Incidents: a component leaving ok opens one; its return to ok resolves it.
CREATE TABLE incidents (
    id VARCHAR PRIMARY KEY,            -- the id of the healing.incident_opened event
    component VARCHAR NOT NULL,
    status VARCHAR NOT NULL,           -- the worst status seen during the incident
    reason VARCHAR NOT NULL,           -- the check's reason code, e.g. stalled, dead_letters, failure_rate
    detail VARCHAR NOT NULL,
    detected_at TIMESTAMPTZ NOT NULL,
    actions VARCHAR NOT NULL,          -- JSON list of {rule, action, ok, detail, at}
    alerted BOOLEAN NOT NULL,          -- a healing.alert was raised (no rule applied or an action failed)
    resolved_at TIMESTAMPTZ,
    mttr_s DOUBLE                      -- resolved_at - detected_at, in seconds
);
