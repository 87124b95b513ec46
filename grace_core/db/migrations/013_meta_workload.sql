-- Meta-loop: one row per parameter change it made, from meta.change_* events (replay rebuilds it).
CREATE TABLE meta_changes (
    id VARCHAR PRIMARY KEY,            -- the id of the meta.change_applied event
    loop VARCHAR NOT NULL,
    "key" VARCHAR NOT NULL,            -- the parameter
    old_value DOUBLE NOT NULL,
    new_value DOUBLE NOT NULL,
    baseline DOUBLE NOT NULL,          -- the objective over the window before the change
    after DOUBLE,                      -- the objective over the evaluation window after it
    status VARCHAR NOT NULL,           -- applied | kept | reverted | refused
    rationale VARCHAR NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL,
    evaluated_at TIMESTAMPTZ
);
