-- Degraded modes (a projection of healing.mode_entered / healing.mode_left): one row per active mode.
CREATE TABLE degraded_modes (
    mode VARCHAR PRIMARY KEY,          -- read_only | sandbox_disabled | chat_paused
    entered_by VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    since TIMESTAMPTZ NOT NULL,
    event_id VARCHAR NOT NULL          -- the healing.mode_entered event
);
