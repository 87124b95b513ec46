-- Governance (projections of governance.policy_* / governance.pack_loaded / governance.approval_* events).
-- No primary keys on purpose: replay applies a whole chunk of events in one transaction, and a policy that is
-- removed and added again inside one transaction must not trip DuckDB's eager uniqueness checks. The appliers
-- keep ids unique themselves (delete, then insert).
CREATE TABLE policies (
    id VARCHAR NOT NULL,
    effect VARCHAR NOT NULL,           -- allow | deny | review
    priority INTEGER NOT NULL,         -- orders explanations and ties; never beats a stronger effect
    actions VARCHAR NOT NULL,          -- JSON array of action globs, each optionally 'action:resource-glob'
    resources VARCHAR NOT NULL,        -- JSON array of resource globs ([] = any resource, or none)
    roles VARCHAR NOT NULL,            -- JSON array of role names ('*' = any role)
    actors VARCHAR NOT NULL,           -- JSON array of actor names ('*' = anyone, even unknown actors)
    conditions VARCHAR NOT NULL,       -- JSON array of {key, op, value}
    description VARCHAR NOT NULL,
    source VARCHAR NOT NULL,           -- 'pack:<name>' for a loaded pack, 'user' for policies added later
    version INTEGER NOT NULL,          -- 1 when added, +1 per update
    updated_by VARCHAR NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    event_id VARCHAR NOT NULL          -- the event that set this version
);
CREATE TABLE approvals (
    id VARCHAR NOT NULL,               -- the id of the governance.approval_requested event
    state VARCHAR NOT NULL,            -- pending | approved | rejected
    requester VARCHAR NOT NULL,
    role VARCHAR,                      -- the requester's role when it asked
    action VARCHAR NOT NULL,
    resource VARCHAR,
    context VARCHAR NOT NULL,          -- canonical JSON object
    policy_ids VARCHAR NOT NULL,       -- JSON array: the review policies that asked for the approval
    reasons VARCHAR NOT NULL,          -- JSON array of sentences
    decision_id VARCHAR NOT NULL,      -- the governance.decision event that said 'review'
    requested_at TIMESTAMPTZ NOT NULL,
    decided_by VARCHAR,
    decided_at TIMESTAMPTZ,
    note VARCHAR
);
