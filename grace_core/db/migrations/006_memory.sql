-- Memory (issue 4): each version keeps the tags it was written with, so restoring a version restores them.
ALTER TABLE memory_versions ADD COLUMN tags VARCHAR;  -- JSON array; NULL for versions written before 006
