-- Lessons that change behaviour, votes from measured outcomes, and scenario runs (projections; replay rebuilds them).
ALTER TABLE learned_rules ADD COLUMN effect VARCHAR;         -- JSON effect for the executor (NULL: advice only)
ALTER TABLE learned_rules ADD COLUMN task_kind VARCHAR;      -- the effect's task kind
ALTER TABLE learned_rules ADD COLUMN created_by VARCHAR;     -- learning, or the researcher who added it
ALTER TABLE learned_rules ADD COLUMN evaluated_seq BIGINT;   -- the ledger seq of its last vote from outcomes
ALTER TABLE learned_rule_history ADD COLUMN basis VARCHAR;   -- insight | injected | recurrence | quiet | outcome
ALTER TABLE learned_rule_history ADD COLUMN evidence VARCHAR; -- JSON: the measured outcomes behind a vote
ALTER TABLE tasks ADD COLUMN deferred_by VARCHAR;             -- JSON ids of the lessons that deferred it (or NULL)
-- Which lesson applied to which task (arm 'applied'), or would have but the task was held out (arm 'held_out'),
-- and how the task ended: what outcome votes compare.
CREATE TABLE lesson_runs (
    rule_id VARCHAR NOT NULL,
    task_id VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    arm VARCHAR NOT NULL,              -- applied | held_out
    first_seq BIGINT NOT NULL,         -- the run (or deferral) where it first applied
    created_us BIGINT NOT NULL,        -- the task's creation (epoch microseconds)
    outcome VARCHAR,                   -- done | failed | cancelled once the task ended
    ended_seq BIGINT,
    duration_s DOUBLE,                 -- task creation to its end, on the workspace clock
    PRIMARY KEY (rule_id, task_id)
);
-- Scenario runs (scenario.started / scenario.finished) and their scores over simulated time (scenario.scored).
CREATE TABLE scenario_runs (
    id VARCHAR PRIMARY KEY,            -- the id of its scenario.started event
    scenario VARCHAR NOT NULL,
    seed BIGINT NOT NULL,
    hours DOUBLE NOT NULL,
    loops VARCHAR NOT NULL,            -- JSON list of the loops that ran
    state VARCHAR NOT NULL,            -- running | finished
    started_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    scores VARCHAR                     -- JSON of the final scores
);
CREATE TABLE scenario_scores (
    run_id VARCHAR NOT NULL,
    seq BIGINT NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    elapsed_s DOUBLE NOT NULL,         -- simulated seconds since the run started
    score VARCHAR NOT NULL,
    value DOUBLE                       -- NULL: no data in that window
);
