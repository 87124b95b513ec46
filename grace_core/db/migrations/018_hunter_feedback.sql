-- Analyst feedback on Hunter alerts, and what Hunter's lessons did to an alert (projections of hunter.* events).
ALTER TABLE hunter_alerts ADD COLUMN context VARCHAR;      -- JSON: the plain words around the findings (no secrets)
ALTER TABLE hunter_alerts ADD COLUMN held_out VARCHAR;     -- JSON ids of lessons that would have suppressed it
ALTER TABLE hunter_alerts ADD COLUMN verdict VARCHAR;      -- confirmed | false_positive (the latest feedback)
ALTER TABLE hunter_alerts ADD COLUMN verdict_by VARCHAR;
ALTER TABLE hunter_alerts ADD COLUMN verdict_note VARCHAR;
ALTER TABLE hunter_alerts ADD COLUMN verdict_at TIMESTAMPTZ;
ALTER TABLE hunter_alerts ADD COLUMN verdict_seq BIGINT;   -- the ledger seq of the latest hunter.feedback
