-- Authentication: users, revoked tokens and login attempts (projections of auth.* events), and password hashes
-- (not a projection: like workspace_secrets they never go on the ledger, so a replayed workspace has the users
-- but none of their passwords).
CREATE TABLE users (
    name VARCHAR PRIMARY KEY,
    role VARCHAR NOT NULL,             -- admin | researcher | viewer
    disabled BOOLEAN NOT NULL,
    password_version INTEGER NOT NULL, -- how many times the password was changed; tokens carry it (claim pwv)
    created_by VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    event_id VARCHAR NOT NULL          -- the auth.user_registered event
);
CREATE TABLE revoked_tokens (
    jti VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ NOT NULL,
    event_id VARCHAR NOT NULL
);
-- Every login attempt (auth.login_succeeded / _failed / _throttled): throttling is computed from these rows.
CREATE TABLE auth_logins (
    ts TIMESTAMPTZ NOT NULL,
    seq BIGINT NOT NULL,               -- of the event: orders attempts made at the same instant
    name VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    outcome VARCHAR NOT NULL,          -- succeeded | failed | throttled
    reason VARCHAR,                    -- failed: unknown_user | bad_password | disabled | no_password; throttled: the rule
    event_id VARCHAR NOT NULL
);

-- Not a projection: argon2id hashes, one per user, never on the ledger and left out of snapshots.
CREATE TABLE credentials (
    name VARCHAR PRIMARY KEY,
    hash VARCHAR NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
