-- MLDL: the model registry (projections of the mldl.* events; replaying the ledger rebuilds them).
CREATE TABLE mldl_datasets (
    digest VARCHAR PRIMARY KEY,        -- sha256 of the dataset's canonical serialisation
    name VARCHAR NOT NULL,
    rows BIGINT NOT NULL,
    schema VARCHAR NOT NULL,           -- JSON object: column -> dtype
    labels VARCHAR,                    -- JSON object: label value -> rows (labelled data only)
    source VARCHAR NOT NULL,           -- how to make it again (a generator call), or '' for data from elsewhere
    registered_by VARCHAR NOT NULL,
    registered_at TIMESTAMPTZ NOT NULL,
    event_id VARCHAR NOT NULL
);
CREATE TABLE mldl_runs (
    run_id VARCHAR PRIMARY KEY,
    model VARCHAR NOT NULL,            -- the registered model name the run trains for
    kind VARCHAR NOT NULL,             -- the trainer: injection | anomaly | a custom trainer's kind
    status VARCHAR NOT NULL,           -- running | finished | failed
    params VARCHAR NOT NULL,           -- JSON object
    seed BIGINT NOT NULL,
    grace_version VARCHAR NOT NULL,
    code_digest VARCHAR NOT NULL,      -- sha256 of the trainer's source
    datasets VARCHAR NOT NULL,         -- JSON object: role (train, test) -> dataset digest
    metrics VARCHAR,                   -- JSON object: the final held-out metrics
    artifact_path VARCHAR,             -- relative to the workspace's artifact directory
    artifact_sha256 VARCHAR,
    error VARCHAR,
    actor VARCHAR NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    ended_at TIMESTAMPTZ,
    duration_s DOUBLE,
    event_id VARCHAR NOT NULL,         -- mldl.run_started
    end_event_id VARCHAR               -- mldl.training_completed / mldl.training_failed
);
CREATE TABLE mldl_metrics (
    run_id VARCHAR NOT NULL,
    step INTEGER NOT NULL,
    key VARCHAR NOT NULL,
    value DOUBLE,
    ts TIMESTAMPTZ NOT NULL,
    event_id VARCHAR NOT NULL
);
CREATE TABLE mldl_model_versions (
    name VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    kind VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    artifact_path VARCHAR NOT NULL,    -- relative to the workspace's artifact directory
    artifact_sha256 VARCHAR NOT NULL,
    artifact_bytes BIGINT NOT NULL,
    metrics VARCHAR NOT NULL,          -- JSON object (the run's held-out metrics)
    datasets VARCHAR NOT NULL,         -- JSON object: role -> dataset digest
    description VARCHAR NOT NULL,
    registered_by VARCHAR NOT NULL,
    registered_at TIMESTAMPTZ NOT NULL,
    event_id VARCHAR NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE mldl_aliases (
    name VARCHAR NOT NULL,
    alias VARCHAR NOT NULL,            -- champion, challenger, ...
    version INTEGER NOT NULL,
    deployed_by VARCHAR NOT NULL,
    deployed_at TIMESTAMPTZ NOT NULL,
    event_id VARCHAR NOT NULL,
    PRIMARY KEY (name, alias)
);
CREATE TABLE mldl_evaluations (
    event_id VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    dataset VARCHAR NOT NULL,          -- dataset digest
    metrics VARCHAR NOT NULL,
    actor VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL
);
