-- Who did what with personal data beyond the leads' own timelines: exports (with their
-- filter), and later views and merges.
CREATE TABLE audit_log (
    id     BIGSERIAL PRIMARY KEY,
    at     TIMESTAMPTZ NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_log_action_at ON audit_log (action, at);
