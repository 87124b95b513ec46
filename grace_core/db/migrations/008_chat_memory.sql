-- Memory (issue 4): reading one artifact's version (a read, a diff, the search index absorbing a change right
-- after a write) looks versions up by path; without an index every lookup scans every version of everything.
CREATE INDEX memory_versions_path ON memory_versions (path);
